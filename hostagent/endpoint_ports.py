"""Wiring the port of a Docker endpoint (hostagent/docker_driver.py), a step of the
reconciler's pass (hostagent/reconcile.py).

A Docker endpoint's port has no container yet when it is wired: Docker moves the container
end into the container itself after Join. So both ends are made here, in the host's
namespace: `lp<port>` (added to br-int, with the port's external ids, its ofport pinned)
and `lc<port>` (the port's MAC, the encapsulation MTU, TX offload off), which Docker then
moves and renames (eth0, eth1...). Once moved, the pair stays as long as the container's
namespace; a pair that vanished (the container died while nobody told the plugin) is made
again, and DeleteEndpoint removes the port for good.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pyroute2.netlink.exceptions import NetlinkError

from flows import contract
from hostagent import netdev
from hostagent.containers import Container
from hostagent.ovs import Interface

if TYPE_CHECKING:
    from hostagent.reconcile import Reconciler

log = logging.getLogger(__name__)


def create_pair(port_id: int, mac: str, mtu: int) -> str:
    """`lp<id>` (up, alias `loris port <id>`) and `lc<id>` (MAC, MTU, TX offload off) here;
    returns the container end's name. Nothing is left behind on failure."""
    host_name = contract.host_port_name(port_id)
    peer = contract.container_port_temp_name(port_id)
    for stale in (host_name, peer):
        netdev.delete_link(stale)
    try:
        with netdev.ipr_in() as ipr:
            ipr.link("add", ifname=host_name, kind="veth", peer={"ifname": peer})
            host_idx = ipr.link_lookup(ifname=host_name)[0]
            peer_idx = ipr.link_lookup(ifname=peer)[0]
            ipr.link("set", index=host_idx, mtu=mtu,
                     ifalias=f"{contract.PORT_ALIAS_PREFIX}{port_id}")
            ipr.link("set", index=peer_idx, mtu=mtu, address=mac)
            ipr.link("set", index=host_idx, state="up")
        netdev.disable_tx_offload("/proc/self/ns/net", peer)
        return peer
    except (NetlinkError, netdev.NetdevError) as e:
        netdev.delete_link(host_name)
        raise netdev.NetdevError(f"creating veth {host_name}/{peer} failed: {e}") from e


def ensure(rec: Reconciler, port: dict, mtu: int, ifaces: dict[int, Interface]) -> dict:
    """The port's wiring as the report gives it; makes what is missing."""
    from hostagent.reconcile import PortError

    port_id = int(port["id"])
    ref = port["container"]
    host_name = contract.host_port_name(port_id)
    iface = ifaces.get(port_id)
    endpoint = Container(ref=ref, id=ref, name=ref, netns="")
    if not netdev.link_exists(host_name):
        pinned = (iface.ofport_request or iface.ofport) if iface else None
        if iface is not None:   # the pair died with a container's namespace: port re-added
            rec.db.del_ports(contract.INTEGRATION_BRIDGE, [iface.name])
        log.info("wiring port %s for Docker endpoint %s", port_id, ref)
        peer = create_pair(port_id, port["mac"], mtu)
        try:
            rec._attach(port, endpoint, peer, pinned=pinned)
        except Exception:
            netdev.delete_link(host_name)
            raise
        iface = None
    elif iface is None or not iface.ofport:
        rec._attach(port, endpoint, contract.container_port_temp_name(port_id))
        iface = None
    if iface is None:
        iface = rec.db.interface(host_name)
    if iface is None or not iface.ofport:
        raise PortError("ovs_error", f"OVS gave no ofport to {host_name}: "
                                     f"{(iface.error if iface else None) or 'unknown'}")
    return {"ofport": iface.ofport, "mtu": mtu}
