"""The lab: N simulated hosts (namespaces, each with its own Open vSwitch), an underlay, a
management network with a control namespace, and containers. See docs/lab.md."""

from __future__ import annotations

import atexit
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lab import cleanup, procs
from lab.capture import Capture
from lab.command import CommandError, LabError, environ, run
from lab.containers import Container, DockerContainer, NetnsContainer
from lab.naming import (
    API_PORT,
    CONTAINER_NAME_RE,
    CONTROL_IP,
    INNER_MTU,
    MAX_HOSTS,
    MGMT_PREFIXLEN,
    NETNS_DIR,
    OPENFLOW_PORT,
    PREFIX_RE,
    RUN_ROOT,
    TUNNEL_TYPES,
    UNDERLAY_MTU,
    UNDERLAY_PREFIXLEN,
    Host,
    lab_dir,
    new_prefix,
    random_mac,
)
from lab.ovs import (
    OvsClient,
    create_database,
    kernel_datapath_available,
    ovs_env,
    ovs_vswitchd_argv,
    ovsdb_server_argv,
    wait_for_pidfile_ctl,
    wait_for_unix_socket,
)
from lab.procs import LabProcess

REPO_ROOT = Path(__file__).resolve().parents[1]
PROCESS_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
REQUIRED_TOOLS = ("ip", "bridge", "nsenter", "ovsdb-tool", "ovsdb-server", "ovs-vswitchd",
                  "ovs-vsctl", "ovs-ofctl", "ovs-appctl", "tcpdump", "ethtool")

Target = Host | Container | str


def venv_bin() -> Path:
    """The virtualenv whose console scripts (osken-manager, loris, loris-hostagent) the lab
    launches: $LORIS_VENV, else the repository's .venv, else the running interpreter's."""
    for candidate in (os.environ.get("LORIS_VENV"), REPO_ROOT / ".venv", sys.prefix):
        if candidate and (Path(candidate) / "bin").is_dir():
            return Path(candidate) / "bin"
    return Path(sys.prefix) / "bin"


_live: list[Lab] = []
_live_lock = threading.Lock()


def live_labs() -> list[Lab]:
    """Labs that are up in this process (what the pytest failure report describes)."""
    with _live_lock:
        return list(_live)


@atexit.register
def _down_at_exit() -> None:
    for lab in live_labs():
        if lab.owner_pid == os.getpid():
            try:
                lab.down()
            except Exception as exc:  # at exit, report and go on with the next lab
                print(f"loris-lab: tearing down {lab.prefix} failed: {exc}", file=sys.stderr)


