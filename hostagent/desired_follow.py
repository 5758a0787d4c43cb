"""The agent's side of desired-state deltas (flows/desired_delta.py, docs/design.md): what
to ask the long poll for, how an answer (full or delta) updates the state held, which ports
the next pass must look at, and which ports the next report must carry.

A pass after a delta looks only at the ports it touched (the ports of the host that did not
change were right at the last pass, and the periodic full pass and Docker events still look
at every one); a pass after a full state, a Docker event or a failure looks at all of them.
A report carries the ports whose result changed since the last report the controller took;
after a full state (a controller that restarted or never saw this agent), a failed report,
or RESYNC_S * 2 without a report, it carries every port again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from flows import desired_delta

log = logging.getLogger("loris-hostagent")


class DesiredFollower:
    """The desired state held (`state`), and what the next pass and report must cover."""

    def __init__(self) -> None:
        self.state: dict | None = None
        self.deltas = True            # False once a controller refused `have` (an older one)
        self._resync = False          # the last delta did not apply: ask for the full state
        self._lock = threading.Lock()
        self._dirty: set[int] | None = None     # ports the next pass looks at; None: all
        self.report_all = True        # the next report carries every port

    def poll_args(self) -> tuple[int | None, str | None]:
        """(since, have) for the next long poll."""
        if self.state is None or self._resync:
            return None, None
        have = self.state.get("digest") if self.deltas else None
        return self.state.get("version"), have

    def take(self, answer: dict) -> bool:
        """Hold what the long poll answered; True if the state changed (a pass is due)."""
        if answer.get("base") is None:
            with self._lock:
                self._resync = False
                if answer == self.state:
                    return False
                self.state = answer
                self._dirty = None
                self.report_all = True
            return True
        try:
            new = desired_delta.apply(self.state or {}, answer)
        except desired_delta.DeltaMismatch as e:
            log.warning("desired state: %s; asking for the full state", e)
            self._resync = True
            return False
        with self._lock:
            self._resync = False
            if new == self.state:
                return False
            self.state = new
            if self._dirty is not None:
                self._dirty |= desired_delta.touched(answer)
        return True

    def forget(self) -> None:
        """The controller does not know this host any more: nothing is held."""
        with self._lock:
            self.state = None
            self._dirty = None
            self.report_all = True

    def all_dirty(self) -> None:
        """The next pass looks at every port (a Docker event, a failed pass, a lease)."""
        with self._lock:
            self._dirty = None

    def take_dirty(self) -> set[int] | None:
        """The ports the next pass must look at (None: all), and start a new set."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        return dirty

    def report(self, actual: dict, reported: Mapping[str, Any] | None,
               stale: bool) -> dict:
        """The report to send for `actual` (the whole result of the last pass), given what
        the controller last took (`reported`, None if nothing or it failed)."""
        if reported is None or stale or self.report_all:
            return actual
        last = reported.get("ports") or {}
        ports = {k: v for k, v in (actual.get("ports") or {}).items() if last.get(k) != v}
        return dict(actual, ports=ports)

    def reported(self, full: bool) -> None:
        """The controller took a report (`full`: of every port)."""
        if full:
            with self._lock:
                self.report_all = False
