"""Desired state handed to the pipeline: hosts, pods, ports, and the indices over them.

Everything here is plain frozen data. Each spec checks its own fields when it is built;
`Topology` checks what spans objects (uniqueness, references) once, and builds the indices
`pipeline.host_flows` needs so that computing one pod's flows never walks the whole network.
Every error is a `TopologyError` (a `ValueError`) that names the object and says what to fix.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .contract import (
    HOST_ID,
    MAC,
    MAX_LOCAL_VLAN,
    MAX_OFPORT,
    MAX_POD_ID,
    MAX_PORT_ID,
    MIN_LOCAL_VLAN,
    dhcp_server,
    tunnel_key,
)

__all__ = ["HostSpec", "PodSpec", "PortSpec", "Topology", "TopologyError"]


class TopologyError(ValueError):
    """Bad desired state: the message names the object and the fix. `obj` is ("port", id)
    when one port clashes with the rest of the topology (so a caller can leave it out)."""

    def __init__(self, message: str, obj: tuple[str, object] | None = None) -> None:
        super().__init__(message)
        self.obj = obj


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)     # normalising a frozen dataclass in __post_init__


# A dotted quad as `ipaddress` writes it (decimal octets 0-255, no leading zero), with an
# optional "/0".."/32": such a text is its own canonical form, checked by one regex match
# instead of `ipaddress` (a twentieth of the time; 20,000 ports are checked per build).
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4 = re.compile(rf"({_OCTET}(?:\.{_OCTET}){{3}})(?:/(?:3[0-2]|[12]?[0-9]))?")


def _ipv4(text: object, what: str) -> str:
    """Bare dotted-quad IPv4; accepts 'a.b.c.d/len' (the REST form) and drops the length."""
    if not isinstance(text, str):
        raise TopologyError(f"{what}: IPv4 address must be a string, got {text!r}")
    canonical = _CANONICAL_IPV4.fullmatch(text)
    if canonical is not None:
        return canonical.group(1)
    address, slash, length = text.partition("/")
    try:
        if slash and not (length.isdigit() and int(length) <= 32):
            raise ValueError(length)
        return str(ipaddress.IPv4Address(address))   # 3x faster than IPv4Interface
    except ValueError:
        raise TopologyError(f"{what}: {text!r} is not an IPv4 address (want e.g. 10.7.0.5)") \
            from None


def _mac(text: object, what: str) -> str:
    """Lower-case unicast MAC; multicast or all-zero addresses cannot own a port."""
    mac = text.lower() if MAC.matches(text) else ""
    if not mac:
        raise TopologyError(f"{what}: {text!r} is not a MAC address (want e.g. 02:42:0a:07:00:05)")
    if int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00":
        raise TopologyError(f"{what}: {mac} is multicast or zero; use a unicast MAC")
    return mac


def _int(value: object, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise TopologyError(f"{what}: {value!r} is not an integer in {low}..{high}")
    return value


@dataclass(frozen=True, slots=True)
class HostSpec:
    """One host: its bridges' patch ofports, its tunnel ports and its local VLANs.

    `None` patch ofports mean the agent has not reported them yet; the host then gets only
    its local switching. A peer missing from `tunnel_ofports` is simply not reachable yet.
    """
    id: str
    tunnel_ip: str
    int_patch_ofport: int | None = None      # patch-tun on br-int
    tun_patch_ofport: int | None = None      # patch-int on br-tun
    tunnel_ofports: Mapping[str, int] = field(default_factory=dict)   # peer host id -> ofport
    local_vlans: Mapping[int, int] = field(default_factory=dict)      # pod id -> VLAN 1..4094

    def __post_init__(self) -> None:
        if not HOST_ID.matches(self.id):
            raise TopologyError(f"host {self.id!r}: id must match {HOST_ID.regex} ({HOST_ID.hint})")
        what = f"host {self.id}"
        _set(self, "tunnel_ip", _ipv4(self.tunnel_ip, f"{what} tunnel_ip"))
        for name in ("int_patch_ofport", "tun_patch_ofport"):
            if getattr(self, name) is not None:
                _int(getattr(self, name), 1, MAX_OFPORT, f"{what} {name}")
        tunnels = dict(self.tunnel_ofports)
        for peer, ofport in tunnels.items():
            _int(ofport, 1, MAX_OFPORT, f"{what} tunnel_ofports[{peer!r}]")
            if peer == self.id:
                raise TopologyError(f"{what}: tunnel_ofports lists the host itself; drop it")
            if ofport == self.tun_patch_ofport:
                raise TopologyError(f"{what}: tunnel to {peer} uses ofport {ofport}, "
                                    "which is br-tun's patch port")
        if len(set(tunnels.values())) != len(tunnels):
            raise TopologyError(f"{what}: two peers share one tunnel ofport {tunnels}; "
                                "each peer needs its own lt- port")
        vlans = dict(self.local_vlans)
        for pod, vlan in vlans.items():
            _int(pod, 0, MAX_POD_ID, f"{what} local_vlans key")
            _int(vlan, MIN_LOCAL_VLAN, MAX_LOCAL_VLAN, f"{what} local_vlans[{pod}]")
        if len(set(vlans.values())) != len(vlans):
            raise TopologyError(f"{what}: two pods share one local VLAN {vlans}; "
                                "allocate one VLAN per pod per host")
        _set(self, "tunnel_ofports", MappingProxyType(tunnels))
        _set(self, "local_vlans", MappingProxyType(vlans))

    def __hash__(self) -> int:
        return hash((self.id, self.tunnel_ip, self.int_patch_ofport, self.tun_patch_ofport,
                     tuple(sorted(self.tunnel_ofports.items())),
                     tuple(sorted(self.local_vlans.items()))))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HostSpec):
            return NotImplemented
        return (self.id, self.tunnel_ip, self.int_patch_ofport, self.tun_patch_ofport,
                dict(self.tunnel_ofports), dict(self.local_vlans)) == (
            other.id, other.tunnel_ip, other.int_patch_ofport, other.tun_patch_ofport,
            dict(other.tunnel_ofports), dict(other.local_vlans))


@dataclass(frozen=True, slots=True)
class PodSpec:
    """An isolated group of containers. `tunnel_key` must be `id + 1` (docs/design.md).

    `dhcp_server` is `(ip, mac)` of the controller's DHCP responder in this pod, or None;
    the ARP responder answers for it so that unicast DHCP renewals reach the controller.
    """
    id: int
    tunnel_key: int
    subnet: str | None = None
    dhcp_server: tuple[str, str] | None = None

    @classmethod
    def for_pod(cls, pod_id: int, subnet: str | None = None) -> PodSpec:
        """The spec of a pod as the contract derives it: its tunnel key and, with a subnet,
        its DHCP server."""
        return cls(pod_id, tunnel_key(pod_id), subnet, dhcp_server(pod_id, subnet))

    def __post_init__(self) -> None:
        _int(self.id, 0, MAX_POD_ID, "pod id")
        what = f"pod {self.id}"
        if self.tunnel_key != tunnel_key(self.id):
            raise TopologyError(f"{what}: tunnel_key is {self.tunnel_key!r}, must be pod id + 1 "
                                f"({tunnel_key(self.id)})")
        if self.subnet is not None:
            try:
                net = ipaddress.IPv4Network(self.subnet, strict=False)
            except ValueError:
                raise TopologyError(f"{what}: subnet {self.subnet!r} is not an IPv4 network "
                                    "(want e.g. 10.7.0.0/24)") from None
            _set(self, "subnet", str(net))
        if self.dhcp_server is not None:
            try:
                ip, mac = self.dhcp_server
            except (TypeError, ValueError):
                raise TopologyError(f"{what}: dhcp_server must be (ip, mac), "
                                    f"got {self.dhcp_server!r}") from None
            ip = _ipv4(ip, f"{what} dhcp_server ip")
            mac = _mac(mac, f"{what} dhcp_server mac")
            if self.subnet and ipaddress.IPv4Address(ip) not in ipaddress.IPv4Network(self.subnet):
                raise TopologyError(f"{what}: dhcp_server {ip} is outside subnet {self.subnet}")
            _set(self, "dhcp_server", (ip, mac))


@dataclass(frozen=True, slots=True)
class PortSpec:
    """A container port wired into br-int. `ip` is the bare address (a '/len' is dropped);
    for a DHCP port it is the address the controller's DHCP responder leases to it."""
    id: int
    pod_id: int
    host_id: str
    ofport: int
    mac: str
    ip: str
    dhcp: bool = False

    def __post_init__(self) -> None:
        _int(self.id, 1, MAX_PORT_ID, "port id")
        what = f"port {self.id}"
        _int(self.pod_id, 0, MAX_POD_ID, f"{what} pod_id")
        _int(self.ofport, 1, MAX_OFPORT, f"{what} ofport")
        _set(self, "mac", _mac(self.mac, f"{what} mac"))
        _set(self, "ip", _ipv4(self.ip, f"{what} ip"))
        if self.ip == "0.0.0.0":
            raise TopologyError(f"{what}: ip 0.0.0.0 cannot be owned; give the port its address")
        if not isinstance(self.dhcp, bool):
            raise TopologyError(f"{what}: dhcp must be true or false, got {self.dhcp!r}")


