"""The controller for real: osken-manager, real OVS bridges, the real host agent.

One lab of three simulated hosts for the whole module (plain network-namespace containers,
which the agent wires like Docker ones); the tests run in order and build on each other:
connect, isolate, DHCP, refuse bad input, reconcile a tampered bridge, restart the
controller under continuous ping.
"""

from __future__ import annotations

import re
import signal
import sqlite3
import time
from functools import partial

import helpers
import pytest
from helpers import (
    SYNC_TIMEOUT,
    all_loris_flows,
    connect,
    loris_flows,
    ping_counts,
    wait_for,
    wait_synced,
)

from lab import Lab

pytestmark = [pytest.mark.integration]

STATIC = {"a": ("h1", "198.18.135.5/24"), "b": ("h2", "198.18.135.6/24"),
          "c": ("h3", "198.18.135.7/24")}


@pytest.fixture(scope="module")
def lab(make_cluster):
    lab = make_cluster(hosts=3, docker=False)
    for name in ("a", "b", "c", "d", "e", "f", "g", "h"):
        host = {"d": "h3", "e": "h2", "f": "h1", "g": "h2", "h": "h1"}.get(name) or \
            STATIC[name][0]
        lab.add_container(host, name, kind="netns")
    return lab


# two requests 0.2 s apart, one second for each reply (host's iputils ping)
pings = partial(helpers.pings, count=2, interval=0.2)


def container_ports(lab: Lab, host: str) -> list[str]:
    return [i for i in lab.ovs(host).vsctl("list-ifaces", "br-int").split() if i.startswith("lp")]


def test_connect_programs_every_host_and_containers_ping(lab):
    for name, (_, ip) in STATIC.items():
        t0 = time.monotonic()
        status, port = connect(lab, name, ip, 7)
        assert status == 201, port
        assert port["state"] == "active" and port["ofport"] and port["mtu"] == 1450
        assert time.monotonic() - t0 < 10
    assert pings(lab, "a", "198.18.135.6") and pings(lab, "a", "198.18.135.7")
    assert pings(lab, "c", "198.18.135.6")
    # the flows are exactly what the controller believes it installed
    hosts = {h["id"]: h for h in lab.api("GET", "/v1/hosts")[1]}
    for h in lab.hosts:
        for bridge in ("br-int", "br-tun"):
            st = hosts[h.name]["openflow"]["bridges"][bridge]
            assert st["errors"] == []
            assert st["flows"] == len(loris_flows(lab, h.name, bridge))


def test_pods_are_isolated_even_with_the_same_addresses(lab):
    a = lab.api("GET", "/v1/ports?container=" + lab.container("a").name)[1][0]
    # d on h3 reuses a's IP and MAC in pod 8; b (pod 7) must not reach it, nor d reach b
    status, port = connect(lab, "d", "198.18.135.5/24", 8, mac=a["mac"])
    assert status == 201, port
    status, port = connect(lab, "e", "198.18.135.9/24", 8)
    assert status == 201, port
    assert pings(lab, "e", "198.18.135.5")             # d, through a tunnel, in pod 8
    assert pings(lab, "b", "198.18.135.5")             # a, in pod 7, not d
    assert not pings(lab, "e", "198.18.135.6", count=1)   # b is in pod 7


def test_dhcp_port_gets_the_allocated_address(lab):
    assert lab.api("POST", "/v1/pods", {"id": 9, "subnet": "198.18.137.0/24"})[0] == 201
    status, port = connect(lab, "f", "dhcp", 9)
    assert status == 201, port
    assert port["ip"] == "198.18.137.2/24" and port["lease"] == "198.18.137.2/24" and port["dhcp"]
    inside = lab.run(lab.container("f"), ["ip", "-4", "-o", "addr", "show", "eth1"]).stdout
    assert "198.18.137.2/24" in inside
    assert_dhcp_server_answers_arp(lab, "f")


def assert_dhcp_server_answers_arp(lab: Lab, name: str) -> None:
    """The pod's DHCP server address resolves to its MAC (0a:4c: + tunnel key 10)."""
    c = lab.container(name)
    lab.run(c, ["ip", "neigh", "flush", "dev", "eth1"])
    pings(lab, name, "198.18.137.1", count=1)          # nobody answers ICMP there; ARP is enough
    neigh = lab.run(c, ["ip", "neigh", "show", "198.18.137.1", "dev", "eth1"]).stdout
    assert "lladdr 0a:4c:00:00:00:0a" in neigh, neigh