class Lab:
    """A lab of simulated hosts. Use as a context manager, or call up() and down().

    >>> with Lab(hosts=3, tunnel="vxlan") as lab:
    ...     lab.plain_mesh()
    """

    def __init__(self, hosts: int = 3, tunnel: str = "vxlan", docker: bool = True,
                 prefix: str | None = None) -> None:
        if not isinstance(hosts, int) or not 1 <= hosts <= MAX_HOSTS:
            raise ValueError(f"hosts={hosts!r}: give a number of hosts from 1 to {MAX_HOSTS}")
        if tunnel not in TUNNEL_TYPES:
            raise ValueError(f"tunnel={tunnel!r}: use one of {', '.join(TUNNEL_TYPES)}")
        if prefix is not None and not PREFIX_RE.match(prefix):
            raise ValueError(f"prefix={prefix!r}: use lrs + 6 hex digits, or leave it out")
        self.prefix = prefix or new_prefix()
        self.tunnel = tunnel
        self.docker = docker
        self.hosts = [Host(i, self.prefix) for i in range(1, hosts + 1)]
        self.netdev = not kernel_datapath_available()
        self.datapath_type = "netdev" if self.netdev else "system"
        self.dir = lab_dir(self.prefix)
        self.ctl_ns = f"{self.prefix}-ctl"
        self.ul_ns = f"{self.prefix}-ul"
        self.inner_mtu = INNER_MTU[tunnel]
        self.containers: dict[str, Container] = {}
        self.processes: dict[str, LabProcess] = {}
        self.owner_pid: int | None = None
        self.state = "new"
        self._ovs = {h.name: OvsClient(h) for h in self.hosts}
        self._docker_client = None
        self._counter = 0
        self._lock = threading.Lock()
        self.up_seconds: float | None = None
        self._phy_mac: dict[str, str] = {}
        self.tls = False              # the controller serves REST and OpenFlow over TLS

    # ----- life cycle -------------------------------------------------------------------

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> Lab:
        """Build the lab. On failure everything built so far is removed again, and the
        error carries the lab's diagnostics."""
        if self.state != "new":
            raise LabError(f"lab {self.prefix} is {self.state}; make a new Lab")
        self._preflight()
        started = time.monotonic()
        self.owner_pid = os.getpid()
        try:
            self._claim()
            with _live_lock:
                _live.append(self)
            self.state = "starting"
            self._namespaces()
            self._wire()
            with ThreadPoolExecutor(max_workers=min(8, len(self.hosts))) as pool:
                list(pool.map(self._start_host, self.hosts))
            self._seed_tunnel_neighbours()
            if self.docker:
                from lab.image import ensure_image

                ensure_image(self.docker_client)
            self.state = "up"
            self._write_info()
        except BaseException as exc:
            if self.state == "new":
                raise  # nothing of ours exists (e.g. the prefix was taken): touch nothing
            report = ""
            try:
                report = self.diagnostics()
            except Exception as diag_exc:
                report = f"(diagnostics failed: {diag_exc})"
            try:
                self.down(check=False)
            except Exception as down_exc:
                report += f"\n(teardown after the failure failed too: {down_exc})"
            if isinstance(exc, Exception):
                exc.add_note(f"lab {self.prefix} failed to come up; its state then:\n{report}")
            raise
        self.up_seconds = time.monotonic() - started
        return self

    def down(self, check: bool = True) -> cleanup.CleanupReport | None:
        """End the lab's processes and remove its containers, namespaces and run directory.

        Idempotent. Raises LabError if something could not be removed (unless not check).
        """
        if self.state in ("new", "down"):
            return None
        own = [p.pid for p in self.processes.values() if p.alive]
        procs.terminate(own)
        for p in self.processes.values():
            p.popen.poll()
        report = cleanup.cleanup_prefix(self.prefix, self._docker_client)
        self.state = "down"
        with _live_lock:
            if self in _live:
                _live.remove(self)
        if check and (report.survivors or report.errors):
            raise LabError(f"lab {self.prefix} teardown incomplete: {report.summary()}")
        return report

    def detach(self) -> None:
        """Leave the lab up when this process exits (`loris-lab up --detach`); it becomes a
        leftover that `loris-lab down <prefix>` or `--all` removes."""
        self.owner_pid = None
        self._write_info()
        with _live_lock:
            if self in _live:
                _live.remove(self)

    cleanup_all = staticmethod(cleanup.cleanup_all)

    def _preflight(self) -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (it creates namespaces and runs Open vSwitch); "
                           "run as root")
        missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
        if missing:
            raise LabError(f"missing tools {missing}; run ./dev setup")

    def _claim(self) -> None:
        """Create the run directory atomically, with lab.json already inside, so that
        `loris-lab down --all` never sees a half-made lab without its owner."""
        RUN_ROOT.mkdir(parents=True, exist_ok=True)
        if self.dir.exists() or any(
                n.startswith(self.prefix + "-") for n in _listdir(NETNS_DIR)):
            raise LabError(f"lab prefix {self.prefix} is already in use; pick another")
        tmp = RUN_ROOT / f".{self.prefix}.tmp"
        tmp.mkdir()
        (tmp / "lab.json").write_text(json.dumps(self._info()))
        os.rename(tmp, self.dir)

    def _info(self) -> dict[str, Any]:
        owner = None
        if self.owner_pid is not None:
            owner = {"pid": self.owner_pid, "starttime": procs.starttime(self.owner_pid),
                     "argv": sys.argv[:4]}
        return {"prefix": self.prefix, "hosts": len(self.hosts), "tunnel": self.tunnel,
                "docker": self.docker, "datapath_type": self.datapath_type,
                "state": self.state, "owner": owner, "created": time.time()}

    def _write_info(self) -> None:
        if self.dir.exists():
            tmp = self.dir / "lab.json.tmp"
            tmp.write_text(json.dumps(self._info()))
            tmp.replace(self.dir / "lab.json")

    # ----- building ---------------------------------------------------------------------

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
        vs = self._start_vswitchd(h)
        if self.netdev:
            self._address_br_phy(h)
            for peer in self.hosts:
                if peer is not h:
                    self.ovs(h).appctl("tnl/neigh/set", "br-phy", peer.tunnel_ip,
                                       self._phy_mac[peer.name])
        self._wait_tunnel_route(h)
        return vs

    def _seed_tunnel_neighbours(self) -> None:
        """Tell each userspace datapath the underlay MAC of every peer.

        Without it OVS drops the first packet to each peer while it ARPs for the tunnel
        endpoint (about 1 s of loss per peer): a trait of userspace tunnelling, not of what
        runs on top, and a source of flaky first pings. A kernel datapath ARPs by itself.
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

    @property
    def underlay_dev(self) -> str:
        """The device that owns a host's tunnel endpoint IP."""
        return "br-phy" if self.netdev else "eth0"

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

    # ----- access -----------------------------------------------------------------------

    def host(self, which: Host | str | int) -> Host:
        """A host by object, name ("h2") or index (2)."""
        if isinstance(which, Host) and which in self.hosts:
            return which
        if isinstance(which, int) and 1 <= which <= len(self.hosts):
            return self.hosts[which - 1]
        for h in self.hosts:
            if which == h.name:
                return h
        names = ", ".join(h.name for h in self.hosts)
        raise LabError(f"lab {self.prefix} has no host {which!r}; its hosts are {names}")

    def ovs(self, host: Host | str | int) -> OvsClient:
        return self._ovs[self.host(host).name]

    @property
    def docker_client(self):
        if self._docker_client is None:
            if not self.docker:
                raise LabError(f"lab {self.prefix} was made with docker=False; use "
                               "kind='netns' containers or Lab(docker=True)")
            client = cleanup.docker_client()
            if client is None:
                raise LabError("cannot reach the Docker engine; start it (./dev setup) or "
                               "use Lab(docker=False)")
            self._docker_client = client
        return self._docker_client

    def enter(self, target: Target | None) -> list[str]:
        """The argv prefix that runs a command inside `target`'s network namespace.

        target: a Host or host name ("h1"), "ctl"/"control", "ul"/"underlay", a Container
        (its namespace, with the host's tools), a namespace name, a namespace path
        ("/proc/<pid>/ns/net"), or None for the root namespace.
        """
        if target is None:
            return []
        if isinstance(target, Container):
            return ["nsenter", f"--net={target.netns_path}"]
        return ["ip", "netns", "exec", self.netns_name(target)] if not (
            isinstance(target, str) and target.startswith("/")) else [
            "nsenter", f"--net={target}"]

    def netns_name(self, target: Host | str) -> str:
        if isinstance(target, Host):
            return self.host(target).netns
        if target in ("ctl", "control"):
            return self.ctl_ns
        if target in ("ul", "underlay"):
            return self.ul_ns
        if any(target == h.name for h in self.hosts):
            return self.host(target).netns
        if (NETNS_DIR / target).exists():
            return target
        raise LabError(f"no host or namespace {target!r} in lab {self.prefix}; use a host "
                       f"name (h1..h{len(self.hosts)}), 'ctl', 'ul' or a namespace name")

    def netns_path(self, target: Target) -> str:
        if isinstance(target, Container):
            return target.netns_path
        if isinstance(target, str) and target.startswith("/"):
            return target
        return str(NETNS_DIR / self.netns_name(target))

    def run(self, target: Target | None, argv: Sequence[str], check: bool = True,
            timeout: float | None = 30, input: bytes | str | None = None,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run `argv` (the host's tools) inside `target`'s network namespace."""
        return run(self.enter(target) + [str(a) for a in argv], check=check, timeout=timeout,
                   input=input, env=environ(env) if env else None)

    def start_process(self, name: str, argv: Sequence[str], netns: Target | None = None,
                      env: Mapping[str, str] | None = None,
                      cwd: str | Path | None = None) -> LabProcess:
        """Start a long-running process (log: <lab dir>/logs/<name>.log). A name can be
        reused once its previous process has ended (the log is appended to)."""
        if not PROCESS_NAME_RE.match(name):
            raise LabError(f"process name {name!r}: use letters, digits, '_', '.', '-'")
        with self._lock:
            old = self.processes.get(name)
            if old is not None and old.alive:
                raise LabError(f"process {name} (pid {old.pid}) is still running in lab "
                               f"{self.prefix}; stop it first or use another name")
            full_env = environ({"PYTHONUNBUFFERED": "1", **(env or {})})
            proc = procs.spawn(name, self.enter(netns) + [str(a) for a in argv],
                               labdir=self.dir, env=full_env, cwd=cwd)
            self.processes[name] = proc
        return proc

    # ----- containers -------------------------------------------------------------------

    def add_container(self, host: Host | str | int, name: str,
                      kind: str = "docker") -> Container:
        """A container on `host`: a Docker container `<prefix>-<name>` (network none) or a
        bare namespace `<prefix>-c-<name>` (kind="netns")."""
        h = self.host(host)
        if kind not in ("docker", "netns"):
            raise LabError(f"container kind {kind!r}: use 'docker' or 'netns'")
        if not CONTAINER_NAME_RE.match(name):
            raise LabError(f"container name {name!r}: use 1-31 of a-z 0-9 _ . - "
                           "(starting with a letter or digit)")
        if name in self.containers:
            raise LabError(f"lab {self.prefix} already has a container {name!r}")
        self._require_up()
        if kind == "docker":
            container: Container = DockerContainer(self.docker_client, self.prefix, h, name)
        else:
            container = NetnsContainer(self.prefix, h, name)
        self.containers[name] = container
        try:
            container.start(self.prefix)
        except Exception:
            del self.containers[name]
            container.remove()
            raise
        return container

    def container(self, name: str) -> Container:
        try:
            return self.containers[name]
        except KeyError:
            raise LabError(f"lab {self.prefix} has no container {name!r}; it has "
                           f"{sorted(self.containers)}") from None

    def remove_container(self, container: Container | str) -> None:
        c = self.container(container) if isinstance(container, str) else container
        if isinstance(c, NetnsContainer):
            self._end_processes_in(c.netns_path)
        c.remove()
        self.containers.pop(c.short, None)

    def _end_processes_in(self, netns_path: str) -> None:
        try:
            ino = os.stat(netns_path).st_ino
        except OSError:
            return
        me = os.getpid()
        procs.terminate(p for p in procs.all_pids()
                        if p != me and procs.netns_inode(p) == ino)

    # ----- baseline network ------------------------------------------------------------

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
        with self._lock:
            self._counter += 1
            port = f"pv{self._counter}"
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

    # ----- tools ------------------------------------------------------------------------

    def capture(self, target: Target, iface: str, bpf_filter: str = "") -> Capture:
        """Start tcpdump on `iface` inside `target`; returns once tcpdump is listening."""
        self._require_up()
        with self._lock:
            self._counter += 1
            n = self._counter
        where = target.short if isinstance(target, Container) else (
            target.name if isinstance(target, Host) else str(target).strip("/").replace("/", "_"))
        pcap = self.dir / "captures" / f"{n:03d}-{where}-{iface}.pcap"
        pcap.parent.mkdir(parents=True, exist_ok=True)
        # --immediate-mode: otherwise packets wait in the capture ring for up to a second and
        # are lost when the capture is stopped right after the traffic.
        argv = ["tcpdump", "-i", iface, "-nn", "-U", "--immediate-mode", "-Z", "root",
                "-w", str(pcap)]
        if bpf_filter:
            argv.append(bpf_filter)
        proc = self.start_process(f"capture-{n:03d}", argv, netns=target)
        cap = Capture(proc, pcap, f"{where}:{iface}")
        cap.wait_ready()
        return cap

    def api(self, method: str, path: str, body: Any = None,
            timeout: float = 30, token: str | bool = True) -> tuple[int, Any]:
        """HTTP to the controller (198.19.0.1:8780) from inside the control namespace, as the
        operator (`token=True`: the controller's operator token, once it made one), without
        credentials (`token=False`) or with the given token; over TLS when `lab.tls`.

        Returns (status, parsed JSON body); a body that is not JSON comes back as text,
        an empty body as None."""
        conn = _NetnsHTTPConnection(self.netns_path("ctl"), CONTROL_IP, API_PORT, timeout,
                                    self.pki_dir / "ca.pem" if self.tls else None)
        headers = {"Accept": "application/json"}
        if token is True:
            token = self.operator_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method.upper(), path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except OSError as exc:
            raise LabError(f"{method} {path} to the controller at {CONTROL_IP}:{API_PORT} "
                           f"failed: {exc}") from exc
        finally:
            conn.close()
        text = raw.decode(errors="replace")
        if not text.strip():
            return resp.status, None
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text

    def wait_api(self, timeout: float = 30, process: LabProcess | None = None) -> None:
        """Wait until the controller accepts TCP connections on 198.19.0.1:8780."""
        deadline = time.monotonic() + timeout
        ns = self.netns_path("ctl")
        while True:
            if process is not None and not process.alive:
                raise LabError(f"controller exited with {process.returncode} before serving "
                               f"its API; log tail:\n{process.log_tail(40)}")
            sock = procs.socket_in_netns(ns)
            try:
                sock.settimeout(1)
                sock.connect((CONTROL_IP, API_PORT))
                return
            except OSError:
                pass
            finally:
                sock.close()
            if time.monotonic() > deadline:
                tail = process.log_tail(40) if process else ""
                raise LabError(f"controller API {CONTROL_IP}:{API_PORT} not reachable after "
                               f"{timeout:g}s; log tail:\n{tail}")
            time.sleep(0.1)

    # ----- Loris processes ---------------------------------------------------------------

    @property
    def controller_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{CONTROL_IP}:{API_PORT}"

    # Credentials (docs/security.md): the controller makes them in <lab dir>/credentials on
    # its first start; the lab's helpers pass them on, so tests need not think about them.
    @property
    def credentials_dir(self) -> Path:
        return self.dir / "credentials"

    @property
    def operator_token_file(self) -> Path:
        return self.credentials_dir / "operator.token"

    @property
    def pki_dir(self) -> Path:
        """CA, controller and host certificates (`loris pki init`) of a TLS lab."""
        return self.dir / "pki"

    def operator_token(self) -> str | None:
        try:
            return self.operator_token_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    def agent_token_file(self, host: Host | str | int) -> Path:
        """<lab dir>/tokens/<host>.token (0600): the host's agent token, issued by the
        controller's own admin command (works before the controller first starts too)."""
        h = self.host(host)
        path = self.dir / "tokens" / f"{h.name}.token"
        if not path.exists():
            r = run([venv_bin() / "python", "-m", "controller.auth", "token", h.name,
                     "--credentials", self.credentials_dir], cwd=REPO_ROOT)
            path.parent.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(r.stdout)
        return path

    def _ensure_pki(self) -> None:
        if not (self.pki_dir / "ca.pem").exists():
            run([venv_bin() / "loris", "pki", "init", self.pki_dir, "--controller-ip",
                 CONTROL_IP, *[a for h in self.hosts for a in ("--host", h.name)]])

    def start_controller(self, extra_env: Mapping[str, str] | None = None, wait: bool = True,
                         timeout: float = 30, tls: bool | None = None) -> LabProcess:
        """osken-manager controller/loris_app.py in the control namespace (cwd: repo root),
        state in <lab dir>/loris.db; waits for the REST API unless wait=False. With
        `tls=True` REST and OpenFlow run over TLS only, with the certificates of
        `lab.pki_dir` (made on first use); None keeps the lab's mode (a restart)."""
        if tls is not None:
            self.tls = tls
        env = {"LORIS_DB": str(self.dir / "loris.db"),
               "LORIS_API_LISTEN": f"0.0.0.0:{API_PORT}"}
        argv = [venv_bin() / "osken-manager", REPO_ROOT / "controller" / "loris_app.py"]
        if self.tls:
            self._ensure_pki()
            pki = self.pki_dir
            env.update(LORIS_API_CERT=str(pki / "controller.pem"),
                       LORIS_API_KEY=str(pki / "controller.key"))
            argv += ["--ofp-ssl-listen-port", str(OPENFLOW_PORT),
                     "--ctl-privkey", pki / "controller.key", "--ctl-cert", pki / "controller.pem",
                     "--ca-certs", pki / "ca.pem"]
        else:
            argv += ["--ofp-tcp-listen-port", str(OPENFLOW_PORT)]
        env.update(extra_env or {})
        proc = self.start_process("controller", argv, netns="ctl", env=env, cwd=REPO_ROOT)
        if wait:
            self.wait_api(timeout, proc)
        return proc

    def start_agent(self, host: Host | str | int, extra_args: Sequence[str] = (),
                    extra_env: Mapping[str, str] | None = None) -> LabProcess:
        """loris-hostagent in the host's namespace, as process `agent-<host>`."""
        h = self.host(host)
        argv = [venv_bin() / "loris-hostagent", "--controller", self.controller_url,
                "--host-id", h.name, "--tunnel-ip", h.tunnel_ip, "--tunnel-type", self.tunnel,
                "--ovsdb", h.ovsdb, "--ovs-rundir", h.rundir,
                "--token-file", self.agent_token_file(h)]
        if self.tls:
            argv += ["--ca-cert", self.pki_dir / "ca.pem",
                     "--switch-cert", self.pki_dir / "hosts" / f"{h.name}.pem",
                     "--switch-key", self.pki_dir / "hosts" / f"{h.name}.key"]
        argv += extra_args
        return self.start_process(f"agent-{h.name}", argv, netns=h, env=extra_env)

    def loris_env(self, host: Host | str | int) -> dict[str, str]:
        """What a user's shell on `host` would export for the `loris` CLI."""
        h = self.host(host)
        env = {"LORIS_CONTROLLER": self.controller_url, "LORIS_HOST": h.name,
               "LORIS_OVSDB": h.ovsdb, "LORIS_OVS_RUNDIR": str(h.rundir)}
        if self.operator_token_file.exists():     # once the controller has made it
            env["LORIS_TOKEN_FILE"] = str(self.operator_token_file)
        if self.tls:
            env["LORIS_CA_CERT"] = str(self.pki_dir / "ca.pem")
        return env

    def loris(self, host: Host | str | int, *args: str, check: bool = False,
              timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """The `loris` CLI in the host's namespace, configured through the environment."""
        h = self.host(host)
        return self.run(h, [venv_bin() / "loris", *args], check=check, timeout=timeout,
                        input=input, env=self.loris_env(h))

    # ----- reporting --------------------------------------------------------------------

    def diagnostics(self, tail: int = 60) -> str:
        from lab.report import lab_report

        return lab_report(self, tail)

    def describe(self) -> str:
        lines = [f"lab {self.prefix}: {len(self.hosts)} hosts, {self.tunnel} tunnels, "
                 f"{self.datapath_type} datapath, run dir {self.dir}"]
        for h in self.hosts:
            lines.append(f"  {h.name}: ip netns exec {h.netns} bash   (tunnel {h.tunnel_ip} on "
                         f"{self.underlay_dev}, mgmt {h.mgmt_ip})")
            lines.append(f"      OVS_RUNDIR={h.rundir} ovs-vsctl show")
        lines.append(f"  control: ip netns exec {self.ctl_ns} bash   ({CONTROL_IP}; controller "
                     f"API {self.controller_url})")
        lines.append(f"  underlay: ip netns exec {self.ul_ns} bash   (bridge br0)")
        for c in self.containers.values():
            lines.append(f"  container {c.name} ({c.kind}) on {c.host.name}")
        lines.append(f"  remove: loris-lab down {self.prefix}")
        return "\n".join(lines)

    def _require_up(self) -> None:
        if self.state not in ("up", "starting"):
            raise LabError(f"lab {self.prefix} is {self.state}; call up() first")

    def __repr__(self) -> str:
        return f"<Lab {self.prefix} {len(self.hosts)} hosts {self.tunnel} {self.state}>"


class _NetnsHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection whose socket lives in another network namespace; TLS (verified
    with `ca_file`) when one is given."""

    def __init__(self, netns_path: str, host: str, port: int, timeout: float,
                 ca_file: Path | None = None) -> None:
        super().__init__(host, port, timeout=timeout)
        self._netns_path = netns_path
        self._tls = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None

    def connect(self) -> None:
        sock = procs.socket_in_netns(self._netns_path)
        sock.settimeout(self.timeout)
        try:
            sock.connect((self.host, self.port))
        except OSError:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls is not None:
            sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        self.sock = sock


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


__all__ = ["Lab", "LabError", "CommandError", "live_labs", "venv_bin"]
