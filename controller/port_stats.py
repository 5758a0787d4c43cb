"""Per-port counters, read from the statistics of each port's own flows (cookie kind PORT).

Every container port has its own flows on its host's br-int (docs/pipeline.md): port
security in table 0 (what passes goes on; what does not meets the port's own drop flow),
delivery in tables 20 and 30. One flow-stats request per host (every PORT flow of br-int,
by cookie and mask) gives, per port:

- sent: frames from the container that passed its port security (IPv4 and ARP from its
  own MAC and IP, DHCP to the controller);
- received: unicast frames delivered to it (from its host and from the tunnels; what a
  pod floods to every member is counted on the pod's flood flows, not here);
- dropped: frames its port security refused (another MAC or IP, IPv6, other EtherTypes).

A flow's counters start when the flow is installed: a port re-wired with another ofport
starts from zero. Runs in a REST handler's green thread (only it waits on the switches).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from controller import flowdump
from controller.context import Context
from controller.switches import OpenFlowError
from flows import LORIS_COOKIE, Flow, Kind, parse_cookie
from flows.contract import INTEGRATION_BRIDGE
from flows.pipeline import INT_INGRESS

PORT_COOKIE = LORIS_COOKIE | (int(Kind.PORT) << 52)
KIND_MASK = 0xFFF << 52                   # marker and kind: every flow of every port


def classify(flow: Flow) -> str | None:
    """Which counter a port's flow feeds: 'sent', 'dropped', 'received' (None: neither,
    e.g. the drop of ARP requests for its own address, which already counted as sent)."""
    if flow.table == INT_INGRESS:
        return "dropped" if not flow.actions else "sent"
    if any(a[0] == "output" for a in flow.actions):
        return "received"
    return None


def tally(dumped: Iterable[flowdump.DumpedFlow], read_at: float) -> dict[int, dict]:
    """port id -> {"sent", "received", "dropped": {"packets", "bytes"}, "read_at"}."""
    out: dict[int, dict] = {}
    for d in dumped:
        parsed = parse_cookie(d.flow.cookie)
        which = classify(d.flow)
        if parsed is None or parsed[0] is not Kind.PORT or which is None:
            continue
        stats = out.setdefault(parsed[1], empty(read_at))
        stats[which]["packets"] += d.packets
        stats[which]["bytes"] += d.bytes
    return out


def empty(read_at: float) -> dict:
    return {"sent": {"packets": 0, "bytes": 0}, "received": {"packets": 0, "bytes": 0},
            "dropped": {"packets": 0, "bytes": 0}, "read_at": read_at}


class PortStats:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def of(self, ports: Iterable[dict]) -> dict[int, dict | None]:
        """Counters of each port (port views: id, host, ofport); None for a port whose
        host's br-int cannot be read."""
        ports = list(ports)
        with self.ctx.store.read() as tx:
            dpids = {h.id: h.dpid(INTEGRATION_BRIDGE) for h in tx.hosts()}
        by_host: dict[str, dict[int, dict]] = {}
        for host_id in sorted({p["host"] for p in ports}):
            dp = self.ctx.switches.datapath(dpids.get(host_id, 0))
            if dp is None:
                continue
            try:
                stats = self.ctx.switches.flow_stats(dp, PORT_COOKIE, KIND_MASK)
            except OpenFlowError:
                continue
            by_host[host_id] = tally(flowdump.from_stats(stats, dp.ofproto), time.time())
        out: dict[int, dict | None] = {}
        for p in ports:
            counts = by_host.get(p["host"])
            out[p["id"]] = None if counts is None or p["ofport"] is None else \
                counts.get(p["id"], empty(time.time()))
        return out