def test_bad_input_is_refused_and_leaves_nothing_behind(lab):
    before = lab.api("GET", "/v1/ports")[1]
    flows_before = {h.name: loris_flows(lab, h.name, "br-int") for h in lab.hosts}
    ifaces_before = container_ports(lab, "h2")
    status, body = lab.api("POST", "/v1/ports", {"host": "h2", "container": "netns:nowhere",
                                                 "ip": "198.18.135.99/24", "pod": 7}, timeout=90)
    assert status == 422 and "nowhere" in body["error"]["message"], body
    status, body = lab.api("POST", "/v1/ports", {"host": "h2", "container": "netns:other",
                                                 "ip": "198.18.135.6/24", "pod": 7})
    assert status == 409 and "198.18.135.6 already used by" in body["error"]["message"], body
    status, body = connect(lab, "e", "198.18.135.66/24", 7, host="h2")
    assert status == 409 and body["error"]["code"] == "container_connected", body
    status, body = lab.api("POST", "/v1/ports",
                           {"host": "h2", "container": "x", "ip": "198.18.135/33"})
    assert status == 422, body
    assert lab.api("GET", "/v1/ports")[1] == before
    # the agent removed what it may have made, and no flow changed anywhere
    wait_for(lambda: container_ports(lab, "h2") == ifaces_before, 10,
             "h2's container ports as before")
    assert {h.name: loris_flows(lab, h.name, "br-int") for h in lab.hosts} == flows_before


def test_switch_rejecting_flows_fails_the_connect_atomically_and_shows_why(lab):
    """br-int table 0 of h2 is made full (OVS refuses further flows there): the bundle for
    a new port on h2 fails as a whole, the connect is undone everywhere, and the host status
    names the error and the flow. Once there is room, the same connect works."""
    ovs = lab.ovs("h2")
    in_table0 = sum(1 for f in loris_flows(lab, "h2", "br-int") if "table=0," in f)
    ovs.vsctl("--", "--id=@t", "create", "Flow_Table", f"flow_limit={in_table0}",
              "overflow_policy=refuse", "--", "set", "Bridge", "br-int", "flow_tables:0=@t")
    try:
        flows_before = {h.name: loris_flows(lab, h.name, "br-int") for h in lab.hosts}
        ports_before = lab.api("GET", "/v1/ports")[1]
        status, body = connect(lab, "g", "198.18.135.8/24", 7)
        assert status == 503 and body["error"]["code"] == "flows_failed", body
        assert "br-int of host h2" in body["error"]["message"]
        assert lab.api("GET", "/v1/ports")[1] == ports_before
        assert {h.name: loris_flows(lab, h.name, "br-int") for h in lab.hosts} == flows_before
        errors = lab.api("GET", "/v1/hosts/h2")[1]["openflow"]["bridges"]["br-int"]["errors"]
        assert any("OFPFMFC_TABLE_FULL" in e["message"] and "198.18.135.8" in (e["flow"] or "")
                   for e in errors), errors
    finally:
        ovs.vsctl("clear", "Bridge", "br-int", "flow_tables")
    status, port = connect(lab, "g", "198.18.135.8/24", 7)
    assert status == 201, port
    assert pings(lab, "g", "198.18.135.5")


def test_a_planned_ofport_ovs_cannot_give_is_replaced_by_the_one_it_gave(lab):
    """The controller chooses a port's ofport when it inserts the port and programs the
    port's own host with it while the agent wires (controller/planned_ofports.py). Here an
    interface that is not Loris's holds the next number of h1: OVS gives the port another,
    the connect programs h1 again with that one, and no flow is left on the held number."""
    store = f"file:{lab.dir / 'loris.db'}?mode=ro"
    with sqlite3.connect(store, uri=True) as db:
        last = db.execute("SELECT value FROM counters WHERE name = 'ofport:h1'").fetchone()[0]
    held = last + 1
    ovs = lab.ovs("h1")
    ovs.vsctl("add-port", "br-int", "squatter", "--", "set", "Interface", "squatter",
              "type=internal", f"ofport_request={held}")
    try:
        assert ovs.vsctl("get", "Interface", "squatter", "ofport").strip() == str(held)
        status, port = connect(lab, "h", "198.18.135.10/24", 7)
        assert status == 201, port
        assert port["ofport"] not in (None, held)
        assert f"OVS gave port {port['id']} ofport {port['ofport']}, not the planned {held}" \
            in lab.processes["controller"].log_text()
        assert pings(lab, "h", "198.18.135.6")                      # b, on h2
        flows = loris_flows(lab, "h1", "br-int")
        assert any(f"in_port={port['ofport']}" in f or f"in_port=\"lp{port['id']}\"" in f
                   for f in flows)
        assert not any(re.search(rf"(in_port|output:){held}\b", f) for f in flows), flows
    finally:
        ovs.vsctl("--if-exists", "del-port", "br-int", "squatter")
    assert lab.api("DELETE", f"/v1/ports/{port['id']}")[0] == 204


