"""The agent protocol's deltas through the REST API, in-process on both store backends: a
long poll naming the state it holds gets what changed since, a state the controller does
not know gets the full state, and a report of a few ports changes those ports only."""

from __future__ import annotations

from inproc import H1, H2, add_port

from flows import desired_delta


def test_a_poll_naming_a_served_state_gets_the_changes_since(api, parts):
    api.ok("POST", "/v1/hosts", H1)
    first = api.ok("GET", "/v1/hosts/h1/desired")
    assert first["ports"] == [] and "base" not in first
    web1 = add_port(parts, host="h1")
    second = api.ok("GET", f"/v1/hosts/h1/desired?have={first['digest']}")
    assert second["base"] == first["digest"] and second["removed"] == []
    assert [p["id"] for p in second["ports"]] == [web1.id]
    held = desired_delta.apply(first, second)
    assert held == dict(api.ok("GET", "/v1/hosts/h1/desired"), version=second["version"])
    api.ok("DELETE", f"/v1/ports/{web1.id}", status=204)
    third = api.ok("GET", f"/v1/hosts/h1/desired?have={second['digest']}")
    assert third["ports"] == [] and third["removed"] == [web1.id]
    # a state this controller never served: the whole state
    unknown = api.ok("GET", "/v1/hosts/h1/desired?have=" + "0" * 32)
    assert "base" not in unknown and unknown["digest"] == third["digest"]
    api.error("GET", "/v1/hosts/h1/desired?have=xyz", status=400)


def test_a_report_of_some_ports_leaves_the_others_as_they_are(api, parts):
    api.ok("POST", "/v1/hosts", H1)
    api.ok("POST", "/v1/hosts", H2)
    a = add_port(parts, host="h1", state="pending")
    b = add_port(parts, host="h1", container="web2", mac="02:00:00:00:07:06",
                 ip="198.18.135.6/24", state="pending")
    other = add_port(parts, host="h2", container="web3", mac="02:00:00:00:07:07",
                     ip="198.18.135.7/24", state="pending")
    report = {"version": 1, "patch": {"br-int": 1, "br-tun": 1}, "tunnels": {}}
    api.ok("PUT", "/v1/hosts/h1/actual", dict(report, ports={str(a.id): {"ofport": 7}}),
           status=204)
    with parts.store.read() as tx:
        assert (tx.port(a.id).ofport, tx.port(a.id).state) == (7, "wired")
        assert tx.port(b.id).ofport is None and tx.port(b.id).state == "pending"
    # the other port only now; a port of another host named by h1 is not h1's to report
    api.ok("PUT", "/v1/hosts/h1/actual",
           dict(report, ports={str(b.id): {"ofport": 8}, str(other.id): {"ofport": 9}}),
           status=204)
    with parts.store.read() as tx:
        assert [tx.port(p.id).ofport for p in (a, b, other)] == [7, 8, None]
