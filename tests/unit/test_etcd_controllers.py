"""Two in-process controllers on one etcd prefix (controller/etcd_store.py through the
whole controller): a long poll on one woken by a write through the other, the same IP
through both at once, a pod created while the other writes. The store alone is in
test_etcd_store.py."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from controller.etcd_store import EtcdStore
from controller.store import Tx


@pytest.fixture
def prefix(local_etcd) -> str:
    return local_etcd.new_prefix()


def test_a_long_poll_on_one_controller_wakes_on_a_write_through_another(tmp_path, local_etcd,
                                                                          prefix):
    """Two in-process controllers on one prefix: h1's agent polls B; h2 registers through
    A; B's watch sees it and wakes the poll at once (wiring.py: on_change)."""
    from concurrent.futures import ThreadPoolExecutor

    from inproc import H1, H2, ApiClient, build_parts, eventually

    # polls held 30 s: only a wake-up answers within the 10 s the test waits
    parts = [build_parts(tmp_path / name, store=EtcdStore(local_etcd.client(), prefix=prefix),
                         agent_poll_interval=30.0) for name in ("a", "b")]
    a, b = (ApiClient(p) for p in parts)
    try:
        a.ok("POST", "/v1/hosts", H1)
        v = b.ok("GET", "/v1/hosts/h1/desired")["version"]
        with ThreadPoolExecutor(1) as pool:
            polling = pool.submit(b.ok, "GET", f"/v1/hosts/h1/desired?since={v}&wait=60")
            eventually(lambda: b.ok("GET", "/v1/hosts/h1")["agent"]["polling"],
                       "the long poll to wait")
            a.ok("POST", "/v1/hosts", H2)
            desired = polling.result(timeout=10)
        assert desired["version"] > v and [p["id"] for p in desired["peers"]] == ["h2"]
    finally:
        for p in parts:
            p.store.close()


def test_the_same_ip_through_two_controllers_at_once_one_gets_409(tmp_path, local_etcd,
                                                                    prefix):
    """Two in-process controllers on one prefix, one connect each, same IP, same moment:
    one wins the address (here it then times out for want of an agent, and is undone),
    the other is told 409 ip_in_use, whichever mirror was behind."""
    from concurrent.futures import ThreadPoolExecutor

    from inproc import H1, POD7, ApiClient, build_parts

    parts = [build_parts(tmp_path / name, store=EtcdStore(local_etcd.client(), prefix=prefix))
             for name in ("a", "b")]
    a, b = (ApiClient(p) for p in parts)
    try:
        a.ok("POST", "/v1/hosts", H1)
        a.ok("POST", "/v1/pods", POD7)
        start = threading.Barrier(2)

        def connect(api: ApiClient, container: str):
            start.wait()
            return api.call("POST", "/v1/ports", {"host": "h1", "container": container,
                                                  "ip": "198.18.135.9/24", "pod": 7})

        for attempt in range(3):            # the race is real: try it a few times
            with ThreadPoolExecutor(2) as pool:
                answers = list(pool.map(connect, (a, b), (f"x{attempt}", f"y{attempt}")))
            codes = sorted((status, body["error"]["code"]) for status, body in answers)
            # The winner has no agent: it times out, or (the test slowed past
            # agent_away_polls by a loaded machine) is refused as away; either way undone.
            assert codes[0] == (409, "ip_in_use"), answers
            assert codes[1] in ((503, "agent_timeout"), (503, "agent_away")), answers
        for api in (a, b):
            assert api.ok("GET", "/v1/ports") == []          # the winner was undone too
    finally:
        for p in parts:
            p.store.close()


class WrittenBetween(EtcdStore):
    """A real etcd store (a fake built for this test) that runs `meanwhile` once, at the end
    of its next transaction's block, before the commit: another controller's write lands
    between this transaction's start and its commit."""

    meanwhile: Callable[[], None] | None = None

    @contextmanager
    def tx(self, current: bool = True) -> Iterator[Tx]:
        with super().tx(current) as tx:
            yield tx
            if self.meanwhile is not None:
                run, self.meanwhile = self.meanwhile, None
                run()


def test_a_pod_created_while_another_controller_writes_is_retried_not_refused(
        tmp_path, local_etcd, prefix):
    """pods, tokens and host removal write with store.write: a conflict with another
    controller runs the write again on the fresh state instead of answering 503."""
    from inproc import ApiClient, build_parts

    other = EtcdStore(local_etcd.client(), prefix=prefix)
    store = WrittenBetween(local_etcd.client(), prefix=prefix)
    parts = build_parts(tmp_path, store=store)
    try:
        def another_pod() -> None:
            with other.tx() as tx:
                tx.insert_pod(7, None, None)

        store.meanwhile = another_pod
        created = ApiClient(parts).ok("POST", "/v1/pods", {"id": 8, "name": "web"}, 201)
        assert store.meanwhile is None and created["id"] == 8
        with other.read() as tx:
            assert sorted(p.id for p in tx.pods()) == [0, 7, 8]
    finally:
        store.close()
        other.close()
