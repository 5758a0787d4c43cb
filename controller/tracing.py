"""`POST /v1/trace`: follow a packet from a container through the flows really installed.

One read of the store finds the two ports (or the address), their pods and hosts; the
flows of the sender's host and, when the destination is remote, of its host are dumped
from the switches (a flow-stats request through `Switches`, every flow of each bridge,
foreign ones included) and turned back into `Flow`s (flowdump.py). Each leg of the trace
(trace_verdict.legs) runs through those with the offline tracer (flows/trace.py), and
through the flows the controller wants there (computed from the store as the programmer
would), so that a flow missing on a switch, or one that should not be there, is named.

Runs in the REST handler's green thread: the store through `Store.read()`, the switches
through `Switches.flow_stats` (only this request waits, at most the OpenFlow timeout per
bridge); the rest is CPU.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from controller import flowdump, topology, validate
from controller.context import Context
from controller.errors import ApiError, conflict, not_found, unavailable
from controller.store import Port, Tx
from controller.switches import OpenFlowError
from controller.trace_names import Names, PortInfo
from controller.trace_verdict import (
    Bridge,
    Leg,
    Outcome,
    Run,
    hop_rows,
    judge,
    legs,
    source_host_path,
    verdict,
)
from flows import BRIDGES, Flow, Kind, contract, flatten, host_flows, parse_cookie
from flows.trace import Fabric, FabricTrace, TraceError

OFPROTO_PROTOCOLS = {(0x0800, 1): "icmp", (0x0800, 6): "tcp", (0x0800, 17): "udp",
                     (0x0806, None): "arp"}
OFPROTO_NAMES = {"eth_src": "dl_src", "eth_dst": "dl_dst", "ipv4_src": "nw_src",
                 "ipv4_dst": "nw_dst", "arp_op": "arp_op", "arp_spa": "arp_spa",
                 "arp_tpa": "arp_tpa", "arp_sha": "arp_sha", "arp_tha": "arp_tha",
                 "udp_src": "udp_src", "udp_dst": "udp_dst", "tcp_src": "tcp_src",
                 "tcp_dst": "tcp_dst"}


class Tracer:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def trace(self, req: validate.TraceRequest) -> dict:
        with self.ctx.store.read() as tx:
            names, src, dst, answer, topo, hosts = self._read(tx, req)
        involved = sorted({src.host} | ({dst.host} if dst else set()))
        pods = {src.pod} | ({dst.pod} if dst else set())
        bridges, installed, packets = self._bridges(involved, hosts, topo, names, pods)
        the_legs = legs(req.protocol, src, dst, req.destination_ip, req.port, req.source_mac,
                        req.source_ip, answer)
        runs = [self._run(leg, topo, installed, bridges) for leg in the_legs]
        outcomes = [judge(run, names, bridges) for run in runs]
        final = verdict(runs, outcomes, src, dst, names)
        dhcp_server = names.dhcp_servers.get(src.pod)
        if dst is None and dhcp_server and req.destination_ip == dhcp_server[0] and \
                req.protocol not in ("arp", "dhcp"):
            final = Outcome(False, f"dropped: {req.destination_ip} is pod {src.pod}'s DHCP "
                            "server (the controller), which answers ARP and DHCP only")
        return {
            "source": _port_json(src),
            "destination": _port_json(dst) if dst else (
                {"ip": req.destination_ip} if req.destination_ip else None),
            "protocol": req.protocol,
            "legs": [_leg_json(run, out, names, packets) for run, out in zip(runs, outcomes,
                                                                               strict=True)],
            "flows": [_bridge_json(h, b, bridges[(h, b)], names) for h in involved
                      for b in BRIDGES],
            "verdict": {"delivered": final.ok, "text": final.text, "fix": final.fix,
                        "at": None if final.at is None else dict(zip(
                            ("host", "bridge", "table"), final.at, strict=True))},
            "traced_at": time.time(),
        }

    # ---- the store ----------------------------------------------------------------------
    def _read(self, tx: Tx, req: validate.TraceRequest) -> tuple:
        rows = tx.ports()
        src_row = _find(rows, req.source, req.source_host, "source")
        dst_row = (_find(rows, req.destination, req.destination_host, "destination")
                   if req.destination else None)
        if dst_row is None and req.destination_ip:
            dst_row = next((p for p in rows if p.pod_id == src_row.pod_id and
                            p.address == req.destination_ip), None)
        if req.protocol != "dhcp" and dst_row is None and not req.destination_ip:
            raise ApiError(422, "invalid_value", "a trace needs a destination: a container "
                           "('destination') or an address ('destination_ip')")
        pods = {src_row.pod_id} | ({dst_row.pod_id} if dst_row else set())
        topo, hosts = topology.build(tx, pods=pods)
        servers = {}
        for pod_id in pods:
            pod = tx.pod(pod_id)
            server = contract.dhcp_server(pod_id, pod.network) if pod else None
            if server:
                servers[pod_id] = server
        tunnels = tx.all_tunnels()
        names = Names(
            ports={p.id: _info(p) for p in rows},
            tunnel_ips={h.id: h.tunnel_ip for h in hosts.values()},
            tunnel_peers={(h, ofport): peer for h, peers in tunnels.items()
                          for peer, ofport in peers.items()},
            dhcp_servers=servers,
            patch={h.id: (h.int_patch_ofport, h.tun_patch_ofport) for h in hosts.values()},
        )
        src, dst = names.ports[src_row.id], names.ports[dst_row.id] if dst_row else None
        answer = dst.mac if dst else None
        server = servers.get(src.pod)
        if dst is None and server and req.destination_ip == server[0]:
            answer = server[1]
        return names, src, dst, answer, topo, hosts

    # ---- the switches -------------------------------------------------------------------
    def _bridges(self, involved: list[str], hosts: Mapping, topo: Any, names: Names,
                 pods: set[int]) -> tuple[dict, dict, dict]:
        """Per (host, bridge): what it holds and what the controller wants there (the
        trace's pods and the host's base), every installed flow, and the flows' counters."""
        switches = self.ctx.switches
        bridges: dict[tuple[str, str], Bridge] = {}
        installed: dict[str, dict[str, list[Flow]]] = {}
        packets: dict[tuple[str, str, Flow], int] = {}
        for host_id in involved:
            try:
                desired = flatten(host_flows(topo, host_id))
            except Exception as e:          # the host's row is left out of the topology
                raise unavailable(f"cannot compute the flows of host {host_id}: {e}; see "
                                  f"GET /v1/hosts/{host_id} (problems)", "trace_failed") from None
            for bridge in BRIDGES:
                dpid = hosts[host_id].dpid(bridge)
                status = switches.bridge_status(dpid)
                dp = switches.datapath(dpid)
                dumped = None
                if dp is not None:
                    try:
                        dumped = flowdump.from_stats(switches.flow_stats(dp), dp.ofproto)
                    except OpenFlowError as e:
                        raise unavailable(f"reading the flows of {bridge} on {host_id} failed: "
                                          f"{e}", "switch_not_answering") from None
                if dumped is None:
                    raise conflict(f"{bridge} of host {host_id} is not connected to the "
                                   "controller, so its flows cannot be read; check "
                                   "`loris status` and loris-hostagent there",
                                   "switch_not_connected")
                installed.setdefault(host_id, {})[bridge] = [d.flow for d in dumped]
                packets.update(((host_id, bridge, d.flow), d.packets) for d in dumped)
                mine = frozenset(d.flow for d in dumped if _in_scope(d.flow, pods, names))
                bridges[(host_id, bridge)] = Bridge(mine, desired[bridge], status.reconciled_at)
        return bridges, installed, packets

    @staticmethod
    def _run(leg: Leg, topo: Any, installed: Mapping, bridges: Mapping) -> Run:
        wanted: dict[str, dict[str, Iterable[Flow]]] = {}
        for (host, bridge), br in bridges.items():
            wanted.setdefault(host, {})[bridge] = br.desired
        got, error = _send(Fabric(topo, installed), leg)
        want, _ = _send(Fabric(topo, wanted), leg)
        return Run(leg, got, want, error)


