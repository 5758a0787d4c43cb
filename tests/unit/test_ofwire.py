"""flows/ofwire.py encodes FLOW_MODs byte for byte as os-ken serializes `to_flowmod`: for
every flow the pipeline makes on a realistic topology, for each match field (plain and
masked) and each action; anything else falls back to os-ken's classes."""

from __future__ import annotations

from dataclasses import replace

import pytest
from os_ken.ofproto import ofproto_parser, ofproto_v1_3, ofproto_v1_3_parser

from flows import HostSpec, PodSpec, PortSpec, Topology, flatten, host_flows, to_flowmod
from flows import flow as fl
from flows.flow import Flow, Kind, make_flow
from flows.ofwire import FIELDS, AddTemplate, flowmod
from flows.render import flowmod_bytes


class Datapath:
    """The part of os-ken's Datapath that building and serializing a message reads."""
    ofproto = ofproto_v1_3
    ofproto_parser = ofproto_v1_3_parser
    id = 0x0001_0000_0000_0001


def os_ken_bytes(flow: Flow, command: str = "add") -> bytes:
    msg = to_flowmod(flow, Datapath(), command)
    msg.set_xid(0)
    msg.serialize()
    return bytes(msg.buf)


def _topology() -> Topology:
    """Three hosts; pods with and without a subnet (DHCP server), DHCP and static ports,
    the global pod, a pod alone on its host, several pods per host."""
    hosts = [HostSpec("h1", "198.18.0.11", 1, 1, {"h2": 2, "h3": 3}, {0: 1, 7: 100, 9: 4094}),
             HostSpec("h2", "198.18.0.12", 1, 1, {"h1": 2, "h3": 3}, {0: 1, 7: 200}),
             HostSpec("h3", "198.18.0.13", 1, 1, {"h1": 2, "h2": 3}, {0: 1, 11: 5})]
    pods = [PodSpec(0, 1, None),
            PodSpec(7, 8, "198.18.135.0/24", ("198.18.135.1", "0a:4c:00:00:00:08")),
            PodSpec(9, 10, None),
            PodSpec(11, 12, "10.11.0.0/16", ("10.11.0.1", "0a:4c:00:00:00:0c"))]
    ports = [PortSpec(1, 7, "h1", 10, "02:00:00:00:00:01", "198.18.135.11", dhcp=True),
             PortSpec(2, 7, "h2", 10, "02:00:00:00:00:02", "198.18.135.12"),
             PortSpec(3, 7, "h1", 11, "02:00:00:00:00:03", "198.18.135.13"),
             PortSpec(4, 0, "h1", 12, "02:00:00:00:00:04", "192.0.2.4"),
             PortSpec(5, 0, "h3", 10, "02:00:00:00:00:05", "192.0.2.5"),
             PortSpec(6, 9, "h1", 13, "02:00:00:00:00:06", "192.0.2.6"),
             PortSpec(7, 11, "h3", 11, "02:00:00:00:00:07", "10.11.0.7", dhcp=True)]
    return Topology(hosts, pods, ports)


TOPO = _topology()
PIPELINE = sorted({f for host in ("h1", "h2", "h3")
                   for flows in flatten(host_flows(TOPO, host)).values() for f in flows},
                  key=lambda f: (f.table, -f.priority, f.cookie))


def test_the_topology_covers_every_action_and_field_the_pipeline_uses():
    ops = {a[0] for f in PIPELINE for a in f.actions}
    assert ops == {"output", "controller", "push_vlan", "pop_vlan", "set_field", "move",
                   "write_metadata", "goto"} | (ops & {"resubmit"})
    assert {k for f in PIPELINE for k, _ in f.match} >= set(FIELDS) - {
        "ipv4_dst", "arp_sha", "arp_tha"}


@pytest.mark.parametrize("command", ["add", "delete_strict"])
@pytest.mark.parametrize("flow", PIPELINE, ids=lambda f: f"t{f.table}p{f.priority}_{f.cookie:x}")
def test_every_pipeline_flow_encodes_as_os_ken_serializes_it(flow, command):
    assert flowmod(flow, command) == os_ken_bytes(flow, command)


