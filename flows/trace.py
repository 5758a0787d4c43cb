"""Offline OpenFlow table simulator for Loris flows: one bridge, or a whole fabric of hosts.

A packet is a dict of header fields with the OXM names the flows use (`eth_src`, `eth_dst`,
`eth_type`, `vlan_vid` (0 = untagged, else 0x1000|vid), `ipv4_src`, `ip_proto`, `udp_dst`,
`arp_op`, `arp_spa`, `arp_tpa`, `arp_sha`, `arp_tha`, `tunnel_id`, `metadata`). A field the
packet lacks never matches. `Bridge.trace` follows goto_table/resubmit and applies actions
in order; `Fabric.send` also follows patch ports (clearing metadata and tunnel fields, as
OVS does) and tunnels (host A's tunnel to B arrives on B's tunnel port from A, key kept).

It refuses to guess: two matching flows of equal top priority raise `AmbiguousFlows`, and
actions it cannot apply to the packet (pop_vlan on an untagged frame...) raise `TraceError`.

    python -m flows.trace topology.json packet.json

reads a topology (`{"hosts": [...], "pods": [...], "ports": [...]}`, fields as in
flows/model.py) and a packet (`{"host": "h1", "in_port": 5, "packet": {...}}`) and prints
every hop, the flows hit and where the packet ends up.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .contract import INTEGRATION_BRIDGE as BR_INT
from .contract import TUNNEL_BRIDGE as BR_TUN
from .diff import flatten
from .flow import IN_PORT, Flow
from .model import HostSpec, PodSpec, PortSpec, Topology
from .pipeline import host_flows

__all__ = ["Bridge", "BridgeTrace", "Fabric", "FabricTrace", "Hop", "Delivery", "TraceError",
           "AmbiguousFlows", "topology_from_dict", "main"]

_MAC_FIELDS = {"eth_src", "eth_dst", "arp_sha", "arp_tha"}
_IP_FIELDS = {"ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa"}
MAX_STEPS = 64


class TraceError(RuntimeError):
    """The packet cannot be processed as the flows say (a bug in the flows or the packet)."""


class AmbiguousFlows(TraceError):
    """Two flows of the same priority match one packet: OpenFlow leaves the choice undefined."""


def _as_int(name: str, value: object) -> int:
    if name in _MAC_FIELDS:
        return int(str(value).replace(":", ""), 16)
    if name in _IP_FIELDS:
        return int(ipaddress.IPv4Address(value))
    return int(value)


def _matches(flow: Flow, pkt: Mapping[str, object]) -> bool:
    for name, want in flow.match:
        have = pkt.get(name)
        if have is None:
            return False
        if isinstance(want, tuple):
            value, mask = (_as_int(name, w) for w in want)
            if _as_int(name, have) & mask != value & mask:
                return False
        elif _as_int(name, have) != _as_int(name, want):
            return False
    return True


def normalize(packet: Mapping[str, object]) -> dict[str, object]:
    """A packet with the defaults a switch would see: untagged, metadata and tunnel id 0."""
    pkt = {"vlan_vid": 0, "metadata": 0, "tunnel_id": 0}
    for name, value in packet.items():
        pkt[name] = value.lower() if name in _MAC_FIELDS else value
    return pkt


@dataclass
class BridgeTrace:
    """What one bridge did with one packet."""
    outputs: list[tuple[int, dict]] = field(default_factory=list)     # (ofport, packet)
    controller: list[tuple[int, dict]] = field(default_factory=list)  # (cookie, packet)
    flows: list[Flow] = field(default_factory=list)                   # every flow hit, in order

    @property
    def ports(self) -> list[int]:
        return [port for port, _ in self.outputs]


class Bridge:
    """The flow tables of one bridge."""

    def __init__(self, flows: Iterable[Flow], name: str = "bridge") -> None:
        self.name = name
        self.tables: dict[int, list[Flow]] = {}
        for flow in flows:
            self.tables.setdefault(flow.table, []).append(flow)
        for flows_ in self.tables.values():
            flows_.sort(key=lambda f: -f.priority)

    def lookup(self, table: int, pkt: Mapping[str, object]) -> Flow | None:
        best: Flow | None = None
        for flow in self.tables.get(table, ()):
            if best is not None and flow.priority < best.priority:
                break
            if _matches(flow, pkt):
                if best is not None:
                    raise AmbiguousFlows(f"{self.name} table {table}: both {best} and {flow} "
                                         f"match {pkt}")
                best = flow
        return best

    def trace(self, in_port: int, packet: Mapping[str, object]) -> BridgeTrace:
        pkt = normalize(packet)
        pkt["in_port"] = in_port
        result = BridgeTrace()
        self._run(0, pkt, result, depth=0)
        return result

    def _run(self, table: int, pkt: dict, result: BridgeTrace, depth: int) -> None:
        if depth > MAX_STEPS:
            raise TraceError(f"{self.name}: more than {MAX_STEPS} table steps; a loop?")
        flow = self.lookup(table, pkt)
        if flow is None:
            return          # table miss: OpenFlow 1.3 drops
        result.flows.append(flow)
        for action in flow.actions:
            op = action[0]
            if op == "goto":
                if action[1] <= table:
                    raise TraceError(f"{self.name}: {flow} goes back to table {action[1]}")
                self._run(action[1], pkt, result, depth + 1)
            elif op == "resubmit":
                self._run(action[1], dict(pkt), result, depth + 1)
            else:
                _apply(action, pkt, result, flow, self.name)


def _apply(action: tuple, pkt: dict, result: BridgeTrace, flow: Flow, where: str) -> None:
    op = action[0]
    if op == "output":
        port = pkt["in_port"] if action[1] == IN_PORT else action[1]
        if action[1] == IN_PORT or port != pkt["in_port"]:   # OpenFlow skips output to in_port
            result.outputs.append((port, _wire(pkt)))
    elif op == "controller":
        result.controller.append((flow.cookie, _wire(pkt)))
    elif op == "push_vlan":
        if pkt["vlan_vid"]:
            raise TraceError(f"{where}: {flow} pushes a second VLAN tag (not modelled)")
        pkt["vlan_vid"] = 0x1000
    elif op == "pop_vlan":
        if not pkt["vlan_vid"]:
            raise TraceError(f"{where}: {flow} pops a VLAN tag from an untagged packet")
        pkt["vlan_vid"] = 0
    elif op == "set_field":
        if action[1] == "vlan_vid" and not pkt["vlan_vid"]:
            raise TraceError(f"{where}: {flow} sets vlan_vid on an untagged packet")
        pkt[action[1]] = action[2]
    elif op == "move":
        if pkt.get(action[1]) is None:
            raise TraceError(f"{where}: {flow} moves {action[1]}, which the packet lacks")
        pkt[action[2]] = pkt[action[1]]
    elif op == "write_metadata":
        value, mask = action[1], action[2]
        pkt["metadata"] = (pkt["metadata"] & ~mask) | (value & mask)
    else:
        raise TraceError(f"{where}: {flow}: cannot follow action {action!r}")


def _wire(pkt: Mapping[str, object]) -> dict:
    """The packet as it leaves: pipeline-only fields (in_port, metadata) are not on the wire."""
    return {k: v for k, v in pkt.items() if k not in ("in_port", "metadata")}


# ---- many hosts ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Delivery:
    host: str
    ofport: int
    port_id: int | None      # the container port behind that ofport, if the topology has one
    packet: dict


@dataclass(frozen=True)
class Hop:
    """One bridge the packet went through: how it arrived and the flows it hit there."""
    host: str
    bridge: str
    in_port: int
    packet: dict
    flows: list[Flow]


@dataclass
class FabricTrace:
    deliveries: list[Delivery] = field(default_factory=list)
    controller: list[tuple[str, str, int, dict]] = field(default_factory=list)  # cookie, pkt
    hops: list[Hop] = field(default_factory=list)
    tunnelled: list[tuple[str, str, int, dict]] = field(default_factory=list)  # from, to, key
    lost: list[tuple[str, str, int, dict]] = field(default_factory=list)  # unknown ports
    # bridges the packet reached whose flows the fabric was not given (host, bridge, in_port)
    unexplored: list[tuple[str, str, int, dict]] = field(default_factory=list)

    def path(self) -> list[tuple[str, str]]:
        """(host, bridge) of every hop, in order."""
        return [(hop.host, hop.bridge) for hop in self.hops]

    def delivered_to(self) -> set[tuple[str, int]]:
        """{(host, ofport)} of every container-side delivery."""
        return {(d.host, d.ofport) for d in self.deliveries}

    def port_ids(self) -> set[int]:
        return {d.port_id for d in self.deliveries if d.port_id is not None}


class Fabric:
    """br-int and br-tun of every host of a topology, wired by patch ports and tunnels."""

    def __init__(self, topo: Topology,
                 flows: Mapping[str, Mapping[str, Iterable[Flow]]] | None = None) -> None:
        """The flows of every host, computed from `topo`; or `flows` (host -> bridge ->
        flows), e.g. as dumped from the switches: only those hosts' bridges are followed."""
        self.topo = topo
        if flows is None:
            flows = {h: flatten(host_flows(topo, h)) for h in topo.hosts}
        self.bridges = {(h, br): Bridge(fs, f"{h}/{br}")
                        for h, per_bridge in flows.items() for br, fs in per_bridge.items()}
        self._peer_by_ofport = {(h.id, ofport): peer for h in topo.hosts.values()
                                for peer, ofport in h.tunnel_ofports.items()}
        self._port_by_ofport = {(p.host_id, p.ofport): p.id for p in topo.ports.values()}

    def send(self, host: str, in_port: int, packet: Mapping[str, object],
             bridge: str = BR_INT, follow_tunnels: bool = True) -> FabricTrace:
        """Inject `packet` on `bridge` of `host` as if it arrived on `in_port`; follow it.
        A bridge whose flows the fabric was not given is listed in `unexplored`.

        Every packet put into a tunnel is listed in `tunnelled`; with `follow_tunnels=False`
        the trace stops there (what one host does, as `ovs-appctl ofproto/trace` shows it)."""
        result = FabricTrace()
        queue = [(host, bridge, in_port, normalize(packet))]
        steps = 0
        while queue:
            steps += 1
            if steps > MAX_STEPS:
                raise TraceError(f"more than {MAX_STEPS} bridge hops; a forwarding loop?")
            h, br, port, pkt = queue.pop(0)
            if (h, br) not in self.bridges:
                result.unexplored.append((h, br, port, pkt))
                continue
            trace = self.bridges[(h, br)].trace(port, pkt)
            result.hops.append(Hop(h, br, port, pkt, trace.flows))
            for cookie, out in trace.controller:
                result.controller.append((h, br, cookie, out))
            for out_port, out in trace.outputs:
                self._forward(result, queue, h, br, out_port, out, follow_tunnels)
        return result

    def _forward(self, result: FabricTrace, queue: list, h: str, br: str, port: int,
                 pkt: dict, follow_tunnels: bool) -> None:
        """Where an output goes: a container, the other bridge, another host, or nowhere."""
        spec: HostSpec = self.topo.hosts[h]
        crossed = {k: v for k, v in pkt.items() if k not in ("metadata", "tunnel_id")}
        if br == BR_INT and port == spec.int_patch_ofport:
            queue.append((h, BR_TUN, spec.tun_patch_ofport, crossed))
        elif br == BR_TUN and port == spec.tun_patch_ofport:
            queue.append((h, BR_INT, spec.int_patch_ofport, crossed))
        elif br == BR_TUN and (h, port) in self._peer_by_ofport:
            peer = self.topo.hosts[self._peer_by_ofport[(h, port)]]
            result.tunnelled.append((h, peer.id, pkt.get("tunnel_id", 0), pkt))
            back = peer.tunnel_ofports.get(h)     # None: the peer has no port for us, OVS drops
            if follow_tunnels and back is not None:
                queue.append((peer.id, BR_TUN, back, dict(pkt)))
        elif br == BR_INT:
            result.deliveries.append(Delivery(h, port, self._port_by_ofport.get((h, port)), pkt))
        else:
            result.lost.append((h, br, port, pkt))


