"""`POST /v1/trace`'s operation, resync and the port counters for real (store, `Switches`,
`Programmer`, flow dumps) over fake bridges (tests/programmer_rig.py): what the bridges
hold is what the trace follows."""

from __future__ import annotations

import pytest
from programmer_rig import Rig

from controller import config, validate
from controller.agents import AgentBoard
from controller.context import Context
from controller.errors import ApiError
from controller.observe import Observe
from flows import LORIS_COOKIE, Kind, parse_cookie


@pytest.fixture
def rig():
    rig = Rig(threaded=True)
    hosts = rig.add_hosts(2)
    rig.ports = {"c1": rig.add_port("h1", 7, 10), "c2": rig.add_port("h2", 7, 10),
                 "c3": rig.add_port("h1", 8, 11)}
    rig.programmer.program({h: None for h in hosts}, 10)
    rig.settle(hosts)
    ctx = Context(rig.store, config.load(env={}, db=":memory:", flow_timeout=2.0), AgentBoard(),
                  rig.programmer, rig.switches)
    rig.observe = Observe(ctx)
    return rig


def trace(rig, **body) -> dict:
    return rig.observe.trace(validate.trace_request(body))


def dpid(rig, host: str, bridge: str) -> int:
    return next(d for d, owner in rig.owner.items() if owner == (host, bridge))


def test_a_healthy_pair_is_delivered_and_every_bridge_is_as_wanted(rig):
    result = trace(rig, source="c1", destination="c2")
    assert result["verdict"] == {"delivered": True, "fix": None, "at": None, "text":
                                 "delivered to c2 on h2 through the tunnel to 198.18.0.12, "
                                 "key 8 (and the reply comes back)"}
    assert [leg["name"] for leg in result["legs"]] == ["arp", "request", "arp back", "reply"]
    request = result["legs"][1]
    assert [(h["host"], h["bridge"]) for h in request["hops"]] == [
        ("h1", "br-int"), ("h1", "br-tun"), ("h2", "br-tun"), ("h2", "br-int")]
    assert request["hops"][0]["flows"][0]["role"] == "port security of c1"
    assert request["on_host"]["tunnels"] == [["198.18.0.12", 8]]
    assert request["ofproto_trace"]["flow"].startswith("icmp,in_port=10,dl_src=02:00:00:00:00:01")
    assert all(not b["missing"] and not b["unwanted"] for b in result["flows"])
    assert {(b["host"], b["bridge"]) for b in result["flows"]} == {
        ("h1", "br-int"), ("h1", "br-tun"), ("h2", "br-int"), ("h2", "br-tun")}


def test_a_flow_deleted_on_a_bridge_is_named_missing_and_resync_puts_it_back(rig):
    table = rig.bridges[dpid(rig, "h1", "br-tun")].table
    gone = [k for k, e in table.entries.items()
            if parse_cookie(e.cookie)[:2] == (Kind.MEMBER, rig.ports["c2"])]
    assert len(gone) == 1
    del table.entries[gone[0]]
    result = trace(rig, source="c1", destination="c2")
    v = result["verdict"]
    assert not v["delivered"] and v["at"] == {"host": "h1", "bridge": "br-tun", "table": 10}
    assert v["text"].startswith("dropped at h1 br-tun table 10: the flow for c2's MAC into the "
                                "tunnel to h2 that the controller wants is missing on the "
                                "switch (last reconciled ")
    missing = {(b["host"], b["bridge"]): [m["role"] for m in b["missing"]]
               for b in result["flows"]}
    assert missing[("h1", "br-tun")] == ["the flow for c2's MAC into the tunnel to h2"]
    assert not any(v for k, v in missing.items() if k != ("h1", "br-tun"))
    rig.observe.resync("h1")
    assert trace(rig, source="c1", destination="c2")["verdict"]["delivered"]


def test_a_stale_flow_that_takes_the_packet_is_named(rig):
    """A Loris flow the controller does not want (left by an old controller) that takes
    the packet before the right one does."""
    sw = rig.bridges[dpid(rig, "h1", "br-int")]
    sw.add_foreign(20, 200, LORIS_COOKIE | (int(Kind.PORT) << 52) | (77 << 28), metadata=8)
    result = trace(rig, source="c1", destination="c2")
    v = result["verdict"]
    assert not v["delivered"]
    assert v["text"].startswith("dropped at h1 br-int table 20: the switch has a flow the "
                                "controller does not want there (port 77, which the "
                                "controller no longer has")
    [(flows)] = [b for b in result["flows"] if (b["host"], b["bridge"]) == ("h1", "br-int")]
    assert [u["owner"] for u in flows["unwanted"]] == ["port 77, which the controller no "
                                                       "longer has"]


def test_errors_name_the_container_and_the_fix(rig):
    with pytest.raises(ApiError) as e:
        trace(rig, source="nobody", destination="c2")
    assert e.value.status == 404 and "nobody is not connected" in e.value.message
    rig.disconnect(dpid(rig, "h2", "br-int"))
    with pytest.raises(ApiError) as e:
        trace(rig, source="c1", destination="c2")
    assert e.value.status == 409 and "br-int of host h2 is not connected" in e.value.message
    with pytest.raises(ApiError) as e:
        rig.observe.resync("h2")
    assert e.value.status == 409 and e.value.code == "switch_not_connected"
    with pytest.raises(ApiError) as e:
        validate.trace_request({"source": "c1"})
    assert e.value.status == 422 and "needs 'destination'" in e.value.message


def test_port_counters_come_from_the_ports_own_flows(rig):
    views = [{"id": pid, "host": host, "ofport": 10} for pid, host in
             ((rig.ports["c1"], "h1"), (rig.ports["c2"], "h2"))]
    rig.disconnect(dpid(rig, "h2", "br-int"))
    got = {p["id"]: p["stats"] for p in rig.observe.with_stats(views)}
    zero = {"packets": 0, "bytes": 0}
    c1 = got[rig.ports["c1"]]
    assert (c1["sent"], c1["received"], c1["dropped"]) == (zero, zero, zero)
    assert got[rig.ports["c2"]] is None            # its host's br-int cannot be read
