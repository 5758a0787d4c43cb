"""Netlink plumbing (pyroute2): container veths (made with one end in the container),
addresses, MTU.

Everything here acts on the agent's own network namespace (the host) and on container
namespaces given as paths (`/proc/<pid>/ns/net` or `/run/netns/<name>`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import ipaddress
import os
import re
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from flows import contract
from hostagent.faults import pause_point
from hostagent.netns_thread import call_in_netns_fd


class NetdevError(RuntimeError):
    pass


@contextlib.contextmanager
def open_netns(path: str) -> Iterator[int]:
    """An fd on a namespace; holding it keeps the namespace alive while we work on it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise NetdevError(f"network namespace {path} is gone ({e.strerror})") from e
    try:
        yield fd
    finally:
        os.close(fd)


_host = threading.local()


@contextlib.contextmanager
def ipr_in(netns_fd: int | None = None) -> Iterator[IPRoute]:
    """A netlink socket in the namespace `netns_fd`, or in ours (None). Ours is opened once
    per thread and kept (opening one costs pyroute2 several ms, a connect used a dozen);
    one that failed otherwise than with a netlink error is dropped."""
    if netns_fd is None:
        ipr = getattr(_host, "ipr", None)
        if ipr is None:
            ipr = _host.ipr = IPRoute()
        try:
            yield ipr
        except NetlinkError:
            raise
        except BaseException:
            _host.ipr = None
            with contextlib.suppress(Exception):
                ipr.close()
            raise
        return
    # flags=0: never let pyroute2 create a namespace that does not exist.
    ipr = IPRoute(netns=netns_fd, flags=0)
    try:
        yield ipr
    finally:
        ipr.close()


T = TypeVar("T")


def in_netns(netns_path: str, fn: Callable[[IPRoute], T]) -> T:
    """`fn(socket)` with a netlink socket in the namespace `netns_path`, called in a helper
    thread that entered it (hostagent/netns_thread.py: the agent's threads never move).
    pyroute2's own way, `IPRoute(netns=...)`, starts a process to make each such socket:
    ~150 ms of a connect went there. The namespace is held open meanwhile, so it cannot
    vanish under the work."""

    def call() -> T:
        # pyroute2 makes its socket on first use: in this thread, so in the namespace
        ns = IPRoute()
        try:
            return fn(ns)
        finally:
            ns.close()

    with open_netns(netns_path) as fd:
        return call_in_netns_fd(fd, call, lambda reason: NetdevError(
            f"cannot enter network namespace {netns_path} ({reason})"))


def _link(ipr: IPRoute, name: str):
    idx = ipr.link_lookup(ifname=name)
    return ipr.get_links(idx[0])[0] if idx else None


def _kind(link) -> str | None:
    info = link.get("IFLA_LINKINFO")
    return info.get("IFLA_INFO_KIND") if info else None


@dataclass
class ContainerSide:
    ifname: str
    mac: str
    mtu: int
    up: bool
    ipv4: list[str]  # "A.B.C.D/len"


def link_exists(name: str) -> bool:
    with ipr_in() as ipr:
        return _link(ipr, name) is not None


def delete_link(name: str) -> bool:
    """Delete a host interface if present (a veth takes its peer along)."""
    with ipr_in() as ipr:
        try:
            ipr.link("del", ifname=name)
            return True
        except NetlinkError as e:
            if e.code == 19:  # ENODEV: already gone
                return False
            raise


def inspect_port(port_id: int, netns_path: str, mac: str) -> ContainerSide | None:
    """The container end of `lp<id>` if it lives in `netns_path` with `mac`, else None.

    Matches the veth pair both ways (each end's IFLA_LINK names the other's index) so an
    interface of a restarted container, or a foreign one, is never mistaken for ours.
    """
    with ipr_in() as ipr:
        host = _link(ipr, contract.host_port_name(port_id))
    if host is None or _kind(host) != "veth" or host.get("IFLA_LINK_NETNSID") is None:
        return None

    def look(ns: IPRoute) -> ContainerSide | None:
        try:
            peer = ns.get_links(host.get("IFLA_LINK"))[0]
        except NetlinkError:
            return None
        if peer.get("IFLA_LINK") != host["index"] or _kind(peer) != "veth":
            return None
        if (peer.get("IFLA_ADDRESS") or "").lower() != mac.lower():
            return None
        return _side(ns, peer)

    try:
        return in_netns(netns_path, look)
    except NetdevError:
        return None


