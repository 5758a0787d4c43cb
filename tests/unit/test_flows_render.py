"""Renderers: exact ovs-ofctl text, and OFPFlowMods that os-ken serializes and parses back."""

import re

import pytest
from os_ken.ofproto import ofproto_parser, ofproto_v1_3, ofproto_v1_3_parser

from flows import (
    LORIS_COOKIE_MASK,
    OBJECT_COOKIE_MASK,
    HostSpec,
    Kind,
    PodSpec,
    PortSpec,
    Topology,
    delete_by_cookie,
    flatten,
    host_flows,
    to_flowmod,
    to_ofctl,
)
from flows.flow import make_flow, output


class Datapath:
    """The part of os-ken's Datapath that building and serializing a message reads."""
    ofproto = ofproto_v1_3
    ofproto_parser = ofproto_v1_3_parser
    id = 0x0001_0000_0000_0001


HOSTS = [HostSpec("h1", "198.18.0.11", 1, 1, {"h2": 2}, {7: 100}),
         HostSpec("h2", "198.18.0.12", 1, 1, {"h1": 2}, {7: 200})]
PODS = [PodSpec(7, 8, "198.18.135.0/24", ("198.18.135.1", "0a:4c:00:00:00:08"))]
PORTS = [PortSpec(1, 7, "h1", 10, "02:00:00:00:00:01", "198.18.135.11", dhcp=True),
         PortSpec(2, 7, "h2", 10, "02:00:00:00:00:02", "198.18.135.12")]
TOPO = Topology(HOSTS, PODS, PORTS)
FLOWS = flatten(host_flows(TOPO, "h1"))
ALL = sorted(FLOWS["br-int"] | FLOWS["br-tun"], key=lambda f: (f.table, -f.priority, f.cookie))


def find(bridge, table, priority=None, **match):
    hits = [f for f in FLOWS[bridge] if f.table == table
            and priority in (None, f.priority)
            and all(dict(f.match).get(k) == v for k, v in match.items())]
    assert len(hits) == 1, hits
    return hits[0]


def cookie_re(kind: Kind, obj: int) -> str:
    return rf"cookie=0x4c{int(kind):x}{obj:06x}[0-9a-f]{{7}}"


def test_ofctl_text_of_the_arp_responder():
    flow = find("br-int", 10, arp_tpa="198.18.135.12")
    assert re.fullmatch(
        r"table=10,priority=100," + cookie_re(Kind.MEMBER, 2) +
        r",metadata=0x8,dl_type=0x806,arp_op=1,arp_tpa=198.18.135.12 actions="
        r"move:NXM_OF_ETH_SRC\[\]->NXM_OF_ETH_DST\[\],set_field:02:00:00:00:00:02->eth_src,"
        r"set_field:2->arp_op,move:NXM_NX_ARP_SHA\[\]->NXM_NX_ARP_THA\[\],"
        r"move:NXM_OF_ARP_SPA\[\]->NXM_OF_ARP_TPA\[\],set_field:02:00:00:00:00:02->arp_sha,"
        r"set_field:198.18.135.12->arp_spa,IN_PORT", to_ofctl(flow))


def test_ofctl_text_of_port_security_dhcp_vlan_and_tunnel_flows():
    assert re.fullmatch(
        r"table=0,priority=100," + cookie_re(Kind.PORT, 1) +
        r",in_port=10,dl_src=02:00:00:00:00:01,dl_type=0x800,nw_src=198.18.135.11 "
        r"actions=write_metadata:0x8,goto_table:20",
        to_ofctl(find("br-int", 0, in_port=10, eth_type=0x800, ipv4_src="198.18.135.11",
                      ip_proto=None)))
    assert re.fullmatch(
        r"table=0,priority=110," + cookie_re(Kind.PORT, 1) +
        r",in_port=10,dl_src=02:00:00:00:00:01,dl_type=0x800,nw_proto=17,nw_src=0.0.0.0,"
        r"tp_src=68,tp_dst=67 actions=CONTROLLER:65535",
        to_ofctl(find("br-int", 0, ipv4_src="0.0.0.0")))
    assert re.fullmatch(
        r"table=10,priority=100," + cookie_re(Kind.MEMBER, 2) +
        r",dl_dst=02:00:00:00:00:02,dl_vlan=100 actions=pop_vlan,set_field:0x8->tun_id,output:2",
        to_ofctl(find("br-tun", 10, eth_dst="02:00:00:00:00:02")))
    assert re.fullmatch(
        r"table=20,priority=100," + cookie_re(Kind.POD, 7) +
        r",tun_id=0x8 actions=push_vlan:0x8100,set_field:4196->vlan_vid,output:1",
        to_ofctl(find("br-tun", 20, 100)))
    assert re.fullmatch(r"table=30,priority=0," + cookie_re(Kind.BASE, 0) + r" actions=drop",
                        to_ofctl(find("br-int", 30, 0)))


