"""The store's schema and its rows as Python values (frozen dataclasses).

Row <-> value conversions live here too: datapath ids are unsigned 64-bit, SQLite integers
signed, so a dpid is stored as the signed number with the same bits.
"""

from __future__ import annotations

import ipaddress
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from controller import planned_ofports
from controller.connect_owners import CONNECT_OWNERS_SCHEMA
from controller.docker_rows import DOCKER_MACS_SCHEMA, DOCKER_SCHEMA
from controller.pod_rows import POD_NAMES_MIGRATION
from controller.safety_rows import SAFETY_SCHEMA
from flows.contract import MAX_LOCAL_VLAN, MIN_LOCAL_VLAN

SCHEMA_VERSION = 7

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS hosts (
    id TEXT PRIMARY KEY,
    tunnel_ip TEXT NOT NULL UNIQUE,
    tunnel_type TEXT NOT NULL CHECK (tunnel_type IN ('vxlan', 'gre')),
    dpid_int INTEGER NOT NULL UNIQUE,
    dpid_tun INTEGER NOT NULL UNIQUE,
    int_patch_ofport INTEGER,
    tun_patch_ofport INTEGER,
    desired_version INTEGER NOT NULL,
    actual_version INTEGER,
    registered_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tunnels (
    host_id TEXT NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    peer_id TEXT NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    ofport INTEGER NOT NULL,
    PRIMARY KEY (host_id, peer_id)
);
CREATE TABLE IF NOT EXISTS pods (
    id INTEGER PRIMARY KEY,
    name TEXT,
    subnet TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    host_id TEXT NOT NULL REFERENCES hosts(id),
    container TEXT NOT NULL,
    pod_id INTEGER NOT NULL REFERENCES pods(id),
    mac TEXT NOT NULL,
    ip TEXT NOT NULL,
    addr INTEGER NOT NULL,
    dhcp INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'wired', 'active')),
    ofport INTEGER,
    mtu INTEGER,
    lease TEXT,
    error_code TEXT,
    error_message TEXT,
    created_at REAL NOT NULL,
    UNIQUE (pod_id, mac),
    UNIQUE (pod_id, addr),
    UNIQUE (host_id, container)
);
CREATE INDEX IF NOT EXISTS ports_host ON ports(host_id);
CREATE INDEX IF NOT EXISTS ports_host_ofport ON ports(host_id, ofport);
CREATE TABLE IF NOT EXISTS local_vlans (
    host_id TEXT NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    pod_id INTEGER NOT NULL,
    vlan INTEGER NOT NULL CHECK (vlan BETWEEN {MIN_LOCAL_VLAN} AND {MAX_LOCAL_VLAN}),
    PRIMARY KEY (host_id, pod_id),
    UNIQUE (host_id, vlan)
);
"""

# Upgrades: what takes a database of schema version N-1 to N, SQL statements or a function
# of the connection. A new database runs SCHEMA and then every step (each is idempotent:
# CREATE ... IF NOT EXISTS, a column added only where it is missing).
MIGRATIONS: dict[int, str | Callable[[sqlite3.Connection], None]] = {
    2: SAFETY_SCHEMA,       # credentials, switch certificates, implicit pods, audit trail
    3: POD_NAMES_MIGRATION,     # every pod has a unique name (controller/pod_rows.py)
    4: DOCKER_SCHEMA,           # addresses reserved by Docker's IPAM (docker_rows.py)
    5: DOCKER_MACS_SCHEMA,      # the MAC each Docker address was given (docker_rows.py)
    6: CONNECT_OWNERS_SCHEMA,   # who runs each unfinished connect (connect_owners.py)
    7: planned_ofports.migrate,     # the ofport a connect chose (planned_ofports.py)
}


def create_schema(conn: sqlite3.Connection, from_version: int = 0) -> None:
    """Run SCHEMA, then the upgrade steps after `from_version`, on `conn` (inside the
    caller's transaction: no executescript, which would commit)."""
    for statement in filter(str.strip, SCHEMA.split(";")):
        conn.execute(statement)
    for step in range(from_version + 1, SCHEMA_VERSION + 1):
        upgrade = MIGRATIONS.get(step, "")
        if callable(upgrade):
            upgrade(conn)
            continue
        for statement in filter(str.strip, upgrade.split(";")):
            conn.execute(statement)


@dataclass(frozen=True)
class Host:
    id: str
    tunnel_ip: str
    tunnel_type: str
    dpid_int: int
    dpid_tun: int
    int_patch_ofport: int | None
    tun_patch_ofport: int | None
    desired_version: int
    actual_version: int | None
    registered_at: float

    def dpid(self, bridge: str) -> int:
        return self.dpid_int if bridge == "br-int" else self.dpid_tun


@dataclass(frozen=True)
class Pod:
    id: int
    name: str               # unique; contract.POD_NAME (pod_rows.py)
    subnet: str | None
    created_at: float

    @property
    def network(self) -> ipaddress.IPv4Network | None:
        return ipaddress.IPv4Network(self.subnet) if self.subnet else None


@dataclass(frozen=True)
class Port:
    id: int
    host_id: str
    container: str
    pod_id: int
    mac: str
    ip: str                  # "A.B.C.D/len"
    dhcp: bool
    state: str
    ofport: int | None
    mtu: int | None
    lease: str | None
    error_code: str | None
    error_message: str | None
    created_at: float
    planned_ofport: int | None = None       # chosen at connect, until reported (schema 7)

    @property
    def address(self) -> str:
        return self.ip.split("/", 1)[0]

    @property
    def switch_ofport(self) -> int | None:
        """The number its host's flows use: the one its agent reported, else the one its
        connect chose (controller/planned_ofports.py) while its wiring has not failed."""
        if self.ofport is not None:
            return self.ofport
        return self.planned_ofport if self.error_code is None else None


PORT_COLUMNS = ("id, host_id, container, pod_id, mac, ip, dhcp, state, ofport, mtu, lease, "
                "error_code, error_message, created_at, planned_ofport")
HOST_COLUMNS = ("id, tunnel_ip, tunnel_type, dpid_int, dpid_tun, int_patch_ofport, "
                "tun_patch_ofport, desired_version, actual_version, registered_at")


def port_row(row: tuple) -> Port:
    """A Port from the columns PORT_COLUMNS names, in that order."""
    r = list(row)
    r[6] = bool(r[6])
    return Port(*r)


def dpid_to_db(dpid: int) -> int:
    """SQLite integers are signed 64-bit; store a dpid's bit pattern as such."""
    return dpid - (1 << 64) if dpid >= 1 << 63 else dpid


def dpid_from_db(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


def host_row(row: tuple) -> Host:
    """A Host from the columns HOST_COLUMNS names, in that order."""
    r = list(row)
    r[3], r[4] = dpid_from_db(r[3]), dpid_from_db(r[4])
    return Host(*r)
