"""Names, ids and sizes fixed by docs/design.md (pure functions, no I/O)."""

from __future__ import annotations

import hashlib
import ipaddress
import re

INTEGRATION_BRIDGE = "br-int"
TUNNEL_BRIDGE = "br-tun"
PATCH_ON_INT = "patch-tun"  # lives on br-int, peers with patch-int
PATCH_ON_TUN = "patch-int"  # lives on br-tun, peers with patch-tun
LORIS_MARK = ("loris", "1")  # external_ids key/value on everything Loris creates
PORT_ALIAS_PREFIX = "loris port "  # ifalias of a host-side veth: how cleanup knows it is ours
DEFAULT_OPENFLOW_PORT = 6653
DEFAULT_API_PORT = 8780
TUNNEL_TYPES = ("vxlan", "gre")
# Encapsulation overhead over IPv4: outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14,
# or outer IP 20 + GRE with key 8 + inner Ethernet 14.
TUNNEL_OVERHEAD = {"vxlan": 50, "gre": 42}

_HOST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_TUNNEL_PORT = re.compile(r"^lt-[0-9a-f]{8}$")
_HOST_PORT = re.compile(r"^lp(\d+)$")


def valid_host_id(host_id: str) -> bool:
    return bool(_HOST_ID.match(host_id))


def dpids(host_id: str) -> dict[str, int]:
    """The fixed datapath ids of a host's two bridges."""
    h48 = int(hashlib.sha256(host_id.encode()).hexdigest()[:12], 16)
    return {INTEGRATION_BRIDGE: (0x0001 << 48) | h48, TUNNEL_BRIDGE: (0x0002 << 48) | h48}


def dpid_hex(dpid: int) -> str:
    """16 hex digits, the form of other-config:datapath-id."""
    return f"{dpid:016x}"


def tunnel_port_name(peer_ip: str) -> str:
    """`lt-` + the peer's tunnel IPv4 as 8 hex digits, e.g. 198.18.0.12 -> lt-c612000c."""
    return "lt-" + f"{int(ipaddress.IPv4Address(peer_ip)):08x}"


def is_tunnel_port_name(name: str) -> bool:
    return bool(_TUNNEL_PORT.match(name))


def host_port_name(port_id: int) -> str:
    """Host-side veth of a container port (`lp42`)."""
    return f"lp{port_id}"


def container_port_temp_name(port_id: int) -> str:
    """Container-side veth end before it is moved and renamed (`lc42`)."""
    return f"lc{port_id}"


def port_id_of_host_port(name: str) -> int | None:
    m = _HOST_PORT.match(name)
    return int(m.group(1)) if m else None


def container_mtu(underlay_mtu: int, tunnel_type: str) -> int:
    return underlay_mtu - TUNNEL_OVERHEAD[tunnel_type]


def next_ifname(base: str, taken: set[str]) -> str:
    """`base` if free, else the next free name counting up from base's number (eth1, eth2...).

    A container attached to several pods gets one interface per pod.
    """
    if base not in taken:
        return base
    m = re.match(r"^(.*?)(\d+)$", base)
    stem, n = (m.group(1), int(m.group(2))) if m else (base, 0)
    while True:
        n += 1
        name = f"{stem}{n}"
        if name not in taken and len(name) <= 15:
            return name
        if len(name) > 15:
            raise ValueError(f"no free interface name derived from {base}")