def _send(fabric: Fabric, leg: Leg) -> tuple[FabricTrace | None, str | None]:
    try:
        return fabric.send(leg.sender.host, leg.sender.ofport or 0, leg.packet), None
    except (TraceError, KeyError) as e:
        return None, str(e)


def _find(rows: list[Port], name: str, host: str | None, what: str) -> Port:
    found = [p for p in rows if p.container in (name, f"netns:{name}") and
             (host is None or p.host_id == host)]
    if not found:
        where = f" on host {host}" if host else ""
        raise not_found(f"{what} container {name} is not connected{where}; `loris ports` "
                        "lists the connected ones", "container_not_found")
    if len(found) > 1:
        on = ", ".join(sorted(p.host_id for p in found))
        raise conflict(f"{what} container {name} is connected on several hosts ({on}); name "
                       f"the host with '{what}_host' (loris trace --{what}-host)",
                       "ambiguous_container")
    return found[0]


def _info(p: Port) -> PortInfo:
    error = f"{p.error_code}: {p.error_message}" if p.error_code else None
    return PortInfo(p.id, p.container, p.host_id, p.pod_id, p.mac, p.address, p.ofport,
                    p.state, p.dhcp, error)


def _in_scope(flow: Flow, pods: set[int], names: Names) -> bool:
    """A Loris flow of the trace's pods or of the host's base pipeline."""
    parsed = parse_cookie(flow.cookie)
    if parsed is None:
        return False
    kind, obj, _ = parsed
    if kind in (Kind.BASE, Kind.TUNNEL):
        return True
    if kind is Kind.POD:
        return obj in pods
    port = names.ports.get(obj)
    return port is None or port.pod in pods


