"""The controller's fast bundle path writes exactly the bytes os-ken would."""

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller.switches import bundle_add_frame, serialized
from flows import HostSpec, PodSpec, PortSpec, Topology, flatten, host_flows, to_flowmod


class Datapath:
    ofproto, ofproto_parser = ofp, parser


def every_flow() -> list:
    hosts = [HostSpec("h1", "198.18.0.11", 1, 1, {"h2": 2}, {7: 5, 9: 6}),
             HostSpec("h2", "198.18.0.12", 1, 1, {"h1": 2}, {7: 8, 9: 3})]
    pods = [PodSpec(7, 8, None, None),
            PodSpec(9, 10, "198.18.137.0/24", ("198.18.137.1", "0a:4c:00:00:00:0a"))]
    ports = [PortSpec(1, 7, "h1", 5, "02:00:00:00:00:01", "198.18.135.5"),
             PortSpec(2, 7, "h2", 6, "02:00:00:00:00:02", "198.18.135.6"),
             PortSpec(3, 9, "h1", 7, "02:00:00:00:00:03", "198.18.137.2", dhcp=True),
             PortSpec(4, 9, "h2", 8, "02:00:00:00:00:04", "198.18.137.3")]
    topo = Topology(hosts, pods, ports)
    return [f for h in ("h1", "h2") for fs in flatten(host_flows(topo, h)).values() for f in fs]


def test_bundle_add_frames_match_os_ken_for_every_kind_of_flow():
    dp = Datapath()
    flows = every_flow()
    assert len(flows) > 40
    for xid, flow in enumerate(flows, start=7):
        for command in ("add", "delete_strict"):
            inner = serialized(to_flowmod(flow, dp, command))      # serialized with xid 0
            expected = parser.ONFBundleAddMsg(dp, 12, ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED,
                                              to_flowmod(flow, dp, command), [])
            expected.set_xid(xid)
            expected.serialize()
            frame = bundle_add_frame(ofp, xid, 12, ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED,
                                     inner)
            assert frame == bytes(expected.buf), flow
