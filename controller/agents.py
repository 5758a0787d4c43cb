"""What the controller knows about its agents: desired versions, long polls, liveness.

Agents connect out (docs/design.md): they long-poll `GET /v1/hosts/{id}/desired` and report
with `PUT /v1/hosts/{id}/actual`. The service publishes every host's desired version here
after each committed write; a long poll returns as soon as its host's version differs from
the one the agent has, so work reaches an agent without any polling delay.

Works on both os-ken hubs: under eventlet `threading` is monkey-patched to green threads,
under the native hub these are real threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping


class Changes:
    """A condition variable with a predicate wait: `wait_until(pred, timeout)`."""

    def __init__(self) -> None:
        self._cond = threading.Condition()

    def notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """True once predicate() holds, False after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True


class AgentBoard:
    """Desired versions per host, the long polls waiting on them, and agent liveness."""

    def __init__(self) -> None:
        self._versions: dict[str, int] = {}
        self._changes = Changes()
        self._lock = threading.Lock()
        self.last_seen: dict[str, float] = {}
        self._polling: dict[str, int] = {}

    def publish(self, versions: Mapping[str, int]) -> None:
        """Replace the table of desired versions (after a commit) and wake the long polls."""
        with self._lock:
            self._versions = dict(versions)
        self._changes.notify()

    def version(self, host_id: str) -> int | None:
        return self._versions.get(host_id)

    def seen(self, host_id: str) -> None:
        self.last_seen[host_id] = time.time()

    def polling(self, host_id: str) -> bool:
        return self._polling.get(host_id, 0) > 0

    def wait(self, host_id: str, since: int, timeout: float) -> int | None:
        """Block until the host's desired version differs from `since` (or the host is gone),
        at most `timeout` seconds; return the version then (None if the host was removed).

        'Differs' rather than 'is newer': if the store was reset, the agent's version can be
        ahead of ours, and it must still get the new state at once.
        """
        self.seen(host_id)
        with self._lock:
            self._polling[host_id] = self._polling.get(host_id, 0) + 1
        try:
            self._changes.wait_until(lambda: self._versions.get(host_id) != since, timeout)
        finally:
            with self._lock:
                self._polling[host_id] -= 1
            self.seen(host_id)
        return self._versions.get(host_id)

    def forget(self, host_id: str) -> None:
        self.last_seen.pop(host_id, None)
