"""Move a deployment from SQLite to etcd: copy every row of a SQLite store into an empty
etcd prefix (docs/ha.md, "Moving from SQLite to etcd").

    python -m controller.store_copy --db /var/lib/loris/loris.db \\
        # etcd from the controller's settings: LORIS_ETCD_ENDPOINTS, LORIS_ETCD_* ...

Stop the controller first (agents and the data path keep working meanwhile). The copy is a
series of etcd transactions of a few rows each (etcd allows 128 operations per
transaction by default; a row brings its index keys), tables in the order their foreign
keys need; it refuses a prefix that already holds hosts or ports. Versions go on from the
SQLite counter (and the etcd revision), so no agent sees its version go backwards.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys

from controller.etcd_store import EtcdStore

# parents before children (foreign keys); tables not named here follow in name order
TABLE_ORDER = ("counters", "hosts", "pods", "tunnels", "local_vlans", "ports",
               "implicit_pods", "credentials", "switch_certs", "events")
ROWS_PER_TRANSACTION = 20


def copy_sqlite_to_etcd(sqlite_path: str, store: EtcdStore,
                        batch: int = ROWS_PER_TRANSACTION) -> dict[str, int]:
    """Copy every row of the SQLite database at `sqlite_path` into `store` (whose prefix
    holds no host and no port). Returns the rows copied per table."""
    source = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
    try:
        with store.read() as tx:
            if tx.hosts() or tx.ports():
                raise ValueError(f"{store.path} already holds hosts or ports under "
                                 f"{store.layout.prefix}; copy into an empty prefix "
                                 "(LORIS_ETCD_PREFIX)")
        tables = [t for t in TABLE_ORDER if t in store.layout.tables]
        tables += sorted(set(store.layout.tables) - set(tables))
        copied: dict[str, int] = {}
        for table in tables:
            columns = [c for c in store.layout.tables[table].columns
                       if c in _columns(source, table)]
            rows = source.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
            for start in range(0, len(rows), batch):
                with store.tx() as tx:
                    for row in rows[start:start + batch]:
                        tx._c.execute(f"INSERT OR REPLACE INTO {table} ({', '.join(columns)})"
                                      f" VALUES ({', '.join('?' * len(columns))})", row)
            copied[table] = len(rows)
        sequences = dict(source.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
        with store.tx() as tx:          # ids are never reused, even those of deleted rows
            for table, seq in sequences.items():
                tx._c.execute("INSERT INTO sqlite_sequence (name, seq) SELECT ?, 0 WHERE NOT "
                              "EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = ?)",
                              (table, table))
                tx._c.execute("UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = ?",
                              (seq, table))
        return copied
    finally:
        source.close()


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


def main(argv: list[str] | None = None) -> int:
    from controller import config
    from controller.stores import open_store

    p = argparse.ArgumentParser(prog="python -m controller.store_copy",
                                description="copy a Loris SQLite store into etcd")
    p.add_argument("--db", required=True, help="the SQLite file (LORIS_DB of the controller)")
    args = p.parse_args(argv)
    try:
        settings = config.load(store="etcd")
        store = open_store(settings)
        assert isinstance(store, EtcdStore)
        try:
            copied = copy_sqlite_to_etcd(args.db, store)
        finally:
            store.close()
    except (OSError, ValueError, sqlite3.Error) as e:
        print(f"{p.prog}: {e}", file=sys.stderr)
        return 1
    print(", ".join(f"{n} {t}" for t, n in copied.items() if n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
