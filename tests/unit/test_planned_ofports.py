"""The ofport a connect chooses for its port (controller/planned_ofports.py): how it is
chosen, how the topology uses it on the port's own host before the agent reported it, and
what a report of the same or of another number changes."""

from __future__ import annotations

import ipaddress
import sqlite3

import pytest
from store_rig import flow_objects, pod_flows, three_hosts

from controller import planned_ofports, topology
from controller.rows import SCHEMA_VERSION
from controller.store import Store
from flows.contract import MAX_OFPORT

PATCH = 1


# ---- choosing a number (pure) ------------------------------------------------------------

def test_numbers_are_tried_upwards_then_from_one_after_the_top():
    assert list(planned_ofports.candidates(MAX_OFPORT - 2))[:4] == [MAX_OFPORT - 1,
                                                                     MAX_OFPORT, 1, 2]
    assert len(list(planned_ofports.candidates(7))) == MAX_OFPORT


def test_the_patch_port_and_numbers_in_use_are_skipped():
    used = {3, 4}
    assert planned_ofports.choose(1, 2, used.__contains__) == 5
    assert planned_ofports.choose(MAX_OFPORT, 1, {2}.__contains__) == 3
    assert planned_ofports.choose(5, 1, lambda n: True) is None


# ---- in the store ------------------------------------------------------------------------

@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "loris.db"))
    with s.tx() as tx:
        three_hosts(tx, PATCH)
        tx.insert_pod(7, None, None)
    yield s
    s.close()


def _connect(store: Store, host: str, n: int, planned: bool = True) -> tuple[int, int | None]:
    """Insert a pending port as a connect does: (its id, its planned ofport)."""
    with store.tx() as tx:
        tx.ensure_local_vlan(host, 7)
        ofport = tx.plan_ofport(host) if planned else None
        port = tx.insert_port(host, f"c{n}", 7, f"02:00:00:00:00:{n:02x}",
                              ipaddress.IPv4Interface(f"198.18.135.{n + 1}/24"), False, ofport)
        return port.id, port.planned_ofport


def _wired(store: Store, port_id: int, ofport: int) -> None:
    """What the agent's report writes (controller/agent_protocol.py)."""
    with store.tx() as tx:
        tx.update_port(port_id, ofport=ofport, planned_ofport=None, state="wired")


def test_a_host_without_its_patch_port_gets_no_planned_number(store):
    with store.tx() as tx:
        tx.set_patch("h1", None, None)
    assert _connect(store, "h1", 1)[1] is None
    assert _connect(store, "h2", 2)[1] == PATCH + 1


def test_numbers_only_go_up_a_freed_one_is_not_handed_out_again(store):
    a, na = _connect(store, "h1", 1)
    b, nb = _connect(store, "h1", 2)
    assert (na, nb) == (2, 3)
    assert _connect(store, "h2", 3)[1] == 2          # one counter per host
    with store.tx() as tx:
        tx.delete_port(b)                            # its OVS port may still be there
    assert _connect(store, "h1", 4)[1] == 4


def test_the_first_planned_number_starts_above_what_the_host_has(store):
    a, _ = _connect(store, "h1", 1, planned=False)
    _wired(store, a, 40)                            # a number OVS chose (an older store)
    assert _connect(store, "h1", 2)[1] == 41


def test_after_the_top_numbers_held_by_rows_are_skipped(store):
    a, _ = _connect(store, "h1", 1, planned=False)
    _wired(store, a, 2)
    with store.tx() as tx:
        tx._c.execute("INSERT OR REPLACE INTO counters (name, value) VALUES (?, ?)",
                      (planned_ofports.counter_name("h1"), MAX_OFPORT))
    assert _connect(store, "h1", 2)[1] == 3            # 1 is the patch port, 2 is taken


