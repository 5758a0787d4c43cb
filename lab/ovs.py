"""One Open vSwitch per simulated host: its own database, daemons, sockets and logs."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from lab.command import LabError, environ, run
from lab.naming import Host

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")


def kernel_datapath_available() -> bool:
    return Path("/sys/module/openvswitch").exists()


def ovs_env(host: Host) -> dict[str, str]:
    """The environment under which OVS tools find this host's daemons and sockets."""
    rundir = str(host.rundir)
    return environ({"OVS_RUNDIR": rundir, "OVS_DBDIR": rundir, "OVS_LOGDIR": rundir})


class OvsClient:
    """ovs-vsctl / ovs-ofctl / ovs-appctl against one host's daemons (from any namespace:
    they speak over Unix sockets in the host's run directory)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.env = ovs_env(host)

    def vsctl(self, *args: str, check: bool = True, timeout: float = 20) -> str:
        argv = ["ovs-vsctl", f"--db={self.host.ovsdb}", f"--timeout={int(timeout)}", *args]
        return run(argv, check=check, timeout=timeout + 5, env=self.env).stdout

    def ofctl(self, *args: str, check: bool = True, timeout: float = 20) -> str:
        """ovs-ofctl; a bridge name resolves to `unix:<rundir>/<bridge>.mgmt` via OVS_RUNDIR.

        Speaks OpenFlow 1.3 unless told otherwise, because Loris's bridges allow only 1.3.
        """
        version = [] if any(a.startswith(("-O", "--protocols")) for a in args) else [
            "-O", "OpenFlow13"]
        argv = ["ovs-ofctl", f"--timeout={int(timeout)}", *version, *args]
        return run(argv, check=check, timeout=timeout + 5, env=self.env).stdout

    def appctl(self, *args: str, target: str = "ovs-vswitchd", check: bool = True,
               timeout: float = 20) -> str:
        argv = ["ovs-appctl", f"--timeout={int(timeout)}", "-t", target, *args]
        return run(argv, check=check, timeout=timeout + 5, env=self.env).stdout

    def bridges(self, timeout: float = 20) -> list[str]:
        return self.vsctl("list-br", timeout=timeout).split()

    def show(self, timeout: float = 20) -> str:
        return self.vsctl("show", timeout=timeout)

    def dump_flows(self, bridge: str, stats: bool = True) -> list[str]:
        """The flows of `bridge`, one per line, without the reply header."""
        args = ["dump-flows", bridge] + ([] if stats else ["--no-stats"])
        lines = self.ofctl(*args).splitlines()
        return [line.strip() for line in lines if line.strip() and not line.startswith("OFPST_")]

    def routes(self, timeout: float = 20) -> str:
        return self.appctl("ovs/route/show", timeout=timeout)

    def __repr__(self) -> str:
        return f"<OvsClient {self.host.name} {self.host.rundir}>"


def create_database(host: Host) -> None:
    host.rundir.mkdir(parents=True, exist_ok=True)
    if not SCHEMA.exists():
        raise LabError(f"OVS schema {SCHEMA} is missing; install openvswitch-common")
    run(["ovsdb-tool", "create", host.rundir / "conf.db", SCHEMA])


def ovsdb_server_argv(host: Host) -> list[str]:
    d = host.rundir
    return ["ovsdb-server", f"{d}/conf.db", f"--remote=punix:{d}/db.sock",
            "--remote=db:Open_vSwitch,Open_vSwitch,manager_options",
            f"--pidfile={d}/ovsdb-server.pid", f"--log-file={d}/ovsdb-server.log",
            "-vconsole:off", "--no-chdir"]


def ovs_vswitchd_argv(host: Host, netdev: bool) -> list[str]:
    d = host.rundir
    argv = ["ovs-vswitchd", f"unix:{d}/db.sock", f"--pidfile={d}/ovs-vswitchd.pid",
            f"--log-file={d}/ovs-vswitchd.log", "-vconsole:off", "--no-chdir"]
    if netdev:
        argv.append("--disable-system")  # no kernel module: never try system datapaths
    return argv


def wait_for_unix_socket(path: Path, alive, what: str, timeout: float = 15) -> None:
    """Wait until `path` accepts connections; `alive()` False means the daemon died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise LabError(f"{what} exited during start-up")
        if path.exists():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                try:
                    s.connect(str(path))
                    return
                except OSError:
                    pass
        time.sleep(0.02)
    raise LabError(f"{what} did not open {path} within {timeout:g}s")


def wait_for_pidfile_ctl(host: Host, daemon: str, pid: int, alive, timeout: float = 15) -> None:
    """Wait for the daemon's control socket `<rundir>/<daemon>.<pid>.ctl` (what appctl uses)."""
    wait_for_unix_socket(host.rundir / f"{daemon}.{pid}.ctl", alive, f"{daemon} of {host.name}",
                         timeout)
