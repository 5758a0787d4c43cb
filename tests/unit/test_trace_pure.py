"""The pure parts of `loris trace` and the port counters: cookies decoded to their owners,
flow dumps turned back into `Flow`s, the verdicts' wording, ofproto/trace's answer parsed
and compared, the port counters' arithmetic."""

from __future__ import annotations

import struct

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller import flowdump, port_stats
from controller.switches import serialized
from controller.trace_names import Names, PortInfo
from controller.trace_verdict import Bridge, Run, judge, legs, verdict
from flows import HostSpec, Kind, PodSpec, PortSpec, Topology, flatten, host_flows, to_flowmod
from flows.flow import Flow, make_flow, parse_cookie
from flows.trace import Fabric
from hostagent import ofproto_trace
from hostagent.cli.trace_output import trace_text

HOSTS = [HostSpec("h1", "198.18.0.11", 1, 1, {"h2": 2}, {7: 100, 8: 101}),
         HostSpec("h2", "198.18.0.12", 1, 1, {"h1": 2}, {7: 200})]
PODS = [PodSpec(7, 8, "198.18.135.0/24", ("198.18.135.1", "0a:4c:00:00:00:08")),
        PodSpec(8, 9, "198.18.135.0/24")]
PORTS = [PortSpec(1, 7, "h1", 10, "02:00:00:00:00:01", "198.18.135.11"),
         PortSpec(2, 7, "h1", 11, "02:00:00:00:00:02", "198.18.135.12", dhcp=True),
         PortSpec(3, 7, "h2", 10, "02:00:00:00:00:03", "198.18.135.13"),
         PortSpec(4, 8, "h1", 12, "02:00:00:00:00:04", "198.18.135.21")]
NAMES = {1: "web1", 2: "web2", 3: "db1", 4: "other"}
TOPO = Topology(HOSTS, PODS, PORTS)
INFO = {p.id: PortInfo(p.id, NAMES[p.id], p.host_id, p.pod_id, p.mac, p.ip, p.ofport, "active",
                       p.dhcp) for p in PORTS}
N = Names(ports=INFO, tunnel_ips={"h1": "198.18.0.11", "h2": "198.18.0.12"},
          tunnel_peers={("h1", 2): "h2", ("h2", 2): "h1"},
          dhcp_servers={7: ("198.18.135.1", "0a:4c:00:00:00:08")},
          patch={"h1": (1, 1), "h2": (1, 1)})
DESIRED = {h: flatten(host_flows(TOPO, h)) for h in TOPO.hosts}


def flows_of(host: str, bridge: str, kind: Kind, obj: int) -> list[Flow]:
    return [f for f in DESIRED[host][bridge] if parse_cookie(f.cookie)[:2] == (kind, obj)]


# ---- cookies decoded --------------------------------------------------------------------

def test_owner_names_the_object_of_every_kind_of_cookie():
    base = flows_of("h1", "br-int", Kind.BASE, 0)[0]
    assert N.owner(base.cookie, "h1") == "base pipeline of h1"
    [tunnel] = [f for f in DESIRED["h1"]["br-tun"] if f.kind is Kind.TUNNEL]
    assert N.owner(tunnel.cookie, "h1") == "tunnel port 2 of h1 (to h2)"
    assert N.owner(flows_of("h1", "br-int", Kind.POD, 7)[0].cookie, "h1") == "pod 7 on h1"
    member = flows_of("h1", "br-tun", Kind.MEMBER, 3)[0]
    assert N.owner(member.cookie, "h1") == "port 3: db1 in pod 7 on h2"
    gone = make_flow(0, 100, {"in_port": 9}, [], Kind.PORT, 99)
    assert N.owner(gone.cookie, "h1") == "port 99, which the controller no longer has"
    assert N.owner(0x1234, "h1").startswith("not a Loris flow (cookie 0x1234)")


def test_role_says_what_each_flow_is_for():
    roles = {N.role(f, "br-int", "h1") for f in flows_of("h1", "br-int", Kind.PORT, 1)}
    assert roles == {"port security of web1", "port security of web1: anything else is dropped",
                     "web1's own address is never answered", "delivery to web1",
                     "delivery to web1 (from the tunnels)"}
    assert "DHCP of web2 to the controller" in {
        N.role(f, "br-int", "h1") for f in flows_of("h1", "br-int", Kind.PORT, 2)}
    pod = {N.role(f, "br-int", "h1") for f in flows_of("h1", "br-int", Kind.POD, 7)}
    assert {"flood list of pod 7", "ARP answer for pod 7's DHCP server",
            "unicast of pod 7 to its other hosts (br-tun)"} <= pod
    assert [N.role(f, "br-tun", "h1") for f in flows_of("h1", "br-tun", Kind.MEMBER, 3)] == \
        ["the flow for db1's MAC into the tunnel to h2"]
    assert {N.role(f, "br-int", "h1") for f in flows_of("h1", "br-int", Kind.MEMBER, 3)} == \
        {"ARP answer for db1 (198.18.135.13)"}


