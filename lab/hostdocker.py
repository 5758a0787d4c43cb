"""One Docker engine per simulated host (opt-in: `Lab(host_dockerd=True)`).

A Docker network plugin creates its veths in the network namespace of the dockerd that
calls it, and dockerd finds plugins at fixed paths (`/run/docker/plugins`,
`/etc/docker/plugins`). So each host gets its own dockerd, started inside the host's network
namespace and in a private mount namespace where the host's own directories are
bind-mounted over those paths (docs/lab.md, "One dockerd per host"):

    nsenter --net=/run/netns/<prefix>-h1 unshare -m --propagation private -- sh -c \
      'mount --bind <h1>/docker/plugins /run/docker/plugins &&
       mount --bind <h1>/docker/etc /etc/docker && exec dockerd ...'

(`ip netns exec` would remount /sys and hide the cgroup v1 hierarchy dockerd needs.) Each
dockerd has its own data root, exec root (and so its own managed containerd), API socket
`<h1>/docker/docker.sock` and cgroup parent `<prefix>-h1`, which is how an interrupted
lab's containers are found again (lab/cleanup.py). The test image is loaded into each.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from lab import procs
from lab.command import LabError, run
from lab.naming import IMAGE, Host
from lab.procs import LabProcess

START_TIMEOUT_S = 60.0
SYSTEM_PLUGIN_DIRS = ("/run/docker/plugins", "/etc/docker")
HOST_NICS = ("eth0", "mgmt0")          # a host's underlay and management links (hostnet.py)


class HostDockerd:
    """The Docker engine of one lab host: its paths, its CLI and SDK client."""

    def __init__(self, prefix: str, host: Host) -> None:
        self.host = host
        self.root = host.rundir / "docker"
        self.plugins_dir = self.root / "plugins"   # seen by this dockerd as /run/docker/plugins
        self.etc_dir = self.root / "etc"           # seen as /etc/docker (plugins/*.spec there)
        self.sock = self.root / "docker.sock"
        self.pidfile = self.root / "docker.pid"
        self.cgroup_parent = f"{prefix}-{host.name}"
        self._client = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"unix://{self.sock}"

    def plugin_socket(self, name: str = "loris") -> Path:
        """Where a plugin listens so that this dockerd finds it as `name`."""
        return self.plugins_dir / f"{name}.sock"

    def hold_plugin_socket(self) -> socket.socket:
        """The plugin's socket, bound and listening with no plugin behind it yet, as
        systemd's loris-docker.socket holds it before docker.service starts: dockerd's calls
        wait in its queue until the agent, handed the socket (lab.start_agent
        plugin_listener=), answers them."""
        self.prepare()
        path = self.plugin_socket()
        path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        sock.listen(64)
        return sock

    def argv(self) -> list[str]:
        config = self.root / "daemon.json"
        daemon = " ".join([
            "exec dockerd", f"--config-file {config}", f"-H {self.url}",
            f"--data-root {self.root / 'data'}", f"--exec-root {self.root / 'x'}",
            f"--pidfile {self.pidfile}", "--bridge=none", "--iptables=false",
            "--ip6tables=false", "--ip-masq=false", f"--cgroup-parent {self.cgroup_parent}"])
        binds = " && ".join(f"mount --bind {src} {dst}" for src, dst in
                            ((self.plugins_dir, SYSTEM_PLUGIN_DIRS[0]),
                             (self.etc_dir, SYSTEM_PLUGIN_DIRS[1])))
        return ["nsenter", f"--net={self.host.netns_path}", "unshare", "-m",
                "--propagation", "private", "--", "sh", "-c", f"{binds} && {daemon}"]

    def prepare(self) -> None:
        for d in (self.plugins_dir, self.etc_dir / "plugins", self.root / "data"):
            d.mkdir(parents=True, exist_ok=True)
        (self.root / "daemon.json").write_text("{}\n")   # /dev/null is refused by 20.10
        for d in SYSTEM_PLUGIN_DIRS:                        # mount points must exist
            os.makedirs(d, exist_ok=True)

    def cli(self, *args: str, check: bool = True, timeout: float | None = 120,
            input: bytes | str | None = None) -> subprocess.CompletedProcess[str]:
        """The `docker` CLI against this host's engine (as a user on that host would)."""
        return run(["docker", "-H", self.url, *map(str, args)], check=check, timeout=timeout,
                   input=input)

    @property
    def client(self):
        """A Docker SDK client of this host's engine."""
        with self._lock:
            if self._client is None:
                import docker

                self._client = docker.DockerClient(base_url=self.url, timeout=120)
            return self._client

    def answering(self) -> bool:
        try:
            return self.cli("version", "--format", "{{.Server.Version}}", check=False,
                            timeout=10).returncode == 0
        except LabError:          # no answer within the timeout: not (yet) serving
            return False

    def container_pids(self) -> list[int]:
        """Processes of this engine's containers (found by their cgroup parent)."""
        return cgroup_pids(self.cgroup_parent)


def cgroup_pids(name: str) -> list[int]:
    """Processes in a cgroup whose path has a component `name` (any v1 hierarchy)."""
    found = []
    for pid in procs.all_pids():
        try:
            text = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            continue
        if any(f"/{name}/" in line or line.endswith(f"/{name}") for line in text.splitlines()):
            found.append(pid)
    return found


