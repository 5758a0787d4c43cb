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
import threading
import time
import warnings

from hostagent.ovs import Interface, OvsError, Snapshot

with warnings.catch_warnings():     # ovs.poller looks for eventlet, which warns on import
    warnings.simplefilter("ignore")
    import ovs.db.idl
    import ovs.dirs
    import ovs.jsonrpc
    import ovs.poller
    import ovs.stream
    import ovs.vlog

log = logging.getLogger(__name__)

COLUMNS = {
    "Bridge": ["name", "ports", "external_ids", "controller"],
    "Port": ["name", "interfaces", "external_ids"],
    "Interface": ["name", "type", "ofport", "ofport_request", "external_ids", "options",
                  "error"],
    "Controller": ["target", "is_connected", "role"],
}


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
        self._snap: tuple[int, Snapshot] | None = None   # (IDL seqno, snapshot of then)
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
            self._idl = ovs.db.idl.Idl(self.target, helper)
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
            with self._cond:
                idl = self._idl
                seqno = idl.change_seqno
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
            return self._snapshot_cached()

    def _snapshot_cached(self) -> Snapshot:
        seqno = self._idl.change_seqno
        if self._snap is None or self._snap[0] != seqno:
            self._snap = (seqno, self._snapshot_locked())
        return self._snap[1]

    def _snapshot_locked(self) -> Snapshot:
        tables = self._idl.tables
        snap = Snapshot()
        iface_bridge: dict = {}
        for b in tables["Bridge"].rows.values():
            snap.bridges[b.name] = {"external_ids": dict(b.external_ids),
                                    "controller": [str(c.uuid) for c in b.controller]}
            for p in b.ports:
                for i in p.interfaces:
                    iface_bridge[i.uuid] = b.name
        for i in tables["Interface"].rows.values():
            snap.interfaces[i.name] = _interface(i, iface_bridge.get(i.uuid))
        for c in tables["Controller"].rows.values():
            snap.controllers[str(c.uuid)] = {"_uuid": str(c.uuid), "target": c.target,
                                             "is_connected": c.is_connected,
                                             "role": _one(c.role)}
        return snap

    def interface(self, name: str) -> Interface | None:
        with self._cond:
            return self._interface_locked(name)

    def _interface_locked(self, name: str) -> Interface | None:
        for i in self._idl.tables["Interface"].rows.values():
            if i.name == name:
                bridge = None
                for b in self._idl.tables["Bridge"].rows.values():
                    if any(i in p.interfaces for p in b.ports):
                        bridge = b.name
                return _interface(i, bridge)
        return None

    # ---- writes -----------------------------------------------------------------------
    def wait_until(self, predicate, timeout: float) -> bool:
        """Wait until `predicate(snapshot)` holds (after a write made by `ovs-vsctl`, whose
        update reaches the replica a moment later)."""
        return self._wait(lambda: predicate(self._snapshot_cached()), timeout)

    def add_port(self, bridge: str, name: str, port_ids: dict[str, str],
                 iface_ids: dict[str, str], ofport_request: int | None = None,
                 iface_type: str | None = None, options: dict[str, str] | None = None,
                 ) -> Interface | None:
        """Add (or update) port `name` on `bridge` in one transaction, then wait until
        ovs-vswitchd gave it an ofport (or an error); returns its Interface. `options`, when
        given, replace the interface's options as a whole."""
        def build(txn, tables) -> None:
            br = _find(tables["Bridge"], bridge)
            if br is None:
                raise OvsError(f"bridge {bridge} does not exist")
            port = _find(tables["Port"], name)
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
        got: list[Interface | None] = [None]

        def numbered() -> bool:
            got[0] = i = self._interface_locked(name)
            return i is not None and (i.ofport is not None or bool(i.error))

        if not self._wait(numbered, self.timeout):
            raise OvsError(f"ovs-vswitchd gave {name} no ofport within {self.timeout:g} s")
        return got[0]

    def set_ofport_request(self, name: str, ofport: int) -> None:
        def build(txn, tables) -> None:
            iface = _find(tables["Interface"], name)
            if iface is not None:
                iface.ofport_request = [ofport]

        self._transact(build, f"pinning the ofport of {name}")

    def del_ports(self, bridge: str, names: list[str]) -> None:
        """Remove ports from `bridge` (absent ones are ignored), in one transaction."""
        def build(txn, tables) -> None:
            br = _find(tables["Bridge"], bridge)
            if br is None:
                return
            for port in list(br.ports):
                if port.name in names:
                    br.delvalue("ports", port.uuid)
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


def _find(table, name: str):
    for row in table.rows.values():
        if row.name == name:
            return row
    return None


def _interface(i, bridge: str | None) -> Interface:
    ofport = _one(i.ofport)
    return Interface(name=i.name, type=i.type,
                     ofport=ofport if isinstance(ofport, int) and ofport > 0 else None,
                     ofport_request=_one(i.ofport_request),
                     external_ids=dict(i.external_ids), options=dict(i.options),
                     error=_one(i.error), bridge=bridge)

