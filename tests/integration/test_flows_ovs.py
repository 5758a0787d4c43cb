"""The computed flows on real Open vSwitch: `ovs-appctl ofproto/trace` agrees with the offline
tracer, and real packets between namespace containers do what the pipeline promises.

One 3-host VXLAN lab for the module. Each host gets br-int and br-tun as the agent would make
them (patch ports, one `lt-` tunnel port per peer with key=flow); containers are bare
namespaces plugged into br-int with a veth. The topology is then read back from OVS (real
ofports), its flows computed by `flows.host_flows` and loaded with `ovs-ofctl add-flows`.

    h1: a1 (pod 7), a2 (pod 7), b1 (pod 8, same IP as a1), c1 (pod 9)
    h2: a3 (pod 7), a4 (pod 7, DHCP), b2 (pod 8, same IP as a3)
    h3: c2 (pod 9)
"""

from __future__ import annotations

import re
import subprocess
from functools import partial

import helpers
import pytest
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from flows import (
    HostSpec,
    PodSpec,
    PortSpec,
    Topology,
    contract,
    flatten,
    host_flows,
    to_flowmod,
    to_ofctl,
)
from flows.flow import FIELDS
from flows.trace import Fabric
from lab import Lab

pytestmark = pytest.mark.integration

BCAST = "ff:ff:ff:ff:ff:ff"
CONTAINERS = {  # name: (host, pod, ip, dhcp)
    "a1": ("h1", 7, "198.18.135.11", False), "a2": ("h1", 7, "198.18.135.12", False),
    "b1": ("h1", 8, "198.18.135.11", False), "c1": ("h1", 9, "198.18.137.11", False),
    "a3": ("h2", 7, "198.18.135.13", False), "a4": ("h2", 7, "198.18.135.14", True),
    "b2": ("h2", 8, "198.18.135.13", False), "c2": ("h3", 9, "198.18.137.12", False),
}
VLANS = {"h1": {7: 11, 8: 12, 9: 13}, "h2": {7: 21, 8: 22}, "h3": {9: 31}}
PODS = [PodSpec(7, 8, "198.18.135.0/24", ("198.18.135.1", "0a:4c:00:00:00:08")),
        PodSpec(8, 9, "198.18.135.0/24"), PodSpec(9, 10, "198.18.137.0/24")]


def mac_of(name: str) -> str:
    return f"02:00:00:00:{ord(name[0]):02x}:{int(name[1:]):02x}"


def make_bridges(lab: Lab) -> None:
    """br-int + br-tun + patch ports + one VXLAN port per peer, as docs/design.md names them."""
    for h in lab.hosts:
        args: list[str] = []
        for br, patch, peer in (("br-int", "patch-tun", "patch-int"),
                                ("br-tun", "patch-int", "patch-tun")):
            args += ["--", "add-br", br, "--", "set", "bridge", br,
                     f"datapath_type={lab.datapath_type}", "fail_mode=secure",
                     "protocols=OpenFlow13", "other-config:disable-in-band=true",
                     "external_ids:loris=1",
                     "--", "add-port", br, patch, "--", "set", "interface", patch, "type=patch",
                     f"options:peer={peer}"]
        for other in lab.hosts:
            if other is not h:
                name = contract.tunnel_port_name(other.tunnel_ip)
                args += ["--", "add-port", "br-tun", name, "--", "set", "interface", name,
                         f"type={lab.tunnel}", f"options:remote_ip={other.tunnel_ip}",
                         "options:key=flow", "options:df_default=true"]
        lab.ovs(h).vsctl(*args)


def ofport(lab: Lab, host: str, name: str) -> int:
    return int(lab.ovs(host).vsctl("get", "interface", name, "ofport"))


