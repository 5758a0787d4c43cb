"""The etcd store's local mirror: the whole state in a private SQLite file with the store's
schema, loaded from one list of the prefix, kept current from the watch's events, and the
rows a transaction changed, read back as the puts and deletes of one etcd transaction.

Not thread-safe by itself: EtcdStore (etcd_store.py) holds its lock around every call but
the reads, which use `reader`, a `query_only` connection of their own (WAL: it sees the
last local commit and never waits for a writer).

`revision` is the etcd revision up to which the mirror holds every write of the store
(every store write puts `meta/commit`, so a range of `meta/commit` whose mod_revision is
`meta_rev` proves there was none since); events at or below it are already in.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field

from controller.etcd import Compare, Delete, Event, Put, RangeResult, key_absent
from controller.etcd_layout import META_COMMIT, Layout, Row, decode_row, encode_row
from controller.rows import create_schema

# changes seen in the watch: table -> primary keys (as text) of its rows that changed
Changes = dict[str, set[tuple[str, ...]]]


@dataclass
class Plan:
    """The etcd side of one local transaction."""

    compares: list[Compare] = field(default_factory=list)
    ops: list[Put | Delete] = field(default_factory=list)
    puts: dict[str, Row] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)


class Mirror:
    def __init__(self, prefix: str) -> None:
        # tmpfs when there is one; a file, not :memory:, so reads get a connection of their own
        self.dir = tempfile.mkdtemp(prefix="loris-etcd-mirror-",
                                    dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        path = os.path.join(self.dir, "mirror.db")
        c = self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        c.execute("PRAGMA journal_mode = WAL")
        c.execute("PRAGMA synchronous = OFF")        # a cache: etcd is the truth
        c.execute("PRAGMA foreign_keys = ON")
        create_schema(c)
        self.layout = Layout.from_schema(c, prefix)
        self._install_triggers()
        self.reader = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.reader.execute("PRAGMA query_only = ON")
        self.rows: dict[str, Row] = {}      # key -> row, as in etcd
        self.meta_rev = -1                  # mod_revision of meta/commit the mirror holds
        self.revision = 0

    def _install_triggers(self) -> None:
        """Temporary triggers: every row a statement inserts, updates or deletes (foreign
        key cascades included) is recorded in `changed` by table and primary key."""
        self.conn.execute("CREATE TEMP TABLE changed (tbl TEXT NOT NULL, pk TEXT NOT NULL)")
        for t in self.layout.tables.values():
            def pk(row: str, t=t) -> str:
                return "json_array(" + ", ".join(f"{row}.{c}" for c in t.key_columns) + ")"
            for when, rows in (("INSERT", ("NEW",)), ("UPDATE", ("OLD", "NEW")),
                               ("DELETE", ("OLD",))):
                values = ", ".join(f"('{t.name}', {pk(r)})" for r in rows)
                self.conn.execute(
                    f"CREATE TEMP TRIGGER changed_{t.name}_{when.lower()} AFTER {when} ON "
                    f"main.{t.name} BEGIN INSERT INTO changed (tbl, pk) VALUES {values}; END")

    # ----- from etcd -------------------------------------------------------------------

    def load(self, listed: RangeResult) -> None:
        """Replace everything with one consistent list of the prefix."""
        rows: dict[str, Row] = {}
        sequences: dict[str, int] = {}
        meta_rev = 0
        for kv in listed.kvs:
            parsed = self.layout.parse(kv.key)
            if parsed is not None:
                rows[kv.key] = decode_row(self.layout.tables[parsed[0]], kv.value)
            elif kv.key == self.layout.key(META_COMMIT):
                meta_rev = kv.mod_revision
            elif (table := self._seq_table(kv.key)) is not None:
                sequences[table] = int(kv.value)

        def fill(c: sqlite3.Connection) -> None:
            for table in self.layout.tables:
                c.execute(f"DELETE FROM {table}")
            for key, row in rows.items():
                self._upsert(self.layout.parse(key)[0], row)
            c.execute("DELETE FROM sqlite_sequence")
            for table, seq in sequences.items():
                self._set_sequence(table, seq)

        self._unchecked(fill)
        self.rows, self.meta_rev, self.revision = rows, meta_rev, listed.revision

    def apply(self, events: Iterable[Event], revision: int) -> Changes:
        """The watch's events up to `revision` (a batch's); those the mirror holds already
        are skipped. Returns the rows that changed."""
        fresh = [e for e in events if e.revision > self.revision]
        changes: Changes = {}

        def change(c: sqlite3.Connection) -> None:
            for e in fresh:
                key = e.kv.key
                parsed = self.layout.parse(key)
                if parsed is not None:
                    table, pk = parsed
                    if e.type == "PUT":
                        row = decode_row(self.layout.tables[table], e.kv.value)
                        self._upsert(table, row)
                        self.rows[key] = row
                    else:
                        old = self.rows.pop(key, None)
                        if old is not None:
                            t = self.layout.tables[table]
                            c.execute(f"DELETE FROM {table} WHERE "
                                      + " AND ".join(f"{col} = ?" for col in t.key_columns),
                                      [old[col] for col in t.key_columns])
                    changes.setdefault(table, set()).add(pk)
                elif key == self.layout.key(META_COMMIT) and e.type == "PUT":
                    self.meta_rev = max(self.meta_rev, e.kv.mod_revision)
                elif (table := self._seq_table(key)) is not None and e.type == "PUT":
                    self._set_sequence(table, int(e.kv.value))

        if fresh:
            self._unchecked(change)
        self.revision = max(self.revision, revision)
        return changes

    def _seq_table(self, key: str) -> str | None:
        for table in self.layout.tables:
            if key == self.layout.seq_key(table):
                return table
        return None

    def _upsert(self, table: str, row: Row) -> None:
        t = self.layout.tables[table]
        cols = list(row)
        sets = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in t.key_columns)
        self.conn.execute(
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
            f"ON CONFLICT ({', '.join(t.key_columns)}) DO "
            + (f"UPDATE SET {sets}" if sets else "NOTHING"), [row[c] for c in cols])

    def _set_sequence(self, table: str, seq: int) -> None:
        c = self.conn
        c.execute("INSERT INTO sqlite_sequence (name, seq) SELECT ?, 0 WHERE NOT EXISTS "
                  "(SELECT 1 FROM sqlite_sequence WHERE name = ?)", (table, table))
        c.execute("UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = ?", (seq, table))

    def _unchecked(self, fn) -> None:
        """`fn(conn)` in one local transaction with foreign keys off (rows arrive in key
        order, children before parents) and the change log left empty."""
        c = self.conn
        c.execute("PRAGMA foreign_keys = OFF")
        try:
            c.execute("BEGIN")
            fn(c)
            c.execute("DELETE FROM changed")
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        finally:
            c.execute("PRAGMA foreign_keys = ON")

    # ----- to etcd ---------------------------------------------------------------------

    def sequences(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT name, seq FROM sqlite_sequence").fetchall())

    def plan(self, sequences_before: dict[str, int]) -> Plan:
        """The puts, deletes and compares of the rows the open local transaction changed
        (rows, their index keys, moved AUTOINCREMENT counters); empties the change log."""
        c, layout, plan = self.conn, self.layout, Plan()
        changed = c.execute("SELECT DISTINCT tbl, pk FROM changed").fetchall()
        c.execute("DELETE FROM changed")
        old_index: dict[str, str] = {}
        new_index: dict[str, str] = {}
        for table, pk in changed:
            t = layout.tables[table]
            key_values = [v[0] for v in c.execute("SELECT value FROM json_each(?)", (pk,))]
            key = layout.row_key(table, key_values)
            where = " AND ".join(f"{col} = ?" for col in t.key_columns)
            cur = c.execute(f"SELECT * FROM {table} WHERE {where}", key_values)
            found = cur.fetchone()
            new = dict(zip([d[0] for d in cur.description], found, strict=True)) \
                if found else None
            old = self.rows.get(key)
            if old == new:
                continue
            for idx in layout.index_keys(table, old or {}):
                old_index[idx] = key
            for idx in layout.index_keys(table, new or {}):
                new_index[idx] = key
            if new is None:
                plan.deleted.append(key)
            else:
                plan.puts[key] = new
                if old is None:
                    plan.compares.append(key_absent(key))
        plan.ops = [Put(k, encode_row(v)) for k, v in plan.puts.items()]
        plan.ops += [Delete(k) for k in plan.deleted]
        for idx, owner in new_index.items():
            if old_index.get(idx) != owner:
                plan.ops.append(Put(idx, owner))
                if idx not in old_index:
                    plan.compares.append(key_absent(idx))
        plan.ops += [Delete(idx) for idx in old_index if idx not in new_index]
        for table, seq in self.sequences().items():
            if sequences_before.get(table) != seq:
                plan.ops.append(Put(layout.seq_key(table), str(seq)))
        return plan

    def committed(self, plan: Plan, revision: int) -> None:
        """The local transaction of `plan` is now in etcd, at `revision`."""
        self.rows.update(plan.puts)
        for key in plan.deleted:
            self.rows.pop(key, None)
        self.meta_rev = self.revision = revision

    def close(self) -> None:
        self.reader.close()
        self.conn.close()
        shutil.rmtree(self.dir, ignore_errors=True)
