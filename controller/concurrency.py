"""How the controller's threads share work, and the three tools that keep the rules checked.

Under `osken-manager` everything runs in one OS thread, on eventlet's hub: the OpenFlow
event loop, os-ken's echo requests, one green thread per REST request (long polls and
connects included), the per-host programmer workers and the DHCP worker. A call that
blocks the OS thread (a real `threading` wait, an fsync) stops all of them at once. Hence:

- `require_green_threads()`: the controller refuses to start when the `threading`
  primitives are not eventlet's green ones (osken-manager skips that monkey-patching when
  started with `--enable-debugger`); a 1 s wait would otherwise freeze the whole hub.
- `run_blocking(fn, *args)`: a call that waits on the disk (SQLite's COMMIT and its fsync,
  BEGIN IMMEDIATE waiting for another process's lock) runs in a real OS thread
  (eventlet.tpool) while the caller's green thread sleeps and the hub runs on. Outside
  eventlet (unit tests, os-ken's native hub) it is a plain call.
- `Waiters`: the one way to wait for something: a predicate over shared state, woken only by
  a notification for its own key (a host for long polls, a port for a connect), never by
  everyone's.

The same code runs on plain threads in unit tests, so state shared between threads is
guarded by `threading` locks (green, and nearly free, under eventlet); nothing relies on
green threads not being preempted. State that one thread owns (the DHCP rate limiter: the
OpenFlow event loop; the DHCP responder: the DHCP worker) says so with `OneThread`, which
raises when a second thread uses it.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from typing import TypeVar

LOG = logging.getLogger("loris.concurrency")
T = TypeVar("T")

NOT_GREEN = (
    "thread primitives are not green: eventlet has not monkey-patched `threading` "
    "(osken-manager skips that when started with --enable-debugger), so one REST request "
    "waiting for an agent would freeze every OpenFlow session and REST call of the "
    "controller. Start it without --enable-debugger: "
    "`osken-manager controller/loris_app.py ...` or `python -m controller.run ...`")


def _yields_to_hub(wait: Callable[[], object]) -> bool:
    """Whether `wait()` lets another green thread run, as a green primitive does."""
    import eventlet

    ran: list[bool] = []
    eventlet.spawn(ran.append, True)
    wait()
    return bool(ran)


def _lock_wait() -> None:
    lock = threading.Lock()
    lock.acquire()
    lock.acquire(timeout=0.01)      # held by ourselves: returns False after the timeout


def _condition_wait() -> None:
    cond = threading.Condition()
    with cond:
        cond.wait(0.01)


def green_threads_problem(hub_type: str) -> str | None:
    """Why this process's thread primitives do not suit the os-ken hub `hub_type`, or None.

    The eventlet hub needs `threading` monkey-patched and Lock, Event and Condition that
    yield to the hub while they wait (each is tried for 10 ms); the native hub runs real
    threads, for which the real primitives are right."""
    if hub_type != "eventlet":
        return None
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is None or not patcher.is_monkey_patched("thread"):
        return NOT_GREEN
    for name, wait in (("Lock", _lock_wait),
                       ("Event", lambda: threading.Event().wait(0.01)),
                       ("Condition", _condition_wait)):
        if not _yields_to_hub(wait):
            return f"threading.{name} blocks the hub: {NOT_GREEN}"
    return None


def require_green_threads(hub_type: str) -> None:
    """Exit the process with the reason and the fix when `green_threads_problem` finds one."""
    problem = green_threads_problem(hub_type)
    if problem is not None:
        LOG.critical("refusing to start: %s", problem)
        raise SystemExit(f"loris controller refuses to start: {problem}")


def on_green_hub() -> bool:
    """True in a process whose `threading` eventlet has monkey-patched (the controller)."""
    patcher = sys.modules.get("eventlet.patcher")
    return patcher is not None and patcher.is_monkey_patched("thread")


def run_blocking(fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)` in a real OS thread when called on the eventlet hub (only the calling green
    thread waits), else directly."""
    if on_green_hub():
        from eventlet import tpool

        return tpool.execute(fn, *args)
    return fn(*args)


class Waiters:
    """Wait until a predicate holds, woken by `notify(key)` for the waiter's own key only.

    The predicate reads shared state (the store, a table of versions); whoever changes that
    state notifies the keys it changed after the change is visible. A notification that
    comes between a waiter's check and its sleep is not lost: the waiter's event is set, so
    it checks again at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[Hashable, set[threading.Event]] = {}

    def notify(self, keys: Iterable[Hashable]) -> int:
        """Wake the waiters of `keys`; how many there were."""
        with self._lock:
            events = [e for k in set(keys) for e in self._events.get(k, ())]
        for event in events:
            event.set()
        return len(events)

    def waiting(self, key: Hashable) -> int:
        """How many callers wait on `key` now (a host's long polls: "is its agent polling")."""
        with self._lock:
            return len(self._events.get(key, ()))

    def keys(self) -> list[Hashable]:
        """The keys waited on now (to wake them all after a change made elsewhere)."""
        with self._lock:
            return list(self._events)

    def total(self) -> int:
        """How many callers wait now, on any key."""
        with self._lock:
            return sum(len(events) for events in self._events.values())

    def wait_until(self, key: Hashable, predicate: Callable[[], bool], timeout: float) -> bool:
        """True once predicate() holds, False after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        event = threading.Event()
        with self._lock:
            self._events.setdefault(key, set()).add(event)
        try:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                event.wait(remaining)
                event.clear()        # before the next check: a later notify sets it again
            return True
        finally:
            with self._lock:
                waiting = self._events[key]
                waiting.discard(event)
                if not waiting:
                    del self._events[key]


class OneThread:
    """The check that an unlocked object is used by one thread only (green or real): the
    first thread that calls `check()` owns it; any other raises RuntimeError."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._owner: int | None = None

    def check(self) -> None:
        ident = threading.get_ident()       # a green thread's own id under eventlet
        if self._owner is None:
            self._owner = ident
        elif self._owner != ident:
            raise RuntimeError(f"{self.what} is used by two threads ({self._owner} and "
                               f"{ident}); it has no lock and must stay with one")