@pytest.fixture(scope="module")
def world():
    with Lab(hosts=3, tunnel="vxlan", docker=False) as lab:
        make_bridges(lab)
        ports = []
        for pid, (name, (host, pod, ip, dhcp)) in enumerate(CONTAINERS.items(), start=1):
            c = lab.add_container(host, name, kind="netns")
            veth = lab.attach_plain(c, f"{ip}/24", bridge="br-int")
            lab.run(c, ["ip", "link", "set", "eth1", "address", mac_of(name)])
            ports.append(PortSpec(pid, pod, host, ofport(lab, host, veth), mac_of(name), ip, dhcp))
        hosts = []
        for h in lab.hosts:
            tunnels = {o.name: ofport(lab, h.name, contract.tunnel_port_name(o.tunnel_ip))
                       for o in lab.hosts if o is not h}
            hosts.append(HostSpec(h.name, h.tunnel_ip, ofport(lab, h.name, "patch-tun"),
                                  ofport(lab, h.name, "patch-int"), tunnels, VLANS[h.name]))
        topo = Topology(hosts, PODS, ports)
        flows = {h.name: flatten(host_flows(topo, h.name)) for h in lab.hosts}
        for h in lab.hosts:
            for bridge, fs in flows[h.name].items():
                path = lab.dir / f"{h.name}-{bridge}.flows"
                path.write_text("".join(to_ofctl(f) + "\n" for f in sorted(fs, key=str)))
                lab.ovs(h).ofctl("add-flows", bridge, str(path))
        yield lab, topo, flows, Fabric(topo, flows)


def test_every_computed_flow_is_on_the_switch_and_nothing_else(world):
    lab, _, flows, _ = world
    for h in lab.hosts:
        for bridge, fs in flows[h.name].items():
            dumped = lab.ovs(h).dump_flows(bridge, stats=False)
            cookies = {int(m.group(1), 16) for line in dumped
                       if (m := re.search(r"cookie=(0x[0-9a-f]+)", line))}
            assert len(dumped) == len(fs) and cookies == {f.cookie for f in fs}, (h, bridge)


class Datapath:
    """What os-ken's serializer reads from a Datapath."""
    ofproto = ofproto_v1_3
    ofproto_parser = ofproto_v1_3_parser
    id = 1


def test_os_ken_flowmods_decode_to_the_same_flows_as_the_ofctl_text(world, tmp_path):
    """OVS's own decoder reads the os-ken messages (Nicira moves included) as exactly the
    flows the `ovs-ofctl` text describes: the controller installs what the tests trace."""
    lab, _, flows, _ = world
    everything = sorted({f for per_host in flows.values() for fs in per_host.values()
                         for f in fs}, key=str)
    binary, text = tmp_path / "flowmods.bin", tmp_path / "flows.txt"
    messages = bytearray()
    for flow in everything:
        msg = to_flowmod(flow, Datapath(), "add")
        msg.serialize()
        messages += msg.buf
    binary.write_bytes(bytes(messages))
    text.write_text("".join(to_ofctl(f) + "\n" for f in everything))

    def decoded(argv: list[str]) -> list[str]:
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        return [re.sub(r"\(xid=0x[0-9a-f]+\)", "", line) for line in out.splitlines()
                if line.startswith("OFPT_FLOW_MOD")]

    from_os_ken = decoded(["ovs-ofctl", "ofp-parse", str(binary)])
    from_text = decoded(["ovs-ofctl", "-O", "OpenFlow13", "parse-flows", str(text)])
    assert len(from_os_ken) == len(everything) > 100
    assert from_os_ken == from_text


# ---- ofproto/trace against the simulator -----------------------------------------------------

PROTOCOLS = {(0x0800, 17): "udp", (0x0800, 6): "tcp", (0x0800, None): "ip",
             (0x0806, None): "arp"}


def ovs_flow_text(pkt: dict, in_port: int, extra: str = "") -> str:
    """The packet in ofproto/trace's syntax (which wants "udp", not dl_type + nw_proto)."""
    proto = PROTOCOLS.get((pkt.get("eth_type"), pkt.get("ip_proto")))
    parts = [proto] if proto else []
    parts.append(f"in_port={in_port}")
    for name, value in pkt.items():
        if proto and name in ("eth_type", "ip_proto"):
            continue
        if name == "vlan_vid":
            if value:
                parts.append(f"dl_vlan={value & 0xFFF}")
        elif name in ("eth_type", "tunnel_id"):
            parts.append(f"{FIELDS[name]}={value:#x}")
        elif name in ("udp_src", "udp_dst"):           # ofproto/trace refuses tp_src here
            parts.append(f"{name}={value}")
        else:
            parts.append(f"{FIELDS[name]}={value}")
    return ",".join(parts) + extra


