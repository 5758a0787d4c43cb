"""The hosts' own networking, which on a real machine exists before Loris does: the lab's
namespaces, the underlay and management networks, each host's Open vSwitch and, on the
userspace datapath, the bridge br-phy that owns the tunnel IP (part of `Lab`, see
lab/core.py; docs/lab.md, "The host's own networking")."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterable

from lab.command import LabError, run
from lab.naming import (
    CONTROL_IP,
    MGMT_PREFIXLEN,
    UNDERLAY_MTU,
    UNDERLAY_PREFIXLEN,
    Host,
    random_mac,
)
from lab.ovs import (
    create_database,
    ovs_env,
    ovs_vswitchd_argv,
    ovsdb_server_argv,
    wait_for_pidfile_ctl,
    wait_for_unix_socket,
)
from lab.procs import LabProcess

# arp_ignore=8: the kernel answers no ARP request that arrives on the NIC. The NIC is a port
# of br-phy but still a kernel interface, so without it the kernel answers ARP for the
# tunnel IP twice, from the NIC's MAC and from br-phy's ("ARP flux"); a peer whose OVS
# learns the NIC's MAC sends its tunnel packets to this host's kernel instead of its OVS.
NIC_ARP_IGNORE = 8


class HostNetworks:
    """Namespaces, wiring, per-host Open vSwitch and the underlay's tunnel endpoints."""

    prefix: str
    hosts: list[Host]
    ctl_ns: str
    ul_ns: str
    netdev: bool
    processes: dict[str, LabProcess]
    _phy_mac: dict[str, str]

    @property
    def underlay_dev(self) -> str:
        """The device that owns a host's tunnel endpoint IP."""
        return "br-phy" if self.netdev else "eth0"

    def restart_vswitchd(self, host: Host | str | int,
                         sig: int = signal.SIGKILL) -> LabProcess:
        """Crash (SIGKILL by default) the host's ovs-vswitchd and start it again as up()
        did. Its database (bridges, ports, requested ofports) survives, its flows do not.
        With the userspace datapath br-phy's tap device died with the daemon: its tunnel IP
        and the peers' underlay MACs are put back, as up() left them."""
        h = self.host(host)
        old = self.processes[f"{h.name}-ovs-vswitchd"]
        old.signal(sig)
        old.wait(10)
        return self._vswitchd_up(h)

    def stop_ovs(self, host: Host | str | int) -> None:
        """Stop the host's ovs-vswitchd and ovsdb-server (SIGTERM), as a shutdown does, and
        remove what a reboot would: the kernel datapath (if any), the daemons' sockets and
        pid files. The database stays (on a real host it is on disk)."""
        h = self.host(host)
        for daemon in ("ovs-vswitchd", "ovsdb-server"):
            proc = self.processes[f"{h.name}-{daemon}"]
            proc.signal(signal.SIGTERM)
            proc.wait(10)
        if not self.netdev:
            dps = run(["ip", "netns", "exec", h.netns, "ovs-dpctl", "dump-dps"],
                      check=False).stdout.split()
            for dp in dps:
                run(["ip", "netns", "exec", h.netns, "ovs-dpctl", "del-dp", dp], check=False)
        for pattern in ("*.sock", "*.pid", "*.ctl"):
            for path in h.rundir.glob(pattern):
                path.unlink(missing_ok=True)

    def start_ovs(self, host: Host | str | int) -> LabProcess:
        """Start the host's ovsdb-server and ovs-vswitchd on the database they left (a boot),
        and put back the underlay as up() left it."""
        h = self.host(host)
        db = self.start_process(f"{h.name}-ovsdb-server", ovsdb_server_argv(h), netns=h,
                                env=ovs_env(h))
        wait_for_unix_socket(h.rundir / "db.sock", lambda: db.alive,
                             f"ovsdb-server of {h.name}")
        return self._vswitchd_up(h)

    def _vswitchd_up(self, h: Host) -> LabProcess:
        vs = self._start_vswitchd(h)
        if self.netdev:
            self._address_br_phy(h)
            for peer in self.hosts:
                if peer is not h:
                    self.ovs(h).appctl("tnl/neigh/set", "br-phy", peer.tunnel_ip,
                                       self._phy_mac[peer.name])
        self._wait_tunnel_route(h)
        return vs

    # ----- building, in the order up() calls it ----------------------------------------

    def _namespaces(self) -> None:
        names = [self.ctl_ns, self.ul_ns] + [h.netns for h in self.hosts]
        run(["ip", "-batch", "-"], input="".join(f"netns add {n}\n" for n in names))
        for ns in names:
            # No IPv6 in the lab's own namespaces: keeps captures free of RS/MLD noise.
            run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w",
                 "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])

    def _wire(self) -> None:
        """Underlay and management veths, created directly inside their namespaces (nothing
        ever appears in the root namespace), and the two Linux bridges."""
        lines = []
        for h in self.hosts:
            lines.append(f"link add eth0 netns {h.netns} type veth peer name {h.name} "
                         f"netns {self.ul_ns}")
            lines.append(f"link add mgmt0 netns {h.netns} type veth peer name {h.name} "
                         f"netns {self.ctl_ns}")
        run(["ip", "-batch", "-"], input="\n".join(lines) + "\n")

        def bridge(extra: Iterable[str]) -> str:
            cmds = ["link set lo up", "link add br0 type bridge", *extra, "link set br0 up"]
            for h in self.hosts:
                cmds += [f"link set {h.name} master br0", f"link set {h.name} up"]
            return "\n".join(cmds) + "\n"

        run(["ip", "-n", self.ul_ns, "-batch", "-"], input=bridge([]))
        run(["ip", "-n", self.ctl_ns, "-batch", "-"],
            input=bridge([f"addr add {CONTROL_IP}/{MGMT_PREFIXLEN} dev br0"]))
        for h in self.hosts:
            cmds = ["link set lo up",
                    f"addr add {h.mgmt_ip}/{MGMT_PREFIXLEN} dev mgmt0", "link set mgmt0 up",
                    f"link set eth0 mtu {UNDERLAY_MTU}"]
            if self.netdev:
                # eth0 goes into br-phy, which owns the IP; eth0 must not share br-phy's MAC
                # or the kernel answers tunnel packets with ICMP port unreachable.
                cmds.append(f"link set eth0 address {random_mac()}")
            else:
                cmds.append(f"addr add {h.tunnel_ip}/{UNDERLAY_PREFIXLEN} dev eth0")
            cmds.append("link set eth0 up")
            run(["ip", "-n", h.netns, "-batch", "-"], input="\n".join(cmds) + "\n")

    def _start_host(self, host: Host) -> None:
        create_database(host)
        env = ovs_env(host)
        db = self.start_process(f"{host.name}-ovsdb-server", ovsdb_server_argv(host),
                                netns=host, env=env)
        wait_for_unix_socket(host.rundir / "db.sock", lambda: db.alive,
                             f"ovsdb-server of {host.name}")
        ovs = self.ovs(host)
        ovs.vsctl("--no-wait", "init", "--", "set", "Open_vSwitch", ".",
                  f"external_ids:system-id={host.netns}", f"external_ids:hostname={host.name}")
        self._start_vswitchd(host)
        if self.netdev:
            self.run(host, ["sysctl", "-q", "-w",
                            f"net.ipv4.conf.eth0.arp_ignore={NIC_ARP_IGNORE}"])
            self._phy_mac[host.name] = mac = random_mac()
            ovs.vsctl("add-br", "br-phy", "--", "set", "bridge", "br-phy",
                      "datapath_type=netdev", f"other-config:hwaddr=\"{mac}\"",
                      "--", "add-port", "br-phy", "eth0")
            self._address_br_phy(host)
        self._wait_tunnel_route(host)

    def _start_vswitchd(self, host: Host) -> LabProcess:
        vs = self.start_process(f"{host.name}-ovs-vswitchd",
                                ovs_vswitchd_argv(host, self.netdev), netns=host,
                                env=ovs_env(host))
        wait_for_pidfile_ctl(host, "ovs-vswitchd", vs.pid, lambda: vs.alive)
        return vs

    def _address_br_phy(self, host: Host, timeout: float = 10) -> None:
        """Put the tunnel IP on br-phy, the userspace bridge's tap device (which
        ovs-vswitchd creates once it has read its database)."""
        deadline = time.monotonic() + timeout
        while run(["ip", "-n", host.netns, "link", "show", "br-phy"], check=False).returncode:
            if time.monotonic() > deadline:
                raise LabError(f"{host.name}: ovs-vswitchd made no br-phy device within "
                               f"{timeout:g}s")
            time.sleep(0.05)
        run(["ip", "-n", host.netns, "-batch", "-"],
            input=f"addr replace {host.tunnel_ip}/{UNDERLAY_PREFIXLEN} dev br-phy\n"
                  f"link set br-phy up\n")

    def _seed_tunnel_neighbours(self) -> None:
        """Tell each userspace datapath the underlay MAC of every peer.

        Without it OVS drops the first packet to each peer while it ARPs for the tunnel
        endpoint (about 1 s of loss per peer): a trait of userspace tunnelling, not of what
        runs on top, and a source of flaky first pings. A kernel datapath ARPs by itself.
        The seeds age out like learned entries (15 minutes unused); OVS then learns the
        peer again from its ARP reply, which only br-phy sends (see NIC_ARP_IGNORE).
        """
        if not self.netdev:
            return
        # The underlay switch learns MACs only from traffic; teach it now, or the first
        # tunnel packets are flooded to every host (confusing captures).
        fdb = "".join(f"fdb add {self._phy_mac[h.name]} dev {h.name} master static\n"
                      for h in self.hosts)
        run(["bridge", "-n", self.ul_ns, "-batch", "-"], input=fdb)
        for h in self.hosts:
            ovs = self.ovs(h)
            for peer in self.hosts:
                if peer is not h:
                    ovs.appctl("tnl/neigh/set", "br-phy", peer.tunnel_ip,
                               self._phy_mac[peer.name])

    def _wait_tunnel_route(self, host: Host, timeout: float = 10) -> None:
        want = f"198.18.0.0/{UNDERLAY_PREFIXLEN} dev {self.underlay_dev}"
        deadline = time.monotonic() + timeout
        while True:
            routes = self.ovs(host).routes()
            if want in routes:
                return
            if time.monotonic() > deadline:
                raise LabError(f"{host.name}: OVS has no tunnel route '{want}' after "
                               f"{timeout:g}s; ovs/route/show says:\n{routes}")
            time.sleep(0.05)
