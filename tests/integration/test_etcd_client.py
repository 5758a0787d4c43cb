"""The etcd client (controller/etcd) against a real 3-member etcd 3.4 cluster in a lab's
control namespace (lab/etcd.py; heartbeat 50 ms, election 500 ms, progress every 2 s).

One cluster for the module; every test uses its own key prefix and leaves every member
running and the cluster healthy for the next (the `healthy` fixture puts back what a test
killed or paused). Figures (failover, election pause) are printed: run with -s to see them.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import wait_for

from controller.etcd import (
    AuthenticationFailed,
    Compacted,
    EtcdClient,
    Event,
    Get,
    LeaseNotFound,
    OutcomeUnknown,
    Put,
    RequestFailed,
    StoreUnavailable,
    Watcher,
    create_revision_is,
    key_absent,
    mod_revision_is,
    value_is,
    version_is,
)
from lab import Lab
from lab.etcd import EtcdCluster
from lab.launchers import REPO_ROOT, venv_bin

pytestmark = [pytest.mark.integration]

TIMEOUT = 2.0          # the clients' per-call timeout in these tests


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(hosts=1, docker=False) as lab:
        yield lab


@pytest.fixture(scope="module")
def cluster(lab: Lab) -> Iterator[EtcdCluster]:
    cluster = lab.start_etcd(members=3)
    yield cluster
    cluster.stop()


@pytest.fixture
def healthy(cluster: EtcdCluster) -> Iterator[EtcdCluster]:
    """The cluster, made whole again after the test (paused members resumed, killed ones
    restarted)."""
    yield cluster
    for m in cluster.members:
        if m.paused:
            cluster.resume(m)
    for m in cluster.members:
        if not m.running:
            cluster.restart(m)
    cluster.wait_healthy()


def client_of(cluster: EtcdCluster, **options) -> EtcdClient:
    return EtcdClient(cluster.endpoints, socket_factory=cluster.socket_factory,
                      timeout=TIMEOUT, **cluster.tls_options(), **options)


@pytest.fixture
def client(cluster: EtcdCluster) -> Iterator[EtcdClient]:
    with client_of(cluster) as c:
        yield c


@pytest.fixture
def prefix() -> str:
    return f"/test/{uuid.uuid4().hex[:8]}/"


class Collector:
    """A watcher iterated in a thread of its own, its events kept in order."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for batch in self.watcher:
                with self._cond:
                    self.events.extend(batch.events)
                    self._cond.notify_all()
        except BaseException as e:      # handed to the test
            with self._cond:
                self.error = e
                self._cond.notify_all()

    def wait(self, count: int, timeout: float = 20) -> list[Event]:
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.events) >= count or self.error,
                                     timeout)
            if self.error:
                raise self.error
            assert ok, f"{len(self.events)} of {count} events within {timeout}s " \
                       f"(last error: {self.watcher.last_error})"
            return list(self.events)

    def wait_connected(self, timeout: float = 10) -> None:
        wait_for(lambda: self.watcher.connected, timeout, "the watch to connect")

    def stop(self) -> None:
        self.watcher.cancel()
        self._thread.join(10)
        assert not self._thread.is_alive(), "the watch did not end after cancel()"


def claim(client: EtcdClient, key: str, token: str) -> bool:
    """Create-if-absent, safe to repeat after OutcomeUnknown: True if `key` holds `token`."""
    result = client.txn([key_absent(key)], [Put(key, token)], [Get(key)])
    return result.succeeded or result.responses[0].kvs[0].value == token.encode()


# ----- the key-value API -------------------------------------------------------------

