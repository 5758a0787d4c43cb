"""The learning-free pipeline: desired state in, every flow of one host's br-int and br-tun out.

Tables (docs/pipeline.md has the full walk):

    br-int  0 INGRESS   port security per container port; patch-tun VLAN -> pod
           10 ARP       ARP responder (answers in the datapath, back out IN_PORT)
           20 L2        from a local container: to a local port, to br-tun, or flood
           30 FROM_TUN  from br-tun: only to local ports of the pod, never back
    br-tun  0 CLASSIFY  patch-int or which tunnel
           10 TO_TUN    VLAN + destination MAC -> tunnel key + the one tunnel to that host
           20 FROM_TUN  tunnel key -> local VLAN -> patch-int

Inside br-int the pod travels in `metadata` (= the pod's tunnel key, never 0); between the
bridges it travels as the host's local VLAN, because OVS clears metadata, registers and
tunnel fields across patch ports. Every table ends in a priority-0 drop.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from .contract import INTEGRATION_BRIDGE, TUNNEL_BRIDGE
from .flow import (
    IN_PORT,
    MULTICAST,
    UNICAST,
    VID_PRESENT,
    Flow,
    Hole,
    Kind,
    Shape,
    goto,
    make_flow,
    move,
    output,
    pop_vlan,
    push_vlan,
    set_field,
    to_controller,
    write_metadata,
)
from .model import PodSpec, PortSpec, Topology, TopologyError

__all__ = ["host_flows", "HostFlows", "INT_INGRESS", "INT_ARP", "INT_L2",
           "INT_FROM_TUN", "TUN_CLASSIFY", "TUN_TO_TUN", "TUN_FROM_TUN"]

INT_INGRESS, INT_ARP, INT_L2, INT_FROM_TUN = 0, 10, 20, 30
TUN_CLASSIFY, TUN_TO_TUN, TUN_FROM_TUN = 0, 10, 20
INT_TABLES = (INT_INGRESS, INT_ARP, INT_L2, INT_FROM_TUN)
TUN_TABLES = (TUN_CLASSIFY, TUN_TO_TUN, TUN_FROM_TUN)

ETH_IP, ETH_ARP, UDP = 0x0800, 0x0806, 17
ARP_REQUEST, ARP_REPLY = 1, 2
DHCP_CLIENT, DHCP_SERVER = 68, 67

# Priorities: a more specific rule always sits above the rule it overrides.
P_DHCP = 110            # DHCP to the controller, above the port's plain IPv4 rule
P_PORT = 100            # per port / per member exact rules
P_OWN_IP = 200          # "never answer a container for its own IP", above the responder
P_FLOOD = 50            # broadcast/multicast of a pod
P_TO_TUN = 10           # any other unicast of a pod: br-tun decides (or drops)
P_ARP_UNICAST_REPLY = 10
# The flows of one member, port or tunnel are a pure function of a few values, and a pod's
# job recomputes every member's on every host it touches: each is made once and then looked
# up, so a connect to a pod of 50 costs lookups, not 50 members' flows made again. Small on
# purpose: entries of ports long gone are never reused, and a bound of 65,536 grew the
# controller by 10 MB over the soak's 1,000 connects; big pods use Shapes, not these caches.
FLOW_CACHE = 256
P_PORT_DROP = 10        # whatever else a container sends: dropped, counted per port

# A Shape costs about two make_flow calls to make: a pod's members get their flows from one
# when there are at least this many of them per shape (a big pod), else one by one.
SHAPE_WORTH = 4

HostFlows = dict[int | None, dict[str, frozenset[Flow]]]


def host_flows(topo: Topology, host_id: str, pods: Iterable[int] | None = None) -> HostFlows:
    """Every flow of `host_id`, by section.

    Section None is the host's base pipeline; section <pod id> is everything of that pod on
    this host. `pods=None` computes the base and every pod present on the host; otherwise only
    the named pods' sections (an absent pod yields empty sets: "delete what you had").
    Cost is proportional to the named pods' members, never to the whole network.
    """
    host = topo.hosts.get(host_id)
    if host is None:
        raise TopologyError(f"host {host_id!r} is not in the topology; register it first")
    out: HostFlows = {}
    if pods is None:
        out[None] = _freeze(_base_flows(topo, host_id))
        pods = sorted(topo.host_pods(host_id))
    for pod_id in pods:
        pod = topo.pods.get(pod_id)
        if pod is None:
            out[pod_id] = _freeze(([], []))
        else:
            out[pod_id] = _freeze(_pod_flows(topo, host_id, pod))
    return out


def _freeze(flows: tuple[list[Flow], list[Flow]]) -> dict[str, frozenset[Flow]]:
    return {INTEGRATION_BRIDGE: frozenset(flows[0]), TUNNEL_BRIDGE: frozenset(flows[1])}


def _base_flows(topo: Topology, host_id: str) -> tuple[list[Flow], list[Flow]]:
    host = topo.hosts[host_id]
    bi = [make_flow(t, 0, {}, (), Kind.BASE, 0) for t in INT_TABLES]
    bt = [make_flow(t, 0, {}, (), Kind.BASE, 0) for t in TUN_TABLES]
    # A unicast ARP reply is ordinary traffic to a pod member (requests never are: the
    # responder answers them or they die here).
    bi.append(make_flow(INT_ARP, P_ARP_UNICAST_REPLY,
                        {"eth_dst": UNICAST, "eth_type": ETH_ARP, "arp_op": ARP_REPLY},
                        [goto(INT_L2)], Kind.BASE, 0))
    if host.tun_patch_ofport is not None:
        bt.append(make_flow(TUN_CLASSIFY, P_PORT, {"in_port": host.tun_patch_ofport},
                            [goto(TUN_TO_TUN)], Kind.BASE, 0))
    for peer in sorted(host.tunnel_ofports):
        ofport = host.tunnel_ofports[peer]
        bt.append(make_flow(TUN_CLASSIFY, P_PORT, {"in_port": ofport},
                            [goto(TUN_FROM_TUN)], Kind.TUNNEL, ofport))
    return bi, bt


def _pod_flows(topo: Topology, host_id: str, pod: PodSpec) -> tuple[list[Flow], list[Flow]]:
    local = topo.local_ports(host_id, pod.id)
    if not local:
        return [], []
    host = topo.hosts[host_id]
    key = pod.tunnel_key
    vid = host.local_vlans[pod.id] | VID_PRESENT
    bi: list[Flow] = []
    bt: list[Flow] = []

    for port in local:
        bi.extend(_port_flows(port, key))

    # ARP responder: every member of the pod, wherever it is, plus the DHCP server.
    members = topo.members(pod.id)
    if len(members) >= SHAPE_WORTH:
        answer = Shape(INT_ARP, P_PORT, *_arp_answer_parts(key, Hole(0), Hole(1)), Kind.MEMBER)
        bi.extend([answer(m.id, m.ip, m.mac) for m in members])
    else:
        bi.extend([_arp_answer(key, m.ip, m.mac, Kind.MEMBER, m.id) for m in members])
    if pod.dhcp_server is not None:
        bi.append(_arp_answer(key, *pod.dhcp_server, Kind.POD, pod.id))

    # Remote hosts reachable through a tunnel, for unicast and for the flood list.
    patch_int, patch_tun = host.int_patch_ofport, host.tun_patch_ofport
    tunnels = host.tunnel_ofports if patch_int is not None and patch_tun is not None else {}
    remote_hosts = sorted(h for h in topo.pod_hosts(pod.id) if h != host_id and h in tunnels)
    to_tun = [push_vlan(), set_field("vlan_vid", vid), output(patch_int)] if remote_hosts else []

    local_out = [output(p.ofport) for p in local]
    bi.append(make_flow(INT_L2, P_FLOOD, {"metadata": key, "eth_dst": MULTICAST},
                        local_out + to_tun, Kind.POD, pod.id))
    bi.append(make_flow(INT_FROM_TUN, P_FLOOD, {"metadata": key, "eth_dst": MULTICAST},
                        local_out, Kind.POD, pod.id))
    if not remote_hosts:
        return bi, bt

    # br-int: any other unicast goes to br-tun, which knows each remote MAC (or drops it).
    bi.append(make_flow(INT_L2, P_TO_TUN, {"metadata": key, "eth_dst": UNICAST},
                        to_tun, Kind.POD, pod.id))
    bi.append(make_flow(INT_INGRESS, P_PORT, {"in_port": patch_int, "vlan_vid": vid},
                        [pop_vlan(), write_metadata(key), goto(INT_FROM_TUN)],
                        Kind.POD, pod.id))
    # br-tun: VLAN <-> key, the flood list, and one unicast rule per remote member.
    bt.append(make_flow(TUN_FROM_TUN, P_PORT, {"tunnel_id": key},
                        [push_vlan(), set_field("vlan_vid", vid), output(patch_tun)],
                        Kind.POD, pod.id))
    bt.append(make_flow(TUN_TO_TUN, P_FLOOD, {"vlan_vid": vid, "eth_dst": MULTICAST},
                        [pop_vlan(), set_field("tunnel_id", key)]
                        + [output(tunnels[h]) for h in remote_hosts], Kind.POD, pod.id))
    remote = [m for m in members if m.host_id != host_id and m.host_id in tunnels]
    if len(remote) >= SHAPE_WORTH * len(remote_hosts):
        towards = {h: Shape(TUN_TO_TUN, P_PORT, *_towards_parts(vid, key, Hole(0), tunnels[h]),
                            Kind.MEMBER) for h in remote_hosts}
        bt.extend([towards[m.host_id](m.id, m.mac) for m in remote])
    else:
        bt.extend([_member_unicast(vid, m.mac, key, tunnels[m.host_id], m.id)
                   for m in remote])
    return bi, bt


@lru_cache(maxsize=FLOW_CACHE)
def _member_unicast(vid: int, mac: str, key: int, tunnel_ofport: int, member_id: int) -> Flow:
    """br-tun: a remote member's MAC in the pod's local VLAN -> its key, its host's tunnel."""
    return make_flow(TUN_TO_TUN, P_PORT, *_towards_parts(vid, key, mac, tunnel_ofport),
                     Kind.MEMBER, member_id)


