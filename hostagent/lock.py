"""One agent per Open vSwitch: a lock file in the OVS run directory.

`loris cleanup` checks it too: a running agent would re-create at once what cleanup removes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from hostagent.ovs import Ovs

LOCK_NAME = "loris-hostagent.pid"
DEFAULT_OVS_RUNDIR = "/var/run/openvswitch"


class AgentRunning(RuntimeError):
    def __init__(self, pid: int | None, path: str) -> None:
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"loris-hostagent ({who}) is running for this Open vSwitch "
                         f"(lock {path})")  # fmt: skip
        self.pid = pid
        self.path = path


def lock_path(ovs: Ovs) -> str:
    rundir = ovs.rundir or os.environ.get("OVS_RUNDIR")
    if not rundir and ovs.db and ovs.db.startswith("unix:"):
        rundir = os.path.dirname(ovs.db[len("unix:"):])
    return os.path.join(rundir or DEFAULT_OVS_RUNDIR, LOCK_NAME)


def acquire(ovs: Ovs) -> int | None:
    """Take the lock for the life of this process; returns its fd (None: no run dir)."""
    path = lock_path(ovs)
    if not os.path.isdir(os.path.dirname(path)):
        return None
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _read_pid(fd)
        os.close(fd)
        raise AgentRunning(pid, path) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def holder(ovs: Ovs) -> AgentRunning | None:
    """Who holds the lock, if anyone."""
    path = lock_path(ovs)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return AgentRunning(_read_pid(fd), path)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        os.lseek(fd, 0, os.SEEK_SET)
        return int(os.read(fd, 32).decode().strip() or 0) or None
    return None
