"""Where a lab runs things: its hosts and namespaces by name, commands inside them, and the
long-running processes it starts (part of `Lab`, see lab/core.py)."""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from lab import procs
from lab.command import LabError, environ, run
from lab.containers import Container
from lab.naming import NETNS_DIR, Host
from lab.ovs import OvsClient
from lab.procs import LabProcess

PROCESS_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

Target = Host | Container | str


class Targets:
    """Hosts, namespaces and processes of a lab."""

    prefix: str
    dir: Path
    hosts: list[Host]
    ctl_ns: str
    ul_ns: str
    processes: dict[str, LabProcess]
    _ovs: dict[str, OvsClient]
    _lock: threading.Lock
    _counter: int

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
        if isinstance(target, str) and target.startswith("/"):
            return ["nsenter", f"--net={target}"]
        return ["ip", "netns", "exec", self.netns_name(target)]

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
                      cwd: str | Path | None = None, pass_fds: Sequence[int] = ()
                      ) -> LabProcess:
        """Start a long-running process (log: <lab dir>/logs/<name>.log). A name can be
        reused once its previous process has ended (the log is appended to). `pass_fds`:
        file descriptors it inherits."""
        if not PROCESS_NAME_RE.match(name):
            raise LabError(f"process name {name!r}: use letters, digits, '_', '.', '-'")
        with self._lock:
            old = self.processes.get(name)
            if old is not None and old.alive:
                raise LabError(f"process {name} (pid {old.pid}) is still running in lab "
                               f"{self.prefix}; stop it first or use another name")
            full_env = environ({"PYTHONUNBUFFERED": "1", **(env or {})})
            proc = procs.spawn(name, self.enter(netns) + [str(a) for a in argv],
                               labdir=self.dir, env=full_env, cwd=cwd, pass_fds=pass_fds)
            self.processes[name] = proc
        return proc

    def _next_number(self) -> int:
        """A number unique in this lab (names of captures and baseline ports)."""
        with self._lock:
            self._counter += 1
            return self._counter
