"""The controller's state in SQLite: hosts, tunnels, pods, ports, local VLANs, versions.

Writes go through `Store.tx()`, one transaction (BEGIN IMMEDIATE ... COMMIT) that rolls
back on any exception, so a REST write that fails half-way changes nothing; reads that need
no write lock go through `Store.read()`. The controller is one process (a shared store could
replace this class later; the rest of the controller only uses the methods of `Tx`).

Versions: every bump takes the next value of one global counter, so a host's desired
version never goes backwards, even when the host is removed and registered again. The
schema and the row types are in rows.py (the types are re-exported here).
"""

from __future__ import annotations

import ipaddress
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from controller.concurrency import run_blocking
from controller.connect_owners import ConnectOwnerRows
from controller.docker_rows import DockerRows
from controller.errors import ApiError, unavailable
from controller.planned_ofports import PlannedOfportRows
from controller.pod_rows import PodNameRows
from controller.rows import (
    HOST_COLUMNS,
    PORT_COLUMNS,
    SCHEMA_VERSION,
    Host,
    Pod,
    Port,
    create_schema,
    dpid_to_db,
    host_row,
    port_row,
)
from controller.safety_rows import SafetyRows
from flows.contract import (
    GLOBAL_POD,
    GLOBAL_POD_NAME,
    MAX_LOCAL_VLAN,
    MAX_PORT_ID,
    MIN_LOCAL_VLAN,
    default_pod_name,
)

__all__ = ["GLOBAL_POD", "Host", "Pod", "Port", "Store", "Tx"]   # rows re-exported for callers

T = TypeVar("T")


