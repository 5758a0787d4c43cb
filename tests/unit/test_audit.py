"""The audit trail (controller/audit.py): accepted writes recorded with credential,
operation, object and outcome; refused ones counted, not stored; paging, filters and
retention of GET /v1/events. In-process, real store and credentials, every answer checked
against the published document (inproc.ApiClient)."""

from __future__ import annotations

import json

import pytest
from inproc import H1, H2, POD7, ApiClient, add_port, build_parts

from controller import auth
from controller.tokens import OPERATOR


@pytest.fixture
def creds(tmp_path):
    return auth.load_or_create(auth.credentials_dir(str(tmp_path / "loris.db")))


@pytest.fixture
def parts(tmp_path, creds):
    p = build_parts(tmp_path, creds)
    yield p
    p.store.close()


@pytest.fixture
def op(parts, creds):
    return ApiClient(parts, creds.operator_token())


def events(op, **query) -> list[dict]:
    q = "&".join(f"{k}={v}" for k, v in query.items())
    return op.ok("GET", f"/v1/events?{q}")["events"]


def summary(page: list[dict]) -> list[tuple]:
    return [(e["credential"], e["operation"], e["object"], e["status"], e["outcome"])
            for e in reversed(page)]


def test_accepted_writes_are_recorded_with_who_what_and_outcome(parts, op, creds):
    op.ok("POST", "/v1/hosts", H1)
    agent = ApiClient(parts, creds.agent_token("h2"))
    agent.ok("POST", "/v1/hosts", H2)                               # an agent registers itself
    op.ok("POST", "/v1/pods", POD7)
    port = add_port(parts, host="h1", container="web1")
    op.ok("DELETE", f"/v1/ports/{port.id}", status=204)
    op.error("POST", "/v1/ports", {"host": "h1", "container": "web8", "ip": "198.18.136.5/24",
                                   "pod": 8}, status=503, code="agent_timeout")
    op.ok("DELETE", "/v1/pods/7", status=204)
    v = agent.ok("GET", "/v1/hosts/h2/desired")["version"]
    agent.ok("PUT", "/v1/hosts/h2/actual", {"version": v}, status=204)   # a report: not kept
    assert summary(events(op)) == [
        ("operator admin", "register host", "host:h1", 201, "ok"),
        ("agent h2", "register host", "host:h2", 201, "ok"),
        ("operator admin", "create pod", "pod:7", 201, "ok"),
        ("operator admin", "disconnect", f"port:{port.id}", 204, "ok"),
        ("operator admin", "connect", "container:h1/web8", 503, "agent_timeout"),
        ("operator admin", "delete pod", "pod:7", 204, "ok"),
    ]
    page = events(op)
    assert page[2]["detail"] == "web1 on h1, pod 7"
    failed = page[1]
    assert failed["detail"].startswith("web8 on h1 to pod 8 (198.18.136.5/24): the agent on "
                                       "host h1 did not wire container web8")


def test_token_operations_are_recorded_without_the_token(parts, op):
    issued = op.ok("POST", "/v1/hosts/h3/token")["token"]
    op.ok("DELETE", "/v1/hosts/h3/token", status=204)
    alice = op.ok("POST", "/v1/operators/alice/token")["token"]
    as_alice = ApiClient(parts, alice)
    as_alice.ok("POST", "/v1/pods", {"id": 9})
    op.ok("DELETE", "/v1/operators/alice/token", status=204)
    assert summary(events(op)) == [
        ("operator admin", "issue agent token", "host:h3", 200, "ok"),
        ("operator admin", "revoke agent token", "host:h3", 204, "ok"),
        ("operator admin", "issue operator token", "operator:alice", 200, "ok"),
        ("operator alice", "create pod", "pod:9", 201, "ok"),
        ("operator admin", "revoke operator token", "operator:alice", 204, "ok"),
    ]
    with parts.store.read() as tx:
        stored = json.dumps([e.to_json() for e in tx.events()])
    assert issued.rsplit(":", 1)[1] not in stored and alice.rsplit(":", 1)[1] not in stored