def test_crud_range_and_txn_compares(client: EtcdClient, prefix: str) -> None:
    first = client.put(prefix + "a", "1")
    second = client.put(prefix + "b", b"\x00\xffbin")
    assert second.revision == first.revision + 1
    kv = client.get(prefix + "a")
    assert (kv.value, kv.version, kv.create_revision) == (b"1", 1, first.revision)
    assert client.get(prefix + "b").value == b"\x00\xffbin"
    assert client.get(prefix + "missing") is None

    updated = client.put(prefix + "a", "2", prev_kv=True)
    assert updated.prev_kv.value == b"1"
    assert client.get(prefix + "a", revision=first.revision).value == b"1"   # history
    listed = client.range(prefix, prefix=True)
    assert [k.key for k in listed.kvs] == [prefix + "a", prefix + "b"] and listed.count == 2
    assert client.range(prefix, prefix=True, keys_only=True).kvs[0].value == b""
    page = client.range(prefix, prefix=True, limit=1)
    assert len(page.kvs) == 1 and page.more and page.count == 2
    assert client.range(prefix, prefix=True, count_only=True).count == 2
    assert [k.key for k in client.list_prefix(prefix, page_size=1).kvs] == \
        [prefix + "a", prefix + "b"]

    a = client.get(prefix + "a")
    ok = client.txn([version_is(prefix + "a", 2), mod_revision_is(prefix + "a", a.mod_revision),
                     create_revision_is(prefix + "a", first.revision), value_is(prefix + "a", "2")],
                    [Put(prefix + "a", "3"), Put(prefix + "c", "new"), Get(prefix, prefix=True)],
                    [Get(prefix + "a")])
    assert ok.succeeded and ok.revision == updated.revision + 1   # one revision per txn
    assert [k.key for k in ok.responses[2].kvs] == [prefix + "a", prefix + "b", prefix + "c"]
    stale = client.txn([mod_revision_is(prefix + "a", a.mod_revision)],
                       [Put(prefix + "a", "lost")], [Get(prefix + "a")])
    assert not stale.succeeded and stale.responses[0].kvs[0].value == b"3"
    assert stale.revision == ok.revision                            # nothing written
    with pytest.raises(RequestFailed, match="duplicate key"):
        client.txn([], [Put(prefix + "a", "x"), Put(prefix + "a", "y")])

    gone = client.delete(prefix, prefix=True, prev_kv=True)
    assert gone.deleted == 3 and {k.key for k in gone.prev_kvs} == \
        {prefix + "a", prefix + "b", prefix + "c"}
    assert client.range(prefix, prefix=True).kvs == ()


def test_index_keys_make_values_unique(client: EtcdClient, cluster: EtcdCluster,
                                       prefix: str) -> None:
    """The store's uniqueness pattern: a row and its index keys in one transaction that
    holds only if every index key is absent."""
    def connect(port: int, ip: str, mac: str) -> bool:
        row, by_ip, by_mac = (f"{prefix}ports/{port}", f"{prefix}idx/ip/7/{ip}",
                              f"{prefix}idx/mac/7/{mac}")
        body = json.dumps({"ip": ip, "mac": mac})
        return client.txn([key_absent(row), key_absent(by_ip), key_absent(by_mac)],
                          [Put(row, body), Put(by_ip, str(port)), Put(by_mac, str(port))]
                          ).succeeded

    assert connect(1, "198.18.135.5", "02:00:00:00:00:01")
    assert not connect(2, "198.18.135.5", "02:00:00:00:00:02")      # same IP
    assert not connect(3, "198.18.135.6", "02:00:00:00:00:01")      # same MAC
    assert client.range(f"{prefix}ports/", prefix=True).count == 1  # nothing half-made
    assert client.range(f"{prefix}idx/", prefix=True).count == 2

    # Eight clients race for one index key: exactly one wins.
    winners: list[int] = []
    start = threading.Barrier(8)

    def race(n: int) -> None:
        with client_of(cluster) as own:
            start.wait()
            if own.txn([key_absent(prefix + "idx/ip/7/198.18.135.9")],
                       [Put(prefix + "idx/ip/7/198.18.135.9", str(n))]).succeeded:
                winners.append(n)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(winners) == 1
    assert client.get(prefix + "idx/ip/7/198.18.135.9").value == str(winners[0]).encode()


