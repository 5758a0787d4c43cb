"""The store on etcd (`LORIS_STORE=etcd`): the same `tx()`/`read()` and the same `Tx` row
methods as the SQLite store, so the rest of the controller cannot tell them apart.

How: each controller keeps the whole state in an in-memory SQLite database with the
store's schema (a mirror of the etcd keys, etcd_layout.py), and runs the very same `Tx`
SQL against it. Temporary triggers record which rows a transaction changed; at the end of
the block those rows become ONE etcd transaction:

    compare  mod_revision(meta/commit) == the revision the mirror is at  (optimistic lock)
             version(row) == 0 for each new row, version(idx key) == 0 for each new index key
    success  put/delete each changed row, put/delete its index keys (UNIQUE constraints),
             put meta/seq/<table> when an AUTOINCREMENT moved, put meta/commit,
             put txns/<writer id> = this transaction's id
    failure  get meta/commit, get txns/<writer id>

If the mirror was behind (another controller wrote), the compare fails, nothing is
written, the mirror reloads and the block's caller gets 503 `store_conflict`; `write(fn)`
runs `fn` again on the fresh state instead (at most a few times). A write whose outcome is
unknown (timeout, member lost) is sent again unchanged until etcd answers: if the first one
was applied, the compare now fails and `txns/<writer id>` holds this transaction's id, which
says so; it can never be applied twice, since both copies compare the same revision.

Every `tx()` and `read()` first reads `meta/commit` (one linearizable range): if it moved
since the mirror was loaded, the mirror reloads from one consistent list of the prefix. So
a read sees every write acknowledged before it, from any controller. One lock serialises
the transactions of this process, as in the SQLite store.

Versions: `next_version()` takes max(counter + 1, etcd revision the mirror is at + 1), so
the desired-state version agents see comes from the store's revision: above every earlier
one, at most the revision of the write that made it, the same on every controller.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from controller.errors import ApiError, conflict, unavailable
from controller.etcd import (
    Delete,
    EtcdClient,
    Get,
    OutcomeUnknown,
    Put,
    RequestFailed,
    StoreError,
    StoreUnavailable,
    key_absent,
    mod_revision_is,
)
from controller.etcd_layout import (
    DEFAULT_PREFIX,
    META_COMMIT,
    META_SCHEMA,
    TXNS,
    Layout,
    Row,
    decode_row,
    encode_row,
)
from controller.rows import MIGRATIONS, SCHEMA, SCHEMA_VERSION
from controller.store import Tx
from flows.contract import GLOBAL_POD

LOG = logging.getLogger("loris.store")
T = TypeVar("T")
AUTOINCREMENT_TABLES = ("ports", "events")
WRITE_ATTEMPTS = 5


class StoreConflict(ApiError):
    """Another controller wrote between this transaction's start and its commit."""

    def __init__(self, store: str) -> None:
        super().__init__(503, "store_conflict",
                         f"{store}: another controller changed the state at the same time; "
                         "nothing was written: retry")


class EtcdTx(Tx):
    """A Tx over the mirror; versions come from the etcd revision (module docstring)."""

    def __init__(self, conn: sqlite3.Connection, revision: int) -> None:
        super().__init__(conn)
        self._revision = revision

    def next_version(self) -> int:
        self._c.execute("UPDATE counters SET value = MAX(value + 1, ?) WHERE name = 'version'",
                        (self._revision + 1,))
        return self._one("SELECT value FROM counters WHERE name = 'version'")[0]