def _side(ns: IPRoute, link) -> ContainerSide:
    """The container side of a port from its link, read in its namespace (`ns`)."""
    addrs = [f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}"
             for a in ns.get_addr(index=link["index"], family=2)]
    return ContainerSide(ifname=link.get("IFLA_IFNAME"), mac=link.get("IFLA_ADDRESS"),
                         mtu=link.get("IFLA_MTU"), up=bool(link["flags"] & 1), ipv4=addrs)


def create_port(
    port_id: int, netns_path: str, ifname: str, mac: str, ip: str | None, mtu: int
) -> ContainerSide:
    """Create the veth of a port: `lp<id>` stays here, the other end is made inside the
    container as `ifname` (or the next free ethN there), with its MAC and MTU. Returns the
    container side as made (read back in the namespace, as `inspect_port` would).

    The container's end is created in its namespace (IFLA_NET_NS_FD on the veth's peer)
    rather than made here and moved: a move waits for an RCU grace period in the kernel
    (12-30 ms on this machine, a third of the wiring), and a rename after it is one more
    call. On failure nothing is left behind: deleting `lp<id>` takes its peer with it.
    """
    host_name = contract.host_port_name(port_id)
    for stale in (host_name, contract.container_port_temp_name(port_id)):
        delete_link(stale)       # leftovers of an interrupted attempt (or an older agent)
    try:
        with open_netns(netns_path) as fd:
            final = _make_veth(port_id, host_name, fd, netns_path, ifname, mac, mtu)
        pause_point("container_named")

        def finish(ns: IPRoute) -> ContainerSide:
            idx = ns.link_lookup(ifname=final)[0]
            if ip:
                with _step(f"adding address {ip}"):
                    _add_address(ns, idx, ip)
            with _step(f"bringing {final} up"):
                ns.link("set", index=idx, state="up")
            tx_checksum_off(final)
            return _side(ns, ns.get_links(idx)[0])

        return in_netns(netns_path, finish)
    except Exception:
        delete_link(host_name)
        raise


def _make_veth(port_id: int, host_name: str, netns_fd: int, netns_path: str, ifname: str,
               mac: str, mtu: int) -> str:
    """The veth pair, up and marked on this side; its container end named `ifname`, or the
    next free ethN when the container has that name already. Returns the container name."""
    def add(name: str) -> None:
        with _step(f"creating veth {host_name}"), ipr_in() as ipr:
            ipr.link("add", ifname=host_name, kind="veth", mtu=mtu,
                     peer={"ifname": name, "net_ns_fd": netns_fd, "address": mac, "mtu": mtu})

    final = ifname
    try:
        add(final)
    except NetdevError as e:
        # EEXIST: the name is taken in the container (this side's was just deleted)
        if not isinstance(e.__cause__, NetlinkError) or e.__cause__.code != errno.EEXIST:
            raise
        with _step("listing the container's interfaces"):
            taken = in_netns(netns_path, lambda ns: {link.get("IFLA_IFNAME")
                                                     for link in ns.get_links()})
        final = next_ifname(ifname, taken)
        add(final)
    with _step(f"bringing {host_name} up"), ipr_in() as ipr:
        alias = f"{contract.PORT_ALIAS_PREFIX}{port_id}"  # how cleanup knows it's ours
        ipr.link("set", index=ipr.link_lookup(ifname=host_name)[0], ifalias=alias,
                 state="up")
    return final


@contextlib.contextmanager
def _step(what: str) -> Iterator[None]:
    """Name the step in the error a netlink failure turns into."""
    try:
        yield
    except NetlinkError as e:
        raise NetdevError(f"{what} failed: {e.args[1] if len(e.args) > 1 else e}") from e


def add_address(netns_path: str, ifname: str, ip: str) -> None:
    in_netns(netns_path,
             lambda ns: _add_address(ns, ns.link_lookup(ifname=ifname)[0], ip))