def test_leases_expire_and_take_their_keys(client: EtcdClient, prefix: str) -> None:
    lease = client.grant(1)
    client.put(prefix + "mine", "x", lease=lease.id)
    info = client.time_to_live(lease.id, keys=True)
    assert info.granted_ttl == 1 and info.keys == (prefix + "mine",)
    assert lease.id in client.leases()
    start = client.get(prefix + "mine").mod_revision
    watch = Collector(client.watch(prefix, prefix=True, start_revision=start + 1))
    try:
        for _ in range(4):                 # kept alive well past its TTL
            assert client.keepalive(lease.id) >= 1
            time.sleep(0.5)
        assert client.get(prefix + "mine") is not None
        (gone,) = watch.wait(1, timeout=10)        # no more keepalives: it expires
    finally:
        watch.stop()
    assert (gone.type, gone.kv.key) == ("DELETE", prefix + "mine")
    assert client.get(prefix + "mine") is None
    assert client.time_to_live(lease.id) is None
    with pytest.raises(LeaseNotFound):
        client.keepalive(lease.id)
    assert client.revoke(lease.id) is False
    assert lease.id not in client.leases()

    other = client.grant(30)
    client.put(prefix + "revoked", "x", lease=other.id)
    assert client.revoke(other.id) is True
    assert client.get(prefix + "revoked") is None


# ----- watches -----------------------------------------------------------------------

def test_watch_keeps_every_event_in_order_across_reconnects(healthy: EtcdCluster,
                                                            client: EtcdClient,
                                                            prefix: str) -> None:
    """Events written while the watch's member is killed, and while it hangs (SIGSTOP: the
    stream falls silent, the watch leaves it after its idle timeout), all arrive, once
    each, in order."""
    start = client.put(prefix + "start", "0").revision
    with client_of(healthy) as watching:
        watch = Collector(watching.watch(prefix + "k/", prefix=True, start_revision=start + 1,
                                         idle_timeout=5))
        try:
            watch.wait_connected()
            written = []

            def write(n: int) -> None:
                for _ in range(n):
                    write_once(len(written))
                    written.append(str(len(written)))

            def write_once(i: int) -> None:
                """Write number i exactly once, even when a write's outcome is unknown (the
                leader killed under it): a counter key makes the transaction repeatable."""
                deadline = time.monotonic() + 20
                while True:
                    try:
                        r = writer[0].txn([value_is(prefix + "n", str(i))],
                                          [Put(prefix + "n", str(i + 1)),
                                           Put(f"{prefix}k/{i % 5}", str(i))],
                                          [Get(prefix + "n")])
                        if r.succeeded or r.responses[0].kvs[0].value == str(i + 1).encode():
                            return
                        raise AssertionError(f"counter is {r.responses[0].kvs[0].value}")
                    except StoreUnavailable:          # OutcomeUnknown too: try again
                        assert time.monotonic() < deadline, "no write within 20 s"
                        time.sleep(0.1)

            writer = [client]
            client.put(prefix + "n", "0")

            write(10)
            watch.wait(10)
            killed = healthy.kill(watch.watcher.endpoint)
            write(10)
            watch.wait(20)
            assert watch.watcher.endpoint != killed.client_url
            healthy.restart(killed)
            hung = healthy.pause(watch.watcher.endpoint)
            # The writer keeps away from the hung member: a write sent there has an unknown
            # outcome and would make `written` uncertain.
            writer[0] = EtcdClient([u for u in healthy.endpoints if u != hung.client_url],
                                   socket_factory=healthy.socket_factory, timeout=TIMEOUT)
            write(10)
            events = watch.wait(30)
            assert watch.watcher.endpoint != hung.client_url
            print(f"\nwatch: {watch.watcher.reconnects} reconnects; "
                  f"last error {watch.watcher.last_error}")
        finally:
            watch.stop()
    assert [e.kv.value.decode() for e in events] == written
    revisions = [e.revision for e in events]
    assert revisions == sorted(set(revisions))


def test_watch_after_compaction_says_so_and_relisting_resumes(client: EtcdClient,
                                                              cluster: EtcdCluster,
                                                              prefix: str) -> None:
    old = client.put(prefix + "a", "1").revision
    client.put(prefix + "a", "2")
    now = client.put(prefix + "b", "1").revision
    cluster.compact(now)
    with pytest.raises(Compacted):
        client.get(prefix + "a", revision=old)
    watcher = client.watch(prefix, prefix=True, start_revision=old + 1, idle_timeout=5)
    with pytest.raises(Compacted) as caught:
        next(iter(watcher))
    assert caught.value.compact_revision == now
    # What the caller does: list again, and watch from the list's revision + 1.
    listed = client.list_prefix(prefix)
    assert {k.key: k.value for k in listed.kvs} == {prefix + "a": b"2", prefix + "b": b"1"}
    watch = Collector(client.watch(prefix, prefix=True, start_revision=listed.revision + 1))
    try:
        client.put(prefix + "c", "1")
        (event,) = watch.wait(1)
    finally:
        watch.stop()
    assert event.kv.key == prefix + "c"


