"""loris-hostagent against the real controller: containers restarting or going away, the
agent restarting, the controller going away. One 2-host lab for the module; in order."""

from __future__ import annotations

import json
import re
import time
from functools import partial

import helpers
import pytest
from helpers import (
    cli_connect,
    cli_connect_json,
    inet,
    interface,
    loss,
    ping_in_background,
    ports_by_container,
    wait_for,
)

from lab.core import venv_bin

pytestmark = [pytest.mark.integration, pytest.mark.docker]


@pytest.fixture(scope="module")
def lab(make_cluster):
    lab = make_cluster(hosts=2, wait=None)      # `loris cluster` below waits for the mesh
    for short, host in (("a1", "h1"), ("a2", "h2"), ("a3", "h2")):
        lab.add_container(host, short)
    assert lab.loris("h1", "cluster", "198.18.0.11", "198.18.0.12").returncode == 0
    for short, ip in (("a1", "198.18.135.1/24"), ("a2", "198.18.135.2/24")):
        cli_connect(lab, short, ip, 7)
    return lab


# one request, one second for its reply, with the container's own ping
ping = partial(helpers.pings, tools="own")


def wiring(lab, short: str) -> tuple:
    """What a re-wire would change: the veth ends' ifindexes and the OVS Interface row."""
    c = lab.container(short)
    port_id = ports_by_container(lab)[c.name]["id"]
    inside = json.loads(lab.run(c, ["ip", "-j", "link", "show", "eth1"]).stdout)[0]["ifindex"]
    host = json.loads(lab.run(c.host.name, ["ip", "-j", "link", "show", f"lp{port_id}"]).stdout)
    row = lab.ovs(c.host.name).vsctl("get", "Interface", f"lp{port_id}", "_uuid", "ofport")
    return inside, host[0]["ifindex"], row


# ---------------------------------------------------------------------------------- tests


def wait_rewired(lab, short: str, port: dict) -> None:
    """eth1 back in the container's new namespace with its MAC and IP, and reachable.

    The old namespace (and the old eth1 in it) can outlive the restart for a while: the
    kernel destroys namespaces asynchronously. So reachability alone proves nothing here."""
    ip = port["ip"].split("/")[0]

    def back() -> bool:
        e = interface(lab, short)
        return e is not None and e["address"] == port["mac"] and ip in inet(e)

    wait_for(back, 15, f"eth1 of {short} re-made")
    wait_for(lambda: ping(lab, "a1", ip), 10, f"{short} reachable again")


def test_restarted_container_comes_back_reachable(lab):
    before = ports_by_container(lab)[lab.container("a2").name]
    lab.container("a2").restart()
    wait_rewired(lab, "a2", before)
    after = ports_by_container(lab)[lab.container("a2").name]
    assert (after["id"], after["ofport"], after["mac"], after["state"]) == \
        (before["id"], before["ofport"], before["mac"], "active")


def test_stopped_container_shows_an_error_and_comes_back_when_started(lab):
    a2 = lab.container("a2")
    before = ports_by_container(lab)[a2.name]
    a2.stop()
    wait_for(lambda: (ports_by_container(lab)[a2.name].get("error") or {}).get("code")
             == "container_not_running", 10, "the stopped container reported")  # fmt: skip
    assert f"container {a2.name} is not running" in lab.loris("h1", "ports").stdout
    a2.restart()  # `docker restart` of a stopped container starts it
    wait_rewired(lab, "a2", before)
    wait_for(lambda: ports_by_container(lab)[a2.name]["error"] is None, 10, "the error cleared")
    assert ports_by_container(lab)[a2.name]["ofport"] == before["ofport"]


