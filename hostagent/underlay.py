"""What Loris' tunnels need from the host's underlay (pure: the agent gathers the facts).

On the userspace datapath (`datapath_type=netdev`: no openvswitch kernel module) OVS builds
tunnel packets itself and sends them only through an OVS bridge that holds the tunnel IP
(its routes and neighbours come from such bridges, `ovs-appctl ovs/route/show`). A tunnel IP
on a plain NIC makes the tunnels fail; a NIC that is in the bridge but still answers ARP for
the bridge's IP (`arp_ignore` 0, ARP flux) lets peers learn the NIC's MAC as the tunnel
neighbour and black-hole this host's tunnel traffic. The fix, in docs/operations.md: the
tunnel IP on an OVS bridge such as br-phy, the NIC a port of that bridge, and
`arp_ignore=8` on the NIC.
"""

from __future__ import annotations

from collections.abc import Mapping

from flows import contract
from hostagent.ovs import Interface

USERSPACE_DATAPATH = "netdev"


def on_ovs_bridge(holder: str | None, interfaces: Mapping[str, Interface]) -> bool:
    """Whether `holder` is an OVS bridge's own interface (type internal, on a bridge that is
    not one of Loris' bridges) in this OVSDB."""
    iface = interfaces.get(holder) if holder else None
    return (iface is not None and iface.type == "internal" and iface.bridge is not None
            and iface.bridge not in contract.BRIDGES)  # fmt: skip


def userspace_tunnel_warning(datapath_type: str, tunnel_ip: str, holder: str | None,
                             interfaces: Mapping[str, Interface]) -> str | None:
    """The warning to give when the userspace datapath is used and the tunnel IP is not on
    an OVS bridge; None when all is well (or the kernel datapath is used).

    `holder`: the interface that holds `tunnel_ip` on this host (None: none does);
    `interfaces`: the OVSDB's interfaces by name, with their type and bridge."""
    if datapath_type != USERSPACE_DATAPATH or on_ovs_bridge(holder, interfaces):
        return None
    nic = holder or "NIC"
    if holder is None:
        where = "is held by no interface of this host"
    elif holder in interfaces and interfaces[holder].bridge in contract.BRIDGES:
        where = f"is on {holder}, an interface of Loris' own bridge {interfaces[holder].bridge}"
    elif holder in interfaces:
        where = f"is on {holder}, an OVS port that is not a bridge's own interface"
    else:
        where = f"is on {holder}, which is not an OVS bridge"
    return (f"userspace datapath (no openvswitch kernel module) and tunnel IP {tunnel_ip} "
            f"{where}: OVS sends tunnel packets only through an OVS bridge that holds the "
            "tunnel IP, so tunnels to other hosts will not work reliably. Fix: put "
            f"{tunnel_ip} on an OVS bridge such as br-phy (datapath_type=netdev) with {nic} "
            f"as a port of it, and set arp_ignore=8 on {nic} (sysctl "
            f"net.ipv4.conf.{nic}.arp_ignore=8) so that only the bridge answers ARP for "
            f"{tunnel_ip}; see docs/operations.md")
