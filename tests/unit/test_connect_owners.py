"""Who owns an unfinished connect, and what a restart or a departed controller drops
(controller/connect_owners.py, controller/recovery.py), on both stores."""

from __future__ import annotations

import pytest
from conftest import open_test_store
from inproc import H1, POD7, ApiClient, add_port, build_parts

from controller import recovery
from controller.connect_owners import Owner, gone
from controller.etcd import StoreUnavailable

ME = Owner("c1", "run-now", 11)


@pytest.mark.parametrize(("owner", "live", "left_over"), [
    (None, {11, 12}, True),                            # no owner recorded (before schema 6)
    (Owner("c1", "run-now", 11), set(), False),        # in flight in this very process
    (Owner("c1", "run-before", 11), {11}, True),       # an earlier run of this controller
    (Owner("c1", "run-before", 9), {9}, True),         # ... even while its lease lives on
    (Owner("c2", "run-x", 12), {11, 12}, False),       # another controller, alive
    (Owner("c2", "run-x", 12), {11}, True),            # another controller, its lease ended
    (Owner("c2", "run-x", None), {11, 12}, True),      # another controller without a lease
    (Owner("c2", "run-x", 12), None, True),            # no mastership: one controller only
])
def test_which_pending_connects_are_left_over(owner, live, left_over):
    assert gone(owner, ME, live) is left_over


def test_a_connect_of_this_process_that_ended_without_its_undo_is_left_over():
    assert gone(Owner("c1", "run-now", 11), ME, {11}, running_here=False)
    assert not gone(Owner("c1", "run-now", 11), ME, {11}, running_here=True)


@pytest.fixture
def parts(store_backend, tmp_path, request):
    store = None if store_backend == "sqlite" else open_test_store("etcd", tmp_path, request)
    p = build_parts(tmp_path, store=store)
    ApiClient(p).ok("POST", "/v1/hosts", H1)
    ApiClient(p).ok("POST", "/v1/pods", POD7)
    yield p
    p.store.close()


def pending(parts, container: str, last: int, owner: Owner | None, pod: int = 7):
    port = add_port(parts, container=container, pod=pod, mac=f"02:00:00:00:07:{last:02x}",
                    ip=f"198.18.{128 + pod}.{last}/24", state="pending")
    if owner is not None:
        with parts.store.tx() as tx:
            tx.claim_connect(port.id, owner)
    return port


def containers(parts) -> list[str]:
    with parts.store.read() as tx:
        return sorted(p.container for p in tx.ports())


def as_controller(parts, cid: str, lease: int | None, live: set[int] | None) -> Owner:
    """Make the in-process controller `cid` (run as built) with mastership's lease."""
    ctx = parts.context
    ctx.controller_id = cid
    if lease is not None:
        ctx.lease = lambda: lease
        ctx.live_leases = lambda: live
    return ctx.connect_owner()


def test_a_restart_drops_only_the_connects_of_controllers_that_are_gone(parts):
    me = as_controller(parts, "c1", 11, {11, 12})
    add_port(parts, container="done")
    parts.context.connects_running.add(pending(parts, "mine-now", 6, me).id)
    pending(parts, "mine-ended", 11, me)                 # its undo failed
    pending(parts, "mine-before", 7, Owner("c1", "earlier-run", 10))
    pending(parts, "c2-alive", 8, Owner("c2", "r2", 12))
    pending(parts, "c3-gone", 9, Owner("c3", "r3", 13))
    pending(parts, "nobody", 10, None)
    recovery.recover(parts.context)
    assert containers(parts) == ["c2-alive", "done", "mine-now"]
    with parts.store.read() as tx:
        assert sorted(o.controller for o in tx.connect_owners().values()) == ["c1", "c2"]
        details = [e.detail for e in tx.events() if e.operation == "drop unfinished connect"]
    assert any("mine-before" in d and "controller c1" in d for d in details), details


def test_leases_unreadable_keep_the_other_controllers_connects(parts):
    def unreadable() -> set[int]:
        raise StoreUnavailable("etcd", "no leader")

    as_controller(parts, "c1", 11, None)
    parts.context.live_leases = unreadable
    pending(parts, "mine-before", 7, Owner("c1", "earlier-run", 10))
    pending(parts, "c2-maybe", 8, Owner("c2", "r2", 12))
    recovery.recover(parts.context)
    assert containers(parts) == ["c2-maybe"]


def test_one_controller_drops_every_earlier_run_as_before(parts):
    me = as_controller(parts, "solo", None, None)
    assert me.lease is None
    parts.context.connects_running.add(pending(parts, "now", 6, me).id)
    pending(parts, "before", 7, Owner("solo", "earlier", None))
    pending(parts, "renamed", 8, Owner("old-name", "earlier", None))
    recovery.recover(parts.context)
    assert containers(parts) == ["now"]


def test_a_departed_controllers_connects_and_implicit_pods_are_swept(parts):
    as_controller(parts, "c1", 11, {11})
    with parts.store.tx() as tx:
        tx.insert_pod(8, None, None)
        tx.mark_implicit_pod(8)
    pending(parts, "c2-gone", 9, Owner("c2", "r2", 12), pod=8)
    version = parts.board.version("h1")
    assert recovery.sweep(parts.context, "controller c2 went away") == 1
    assert containers(parts) == []
    with parts.store.read() as tx:
        assert tx.pod(8) is None and tx.connect_owners() == {}
    assert parts.board.version("h1") > version
    assert recovery.sweep(parts.context, "again") == 0


def test_the_owner_row_goes_with_its_port(parts):
    port = pending(parts, "x", 6, Owner("c1", "r", 11))
    with parts.store.tx() as tx:
        tx.delete_port(port.id)
    with parts.store.read() as tx:
        assert tx.connect_owners() == {}


def test_a_controller_without_its_lease_starts_no_connect(parts):
    as_controller(parts, "c1", 11, {11})
    parts.context.lease = lambda: None
    api = ApiClient(parts)
    msg = api.error("POST", "/v1/ports", {"host": "h1", "container": "w", "pod": 7,
                                          "ip": "198.18.135.20/24"},
                    status=503, code="controller_unregistered")
    assert "controller c1 holds no etcd lease" in msg
    assert containers(parts) == []
