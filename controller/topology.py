"""Build the pipeline's `Topology` from one consistent read of the store.

Rows that would make the whole topology invalid (an ofport two ports claim, a tunnel to a
peer that was just removed) are left out with a warning instead: one inconsistent report
must not stop every other host from being programmed. The agent's next report fixes them.
"""

from __future__ import annotations

import logging

from controller import validate
from controller.store import Host, Tx
from flows import HostSpec, PodSpec, PortSpec, Topology, TopologyError

LOG = logging.getLogger("loris.topology")


def build(tx: Tx) -> tuple[Topology, dict[str, Host]]:
    """The desired state of every host, and the host rows (for their dpids)."""
    hosts = {h.id: h for h in tx.hosts()}
    tunnels = tx.all_tunnels()
    vlans = tx.all_local_vlans()
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
    pods = []
    for p in tx.pods():
        pods.append(PodSpec(p.id, p.id + 1, p.subnet, validate.dhcp_server(p.id, p.network)))
    ports = []
    taken: set[tuple[str, int]] = set()
    for port in tx.ports():
        host = hosts.get(port.host_id)
        if port.ofport is None or host is None or port.host_id not in known:
            continue
        if (port.host_id, port.ofport) in taken or port.ofport == host.int_patch_ofport \
                or port.pod_id not in vlans.get(port.host_id, {}):
            LOG.warning("port %d (%s on %s) left out of the flows: ofport %s clashes or no "
                        "local VLAN", port.id, port.container, port.host_id, port.ofport)
            continue
        taken.add((port.host_id, port.ofport))
        ports.append(PortSpec(port.id, port.pod_id, port.host_id, port.ofport, port.mac,
                              port.address, port.dhcp))
    return Topology(specs, pods, ports), hosts