def ofproto_flow(packet: Mapping[str, object], in_port: int) -> str:
    """The packet in the syntax of `ovs-appctl ofproto/trace BRIDGE FLOW`."""
    proto = OFPROTO_PROTOCOLS.get((packet.get("eth_type"), packet.get("ip_proto")))
    parts = [proto or f"dl_type={packet.get('eth_type'):#06x}", f"in_port={in_port}"]
    for name, value in packet.items():
        if name in OFPROTO_NAMES:
            parts.append(f"{OFPROTO_NAMES[name]}={value}")
    if proto == "icmp":
        parts.append("icmp_type=8" if packet.get("ipv4_dst") else "icmp_type=0")
    return ",".join(parts)


def _port_json(p: PortInfo) -> dict:
    return {"port": p.id, "container": p.container, "host": p.host, "pod": p.pod,
            "mac": p.mac, "ip": p.ip, "ofport": p.ofport, "state": p.state}


def _leg_json(run: Run, out: Outcome, names: Names, packets: Mapping) -> dict:
    leg = run.leg
    got = run.installed
    host = leg.sender.host
    return {
        "name": leg.name, "what": leg.what, "host": host, "packet": dict(leg.packet),
        "ok": out.ok, "text": out.text, "fix": out.fix,
        "hops": hop_rows(got, names, packets) if got else [],
        "error": run.installed_error,
        "ofproto_trace": {"bridge": contract.INTEGRATION_BRIDGE,
                          "flow": ofproto_flow(leg.packet, leg.sender.ofport or 0)},
        "on_host": _on_host(got, host, names) if got else None,
    }


def _on_host(trace: FabricTrace, host: str, names: Names) -> dict:
    """What the sender's host does with the packet: what `ofproto/trace` there must show."""
    return {
        "path": [[b, t, f"{c:#x}"] for b, t, c in source_host_path(trace, host)],
        "ports": sorted({d.ofport for d in trace.deliveries if d.host == host}),
        "tunnels": [list(t) for t in sorted({(names.tunnel_ips.get(dst, dst), key)
                                             for src, dst, key, _ in trace.tunnelled
                                             if src == host})],
        "controller": any(h == host for h, *_ in trace.controller),
    }


def _bridge_json(host: str, bridge: str, br: Bridge, names: Names) -> dict:
    def rows(flows: list[Flow]) -> list[dict]:
        return [{"flow": str(f), "cookie": f"{f.cookie:#x}", "owner": names.owner(f.cookie, host),
                 "role": names.role(f, bridge, host)} for f in flows]

    return {"host": host, "bridge": bridge, "installed": len(br.installed or ()),
            "wanted": len(br.desired), "missing": rows(br.missing),
            "unwanted": rows(br.unwanted), "reconciled_at": br.reconciled_at}
