"""What only the etcd store does (controller/etcd_store.py), against the session's local
etcd: several controllers on one prefix, conflicts and their retry, writes whose outcome is
unknown, the index keys, the key layout. The behaviour both backends share is in
test_store.py and test_api.py, run on both."""

from __future__ import annotations

import ipaddress
import sqlite3
import threading

import pytest
from inproc import eventually

from controller.errors import ApiError
from controller.etcd import EtcdClient, OutcomeUnknown
from controller.etcd_layout import Layout
from controller.etcd_store import EtcdStore, StoreConflict
from controller.rows import create_schema


def _port(tx, container: str, ip: str, mac: str, pod: int = 0):
    return tx.insert_port("h1", container, pod, mac, ipaddress.IPv4Interface(ip), False)


@pytest.fixture
def prefix(local_etcd) -> str:
    return local_etcd.new_prefix()


@pytest.fixture
def controllers(local_etcd, prefix):
    """Two stores on one prefix: two controllers of one deployment."""
    a = EtcdStore(local_etcd.client(), prefix=prefix)
    b = EtcdStore(local_etcd.client(), prefix=prefix)
    with a.tx() as tx:
        tx.insert_host("h1", "198.18.0.11", "vxlan", 1, 2)
    yield a, b
    a.close()
    b.close()


def keys(local_etcd, prefix: str, under: str = "") -> list[str]:
    with local_etcd.client() as c:
        return [kv.key[len(prefix):] for kv in c.list_prefix(prefix + under).kvs]


def test_a_write_on_one_controller_is_read_on_the_other(controllers):
    a, b = controllers
    with b.read() as tx:
        assert tx.host("h1") is not None              # written by a before b's read
    with b.tx() as tx:
        port = _port(tx, "web1", "198.18.128.5/24", "02:00:00:00:00:05")
    with a.read() as tx:
        assert tx.port(port.id).container == "web1"


def test_a_read_that_need_not_be_current_asks_etcd_only_when_the_watch_is_down(
        controllers, local_etcd, prefix):
    """read(current=False): this process's writes at once, the others' once the watch
    brought them, and no round trip to etcd while the watch is up; with no watch, a
    current read."""
    a, b = controllers
    eventually(lambda: a.watching, "a's watch to be up")
    with a.tx() as tx:
        own = _port(tx, "web1", "198.18.128.5/24", "02:00:00:00:00:05")
    before = a.client.calls
    with a.read(current=False) as tx:
        assert tx.port(own.id).container == "web1"          # its own write, at once
    assert a.client.calls == before                         # etcd not asked
    with b.tx() as tx:
        theirs = _port(tx, "web2", "198.18.128.6/24", "02:00:00:00:00:06")

    def seen() -> bool:
        with a.read(current=False) as tx:
            return tx.port(theirs.id) is not None
    eventually(seen, "the other controller's write through a's watch")
    assert a.client.calls == before
    with a.read() as tx:                                    # a current read asks etcd
        assert tx.port(theirs.id) is not None
    assert a.client.calls == before + 1
    unwatched = EtcdStore(local_etcd.client(), prefix=prefix, follow=False)
    try:
        with b.tx() as tx:
            third = _port(tx, "web3", "198.18.128.7/24", "02:00:00:00:00:07")
        with unwatched.read(current=False) as tx:           # no watch: it asks etcd
            assert tx.port(third.id) is not None
    finally:
        unwatched.close()


def test_write_refuses_only_on_the_current_state(controllers):
    """write(fn) first runs fn on the mirror the watch keeps (no round trip before the
    commit); when fn refuses there, it runs again after asking etcd where it stands, and
    the refusal stands only then."""
    a, _b = controllers
    eventually(lambda: a.watching, "a's watch to be up")
    calls_at_each_run = []

    def refuse(tx) -> None:
        calls_at_each_run.append(a.client.calls)
        raise ApiError(409, "taken", "address taken")

    with pytest.raises(ApiError, match="address taken"):
        a.write(refuse)
    first, second = calls_at_each_run
    assert second > first         # the second run after a read of where etcd stands

    def add(tx):
        calls_at_each_run.append(a.client.calls)
        return _port(tx, "web9", "198.18.128.9/24", "02:00:00:00:00:09")

    before = a.client.calls
    a.write(add)
    assert calls_at_each_run[-1] == before and a.client.calls == before + 1   # the commit


def test_a_transaction_on_a_stale_mirror_conflicts_and_write_retries_it(controllers):
    a, b = controllers
    with b.read():
        pass                                          # b's mirror is current
    inside, go = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def slow_writer() -> None:
        try:
            with b.tx() as tx:                        # synced before a's write below...
                tx.insert_pod(8, None, None)
                inside.set()
                go.wait(10)
        except BaseException as e:                     # ...so its commit must fail
            errors.append(e)

    t = threading.Thread(target=slow_writer)
    t.start()
    inside.wait(10)
    with a.tx() as tx:
        tx.insert_pod(7, None, None)
    go.set()
    t.join(10)
    assert len(errors) == 1 and isinstance(errors[0], StoreConflict)
    assert errors[0].status == 503 and "retry" in errors[0].message
    with a.read() as tx:
        assert tx.pod(8) is None                      # nothing of the failed write

    runs = []

    def add_pod_9(tx):
        runs.append(1)
        if len(runs) == 1:                            # a write lands between sync and commit
            with a.tx() as other:
                other.insert_pod(10, None, None)
        tx.insert_pod(9, None, None)
        return "done"

    assert b.write(add_pod_9) == "done" and len(runs) == 2
    with a.read() as tx:
        assert [p.id for p in tx.pods()] == [0, 7, 9, 10]