def _add_address(ns: IPRoute, index: int, ip: str) -> None:
    iface = ipaddress.IPv4Interface(ip)
    ns.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)


SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x17


def tx_checksum_off(ifname: str) -> None:
    """`ethtool -K <if> tx off` for an interface of this thread's namespace, by the same
    ioctl and without forking ethtool: a veth hands OVS's userspace datapath packets with
    partial checksums, which then leave the tunnel unfixed and TCP stalls. (The kernel
    turns off what depends on it, segmentation offloads, as ethtool's does.)"""
    value = ctypes.create_string_buffer(struct.pack("II", ETHTOOL_STXCSUM, 0), 8)
    ifreq = struct.pack("16sP16x", ifname.encode(), ctypes.addressof(value))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            fcntl.ioctl(s, SIOCETHTOOL, ifreq)
        except OSError as e:
            raise NetdevError(f"turning off tx checksum offload of {ifname} failed: "
                              f"{e.strerror}") from e


def disable_tx_offload(netns_path: str, ifname: str) -> None:
    """`tx_checksum_off(ifname)` inside the container's namespace."""
    in_netns(netns_path, lambda _ns: tx_checksum_off(ifname))


def run_in_netns(netns_path: str, argv: list[str], timeout: float = 20) -> str:
    try:
        proc = subprocess.run(
            ["nsenter", f"--net={netns_path}", *argv],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired as e:
        raise NetdevError(f"{argv[0]} timed out in {netns_path}") from e
    if proc.returncode != 0:
        raise NetdevError(f"{' '.join(argv)} failed: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def delete_loris_veths() -> list[str]:
    """Delete every host-side veth whose alias marks it as a Loris port; returns their contract."""
    gone = []
    with ipr_in() as ipr:
        for link in ipr.get_links():
            alias = link.get("IFLA_IFALIAS") or ""
            if _kind(link) == "veth" and alias.startswith(contract.PORT_ALIAS_PREFIX):
                with contextlib.suppress(NetlinkError):
                    ipr.link("del", index=link["index"])
                    gone.append(link.get("IFLA_IFNAME"))
    return gone


def loris_veths() -> list[str]:
    with ipr_in() as ipr:
        return [
            link.get("IFLA_IFNAME")
            for link in ipr.get_links()
            if _kind(link) == "veth"
            and (link.get("IFLA_IFALIAS") or "").startswith(contract.PORT_ALIAS_PREFIX)
        ]


def host_veths() -> dict[str, int]:
    """Name -> ifindex of the veths here (one netlink dump)."""
    with ipr_in() as ipr:
        return {link.get("IFLA_IFNAME"): link["index"] for link in ipr.get_links()
                if _kind(link) == "veth"}  # fmt: skip


def ifindex(name: str) -> int | None:
    with ipr_in() as ipr:
        idx = ipr.link_lookup(ifname=name)
    return idx[0] if idx else None


def netns_id(path: str) -> tuple[int, int] | None:
    """Identity of a namespace (device, inode): a restarted container has a new one."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def interface_of_address(ip: str) -> str | None:
    """The name of the interface that holds the IPv4 address `ip` here, if any."""
    try:
        with ipr_in() as ipr:
            for a in ipr.get_addr(family=2):
                if a.get("IFA_ADDRESS") == ip:
                    return ipr.get_links(a["index"])[0].get("IFLA_IFNAME")
    except NetlinkError as e:
        raise NetdevError(f"listing addresses failed: {e}") from e
    return None


def mtu_of_address(ip: str) -> int | None:
    """MTU of the interface that holds `ip` here (the tunnel endpoint)."""
    with ipr_in() as ipr:
        for a in ipr.get_addr(family=2):
            if a.get("IFA_ADDRESS") == ip:
                return ipr.get_links(a["index"])[0].get("IFLA_MTU")
    return None


def source_address_towards(ip: str) -> str | None:
    """The source address the kernel would use to reach `ip` (`ip route get`)."""
    with ipr_in() as ipr:
        try:
            routes = ipr.route("get", dst=ip)
        except NetlinkError:
            return None
    for r in routes:
        src = r.get("RTA_PREFSRC")
        if src:
            return src
    return None


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