def test_reconnect_reconciles_stale_and_missing_flows_but_not_foreign_ones(lab):
    ovs = lab.ovs("h1")
    desired = loris_flows(lab, "h1", "br-int")
    victim = next(f for f in desired if "priority=100,ip," in f)      # a's ingress rule
    match = victim.split(" ", 1)[0].split(",", 1)[1].split("actions=")[0]
    match = re.sub(r"^cookie=0x[0-9a-f]+,", "", match.replace(" ", ""))
    ovs.ofctl("--strict", "del-flows", "br-int", match)
    ovs.ofctl("add-flow", "br-int", "cookie=0x4c10000000000001,table=20,priority=1234,"
                                    "dl_dst=02:de:ad:00:00:01 actions=drop")
    ovs.ofctl("add-flow", "br-int", "cookie=0x1234,table=20,priority=1235,"
                                    "dl_dst=02:de:ad:00:00:02 actions=drop")
    since = time.time()
    ovs.appctl("bridge/reconnect", "br-int")
    wait_synced(lab, since=0)
    deadline = time.monotonic() + SYNC_TIMEOUT
    while True:
        flows = lab.ovs("h1").dump_flows("br-int", stats=False)
        loris = [f for f in flows if f.startswith("cookie=0x4c")]
        if sorted(loris) == sorted(desired):
            break
        assert time.monotonic() < deadline, "\n".join(flows)
        time.sleep(0.2)
    assert any("cookie=0x1234," in f for f in flows)                  # foreign flow kept
    host = next(h for h in lab.api("GET", "/v1/hosts")[1] if h["id"] == "h1")
    assert host["openflow"]["bridges"]["br-int"]["since"] >= since - 1
    assert pings(lab, "a", "198.18.135.6")


def test_controller_restart_loses_neither_state_nor_a_ping(lab):
    ports_before = lab.api("GET", "/v1/ports")[1]
    flows_before = all_loris_flows(lab)
    ping = lab.start_process("ping-a-b", ["ping", "-i", "0.2", "198.18.135.6"],
                             netns=lab.container("a"))
    time.sleep(1.5)
    lab.processes["controller"].stop()
    time.sleep(3)                                   # traffic keeps flowing without it
    restarted = time.time()
    lab.start_controller()
    wait_synced(lab, since=restarted)
    time.sleep(1.5)
    ping.signal(signal.SIGINT)
    ping.wait(5)
    sent, _ = ping_counts(ping.log_text())
    # The request in flight when SIGINT arrived has had no time for its reply: every
    # request before it must have been answered.
    answered = {int(n) for n in re.findall(r"icmp_seq=(\d+)", ping.log_text())}
    assert sent >= 25 and set(range(1, sent)) <= answered, ping.log_tail(5)
    # same state, and the resync found every flow in place: nothing added, nothing deleted
    assert lab.api("GET", "/v1/ports")[1] == ports_before
    assert all_loris_flows(lab) == flows_before
    log = lab.processes["controller"].log_text().split("Loris controller up")[-1]
    reconciles = re.findall(r"reconciled (br-\w+) of (h\d).*: (\d+) added, (\d+) stale", log)
    assert {(b, h) for b, h, _, _ in reconciles} >= {(b, h.name) for h in lab.hosts
                                                     for b in ("br-int", "br-tun")}
    assert all(added == stale == "0" for _, _, added, stale in reconciles), reconciles
    assert_dhcp_server_answers_arp(lab, "f")


def test_agent_restart_resynchronises(lab):
    """A port deleted while its host's agent is down: its flows go at once, and the agent
    removes its veth when it comes back; the host's other ports are untouched."""
    g = lab.api("GET", "/v1/ports?container=" + lab.container("g").name)[1][0]
    veth = f"lp{g['id']}"
    lab.processes["agent-h2"].stop()
    assert veth in container_ports(lab, "h2")
    assert lab.api("DELETE", f"/v1/ports/{g['id']}")[0] == 204
    assert not pings(lab, "g", "198.18.135.5", count=1)
    assert veth in container_ports(lab, "h2")        # nobody there to remove it yet
    lab.start_agent("h2")
    wait_for(lambda: veth not in container_ports(lab, "h2"), SYNC_TIMEOUT,
             f"{veth} removed by the restarted agent")
    assert pings(lab, "a", "198.18.135.6")


def test_disconnect_and_host_removal(lab):
    b = lab.api("GET", "/v1/ports?container=" + lab.container("b").name)[1][0]
    assert lab.api("DELETE", f"/v1/ports/{b['id']}")[0] == 204
    assert not pings(lab, "a", "198.18.135.6", count=1)
    assert pings(lab, "a", "198.18.135.7")
    lab.processes["agent-h3"].stop()
    assert lab.api("DELETE", "/v1/hosts/h3")[0] == 204
    ports = lab.api("GET", "/v1/ports")[1]
    assert {p["host"] for p in ports} == {"h1", "h2"}
    assert loris_flows(lab, "h3", "br-int") == []
    assert not any("198.18.135.7" in f for f in loris_flows(lab, "h1", "br-int"))