class Topology:
    """The whole desired state plus the indices the pipeline reads.

    Built once per change by the controller; O(ports). Reads afterwards are O(answer):
    `members(pod)`, `local_ports(host, pod)`, `pod_hosts(pod)`, `host_pods(host)`.
    """

    __slots__ = ("hosts", "pods", "ports", "_members", "_local", "_pod_hosts", "_host_pods")

    def __init__(self, hosts: Iterable[HostSpec], pods: Iterable[PodSpec],
                 ports: Iterable[PortSpec]) -> None:
        self.hosts: dict[str, HostSpec] = _unique(hosts, "host", lambda h: h.id)
        self.pods: dict[int, PodSpec] = _unique(pods, "pod", lambda p: p.id)
        self.ports: dict[int, PortSpec] = _unique(ports, "port", lambda p: p.id)
        for host in self.hosts.values():
            for peer in host.tunnel_ofports:
                if peer not in self.hosts:
                    raise TopologyError(f"host {host.id}: tunnel_ofports names unknown host "
                                        f"{peer!r}; register it or drop the entry")
        self._members: dict[int, list[PortSpec]] = {}
        self._local: dict[tuple[str, int], list[PortSpec]] = {}
        self._pod_hosts: dict[int, set[str]] = {}
        self._host_pods: dict[str, set[int]] = {}
        ofports: dict[tuple[str, int], int] = {}
        macs: dict[tuple[int, str], int] = {}
        ips: dict[tuple[int, str], int] = {}
        for port in sorted(self.ports.values(), key=lambda p: p.id):
            self._check_port(port, ofports, macs, ips)
            self._members.setdefault(port.pod_id, []).append(port)
            self._local.setdefault((port.host_id, port.pod_id), []).append(port)
            self._pod_hosts.setdefault(port.pod_id, set()).add(port.host_id)
            self._host_pods.setdefault(port.host_id, set()).add(port.pod_id)

    def _check_port(self, port: PortSpec, ofports: dict, macs: dict, ips: dict) -> None:
        try:
            self._check_port_fits(port, ofports, macs, ips)
        except TopologyError as e:
            raise TopologyError(str(e), ("port", port.id)) from None

    def _check_port_fits(self, port: PortSpec, ofports: dict, macs: dict, ips: dict) -> None:
        # the messages are made only for a port that does not fit: this runs for every
        # port of every pod a build reads
        host = self.hosts.get(port.host_id)
        if host is None:
            raise TopologyError(f"port {port.id}: unknown host {port.host_id!r}; register the "
                                "host first")
        pod = self.pods.get(port.pod_id)
        if pod is None:
            raise TopologyError(f"port {port.id}: unknown pod {port.pod_id}; create the pod "
                                "first")
        if port.pod_id not in host.local_vlans:
            raise TopologyError(f"port {port.id}: host {host.id} has no local VLAN for pod "
                                f"{pod.id}; allocate one in HostSpec.local_vlans")
        if port.ofport == host.int_patch_ofport:
            raise TopologyError(f"port {port.id}: ofport {port.ofport} is br-int's patch port "
                                f"on host {host.id}")
        other = ofports.setdefault((host.id, port.ofport), port.id)
        if other != port.id:
            raise TopologyError(f"port {port.id}: ofport {port.ofport} on host {host.id} is "
                                f"already port {other}'s")
        other = macs.setdefault((pod.id, port.mac), port.id)
        if other != port.id:
            raise TopologyError(f"port {port.id}: MAC {port.mac} is already port {other}'s in "
                                f"pod {pod.id}; MACs must be unique in a pod")
        other = ips.setdefault((pod.id, port.ip), port.id)
        if other != port.id:
            raise TopologyError(f"port {port.id}: IP {port.ip} is already port {other}'s in "
                                f"pod {pod.id}; IPs must be unique in a pod")
        if pod.dhcp_server and (port.ip == pod.dhcp_server[0] or port.mac == pod.dhcp_server[1]):
            raise TopologyError(f"port {port.id}: {port.ip}/{port.mac} collides with pod "
                                f"{pod.id}'s DHCP server {pod.dhcp_server}; pick another "
                                "address")

    def members(self, pod_id: int) -> list[PortSpec]:
        """All ports of a pod, on every host, by port id."""
        return self._members.get(pod_id, [])

    def local_ports(self, host_id: str, pod_id: int) -> list[PortSpec]:
        """The pod's ports on one host, by port id."""
        return self._local.get((host_id, pod_id), [])

    def pod_hosts(self, pod_id: int) -> frozenset[str]:
        """Hosts that have at least one port of the pod."""
        return frozenset(self._pod_hosts.get(pod_id, ()))

    def host_pods(self, host_id: str) -> frozenset[int]:
        """Pods that have at least one port on the host."""
        return frozenset(self._host_pods.get(host_id, ()))


def _unique(items: Iterable, kind: str, key) -> dict:
    out: dict = {}
    for item in items:
        k = key(item)
        if k in out:
            raise TopologyError(f"{kind} {k} is given twice; pass each {kind} once")
        out[k] = item
    return out