VALUES = {"int": 0x5, "mac": "02:ab:00:00:00:09", "ipv4": "10.1.2.3"}
MASKS = {"int": 0x3, "mac": "ff:ff:ff:00:00:00", "ipv4": "255.255.0.0"}


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_each_match_field_plain_and_masked(name):
    # a masked value goes out as value & mask (VALUES have bits outside MASKS)
    kind = FIELDS[name][1]
    for value in (VALUES[kind], (VALUES[kind], MASKS[kind])):
        flow = make_flow(3, 100, {name: value}, [fl.goto(4)], Kind.BASE, 0)
        assert flowmod(flow) == os_ken_bytes(flow), value


ACTIONS = [
    fl.output(7), fl.output(fl.IN_PORT), fl.to_controller(), fl.to_controller(128),
    fl.push_vlan(), fl.push_vlan(0x88A8), fl.pop_vlan(), fl.set_field("vlan_vid", 0x1000 | 42),
    fl.set_field("tunnel_id", 0x123456), fl.set_field("eth_src", "02:00:00:00:00:0a"),
    fl.set_field("eth_dst", "02:00:00:00:00:0b"), fl.set_field("arp_op", 2),
    fl.set_field("arp_sha", "02:00:00:00:00:0c"), fl.set_field("arp_spa", "10.0.0.1"),
    fl.set_field("arp_tpa", "10.0.0.2"), fl.set_field("ipv4_dst", "10.0.0.3"),
    fl.move("eth_src", "eth_dst", 48), fl.move("arp_sha", "arp_tha", 48),
    fl.move("arp_spa", "arp_tpa", 32), fl.resubmit(30),
]


@pytest.mark.parametrize("action", ACTIONS, ids=repr)
def test_each_action(action):
    for tail in ([], [fl.goto(9)], [fl.write_metadata(0x8), fl.goto(9)],
                 [fl.write_metadata(0x8, 0xFF)]):
        flow = make_flow(10, 5, {"in_port": 1}, [action, *tail], Kind.PORT, 4)
        assert flowmod(flow) == os_ken_bytes(flow), tail


def test_instructions_only_drops_and_the_xid():
    for actions in ([], [fl.goto(2)], [fl.write_metadata(1 << 63, 1 << 63)]):
        flow = make_flow(0, 0, {}, actions, Kind.BASE, 0)
        assert flowmod(flow) == os_ken_bytes(flow)
        assert flowmod(flow, "delete_strict") == os_ken_bytes(flow, "delete_strict")
    flow = PIPELINE[0]
    data = flowmod(flow, xid=0x01020304)
    assert data[4:8] == bytes([1, 2, 3, 4]) and data[8:] == os_ken_bytes(flow)[8:]
    version, msg_type, length, xid = ofproto_parser.header(data)
    parsed = ofproto_parser.msg(Datapath(), version, msg_type, length, xid, data)
    assert (parsed.cookie, parsed.table_id, parsed.priority) == (
        flow.cookie, flow.table, flow.priority)


UNSUPPORTED = [
    Flow(0, 10, (("tcp_dst", 80),), (fl.output(1),), 0x4C1 << 52),           # a field
    Flow(0, 10, (("in_port", 1),), (("set_queue", 1),), 0x4C1 << 52),       # an action
    Flow(0, 10, (("ipv4_src", "10.0.0.300"),), (), 0x4C1 << 52),            # a value
    Flow(0, 10, (("eth_src", "2:0:0:0:0:1"),), (), 0x4C1 << 52),
    Flow(0, 10, (("in_port", 1 << 32),), (), 0x4C1 << 52),
    Flow(0, 10, (("in_port", "1"),), (), 0x4C1 << 52),
    Flow(0, 10, (), (fl.set_field("eth_src", ("02:00:00:00:00:01", "ff:ff:ff:ff:ff:ff")),),
         0x4C1 << 52),
]


@pytest.mark.parametrize("flow", UNSUPPORTED, ids=lambda f: repr((f.match, f.actions)))
def test_what_it_does_not_know_is_left_to_os_ken(flow):
    assert flowmod(flow) is None
    assert flowmod(flow, "no_such_command") is None


def test_flowmod_bytes_falls_back_to_os_ken():
    supported = [f for f in UNSUPPORTED if f.match and f.match[0][0] == "tcp_dst"]
    for flow in supported:         # os-ken knows tcp_dst: its bytes are sent
        assert flowmod_bytes(flow, Datapath()) == os_ken_bytes(flow)
    for flow in PIPELINE[:5]:
        assert flowmod_bytes(flow, Datapath(), "delete_strict") == \
            os_ken_bytes(flow, "delete_strict")
    with pytest.raises(ValueError, match="unknown action"):
        flowmod_bytes(UNSUPPORTED[1], Datapath())   # neither knows it: os-ken's error