# ---- dumps turned back into flows ----------------------------------------------------------

class _Dp:
    ofproto, ofproto_parser = ofp, parser


def as_dumped(flow: Flow, packets: int = 0) -> parser.OFPFlowStats:
    """`flow` as a flow-stats reply carries it: through its flow-mod's bytes and back."""
    buf = serialized(to_flowmod(flow, _Dp, "add"))
    msg = parser.OFPFlowMod.parser(_Dp, ofp.OFP_VERSION, ofp.OFPT_FLOW_MOD, len(buf), 0, buf)
    return parser.OFPFlowStats(msg.table_id, 0, 0, msg.priority, 0, 0, 0, msg.cookie,
                               packets, packets * 100, msg.match, msg.instructions)


@pytest.mark.parametrize("host", ["h1", "h2"])
def test_every_flow_comes_back_from_a_dump_as_it_was_computed(host):
    for bridge, flows in DESIRED[host].items():
        dumped = flowdump.from_stats([as_dumped(f) for f in flows], ofp)
        assert {d.flow for d in dumped} == set(flows), bridge
        assert all(d.intact and d.loris for d in dumped)


def test_a_flow_changed_by_hand_is_not_intact_and_foreign_actions_are_kept():
    flow = flows_of("h1", "br-int", Kind.PORT, 1)[0]
    changed = Flow(flow.table, flow.priority, flow.match, (("output", 99),), flow.cookie)
    [d] = flowdump.from_stats([as_dumped(changed, packets=3)], ofp)
    assert d.flow == changed and not d.intact and (d.packets, d.bytes) == (3, 300)
    group = parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [parser.OFPActionGroup(5)])
    stat = parser.OFPFlowStats(0, 0, 0, 5, 0, 0, 0, 0x99, 0, 0, parser.OFPMatch(in_port=3),
                               [group])
    [foreign] = flowdump.from_stats([stat], ofp)
    assert not foreign.loris and foreign.flow.actions == (("unsupported",
                                                           "action OFPActionGroup"),)
    assert "<action OFPActionGroup>" in str(foreign.flow)


def test_onf_copy_field_is_a_move():
    """How OVS dumps `move` over OpenFlow 1.3 (ONFACT_ET_COPY_FIELD)."""
    data = struct.pack("!H2xHHH2xII", 3200, 48, 0, 0, ofp.OXM_OF_ETH_SRC, ofp.OXM_OF_ETH_DST)
    action = parser.OFPActionExperimenterUnknown(flowdump.ONF_EXPERIMENTER_ID, data)
    assert flowdump._action(action, ofp) == ("move", "eth_src", "eth_dst", 48)


def test_port_counters_add_up_by_kind_of_flow():
    dumped = flowdump.from_stats([as_dumped(f, packets=2)
                                  for f in flows_of("h1", "br-int", Kind.PORT, 1)], ofp)
    counts = port_stats.tally(dumped, 1.0)
    # two port-security passes (IPv4, ARP), two deliveries, one drop; the own-IP drop of
    # table 10 is neither (those frames already counted as sent)
    assert counts == {1: {"sent": {"packets": 4, "bytes": 400},
                          "received": {"packets": 4, "bytes": 400},
                          "dropped": {"packets": 2, "bytes": 200}, "read_at": 1.0}}


# ---- the verdicts ------------------------------------------------------------------------

def run_trace(protocol, src, dst=None, dst_ip=None, installed=None, **spoof):
    installed = installed or DESIRED
    bridges = {(h, b): Bridge(frozenset(installed[h][b]), DESIRED[h][b], 1e9)
               for h in DESIRED for b in DESIRED[h]}
    s, d = INFO[src], INFO[dst] if dst else None
    runs = [Run(leg, Fabric(TOPO, installed).send(s.host if leg.sender is s else d.host,
                                                  leg.sender.ofport, leg.packet),
                Fabric(TOPO, DESIRED).send(leg.sender.host, leg.sender.ofport, leg.packet))
            for leg in legs(protocol, s, d, dst_ip, None, answer_mac=d.mac if d else None,
                            **spoof)]
    outcomes = [judge(r, N, bridges) for r in runs]
    return verdict(runs, outcomes, s, d, N), outcomes


