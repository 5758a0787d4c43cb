"""The store the settings ask for: SQLite (default) or etcd (`LORIS_STORE=etcd`).

Both answer the same interface: `tx()` (a write transaction), `write(fn)` (one that is run
again when another controller wrote meanwhile), `read()`, `on_commit`, `path` (what logs
and errors call the store), `close()`; their transactions are `store.Tx` (its row methods).
"""

from __future__ import annotations

from pathlib import Path

from controller.config import Settings, env_name
from controller.etcd import EtcdClient
from controller.etcd_store import EtcdStore
from controller.store import Store


def open_store(settings: Settings) -> Store | EtcdStore:
    if settings.store == "sqlite":
        return Store(settings.db)
    return EtcdStore(etcd_client(settings), prefix=settings.etcd_prefix,
                     election_wait=settings.etcd_election_wait)


def etcd_client(settings: Settings, timeout: float | None = None) -> EtcdClient:
    """A client of the settings' etcd cluster (TLS, credentials); `timeout` instead of
    etcd_timeout (the mastership loop's keep-alive wants a short one)."""
    password = None
    if settings.etcd_password_file:
        try:
            password = Path(settings.etcd_password_file).read_text().strip()
        except OSError as e:
            raise ValueError(f"cannot read the etcd password file "
                             f"({env_name('etcd_password_file')}): {e}") from None
    return EtcdClient(settings.etcd_endpoint_list,
                      timeout=settings.etcd_timeout if timeout is None else timeout,
                      connect_timeout=min(2.0, settings.etcd_timeout if timeout is None
                                          else timeout),
                      ca_cert=settings.etcd_ca_cert or None,
                      client_cert=settings.etcd_cert or None,
                      client_key=settings.etcd_key or None,
                      username=settings.etcd_user or None, password=password)