# ----- failures ----------------------------------------------------------------------

def test_failover_when_the_member_in_use_is_killed(healthy: EtcdCluster, prefix: str) -> None:
    # The member in use is a follower: killing the leader also starts an election, which can
    # outlast a call's timeout (a write then ends unknown, as it should); that case is the
    # HA tests' (test_ha_cluster.py).
    leader = healthy.leader()
    followers_first = sorted(healthy.members, key=lambda m: m is leader)
    with EtcdClient([m.client_url for m in followers_first], timeout=TIMEOUT,
                    socket_factory=healthy.socket_factory, **healthy.tls_options()) as client:
        client.put(prefix + "a", "1")
        used = healthy.kill(client.endpoints.current)
        assert used is not leader
        started = time.monotonic()
        assert client.put(prefix + "a", "2").revision > 0          # refused: tried elsewhere
        took = time.monotonic() - started
        assert client.endpoints.current != used.client_url
        assert client.get(prefix + "a").value == b"2"
    print(f"\nfailover after SIGKILL of the member in use: the next write took {took:.3f}s")


def test_quorum_lost_fails_fast_naming_the_store_then_recovers(healthy: EtcdCluster,
                                                               client: EtcdClient,
                                                               prefix: str) -> None:
    client.put(prefix + "a", "1")
    current = healthy.member(client.endpoints.current)
    other = next(m for m in healthy.members if m is not current)
    healthy.pause(current)
    healthy.pause(other)
    outcomes: list[tuple[str, float]] = []
    unknown: list[str] = []
    deadline = time.monotonic() + 20
    while True:                 # until the client has learnt where it stands
        token = f"t{len(outcomes)}"
        started = time.monotonic()
        try:
            claim(client, prefix + f"w/{token}", token)
            raise AssertionError("a write succeeded with two of three members stopped")
        except OutcomeUnknown:
            unknown.append(token)
            outcomes.append(("unknown", time.monotonic() - started))
        except StoreUnavailable as e:
            outcomes.append(("unavailable", time.monotonic() - started))
            message = str(e)
            if "no leader" in message:
                break
        assert time.monotonic() < deadline, f"no fast failure: {outcomes}"
    assert "etcd store" in message and healthy.endpoints[0] in message
    # Each stopped member costs one member_timeout, not the call's whole timeout.
    learnt = sum(seconds for _, seconds in outcomes)
    assert learnt < 2 * client.member_timeout + 1.0, outcomes
    fast = []
    for _ in range(5):          # from now on every call fails at once
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="no leader"):
            client.put(prefix + "b", "x")
        with pytest.raises(StoreUnavailable, match="no leader"):
            client.get(prefix + "a")
        fast.append(time.monotonic() - started)
    assert max(fast) < TIMEOUT
    healthy.resume(current)
    healthy.resume(other)
    started = time.monotonic()
    while True:
        try:
            client.put(prefix + "b", "back")
            break
        except StoreUnavailable:
            assert time.monotonic() - started < 20, "writes did not come back"
            time.sleep(0.05)
    back = time.monotonic() - started
    # A write whose outcome was unknown is repeated safely: exactly one result either way.
    for token in unknown:
        assert claim(client, prefix + f"w/{token}", token)
    assert client.range(prefix + "w/", prefix=True).count == len(unknown)
    print(f"\ntwo of three SIGSTOPped: first calls {outcomes}; then each failed call "
          f"(a write and a read) in {max(fast) * 1000:.0f} ms at most; writes back "
          f"{back:.2f}s after SIGCONT")


