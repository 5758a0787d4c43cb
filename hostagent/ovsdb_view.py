"""What the agent's OVS replica (hostagent/ovsdb.py) says OVS holds, kept up to date row by
row: the rows that changed in, a `Snapshot` (hostagent/ovs.py's shape) out. No I/O.

A connect changes a handful of rows (br-int's port list, one Port, one Interface), so the
work per change is the rows that changed and the ports that joined or left a bridge, not
every row of the host: a rebuild of every row per change made the agent's CPU per connect
grow with the ports on its host (docs/benchmarks.md). `clear()` and the rows again rebuild
it from scratch, which the replica does after the IDL fetched the whole database anew (a
reconnect: the rows gone meanwhile are never reported as deleted).

Rows come converted (`hostagent/ovsdb.py`): a Bridge is (name, external_ids, port uuids,
controller uuids), a Port (name, interface uuids), an Interface an `Interface` without its
bridge, a Controller a dict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Iterable

from hostagent.ovs import Interface, Snapshot

TABLES = ("Bridge", "Port", "Interface", "Controller")


class ReplicaView:
    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.rows: dict[str, dict] = {t: {} for t in TABLES}     # uuid -> converted row
        self._bridge_ports: dict = {}     # bridge uuid -> frozenset of its port uuids
        self._port_bridge: dict = {}      # port uuid -> its bridge's name
        self._iface_port: dict = {}       # interface uuid -> its port's uuid
        self._iface_name: dict = {}       # interface uuid -> the name it is listed under
        self._named: dict[str, dict] = {"Port": {}, "Interface": {}}   # name -> uuid
        self._interfaces: dict[str, Interface] = {}   # name -> Interface with its bridge
        self._bridges: dict[str, dict] = {}
        self._controllers: dict[str, dict] = {}
        self._snapshot: Snapshot | None = None

    # ---- reads ------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """What OVS holds. The same object until the next change; a new one after it (a
        snapshot already handed out never changes)."""
        if self._snapshot is None:
            self._snapshot = Snapshot(bridges=dict(self._bridges),
                                      interfaces=dict(self._interfaces),
                                      controllers=dict(self._controllers))
        return self._snapshot

    def interface(self, name: str) -> Interface | None:
        return self._interfaces.get(name)

    def uuid_named(self, table: str, name: str) -> Hashable | None:
        """The uuid of the Bridge, Port or Interface called `name`, or None."""
        if table == "Bridge":
            return next((u for u, b in self.rows["Bridge"].items() if b[0] == name), None)
        return self._named[table].get(name)

    # ---- changes ----------------------------------------------------------------------
    def update(self, changes: Iterable[tuple[str, Hashable, object | None]]) -> None:
        """Apply (table, uuid, converted row, or None for a row deleted)."""
        touched: set = set()            # interfaces whose row or bridge may have changed
        bridges = controllers = False
        for table, uuid, new in changes:
            rows = self.rows[table]
            old = rows.pop(uuid, None)
            if new is not None:
                rows[uuid] = new
            if table == "Bridge":
                bridges = True
                self._bridge_changed(uuid, old, new, touched)
            elif table == "Port":
                self._port_changed(uuid, old, new, touched)
            elif table == "Interface":
                touched.add(uuid)
            else:
                controllers = True
        for uuid in touched:
            self._place(uuid)
        if bridges:
            self._bridges = {b[0]: {"external_ids": b[1], "controller": b[3]}
                             for b in self.rows["Bridge"].values()}
        if controllers:
            self._controllers = {c["_uuid"]: c for c in self.rows["Controller"].values()}
        if touched or bridges or controllers:
            self._snapshot = None

    def _bridge_changed(self, uuid, old: tuple | None, new: tuple | None, touched: set) -> None:
        before = self._bridge_ports.pop(uuid, frozenset())
        after = frozenset(new[2]) if new is not None else frozenset()
        if new is not None:
            self._bridge_ports[uuid] = after
        renamed = old is not None and new is not None and old[0] != new[0]
        left, joined = (before, after) if renamed else (before - after, after - before)
        for port in left:
            if old is not None and self._port_bridge.get(port) == old[0]:
                del self._port_bridge[port]
            self._touch_port(port, touched)
        for port in joined:
            self._port_bridge[port] = new[0]
            self._touch_port(port, touched)

    def _port_changed(self, uuid, old: tuple | None, new: tuple | None, touched: set) -> None:
        self._rename("Port", uuid, old[0] if old else None, new[0] if new else None)
        for iface in old[1] if old else ():
            if self._iface_port.get(iface) == uuid:
                del self._iface_port[iface]
            touched.add(iface)
        for iface in new[1] if new else ():
            self._iface_port[iface] = uuid
            touched.add(iface)

    def _touch_port(self, port, touched: set) -> None:
        row = self.rows["Port"].get(port)
        if row is not None:
            touched.update(row[1])

    def _place(self, uuid) -> None:
        """List interface `uuid` under its name, with its bridge (or unlist it)."""
        row = self.rows["Interface"].get(uuid)
        name = row.name if row is not None else None
        listed = self._iface_name.pop(uuid, None)
        if listed is not None and self._named["Interface"].get(listed) == uuid:
            del self._interfaces[listed]
        self._rename("Interface", uuid, listed, name)
        if row is None:
            return
        bridge = self._port_bridge.get(self._iface_port.get(uuid))
        self._interfaces[name] = (row if bridge is None
                                  else dataclasses.replace(row, bridge=bridge))
        self._iface_name[uuid] = name

    def _rename(self, table: str, uuid, old: str | None, new: str | None) -> None:
        named = self._named[table]
        if old is not None and named.get(old) == uuid:
            del named[old]
        if new is not None:
            named[new] = uuid


__all__ = ["ReplicaView", "TABLES"]