def test_removed_container_leaves_no_flow_behind(lab):
    a3 = lab.container("a3")
    port = cli_connect_json(lab, "a3", "198.18.135.3/24", 7)
    mac = port["mac"]

    def flows_mentioning() -> list[str]:
        return [f for h in ("h1", "h2") for b in ("br-int", "br-tun")
                for f in lab.ovs(h).dump_flows(b, stats=False)
                if mac in f or "198.18.135.3" in f]  # fmt: skip

    assert flows_mentioning(), "the port's flows were never installed"
    lab.remove_container("a3")
    wait_for(lambda: a3.name not in ports_by_container(lab), 15,
             "the port of the removed container deleted")
    wait_for(lambda: not flows_mentioning(), 10, "its flows removed everywhere")
    wait_for(lambda: f"lp{port['id']}" not in lab.ovs("h2").vsctl("list-ports", "br-int").split(),
             10, "its OVS port removed")  # fmt: skip
    wait_for(lambda: f"lp{port['id']}" not in lab.run("h2", ["ip", "-br", "link"]).stdout,
             10, "its veth removed")  # fmt: skip
    assert ping(lab, "a1", "198.18.135.2")


def test_one_agent_per_open_vswitch(lab):
    h1 = lab.host("h1")
    r = lab.run(h1, [venv_bin() / "loris-hostagent", "--host-id", "h1", "--tunnel-ip",
                     h1.tunnel_ip, "--ovsdb", h1.ovsdb, "--ovs-rundir", h1.rundir],
                check=False, timeout=20)  # fmt: skip
    assert r.returncode == 2
    assert f"loris-hostagent (pid {lab.processes['agent-h1'].pid}) is running" in r.stderr


def test_agent_restart_loses_no_packet_and_rewires_nothing(lab):
    before = wiring(lab, "a1")
    pinger = ping_in_background(lab, "a1", "198.18.135.2", interval=0.1, count=50)
    time.sleep(0.5)
    assert lab.processes["agent-h1"].stop() == 0  # SIGTERM: a clean, prompt exit
    lab.start_agent("h1")
    out, _ = pinger.communicate(timeout=30)
    assert loss(out) == 0, out
    wait_for(lambda: (ports_by_container(lab)[lab.container("a1").name]["state"] == "active"
                      and "polling" in lab.loris("h1", "status").stdout), 15,
             "agent h1 back")  # fmt: skip
    assert wiring(lab, "a1") == before


def test_restart_missed_while_the_agent_was_down_is_repaired_at_start(lab):
    lab.processes["agent-h2"].stop()
    port = ports_by_container(lab)[lab.container("a2").name]
    lab.container("a2").restart()
    time.sleep(1)
    assert interface(lab, "a2") is None  # nobody re-made it
    lab.start_agent("h2")
    wait_rewired(lab, "a2", port)


def test_controller_away_traffic_and_repairs_go_on(lab):
    port = ports_by_container(lab)[lab.container("a2").name]
    lab.processes["controller"].stop()
    assert ping(lab, "a1", "198.18.135.2")  # OVS keeps its flows (secure fail mode)
    # The agent repairs a restarted container from the desired state it last had.
    lab.container("a2").restart()
    wait_rewired(lab, "a2", port)
    r = lab.loris("h1", "status")
    assert r.returncode != 0 and "unreachable" in r.stderr
    lab.start_controller()
    # Agents come back by themselves (backoff), and so do the bridges' OpenFlow sessions
    # (OVS's own reconnect backoff).
    wait_for(lambda: len(re.findall(r"polling +br-int:up br-tun:up",
                                    lab.loris("h1", "status").stdout)) == 2, 40,
             "both agents and all bridges back with the restarted controller")  # fmt: skip
    lab.add_container("h1", "a4")
    cli_connect(lab, "a4", "198.18.135.4/24", 7)
    assert ping(lab, "a4", "198.18.135.2")


def test_netns_container(lab):
    n1 = lab.add_container("h1", "n1", kind="netns")
    cli_connect(lab, "n1", "198.18.135.5/24", 7)
    assert ping(lab, "a2", "198.18.135.5")
    r = lab.loris("h1", "disconnect", n1.name)
    assert r.returncode == 0, r.stderr
    assert lab.run(n1, ["ip", "link", "show", "eth1"], check=False).returncode != 0
