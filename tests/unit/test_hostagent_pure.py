"""Pure pieces of the host agent and CLI: names, ids, OVSDB decoding, mesh state, arguments."""

from __future__ import annotations

import hashlib

import pytest

from flows import contract
from hostagent.cli.commands import mesh_state
from hostagent.cli.common import CliError, check_ip_argument, parse_pod
from hostagent.client import controller_url
from hostagent.netdev import next_ifname
from hostagent.ovs import _decode, kv
from hostagent.tables import ago, table


def test_dpids_follow_the_design_formula():
    h48 = int(hashlib.sha256(b"h1").hexdigest()[:12], 16)
    d = contract.dpids("h1")
    assert d["br-int"] == (1 << 48) | h48 and d["br-tun"] == (2 << 48) | h48
    assert contract.dpid_hex(d["br-int"]) == f"0001{h48:012x}"
    assert contract.dpids("h2") != d


def test_ovs_names():
    assert contract.tunnel_port_name("198.18.0.12") == "lt-c612000c"
    assert contract.is_tunnel_port_name("lt-c612000c")
    assert not contract.is_tunnel_port_name("lt-c612000")
    assert contract.host_port_name(42) == "lp42" and contract.container_port_temp_name(42) == "lc42"
    assert contract.port_id_of_host_port("lp42") == 42
    assert contract.port_id_of_host_port("lpx1") is None


@pytest.mark.parametrize("host_id, ok", [("h1", True), ("node-7.example_x", True),
                                         ("-h", False), ("", False), ("a" * 64, False),
                                         ("a b", False)])  # fmt: skip
def test_host_ids(host_id, ok):
    assert contract.HOST_ID.matches(host_id) is ok


def test_container_mtu():
    assert contract.container_mtu(1500, "vxlan") == 1450
    assert contract.container_mtu(1500, "gre") == 1458
    assert contract.container_mtu(9000, "vxlan") == 8950


def test_next_ifname():
    assert next_ifname("eth1", {"lo"}) == "eth1"
    assert next_ifname("eth1", {"lo", "eth1"}) == "eth2"
    assert next_ifname("eth1", {"eth1", "eth2", "eth3"}) == "eth4"
    assert next_ifname("net", {"net"}) == "net1"


def test_ovsdb_json_decoding():
    assert _decode(["map", [["loris", "1"], ["a", "b"]]]) == {"loris": "1", "a": "b"}
    assert _decode(["set", []]) == []
    assert _decode(["set", [["uuid", "u1"], ["uuid", "u2"]]]) == ["u1", "u2"]
    assert _decode(["uuid", "u1"]) == "u1"
    assert _decode(7) == 7 and _decode("br-int") == "br-int"


def test_kv_quotes_values():
    assert kv("external_ids", {"loris": "1", "loris-container": "web.1"}) == [
        'external_ids:loris="1"', 'external_ids:loris-container="web.1"']


def host(hid: str, ip: str, peers: dict[str, int]) -> dict:
    return {"id": hid, "tunnel_ip": ip,
            "tunnels": [{"peer": p, "ofport": o} for p, o in peers.items()]}  # fmt: skip


def test_mesh_state():
    hosts = [host("h1", "198.18.0.11", {"h2": 2, "h3": 3}),
             host("h2", "198.18.0.12", {"h1": 2}),
             host("h3", "198.18.0.13", {"h1": 2, "h2": 3})]  # fmt: skip
    ips = ["198.18.0.12", "198.18.0.13"]
    st = mesh_state(hosts, ips, "h1")
    assert not st.complete
    assert st.unregistered == [] and st.missing == [("h2", "h3")]
    assert st.describe() == "tunnels missing: h2->h3"
    assert mesh_state(hosts, ["198.18.0.11", "198.18.0.12"], "h1").complete
    st = mesh_state(hosts, ["198.18.0.12", "198.18.0.99"], "h9")
    assert st.unregistered == ["198.18.0.99", "h9 (this host)"]
    assert "not registered: 198.18.0.99, h9 (this host)" in st.describe()


def test_parse_pod_and_ip_arguments():
    assert parse_pod(None) is None and parse_pod("0") == 0 and parse_pod("16777214") == 16777214
    assert parse_pod("x") == "x"                  # a pod name (pods by name)
    for bad in ("-1", "7x", "16777215", "1.5"):
        with pytest.raises(CliError, match="not a pod id"):
            parse_pod(bad)
    assert check_ip_argument("DHCP") == "dhcp"
    assert check_ip_argument("10.7.0.5/24") == "10.7.0.5/24"
    with pytest.raises(CliError, match="needs a prefix length"):
        check_ip_argument("10.7.0.5")
    with pytest.raises(CliError, match="not an address"):
        check_ip_argument("10.7.0.256/24")


def test_controller_url(monkeypatch):
    monkeypatch.delenv("LORIS_CONTROLLER", raising=False)
    assert controller_url(None) == "http://127.0.0.1:8780"
    assert controller_url("198.19.0.1") == "http://198.19.0.1:8780"
    assert controller_url("http://ctl:9000/") == "http://ctl:9000"
    monkeypatch.setenv("LORIS_CONTROLLER", "http://10.0.0.1:8780")
    assert controller_url(None) == "http://10.0.0.1:8780"


def test_table_and_ago():
    text = table(["ID", "NAME"], [[1, "web"], [22, None], [3, True]])
    assert text.splitlines() == ["ID  NAME", "1   web", "22  -", "3   yes"]
    assert ago(None) == "never" and ago(0.2) == "now" and ago(5) == "5s ago"
    assert ago(600) == "10m ago" and ago(36000) == "10h ago"
