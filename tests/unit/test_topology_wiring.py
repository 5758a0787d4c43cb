"""A port being connected (pending, no ofport yet) is in the flows of the OTHER hosts of its
pod (they do not depend on its ofport, so a connect installs them while the agent wires the
port) and in none of its own host's flows until its ofport is known; the flows the other
hosts get then are exactly those they keep once the ofport is reported."""

from __future__ import annotations

import ipaddress

import pytest
from store_rig import flow_objects, pod_flows, three_hosts

from controller import topology
from controller.store import Store


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "loris.db"))
    with s.tx() as tx:
        three_hosts(tx)
        tx.insert_pod(7, None, None)
        for n, host in enumerate(("h1", "h2"), start=1):
            tx.ensure_local_vlan(host, 7)
            port = tx.insert_port(host, f"c{n}", 7, f"02:00:00:00:00:{n:02x}",
                                  ipaddress.IPv4Interface(f"198.18.135.{n + 1}/24"), False)
            tx.update_port(port.id, ofport=10, state="active")
    yield s
    s.close()


def _connect_pending(store: Store, host: str) -> int:
    with store.tx() as tx:
        tx.ensure_local_vlan(host, 7)
        return tx.insert_port(host, "new", 7, "02:00:00:00:00:33",
                              ipaddress.IPv4Interface("198.18.135.33/24"), False).id


def test_a_port_being_wired_is_in_the_other_hosts_flows_only(store):
    new = _connect_pending(store, "h3")     # h3 joins the pod with this port
    assert all(new in flow_objects(pod_flows(store, h, 7)) for h in ("h1", "h2"))
    assert new not in flow_objects(pod_flows(store, "h3", 7))
    with store.read() as tx:                # without for_host: only ports with an ofport
        whole, _ = topology.build(tx)
    assert new not in whole.ports
    before = {h: pod_flows(store, h, 7) for h in ("h1", "h2")}
    with store.tx() as tx:                  # the agent reports it
        tx.update_port(new, ofport=10, state="wired")
    assert {h: pod_flows(store, h, 7) for h in ("h1", "h2")} == before
    assert new in flow_objects(pod_flows(store, "h3", 7))


def test_a_port_whose_wiring_failed_is_in_no_flows(store):
    new = _connect_pending(store, "h2")
    with store.tx() as tx:
        tx.update_port(new, error_code="container_not_found", error_message="gone")
    for h in ("h1", "h2", "h3"):
        assert new not in flow_objects(pod_flows(store, h, 7))


def test_stand_in_ofports_never_clash_with_the_hosts_ports(store):
    ids = [_connect_pending(store, "h2")]
    with store.tx() as tx:
        p = tx.insert_port("h2", "new2", 7, "02:00:00:00:00:34",
                           ipaddress.IPv4Interface("198.18.135.34/24"), False)
        ids.append(p.id)
    with store.read() as tx:
        topo, _ = topology.build(tx, pods=[7], for_host="h1")
    ofports = [p.ofport for p in topo.ports.values() if p.host_id == "h2"]
    assert len(ofports) == len(set(ofports)) == 3 and set(ids) <= set(topo.ports)