# ---- flows made by a Shape: encoded from the shape's AddTemplate ------------------------
SHAPES = [
    # the pipeline's two: an ARP answer (match and set_field holes, move, output) and a
    # unicast rule towards a tunnel
    (fl.Shape(20, 100, {"metadata": 8, "eth_type": 0x0806, "arp_op": 1,
                        "arp_tpa": fl.Hole(0)},
              [fl.move("eth_src", "eth_dst", 48), fl.set_field("eth_src", fl.Hole(1)),
               fl.set_field("arp_op", 2), fl.move("arp_sha", "arp_tha", 48),
               fl.set_field("arp_sha", fl.Hole(1)), fl.move("arp_spa", "arp_tpa", 32),
               fl.set_field("arp_spa", fl.Hole(0)), fl.output(fl.IN_PORT)], Kind.MEMBER),
     ("10.0.0.5", "02:00:00:00:00:05")),
    (fl.Shape(41, 100, {"vlan_vid": 0x1000 | 7, "eth_dst": fl.Hole(0)},
              [fl.pop_vlan(), fl.set_field("tunnel_id", 8), fl.output(3)], Kind.MEMBER),
     ("02:00:00:00:00:06",)),
    # an integer hole in the match, instructions after the actions, none before
    (fl.Shape(0, 100, {"in_port": fl.Hole(0), "eth_src": fl.Hole(1)},
              [fl.write_metadata(8), fl.goto(10)], Kind.PORT), (12, "02:00:00:00:00:0c")),
    (fl.Shape(0, 90, {"in_port": fl.Hole(0), "ipv4_src": fl.Hole(1), "eth_type": 0x0800},
              [fl.set_field("ipv4_dst", fl.Hole(1))], Kind.PORT), (13, "10.1.2.3")),
]


@pytest.mark.parametrize("shape, values", SHAPES, ids=lambda x: str(x)[:40])
def test_a_flow_made_by_a_shape_encodes_from_its_template_as_os_ken_does(shape, values):
    flow = shape(77, *values)
    assert flow.origin == (shape, values)
    data = flowmod(flow)
    assert isinstance(shape._wire, AddTemplate)          # the template was used
    assert data == os_ken_bytes(flow)
    assert data == flowmod(replace(flow, origin=None))    # field by field: the same bytes
    assert flowmod(flow, "delete_strict") == os_ken_bytes(flow, "delete_strict")
    assert flowmod(flow, xid=9)[8:] == data[8:]
    other = shape(78, *values)                            # another object id: its cookie
    assert flowmod(other)[8:16] == other.cookie.to_bytes(8, "big")


def test_the_pipeline_makes_big_pods_with_shapes_and_their_bytes_are_the_same():
    members = [PortSpec(k, 0, ("h1", "h2", "h3")[k % 3], 10 + k, f"02:00:00:00:{k >> 8:02x}:"
                        f"{k & 255:02x}", f"198.18.135.{k % 250 + 2}") for k in range(1, 40)]
    topo = Topology(TOPO.hosts.values(), [TOPO.pods[0]], members)
    flows = [f for flows in flatten(host_flows(topo, "h1")).values() for f in flows]
    shaped = [f for f in flows if f.origin is not None]
    assert len(shaped) >= 39
    for f in shaped:
        assert flowmod(f) == flowmod(replace(f, origin=None)) == os_ken_bytes(f)


def test_a_value_the_template_cannot_encode_falls_back_field_by_field():
    shape, _ = SHAPES[2]
    bad = shape(1, 1 << 40, "02:00:00:00:00:01")         # in_port does not fit 32 bits
    assert flowmod(bad) is None is flowmod(replace(bad, origin=None))
    assert flowmod_bytes(bad, Datapath()) is not None     # os-ken's error, or its bytes
    masked = fl.Shape(0, 5, {"eth_dst": fl.Hole(0)}, [], Kind.BASE)
    flow = masked(1, ("02:00:00:00:00:00", "01:00:00:00:00:00"))  # a mask where a value goes
    assert flowmod(flow) == flowmod(replace(flow, origin=None)) == os_ken_bytes(flow)


def test_the_origin_is_not_part_of_the_flow():
    shape, values = SHAPES[1]
    flow = shape(5, *values)
    plain = replace(flow, origin=None)
    assert flow == plain and hash(flow) == hash(plain) and str(flow) == str(plain)
    assert "origin" not in repr(flow)
