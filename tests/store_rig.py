"""Store rows the unit tests of the topology start from, and the flows they look at."""

from __future__ import annotations

from controller import topology
from controller.store import Store, Tx
from flows import host_flows
from flows.flow import parse_cookie

HOSTS = ("h1", "h2", "h3")


def three_hosts(tx: Tx, patch: int = 1) -> None:
    """h1, h2, h3 registered (dpids 1-3 and 101-103), each with its patch ports on `patch`
    and 1 and a tunnel to each other from ofport 2."""
    for i, h in enumerate(HOSTS, start=1):
        tx.insert_host(h, f"198.18.0.{10 + i}", "vxlan", i, 100 + i)
        tx.set_patch(h, patch, 1)
    for h in HOSTS:
        tx.set_tunnels(h, {p: 2 + j for j, p in enumerate(x for x in HOSTS if x != h)})


def pod_flows(store: Store, host: str, pod: int) -> dict:
    """The flows of `host` for `pod`, built as a programming job builds them."""
    with store.read() as tx:
        topo, _ = topology.build(tx, pods=[pod], for_host=host)
    return host_flows(topo, host, pods=[pod])


def flow_objects(flows: dict) -> set[int]:
    """The object ids (ports, ...) in the cookies of `flows`."""
    return {parse_cookie(f.cookie)[1] for bridges in flows.values()
            for fs in bridges.values() for f in fs}
