"""The store: schema, transactions, uniqueness, versions, local VLANs, persistence.

Tests taking the `store` fixture run on both backends (SQLite and etcd, the session's local
etcd: tests/etcd_local.py); the others are about SQLite itself (its file, its pragmas, what
runs through run_blocking). tests/unit/test_etcd_store.py has what only etcd does.
"""

from __future__ import annotations

import ipaddress
import sqlite3
import threading

import pytest
from conftest import open_test_store

from controller.errors import ApiError
from controller.store import GLOBAL_POD, Store

BIG_DPID = (0x0002 << 48) | 0xFEDCBA987654   # a br-tun dpid as the agent derives it
HUGE_DPID = 0xFFFF_FFFF_FFFF_FFF0


@pytest.fixture
def store(store_backend, tmp_path, request):
    s = open_test_store(store_backend, tmp_path, request)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path):
    s = Store(str(tmp_path / "state" / "loris.db"))
    yield s
    s.close()


def _host(tx, host_id="h1", ip="198.18.0.11", dpids=(1, 2)):
    tx.insert_host(host_id, ip, "vxlan", *dpids)


def test_new_store_has_only_the_global_pod(store):
    with store.tx() as tx:
        assert [(p.id, p.subnet) for p in tx.pods()] == [(GLOBAL_POD, None)]
        assert tx.hosts() == [] and tx.ports() == []


def test_failed_transaction_changes_nothing(store):
    with pytest.raises(RuntimeError):
        with store.tx() as tx:
            tx.insert_pod(7, "web", "198.18.135.0/24")
            _host(tx)
            raise RuntimeError("validation failed half-way")
    with store.tx() as tx:
        assert tx.pod(7) is None and tx.hosts() == []


def test_state_survives_reopening(store_backend, tmp_path, request):
    s = open_test_store(store_backend, tmp_path, request)
    with s.tx() as tx:
        _host(tx, dpids=(BIG_DPID, HUGE_DPID))
        tx.insert_pod(7, None, "198.18.135.0/24")
        tx.ensure_local_vlan("h1", 7)
        port = tx.insert_port("h1", "web1", 7, "02:00:00:00:00:05",
                              ipaddress.IPv4Interface("198.18.135.5/24"), False)
        tx.update_port(port.id, state="active", ofport=9)
        tx.set_tunnels("h1", {})
    s.close()
    s = reopen(s, tmp_path, request)
    with s.tx() as tx:
        host = tx.host("h1")
        assert (host.dpid_int, host.dpid_tun) == (BIG_DPID, HUGE_DPID)
        assert tx.host_by_dpid(HUGE_DPID)[1] == "br-tun"
        assert tx.host_by_dpid(BIG_DPID)[0].id == "h1"
        p = tx.port(port.id)
        assert (p.container, p.ip, p.state, p.ofport, p.address) == (
            "web1", "198.18.135.5/24", "active", 9, "198.18.135.5")
        assert tx.local_vlans("h1") == {7: 1}
        assert [pod.id for pod in tx.pods()] == [0, 7]
    s.close()


def reopen(store, tmp_path, request):
    """The same store opened anew (the same file, or the same etcd prefix)."""
    if isinstance(store, Store):
        return Store(store.path)
    from controller.etcd_store import EtcdStore

    return EtcdStore(request.getfixturevalue("local_etcd").client(),
                     prefix=store.layout.prefix)


def test_commits_are_durable_wal_with_synchronous_full(sqlite_store):
    # docs/operations.md: an acknowledged write survives a process kill and a power loss
    assert sqlite_store.pragma("journal_mode") == "wal"
    assert sqlite_store.pragma("synchronous") == 2     # FULL


def test_versions_never_go_backwards(store):
    with store.tx() as tx:
        _host(tx)
        first = tx.host("h1").desired_version
        tx.bump(["h1"])
        second = tx.host("h1").desired_version
        tx.delete_host("h1")
        _host(tx)
        third = tx.host("h1").desired_version
    assert first < second < third


def test_uniqueness_is_enforced_by_the_schema_too(store):
    with store.tx() as tx:
        _host(tx)
        tx.insert_port("h1", "web1", 0, "02:00:00:00:00:05",
                       ipaddress.IPv4Interface("198.18.135.5/24"), False)
    dup_cases = [
        ("web2", "02:00:00:00:00:05", "198.18.135.6/24"),     # MAC in pod
        ("web2", "02:00:00:00:00:06", "198.18.135.5/16"),     # address in pod
        ("web1", "02:00:00:00:00:07", "198.18.135.7/24"),     # container on host
    ]
    for container, mac, ip in dup_cases:
        with pytest.raises(sqlite3.IntegrityError):
            with store.tx() as tx:
                tx.insert_port("h1", container, 0, mac, ipaddress.IPv4Interface(ip), False)
    with store.tx() as tx:
        # same MAC and IP in another pod are fine
        tx.insert_pod(9, None, None)
        tx.insert_port("h1", "web9", 9, "02:00:00:00:00:05",
                       ipaddress.IPv4Interface("198.18.135.5/24"), False)
        assert len(tx.ports()) == 2


def test_dpids_and_tunnel_ips_are_unique(store):
    with store.tx() as tx:
        _host(tx)
    with pytest.raises(sqlite3.IntegrityError):
        with store.tx() as tx:
            _host(tx, "h2", "198.18.0.12", (1, 3))
    with pytest.raises(sqlite3.IntegrityError):
        with store.tx() as tx:
            _host(tx, "h2", "198.18.0.11", (3, 4))


