"""What the controller knows about its agents: desired versions, long polls, liveness.

Agents connect out (docs/design.md): they long-poll `GET /v1/hosts/{id}/desired` and report
with `PUT /v1/hosts/{id}/actual`. After each committed write the controller publishes every
host's desired version here; a long poll returns as soon as its own host's version differs
from the one its agent has, so work reaches an agent without any polling delay, and a
change for one host wakes only that host's polls.

Liveness: an agent is heard from whenever a request of its arrives (a long poll, a report,
a registration). The controller holds a long poll at most `agent_poll_interval` seconds,
after which the agent polls again at once, so a live agent is heard from about every
interval; one not heard from for `agent_away_polls` intervals is away (`away()`), and a
connect to its host fails at once instead of waiting for the wire timeout. A board that
has not heard from an agent yet counts from its own start (a restarted controller gives
the agents time to come back). When an away agent is heard from again, `on_back(host)` is
called (wiring.py: its switches are reconciled, since work for them may have been skipped
or lost while the host was unreachable).

Written by REST handlers (long polls, reports, publishes) and read by the views: every
table is behind the board's lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping

from controller.concurrency import Waiters


def silent_for(last_heard: float | None, started: float, now: float,
               away_after: float) -> float | None:
    """How long an agent has been silent if that makes it away (more than `away_after`
    seconds since it was last heard from, or since `started` if never), else None."""
    silent = now - (started if last_heard is None else max(last_heard, started))
    return silent if silent > away_after else None


class AgentBoard:
    """Desired versions per host, the long polls waiting on them, and agent liveness."""

    def __init__(self, away_after: float = float("inf"),
                 on_back: Callable[[str, float], None] | None = None) -> None:
        self.away_after = away_after
        self.on_back = on_back
        self.started = time.time()
        self._lock = threading.Lock()
        self._versions: dict[str, int] = {}
        self._last_seen: dict[str, float] = {}
        self._seen_here: dict[str, float] = {}    # by requests to this controller only
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
        """A request of the host's agent arrived (`on_back` if it was away until now)."""
        now = time.time()
        with self._lock:
            last = self._last_seen.get(host_id)
            self._last_seen[host_id] = self._seen_here[host_id] = now
        if self.on_back is not None and last is not None:
            silent = silent_for(last, self.started, now, self.away_after)
            if silent is not None:
                self.on_back(host_id, silent)

    def heard_elsewhere(self, host_ids: Iterable[str]) -> None:
        """These hosts' agents talk to another controller now (several controllers:
        controller/ha.py): they are not away (no `on_back`: that controller saw them)."""
        now = time.time()
        with self._lock:
            for host_id in host_ids:
                self._last_seen[host_id] = max(now, self._last_seen.get(host_id) or 0.0)

    def heard_here(self) -> list[str]:
        """The hosts whose agents this controller itself heard from lately (not away)."""
        now = time.time()
        with self._lock:
            seen = dict(self._seen_here)
        return sorted(h for h, t in seen.items()
                      if silent_for(t, self.started, now, self.away_after) is None)

    def last_seen(self, host_id: str) -> float | None:
        """When a request of the host's agent last arrived (epoch seconds), None if never."""
        with self._lock:
            return self._last_seen.get(host_id)

    def away(self, host_id: str, now: float | None = None) -> float | None:
        """Seconds the host's agent has been silent if it is away, else None (never while a
        long poll of its is open here)."""
        if self._polls.waiting(host_id) > 0:
            return None
        return silent_for(self.last_seen(host_id), self.started,
                          time.time() if now is None else now, self.away_after)

    def wake(self, host_ids: Iterable[str]) -> None:
        """Wake the long polls of these hosts (their credentials were revoked)."""
        self._polls.notify(host_ids)

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

    def wait(self, host_id: str, since: int, timeout: float,
             still_valid: Callable[[], bool] | None = None) -> int | None:
        """Block until the host's desired version differs from `since` (or the host is gone),
        or, woken by `wake`, `still_valid()` is false, at most `timeout` seconds; return the
        version then (None if the host was removed).

        'Differs' rather than 'is newer': if the store was reset, the agent's version can be
        ahead of ours, and it must still get the new state at once.
        """
        self.seen(host_id)
        self._polls.wait_until(
            host_id, lambda: self.version(host_id) != since or (
                still_valid is not None and not still_valid()), timeout)
        return self.version(host_id)

    def forget(self, host_id: str) -> None:
        with self._lock:
            self._last_seen.pop(host_id, None)
            self._seen_here.pop(host_id, None)
            self._stats.pop(host_id, None)