def split_top(text: str) -> list[str]:
    """Split datapath actions at the commas that are not inside parentheses."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            out.append(text[start:i])
            start = i + 1
    out.append(text[start:])
    return [t.strip() for t in out if t.strip()]


def odp_ports(lab: Lab, host: str) -> dict[int, tuple[str, int]]:
    """Datapath port number -> (bridge, OpenFlow port), from `dpif/show`."""
    out, bridge = {}, None
    for line in lab.ovs(host).appctl("dpif/show").splitlines():
        if m := re.match(r"^  (\S+):$", line):
            bridge = m.group(1)
        elif m := re.match(r"^\s+\S+ (\d+)/(\d+):", line):
            out[int(m.group(2))] = (bridge, int(m.group(1)))
    return out


def ovs_outcome(lab: Lab, host: str, bridge: str, flow_text: str) -> tuple[set, str]:
    """What `ofproto/trace` says the host does: {("port", ofport) | ("tunnel", host, key) |
    ("controller", cookie)}, plus the "Final flow" line."""
    trace = lab.ovs(host).appctl("ofproto/trace", bridge, flow_text)
    actions = re.search(r"^Datapath actions: (.*)$", trace, re.M).group(1)
    final = re.search(r"^Final flow: (.*)$", trace, re.M).group(1)
    by_ip = {h.tunnel_ip: h.name for h in lab.hosts}
    odp = odp_ports(lab, host)
    seen: set = set()
    for m in re.finditer(r"ipv4\(src=[\d.]+,dst=([\d.]+),proto=17.*?vni=(0x[0-9a-f]+)\)",
                         actions):
        seen.add(("tunnel", by_ip[m.group(1)], int(m.group(2), 16)))
    for m in re.finditer(r"controller\(.*?rule_cookie=(0x[0-9a-f]+|0)\b", actions):
        seen.add(("controller", int(m.group(1), 16)))

    def walk(tokens: list[str]) -> None:
        for token in tokens:
            if token.isdigit() and odp.get(int(token), ("", 0))[0] == "br-int":
                seen.add(("port", odp[int(token)][1]))
            elif token.startswith("clone(") and token.endswith(")"):
                walk(split_top(token[6:-1]))

    walk(split_top(actions))
    return seen, final


def sim_outcome(fabric: Fabric, host: str, bridge: str, in_port: int, pkt: dict):
    result = fabric.send(host, in_port, pkt, bridge=bridge, follow_tunnels=False)
    seen = {("port", d.ofport) for d in result.deliveries}
    seen |= {("tunnel", dst, key) for _, dst, key, _ in result.tunnelled}
    seen |= {("controller", cookie) for _, _, cookie, _ in result.controller}
    return seen, result


def port(topo: Topology, name: str) -> PortSpec:
    return topo.ports[list(CONTAINERS).index(name) + 1]


def ipv4(topo, src, dst_mac, src_ip=None, dst_ip="198.18.135.200", **extra):
    p = port(topo, src)
    pkt = {"eth_src": p.mac, "eth_dst": dst_mac, "eth_type": 0x0800,
           "ipv4_src": src_ip or p.ip, "ipv4_dst": dst_ip, "ip_proto": 6}
    pkt.update(extra)
    return pkt


def arp(topo, src, tpa, **over):
    p = port(topo, src)
    pkt = {"eth_src": p.mac, "eth_dst": BCAST, "eth_type": 0x0806, "arp_op": 1,
           "arp_sha": p.mac, "arp_spa": p.ip, "arp_tha": "00:00:00:00:00:00", "arp_tpa": tpa}
    pkt.update(over)
    return pkt


CASES = {
    # name: (sender, packet builder, what must happen (None: drop), in simulator terms)
    "same pod, same host": ("a1", lambda t: ipv4(t, "a1", mac_of("a2")), {"port a2"}),
    "same pod, across hosts": ("a1", lambda t: ipv4(t, "a1", mac_of("a3")), {"tunnel h2 8"}),
    "other pod, same host": ("a1", lambda t: ipv4(t, "a1", mac_of("b1")), set()),
    "other pod, across hosts": ("a1", lambda t: ipv4(t, "a1", mac_of("b2")), set()),
    "unknown unicast": ("a1", lambda t: ipv4(t, "a1", "02:00:00:00:99:99"), set()),
    "spoofed MAC": ("a1", lambda t: ipv4(t, "a1", mac_of("a2"), eth_src="02:00:00:00:66:66"),
                    set()),
    "spoofed IP": ("a1", lambda t: ipv4(t, "a1", mac_of("a2"), src_ip="198.18.135.66"), set()),
    "spoofed ARP sha": ("a1", lambda t: arp(t, "a1", "198.18.135.12", arp_sha="02:00:00:00:66:66"),
                        set()),
    "spoofed ARP spa": ("a1", lambda t: arp(t, "a1", "198.18.135.12", arp_spa="198.18.135.66"),
                        set()),
    "ARP local member": ("a1", lambda t: arp(t, "a1", "198.18.135.12"), {"port a1"}),
    "ARP remote member": ("a1", lambda t: arp(t, "a1", "198.18.135.13"), {"port a1"}),
    "ARP DHCP server": ("a4", lambda t: arp(t, "a4", "198.18.135.1"), {"port a4"}),
    "ARP other pod's owner of the IP": ("b1", lambda t: arp(t, "b1", "198.18.135.13"), {"port b1"}),
    "ARP unknown IP": ("a1", lambda t: arp(t, "a1", "198.18.135.99"), set()),
    "ARP own IP": ("a1", lambda t: arp(t, "a1", "198.18.135.11"), set()),
    "IPv6": ("a1", lambda t: {"eth_src": mac_of("a1"), "eth_dst": BCAST, "eth_type": 0x86DD},
             set()),
    "broadcast pod 7 from h1": ("a1", lambda t: ipv4(t, "a1", BCAST, dst_ip="198.18.135.255",
                                                     ip_proto=17, udp_src=9, udp_dst=9),
                                {"port a2", "tunnel h2 8"}),
    "multicast pod 9 from h1": ("c1", lambda t: ipv4(t, "c1", "01:00:5e:00:00:fb",
                                                     dst_ip="224.0.0.251", ip_proto=17,
                                                     udp_src=5353, udp_dst=5353),
                                {"tunnel h3 10"}),
    "DHCP discover": ("a4", lambda t: ipv4(t, "a4", BCAST, src_ip="0.0.0.0",
                                           dst_ip="255.255.255.255", ip_proto=17,
                                           udp_src=68, udp_dst=67), {"controller a4"}),
    "DHCP from a static port": ("a1", lambda t: ipv4(t, "a1", BCAST, src_ip="0.0.0.0",
                                                     dst_ip="255.255.255.255", ip_proto=17,
                                                     udp_src=68, udp_dst=67), set()),
}


def expected(topo, flows, host, words: set[str]) -> set:
    out = set()
    for word in words:
        kind, *rest = word.split()
        if kind == "port":
            out.add(("port", port(topo, rest[0]).ofport))
        elif kind == "tunnel":
            out.add(("tunnel", rest[0], int(rest[1])))
        else:   # the DHCP flow's cookie: kind PORT, object id = the port id
            pid = port(topo, rest[0]).id
            out.add(("controller", next(f.cookie for f in flows[host]["br-int"]
                                        if ("controller", 0xFFFF) in f.actions
                                        and f.object_id == pid and
                                        dict(f.match)["ipv4_src"] == "0.0.0.0")))
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_ofproto_trace_agrees_with_the_simulator(world, case):
    lab, topo, flows, fabric = world
    sender, build, want = CASES[case]
    p = port(topo, sender)
    pkt = build(topo)
    ovs, final = ovs_outcome(lab, p.host_id, "br-int", ovs_flow_text(pkt, p.ofport))
    sim, result = sim_outcome(fabric, p.host_id, "br-int", p.ofport, pkt)
    assert ovs == sim == expected(topo, flows, p.host_id, want)
    if case.startswith("ARP") and sim:
        # the reply OVS built, field by field, is the one the simulator built
        fields = dict(kv.split("=", 1) for kv in final.split(",") if "=" in kv)
        reply = result.deliveries[0].packet
        for oxm in ("eth_src", "eth_dst", "arp_op", "arp_spa", "arp_tpa", "arp_sha", "arp_tha"):
            assert fields[FIELDS[oxm]] == str(reply[oxm]), oxm
        assert reply["arp_op"] == 2 and reply["eth_dst"] == p.mac


TUNNEL_CASES = {
    # (receiving host, from host, key, destination): who gets it
    "right key, right MAC": ("h2", "h1", 8, "a3", {"port a3"}),
    "pod 8 key, pod 7 MAC": ("h2", "h1", 9, "a3", set()),
    "pod 7 key, pod 8 MAC": ("h2", "h1", 8, "b2", set()),
    "pod 7 key, broadcast": ("h2", "h1", 8, "bcast", {"port a3", "port a4"}),
    "key of a pod absent here": ("h2", "h3", 10, "bcast", set()),
    "unknown key": ("h2", "h1", 999, "a3", set()),
}


@pytest.mark.parametrize("case", list(TUNNEL_CASES))
def test_tunnel_ingress_agrees_with_the_simulator(world, case):
    lab, topo, flows, fabric = world
    host, peer, key, dst, want = TUNNEL_CASES[case]
    spec = topo.hosts[host]
    in_port = spec.tunnel_ofports[peer]
    pkt = {"eth_src": "02:00:00:00:77:77", "eth_dst": BCAST if dst == "bcast" else mac_of(dst),
           "eth_type": 0x0800, "ipv4_src": "198.18.135.77", "ipv4_dst": "198.18.135.13",
           "ip_proto": 6, "tunnel_id": key}
    extra = f",tun_src={topo.hosts[peer].tunnel_ip},tun_dst={spec.tunnel_ip}"
    ovs, _ = ovs_outcome(lab, host, "br-tun", ovs_flow_text(pkt, in_port, extra))
    sim, _ = sim_outcome(fabric, host, "br-tun", in_port, pkt)
    assert ovs == sim == expected(topo, flows, host, want)


# ---- real packets ----------------------------------------------------------------------------

# three tries: one reply is success (ping exits 0), none is failure (host's iputils ping)
ping = partial(helpers.pings, count=3, interval=0.2)


def neighbour(lab: Lab, name: str, ip: str) -> str:
    return lab.run(lab.container(name), ["ip", "neigh", "show", ip, "dev", "eth1"]).stdout


def test_real_pings_follow_the_pods(world):
    lab, *_ = world
    assert ping(lab, "a1", "198.18.135.12")                  # same host
    assert ping(lab, "a1", "198.18.135.13")                  # across hosts, VXLAN key 8
    assert ping(lab, "c1", "198.18.137.12")                  # pod 9, h1 -> h3
    # b1 (pod 8) reaches 198.18.135.13 = b2, never a3 which has the same address in pod 7
    assert ping(lab, "b1", "198.18.135.13")
    assert mac_of("b2") in neighbour(lab, "b1", "198.18.135.13")
    assert mac_of("a3") in neighbour(lab, "a1", "198.18.135.13")
    # pod 8 has no 198.18.135.12: nobody answers b1's ARP
    assert not ping(lab, "b1", "198.18.135.12")
    assert mac_of("a2") not in neighbour(lab, "b1", "198.18.135.12")


def test_real_spoofed_source_address_gets_nowhere(world):
    lab, *_ = world
    a1 = lab.container("a1")
    lab.run(a1, ["ip", "addr", "add", "198.18.135.99/24", "dev", "eth1"])
    try:
        assert not ping(lab, "a1", "198.18.135.12", source="198.18.135.99")
        assert ping(lab, "a1", "198.18.135.12", source="198.18.135.11")
    finally:
        lab.run(a1, ["ip", "addr", "del", "198.18.135.99/24", "dev", "eth1"])