def test_local_vlans_allocate_lowest_free_and_release_with_last_port(store):
    with store.tx() as tx:
        _host(tx)
        for pod in (5, 6, 7):
            tx.insert_pod(pod, None, None)
            assert tx.ensure_local_vlan("h1", pod) == pod - 4
        assert tx.ensure_local_vlan("h1", 6) == 2          # stable
        p = tx.insert_port("h1", "a", 6, "02:00:00:00:00:01",
                           ipaddress.IPv4Interface("198.18.128.1/24"), False)
        tx.release_unused_vlans("h1")                       # 5 and 7 have no ports
        assert tx.local_vlans("h1") == {6: 2}
        tx.insert_pod(8, None, None)
        assert tx.ensure_local_vlan("h1", 8) == 1           # reused
        tx.delete_port(p.id)
        tx.release_unused_vlans("h1")
        assert tx.local_vlans("h1") == {}


def test_port_ids_are_never_reused(store):
    with store.tx() as tx:
        _host(tx)
        a = tx.insert_port("h1", "a", 0, "02:00:00:00:00:01",
                           ipaddress.IPv4Interface("198.18.128.1/24"), False)
        tx.delete_port(a.id)
        b = tx.insert_port("h1", "a", 0, "02:00:00:00:00:01",
                           ipaddress.IPv4Interface("198.18.128.1/24"), False)
    assert b.id > a.id


def test_removing_a_host_removes_its_tunnels_and_vlans_and_theirs_to_it(store):
    with store.tx() as tx:
        _host(tx)
        _host(tx, "h2", "198.18.0.12", (3, 4))
        tx.set_tunnels("h1", {"h2": 5})
        tx.set_tunnels("h2", {"h1": 6})
        tx.ensure_local_vlan("h2", 0)
        tx.delete_host("h2")
        assert tx.all_tunnels() == {}
        assert tx.all_local_vlans() == {}


def test_update_port_refuses_unknown_columns(store):
    with store.tx() as tx:
        _host(tx)
        p = tx.insert_port("h1", "a", 0, "02:00:00:00:00:01",
                           ipaddress.IPv4Interface("198.18.128.1/24"), False)
        with pytest.raises(ValueError):
            tx.update_port(p.id, mac="02:00:00:00:00:09")


def test_unwritable_store_is_a_503(tmp_path):
    path = tmp_path / "ro.db"
    s = Store(str(path), busy_timeout=0.1)
    other = sqlite3.connect(str(path))
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(ApiError) as e:
            with s.tx():
                pass
        assert e.value.status == 503
    finally:
        other.rollback()
        other.close()
        s.close()


# ---- what runs where (controller/concurrency.py) ---------------------------------------

class Recorder:
    """A run_blocking that runs the call here and records what it was."""

    def __init__(self):
        self.calls = []

    def __call__(self, fn, *args):
        self.calls.append(args[0] if args else fn.__name__)
        return fn(*args)


def test_only_a_commit_that_wrote_goes_through_run_blocking(tmp_path):
    blocking = Recorder()
    s = Store(str(tmp_path / "loris.db"), run_blocking=blocking)
    try:
        blocking.calls.clear()
        with s.tx() as tx:
            tx.pods()
        assert blocking.calls == []               # nothing written: nothing to sync
        with s.tx() as tx:
            tx.insert_pod(7, None, None)
        assert blocking.calls == ["COMMIT"]
        with pytest.raises(RuntimeError):
            with s.tx() as tx:
                tx.insert_pod(8, None, None)
                raise RuntimeError("refused")
        assert blocking.calls == ["COMMIT"]       # a rollback syncs nothing
    finally:
        s.close()


def test_begin_waits_for_another_writer_through_run_blocking(tmp_path):
    path = str(tmp_path / "loris.db")
    blocking = Recorder()
    s = Store(path, busy_timeout=30, run_blocking=blocking)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO pods (id, created_at) VALUES (9, 0)")
    order = []

    def release_when_waited():
        while "_begin_waiting" not in blocking.calls:
            threading.Event().wait(0.01)
        order.append("other commits")
        other.execute("COMMIT")

    releaser = threading.Thread(target=release_when_waited)
    releaser.start()
    try:
        with s.tx() as tx:
            order.append("store writes")
            tx.insert_pod(10, None, None)
        releaser.join()
        assert order == ["other commits", "store writes"]
        with s.read() as tx:
            assert [p.id for p in tx.pods()] == [0, 9, 10]
    finally:
        other.close()
        s.close()


def test_reads_do_not_wait_for_a_write_transaction(store):
    """A read sees the last committed state while another thread's transaction is open."""
    with store.tx() as tx:
        _host(tx)
    inside, finish = threading.Event(), threading.Event()

    def writer():
        with store.tx() as tx:
            tx.insert_pod(7, None, None)
            inside.set()
            finish.wait()

    t = threading.Thread(target=writer)
    t.start()
    try:
        inside.wait()
        with store.read() as tx:                 # the writer still holds its transaction
            assert [p.id for p in tx.pods()] == [0] and tx.host("h1") is not None
    finally:
        finish.set()
        t.join()
    with store.read() as tx:
        assert [p.id for p in tx.pods()] == [0, 7]


def test_a_read_cannot_write(store):
    with pytest.raises(sqlite3.OperationalError):
        with store.read() as tx:
            tx.insert_pod(7, None, None)
    with store.read() as tx:
        assert tx.pod(7) is None


def test_store_serves_plain_threads(store):
    """Unit tests and the native hub use real threads: transactions serialise."""
    with store.tx() as tx:
        _host(tx)

    def bump_many():
        for _ in range(50):
            with store.tx() as tx:
                tx.bump(["h1"])

    threads = [threading.Thread(target=bump_many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with store.read() as tx:
        first = tx.host("h1").desired_version
    with store.tx() as tx:
        tx.bump(["h1"])
        assert tx.host("h1").desired_version == first + 1 == tx.next_version() - 1