def serialize_and_parse(msg):
    msg.serialize()
    version, msg_type, msg_len, xid = ofproto_parser.header(bytes(msg.buf))
    return ofproto_parser.msg(Datapath(), version, msg_type, msg_len, xid, bytes(msg.buf))


@pytest.mark.parametrize("flow", ALL, ids=lambda f: f"t{f.table}p{f.priority}_{f.cookie:x}")
def test_every_flow_serializes_as_an_os_ken_flowmod_and_parses_back(flow):
    ofp = ofproto_v1_3
    parsed = serialize_and_parse(to_flowmod(flow, Datapath(), "add"))
    assert isinstance(parsed, ofproto_v1_3_parser.OFPFlowMod)
    assert (parsed.command, parsed.table_id, parsed.priority, parsed.cookie) == (
        ofp.OFPFC_ADD, flow.table, flow.priority, flow.cookie)
    assert dict(parsed.match.items()) == dict(flow.match)
    ops = [a[0] for a in flow.actions]
    want = (["OFPInstructionActions"] if set(ops) - {"write_metadata", "goto"} else []) + \
        ["OFPInstructionWriteMetadata"] * ops.count("write_metadata") + \
        ["OFPInstructionGotoTable"] * ops.count("goto")
    assert [type(i).__name__ for i in parsed.instructions] == want


def test_arp_responder_flowmod_carries_nicira_moves_and_in_port():
    ofp = ofproto_v1_3
    flow = find("br-int", 10, arp_tpa="198.18.135.12")
    parsed = serialize_and_parse(to_flowmod(flow, Datapath(), "add"))
    actions = parsed.instructions[0].actions
    moves = [(a.src_field, a.dst_field, a.n_bits) for a in actions
             if type(a).__name__ == "NXActionRegMove"]
    assert moves == [("eth_src", "eth_dst", 48), ("arp_sha", "arp_tha", 48),
                     ("arp_spa", "arp_tpa", 32)]
    assert actions[-1].port == ofp.OFPP_IN_PORT
    sets = [(a.key, a.value) for a in actions if type(a).__name__ == "OFPActionSetField"]
    assert sets == [("eth_src", "02:00:00:00:00:02"), ("arp_op", 2),
                    ("arp_sha", "02:00:00:00:00:02"), ("arp_spa", "198.18.135.12")]


def test_dhcp_flowmod_sends_whole_packets_to_the_controller():
    ofp = ofproto_v1_3
    parsed = serialize_and_parse(to_flowmod(find("br-int", 0, ipv4_src="0.0.0.0"), Datapath()))
    [action] = parsed.instructions[0].actions
    assert (action.port, action.max_len) == (ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)


def test_delete_strict_names_the_exact_flow_and_cookie():
    ofp = ofproto_v1_3
    flow = find("br-tun", 20, 100)
    parsed = serialize_and_parse(to_flowmod(flow, Datapath(), "delete_strict"))
    assert (parsed.command, parsed.table_id, parsed.priority) == (
        ofp.OFPFC_DELETE_STRICT, flow.table, flow.priority)
    assert (parsed.cookie, parsed.cookie_mask) == (flow.cookie, 2**64 - 1)
    assert (parsed.out_port, parsed.out_group) == (ofp.OFPP_ANY, ofp.OFPG_ANY)
    assert dict(parsed.match.items()) == dict(flow.match) and parsed.instructions == []


def test_delete_by_cookie_masks():
    ofp = ofproto_v1_3
    flow = find("br-tun", 20, 100)
    for mask in (2**64 - 1, OBJECT_COOKIE_MASK, LORIS_COOKIE_MASK):
        parsed = serialize_and_parse(delete_by_cookie(Datapath(), flow.cookie & mask, mask))
        assert (parsed.command, parsed.table_id, parsed.cookie_mask) == (
            ofp.OFPFC_DELETE, ofp.OFPTT_ALL, mask)
        assert (parsed.out_port, parsed.out_group) == (ofp.OFPP_ANY, ofp.OFPG_ANY)
        assert dict(parsed.match.items()) == {}


def test_unknown_commands_and_actions_are_refused():
    flow = find("br-tun", 20, 100)
    with pytest.raises(ValueError, match="send a modified flow as 'add'"):
        to_flowmod(flow, Datapath(), "modify")
    with pytest.raises(ValueError, match="must end the action list"):
        make_flow(0, 1, {}, [("goto", 10), output(1)], Kind.BASE, 0)