def remove_cgroups(name: str) -> list[str]:
    """rmdir `/sys/fs/cgroup/*/<name>` and what is below (deepest first); returns what
    could not be removed."""
    left = []
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / name
        if not top.is_dir():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda t: -len(t[0])):
            try:
                os.rmdir(dirpath)
            except OSError:
                left.append(dirpath)
    return left


class HostDockers:
    """The lab part that runs one dockerd per host (part of `Lab`, see lab/core.py)."""

    prefix: str
    hosts: list[Host]
    host_dockerd: bool
    processes: dict[str, LabProcess]
    _dockerds: dict[str, HostDockerd]

    def dockerd(self, host: Host | str | int) -> HostDockerd:
        """The Docker engine of `host` (a lab made with host_dockerd=True)."""
        h = self.host(host)
        if not self.host_dockerd:
            raise LabError(f"lab {self.prefix} has no per-host Docker engines; make it with "
                           "Lab(host_dockerd=True)")
        if h.name not in self._dockerds:
            self._dockerds[h.name] = HostDockerd(self.prefix, h)
        return self._dockerds[h.name]

    def docker_at(self, host: Host | str | int, *args: str, check: bool = True,
               timeout: float | None = 120) -> subprocess.CompletedProcess[str]:
        """`docker -H <host's engine> ARGS` (e.g. lab.docker_at("h1", "run", "-d", ...))."""
        return self.dockerd(host).cli(*args, check=check, timeout=timeout)

    def start_dockerd(self, host: Host | str | int, wait: bool = True) -> LabProcess:
        """Start the host's dockerd (process `dockerd-<host>`); with `wait`, until its API
        answers."""
        d = self.dockerd(host)
        d.prepare()
        proc = self.start_process(f"dockerd-{d.host.name}", d.argv())
        if wait:
            self.wait_dockerd(d.host, proc)
        return proc

    def wait_dockerd(self, host: Host | str | int, proc: LabProcess | None = None,
                     timeout: float = START_TIMEOUT_S) -> None:
        d = self.dockerd(host)
        proc = proc or self.processes.get(f"dockerd-{d.host.name}")
        deadline = time.monotonic() + timeout
        while not d.answering():
            if proc is not None and not proc.alive:
                raise LabError(f"dockerd of {d.host.name} exited with {proc.returncode}; "
                               f"log tail:\n{proc.log_tail(30)}")
            if time.monotonic() > deadline:
                raise LabError(f"dockerd of {d.host.name} did not answer on {d.sock} within "
                               f"{timeout:g}s")
            time.sleep(0.1)

    def stop_dockerd(self, host: Host | str | int, sig: int = signal.SIGTERM,
                     timeout: float = 60) -> None:
        """Stop the host's dockerd with `sig` (SIGKILL: a crash; its containers keep
        running until their shims are gone) and wait until it has exited."""
        d = self.dockerd(host)
        proc = self.processes.get(f"dockerd-{d.host.name}")
        if proc is None or not proc.alive:
            return
        proc.signal(sig)
        deadline = time.monotonic() + timeout
        while proc.alive and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.alive:
            proc.kill()
            proc.wait()

    def reboot_host(self, host: Host | str | int) -> None:
        """A reboot of `host` as its services see it. Shutdown in systemd's order: dockerd
        (SIGTERM: it stops its containers, the plugin still answering), the agent, OVS.
        Then what a reboot wipes: the host's veths, the OVS datapath and daemons' sockets,
        dockerd's exec root and the plugin's socket; what is on disk stays (dockerd's data
        root, the OVS database, the plugin's state file). Boot: OVS, the agent, dockerd
        (which brings back its `--restart=always` containers)."""
        h = self.host(host)
        d = self.dockerd(h)
        self.stop_dockerd(h, signal.SIGTERM)
        self.processes[f"agent-{h.name}"].stop()
        self.stop_ovs(h)
        veths = run(["ip", "-n", h.netns, "-o", "link", "show", "type", "veth"]).stdout
        for line in veths.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name not in HOST_NICS:          # the lab's wires stand for the host's NICs
                run(["ip", "-n", h.netns, "link", "del", name], check=False)
        subprocess.run(["rm", "-rf", str(d.root / "x")], check=False)
        d.plugin_socket().unlink(missing_ok=True)
        self.start_ovs(h)
        self.start_agent(h)
        self.start_dockerd(h)

    def _start_host_dockerds(self) -> None:
        """Start every host's dockerd and load the test image into each (lab up)."""
        from concurrent.futures import ThreadPoolExecutor

        from lab.image import ensure_image

        system = self.docker_client
        ensure_image(system)
        image = b"".join(system.images.get(IMAGE).save(named=True))
        with ThreadPoolExecutor(max_workers=len(self.hosts)) as pool:
            list(pool.map(self.start_dockerd, self.hosts))
            list(pool.map(lambda h: self.dockerd(h).client.images.load(image), self.hosts))

    def _end_host_containers(self) -> None:
        """SIGKILL the containers of every host's engine first, so that the engines' own
        SIGTERM (lab down) does not wait for them or for a plugin already gone."""
        if not self.host_dockerd:
            return
        procs.terminate([p for h in self.hosts for p in cgroup_pids(f"{self.prefix}-{h.name}")],
                        grace=0)