def test_same_address_from_two_controllers_at_once_one_wins(controllers):
    a, b = controllers
    start = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def connect(store: EtcdStore, name: str, mac: str) -> None:
        start.wait()
        try:
            outcomes[name] = store.write(lambda tx: _port(tx, name, "198.18.128.9/24", mac))
        except sqlite3.IntegrityError as e:
            outcomes[name] = e

    threads = [threading.Thread(target=connect, args=(s, n, m)) for s, n, m in
               ((a, "web1", "02:00:00:00:00:01"), (b, "web2", "02:00:00:00:00:02"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    lost = [o for o in outcomes.values() if isinstance(o, sqlite3.IntegrityError)]
    assert len(outcomes) == 2 and len(lost) == 1
    with a.read() as tx:
        assert len(tx.ports()) == 1


class LosesAnswers(EtcdClient):
    """A real client whose next write transactions lose their answer (a fake built for
    this test): `applied` ones reach etcd first, the others never leave."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.plan: list[bool] = []                   # per coming write txn: applied?

    def txn(self, compares, success=(), failure=()):
        if self.plan and success:
            applied = self.plan.pop(0)
            if applied:
                super().txn(compares, success, failure)
            raise OutcomeUnknown(self.name, self.endpoints.current, "timed out (test)")
        return super().txn(compares, success, failure)


@pytest.mark.parametrize("plan", [[True], [False], [True, True], [False, True]])
def test_a_write_whose_outcome_is_unknown_is_applied_exactly_once(local_etcd, prefix, plan):
    store = EtcdStore(LosesAnswers([local_etcd.endpoint], timeout=5.0), prefix=prefix)
    try:
        with store.tx() as tx:
            tx.insert_host("h1", "198.18.0.11", "vxlan", 1, 2)
        store.client.plan = list(plan)
        with store.tx() as tx:
            port = _port(tx, "web1", "198.18.128.5/24", "02:00:00:00:00:05")
        assert store.client.plan == []
        other = EtcdStore(local_etcd.client(), prefix=prefix)
        with other.read() as tx:
            assert [p.id for p in tx.ports()] == [port.id]
        with other.tx() as tx:                       # and the store goes on
            _port(tx, "web2", "198.18.128.6/24", "02:00:00:00:00:06")
        other.close()
    finally:
        store.close()


def test_an_outcome_still_unknown_is_a_503_that_says_so(local_etcd, prefix):
    store = EtcdStore(LosesAnswers([local_etcd.endpoint], timeout=5.0), prefix=prefix,
                      attempts_timeout=0.3)
    try:
        store.client.plan = [False] * 50
        with pytest.raises(ApiError) as e, store.tx() as tx:
            tx.insert_pod(7, None, None)
        assert (e.value.status, e.value.code) == (503, "store_outcome_unknown")
        assert "etcd store" in e.value.message and "read the state back" in e.value.message
        store.client.plan = []
        with store.read() as tx:
            assert tx.pod(7) is None
    finally:
        store.close()


def test_index_keys_follow_the_rows_and_nothing_is_left_behind(controllers, local_etcd,
                                                                 prefix):
    a, b = controllers
    with a.tx() as tx:
        tx.insert_pod(7, "web", "198.18.135.0/24")
        tx.ensure_local_vlan("h1", 7)
        port = _port(tx, "web1", "198.18.135.5/24", "02:00:00:00:00:05", pod=7)
    index = keys(local_etcd, prefix, "idx/")
    assert f"idx/ports/pod_id,addr/7/{int(ipaddress.IPv4Address('198.18.135.5'))}" in index
    assert "idx/ports/pod_id,mac/7/02%3A00%3A00%3A00%3A00%3A05" in index
    assert "idx/ports/host_id,container/h1/web1" in index
    assert {"idx/hosts/tunnel_ip/198.18.0.11", "idx/hosts/dpid_int/1",
            "idx/hosts/dpid_tun/2", "idx/local_vlans/host_id,vlan/h1/1"} <= set(index)
    with b.tx() as tx:
        tx.update_host("h1", "198.18.0.21", "vxlan", 1, 2)     # the index key moves
    assert "idx/hosts/tunnel_ip/198.18.0.21" in keys(local_etcd, prefix, "idx/")
    assert "idx/hosts/tunnel_ip/198.18.0.11" not in keys(local_etcd, prefix, "idx/")
    with b.tx() as tx:
        tx.delete_port(port.id)
        tx.release_unused_vlans("h1")
        tx.delete_pod(7)
        tx.delete_host("h1")
    a.close()
    b.close()
    # what stays is the global pod (id 0) and its name's index key
    assert keys(local_etcd, prefix) == ["counters/version", "idx/pods/name/global",
                                        "meta/commit", "meta/schema", "meta/seq/ports",
                                        "pods/0"]


def test_versions_come_from_the_store_revision(controllers):
    a, b = controllers
    with b.tx() as tx:
        tx.bump(["h1"])
    with a.read() as tx:
        version = tx.host("h1").desired_version
    revision = a.client.range("/").revision
    assert 0 < version <= revision                   # never above the write that made it
    with a.tx() as tx:
        tx.bump(["h1"])
    with b.read() as tx:
        assert tx.host("h1").desired_version > version


def test_safety_tables_are_shared_by_the_controllers(controllers):
    a, b = controllers
    with a.tx() as tx:
        tx.put_credential("agent", "h1", "ab" * 32)
        tx.insert_event("operator admin", "connect", "port:1", 201, "ok", None)
    with b.tx() as tx:
        assert tx.credential_by_hash("ab" * 32).name == "h1"
        tx.revoke_credential("agent", "h1", "ab" * 32)
        tx.insert_event("operator admin", "revoke agent token", "host:h1", 200, "ok", None)
    with a.read() as tx:
        assert tx.credential("agent", "h1").revoked
        assert [e.operation for e in tx.events()] == ["revoke agent token", "connect"]
    with pytest.raises(sqlite3.IntegrityError), b.tx() as tx:
        tx.put_credential("operator", "alice", "ab" * 32)      # the token hash is unique


def test_the_layout_covers_every_table_of_the_schema():
    conn = sqlite3.connect(":memory:")
    create_schema(conn)
    layout = Layout.from_schema(conn, "/x/")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                         "AND name NOT LIKE 'sqlite_%'")}
    assert set(layout.tables) == tables
    assert layout.tables["tunnels"].key_columns == ("host_id", "peer_id")
    assert layout.tables["ports"].unique == (("host_id", "container"), ("pod_id", "addr"),
                                             ("pod_id", "mac"))
    assert layout.row_key("ports", [5]) == "/x/ports/5"
    assert layout.row_key("credentials", ["operator", "a/b"]) == "/x/credentials/operator/a%2Fb"
    assert layout.parse("/x/credentials/operator/a%2Fb") == ("credentials", ("operator", "a/b"))
    assert layout.parse("/x/meta/commit") is None
    with pytest.raises(ValueError, match="must start and end"):
        Layout("loris", [])


def _dump(store) -> dict:
    with store.read() as tx:
        return {"hosts": tx.hosts(), "pods": tx.pods(), "ports": tx.ports(),
                "tunnels": tx.all_tunnels(), "vlans": tx.all_local_vlans(),
                "credentials": tx.credentials(), "certs": tx.switch_certs(),
                "events": tx.events(limit=1000)}


def test_a_sqlite_store_moves_to_etcd_whole(tmp_path, local_etcd, prefix):
    from controller.store import Store
    from controller.store_copy import copy_sqlite_to_etcd

    path = str(tmp_path / "loris.db")
    old = Store(path)
    with old.tx() as tx:
        for i in range(1, 4):
            tx.insert_host(f"h{i}", f"198.18.0.{10 + i}", "vxlan", (1 << 63) + i, i)
        tx.set_tunnels("h1", {"h2": 3, "h3": 4})
        tx.insert_pod(7, "web", "198.18.135.0/24")
        tx.mark_implicit_pod(7)
        for i in range(30):
            port = tx.insert_port(f"h{1 + i % 3}", f"web{i}", 7, f"02:00:00:00:00:{i:02x}",
                                  ipaddress.IPv4Interface(f"198.18.135.{10 + i}/24"), False)
            tx.ensure_local_vlan(port.host_id, 7)
        tx.delete_port(port.id)                       # its id must not come back
        tx.put_credential("agent", "h1", "cd" * 32)
        tx.declare_switch_cert("h1", "ef" * 32)
        tx.insert_event("operator admin", "connect", "port:1", 201, "ok", None)
        version = tx.next_version()
    expected = _dump(old)
    old.close()
    store = EtcdStore(local_etcd.client(), prefix=prefix)
    try:
        copied = copy_sqlite_to_etcd(path, store, batch=7)
        assert copied["ports"] == 29 and copied["hosts"] == 3
        assert _dump(store) == expected
        again = EtcdStore(local_etcd.client(), prefix=prefix)     # from etcd alone
        assert _dump(again) == expected
        with again.tx() as tx:
            assert tx.insert_port("h1", "new", 7, "02:00:00:00:01:00",
                                  ipaddress.IPv4Interface("198.18.135.99/24"),
                                  False).id == port.id + 1
            assert tx.next_version() > version
        again.close()
        with pytest.raises(ValueError, match="already holds"):
            copy_sqlite_to_etcd(path, store)
    finally:
        store.close()
