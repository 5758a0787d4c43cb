"""The ofport a port is connected with, chosen by the controller when it inserts the port
(schema 7).

Why: the flows of a port's own host match and output on its ofport. When OVS chose that
number, the controller could program the own host only after the agent had wired the port
and reported it, and a connect paid for the two steps one after the other. With the number
chosen up front (`ports.planned_ofport`), the own host is programmed while the agent wires,
like the pod's other hosts; the agent adds the OVS port with `ofport_request` set to it
(hostagent/reconcile.py), and the connect checks the number the agent reports. A number OVS
could not give (another interface held it) is reported as the one OVS chose instead, and
the own host is programmed again with that one (controller/connect.py).

How a number is chosen: one counter per host (`counters`, `ofport:<host id>`), which only
goes up, so a number freed by a disconnect a moment ago (whose OVS port the agent may not
have removed yet) is not handed out again until the counter wraps at MAX_OFPORT. Numbers a
row of the host holds (reported or planned) and the host's patch port are skipped. A host
whose patch port is not known yet gets no planned number: its port is connected as before
(own host programmed after the report). On etcd the counter is a row like any other, so
controllers connecting on the same host at once conflict and the loser runs again: they
never hand out one number twice.

The planned number lives until the agent reports the port's ofport; then `ofport` holds the
number and `planned_ofport` is cleared. `Port.switch_ofport` is the number the host's flows
use: the reported one, else the planned one. `PlannedOfportRows` is mixed into `store.Tx`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator

from flows.contract import MAX_OFPORT


def migrate(conn: sqlite3.Connection) -> None:
    """Schema step 7: the column and its index (a second run changes nothing)."""
    columns = {r[1] for r in conn.execute("PRAGMA table_info(ports)")}
    if "planned_ofport" not in columns:
        conn.execute("ALTER TABLE ports ADD COLUMN planned_ofport INTEGER")
    conn.execute("CREATE INDEX IF NOT EXISTS ports_planned_ofport "
                 "ON ports(host_id, planned_ofport) WHERE planned_ofport IS NOT NULL")


def counter_name(host_id: str) -> str:
    return f"ofport:{host_id}"


def candidates(last: int) -> Iterator[int]:
    """The numbers after `last` in the order they are tried: up to MAX_OFPORT, then from 1."""
    yield from range(last + 1, MAX_OFPORT + 1)
    yield from range(1, min(last, MAX_OFPORT) + 1)


def choose(last: int, patch: int, in_use: Callable[[int], bool]) -> int | None:
    """The next number after `last` that is neither the patch port's nor `in_use`; None
    when every number is taken."""
    for n in candidates(last):
        if n != patch and not in_use(n):
            return n
    return None


class PlannedOfportRows:
    """SQL of the planned ofports (mixed into store.Tx, which provides _one/_all/_c)."""

    def plan_ofport(self, host_id: str) -> int | None:
        """The number the next port of `host_id` is connected with, the host's counter moved
        to it; None when the host's patch port is not known yet, or no number is free."""
        row = self._one(  # type: ignore[attr-defined]
            "SELECT int_patch_ofport FROM hosts WHERE id = ?", (host_id,))
        if row is None or row[0] is None:
            return None
        patch = row[0]
        name = counter_name(host_id)
        last = self._one(  # type: ignore[attr-defined]
            "SELECT value FROM counters WHERE name = ?", (name,))
        if last is None:        # first planned port of the host: start above what it has
            last = self._one(  # type: ignore[attr-defined]
                "SELECT MAX(MAX(COALESCE(ofport, 0), COALESCE(planned_ofport, 0))) "
                "FROM ports WHERE host_id = ?", (host_id,))
            start = max(last[0] or 0, patch)
        else:
            start = last[0]
        chosen = choose(start, patch, lambda n: self._one(  # type: ignore[attr-defined]
            "SELECT 1 FROM ports WHERE host_id = ? AND (ofport = ? OR planned_ofport = ?) "
            "LIMIT 1", (host_id, n, n)) is not None)
        if chosen is not None:
            self._c.execute(  # type: ignore[attr-defined]
                "INSERT OR REPLACE INTO counters (name, value) VALUES (?, ?)", (name, chosen))
        return chosen

    def planned_ofport_clashes(self) -> list[tuple[int, int]]:
        """(planned port, other port) id pairs of one host where the other port's number
        (reported, or planned while not reported) is the planned one: normally none (OVS
        gave a port another number than the one it asked for, equal to a planned one). Few
        rows are planned at any time: read through their partial index."""
        return self._all(  # type: ignore[attr-defined]
            "SELECT p.id, q.id FROM ports p JOIN ports q ON q.host_id = p.host_id "
            "AND q.id != p.id AND (q.ofport = p.planned_ofport OR "
            "(q.ofport IS NULL AND q.planned_ofport = p.planned_ofport)) "
            "WHERE p.planned_ofport IS NOT NULL AND p.ofport IS NULL")
