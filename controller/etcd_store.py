"""The store on etcd (`LORIS_STORE=etcd`): the same `tx()`/`read()` and the same `Tx` row
methods as the SQLite store, so the rest of the controller cannot tell them apart.

How: each controller keeps the whole state in a local SQLite file with the store's schema
(etcd_mirror.py: a mirror of the etcd keys laid out by etcd_layout.py), and runs the very
same `Tx` SQL against it. Temporary triggers record which rows a transaction changed; at the end of
the block those rows become ONE etcd transaction:

    compare  mod_revision(meta/commit) == the revision the mirror is at  (optimistic lock)
             version(row) == 0 for each new row, version(idx key) == 0 for each new index key
    success  put/delete each changed row, put/delete its index keys (UNIQUE constraints),
             put meta/seq/<table> when an AUTOINCREMENT moved, put meta/commit,
             put txns/<writer id> = this transaction's id
    failure  get meta/commit, get txns/<writer id>

If the mirror was behind (another controller wrote), the compare fails, nothing is
written, the mirror catches up and the block's caller gets 503 `store_conflict`; `write(fn)`
runs `fn` again on the fresh state instead (at most a few times). A write whose outcome is
unknown (timeout, member lost) is sent again unchanged until etcd answers: if the first one
was applied, the compare now fails and `txns/<writer id>` holds this transaction's id, which
says so; it can never be applied twice, since both copies compare the same revision.

A watch of the prefix (its own thread) applies every other controller's writes to the
mirror as they happen and hands the changed rows to `on_change` (the controller wakes its
long polls and connects with them). A current `read()` (REST views) and a `tx()` first
read `meta/commit` (one linearizable range): if it moved past the mirror, they wait for the
watch (up to FOLLOW_WAIT), else list the prefix again. So such a read sees every write
acknowledged before it, from any controller. The controller's own steps, which a change of
the store wakes anyway, read with `current=False`: the mirror as the watch keeps it, with no
round trip while the watch is up; and `write(fn)` runs `fn` on that mirror first, since the
commit's compare catches a mirror behind etcd (a conflict, run again current), and confirms
on the current state a refusal `fn` made there. A connect then costs about one round trip per
commit instead of one per step. One lock serialises the transactions of this process, as in
the SQLite store.

Versions: `next_version()` takes max(counter + 1, etcd revision the mirror is at + 1), so
the desired-state version agents see comes from the store's revision: above every earlier
one, at most the revision of the write that made it, the same on every controller.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from controller.errors import ApiError, conflict, unavailable
from controller.etcd import (
    Compacted,
    EtcdClient,
    Get,
    OutcomeUnknown,
    Put,
    RequestFailed,
    StoreError,
    StoreUnavailable,
    Watcher,
    mod_revision_is,
)
from controller.etcd_layout import DEFAULT_PREFIX, META_COMMIT, META_SCHEMA, TXNS
from controller.etcd_mirror import Changes, Mirror, Plan
from controller.rows import SCHEMA_VERSION
from controller.store import Tx
from flows.contract import GLOBAL_POD

LOG = logging.getLogger("loris.store")
T = TypeVar("T")
WRITE_ATTEMPTS = 5
WRITE_PATIENCE = 10.0     # seconds a write(fn) keeps running fn again after conflicts
FOLLOW_WAIT = 1.0     # seconds a transaction waits for the watch before listing again
ELECTION_RETRY_S = 0.1   # pause between tries while etcd has no leader, or an outcome is unknown


def _is_none(value: object) -> bool:
    return value is None


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
                 attempts_timeout: float | None = None, follow: bool = True,
                 election_wait: float = 3.0) -> None:
        self.client = client
        self.path = client.name            # what logs and errors call the store
        self.writer_id = uuid.uuid4().hex[:16]
        # called with the seconds of each commit that wrote rows (the controller's metrics)
        self.on_commit: Callable[[float], None] | None = None
        # called (from the watch's thread, no lock held) with the rows other controllers
        # changed: {table: {primary key as text parts}} (wiring.py wakes waiters with it)
        self.on_change: Callable[[Changes], None] | None = None
        self._unknown_for = attempts_timeout if attempts_timeout else 3 * client.timeout
        # A member killed or cut off: the others elect a leader within a few election
        # timeouts, and a call meanwhile finds none. It tries again that long before the
        # 503; without quorum, calls still fail within seconds, naming the store.
        self._election_wait = election_wait
        self._lock = threading.RLock()
        self._caught_up = threading.Condition(self._lock)    # the watch applied a batch
        self._read_lock = threading.Lock()
        self.mirror = Mirror(prefix)
        self.layout = self.mirror.layout
        self._schema_to_write: int | None = None
        self._tx_open = False                 # a write transaction holds the lock
        self._closed = threading.Event()
        self._watcher: Watcher | None = None
        self._follower: threading.Thread | None = None
        self._initialise()
        if follow:
            self._follower = threading.Thread(target=self._follow, name="loris-etcd-watch",
                                              daemon=True)
            self._follower.start()

    @property
    def revision(self) -> int:
        """The etcd revision up to which this controller holds every write of the store."""
        return self.mirror.revision

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

    # ----- keeping the mirror current --------------------------------------------------

    def _sync(self) -> None:
        """Bring the mirror up to the last write in etcd: one range of meta/commit; if it
        moved, wait a moment for the watch to bring it, else list the prefix again."""
        deadline = time.monotonic() + self._election_wait
        while True:
            try:
                result = self.client.range(self.layout.key(META_COMMIT))
                break
            except StoreUnavailable as e:
                if time.monotonic() >= deadline:
                    raise self._unavailable(e) from None
                time.sleep(ELECTION_RETRY_S)
            except StoreError as e:
                raise self._unavailable(e) from None
        meta_rev = result.kvs[0].mod_revision if result.kvs else 0
        if meta_rev == self.mirror.meta_rev:
            self.mirror.revision = max(self.mirror.revision, result.revision)
            return
        if self._follower is not None and self._caught_up.wait_for(
                lambda: self.mirror.meta_rev >= meta_rev, FOLLOW_WAIT):
            return
        self._reload()

    def _reload(self) -> None:
        try:
            self.mirror.load(self.client.list_prefix(self.layout.prefix))
        except StoreError as e:
            raise self._unavailable(e) from None

    def _follow(self) -> None:
        """The watch's thread: apply every batch of events to the mirror; after a
        compaction or a long failure, list again and watch on from there."""
        while not self._closed.is_set():
            with self._lock:
                start = self.mirror.revision + 1
            watcher = self._watcher = self.client.watch(
                self.layout.prefix, prefix=True, start_revision=start, max_disconnected=30)
            try:
                for batch in watcher:
                    with self._caught_up:
                        changes = self.mirror.apply(batch.events, batch.revision)
                        self._caught_up.notify_all()
                    if changes and self.on_change is not None:
                        try:
                            self.on_change(changes)
                        except Exception:
                            LOG.exception("%s: handling changes from other controllers",
                                          self.path)
            except (Compacted, StoreError) as e:
                if self._closed.is_set():
                    break
                LOG.warning("%s: the watch stopped (%s); listing the state again", self.path, e)
                self._closed.wait(0.5)
                try:
                    with self._lock:
                        self._reload()
                except ApiError as again:
                    LOG.warning("%s", again.message)
            finally:
                watcher.cancel()

    # ----- transactions ----------------------------------------------------------------

    @contextmanager
    def tx(self, current: bool = True) -> Iterator[Tx]:
        """A write transaction: one etcd transaction when the block ends (nothing if it
        raises, or changed nothing). StoreConflict (503) when another controller wrote
        meanwhile; `write(fn)` retries that by itself. `current=False`: on the mirror as
        the watch keeps it, without first asking etcd where it is (write() does so)."""
        with self._lock:
            if current or not self.watching:
                self._sync()
            c = self.mirror.conn
            c.execute("BEGIN")
            self._tx_open = True
            sequences = self.mirror.sequences()
            try:
                yield EtcdTx(c, self.mirror.revision)
            except BaseException:
                c.execute("ROLLBACK")
                c.execute("DELETE FROM changed")
                self._tx_open = False
                raise
            try:
                plan = self.mirror.plan(sequences)
                if not plan.ops and self._schema_to_write is None:
                    c.execute("COMMIT")
                    return
                started = time.perf_counter()
                revision = self._commit(plan)
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                c.execute("DELETE FROM changed")
                raise
            finally:
                self._tx_open = False
            c.execute("COMMIT")
            self.mirror.committed(plan, revision)
            if self.on_commit is not None:
                self.on_commit(time.perf_counter() - started)

    def write(self, fn: Callable[[Tx], T]) -> T:
        """`fn(tx)` in a write transaction, run again on the fresh state when another
        controller wrote meanwhile (StoreConflict), for up to WRITE_PATIENCE seconds (at
        least WRITE_ATTEMPTS times): three controllers under a burst of connects conflict
        often, and a connect's undo or a disconnect that gave up would leave a port. The
        pauses grow and are jittered, so that writers that collided do not collide again."""
        deadline = time.monotonic() + WRITE_PATIENCE
        attempt = 0
        # The first try runs on the mirror the watch keeps current (no round trip before
        # the commit, whose compare catches a mirror behind etcd); a refusal it leads to
        # is confirmed on the current state, so nobody is refused for a stale mirror.
        current = False
        while True:
            fn_refused = False          # not the commit's own errors (a 503 after waiting)
            try:
                with self.tx(current) as tx:
                    try:
                        return fn(tx)
                    except (ApiError, sqlite3.IntegrityError):
                        fn_refused = True
                        raise
            except StoreConflict:
                current = True
                attempt += 1
                if attempt >= WRITE_ATTEMPTS and time.monotonic() >= deadline:
                    raise
                time.sleep(random.uniform(0.5, 1.5) * min(0.005 * attempt, 0.1))
            except (ApiError, sqlite3.IntegrityError):
                if current or not fn_refused:
                    raise
                current = True

    @contextmanager
    def read(self, current: bool = True) -> Iterator[Tx]:
        """A read-only transaction over the last write acknowledged by etcd; it never waits
        for a write transaction (while this process writes, it sees the mirror as that
        write found it, which is never older than the last write of this process).

        `current=False`, for the controller's own steps that a change of the store wakes
        anyway (a connect waiting for its port's report, the programmer, long polls,
        authentication): while the watch is connected, the mirror as it stands, without the
        round trip to etcd; it holds every write of this process, and those of the other
        controllers up to the watch's delay (milliseconds). With the watch down, the same
        as a current read."""
        if not current and self.watching:
            got = False
        else:
            # The lock is held by a write transaction (do not wait for it) or, briefly, by
            # the watch applying a batch (wait: the batch may be the write this read must
            # see).
            got = self._lock.acquire(blocking=False) or (
                not self._tx_open and self._lock.acquire(timeout=FOLLOW_WAIT))
        if got:
            try:
                if not self.mirror.conn.in_transaction:    # not inside this thread's tx()
                    self._sync()
            finally:
                self._lock.release()
        with self._read_lock:
            reader = self.mirror.reader
            reader.execute("BEGIN")
            try:
                yield EtcdTx(reader, self.mirror.revision)
            finally:
                reader.execute("ROLLBACK")

    def read_confirmed(self, fn: Callable[[Tx], T],
                       missing: Callable[[T], bool] = _is_none) -> T:
        """`fn(tx)` on the state as this controller holds it (`read(current=False)`); when
        what it found is `missing` (default: None), again on the current state, so that a
        row written through another controller a moment ago is found: a 404 or a 401 is
        never the watch's delay."""
        with self.read(current=False) as tx:
            found = fn(tx)
        if not missing(found):
            return found
        with self.read() as tx:
            return fn(tx)

    @property
    def watching(self) -> bool:
        """Whether the watch's stream is up, bringing other controllers' writes."""
        watcher = self._watcher
        return self._follower is not None and watcher is not None and watcher.connected

    def _commit(self, plan: Plan) -> int:
        """Send the transaction, again after an unknown outcome; its revision."""
        layout = self.layout
        meta, mine = layout.key(META_COMMIT), layout.key(TXNS + self.writer_id)
        base = max(self.mirror.meta_rev, 0)
        txid = uuid.uuid4().hex
        compares = [mod_revision_is(meta, base), *plan.compares]
        ops = list(plan.ops)
        if self._schema_to_write is not None:
            ops.append(Put(layout.key(META_SCHEMA), str(self._schema_to_write)))
        ops += [Put(meta, txid), Put(mine, txid)]
        started = time.monotonic()
        unknown: OutcomeUnknown | None = None
        while True:
            try:
                result = self.client.txn(compares, ops, [Get(meta), Get(mine)])
            except StoreUnavailable as e:     # OutcomeUnknown included
                unknown = e if isinstance(e, OutcomeUnknown) else unknown
                # not applied: safe to send again while an election may be under way;
                # unknown: the compares make sending it again safe
                patience = self._election_wait if unknown is None else self._unknown_for
                if time.monotonic() - started >= patience:
                    self.mirror.meta_rev = -1     # reload before the next transaction
                    raise self._unavailable(e, unknown is not None) from None
                time.sleep(ELECTION_RETRY_S)
                continue
            except RequestFailed as e:
                raise self._unavailable(e) from None
            if result.succeeded:
                return result.revision
            meta_kvs, mine_kvs = result.responses[0].kvs, result.responses[1].kvs
            if mine_kvs and mine_kvs[0].value == txid.encode():
                return mine_kvs[0].mod_revision          # the unknown write was applied
            if (meta_kvs[0].mod_revision if meta_kvs else 0) != base or unknown is not None:
                raise StoreConflict(self.path)
            self.mirror.meta_rev = -1                    # reload before the next one
            raise conflict(f"{self.path}: an index key this write creates exists already "
                           "although no row holds it; the store's index keys need repair")

    def _unavailable(self, e: Exception, unknown: bool = False) -> ApiError:
        if unknown:
            return unavailable(f"{e}; the write may still be applied: read the state back "
                               "before retrying", "store_outcome_unknown")
        return unavailable(f"the store is not available: {e}", "store_unavailable")

    # ----- the rest of the Store interface ---------------------------------------------

    def pragma(self, name: str) -> Any:
        """A PRAGMA of the local mirror (the SQLite store answers for its file)."""
        if not name.isidentifier():
            raise ValueError(f"not a pragma name: {name!r}")
        with self._lock:
            return self.mirror.conn.execute(f"PRAGMA {name}").fetchone()[0]

    def close(self) -> None:
        self._closed.set()
        if self._watcher is not None:
            self._watcher.cancel()
        if self._follower is not None:
            self._follower.join(5)
        with self._lock:
            try:
                self.client.delete(self.layout.key(TXNS + self.writer_id))
            except StoreError as e:
                LOG.warning("%s: could not delete this writer's txns key: %s", self.path, e)
            with self._read_lock:
                self.mirror.close()
            self.client.close()
