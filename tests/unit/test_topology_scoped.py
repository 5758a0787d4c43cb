"""A programming job reads only the pods it needs: the flows come out exactly as from the
whole topology, for every host and every section, even with an ofport two ports claim."""

from __future__ import annotations

import ipaddress

import pytest
from store_rig import three_hosts

from controller import topology
from controller.store import Store
from flows import host_flows


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "loris.db"))
    with s.tx() as tx:
        three_hosts(tx)
        tx.insert_pod(7, None, None)
        tx.insert_pod(8, None, "198.18.136.0/24")
        tx.insert_pod(9, None, None)
        ofport = {"h1": 10, "h2": 10, "h3": 10}
        placement = [(7, "h1"), (7, "h2"), (7, "h3"), (8, "h1"), (8, "h2"), (9, "h3"),
                     (7, "h1"), (8, "h3"), (9, "h2"), (9, "h3")]
        for n, (pod, host) in enumerate(placement, start=1):
            tx.ensure_local_vlan(host, pod)
            port = tx.insert_port(host, f"c{n}", pod, f"02:00:00:00:00:{n:02x}",
                                  ipaddress.IPv4Interface(f"198.18.13{pod - 1}.{n + 1}/24"),
                                  pod == 8)
            tx.update_port(port.id, ofport=ofport[host], state="active")
            ofport[host] += 1
        # an inconsistent report: port 10 (pod 9 on h3) claims the ofport of port 3 (pod 7)
        tx.update_port(10, ofport=10)
    yield s
    s.close()


def test_scoped_build_gives_the_same_flows_as_the_whole_topology(store):
    with store.tx() as tx:
        whole, _ = topology.build(tx)
        assert 10 not in whole.ports and 3 in whole.ports      # the first claimant wins
        for host in ("h1", "h2", "h3"):
            everything = host_flows(whole, host)
            scoped, _ = topology.build(tx, pods=tx.local_vlans(host))
            assert host_flows(scoped, host) == everything
            for pod in (7, 8, 9, 42):
                one, _ = topology.build(tx, pods=[pod])
                assert host_flows(one, host, pods=[pod]) == host_flows(whole, host, pods=[pod])
        only9, _ = topology.build(tx, pods=[9])
        assert sorted(only9.ports) == [6, 9]                    # port 10 still left out
        assert sorted(only9.pods) == [9]


def test_scoped_build_reads_only_the_named_pods(store):
    with store.tx() as tx:
        scoped, hosts = topology.build(tx, pods=[8])
    assert sorted(scoped.ports) == [4, 5, 8] and sorted(hosts) == ["h1", "h2", "h3"]


def plant(store, sql: str, *args) -> None:
    """Write a row the API would refuse, as an old or damaged database could hold it."""
    with store.tx() as tx:
        tx._c.execute(sql, args)


def test_a_bad_row_is_left_out_and_reported_while_every_other_pod_is_programmed(store):
    with store.tx() as tx:
        whole, _ = topology.build(tx)
        before = {h: host_flows(whole, h) for h in ("h1", "h2", "h3")}
    # port 4 (pod 8 on h1) gets a MAC with a newline; port 7 (pod 7) the address of port 1;
    # port 10 claims port 3's ofport (the fixture)
    plant(store, "UPDATE ports SET mac = ? WHERE id = 4", "02:00:00:00:00:04\n")
    plant(store, "UPDATE ports SET ip = '198.18.136.2/24', addr = 0 WHERE id = 7")
    problems = topology.Problems()
    found: list[topology.Problem] = []
    with store.tx() as tx:
        topo, _ = topology.build(tx, problems=found)
    problems.refresh(None, found)
    assert sorted((p.kind, p.id) for p in found) == [("port", 4), ("port", 7), ("port", 10)]
    assert 4 not in topo.ports and 7 not in topo.ports
    for h in ("h1", "h2", "h3"):
        after = host_flows(topo, h)
        assert after.get(9) == before[h].get(9), "pod 9 has no bad row: its flows are untouched"
    assert [p.id for p in problems.of_host("h1")] == [4, 7]
    assert "MAC" in problems.of_host("h1")[0].message
    assert problems.of_host("h2") == []
    assert [p.id for p in problems.of_host("h3")] == [10]
    # the row mended: the next build that reads its pod forgets the problem
    plant(store, "UPDATE ports SET mac = '02:00:00:00:00:04' WHERE id = 4")
    found = []
    with store.tx() as tx:
        topology.build(tx, pods=[8], problems=found)
    problems.refresh([8], found)
    assert [p.id for p in problems.of_host("h1")] == [7]


def test_a_pod_the_flow_model_refuses_is_left_out_with_its_ports(store):
    plant(store, "UPDATE pods SET subnet = 'not a subnet' WHERE id = 8")
    found: list[topology.Problem] = []
    with store.tx() as tx:
        topo, _ = topology.build(tx, problems=found)
    assert [(p.kind, p.id) for p in found] == [("pod", 8), ("port", 10)]
    assert 8 not in topo.pods and {p.pod_id for p in topo.ports.values()} == {7, 9}
