"""An in-memory replica of the OVS database (the OVS Python IDL), kept by a monitor.

The agent's pass reads what OVS holds from here instead of forking `ovs-vsctl` for a
snapshot (three times a pass before), adds a container's port in ONE transaction with its
ofport pinned, and learns the ofport ovs-vswitchd gave it from the monitor's update
instead of polling snapshots.

Threads: the IDL is driven by a thread of its own (`ovsdb-idl`): it runs the protocol
(`Idl.run()`), then sleeps in a poller until the socket or a wake-up pipe has something.
Everything that touches the IDL holds `_cond`'s lock; a caller's transaction is built and
sent under it, and the caller then waits on `_cond`, which the IDL thread notifies after
every run. Plain threads and the `ovs` package's own poller (not eventlet: the agent does
not monkey-patch, so the poller uses the real `select`).

Only the columns the agent reads or writes are replicated. Creating, configuring and
deleting bridges (`hostprep`), TLS settings and tunnels stay with `ovs-vsctl` (hostagent/
ovs.py): they happen once, not per connect.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import warnings

from hostagent.ovs import Interface, OvsError, Snapshot
from hostagent.ovsdb_view import TABLES, ReplicaView

# ovs.poller looks for eventlet to use its green select if it is monkey-patched; the agent
# never is, and importing eventlet costs seconds on a loaded host (it warns, too). Unless
# something already imported it, the import is made to fail, the poller takes the plain
# select, and eventlet stays importable for anyone after.
_NO_EVENTLET = "eventlet" not in sys.modules
if _NO_EVENTLET:
    sys.modules["eventlet"] = None  # type: ignore[assignment]
try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import ovs.db.idl
        import ovs.dirs
        import ovs.jsonrpc
        import ovs.poller
        import ovs.stream
        import ovs.vlog
finally:
    if _NO_EVENTLET:
        del sys.modules["eventlet"]

log = logging.getLogger(__name__)

COLUMNS = {
    "Bridge": ["name", "ports", "external_ids", "controller"],
    "Port": ["name", "interfaces", "external_ids"],
    "Interface": ["name", "type", "ofport", "ofport_request", "external_ids", "options",
                  "error"],
    "Controller": ["target", "is_connected", "role"],
}
assert tuple(COLUMNS) == TABLES, "the view (hostagent/ovsdb_view.py) reads these tables"


def _one(value: object) -> object:
    """An optional column (a list of 0 or 1 values) as a value or None."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