# ---- command line ---------------------------------------------------------------------------

def topology_from_dict(data: Mapping) -> Topology:
    """A Topology from plain JSON-like data (JSON object keys are strings: converted)."""
    hosts = []
    for h in data.get("hosts", []):
        h = dict(h)
        h["local_vlans"] = {int(k): v for k, v in h.get("local_vlans", {}).items()}
        hosts.append(HostSpec(**h))
    pods = []
    for p in data.get("pods", []):
        p = dict(p)
        if p.get("dhcp_server") is not None:
            p["dhcp_server"] = tuple(p["dhcp_server"])
        pods.append(PodSpec(**p))
    ports = [PortSpec(**p) for p in data.get("ports", [])]
    return Topology(hosts, pods, ports)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m flows.trace TOPOLOGY.json PACKET.json", file=sys.stderr)
        return 2
    with open(args[0]) as f:
        topo = topology_from_dict(json.load(f))
    with open(args[1]) as f:
        pkt = json.load(f)
    result = Fabric(topo).send(pkt["host"], pkt["in_port"], pkt["packet"],
                               pkt.get("bridge", BR_INT))
    for hop in result.hops:
        print(f"{hop.host}/{hop.bridge} in_port={hop.in_port}")
        for flow in hop.flows:
            print(f"    {flow}")
        if not hop.flows:
            print("    (no flow: dropped)")
    for d in result.deliveries:
        print(f"delivered: {d.host} ofport {d.ofport} (port {d.port_id}): {d.packet}")
    for src, dst, key, _ in result.tunnelled:
        print(f"tunnel: {src} -> {dst} key {key:#x}")
    for h, br, cookie, p in result.controller:
        print(f"to controller: {h}/{br} cookie {cookie:#x}: {p}")
    for h, br, port, p in result.lost:
        print(f"lost: {h}/{br} output {port} goes nowhere: {p}")
    if not (result.deliveries or result.controller):
        print("dropped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
