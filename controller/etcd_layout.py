"""Where the store's rows live in etcd, and the index keys that keep them unique (pure).

Under the store's prefix (default `/loris/v1/`):

    <table>/<primary key ...>        one key per row, value = the row as JSON {column: value}
                                     (hosts/h1, ports/42, tunnels/h1/h2, credentials/agent/h1)
    idx/<table>/<columns>/<values>   one key per UNIQUE constraint of a row (value = the row's
                                     key): idx/ports/pod_id,addr/7/3331850501,
                                     idx/hosts/tunnel_ip/198.18.0.11, idx/hosts/dpid_int/...
    meta/commit                      put by every write: its mod_revision is the store's
                                     revision of the last write (the optimistic lock)
    meta/seq/<table>                 the AUTOINCREMENT counter of ports and events
    meta/schema                      the schema version that wrote the rows
    txns/<writer id>                 the id of a writer's last transaction (a retried write
                                     whose outcome was unknown checks it)

The tables, their primary keys and their UNIQUE constraints come from the SQLite schema
(rows.py, safety_rows.py): `Layout.from_schema(conn)` reads them, so a table or a UNIQUE
constraint added there gets its keys here without a change to this module. Key parts are
percent-encoded, so a container reference or a pod name never adds a level.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

DEFAULT_PREFIX = "/loris/v1/"
META_COMMIT = "meta/commit"
META_SCHEMA = "meta/schema"
META_SEQ = "meta/seq/"
INDEX = "idx/"
TXNS = "txns/"

Row = dict[str, Any]


def _part(value: object) -> str:
    return quote(str(value), safe="")


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    key_columns: tuple[str, ...]
    unique: tuple[tuple[str, ...], ...]      # each UNIQUE constraint's columns


class Layout:
    """The keys of every table of a schema, under `prefix`."""

    def __init__(self, prefix: str, tables: Iterable[Table]) -> None:
        if not prefix.startswith("/") or not prefix.endswith("/"):
            raise ValueError(f"etcd key prefix {prefix!r} must start and end with '/', "
                             f"e.g. {DEFAULT_PREFIX}")
        self.prefix = prefix
        self.tables: dict[str, Table] = {t.name: t for t in tables}

    @classmethod
    def from_schema(cls, conn: sqlite3.Connection, prefix: str = DEFAULT_PREFIX) -> Layout:
        """The tables of the database open on `conn` (SQLite's own tables left out)."""
        tables = []
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name")]
        for name in names:
            info = conn.execute(f"PRAGMA table_info({name})").fetchall()
            columns = tuple(r[1] for r in info)
            key = tuple(r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5]))
            unique = []
            for _seq, index, is_unique, origin, *_ in conn.execute(
                    f"PRAGMA index_list({name})").fetchall():
                if is_unique and origin != "pk":
                    cols = tuple(r[2] for r in conn.execute(f"PRAGMA index_info({index})"))
                    unique.append(cols)
            tables.append(Table(name, columns, key or ("rowid",), tuple(sorted(unique))))
        return cls(prefix, tables)

    # ----- keys ------------------------------------------------------------------------

    def key(self, meta: str) -> str:
        """The full key of a meta, index or txns key given without the prefix."""
        return self.prefix + meta

    def row_key(self, table: str, key_values: Iterable[object]) -> str:
        return self.prefix + table + "/" + "/".join(_part(v) for v in key_values)

    def key_of(self, table: str, row: Mapping[str, Any]) -> str:
        return self.row_key(table, (row[c] for c in self.tables[table].key_columns))

    def index_keys(self, table: str, row: Mapping[str, Any]) -> set[str]:
        """One key per UNIQUE constraint of `row` (none where a column is NULL: SQLite lets
        NULLs repeat)."""
        out = set()
        for cols in self.tables[table].unique:
            values = [row.get(c) for c in cols]
            if any(v is None for v in values):
                continue
            out.add(f"{self.prefix}{INDEX}{table}/{','.join(cols)}/"
                    + "/".join(_part(v) for v in values))
        return out

    def seq_key(self, table: str) -> str:
        return self.prefix + META_SEQ + table

    def parse(self, key: str) -> tuple[str, tuple[str, ...]] | None:
        """(table, key parts) for the key of a row; None for any other key."""
        if not key.startswith(self.prefix):
            return None
        table, _, rest = key[len(self.prefix):].partition("/")
        if table not in self.tables or not rest:
            return None
        return table, tuple(unquote(p) for p in rest.split("/"))


def encode_row(row: Mapping[str, Any]) -> str:
    return json.dumps(dict(row), separators=(",", ":"), sort_keys=True)


def decode_row(table: Table, value: bytes) -> Row:
    """A row from its JSON, keeping only the columns `table` has (a row written by a newer
    or older schema loads: missing columns take their defaults)."""
    data = json.loads(value)
    return {c: data[c] for c in table.columns if c in data}
