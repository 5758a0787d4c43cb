"""The store's tables for operator safety (schema version 2): credentials, the switch
certificates hosts declared, pods made implicitly by a connect, and the audit trail.

`SafetyRows` is mixed into `store.Tx`: the SQL of these tables, next to their schema.
- `credentials`: one row per issued credential, (kind, name) = ('agent', host id) or
  ('operator', operator name). Only the SHA-256 of a token is kept. A revoked row keeps
  its hash (so its holder is told "revoked") and `revoked_at`; re-issuing replaces both.
- `switch_certs`: per host, the SHA-256 of the switch certificate its agent declared at
  registration (the allow-list the controller checks a TLS switch against).
- `implicit_pods`: pods a connect created, until a connect into them succeeds; a pod
  still listed with no port left is removed once the connects that made it failed.
- `events`: the audit trail, newest last; bounded by count and age (audit.py).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

SAFETY_SCHEMA = """
CREATE TABLE IF NOT EXISTS credentials (
    kind TEXT NOT NULL CHECK (kind IN ('agent', 'operator')),
    name TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    issued_at REAL NOT NULL,
    revoked_at REAL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS switch_certs (
    host_id TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    declared_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS implicit_pods (
    pod_id INTEGER PRIMARY KEY REFERENCES pods(id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    credential TEXT NOT NULL,
    operation TEXT NOT NULL,
    object TEXT NOT NULL,
    status INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS events_object ON events(object, id);
CREATE INDEX IF NOT EXISTS events_time ON events(time);
"""


@dataclass(frozen=True)
class Credential:
    kind: str                   # "agent" | "operator"
    name: str                   # host id or operator name
    token_sha256: str
    issued_at: float
    revoked_at: float | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class Event:
    id: int
    time: float
    credential: str             # "operator admin", "agent h2", "controller"
    operation: str              # "connect", "revoke agent token", ...
    object: str                 # "port:12", "host:h2", "pod:7", "operator:alice"
    status: int                 # the HTTP status of the answer
    outcome: str                # "ok", or the error code
    detail: str | None

    def to_json(self) -> dict:
        return {"id": self.id, "time": self.time, "credential": self.credential,
                "operation": self.operation, "object": self.object, "status": self.status,
                "outcome": self.outcome, "detail": self.detail}


_CREDENTIAL = "kind, name, token_sha256, issued_at, revoked_at"
_EVENT = "id, time, credential, operation, object, status, outcome, detail"


class SafetyRows:
    """The SQL of the safety tables; mixed into store.Tx (which provides `_c`)."""

    _c: sqlite3.Connection

    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[tuple]:
        return self._c.execute(sql, tuple(args)).fetchall()

    # ---- credentials ----------------------------------------------------------------
    def credential(self, kind: str, name: str) -> Credential | None:
        rows = self._rows(f"SELECT {_CREDENTIAL} FROM credentials WHERE kind = ? AND name = ?",
                          (kind, name))
        return Credential(*rows[0]) if rows else None

    def credential_by_hash(self, token_sha256: str) -> Credential | None:
        rows = self._rows(f"SELECT {_CREDENTIAL} FROM credentials WHERE token_sha256 = ?",
                          (token_sha256,))
        return Credential(*rows[0]) if rows else None

    def credentials(self, kind: str | None = None) -> list[Credential]:
        sql, args = f"SELECT {_CREDENTIAL} FROM credentials", []
        if kind is not None:
            sql, args = sql + " WHERE kind = ?", [kind]
        return [Credential(*r) for r in self._rows(sql + " ORDER BY kind, name", args)]

    def put_credential(self, kind: str, name: str, token_sha256: str) -> None:
        """Issue (or re-issue) a credential: its previous token stops working."""
        self._c.execute(
            "INSERT INTO credentials (kind, name, token_sha256, issued_at, revoked_at) "
            "VALUES (?, ?, ?, ?, NULL) ON CONFLICT (kind, name) DO UPDATE SET "
            "token_sha256 = excluded.token_sha256, issued_at = excluded.issued_at, "
            "revoked_at = NULL", (kind, name, token_sha256, time.time()))

    def revoke_credential(self, kind: str, name: str, token_sha256: str) -> None:
        """Mark the credential revoked; `token_sha256` is recorded when there was no row
        (a host still on its derived token), so its holder is told it was revoked."""
        now = time.time()
        self._c.execute(
            "INSERT INTO credentials (kind, name, token_sha256, issued_at, revoked_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (kind, name) DO UPDATE SET revoked_at = ?",
            (kind, name, token_sha256, now, now, now))

    # ---- switch certificates --------------------------------------------------------
    def switch_certs(self) -> dict[str, str]:
        return dict(self._rows("SELECT host_id, sha256 FROM switch_certs"))

    def declare_switch_cert(self, host_id: str, sha256: str) -> None:
        self._c.execute("INSERT INTO switch_certs (host_id, sha256, declared_at) VALUES "
                        "(?, ?, ?) ON CONFLICT (host_id) DO UPDATE SET sha256 = excluded.sha256,"
                        " declared_at = excluded.declared_at", (host_id, sha256, time.time()))

    # ---- pods a connect made --------------------------------------------------------
    def mark_implicit_pod(self, pod_id: int) -> None:
        self._c.execute("INSERT OR IGNORE INTO implicit_pods (pod_id) VALUES (?)", (pod_id,))

    def settle_implicit_pod(self, pod_id: int) -> None:
        """A connect into the pod succeeded: it stays, like a pod created by POST."""
        self._c.execute("DELETE FROM implicit_pods WHERE pod_id = ?", (pod_id,))

    def drop_empty_implicit_pods(self, pods: Iterable[int] | None = None) -> list[int]:
        """Delete the implicit pods (of `pods`, or all) that have no port; their ids."""
        sql = ("SELECT pod_id FROM implicit_pods WHERE pod_id NOT IN "
               "(SELECT DISTINCT pod_id FROM ports)")
        args: list = []
        if pods is not None:
            args = sorted(set(pods))
            sql += f" AND pod_id IN ({', '.join('?' * len(args))})"
        empty = [r[0] for r in self._rows(sql, args)]
        self._c.executemany("DELETE FROM pods WHERE id = ?", [(p,) for p in empty])
        return empty

    # ---- the audit trail ------------------------------------------------------------
    def insert_event(self, credential: str, operation: str, obj: str, status: int,
                     outcome: str, detail: str | None, when: float | None = None) -> int:
        cur = self._c.execute(
            "INSERT INTO events (time, credential, operation, object, status, outcome, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (time.time() if when is None else when, credential, operation, obj, status,
             outcome, detail))
        return cur.lastrowid

    def prune_events(self, keep: int, older_than: float) -> int:
        """Keep at most the newest `keep` events, none from before `older_than`."""
        newest = self._rows("SELECT MAX(id) FROM events")[0][0] or 0
        cur = self._c.execute("DELETE FROM events WHERE id <= ? OR time < ?",
                              (newest - keep, older_than))
        return cur.rowcount

    def events(self, obj: str | None = None, kind: str | None = None,
               since: float | None = None, until: float | None = None,
               before: int | None = None, limit: int = 100) -> list[Event]:
        """Newest first: events of one object (or of every object of a kind), from `since`
        to `until` (times), with ids below `before` (the previous page's last)."""
        where, args = [], []
        if obj is not None:
            where.append("object = ?")
            args.append(obj)
        if kind is not None:
            where.append("object >= ? AND object < ?")       # "port:" .. "port;" (index)
            args += [f"{kind}:", f"{kind};"]
        for clause, value in (("time >= ?", since), ("time <= ?", until),
                              ("id < ?", before)):
            if value is not None:
                where.append(clause)
                args.append(value)
        sql = f"SELECT {_EVENT} FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [Event(*r) for r in self._rows(sql + " ORDER BY id DESC LIMIT ?", [*args, limit])]