def test_refused_writes_are_counted_not_stored(parts, op, creds):
    op.ok("POST", "/v1/pods", POD7)
    ApiClient(parts).call("POST", "/v1/pods", {"id": 8})                  # 401
    ApiClient(parts, "not-a-token-at-all-but-long-enough").call("DELETE", "/v1/pods/7")
    ApiClient(parts, creds.agent_token("h1")).call("POST", "/v1/pods", {"id": 8})   # 403
    op.error("POST", "/v1/pods", POD7, status=409)
    op.error("POST", "/v1/pods", {"id": -1}, status=422)
    op.error("GET", "/v1/pods/99", status=404)                            # a read: not counted
    page = op.ok("GET", "/v1/events")
    assert summary(page["events"]) == [("operator admin", "create pod", "pod:7", 201, "ok")]
    refused = page["refused"]
    assert refused["total"] == 5
    assert refused["by_status"] == {"401": 2, "403": 1, "409": 1, "422": 1}
    assert refused["by_credential"] == {"anonymous": 2, "agent h1": 1, "operator admin": 2}


def test_paging_and_filters(parts, op):
    for pod in range(10, 35):
        op.ok("POST", "/v1/pods", {"id": pod})
    op.ok("DELETE", "/v1/pods/12", status=204)
    first = op.ok("GET", "/v1/events?limit=10")
    assert [e["object"] for e in first["events"]][:2] == ["pod:12", "pod:34"]  # newest first
    seen, page = [], first
    while True:
        seen += page["events"]
        if page["next"] is None:
            break
        page = op.ok("GET", f"/v1/events?limit=10&before={page['next']}")
    assert len(seen) == 26 and len({e["id"] for e in seen}) == 26
    assert [e["id"] for e in seen] == sorted((e["id"] for e in seen), reverse=True)
    assert summary(events(op, object="pod:12")) == [
        ("operator admin", "create pod", "pod:12", 201, "ok"),
        ("operator admin", "delete pod", "pod:12", 204, "ok")]
    assert len(events(op, object="pod", limit=1000)) == 26
    assert events(op, object="port") == []
    middle = seen[13]["time"]
    newer = events(op, since=middle, limit=1000)
    older = events(op, until=middle, limit=1000)
    assert all(e["time"] >= middle for e in newer) and all(e["time"] <= middle for e in older)
    assert {e["id"] for e in newer} | {e["id"] for e in older} == {e["id"] for e in seen}


@pytest.mark.parametrize("query,status", [
    ("object=Port:1", 422), ("object=port:", 422), ("limit=0", 422), ("limit=1001", 422),
    ("since=soon", 400), ("since=-1", 422), ("before=0", 422), ("colour=red", 400),
])
def test_bad_event_queries(op, query, status):
    op.error("GET", f"/v1/events?{query}", status=status)


def test_retention_keeps_the_newest_and_drops_the_old(tmp_path, creds):
    p = build_parts(tmp_path, creds, audit_max_events=5, audit_max_days=1.0)
    try:
        with p.store.tx() as tx:
            tx.insert_event("operator admin", "create pod", "pod:1", 201, "ok", None,
                            when=1_000_000.0)                 # long past the 1-day limit
        op = ApiClient(p, creds.operator_token())
        op.ok("POST", "/v1/pods", {"id": 50})
        assert [e["object"] for e in events(op)] == ["pod:50"]
        for pod in range(51, 60):
            op.ok("POST", "/v1/pods", {"id": pod})
        page = op.ok("GET", "/v1/events")
        assert [e["object"] for e in page["events"]] == [f"pod:{i}" for i in range(59, 54, -1)]
        assert page["retention"] == {"max_events": 5, "max_days": 1.0}
    finally:
        p.store.close()


def test_a_named_operator_shows_in_the_trail(parts, op):
    token = parts.auth.issue(OPERATOR, "bob")
    ApiClient(parts, token).ok("POST", "/v1/hosts", H1)
    assert summary(events(op, object="host:h1")) == [
        ("operator bob", "register host", "host:h1", 201, "ok")]