def test_an_older_store_gets_the_column_and_a_second_run_changes_nothing(tmp_path):
    db = str(tmp_path / "old.db")
    Store(db).close()
    with sqlite3.connect(db) as conn:                # what a schema-6 controller left
        conn.execute("DROP INDEX ports_planned_ofport")
        conn.execute("ALTER TABLE ports DROP COLUMN planned_ofport")
        conn.execute("PRAGMA user_version = 6")
    Store(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 5")      # step 7 runs again: no error
    store = Store(db)
    try:
        assert store.pragma("user_version") == SCHEMA_VERSION
        with store.read() as tx:
            assert "planned_ofport" in {r[1] for r in tx._all("PRAGMA table_info(ports)")}
    finally:
        store.close()


# ---- in the flows ------------------------------------------------------------------------

def test_a_planned_port_is_in_its_own_hosts_flows_before_it_is_wired(store):
    old, _ = _connect(store, "h1", 1)
    _wired(store, old, 2)
    new, planned = _connect(store, "h2", 2)
    assert planned == 2
    before = {h: pod_flows(store, h, 7) for h in ("h1", "h2", "h3")}
    assert new in flow_objects(before["h2"]) and new in flow_objects(before["h1"])
    with store.read() as tx:
        topo, _ = topology.build(tx, pods=[7], for_host="h2")
    assert topo.ports[new].ofport == planned
    _wired(store, new, planned)                      # wired with the number chosen
    assert {h: pod_flows(store, h, 7) for h in ("h1", "h2", "h3")} == before


def test_a_planned_port_whose_wiring_failed_leaves_its_hosts_flows(store):
    new, _ = _connect(store, "h2", 2)
    with store.tx() as tx:
        tx.update_port(new, error_code="container_not_found", error_message="gone")
    for h in ("h1", "h2", "h3"):
        assert new not in flow_objects(pod_flows(store, h, 7))


def test_a_planned_number_another_port_got_from_ovs_is_a_clash_not_a_shared_port(store):
    new, planned = _connect(store, "h1", 1)
    other, _ = _connect(store, "h1", 2, planned=False)
    _wired(store, other, planned)                    # OVS gave that number to another port
    with store.read() as tx:
        assert [p.id for p in tx.ofport_clashes([7])] == [new, other]
        found: list[topology.Problem] = []
        topo, _ = topology.build(tx, pods=[7], problems=found, for_host="h1")
    assert new in topo.ports and other not in topo.ports     # the first by id keeps it
    assert [p.id for p in found] == [other]


# ---- through the agent protocol, on both store backends ------------------------------------

def test_a_report_of_the_planned_number_reprograms_nothing_another_one_does(api, parts):
    from inproc import H1, POD7

    api.ok("POST", "/v1/hosts", H1)
    api.ok("POST", "/v1/pods", POD7)
    version = api.ok("GET", "/v1/hosts/h1/desired")["version"]
    api.ok("PUT", "/v1/hosts/h1/actual", {"version": version, "patch": {"br-int": 1,
                                                                         "br-tun": 1},
                                          "tunnels": {}, "ports": {}}, status=204)
    submitted: list[tuple[str, object]] = []
    submit = parts.programmer.submit
    parts.programmer.submit = lambda host, sections=None, **kw: (
        submitted.append((host, sections)), submit(host, sections, **kw))[1]
    ids = []
    for n in (1, 2):
        with parts.store.tx() as tx:
            tx.ensure_local_vlan("h1", 7)
            ids.append(tx.insert_port("h1", f"c{n}", 7, f"02:00:00:00:00:{n:02x}",
                                      ipaddress.IPv4Interface(f"198.18.135.{n + 1}/24"),
                                      False, tx.plan_ofport("h1")).id)
            tx.bump(["h1"])
    desired = api.ok("GET", "/v1/hosts/h1/desired")
    planned = {p["id"]: p["ofport"] for p in desired["ports"]}
    assert planned == {ids[0]: 2, ids[1]: 3}
    report = {"version": desired["version"], "ports": {
        str(ids[0]): {"ofport": 2, "mtu": 1450},            # the number chosen
        str(ids[1]): {"ofport": 9, "mtu": 1450}}}           # OVS gave another
    api.ok("PUT", "/v1/hosts/h1/actual", report, status=204)
    assert submitted == [("h1", {7})]                        # for the second port only
    with parts.store.read() as tx:
        rows = [tx.port(i) for i in ids]
    assert [(p.ofport, p.planned_ofport, p.state) for p in rows] == [
        (2, None, "wired"), (9, None, "wired")]
    submitted.clear()
    api.ok("PUT", "/v1/hosts/h1/actual", report, status=204)
    assert submitted == []                                   # nothing changed
    assert {p["id"]: p["ofport"] for p in api.ok("GET", "/v1/hosts/h1/desired")["ports"]} \
        == {ids[0]: 2, ids[1]: 9}
