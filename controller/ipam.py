"""Address and MAC choice for a new port (IPAM), inside the connect's store transaction.

A port of a pod with a subnet may ask for "dhcp": it gets the lowest free address of the
subnet, never the network address, the pod's DHCP server address (the first usable one,
flows/contract.py) or the broadcast address. A static address must be inside the pod's
subnet (when it has one), must not be the server's, and must be free in the pod. A MAC is
the one asked for, if free in the pod and not the server's, else a random locally
administered one. Same address or MAC in another pod is fine: pods are separate networks.
An address a host's Docker IPAM reserved (docker_ipam.py) is taken too.

`lowest_free` and `random_mac` are pure; `address` and `mac` read the pod's ports through
a store transaction (`Tx`) and raise ApiError with the object and the fix.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Collection

from controller.errors import conflict, invalid
from controller.store import Pod, Tx
from flows import contract


def lowest_free(net: ipaddress.IPv4Network, used: Collection[int]
                ) -> ipaddress.IPv4Interface | None:
    """The lowest address of `net` a port may get that is not in `used` (integers), with the
    subnet's prefix; None when there is none."""
    first = int(net.network_address) + 2            # +1 is the DHCP server
    last = int(net.broadcast_address) - 1
    for addr in range(first, last + 1):
        if addr not in used:
            return ipaddress.IPv4Interface(f"{ipaddress.IPv4Address(addr)}/{net.prefixlen}")
    return None


def assignable(net: ipaddress.IPv4Network) -> int:
    """How many addresses of `net` ports can get (all but network, server, broadcast)."""
    return max(0, net.num_addresses - 3)


def random_mac(taken: Collection[str]) -> str:
    """A locally administered unicast MAC (02:xx:..) not in `taken` (and not 02:00:00:00:00:xx,
    the range people pick by hand)."""
    while True:
        value = "02:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(5))
        if value not in taken and not value.startswith("02:00:00:00:00"):
            return value


def address(tx: Tx, pod: Pod, requested: ipaddress.IPv4Interface | None
            ) -> ipaddress.IPv4Interface:
    """The address of a new port of `pod`: `requested` once checked, else (DHCP) the lowest
    free one."""
    net = pod.network
    if requested is None:
        if net is None:
            raise invalid(f"pod {pod.id} has no subnet, so it has no DHCP; create the pod with "
                          "a subnet or give an address", "no_subnet")
        chosen = lowest_free(net, tx.addrs(pod.id) | tx.reserved_addrs(pod.id))
        if chosen is None:
            raise conflict(f"pod {pod.id}'s subnet {net} is full ({assignable(net)} addresses "
                           "in use); disconnect a container or use a larger subnet",
                           "subnet_full")
        return chosen
    if net is not None:
        if requested.network != net:
            raise invalid(f"ip {requested} is not in pod {pod.id}'s subnet {net}; use an "
                          f"address of {net} with /{net.prefixlen}", "ip_outside_subnet")
        server = contract.dhcp_server(pod.id, net)
        if server is not None and str(requested.ip) == server[0]:
            raise invalid(f"ip {requested.ip} is pod {pod.id}'s DHCP server address; pick "
                          "another", "ip_reserved")
    clash = tx.port_by_addr(pod.id, requested.ip)
    if clash is not None:
        raise conflict(f"IP {requested.ip} already used by {clash.container} in pod {pod.id}",
                       "ip_in_use")
    held = tx.reservation(pod.id, int(requested.ip))   # by a Docker host (docker_ipam.py)
    if held is not None:
        raise conflict(f"IP {requested.ip} already used by a Docker container starting on "
                       f"host {held[0]} in pod {pod.id}", "ip_in_use")
    return requested


def mac(tx: Tx, pod: Pod, requested: str | None) -> str:
    """The MAC of a new port of `pod`: `requested` once checked, else a random free one."""
    if requested is None:
        return random_mac(tx.macs(pod.id))
    clash = tx.port_by_mac(pod.id, requested)
    if clash is not None:
        raise conflict(f"MAC {requested} already used by {clash.container} in pod {pod.id}",
                       "mac_in_use")
    server = contract.dhcp_server(pod.id, pod.network)
    if server is not None and requested == server[1]:
        raise invalid(f"MAC {requested} is pod {pod.id}'s DHCP server MAC; pick another",
                      "mac_reserved")
    return requested