class EtcdStore:
    """The controller's state in etcd (see the module docstring)."""

    def __init__(self, client: EtcdClient, prefix: str = DEFAULT_PREFIX,
                 attempts_timeout: float | None = None) -> None:
        self.client = client
        self.path = client.name            # what logs and errors call the store
        self.writer_id = uuid.uuid4().hex[:16]
        # called with the seconds of each commit that wrote rows (the controller's metrics)
        self.on_commit: Callable[[float], None] | None = None
        self._unknown_for = attempts_timeout if attempts_timeout else 3 * client.timeout
        self._lock = threading.RLock()
        # The mirror is a WAL file in a private directory (tmpfs when there is one), not
        # :memory:, so that a read has a connection of its own that sees the last commit
        # and never waits for a write transaction (as with the SQLite store).
        self._dir = tempfile.mkdtemp(prefix="loris-etcd-mirror-",
                                     dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        mirror = os.path.join(self._dir, "mirror.db")
        self._conn = sqlite3.connect(mirror, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = OFF")     # a cache: etcd is the truth
        self._conn.execute("PRAGMA foreign_keys = ON")
        for statement in filter(str.strip, SCHEMA.split(";")):
            self._conn.execute(statement)
        for step in range(1, SCHEMA_VERSION + 1):
            for statement in filter(str.strip, MIGRATIONS.get(step, "").split(";")):
                self._conn.execute(statement)
        self.layout = Layout.from_schema(self._conn, prefix)
        self._install_triggers()
        self._read_lock = threading.Lock()
        self._reader = sqlite3.connect(mirror, check_same_thread=False, isolation_level=None)
        self._reader.execute("PRAGMA query_only = ON")
        self._rows: dict[str, Row] = {}       # key -> row, as committed in etcd
        self._meta_rev = -1                   # mod_revision of meta/commit the mirror is at
        self.revision = 0                     # the etcd revision the mirror is at
        self._initialise()

    # ----- the mirror ------------------------------------------------------------------

    def _install_triggers(self) -> None:
        self._conn.execute("CREATE TEMP TABLE changed (tbl TEXT NOT NULL, pk TEXT NOT NULL)")
        for t in self.layout.tables.values():
            def pk(row: str, t=t) -> str:
                return "json_array(" + ", ".join(f"{row}.{c}" for c in t.key_columns) + ")"
            for when, rows in (("INSERT", ("NEW",)), ("UPDATE", ("OLD", "NEW")),
                               ("DELETE", ("OLD",))):
                values = ", ".join(f"('{t.name}', {pk(r)})" for r in rows)
                self._conn.execute(
                    f"CREATE TEMP TRIGGER changed_{t.name}_{when.lower()} AFTER {when} ON "
                    f"main.{t.name} BEGIN INSERT INTO changed (tbl, pk) VALUES {values}; END")

    def _initialise(self) -> None:
        """Load the mirror; on an empty store write the schema version, the version counter
        and the global pod (two controllers starting at once: one wins, the other reloads)."""
        for _ in range(WRITE_ATTEMPTS):
            try:
                with self.tx() as tx:
                    schema = self.client.get(self.layout.key(META_SCHEMA))
                    found = int(schema.value) if schema else 0
                    if found > SCHEMA_VERSION:
                        raise RuntimeError(
                            f"{self.path} holds schema {found}, newer than this controller's "
                            f"{SCHEMA_VERSION}; upgrade the controller")
                    self._schema_to_write = SCHEMA_VERSION if found < SCHEMA_VERSION else None
                    tx._c.execute("INSERT OR IGNORE INTO counters (name, value) "
                                  "VALUES ('version', 0)")
                    if tx.pod(GLOBAL_POD) is None:
                        tx.insert_pod(GLOBAL_POD, "global", None)
                return
            except StoreConflict:
                continue
            finally:
                self._schema_to_write = None
        raise RuntimeError(f"{self.path}: could not initialise the store (other controllers "
                           "kept writing)")

    _schema_to_write: int | None = None

    def _sync(self) -> None:
        """Bring the mirror up to the last write in etcd (one range; a reload if needed)."""
        try:
            result = self.client.range(self.layout.key(META_COMMIT))
        except StoreError as e:
            raise self._unavailable(e) from None
        meta_rev = result.kvs[0].mod_revision if result.kvs else 0
        if meta_rev != self._meta_rev:
            self._reload()
        else:
            self.revision = max(self.revision, result.revision)

    def _reload(self) -> None:
        try:
            listed = self.client.list_prefix(self.layout.prefix)
        except StoreError as e:
            raise self._unavailable(e) from None
        rows: dict[str, Row] = {}
        by_table: dict[str, list[Row]] = {t: [] for t in self.layout.tables}
        sequences: dict[str, int] = {}
        meta_rev = 0
        for kv in listed.kvs:
            parsed = self.layout.parse(kv.key)
            if parsed is not None:
                row = decode_row(self.layout.tables[parsed[0]], kv.value)
                rows[kv.key] = row
                by_table[parsed[0]].append(row)
            elif kv.key == self.layout.key(META_COMMIT):
                meta_rev = kv.mod_revision
            for table in AUTOINCREMENT_TABLES:
                if kv.key == self.layout.seq_key(table):
                    sequences[table] = int(kv.value)
        c = self._conn
        c.execute("PRAGMA foreign_keys = OFF")
        try:
            c.execute("BEGIN")
            for table in self.layout.tables:
                c.execute(f"DELETE FROM {table}")
            for table, table_rows in by_table.items():
                for row in table_rows:
                    cols = list(row)
                    c.execute(f"INSERT INTO {table} ({', '.join(cols)}) VALUES "
                              f"({', '.join('?' * len(cols))})", [row[k] for k in cols])
            c.execute("DELETE FROM sqlite_sequence")
            for table, seq in sequences.items():
                c.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, seq))
            c.execute("DELETE FROM changed")
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        finally:
            c.execute("PRAGMA foreign_keys = ON")
        self._rows = rows
        self._meta_rev = meta_rev
        self.revision = listed.revision

    def _sequences(self) -> dict[str, int]:
        return dict(self._conn.execute("SELECT name, seq FROM sqlite_sequence").fetchall())

    # ----- transactions ----------------------------------------------------------------

    @contextmanager
    def tx(self) -> Iterator[Tx]:
        """A write transaction: one etcd transaction when the block ends (nothing if it
        raises, or changed nothing). StoreConflict (503) when another controller wrote
        meanwhile; `write(fn)` retries that by itself."""
        with self._lock:
            self._sync()
            c = self._conn
            c.execute("BEGIN")
            sequences = self._sequences()
            try:
                yield EtcdTx(c, self.revision)
            except BaseException:
                c.execute("ROLLBACK")
                c.execute("DELETE FROM changed")
                raise
            try:
                plan = self._plan(sequences)
                if plan is None:
                    c.execute("COMMIT")
                    return
                started = time.perf_counter()
                revision = self._commit(*plan[:3])
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                c.execute("DELETE FROM changed")
                raise
            c.execute("COMMIT")
            self._rows.update(plan[3])
            for key in plan[4]:
                self._rows.pop(key, None)
            self._meta_rev = self.revision = revision
            if self.on_commit is not None:
                self.on_commit(time.perf_counter() - started)

    def write(self, fn: Callable[[Tx], T]) -> T:
        """`fn(tx)` in a write transaction, run again on the fresh state when another
        controller wrote meanwhile (StoreConflict), a few times at most."""
        for attempt in range(WRITE_ATTEMPTS):
            try:
                with self.tx() as tx:
                    return fn(tx)
            except StoreConflict:
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
                time.sleep(0.005 * (attempt + 1))
        raise AssertionError("unreachable")

    @contextmanager
    def read(self) -> Iterator[Tx]:
        """A read-only transaction over the last write acknowledged by etcd; it never waits
        for a write transaction (while this process writes, it sees the mirror as that
        write found it, which is never older than the last write of this process)."""
        if self._lock.acquire(blocking=False):
            try:
                if not self._conn.in_transaction:      # not inside this thread's tx()
                    self._sync()
            finally:
                self._lock.release()
        with self._read_lock:
            self._reader.execute("BEGIN")
            try:
                yield EtcdTx(self._reader, self.revision)
            finally:
                self._reader.execute("ROLLBACK")

    def _plan(self, sequences_before: dict[str, int]) -> tuple | None:
        """(compares, success ops, txn id, rows put, keys deleted) of the rows the open
        transaction changed; None when it changed nothing."""
        c, layout = self._conn, self.layout
        changed = c.execute("SELECT DISTINCT tbl, pk FROM changed").fetchall()
        c.execute("DELETE FROM changed")
        puts: dict[str, Row] = {}
        deleted: list[str] = []
        old_index: dict[str, str] = {}
        new_index: dict[str, str] = {}
        compares = []
        for table, pk in changed:
            t = layout.tables[table]
            values = c.execute("SELECT json_each.value FROM json_each(?)", (pk,)).fetchall()
            key_values = [v[0] for v in values]
            key = layout.row_key(table, key_values)
            where = " AND ".join(f"{col} = ?" for col in t.key_columns)
            cur = c.execute(f"SELECT * FROM {table} WHERE {where}", key_values)
            found = cur.fetchone()
            new = dict(zip([d[0] for d in cur.description], found, strict=True)) if found else None
            old = self._rows.get(key)
            if old == new:
                continue
            for idx in layout.index_keys(table, old or {}):
                old_index[idx] = key
            for idx in layout.index_keys(table, new or {}):
                new_index[idx] = key
            if new is None:
                deleted.append(key)
            else:
                puts[key] = new
                if old is None:
                    compares.append(key_absent(key))
        sequences = self._sequences()
        moved = {t: s for t, s in sequences.items() if sequences_before.get(t) != s}
        if not puts and not deleted and not moved and self._schema_to_write is None:
            return None
        txid = uuid.uuid4().hex
        ops: list = [Put(k, encode_row(v)) for k, v in puts.items()]
        ops += [Delete(k) for k in deleted]
        for idx, owner in new_index.items():
            if old_index.get(idx) != owner:
                ops.append(Put(idx, owner))
                if idx not in old_index:
                    compares.append(key_absent(idx))
        ops += [Delete(idx) for idx in old_index if idx not in new_index]
        ops += [Put(layout.seq_key(t), str(s)) for t, s in moved.items()]
        if self._schema_to_write is not None:
            ops.append(Put(layout.key(META_SCHEMA), str(self._schema_to_write)))
        ops.append(Put(layout.key(META_COMMIT), txid))
        ops.append(Put(layout.key(TXNS + self.writer_id), txid))
        compares.insert(0, mod_revision_is(layout.key(META_COMMIT), max(self._meta_rev, 0)))
        return compares, ops, txid, puts, deleted

    def _commit(self, compares: Sequence, ops: Sequence, txid: str) -> int:
        """Send the transaction, again after an unknown outcome; its revision."""
        meta, mine = self.layout.key(META_COMMIT), self.layout.key(TXNS + self.writer_id)
        base = max(self._meta_rev, 0)
        deadline = time.monotonic() + self._unknown_for
        unknown: OutcomeUnknown | None = None
        while True:
            try:
                result = self.client.txn(compares, ops, [Get(meta), Get(mine)])
            except StoreUnavailable as e:     # OutcomeUnknown included
                unknown = e if isinstance(e, OutcomeUnknown) else unknown
                if unknown is None or time.monotonic() >= deadline:
                    self._meta_rev = -1       # reload before the next transaction
                    raise self._unavailable(e, unknown is not None) from None
                time.sleep(0.1)
                continue
            except RequestFailed as e:
                raise self._unavailable(e) from None
            if result.succeeded:
                return result.revision
            meta_kvs, mine_kvs = result.responses[0].kvs, result.responses[1].kvs
            if mine_kvs and mine_kvs[0].value == txid.encode():
                return mine_kvs[0].mod_revision          # the unknown write was applied
            self._meta_rev = -1                           # reload before the next one
            if (meta_kvs[0].mod_revision if meta_kvs else 0) != base or unknown is not None:
                raise StoreConflict(self.path)
            raise conflict(f"{self.path}: an index key this write creates exists already "
                           "although no row holds it; the store's index keys need repair")

    def _unavailable(self, e: Exception, unknown: bool = False) -> ApiError:
        if unknown:
            return unavailable(f"{e}; the write may still be applied: read the state back "
                               "before retrying", "store_outcome_unknown")
        return unavailable(f"the store is not available: {e}", "store_unavailable")

    # ----- the rest of the Store interface ---------------------------------------------

    def pragma(self, name: str) -> Any:
        """A PRAGMA of the in-memory mirror (the SQLite store answers for its file)."""
        if not name.isidentifier():
            raise ValueError(f"not a pragma name: {name!r}")
        with self._lock:
            return self._conn.execute(f"PRAGMA {name}").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            try:
                self.client.delete(self.layout.key(TXNS + self.writer_id))
            except StoreError as e:
                LOG.warning("%s: could not delete this writer's txns key: %s", self.path, e)
            with self._read_lock:
                self._reader.close()
            self._conn.close()
            self.client.close()
            shutil.rmtree(self._dir, ignore_errors=True)