def _towards_parts(vid: int, key: int, mac: object, ofport: int) -> tuple[dict, list]:
    """Match and actions of the br-tun rule sending the pod's unicast to `mac` through the
    tunnel `ofport` (`mac` may be a Hole)."""
    return ({"vlan_vid": vid, "eth_dst": mac},
            [pop_vlan(), set_field("tunnel_id", key), output(ofport)])


@lru_cache(maxsize=FLOW_CACHE)
def _port_flows(port: PortSpec, key: int) -> tuple[Flow, ...]:
    """Port security, delivery and DHCP of one local container port (all Kind.PORT)."""
    pid, inp, mac, ip = port.id, port.ofport, port.mac, port.ip
    enter = write_metadata(key)
    flows = [
        # IPv4 only from its MAC and IP; ARP only with sha = its MAC and spa = its IP.
        make_flow(INT_INGRESS, P_PORT, {"in_port": inp, "eth_src": mac, "eth_type": ETH_IP,
                                        "ipv4_src": ip},
                  [enter, goto(INT_L2)], Kind.PORT, pid),
        make_flow(INT_INGRESS, P_PORT, {"in_port": inp, "eth_src": mac, "eth_type": ETH_ARP,
                                        "arp_spa": ip, "arp_sha": mac},
                  [enter, goto(INT_ARP)], Kind.PORT, pid),
        # A request for its own IP (a probe or an announcement) is never answered.
        make_flow(INT_ARP, P_OWN_IP, {"in_port": inp, "eth_type": ETH_ARP,
                                      "arp_op": ARP_REQUEST, "arp_tpa": ip},
                  [], Kind.PORT, pid),
        make_flow(INT_L2, P_PORT, {"metadata": key, "eth_dst": mac},
                  [output(inp)], Kind.PORT, pid),
        make_flow(INT_FROM_TUN, P_PORT, {"metadata": key, "eth_dst": mac},
                  [output(inp)], Kind.PORT, pid),
        # Everything else from the port (another MAC or IP, IPv6, other EtherTypes) is
        # dropped here rather than by the table's default, so that its counters are the
        # port's own: the packets its port security dropped (`loris ports --stats`).
        make_flow(INT_INGRESS, P_PORT_DROP, {"in_port": inp}, [], Kind.PORT, pid),
    ]
    if port.dhcp:
        for src in ("0.0.0.0", ip):
            flows.append(make_flow(INT_INGRESS, P_DHCP,
                                   {"in_port": inp, "eth_src": mac, "eth_type": ETH_IP,
                                    "ip_proto": UDP, "ipv4_src": src,
                                    "udp_src": DHCP_CLIENT, "udp_dst": DHCP_SERVER},
                                   [to_controller()], Kind.PORT, pid))
    return tuple(flows)


@lru_cache(maxsize=FLOW_CACHE)
def _arp_answer(key: int, ip: str, mac: str, kind: Kind, object_id: int) -> Flow:
    """Turn an ARP request for `ip` into the reply `mac` would send, and bounce it back."""
    return make_flow(INT_ARP, P_PORT, *_arp_answer_parts(key, ip, mac), kind, object_id)


def _arp_answer_parts(key: int, ip: object, mac: object) -> tuple[dict, list]:
    """Match and actions of `_arp_answer` (`ip` and `mac` may be Holes)."""
    return ({"metadata": key, "eth_type": ETH_ARP, "arp_op": ARP_REQUEST, "arp_tpa": ip},
            [move("eth_src", "eth_dst", 48), set_field("eth_src", mac),
             set_field("arp_op", ARP_REPLY),
             move("arp_sha", "arp_tha", 48), move("arp_spa", "arp_tpa", 32),
             set_field("arp_sha", mac), set_field("arp_spa", ip),
             output(IN_PORT)])