def test_delivered_across_hosts_names_the_tunnel_and_key():
    v, outcomes = run_trace("icmp", 1, 3)
    assert v.ok and v.text == ("delivered to db1 on h2 through the tunnel to 198.18.0.12, "
                               "key 8 (and the reply comes back)")
    assert outcomes[0].text == ("answered on h1 by the ARP responder: 198.18.135.13 is at "
                                "02:00:00:00:00:03 (db1)")
    assert run_trace("udp", 1, 2)[0].text == "delivered to web2 on h1 (same host)"


def test_spoofed_ip_and_mac_are_named_with_the_port_security_that_drops_them():
    v, _ = run_trace("tcp", 1, 3, source_ip="198.18.135.99")
    assert not v.ok and v.text == ("dropped at h1 br-int table 0 (port security of web1): ARP "
                                   "sender IP 198.18.135.99 is not web1's 198.18.135.11")
    assert "send from the MAC and IP Loris gave it" in v.fix
    _, outcomes = run_trace("icmp", 1, 3, source_mac="02:00:00:00:66:66")
    assert outcomes[1].text == ("dropped at h1 br-int table 0 (port security of web1): source "
                                "MAC 02:00:00:00:66:66 is not web1's 02:00:00:00:00:01")


def test_other_pod_unknown_address_own_address_and_dhcp():
    v, _ = run_trace("icmp", 1, 4)
    assert v.text == "dropped: web1 (pod 7) and other (pod 8) are in different pods"
    v, _ = run_trace("arp", 1, dst_ip="198.18.135.99")
    assert v.text == ("dropped at h1 br-int table 10 (ARP responder): no member of pod 7 has "
                      "198.18.135.99")
    v, _ = run_trace("arp", 1, dst_ip="198.18.135.21")
    assert v.text.endswith("no member of pod 7 has 198.18.135.21; 198.18.135.21 is other's "
                           "address in pod 8")
    v, _ = run_trace("arp", 1, 1)
    assert v.text.startswith("dropped at h1 br-int table 10 (ARP responder): web1 asked for "
                             "its own address 198.18.135.11")
    v, _ = run_trace("dhcp", 1)
    assert v.text.startswith("dropped at h1 br-int table 0 (port security of web1): web1 is "
                             "not a DHCP port") and "`dhcp`" in v.fix
    v, _ = run_trace("dhcp", 2)
    assert v.ok and v.text == ("sent to the controller's DHCP responder (port 2: web2 in pod 7 "
                               "on h1)")


def test_a_flow_missing_on_a_switch_is_named_with_its_host_and_the_fix():
    member = flows_of("h2", "br-int", Kind.PORT, 3)
    lacking = {h: {b: [f for f in fs if f not in member] for b, fs in per.items()}
               for h, per in DESIRED.items()}
    v, _ = run_trace("icmp", 1, 3, installed=lacking)
    assert not v.ok and v.text.startswith(
        "dropped at h2 br-int table 30: the flow 'delivery to db1 (from the tunnels)' that "
        "the controller wants is missing on the switch (last reconciled ")
    assert v.fix.startswith("the controller puts it back") and "loris resync h2" in v.fix
    br = Bridge(frozenset(lacking["h2"]["br-int"]), DESIRED["h2"]["br-int"])
    assert {f.table for f in br.missing} == {0, 10, 20, 30} and br.unwanted == []


def test_the_text_ends_with_the_verdict_and_its_fix():
    result = {"protocol": "icmp", "source": {"container": "netns:web1", "port": 1, "pod": 7,
                                             "ip": "198.18.135.11", "mac": "02:00:00:00:00:01",
                                             "host": "h1", "ofport": 10, "state": "active"},
              "destination": {"ip": "198.18.135.99"}, "legs": [], "flows": [],
              "verdict": {"delivered": False, "text": "dropped: x", "fix": "do y"}}
    lines = trace_text(result, [{"text": "ofproto/trace on h1 agrees (arp: 7)"}]).splitlines()
    assert lines[0].startswith("trace icmp: web1 (port 1, pod 7")
    assert lines[-3:] == ["ofproto/trace on h1 agrees (arp: 7)", "verdict: dropped: x",
                          "fix: do y"]


# ---- ofproto/trace -------------------------------------------------------------------------

