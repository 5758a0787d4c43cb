"""Processes of a lab: start them with a record, find them again, end exactly them.

A process is identified by (pid, start time) so that a recycled pid is never mistaken for
one of ours. Records live in `<lab dir>/procs/<name>.json`, logs in `<lab dir>/logs/`.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from lab.netns import socket_in_netns  # noqa: F401  (where it used to live)

PR_SET_CHILD_SUBREAPER = 36

_libc = ctypes.CDLL(None, use_errno=True)


def starttime(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[19])


def state(pid: int) -> str | None:
    """The one-letter state of `pid` (R, S, Z, ...), or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2]


def running(pid: int) -> bool:
    """True if `pid` exists and has not exited.

    A multi-threaded process (ovs-vswitchd) whose main thread has exited shows state Z
    while its other threads still wind down; it is not waitable yet, so it still runs.
    """
    st = state(pid)
    if st is None:
        return False
    if st != "Z":
        return True
    try:
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return False


def same_process(pid: int, start: int | None) -> bool:
    return start is not None and running(pid) and starttime(pid) == start


def netns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def set_subreaper(enabled: bool = True) -> None:
    """Make orphaned descendants (e.g. daemons of a killed lab owner) our children.

    Some container init processes reap zombies late or never; as a subreaper we can reap
    the orphans we end, so that nothing of a lab lingers in the process table.
    """
    if _libc.prctl(PR_SET_CHILD_SUBREAPER, int(enabled), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def reap(pids: Iterable[int], within: float = 0.0) -> None:
    """Collect the exit status of those `pids` that are dead children of ours; with
    `within`, for up to that many seconds until none of them is left (a process killed a
    moment ago may still be exiting, not yet a zombie to collect).

    Only call this for processes that no subprocess.Popen of this process waits for
    (orphans adopted as a subreaper), or that Popen would see a wrong exit status.
    """
    pids = list(pids)
    deadline = time.monotonic() + within
    while True:
        for pid in pids:
            with _own_lock:
                popen = _own_children.get(pid)
            if popen is not None:
                popen.poll()
            elif state(pid) == "Z":
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
        if time.monotonic() >= deadline or all(state(p) is None for p in pids):
            return
        time.sleep(0.02)


def terminate(pids: Iterable[int], grace: float = 3.0) -> list[int]:
    """SIGTERM `pids`, SIGKILL those still running after `grace` seconds.

    Returns the pids that were still running after SIGKILL (should be none).
    """
    pids = [p for p in set(pids) if running(p)]
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 3.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while True:
            _reap_own(pids)
            pids = [p for p in pids if running(p)]
            if not pids or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        if not pids:
            break
    return pids


_own_children: dict[int, subprocess.Popen] = {}
_own_lock = threading.Lock()


def _reap_own(pids: Iterable[int]) -> None:
    """Let the Popen objects of our own children collect their exit status."""
    with _own_lock:
        for pid in pids:
            popen = _own_children.get(pid)
            if popen is not None:
                popen.poll()


class LabProcess:
    """A long-running process started by a lab, with its log in the lab's run directory."""

    def __init__(self, name: str, argv: Sequence[str], popen: subprocess.Popen,
                 log_path: Path, record_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.popen = popen
        self.pid = popen.pid
        self.log_path = log_path
        self.record_path = record_path

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.popen.wait(timeout)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` seconds; returns the exit status."""
        if self.alive:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.popen.poll()

    def kill(self) -> int | None:
        if self.alive:
            self.popen.kill()
            self.popen.wait(5)
        return self.popen.poll()

    def signal(self, sig: int) -> None:
        if self.alive:
            self.popen.send_signal(sig)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __repr__(self) -> str:
        state_ = "alive" if self.alive else f"exited {self.returncode}"
        return f"<LabProcess {self.name} pid={self.pid} {state_}>"


def spawn(name: str, argv: Sequence[str], *, labdir: Path, env: Mapping[str, str],
          cwd: str | Path | None = None, pass_fds: Sequence[int] = ()) -> LabProcess:
    """Start `argv` in its own session, output to `<labdir>/logs/<name>.log`, and record it.
    `pass_fds`: file descriptors the process inherits (subprocess.Popen's)."""
    logs = labdir / "logs"
    records = labdir / "procs"
    logs.mkdir(parents=True, exist_ok=True)
    records.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    with open(log_path, "ab") as log:
        if log.tell():
            log.write(f"\n----- restarted {time.strftime('%H:%M:%S')} -----\n".encode())
            log.flush()
        popen = subprocess.Popen(
            [str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, env=dict(env), cwd=cwd, start_new_session=True,
            pass_fds=tuple(pass_fds))
    with _own_lock:
        _own_children[popen.pid] = popen
    record_path = records / f"{name}.json"
    record = {"name": name, "pid": popen.pid, "starttime": starttime(popen.pid),
              "spawner": os.getpid(), "argv": [str(a) for a in argv]}
    tmp = record_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(record_path)
    return LabProcess(name, argv, popen, log_path, record_path)


def read_records(labdir: Path) -> list[dict]:
    out = []
    for path in sorted((labdir / "procs").glob("*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return out
