"""Build the pipeline's `Topology` from one consistent read of the store.

Rows that would make the whole topology invalid (an ofport two ports claim, a tunnel to a
peer that was just removed) are left out with a warning instead: one inconsistent report
must not stop every other host from being programmed. The agent's next report fixes them.

A host's flows depend only on the hosts and on the pods present on that host (their members
on every host), so a programming job reads just those pods: one connect costs the same in
a network of 10 ports as in one of 10,000 (bench/bench_incremental.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from controller import validate
from controller.store import Host, Port, Tx
from flows import HostSpec, PodSpec, PortSpec, Topology, TopologyError

LOG = logging.getLogger("loris.topology")


def build(tx: Tx, pods: Iterable[int] | None = None) -> tuple[Topology, dict[str, Host]]:
    """The desired state of every host, and the host rows (for their dpids).

    With `pods`, only those pods and their ports are read: every host's flows for those pods,
    and its base pipeline, come out as from the whole topology."""
    wanted = None if pods is None else sorted(set(pods))
    hosts = {h.id: h for h in tx.hosts()}
    tunnels = tx.all_tunnels()
    clashes = tx.ofport_clashes(wanted)
    vlans = tx.all_local_vlans(None if wanted is None else
                               set(wanted) | {p.pod_id for p in clashes})
    specs: list[HostSpec] = []
    for h in hosts.values():
        peers: dict[str, int] = {}
        used = {h.tun_patch_ofport}
        for peer, ofport in sorted(tunnels.get(h.id, {}).items()):
            if peer in hosts and peer != h.id and ofport not in used:
                peers[peer] = ofport
                used.add(ofport)
        try:
            specs.append(HostSpec(h.id, h.tunnel_ip, h.int_patch_ofport, h.tun_patch_ofport,
                                  peers, vlans.get(h.id, {})))
        except TopologyError as e:
            LOG.warning("host %s left out of the flows: %s", h.id, e)
    known = {s.id for s in specs}
    if wanted is None:
        pod_rows, port_rows = tx.pods(), tx.ports()
    else:
        pod_rows = [p for p in map(tx.pod, wanted) if p is not None]
        port_rows = sorted((port for pod_id in wanted for port in tx.ports(pod_id=pod_id)),
                           key=lambda port: port.id)
    pod_specs = [PodSpec(p.id, p.id + 1, p.subnet, validate.dhcp_server(p.id, p.network))
                 for p in pod_rows]

    def usable(port: Port) -> bool:
        host = hosts.get(port.host_id)
        return port.ofport is not None and host is not None and port.host_id in known

    def fits(port: Port) -> bool:
        return port.ofport != hosts[port.host_id].int_patch_ofport \
            and port.pod_id in vlans.get(port.host_id, {})

    # an ofport claimed by two ports belongs to the first (by id) that is otherwise fine,
    # whichever pods are being read
    owner: dict[tuple[str, int], int] = {}
    for port in clashes:
        if usable(port) and fits(port):
            owner.setdefault((port.host_id, port.ofport), port.id)
    ports = []
    for port in port_rows:
        if not usable(port):
            continue
        if owner.get((port.host_id, port.ofport), port.id) != port.id or not fits(port):
            LOG.warning("port %d (%s on %s) left out of the flows: ofport %s clashes or no "
                        "local VLAN", port.id, port.container, port.host_id, port.ofport)
            continue
        ports.append(PortSpec(port.id, port.pod_id, port.host_id, port.ofport, port.mac,
                              port.address, port.dhcp))
    return Topology(specs, pod_specs, ports), hosts