SWITCH = """\
Flow: icmp,in_port=2,vlan_tci=0x0000,dl_src=02:c0:25:35:f6:f5,dl_dst=02:26:69:62:26:fe,nw_src=198.18.135.11,nw_dst=198.18.135.13,nw_tos=0,nw_ecn=0,nw_ttl=0,nw_frag=no,icmp_type=8,icmp_code=0

bridge("br-int")
----------------
 0. ip,in_port=2,dl_src=02:c0:25:35:f6:f5,nw_src=198.18.135.11, priority 100, cookie 0x4c4000001f5b0cc0
    write_metadata:0x8
    goto_table:20
20. metadata=0x8,dl_dst=00:00:00:00:00:00/01:00:00:00:00:00, priority 10, cookie 0x4c300000763606ce
    push_vlan:0x8100
    set_field:4097->vlan_vid
    output:1

bridge("br-tun")
----------------
 0. in_port=1, priority 100, cookie 0x4c10000001caed05
    goto_table:10
10. dl_vlan=1,dl_dst=02:26:69:62:26:fe, priority 100, cookie 0x4c50000036c34671
    pop_vlan
    set_field:0x8->tun_id
    output:2
     -> output to native tunnel
     -> tunneling to 198.18.0.12 via br-phy
     -> tunneling from d2:f3:c5:d0:03:7b 198.18.0.11 to d6:11:19:14:99:33 198.18.0.12

bridge("br-phy")
----------------
 0. priority 0
    NORMAL
     -> no learned MAC for destination, flooding

Final flow: icmp,metadata=0x8,in_port=2,dl_vlan=1,dl_vlan_pcp=0,vlan_tci1=0x0000,dl_src=02:c0:25:35:f6:f5,dl_dst=02:26:69:62:26:fe,nw_src=198.18.135.11,nw_dst=198.18.135.13,nw_tos=0,nw_ecn=0,nw_ttl=0,nw_frag=no,icmp_type=8,icmp_code=0
Megaflow: recirc_id=0,eth,ip,in_port=2,dl_src=02:c0:25:35:f6:f5,dl_dst=02:26:69:62:26:fe,nw_src=198.18.135.11,nw_ecn=0,nw_frag=no
Datapath actions: tnl_push(tnl_port(5),header(size=50,type=4,eth(dst=d6:11:19:14:99:33,src=d2:f3:c5:d0:03:7b,dl_type=0x0800),ipv4(src=198.18.0.11,dst=198.18.0.12,proto=17,tos=0,ttl=64,frag=0x4000),udp(src=0,dst=4789,csum=0x0),vxlan(flags=0x8000000,vni=0x8)),out_port(2)),1
"""  # noqa: E501 (real ofproto/trace output, OVS 3.1, userspace datapath)
DPIF = """\
netdev@ovs-netdev: hit:10 missed:4
  br-int:
    br-int 65534/3: (tap)
    lp1 2/6: (system)
    lp2 3/7: (system)
    patch-tun 1/none: (patch: peer=patch-int)
  br-phy:
    br-phy 65534/2: (tap)
    eth0 1/1: (system)
  br-tun:
    br-tun 65534/4: (tap)
    lt-c612000c 2/5: (vxlan: key=flow, remote_ip=198.18.0.12)
    patch-int 1/none: (patch: peer=patch-tun)
"""


def test_ofproto_trace_is_parsed_and_compared_with_the_controllers_path():
    switch = ofproto_trace.parse(SWITCH)
    loris = [("br-int", 0, 0x4c4000001f5b0cc0), ("br-int", 20, 0x4c300000763606ce),
             ("br-tun", 0, 0x4c10000001caed05), ("br-tun", 10, 0x4c50000036c34671)]
    assert switch.path == loris + [("br-phy", 0, 0)]       # the tunnel packet goes on there
    assert switch.tunnels == {("198.18.0.12", 8)} and not switch.dropped
    odp = ofproto_trace.odp_ports(DPIF)
    assert odp[6] == ("br-int", 2) and odp[5] == ("br-tun", 2)
    expected = {"path": [[b, t, f"{c:#x}"] for b, t, c in loris], "ports": [],
                "tunnels": [["198.18.0.12", 8]], "controller": False}
    assert ofproto_trace.compare(expected, switch, odp) == []
    other = dict(expected, path=expected["path"][:3], tunnels=[])
    problems = ofproto_trace.compare(other, switch, odp)
    assert problems[0] == ("flows: the switch hit br-tun table 10 cookie 0x4c50000036c34671 "
                           "where the controller's trace hit nothing more")
    assert problems[1].startswith("into tunnels: the switch 198.18.0.12 key 8")


def test_a_drop_and_a_local_delivery_in_ofproto_trace():
    dropped = ofproto_trace.parse('bridge("br-int")\n 0. priority 0, cookie 0x4c1\n    drop\n'
                                  "Datapath actions: drop\n")
    assert dropped.dropped and dropped.path == [("br-int", 0, 0x4c1)]
    local = ofproto_trace.parse('bridge("br-int")\n 0. No match.\n    drop\n'
                                "Datapath actions: 7,clone(8)\n")
    assert local.ports == {7, 8} and local.path == [("br-int", 0, None)]
