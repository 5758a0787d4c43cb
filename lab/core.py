"""The lab: N simulated hosts (namespaces, each with its own Open vSwitch), an underlay, a
management network with a control namespace, and containers. See docs/lab.md."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lab import cleanup, procs
from lab.capture import Captures
from lab.command import CommandError, LabError
from lab.containers import Container, LabContainers
from lab.etcd import EtcdLab
from lab.hostdocker import HostDockerd, HostDockers
from lab.hostnet import HostNetworks
from lab.launchers import REPO_ROOT, LorisLaunchers, venv_bin
from lab.naming import (
    CONTROL_IP,
    INNER_MTU,
    MAX_HOSTS,
    NETNS_DIR,
    PREFIX_RE,
    RUN_ROOT,
    TUNNEL_TYPES,
    Host,
    lab_dir,
    new_prefix,
)
from lab.ovs import OvsClient, kernel_datapath_available
from lab.plain import PlainOvs
from lab.procs import LabProcess
from lab.targets import Targets

REQUIRED_TOOLS = ("ip", "bridge", "nsenter", "ovsdb-tool", "ovsdb-server", "ovs-vswitchd",
                  "ovs-vsctl", "ovs-ofctl", "ovs-appctl", "tcpdump", "ethtool")

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


class Lab(Targets, HostNetworks, LabContainers, HostDockers, Captures, PlainOvs,
          LorisLaunchers, EtcdLab):
    """A lab of simulated hosts. Use as a context manager, or call up() and down().

    This class holds the lab's state and its life cycle; its parts, one concern each:
    Targets (hosts, namespaces, commands, processes; lab/targets.py), HostNetworks
    (namespaces, underlay, management, per-host OVS, br-phy; lab/hostnet.py), LabContainers
    (lab/containers.py), HostDockers (one dockerd per host, opt-in; lab/hostdocker.py),
    Captures (lab/capture.py), PlainOvs (the baseline without Loris;
    lab/plain.py) and LorisLaunchers (controller, agents, CLI, REST; lab/launchers.py).

    >>> with Lab(hosts=3, tunnel="vxlan") as lab:
    ...     lab.plain_mesh()
    """

    def __init__(self, hosts: int = 3, tunnel: str = "vxlan", docker: bool = True,
                 prefix: str | None = None, host_dockerd: bool = False) -> None:
        if not isinstance(hosts, int) or not 1 <= hosts <= MAX_HOSTS:
            raise ValueError(f"hosts={hosts!r}: give a number of hosts from 1 to {MAX_HOSTS}")
        if tunnel not in TUNNEL_TYPES:
            raise ValueError(f"tunnel={tunnel!r}: use one of {', '.join(TUNNEL_TYPES)}")
        if prefix is not None and not PREFIX_RE.match(prefix):
            raise ValueError(f"prefix={prefix!r}: use lrs + 6 hex digits, or leave it out")
        self.prefix = prefix or new_prefix()
        self.tunnel = tunnel
        self.docker = docker or host_dockerd
        # one Docker engine per host, in its namespace (lab/hostdocker.py); the shared
        # engine (`docker`) stays for the lab's --network none containers
        self.host_dockerd = host_dockerd
        self._dockerds: dict[str, HostDockerd] = {}
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
            if self.host_dockerd:
                self._start_host_dockerds()
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
        self._end_host_containers()
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
                "docker": self.docker, "host_dockerd": self.host_dockerd,
                "datapath_type": self.datapath_type,
                "state": self.state, "owner": owner, "created": time.time()}

    def _write_info(self) -> None:
        if self.dir.exists():
            tmp = self.dir / "lab.json.tmp"
            tmp.write_text(json.dumps(self._info()))
            tmp.replace(self.dir / "lab.json")

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


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


__all__ = ["Lab", "LabError", "CommandError", "REPO_ROOT", "live_labs", "venv_bin"]
