"""Big networks without thousands of namespaces: simulated hosts written into the
controller's store before it starts.

A simulated host is a registered host that has no agent and whose switches never connect;
its ports are rows with an ofport, as its agent would have reported them. The controller
treats them like any host whose switches are away: it computes their flows into every
real host of their pods (ARP answers, unicast towards the simulated host's tunnel) and skips
programming the simulated host itself. That is enough to make a real host's switch receive
20,000 flows, or to put 10,000 ports into the controller's topology, at the cost of SQLite
rows instead of veths.

Written with the controller's own `Store`, while the controller is stopped (it keeps state
in memory while it runs).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from controller.store import Store
from flows import contract

SIM_TUNNEL_BASE = 200        # simulated host i has tunnel IP 198.18.0.(200 + i)
MTU = 1450


@dataclass(frozen=True)
class SimPort:
    host: str
    pod: int
    ip: str                   # "a.b.c.d/len"
    mac: str


def sim_host(i: int) -> str:
    return f"s{i}"


def sim_mac(n: int) -> str:
    return f"02:5e:{n >> 24 & 255:02x}:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}"


def _dpids(host: str) -> dict[str, int]:
    """Datapath ids no real host can have (the design's formula over another name)."""
    return contract.dpids(f"bench-sim-{host}")


def seed(db: Path, hosts: int, ports: Iterable[SimPort]) -> int:
    """Add simulated hosts s1..s<hosts> and `ports` on them; returns the number of ports."""
    store = Store(str(db))
    n = 0
    try:
        with store.tx() as tx:
            names = [sim_host(i) for i in range(1, hosts + 1)]
            for i, h in enumerate(names, start=1):
                if tx.host(h) is None:
                    dpids = _dpids(h)
                    tx.insert_host(h, f"198.18.0.{SIM_TUNNEL_BASE + i}", "vxlan",
                                   dpids[contract.INTEGRATION_BRIDGE],
                                   dpids[contract.TUNNEL_BRIDGE])
                    tx.set_patch(h, 1, 1)
            for h in names:
                tx.set_tunnels(h, {p: 2 + j for j, p in enumerate(x for x in names if x != h)})
            next_ofport = {h: 100 + len(tx.ports(host_id=h)) for h in names}
            for p in ports:
                if tx.pod(p.pod) is None:
                    tx.insert_pod(p.pod, None, None)
                tx.ensure_local_vlan(p.host, p.pod)
                row = tx.insert_port(p.host, f"sim:{p.pod}:{p.mac}", p.pod, p.mac,
                                     ipaddress.IPv4Interface(p.ip), False)
                tx.update_port(row.id, ofport=next_ofport[p.host], mtu=MTU, state="active")
                next_ofport[p.host] += 1
                n += 1
            tx.bump_all()
    finally:
        store.close()
    return n
