"""Containers of a lab: Docker containers (`--network none`) and bare network namespaces,
and the lab's part that adds and removes them."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

from lab import cleanup, procs
from lab.command import LabError, run
from lab.naming import (
    CONTAINER_NAME_RE,
    DOCKER_HOST_LABEL,
    DOCKER_LABEL,
    IMAGE,
    NETNS_DIR,
    Host,
)

# PID 1 of a Docker container ignores SIGTERM unless it traps it; trapping makes stop and
# restart take milliseconds instead of the stop timeout.
KEEP_ALIVE = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"]


class Container:
    """What every container kind offers; see DockerContainer and NetnsContainer."""

    kind = ""
    name: str      # what `loris connect` takes
    short: str     # the lab-local name given to add_container
    host: Host

    @property
    def netns_path(self) -> str:
        raise NotImplementedError

    @property
    def netns_ref(self) -> str:
        """How `ip link ... netns <ref>` names this container's namespace."""
        raise NotImplementedError

    def exec_argv(self, argv: Sequence[str], interactive: bool = False) -> list[str]:
        raise NotImplementedError

    def exec(self, argv: Sequence[str], check: bool = True, timeout: float | None = 30,
             input: bytes | str | None = None) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside the container (its own tools for Docker, the host's for netns).

        `busybox <applet>` works the same in both kinds."""
        return run(self.exec_argv(argv, interactive=input is not None), check=check,
                   timeout=timeout, input=input)

    def popen(self, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start `argv` inside the container in the background; stdin is a pipe kept open
        (so e.g. `nc -l` does not see end-of-file), output is captured."""
        kwargs.setdefault("stdin", subprocess.PIPE)
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen(self.exec_argv(argv, interactive=True), **kwargs)

    def restart(self) -> None:
        raise LabError(f"container {self.name}: only Docker containers can restart")

    def remove(self) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} on {self.host.name}>"


class DockerContainer(Container):
    kind = "docker"

    def __init__(self, client, prefix: str, host: Host, short: str,
                 cli: Sequence[str] = ("docker",)) -> None:
        self._client = client
        self._cli = list(cli)    # the Docker CLI of the engine the container lives in
        self.host = host
        self.short = short
        self.name = f"{prefix}-{short}"
        self._pid: int | None = None

    def start(self, prefix: str) -> None:
        self._client.containers.run(
            IMAGE, KEEP_ALIVE, name=self.name, hostname=self.short, detach=True,
            network_mode="none", cap_add=["NET_ADMIN"],
            labels={DOCKER_LABEL: prefix, DOCKER_HOST_LABEL: self.host.name})
        if not self.pid:
            raise LabError(f"Docker container {self.name} did not start")

    @property
    def pid(self) -> int:
        """PID of the container's init as seen from here (changes on restart)."""
        if self._pid is None:
            attrs = self._client.api.inspect_container(self.name)
            pid = int(attrs["State"]["Pid"] or 0)
            if not attrs["State"]["Running"] or not pid:
                raise LabError(f"Docker container {self.name} is not running")
            self._pid = pid
        return self._pid

    @property
    def netns_path(self) -> str:
        return f"/proc/{self.pid}/ns/net"

    @property
    def netns_ref(self) -> str:
        return str(self.pid)

    def exec_argv(self, argv: Sequence[str], interactive: bool = False) -> list[str]:
        return [*self._cli, "exec", *(["-i"] if interactive else []), self.name,
                *map(str, argv)]

    def restart(self) -> None:
        """Restart the container: it comes back with a new, empty network namespace."""
        run([*self._cli, "restart", "-t", "2", self.name], timeout=60)
        self._pid = None
        _ = self.pid

    def stop(self) -> None:
        run([*self._cli, "stop", "-t", "2", self.name], timeout=60)
        self._pid = None

    def remove(self) -> None:
        run([*self._cli, "rm", "-f", self.name], check=False, timeout=60)
        self._pid = None


class NetnsContainer(Container):
    """A bare network namespace standing in for a container (`netns:<nsname>` for Loris)."""

    kind = "netns"

    def __init__(self, prefix: str, host: Host, short: str) -> None:
        self.host = host
        self.short = short
        self.nsname = f"{prefix}-c-{short}"
        self.name = f"netns:{self.nsname}"

    def start(self, prefix: str) -> None:
        run(["ip", "netns", "add", self.nsname])
        run(["ip", "-n", self.nsname, "link", "set", "lo", "up"])

    @property
    def netns_path(self) -> str:
        return str(NETNS_DIR / self.nsname)

    @property
    def netns_ref(self) -> str:
        return self.nsname

    def exec_argv(self, argv: Sequence[str], interactive: bool = False) -> list[str]:
        return ["ip", "netns", "exec", self.nsname, *map(str, argv)]

    def remove(self) -> None:
        # Processes still inside are ended by the lab (it knows the namespace's inode).
        run(["ip", "netns", "del", self.nsname], check=False)


class LabContainers:
    """The containers of a lab (part of `Lab`, see lab/core.py)."""

    prefix: str
    docker: bool
    containers: dict[str, Container]
    _docker_client: object | None

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

    def add_container(self, host: Host | str | int, name: str,
                      kind: str = "docker") -> Container:
        """A container on `host`: a Docker container `<prefix>-<name>` (network none; in the
        host's own engine in a lab with host_dockerd) or a bare namespace
        `<prefix>-c-<name>` (kind="netns")."""
        h = self.host(host)
        if kind not in ("docker", "netns"):
            raise LabError(f"container kind {kind!r}: use 'docker' or 'netns'")
        if not CONTAINER_NAME_RE.match(name):
            raise LabError(f"container name {name!r}: use 1-31 of a-z 0-9 _ . - "
                           "(starting with a letter or digit)")
        if name in self.containers:
            raise LabError(f"lab {self.prefix} already has a container {name!r}")
        self._require_up()
        if kind == "docker" and getattr(self, "host_dockerd", False):
            # in the host's own engine, where its agent looks (lab/hostdocker.py)
            engine = self.dockerd(h)
            container: Container = DockerContainer(engine.client, self.prefix, h, name,
                                                   ("docker", "-H", engine.url))
        elif kind == "docker":
            container = DockerContainer(self.docker_client, self.prefix, h, name)
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
