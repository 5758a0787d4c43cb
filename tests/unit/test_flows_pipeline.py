"""Behaviour of the computed pipeline, checked by tracing packets through every host's bridges.

Topology (every host: br-int patch-tun = 1, br-tun patch-int = 1; tunnel ofports 2..):

    h1: a1 (pod 7, ofport 10), a2 (pod 7, ofport 11), b1 (pod 8, ofport 12), c1 (pod 9, ofport 13)
    h2: a3 (pod 7, ofport 10), a4 (pod 7, DHCP, ofport 11), b2 (pod 8, ofport 12)
    h3: c2 (pod 9, ofport 10)

Pods 7 and 8 both use 198.18.135.0/24, and b2 has a3's IP: isolation must not depend on addresses.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from flows import (
    LORIS_COOKIE,
    LORIS_COOKIE_MASK,
    HostSpec,
    Kind,
    PodSpec,
    PortSpec,
    Topology,
    flatten,
    host_flows,
    parse_cookie,
)
from flows.trace import Fabric

BCAST = "ff:ff:ff:ff:ff:ff"


def mac(n: int) -> str:
    return f"02:00:00:00:00:{n:02x}"


PORTS = {
    "a1": PortSpec(1, 7, "h1", 10, mac(1), "198.18.135.11"),
    "a2": PortSpec(2, 7, "h1", 11, mac(2), "198.18.135.12/24"),
    "b1": PortSpec(3, 8, "h1", 12, mac(3), "198.18.135.11"),
    "c1": PortSpec(4, 9, "h1", 13, mac(4), "198.18.137.11"),
    "a3": PortSpec(5, 7, "h2", 10, mac(5), "198.18.135.13"),
    "a4": PortSpec(6, 7, "h2", 11, mac(6), "198.18.135.14", dhcp=True),
    "b2": PortSpec(7, 8, "h2", 12, mac(7), "198.18.135.13"),
    "c2": PortSpec(8, 9, "h3", 10, mac(8), "198.18.137.12"),
}
DHCP_SERVER = ("198.18.135.1", "0a:4c:00:00:00:08")


def hosts() -> list[HostSpec]:
    return [
        HostSpec("h1", "198.18.0.11", 1, 1, {"h2": 2, "h3": 3}, {7: 100, 8: 101, 9: 102}),
        HostSpec("h2", "198.18.0.12", 1, 1, {"h1": 2, "h3": 3}, {7: 200, 8: 201}),
        HostSpec("h3", "198.18.0.13", 1, 1, {"h1": 2, "h2": 3}, {9: 300}),
    ]


def pods() -> list[PodSpec]:
    return [PodSpec(7, 8, "198.18.135.0/24", DHCP_SERVER), PodSpec(8, 9, "198.18.135.0/24"),
            PodSpec(9, 10, "198.18.137.0/24")]


@pytest.fixture(scope="module")
def topo() -> Topology:
    return Topology(hosts(), pods(), PORTS.values())


@pytest.fixture(scope="module")
def fabric(topo) -> Fabric:
    return Fabric(topo)


def ipv4(src: str, dst: str, dst_mac: str, src_ip: str | None = None,
         dst_ip: str = "198.18.135.200", **extra) -> dict:
    p = PORTS[src]
    pkt = {"eth_src": p.mac, "eth_dst": dst_mac, "eth_type": 0x0800,
           "ipv4_src": src_ip or p.ip, "ipv4_dst": dst_ip, "ip_proto": 6}
    pkt.update(extra)
    return pkt


def arp_request(src: str, tpa: str, **over) -> dict:
    p = PORTS[src]
    pkt = {"eth_src": p.mac, "eth_dst": BCAST, "eth_type": 0x0806, "arp_op": 1,
           "arp_sha": p.mac, "arp_spa": p.ip, "arp_tha": "00:00:00:00:00:00", "arp_tpa": tpa}
    pkt.update(over)
    return pkt


def send(fabric: Fabric, src: str, pkt: dict):
    p = PORTS[src]
    return fabric.send(p.host_id, p.ofport, pkt)


def names(port_ids) -> set[str]:
    by_id = {p.id: n for n, p in PORTS.items()}
    return {by_id[i] for i in port_ids}


# ---- unicast ---------------------------------------------------------------------------------

def test_same_pod_same_host_goes_straight_to_the_port(fabric):
    pkt = ipv4("a1", "a2", PORTS["a2"].mac, dst_ip="198.18.135.12")
    result = send(fabric, "a1", pkt)
    assert names(result.port_ids()) == {"a2"}
    assert result.deliveries[0].packet["eth_dst"] == PORTS["a2"].mac
    assert result.path() == [("h1", "br-int")]


def test_same_pod_across_hosts_goes_through_the_one_tunnel_with_the_pod_key(fabric):
    pkt = ipv4("a1", "a3", PORTS["a3"].mac, dst_ip="198.18.135.13")
    result = send(fabric, "a1", pkt)
    assert result.delivered_to() == {("h2", 10)}
    assert result.path() == [
        ("h1", "br-int"), ("h1", "br-tun"), ("h2", "br-tun"), ("h2", "br-int")]
    assert [(a, b, key) for a, b, key, _ in result.tunnelled] == [("h1", "h2", 8)]
    on_the_wire = result.hops[2].packet
    assert on_the_wire["tunnel_id"] == 8                # pod 7's key, untagged, from h1's tunnel
    assert on_the_wire["vlan_vid"] == 0
    assert result.hops[2].in_port == fabric.topo.hosts["h2"].tunnel_ofports["h1"]
    assert result.hops[1].packet["vlan_vid"] == 0x1000 | 100   # h1's local VLAN for pod 7
    assert result.hops[3].packet["vlan_vid"] == 0x1000 | 200   # h2's local VLAN for pod 7
    delivered = result.deliveries[0].packet
    assert delivered["vlan_vid"] == 0                   # the local VLAN never reaches a container
    assert {k: delivered[k] for k in pkt} == pkt


def test_different_pods_same_host_are_isolated(fabric):
    result = send(fabric, "a1", ipv4("a1", "b1", PORTS["b1"].mac))
    assert result.deliveries == [] and result.controller == []


def test_different_pods_across_hosts_are_isolated(fabric):
    # b2 has a3's IP but is in pod 8: its MAC is unknown in pod 7 and dies on h1's br-tun.
    result = send(fabric, "a1", ipv4("a1", "b2", PORTS["b2"].mac, dst_ip="198.18.135.13"))
    assert result.deliveries == []
    assert {h for h, _ in result.path()} == {"h1"}


def test_unknown_unicast_is_dropped(fabric):
    result = send(fabric, "a1", ipv4("a1", "x", "02:00:00:00:00:99"))
    assert result.deliveries == [] and result.lost == []
    assert {h for h, _ in result.path()} == {"h1"}


def test_a_pod_alone_on_its_host_never_reaches_br_tun(topo):
    lonely = Topology(hosts(), pods(), [PORTS["a1"], PORTS["a2"]])
    result = Fabric(lonely).send("h1", 10, ipv4("a1", "x", "02:00:00:00:00:99"))
    assert result.path() == [("h1", "br-int")]


# ---- port security ---------------------------------------------------------------------------

@pytest.mark.parametrize("spoof", [
    {"eth_src": "02:00:00:00:00:66"},
    {"ipv4_src": "198.18.135.66"},
    {"eth_src": "02:00:00:00:00:02", "ipv4_src": "198.18.135.12"},    # a2's identity, from a1
])
def test_spoofed_ipv4_source_is_dropped(fabric, spoof):
    pkt = ipv4("a1", "a2", PORTS["a2"].mac, **spoof)
    result = send(fabric, "a1", pkt)
    assert result.deliveries == [] and result.controller == []
    # straight into table 0's drop for that port (its counters are the port's drops)
    [drop] = result.hops[0].flows
    assert drop.table == 0 and drop.actions == () and drop.match == (("in_port", 10),)
    assert parse_cookie(drop.cookie)[:2] == (Kind.PORT, PORTS["a1"].id)


@pytest.mark.parametrize("spoof", [
    {"arp_sha": "02:00:00:00:00:66"},
    {"arp_spa": "198.18.135.66"},
    {"eth_src": "02:00:00:00:00:66", "arp_sha": "02:00:00:00:00:66"},
    {"arp_spa": "0.0.0.0"},                               # probes are not allowed either
])
def test_spoofed_arp_is_dropped(fabric, spoof):
    result = send(fabric, "a1", arp_request("a1", "198.18.135.12", **spoof))
    assert result.deliveries == [] and result.controller == []


def test_ipv6_and_other_ethertypes_are_dropped(fabric):
    p = PORTS["a1"]
    for eth_type in (0x86DD, 0x8035, 0x88CC):
        result = send(fabric, "a1", {"eth_src": p.mac, "eth_dst": BCAST, "eth_type": eth_type})
        assert result.deliveries == [], hex(eth_type)


# ---- ARP responder ---------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["a2", "a3", "a4"])   # local, remote, remote DHCP port
def test_arp_responder_builds_the_reply_and_nothing_leaves_the_host(fabric, target):
    asker, owner = PORTS["a1"], PORTS[target]
    result = send(fabric, "a1", arp_request("a1", owner.ip))
    assert [(d.host, d.ofport) for d in result.deliveries] == [("h1", asker.ofport)]
    assert result.path() == [("h1", "br-int")]
    reply = result.deliveries[0].packet
    assert reply == {
        "eth_src": owner.mac, "eth_dst": asker.mac, "eth_type": 0x0806, "vlan_vid": 0,
        "tunnel_id": 0, "arp_op": 2,
        "arp_sha": owner.mac, "arp_spa": owner.ip,
        "arp_tha": asker.mac, "arp_tpa": asker.ip,
    }


def test_arp_responder_answers_for_the_pod_dhcp_server(fabric):
    result = send(fabric, "a4", arp_request("a4", DHCP_SERVER[0]))
    reply = result.deliveries[0].packet
    assert (reply["arp_sha"], reply["arp_spa"], reply["eth_src"]) == (
        DHCP_SERVER[1], DHCP_SERVER[0], DHCP_SERVER[1])
    assert result.delivered_to() == {("h2", 11)}


def test_arp_responder_answers_unicast_requests_too(fabric):
    result = send(fabric, "a1", arp_request("a1", "198.18.135.12", eth_dst=PORTS["a2"].mac))
    assert result.delivered_to() == {("h1", 10)}
    assert result.deliveries[0].packet["arp_op"] == 2


def test_arp_is_answered_within_the_asker_pod_only(fabric):
    # 198.18.135.13 is a3 in pod 7 and b2 in pod 8: b1 (pod 8) must learn b2's MAC.
    result = send(fabric, "b1", arp_request("b1", "198.18.135.13"))
    assert result.deliveries[0].packet["arp_sha"] == PORTS["b2"].mac
    # and b1 (pod 8) is never answered for pod 7's addresses
    assert send(fabric, "b1", arp_request("b1", "198.18.135.12")).deliveries == []


def test_arp_for_an_unknown_ip_is_dropped(fabric):
    result = send(fabric, "a1", arp_request("a1", "198.18.135.99"))
    assert result.deliveries == [] and result.controller == []
    assert result.path() == [("h1", "br-int")]


def test_arp_for_the_asker_own_ip_is_not_answered(fabric):
    result = send(fabric, "a1", arp_request("a1", PORTS["a1"].ip))
    assert result.deliveries == []


def test_broadcast_arp_reply_never_leaves_the_host(fabric):
    # a gratuitous ARP reply: valid sha/spa, broadcast destination
    pkt = arp_request("a1", PORTS["a1"].ip, arp_op=2)
    result = send(fabric, "a1", pkt)
    assert result.deliveries == []
    assert result.path() == [("h1", "br-int")]


def test_unicast_arp_reply_reaches_its_pod_member(fabric):
    pkt = arp_request("a1", PORTS["a3"].ip, arp_op=2, eth_dst=PORTS["a3"].mac,
                      arp_tha=PORTS["a3"].mac)
    assert names(send(fabric, "a1", pkt).port_ids()) == {"a3"}


# ---- broadcast and multicast -----------------------------------------------------------------

@pytest.mark.parametrize("dst", [BCAST, "01:00:5e:00:00:fb"])
def test_broadcast_reaches_the_pod_members_on_every_host_of_the_pod_only(fabric, dst):
    result = send(fabric, "a1", ipv4("a1", "all", dst, dst_ip="198.18.135.255", ip_proto=17,
                                     udp_src=5000, udp_dst=5000))
    assert names(result.port_ids()) == {"a2", "a3", "a4"}
    assert len(result.deliveries) == 3                    # exactly one copy each
    assert [(a, b, key) for a, b, key, _ in result.tunnelled] == [("h1", "h2", 8)]
    assert "h3" not in {h for h, _ in result.path()}  # h3 has no pod 7 member


def test_broadcast_from_a_tunnel_is_never_sent_back_into_a_tunnel(fabric):
    result = send(fabric, "a3", ipv4("a3", "all", BCAST, ip_proto=17, udp_src=1, udp_dst=1))
    assert names(result.port_ids()) == {"a1", "a2", "a4"}
    hops = result.path()
    assert hops.count(("h1", "br-tun")) == 1 and ("h2", "br-tun") in hops
    assert hops.count(("h2", "br-tun")) == 1              # nothing came back to h2
    assert [(a, b) for a, b, _, _ in result.tunnelled] == [("h2", "h1")]


def test_broadcast_of_a_pod_on_one_host_and_a_third_host(fabric):
    result = send(fabric, "c1", ipv4("c1", "all", BCAST, ip_proto=17, udp_src=1, udp_dst=1))
    assert names(result.port_ids()) == {"c2"}
    assert "h2" not in {h for h, _ in result.path()}


# ---- DHCP ------------------------------------------------------------------------------------

def dhcp(src: str, src_ip: str, dst_ip: str = "255.255.255.255", dst_mac: str = BCAST) -> dict:
    return ipv4(src, "server", dst_mac, src_ip=src_ip, dst_ip=dst_ip, ip_proto=17,
                udp_src=68, udp_dst=67)


@pytest.mark.parametrize("src_ip, dst_ip, dst_mac", [
    ("0.0.0.0", "255.255.255.255", BCAST),                 # DISCOVER / REQUEST
    ("198.18.135.14", "198.18.135.1", DHCP_SERVER[1]),             # unicast renewal
    ("198.18.135.14", "255.255.255.255", BCAST),               # broadcast rebinding
])
def test_dhcp_from_a_dhcp_port_goes_to_the_controller_only(fabric, src_ip, dst_ip, dst_mac):
    result = send(fabric, "a4", dhcp("a4", src_ip, dst_ip, dst_mac))
    assert result.deliveries == []
    [(host, bridge, cookie, pkt)] = result.controller
    assert (host, bridge) == ("h2", "br-int")
    assert parse_cookie(cookie)[:2] == (Kind.PORT, PORTS["a4"].id)
    assert pkt["ipv4_src"] == src_ip


def test_dhcp_from_a_static_port_never_reaches_the_controller(fabric):
    assert send(fabric, "a1", dhcp("a1", "0.0.0.0")).controller == []
    assert send(fabric, "a1", dhcp("a1", "0.0.0.0")).deliveries == []
    # from its own address it is ordinary pod broadcast
    assert names(send(fabric, "a1", dhcp("a1", "198.18.135.11")).port_ids()) == {"a2", "a3", "a4"}


def test_dhcp_flows_send_whole_packets():
    topo = Topology(hosts(), pods(), PORTS.values())
    flows = flatten(host_flows(topo, "h2"))["br-int"]
    controller = [a for f in flows for a in f.actions if a[0] == "controller"]
    assert controller == [("controller", 0xFFFF)] * 2     # OFPCML_NO_BUFFER


# ---- tunnel ingress --------------------------------------------------------------------------

def from_tunnel(fabric, host: str, peer: str, key: int, dst: str) -> set[str]:
    tun_port = fabric.topo.hosts[host].tunnel_ofports[peer]
    pkt = {"eth_src": "02:00:00:00:00:77", "eth_dst": dst, "eth_type": 0x0800,
           "ipv4_src": "198.18.135.77", "ipv4_dst": "198.18.135.13", "ip_proto": 6,
           "tunnel_id": key}
    return names(fabric.send(host, tun_port, pkt, bridge="br-tun").port_ids())


def test_tunnel_key_selects_the_pod(fabric):
    assert from_tunnel(fabric, "h2", "h1", 8, PORTS["a3"].mac) == {"a3"}
    assert from_tunnel(fabric, "h2", "h1", 9, PORTS["b2"].mac) == {"b2"}


def test_a_wrong_key_never_reaches_another_pod_port(fabric):
    assert from_tunnel(fabric, "h2", "h1", 9, PORTS["a3"].mac) == set()   # pod 8 key, pod 7 MAC
    assert from_tunnel(fabric, "h2", "h1", 8, PORTS["b2"].mac) == set()
    assert from_tunnel(fabric, "h2", "h1", 8, BCAST) == {"a3", "a4"}      # not b2


@pytest.mark.parametrize("key", [0, 10, 12345, 0xFFFFFF])   # 10 = pod 9, absent from h2
def test_an_unknown_key_is_dropped(fabric, key):
    assert from_tunnel(fabric, "h2", "h1", key, PORTS["a3"].mac) == set()
    assert from_tunnel(fabric, "h2", "h1", key, BCAST) == set()


# ---- structure -------------------------------------------------------------------------------

def test_every_table_ends_in_an_explicit_priority_0_drop(topo):
    for host in topo.hosts:
        for bridge, flows in flatten(host_flows(topo, host)).items():
            tables = {f.table for f in flows}
            drops = {f.table for f in flows if f.priority == 0 and f.match == ()
                     and f.actions == ()}
            assert tables == drops, (host, bridge)


def test_no_normal_no_learning_no_flooding(topo):
    allowed = {"output", "controller", "push_vlan", "pop_vlan", "set_field", "move",
               "write_metadata", "goto"}
    for host in topo.hosts:
        for flows in flatten(host_flows(topo, host)).values():
            for flow in flows:
                assert {a[0] for a in flow.actions} <= allowed
                for a in flow.actions:
                    if a[0] == "output":
                        assert a[1] < 0xFF00 or a[1] == 0xFFFFFFF8, flow   # ports or IN_PORT


def test_every_cookie_is_loris_and_names_its_object(topo):
    by_id = {p.id: p for p in topo.ports.values()}
    for host in topo.hosts:
        for section, bridges in host_flows(topo, host).items():
            for flows in bridges.values():
                assert len({f.cookie for f in flows}) == len(flows)   # unique per bridge
                for flow in flows:
                    assert flow.cookie & LORIS_COOKIE_MASK == LORIS_COOKIE
                    kind, obj, _ = parse_cookie(flow.cookie)
                    if section is None:
                        assert kind in (Kind.BASE, Kind.TUNNEL)
                    elif kind is Kind.POD:
                        assert obj == section
                    else:
                        assert kind in (Kind.PORT, Kind.MEMBER)
                        assert by_id[obj].pod_id == section
                        if kind is Kind.PORT:
                            assert by_id[obj].host_id == host


def test_cookies_are_the_same_in_another_process(topo):
    here_dir = str(Path(__file__).parent)
    script = (
        f"import sys; sys.path.insert(0, {here_dir!r})\n"
        "from test_flows_pipeline import *\n"
        "t = Topology(hosts(), pods(), PORTS.values())\n"
        "print(sorted(f.cookie for h in t.hosts for fs in flatten(host_flows(t, h)).values()"
        " for f in fs))\n"
    )
    here = sorted(f.cookie for h in topo.hosts for fs in flatten(host_flows(topo, h)).values()
                  for f in fs)
    env = {"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, check=True).stdout
    assert out.strip() == str(here)


def test_a_pod_section_alone_equals_the_same_section_of_the_full_computation(topo):
    full = host_flows(topo, "h1")
    assert set(full) == {None, 7, 8, 9}
    for pod in (7, 8, 9):
        assert host_flows(topo, "h1", pods=[pod]) == {pod: full[pod]}
    assert host_flows(topo, "h3", pods=[7]) == {7: {"br-int": frozenset(),
                                                    "br-tun": frozenset()}}
    assert host_flows(topo, "h1", pods=[12345]) == {12345: {"br-int": frozenset(),
                                                            "br-tun": frozenset()}}


def test_host_without_patch_ports_still_switches_locally():
    hs = [HostSpec("h1", "198.18.0.11", None, None, {}, {7: 100}),
          HostSpec("h2", "198.18.0.12", 1, 1, {}, {7: 200})]
    t = Topology(hs, pods(), [PORTS["a1"], PORTS["a2"], PORTS["a3"]])
    result = Fabric(t).send("h1", 10, ipv4("a1", "a2", PORTS["a2"].mac))
    assert names(result.port_ids()) == {"a2"}
    result = Fabric(t).send("h1", 10, ipv4("a1", "a3", PORTS["a3"].mac))
    assert result.deliveries == []
    flows = flatten(host_flows(t, "h1"))
    assert not any(("output", 1) in f.actions for f in flows["br-int"])