class Tx(SafetyRows, PodNameRows, DockerRows, ConnectOwnerRows, PlannedOfportRows):
    """One open transaction. Methods raise nothing but sqlite3 errors and ApiError."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._c = conn

    def _one(self, sql: str, args: Iterable = ()) -> tuple | None:
        return self._c.execute(sql, tuple(args)).fetchone()

    def _all(self, sql: str, args: Iterable = ()) -> list[tuple]:
        return self._c.execute(sql, tuple(args)).fetchall()

    # ---- versions -------------------------------------------------------------------
    def next_version(self) -> int:
        self._c.execute("UPDATE counters SET value = value + 1 WHERE name = 'version'")
        return self._one("SELECT value FROM counters WHERE name = 'version'")[0]

    def bump(self, host_ids: Iterable[str]) -> None:
        """Give each host a new desired version (its agent long poll returns)."""
        ids = sorted(set(host_ids))
        if ids:
            version = self.next_version()
            self._c.executemany("UPDATE hosts SET desired_version = ? WHERE id = ?",
                                [(version, h) for h in ids])

    def bump_all(self) -> None:
        self.bump(h.id for h in self.hosts())

    # ---- hosts ----------------------------------------------------------------------
    def hosts(self) -> list[Host]:
        return [host_row(r) for r in self._all(f"SELECT {HOST_COLUMNS} FROM hosts ORDER BY id")]

    def host(self, host_id: str) -> Host | None:
        row = self._one(f"SELECT {HOST_COLUMNS} FROM hosts WHERE id = ?", (host_id,))
        return host_row(row) if row else None

    def host_by_dpid(self, dpid: int) -> tuple[Host, str] | None:
        """The host owning a datapath id, and which bridge it is."""
        d = dpid_to_db(dpid)
        row = self._one(f"SELECT {HOST_COLUMNS} FROM hosts WHERE dpid_int = ? OR dpid_tun = ?",
                        (d, d))
        if not row:
            return None
        host = host_row(row)
        return host, ("br-int" if host.dpid_int == dpid else "br-tun")

    def host_by_tunnel_ip(self, tunnel_ip: str) -> Host | None:
        row = self._one(f"SELECT {HOST_COLUMNS} FROM hosts WHERE tunnel_ip = ?", (tunnel_ip,))
        return host_row(row) if row else None

    def insert_host(self, host_id: str, tunnel_ip: str, tunnel_type: str, dpid_int: int,
                    dpid_tun: int) -> None:
        self._c.execute(
            "INSERT INTO hosts (id, tunnel_ip, tunnel_type, dpid_int, dpid_tun, "
            "desired_version, registered_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (host_id, tunnel_ip, tunnel_type, dpid_to_db(dpid_int), dpid_to_db(dpid_tun),
             self.next_version(), time.time()))

    def update_host(self, host_id: str, tunnel_ip: str, tunnel_type: str, dpid_int: int,
                    dpid_tun: int) -> None:
        self._c.execute(
            "UPDATE hosts SET tunnel_ip = ?, tunnel_type = ?, dpid_int = ?, dpid_tun = ? "
            "WHERE id = ?",
            (tunnel_ip, tunnel_type, dpid_to_db(dpid_int), dpid_to_db(dpid_tun), host_id))

    def delete_host(self, host_id: str) -> None:
        self._c.execute("DELETE FROM hosts WHERE id = ?", (host_id,))

    def set_patch(self, host_id: str, int_patch: int | None, tun_patch: int | None) -> None:
        self._c.execute("UPDATE hosts SET int_patch_ofport = ?, tun_patch_ofport = ? "
                        "WHERE id = ?", (int_patch, tun_patch, host_id))

    def set_actual_version(self, host_id: str, version: int) -> None:
        self._c.execute("UPDATE hosts SET actual_version = ? WHERE id = ?", (version, host_id))

    def tunnels(self, host_id: str) -> dict[str, int]:
        return dict(self._all("SELECT peer_id, ofport FROM tunnels WHERE host_id = ? "
                              "ORDER BY peer_id", (host_id,)))

    def all_tunnels(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for host_id, peer_id, ofport in self._all("SELECT host_id, peer_id, ofport FROM tunnels"):
            out.setdefault(host_id, {})[peer_id] = ofport
        return out

    def set_tunnels(self, host_id: str, tunnels: dict[str, int]) -> None:
        self._c.execute("DELETE FROM tunnels WHERE host_id = ?", (host_id,))
        self._c.executemany("INSERT INTO tunnels (host_id, peer_id, ofport) VALUES (?, ?, ?)",
                            [(host_id, p, o) for p, o in sorted(tunnels.items())])

    # ---- pods -----------------------------------------------------------------------
    def pods(self) -> list[Pod]:
        return [Pod(*r) for r in self._all("SELECT id, name, subnet, created_at FROM pods "
                                           "ORDER BY id")]

    def pod(self, pod_id: int) -> Pod | None:
        row = self._one("SELECT id, name, subnet, created_at FROM pods WHERE id = ?", (pod_id,))
        return Pod(*row) if row else None

    def insert_pod(self, pod_id: int, name: str | None, subnet: str | None) -> Pod:
        """A new pod; without a name it is called `pod-<id>` (contract.default_pod_name)."""
        name = name if name is not None else default_pod_name(pod_id)
        now = time.time()
        self._c.execute("INSERT INTO pods (id, name, subnet, created_at) VALUES (?, ?, ?, ?)",
                        (pod_id, name, subnet, now))
        return Pod(pod_id, name, subnet, now)

    def delete_pod(self, pod_id: int) -> None:
        self._c.execute("DELETE FROM pods WHERE id = ?", (pod_id,))

    def pod_port_counts(self) -> dict[int, int]:
        return dict(self._all("SELECT pod_id, COUNT(*) FROM ports GROUP BY pod_id"))

    # ---- ports ----------------------------------------------------------------------
    def ports(self, pod_id: int | None = None, host_id: str | None = None,
              container: str | None = None, state: str | None = None) -> list[Port]:
        where, args = [], []
        for column, value in (("pod_id", pod_id), ("host_id", host_id),
                              ("container", container), ("state", state)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = f"SELECT {PORT_COLUMNS} FROM ports"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [port_row(r) for r in self._all(sql + " ORDER BY id", args)]

    def ofport_clashes(self, pods: Iterable[int] | None = None) -> list[Port]:
        """Ports that share their host and ofport (`Port.switch_ofport`) with another port,
        by id: normally none (an agent's inconsistent report). With `pods`, only the clashes
        involving a port of those pods. Found by SQLite through indexes, so finding none
        costs no rows."""
        planned = self.planned_ofport_clashes()
        involved = ("SELECT p.host_id, p.ofport FROM ports p WHERE p.ofport IS NOT NULL "
                    "AND EXISTS (SELECT 1 FROM ports q WHERE q.host_id = p.host_id "
                    "AND q.ofport = p.ofport AND q.id != p.id)")
        args: list = []
        if pods is not None:
            args = sorted(set(pods))
            involved += f" AND p.pod_id IN ({', '.join('?' * len(args))})"
        found = {p.id: p for p in map(port_row, self._all(
            f"SELECT {PORT_COLUMNS} FROM ports WHERE ofport IS NOT NULL AND "
            f"(host_id, ofport) IN ({involved})", args))}
        for pair in planned:
            rows = [self.port(i) for i in pair]
            if pods is None or any(p.pod_id in args for p in rows):
                found.update((p.id, p) for p in rows)
        return [found[i] for i in sorted(found)]

    def port(self, port_id: int) -> Port | None:
        row = self._one(f"SELECT {PORT_COLUMNS} FROM ports WHERE id = ?", (port_id,))
        return port_row(row) if row else None

    def port_by_mac(self, pod_id: int, mac: str) -> Port | None:
        row = self._one(f"SELECT {PORT_COLUMNS} FROM ports WHERE pod_id = ? AND mac = ?",
                        (pod_id, mac))
        return port_row(row) if row else None

    def port_by_addr(self, pod_id: int, addr: ipaddress.IPv4Address) -> Port | None:
        row = self._one(f"SELECT {PORT_COLUMNS} FROM ports WHERE pod_id = ? AND addr = ?",
                        (pod_id, int(addr)))
        return port_row(row) if row else None

    def port_by_container(self, host_id: str, container: str) -> Port | None:
        row = self._one(f"SELECT {PORT_COLUMNS} FROM ports WHERE host_id = ? AND container = ?",
                        (host_id, container))
        return port_row(row) if row else None

    def macs(self, pod_id: int) -> set[str]:
        return {r[0] for r in self._all("SELECT mac FROM ports WHERE pod_id = ?", (pod_id,))}

    def addrs(self, pod_id: int) -> set[int]:
        return {r[0] for r in self._all("SELECT addr FROM ports WHERE pod_id = ?", (pod_id,))}

    def insert_port(self, host_id: str, container: str, pod_id: int, mac: str,
                    iface: ipaddress.IPv4Interface, dhcp: bool,
                    planned_ofport: int | None = None) -> Port:
        cur = self._c.execute(
            "INSERT INTO ports (host_id, container, pod_id, mac, ip, addr, dhcp, state, "
            "created_at, planned_ofport) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
            (host_id, container, pod_id, mac, str(iface), int(iface.ip), int(dhcp), time.time(),
             planned_ofport))
        if cur.lastrowid > MAX_PORT_ID:
            raise unavailable(f"port ids are exhausted (> {MAX_PORT_ID}); the store needs "
                              "maintenance", "port_ids_exhausted")
        return self.port(cur.lastrowid)

    def delete_port(self, port_id: int) -> None:
        self._c.execute("DELETE FROM ports WHERE id = ?", (port_id,))

    _PORT_UPDATABLE = frozenset({"state", "ofport", "mtu", "lease", "error_code",
                                 "error_message", "planned_ofport"})

    def update_port(self, port_id: int, **values: object) -> None:
        bad = set(values) - self._PORT_UPDATABLE
        if bad:
            raise ValueError(f"update_port: not updatable: {sorted(bad)}")
        if values:
            sets = ", ".join(f"{k} = ?" for k in values)
            self._c.execute(f"UPDATE ports SET {sets} WHERE id = ?", (*values.values(), port_id))

    # ---- local VLANs ----------------------------------------------------------------
    def local_vlans(self, host_id: str) -> dict[int, int]:
        return dict(self._all("SELECT pod_id, vlan FROM local_vlans WHERE host_id = ?",
                              (host_id,)))

    def all_local_vlans(self, pods: Iterable[int] | None = None) -> dict[str, dict[int, int]]:
        """host -> {pod: VLAN}, for every pod or only `pods`."""
        sql, args = "SELECT host_id, pod_id, vlan FROM local_vlans", []
        if pods is not None:
            args = sorted(set(pods))
            sql += f" WHERE pod_id IN ({', '.join('?' * len(args))})"
        out: dict[str, dict[int, int]] = {}
        for host_id, pod_id, vlan in self._all(sql, args):
            out.setdefault(host_id, {})[pod_id] = vlan
        return out

    def ensure_local_vlan(self, host_id: str, pod_id: int) -> int | None:
        """The pod's VLAN on the host, allocating the lowest free one; None when all 4094
        are in use."""
        row = self._one("SELECT vlan FROM local_vlans WHERE host_id = ? AND pod_id = ?",
                        (host_id, pod_id))
        if row:
            return row[0]
        used = {r[0] for r in self._all("SELECT vlan FROM local_vlans WHERE host_id = ?",
                                        (host_id,))}
        vlan = next((v for v in range(MIN_LOCAL_VLAN, MAX_LOCAL_VLAN + 1) if v not in used),
                    None)
        if vlan is not None:
            self._c.execute("INSERT INTO local_vlans (host_id, pod_id, vlan) VALUES (?, ?, ?)",
                            (host_id, pod_id, vlan))
        return vlan

    def release_unused_vlans(self, host_id: str) -> None:
        """Free the VLANs of pods that no longer have a port on the host."""
        self._c.execute("DELETE FROM local_vlans WHERE host_id = ? AND pod_id NOT IN "
                        "(SELECT pod_id FROM ports WHERE host_id = ?)", (host_id, host_id))


class Store:
    """SQLite-backed state: `tx()` to write (and read), `read()` to only read.

    Two connections: the writer, used by one transaction at a time (a lock), and a reader
    with `query_only` for `read()`, which in WAL mode sees the last committed state without
    waiting for a writer, even one in the middle of its COMMIT.

    The statements of a transaction run on the caller's thread (they work on pages in
    memory). The two calls that wait on something outside the process run through
    `run_blocking`, in a real OS thread under the eventlet hub: COMMIT of a transaction
    that changed rows (the fsync of synchronous=FULL), and BEGIN IMMEDIATE when another
    process holds the write lock (up to `busy_timeout` seconds). Everything else returns
    at once. Plain threads (unit tests) use the Store directly.
    """

    def __init__(self, path: str, busy_timeout: float = 10.0,
                 run_blocking: Callable[..., Any] = run_blocking) -> None:
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self.busy_timeout = busy_timeout
        self._run_blocking = run_blocking
        # called with the seconds of each COMMIT that wrote rows (the controller's metrics)
        self.on_commit: Callable[[float], None] | None = None
        self._lock = threading.RLock()
        # the writer, shared by every thread; the lock serialises transactions. Its busy
        # timeout is 0: a BEGIN that would wait goes to _begin_waiting, off the hub.
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                     timeout=0)
        self._conn.execute("PRAGMA foreign_keys = ON")
        if path != ":memory:":
            self._conn.execute("PRAGMA journal_mode = WAL")
            # FULL: every COMMIT syncs the WAL, so an acknowledged write survives a power
            # loss too (NORMAL survives a process crash only). About 0.3 ms a commit.
            self._conn.execute("PRAGMA synchronous = FULL")
        self._migrate()
        self._read_lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None
        if path != ":memory:":       # a second :memory: connection would be another database
            self._reader = sqlite3.connect(path, check_same_thread=False,
                                           isolation_level=None, timeout=busy_timeout)
            self._reader.execute("PRAGMA query_only = ON")

    def _migrate(self) -> None:
        with self.tx() as tx:
            version = tx._one("PRAGMA user_version")[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"{self.path} has schema {version}, newer than this "
                                   f"controller's {SCHEMA_VERSION}; upgrade the controller")
            create_schema(self._conn, version)
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._conn.execute("INSERT OR IGNORE INTO counters (name, value) "
                               "VALUES ('version', 0)")
            if tx.pod(GLOBAL_POD) is None:
                tx.insert_pod(GLOBAL_POD, GLOBAL_POD_NAME, None)

    def _unavailable(self, e: sqlite3.Error) -> ApiError:
        return unavailable(f"the store {self.path} is not available: {e}", "store_unavailable")

    def _begin(self) -> None:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.Error as e:
            if "locked" not in str(e) and "busy" not in str(e):
                raise self._unavailable(e) from None
        try:                         # another process writes: wait for it off the hub
            self._run_blocking(self._begin_waiting)
        except sqlite3.Error as e:
            raise self._unavailable(e) from None

    def _begin_waiting(self) -> None:
        self._conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        finally:
            self._conn.execute("PRAGMA busy_timeout = 0")

    @contextmanager
    def tx(self, current: bool = True) -> Iterator[Tx]:
        """A write transaction: commits when the block ends, rolls back if it raises.
        (`current`: EtcdStore.tx's; one process's file is always current.)"""
        with self._lock:
            self._begin()
            changes = self._conn.total_changes
            try:
                yield Tx(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            try:
                if self._conn.total_changes == changes:
                    self._conn.execute("COMMIT")         # nothing written: nothing to sync
                else:
                    started = time.perf_counter()
                    self._run_blocking(self._conn.execute, "COMMIT")
                    if self.on_commit is not None:
                        self.on_commit(time.perf_counter() - started)
            except sqlite3.Error as e:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise self._unavailable(e) from None

    def write(self, fn: Callable[[Tx], T]) -> T:
        """`fn(tx)` in a write transaction. The same call as EtcdStore.write, which runs
        `fn` again when another controller wrote meanwhile; here there is no other."""
        with self.tx() as tx:
            return fn(tx)

    @contextmanager
    def read(self, current: bool = True) -> Iterator[Tx]:
        """A read-only transaction over the last committed state; writing in it raises
        sqlite3.OperationalError. It never waits for a write transaction. (`current`:
        EtcdStore.read's; one process's file is always current.)"""
        if self._reader is None:
            with self.tx() as tx:
                yield tx
            return
        with self._read_lock:
            self._reader.execute("BEGIN")
            try:
                yield Tx(self._reader)
            finally:
                self._reader.execute("ROLLBACK")

    def read_confirmed(self, fn: Callable[[Tx], T],
                       missing: Callable[[T], bool] | None = None) -> T:
        """EtcdStore.read_confirmed's: `fn(tx)` in one read (one file is always current)."""
        with self.read() as tx:
            return fn(tx)

    def pragma(self, name: str) -> Any:
        """The value of a PRAGMA on the writing connection, e.g. pragma("journal_mode")."""
        if not name.isidentifier():
            raise ValueError(f"not a pragma name: {name!r}")
        with self._lock:
            return self._conn.execute(f"PRAGMA {name}").fetchone()[0]

    def close(self) -> None:
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
        with self._lock:
            self._conn.close()
