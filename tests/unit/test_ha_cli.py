"""`loris controllers` and the controllers part of `loris status` (pure tables)."""

from __future__ import annotations

from hostagent.cli.ha_commands import controllers_table, masters_table

REGISTRY = {"mastership": True, "self": "c1", "fenced": False, "error": None, "controllers": [
    {"id": "c1", "api_url": "http://10.0.0.1:8780", "openflow": "tcp:10.0.0.1:6653",
     "healthy": True, "self": True, "connected": ["h1", "h2"], "masters": ["h1"]},
    {"id": "c2", "api_url": None, "openflow": None, "healthy": False, "self": False,
     "connected": [], "masters": ["h2"]}]}


def test_controllers_table_shows_health_and_masters():
    text = controllers_table(REGISTRY)
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["CONTROLLER", "REST", "OPENFLOW", "HEALTH"]
    assert "c1 *" in lines[1] and "healthy" in lines[1] and lines[1].rstrip().endswith("h1")
    assert "UNHEALTHY" in lines[2] and lines[2].rstrip().endswith("h2")


def test_a_fenced_controller_says_so():
    text = controllers_table({**REGISTRY, "fenced": True, "error": "etcd unreachable"})
    assert "FENCED" in text and text.endswith("etcd: etcd unreachable")


def test_masters_table_lists_each_bridge_role_per_controller():
    hosts = [{"id": "h1", "openflow": {"master": "c1", "bridges": {
        "br-int": {"roles": {"c1": "master", "c2": "slave"}},
        "br-tun": {"roles": {}}}}}]
    lines = masters_table(hosts).splitlines()
    assert lines[1].split() == ["h1", "c1", "br-int", "c1:master", "c2:slave"]
    assert lines[2].split() == ["h1", "c1", "br-tun", "-"]
