"""What the controller knows about its agents: desired versions, long polls, liveness.

Agents connect out (docs/design.md): they long-poll `GET /v1/hosts/{id}/desired` and report
with `PUT /v1/hosts/{id}/actual`. After each committed write the controller publishes every
host's desired version here; a long poll returns as soon as its own host's version differs
from the one its agent has, so work reaches an agent without any polling delay, and a
change for one host wakes only that host's polls.

Written by REST handlers (long polls, reports, publishes) and read by the views: every
table is behind the board's lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

from controller.concurrency import Waiters


class AgentBoard:
    """Desired versions per host, the long polls waiting on them, and agent liveness."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[str, int] = {}
        self._last_seen: dict[str, float] = {}
        self._stats: dict[str, dict[str, float]] = {}     # the figures of each agent's report
        self._polls = Waiters()

    def publish(self, versions: Mapping[str, int]) -> None:
        """Replace the table of desired versions (after a commit) and wake the long polls of
        the hosts whose version changed (or that came or went)."""
        new = dict(versions)
        with self._lock:
            old, self._versions = self._versions, new
        self._polls.notify(h for h in old.keys() | new.keys() if old.get(h) != new.get(h))

    def version(self, host_id: str) -> int | None:
        with self._lock:
            return self._versions.get(host_id)

    def versions(self) -> dict[str, int]:
        """Every host's desired version as last published (a copy)."""
        with self._lock:
            return dict(self._versions)

    def seen(self, host_id: str) -> None:
        with self._lock:
            self._last_seen[host_id] = time.time()

    def last_seen(self, host_id: str) -> float | None:
        """When the host's agent last polled or reported (epoch seconds), None if never."""
        with self._lock:
            return self._last_seen.get(host_id)

    def polling(self, host_id: str) -> bool:
        return self._polls.waiting(host_id) > 0

    def polls_open(self) -> int:
        """Long polls waiting now, of every host."""
        return self._polls.total()

    def report_stats(self, host_id: str, stats: Mapping[str, float]) -> None:
        """The figures an agent carried in its last report (passes, wiring errors...)."""
        with self._lock:
            self._stats[host_id] = dict(stats)

    def agent_stats(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {h: dict(s) for h, s in self._stats.items()}

    def wait(self, host_id: str, since: int, timeout: float) -> int | None:
        """Block until the host's desired version differs from `since` (or the host is gone),
        at most `timeout` seconds; return the version then (None if the host was removed).

        'Differs' rather than 'is newer': if the store was reset, the agent's version can be
        ahead of ours, and it must still get the new state at once.
        """
        self.seen(host_id)
        try:
            self._polls.wait_until(host_id, lambda: self.version(host_id) != since, timeout)
        finally:
            self.seen(host_id)
        return self.version(host_id)

    def forget(self, host_id: str) -> None:
        with self._lock:
            self._last_seen.pop(host_id, None)
            self._stats.pop(host_id, None)