def test_leader_killed_writes_resume_after_the_election(healthy: EtcdCluster,
                                                        client: EtcdClient,
                                                        prefix: str) -> None:
    leader = healthy.leader()
    client.endpoints.succeeded(leader.client_url)     # talk to the leader, the worst case
    client.put(prefix + "a", "before")
    healthy.kill(leader)
    killed_at = time.monotonic()
    attempts = []
    while True:
        try:
            assert claim(client, prefix + "after", "1")
            break
        except StoreUnavailable as e:       # OutcomeUnknown included: claim() is repeatable
            attempts.append(type(e).__name__)
            assert time.monotonic() - killed_at < 20, f"no write after the election: {e}"
    pause = time.monotonic() - killed_at
    new_leader = healthy.leader()
    elected = time.monotonic() - killed_at
    assert new_leader is not leader
    assert client.get(prefix + "a").value == b"before"
    print(f"\nleader {leader.name} SIGKILLed: first write after {pause:.2f}s (failed attempts "
          f"{attempts}); all members agreed on {new_leader.name} {elected:.2f}s after the kill")


def test_store_writes_through_a_leader_kill_exactly_once(healthy: EtcdCluster,
                                                         prefix: str) -> None:
    """The controller's store (controller/etcd_store.py) on the cluster: a write sent to the
    leader as it is killed has an unknown outcome; the store sends it again and the REST
    call it serves succeeds, the row written once."""
    import ipaddress

    from controller.etcd_store import EtcdStore

    client = client_of(healthy)
    store = EtcdStore(client, prefix=prefix)
    try:
        with store.tx() as tx:
            tx.insert_host("h1", "198.18.0.11", "vxlan", 1, 2)
        leader = healthy.leader()
        client.endpoints.succeeded(leader.client_url)     # the store talks to the leader
        healthy.kill(leader)
        started = time.monotonic()
        with store.tx() as tx:
            port = tx.insert_port("h1", "web1", 0, "02:00:00:00:00:05",
                                  ipaddress.IPv4Interface("198.18.128.5/24"), False)
        took = time.monotonic() - started
        with client_of(healthy) as other:
            rows = other.list_prefix(prefix + "ports/").kvs
        assert [kv.key for kv in rows] == [f"{prefix}ports/{port.id}"]
        print(f"\nstore write with the leader {leader.name} killed: {took:.2f}s")
    finally:
        store.close()


# ----- TLS and authentication; eventlet ----------------------------------------------

def test_tls_client_certificate_and_password(lab: Lab, prefix: str) -> None:
    secure = lab.start_etcd(members=1, name="etcdtls", first_ip=9, tls=True,
                            extra_args=["--auth-token-ttl", "2"])
    try:
        secure.enable_auth("root", "s3cret")
        with client_of(secure, username="root", password="s3cret") as c:
            assert c.put(prefix + "a", "1").revision > 0
            time.sleep(3)                           # the token expires: a new one is used
            assert c.get(prefix + "a").value == b"1"
        with client_of(secure, username="root", password="wrong") as c, \
                pytest.raises(AuthenticationFailed, match="user and password"):
            c.get(prefix + "a")
        with client_of(secure) as c, pytest.raises(AuthenticationFailed,
                                                   match="requires authentication"):
            c.get(prefix + "a")
        no_cert = EtcdClient(secure.endpoints, socket_factory=secure.socket_factory,
                             timeout=TIMEOUT, ca_cert=secure.tls_options()["ca_cert"])
        with no_cert, pytest.raises(StoreUnavailable):
            no_cert.get(prefix + "a")
    finally:
        secure.stop()


def test_client_and_watch_under_eventlet(lab: Lab, cluster: EtcdCluster, prefix: str) -> None:
    probe = Path(__file__).with_name("etcd_eventlet_probe.py")
    python = venv_bin() / "python" if (venv_bin() / "python").exists() else Path(sys.executable)
    res = lab.run("ctl", [python, probe, ",".join(cluster.endpoints), prefix], timeout=90,
                  env={"PYTHONPATH": str(REPO_ROOT)})
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["green"]
    assert sorted(out["seen"]) == sorted(f"{w}/{i}" for w in range(4) for i in range(25))
    for w in range(4):                             # each writer's events in its order
        mine = [v for v in out["seen"] if v.startswith(f"{w}/")]
        assert mine == [f"{w}/{i}" for i in range(25)]
    assert out["cancel_seconds"] is not None and out["cancel_seconds"] < 2
    assert out["max_gap"] < 1.0, "the hub was blocked"
    print(f"\neventlet: 100 events through a green watch; the hub's longest pause "
          f"{out['max_gap'] * 1000:.0f} ms; cancel ended a blocked watch in "
          f"{out['cancel_seconds'] * 1000:.0f} ms")
