"""Containers of a lab: Docker containers (`--network none`) and bare network namespaces."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from lab.command import LabError, run
from lab.naming import DOCKER_HOST_LABEL, DOCKER_LABEL, IMAGE, NETNS_DIR, Host

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

    def __init__(self, client, prefix: str, host: Host, short: str) -> None:
        self._client = client
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
        return ["docker", "exec", *(["-i"] if interactive else []), self.name, *map(str, argv)]

    def restart(self) -> None:
        """Restart the container: it comes back with a new, empty network namespace."""
        run(["docker", "restart", "-t", "2", self.name], timeout=60)
        self._pid = None
        _ = self.pid

    def stop(self) -> None:
        run(["docker", "stop", "-t", "2", self.name], timeout=60)
        self._pid = None

    def remove(self) -> None:
        run(["docker", "rm", "-f", self.name], check=False, timeout=60)
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
