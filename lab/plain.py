"""The baseline network without Loris: a plain OVS bridge per host (NORMAL action) in a full
mesh of tunnels, and containers wired into it (part of `Lab`, see lab/core.py)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from lab.command import LabError, run
from lab.containers import Container
from lab.naming import Host


class PlainOvs:
    """plain_mesh() and attach_plain(): what tests and benchmarks compare Loris with."""

    hosts: list[Host]
    tunnel: str
    datapath_type: str
    inner_mtu: int

    def plain_mesh(self, bridge: str = "br-int") -> None:
        """On every host a plain bridge (standalone, NORMAL action) with a tunnel port to
        every other host: the baseline for tests and benchmarks. Tunnel ports are
        `protected`, so NORMAL never forwards from one tunnel to another (split horizon:
        a full mesh without loops)."""
        self._require_up()
        args_per_host = []
        for h in self.hosts:
            args = ["--", "--may-exist", "add-br", bridge, "--", "set", "bridge", bridge,
                    f"datapath_type={self.datapath_type}", "fail_mode=standalone"]
            for peer in self.hosts:
                if peer is h:
                    continue
                port = f"tun-{peer.name}"
                args += ["--", "--may-exist", "add-port", bridge, port,
                         "--", "set", "interface", port, f"type={self.tunnel}",
                         f"options:remote_ip={peer.tunnel_ip}", "options:key=1",
                         "--", "set", "port", port, "protected=true"]
            args_per_host.append((h, args))
        with ThreadPoolExecutor(max_workers=min(8, len(self.hosts))) as pool:
            list(pool.map(lambda ha: self.ovs(ha[0]).vsctl(*ha[1]), args_per_host))

    def attach_plain(self, container: Container | str, ip_cidr: str,
                     bridge: str = "br-int", ifname: str = "eth1") -> str:
        """Wire `container` into the plain bridge of its host: a veth `<ifname>` in the
        container with `ip_cidr`, the tunnel's inner MTU and TX checksum offload off.
        Returns the host-side port name."""
        c = self.container(container) if isinstance(container, str) else container
        h = c.host
        if bridge not in self.ovs(h).bridges():
            raise LabError(f"{h.name} has no bridge {bridge}; call lab.plain_mesh() first")
        inside = ["nsenter", f"--net={c.netns_path}"]
        if run(inside + ["ip", "link", "show", ifname], check=False).returncode == 0:
            raise LabError(f"container {c.name} already has an interface {ifname}; "
                           "use another ifname")
        port = f"pv{self._next_number()}"
        run(["ip", "link", "add", port, "netns", h.netns, "type", "veth", "peer", "name", ifname,
             "netns", c.netns_ref])
        try:
            run(["ip", "-n", h.netns, "link", "set", port, "mtu", str(self.inner_mtu), "up"])
            self.ovs(h).vsctl("add-port", bridge, port)
            run(inside + ["ip", "-batch", "-"],
                input=f"link set {ifname} mtu {self.inner_mtu} up\n"
                      f"addr add {ip_cidr} dev {ifname}\n")
            # Without this the kernel leaves TCP checksums to "hardware" that OVS's userspace
            # datapath never computes before encapsulating: TCP stalls.
            run(inside + ["ethtool", "-K", ifname, "tx", "off"])
        except Exception:
            # Leave nothing half-made: deleting one end of the veth removes both.
            self.ovs(h).vsctl("--if-exists", "del-port", bridge, port, check=False)
            run(["ip", "-n", h.netns, "link", "del", port], check=False)
            raise
        return port