class OvsdbReplica:
    def __init__(self, target: str | None, timeout: float = 15.0) -> None:
        self.target = target or f"unix:{ovs.dirs.RUNDIR}/db.sock"
        self.timeout = timeout
        self._cond = threading.Condition()
        self._idl: ovs.db.idl.Idl | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._view = ReplicaView()
        self._dirty: set = set()          # (table, uuid) changed since the view took them
        self._refetched = True            # the IDL fetched the whole database anew
        self._pending: list = []          # transactions sent, waiting for their reply
        self._synced = False
        self.change_seqno = 0

    # ---- start ------------------------------------------------------------------------
    def start(self, stop: threading.Event) -> None:
        """Connect, replicate, and keep the replica up to date in a daemon thread; returns
        once the first copy of the database is in memory (OvsError if not within the
        timeout)."""
        helper = ovs.db.idl.SchemaHelper(schema_json=self._fetch_schema())
        for table, columns in COLUMNS.items():
            helper.register_columns(table, columns)
        with self._cond:
            self._idl = _Idl(self.target, helper, self._changed)
        threading.Thread(target=self._run, args=(stop,), name="ovsdb-idl", daemon=True).start()
        if not self._wait(lambda: self._synced, self.timeout):
            raise OvsError(f"no copy of the OVS database {self.target} within "
                           f"{self.timeout:g} s")

    def _fetch_schema(self) -> dict:
        error, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(self.target),
                                                     int(self.timeout * 1000))
        if error:
            raise OvsError(f"cannot reach the OVS database {self.target}: "
                           f"{os.strerror(error)}")
        rpc = ovs.jsonrpc.Connection(stream)
        try:
            error, reply = rpc.transact_block(
                ovs.jsonrpc.Message.create_request("get_schema", ["Open_vSwitch"]))
            if error or reply.error:
                raise OvsError(f"cannot read the schema of {self.target}: "
                               f"{os.strerror(error) if error else reply.error}")
            return reply.result
        finally:
            rpc.close()

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self._run_once()
            except Exception:       # keep the replica alive; the IDL reconnects by itself
                log.exception("OVSDB replica: running the IDL failed")
                stop.wait(1.0)

    def _run_once(self) -> None:
        with self._cond:
            idl = self._idl
            seqno = idl.change_seqno
            # A run that starts outside the monitoring state may take a new copy of the
            # whole database (after a reconnect), whose rows gone meanwhile are not
            # notified as deleted: the view is then rebuilt from every row.
            if idl.state != idl.IDL_S_MONITORING:
                self._refetched = True
            idl.run()
            if idl.change_seqno != seqno:
                self.change_seqno = idl.change_seqno
                self._synced = self._synced or idl.has_ever_connected()
            if self._pending:
                self._pending = [t for t in self._pending
                                 if t.commit() == ovs.db.idl.Transaction.INCOMPLETE]
            self._cond.notify_all()
            poller = ovs.poller.Poller()
            idl.wait(poller)
            poller.fd_wait(self._wake_r, ovs.poller.POLLIN)
            poller.timer_wait(1000)
        poller.block()
        try:
            os.read(self._wake_r, 4096)
        except BlockingIOError:
            pass

    def _wake(self) -> None:
        os.write(self._wake_w, b"x")

    def _wait(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    # ---- reads ------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """What OVS holds, from memory (the same shape as `Ovs.snapshot()`)."""
        with self._cond:
            return self._current().snapshot()

    def _current(self) -> ReplicaView:
        """The view with the rows changed since it was last read (lock held). Only those
        rows are converted again (reading an IDL row's columns costs far more than the
        view's dicts)."""
        tables = self._idl.tables
        if self._refetched:
            self._refetched = False
            self._view.clear()
            self._dirty = {(t, u) for t in TABLES for u in tables[t].rows}
        if self._dirty:
            changes = []
            for table, uuid in self._dirty:
                row = tables[table].rows.get(uuid)
                changes.append((table, uuid, None if row is None else _CONVERT[table](row)))
            self._dirty = set()
            self._view.update(changes)
        return self._view

    def _find(self, table: str, name: str):
        """The IDL row named `name` (lock held, before the transaction inserts anything)."""
        uuid = self._current().uuid_named(table, name)
        return None if uuid is None else self._idl.tables[table].rows.get(uuid)

    def _changed(self, table: str, row_uuid) -> None:
        """The IDL's notification of a row created, updated or deleted (IDL thread, lock
        held)."""
        self._dirty.add((table, row_uuid))

    def interface(self, name: str) -> Interface | None:
        with self._cond:
            return self._interface_locked(name)

    def _interface_locked(self, name: str) -> Interface | None:
        return self._current().interface(name)

    # ---- writes -----------------------------------------------------------------------
    def wait_until(self, predicate, timeout: float) -> bool:
        """Wait until `predicate(snapshot)` holds (after a write made by `ovs-vsctl`, whose
        update reaches the replica a moment later)."""
        return self._wait(lambda: predicate(self._current().snapshot()), timeout)

    def add_port(self, bridge: str, name: str, port_ids: dict[str, str],
                 iface_ids: dict[str, str], ofport_request: int | None = None,
                 iface_type: str | None = None, options: dict[str, str] | None = None,
                 ) -> Interface | None:
        """Add (or update) port `name` on `bridge` in one transaction, then wait until
        ovs-vswitchd gave it an ofport (or an error); returns its Interface. `options`, when
        given, replace the interface's options as a whole."""
        def build(txn, tables) -> None:
            br = self._find("Bridge", bridge)
            if br is None:
                raise OvsError(f"bridge {bridge} does not exist")
            port = self._find("Port", name)
            if port is None:
                iface = txn.insert(tables["Interface"])
                iface.name = name
                port = txn.insert(tables["Port"])
                port.name = name
                port.interfaces = [iface]
                br.addvalue("ports", port.uuid)
                port.external_ids = port_ids
                iface.external_ids = iface_ids
            else:
                iface = port.interfaces[0]
                port.external_ids = dict(port.external_ids, **port_ids)
                iface.external_ids = dict(iface.external_ids, **iface_ids)
            if ofport_request:
                iface.ofport_request = [ofport_request]
            if iface_type is not None:
                iface.type = iface_type
            if options is not None:
                iface.options = options

        self._transact(build, f"adding port {name} to {bridge}")

        def numbered() -> bool:
            i = self._interface_locked(name)
            return i is not None and (i.ofport is not None or bool(i.error))

        if not self._wait(numbered, self.timeout):
            raise OvsError(f"ovs-vswitchd gave {name} no ofport within {self.timeout:g} s")
        return self.interface(name)

    def set_ofport_request(self, name: str, ofport: int) -> None:
        def build(txn, tables) -> None:
            iface = self._find("Interface", name)
            if iface is not None:
                iface.ofport_request = [ofport]

        self._transact(build, f"pinning the ofport of {name}")

    def del_ports(self, bridge: str, names: list[str]) -> None:
        """Remove ports from `bridge` (absent ones are ignored), in one transaction."""
        def build(txn, tables) -> None:
            br = self._find("Bridge", bridge)
            if br is None:
                return
            view = self._current()
            for port_uuid in view.rows["Bridge"][br.uuid][2]:
                port = tables["Port"].rows.get(port_uuid)
                if port is not None and view.rows["Port"][port_uuid][0] in names:
                    br.delvalue("ports", port_uuid)
                    port.delete()

        self._transact(build, f"removing {', '.join(names)} from {bridge}")

    def _transact(self, build, what: str, attempts: int = 5) -> None:
        """Build a transaction under the lock, send it, wait for its answer; one the server
        asks to try again (a verify failed, the connection was reset) is built again."""
        for attempt in range(attempts):
            status = self._transact_once(build, what)
            if status != ovs.db.idl.Transaction.TRY_AGAIN:
                return
            log.info("%s: try again (%d)", what, attempt + 1)
            self._wait(lambda: self._idl.state == ovs.db.idl.Idl.IDL_S_MONITORING,
                       self.timeout)
        raise OvsError(f"{what}: the OVS database asked to try again {attempts} times")

    def _transact_once(self, build, what: str) -> str:
        Transaction = ovs.db.idl.Transaction
        with self._cond:
            txn = Transaction(self._idl)
            try:
                build(txn, self._idl.tables)
            except BaseException:
                txn.abort()
                raise
            status = txn.commit()
            if status == Transaction.INCOMPLETE:
                self._pending.append(txn)
                self._wake()
        if status == Transaction.INCOMPLETE:
            done = self._wait(lambda: txn not in self._pending, self.timeout)
            with self._cond:
                status = txn.commit() if done else None
        if status in (Transaction.SUCCESS, Transaction.UNCHANGED, Transaction.TRY_AGAIN):
            return status
        if status is None:
            raise OvsError(f"{what}: no answer from {self.target} within {self.timeout:g} s")
        raise OvsError(f"{what} failed: {status} {txn.get_error() or ''}".strip())


class _Idl(ovs.db.idl.Idl):
    """The IDL, telling the replica which rows changed."""

    def __init__(self, remote: str, helper, changed) -> None:
        super().__init__(remote, helper)
        self.loris_changed = changed

    def notify(self, event, row, updates=None) -> None:
        self.loris_changed(row._table.name, row.uuid)


def _bridge(b) -> tuple:
    return (b.name, dict(b.external_ids), _referenced(b, "ports"),
            [str(c.uuid) for c in b.controller])


def _port(p) -> tuple:
    return (p.name, _referenced(p, "interfaces"))


def _referenced(row, column: str) -> list:
    """The uuids of the rows a set-of-references column of `row` holds in the database.
    `row.<column>` gives the rows, sorted, after converting the whole set to the IDL's
    datum and back (ovs.db.idl's `Row.__getattr__`): 4.6 ms for the ports of a br-int of 333,
    at every change of the bridge (docs/benchmarks.md). The committed datum (`Row._data`,
    the IDL's copy of what the database holds) has the uuids as they are."""
    committed = getattr(row, "_data", None)
    datum = committed.get(column) if isinstance(committed, dict) else None
    if datum is None:          # a row of a transaction not committed yet
        return [r.uuid for r in getattr(row, column)]
    return datum.as_list()


def _controller(c) -> dict:
    return {"_uuid": str(c.uuid), "target": c.target, "is_connected": c.is_connected,
            "role": _one(c.role)}


_CONVERT = {"Bridge": _bridge, "Port": _port, "Interface": lambda i: _interface(i, None),
            "Controller": _controller}


def _interface(i, bridge: str | None) -> Interface:
    ofport = _one(i.ofport)
    return Interface(name=i.name, type=i.type,
                     ofport=ofport if isinstance(ofport, int) and ofport > 0 else None,
                     ofport_request=_one(i.ofport_request),
                     external_ids=dict(i.external_ids), options=dict(i.options),
                     error=_one(i.error), bridge=bridge)

