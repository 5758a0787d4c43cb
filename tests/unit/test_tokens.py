"""Issued credentials (controller/tokens.py, auth.py, access.py, switch_guard.py): per-host
agent tokens and named operator tokens kept hashed in the store, revoked one at a time,
the upgrade path from tokens derived from agent.key, and which switches a revocation
refuses. In-process, against a real SQLite store and real credential files."""

from __future__ import annotations

import json
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from inproc import H1, H2, build_parts, eventually
from webob import Request

from controller import auth, tokens
from controller.errors import ApiError
from controller.rows import SCHEMA_VERSION
from controller.store import Store
from controller.switch_guard import SwitchGuard, fingerprint
from controller.tokens import ADMIN, AGENT, OPERATOR, TokenBook
from flows import contract


@pytest.fixture
def creds(tmp_path):
    return auth.load_or_create(auth.credentials_dir(str(tmp_path / "loris.db")))


@pytest.fixture
def parts(tmp_path, creds):
    # a long poll interval: a waiting poll ends only when woken (these tests check wakes)
    p = build_parts(tmp_path, creds, agent_poll_interval=30.0)
    yield p
    p.store.close()


def call(parts, method, path, body=None, token=None):
    kw = {"method": method}
    if body is not None:
        kw["body"] = json.dumps(body).encode()
        kw["content_type"] = "application/json"
    req = Request.blank(path, **kw)
    if token is not None:
        req.headers["Authorization"] = f"Bearer {token}"
    resp = req.get_response(parts.api)
    return resp.status_code, (json.loads(resp.body) if resp.body else None)


def who(parts, token):
    return parts.auth.authenticate(f"Bearer {token}")


def refused(parts, token) -> str:
    with pytest.raises(ApiError) as e:
        who(parts, token)
    assert e.value.status == 401
    return e.value.message


# ---- the token book ---------------------------------------------------------------------

def test_only_the_hash_of_a_token_is_stored(tmp_path, parts):
    token = parts.auth.issue(AGENT, "h1")
    assert token.startswith("agent:h1:") and len(token.rsplit(":", 1)[1]) == 64
    raw = (tmp_path / "loris.db").read_bytes() + (tmp_path / "loris.db-wal").read_bytes()
    assert token.encode() not in raw
    assert tokens.token_sha256(token).encode() in raw
    assert who(parts, token) == auth.Principal("agent", "h1")


def test_reissuing_replaces_the_previous_token(parts):
    first = parts.auth.issue(AGENT, "h1")
    second = parts.auth.issue(AGENT, "h1")
    assert first != second
    assert who(parts, second).host == "h1"
    assert "invalid token" in refused(parts, first)


def test_revoking_one_host_leaves_the_others(parts, creds):
    h1, h2 = parts.auth.issue(AGENT, "h1"), parts.auth.issue(AGENT, "h2")
    p1 = who(parts, h1)
    parts.auth.revoke(AGENT, "h1")
    message = refused(parts, h1)
    assert "agent h1 was revoked" in message and "loris token h1" in message
    assert not parts.auth.still_valid(p1)
    assert who(parts, h2).host == "h2" and parts.auth.still_valid(who(parts, h2))
    assert who(parts, creds.agent_token("h3")).host == "h3"      # derived, never issued
    again = parts.auth.issue(AGENT, "h1")                          # re-issue: back
    assert who(parts, again).host == "h1"
    assert "invalid token" in refused(parts, h1)                   # the old one stays out


def test_derived_tokens_work_until_the_host_has_its_own(parts, creds):
    """Upgrade: every agent keeps its agent.key token until the operator issues the host
    its own (or revokes it); then that host's derived token stops, the others' do not."""
    derived = creds.agent_token("h1")
    principal = who(parts, derived)
    assert principal == auth.Principal("agent", "h1") and principal.credential == auth.DERIVED
    assert parts.auth.still_valid(principal)
    parts.auth.issue(AGENT, "h1")
    assert "issued its own agent token" in refused(parts, derived)
    assert not parts.auth.still_valid(principal)
    derived2 = creds.agent_token("h2")
    parts.auth.revoke(AGENT, "h2")                 # a host without a row can be revoked too
    assert "agent h2 was revoked" in refused(parts, derived2)


def test_derived_tokens_can_be_turned_off(tmp_path, creds):
    p = build_parts(tmp_path, creds, derived_agent_tokens=False)
    try:
        assert "derived_agent_tokens" in refused(p, creds.agent_token("h1"))
        assert who(p, p.auth.issue(AGENT, "h1")).host == "h1"
    finally:
        p.store.close()


def test_named_operators_and_the_last_one_standing(parts, creds):
    admin = creds.operator_token()
    assert who(parts, admin).label == "operator admin"
    alice = parts.auth.issue(OPERATOR, "alice")
    assert alice.startswith("operator:alice:")
    assert who(parts, alice) == auth.OPERATOR and who(parts, alice).label == "operator alice"
    parts.auth.revoke(OPERATOR, "alice")
    assert "operator alice was revoked" in refused(parts, alice)
    with pytest.raises(ApiError) as e:             # admin is now the last operator
        parts.auth.revoke(OPERATOR, ADMIN)
    assert e.value.status == 409 and e.value.code == "last_operator"
    bob = parts.auth.issue(OPERATOR, "bob")
    parts.auth.revoke(OPERATOR, ADMIN)
    assert "operator admin was revoked" in refused(parts, admin)
    assert who(parts, bob).name == "bob"
    with pytest.raises(ApiError) as e:
        parts.auth.revoke(OPERATOR, "nobody")
    assert e.value.status == 404


def test_the_operator_file_is_admin_across_restarts(tmp_path, creds):
    """The same file keeps its state (revoked stays revoked); a new file (the old one
    deleted: rotation) replaces it; re-issuing admin rewrites the file."""
    db = str(tmp_path / "loris.db")
    store = Store(db)
    book = TokenBook(store)
    bound = creds.with_book(book)
    bound.issue(OPERATOR, "alice")
    bound.revoke(OPERATOR, ADMIN)
    restarted = auth.load_or_create(tmp_path / "credentials").with_book(book)
    assert "was revoked" in refused_by(restarted, creds.operator_token())
    (tmp_path / "credentials" / auth.OPERATOR_FILE).unlink()
    rotated = auth.load_or_create(tmp_path / "credentials").with_book(book)
    assert rotated.operator_token() != creds.operator_token()
    assert rotated.authenticate(f"Bearer {rotated.operator_token()}").name == ADMIN
    new = rotated.issue(OPERATOR, ADMIN)
    assert (tmp_path / "credentials" / auth.OPERATOR_FILE).read_text().strip() == new
    assert rotated.authenticate(f"Bearer {new}").name == ADMIN
    assert "invalid token" in refused_by(rotated, rotated.operator_token())
    store.close()


def refused_by(authenticator, token) -> str:
    with pytest.raises(ApiError) as e:
        authenticator.authenticate(f"Bearer {token}")
    return e.value.message


def test_admin_command_issues_and_revokes_beside_a_running_controller(tmp_path, parts, capsys):
    db = str(tmp_path / "loris.db")
    assert auth.main(["token", "h5", "--db", db]) == 0
    issued = capsys.readouterr().out.strip()
    assert who(parts, issued).host == "h5"          # the controller sees the other process
    assert auth.main(["operator", "carol", "--db", db]) == 0
    carol = capsys.readouterr().out.strip()
    assert who(parts, carol).label == "operator carol"
    assert auth.main(["revoke", "h5", "--db", db]) == 0
    assert "was revoked" in refused(parts, issued)
    assert auth.main(["revoke", "--operator", "carol", "--db", db]) == 0
    assert "was revoked" in refused(parts, carol)
    assert auth.main(["revoke", "--db", db]) == 1
    assert "name a host" in capsys.readouterr().err
    assert auth.main(["revoke", "bad host", "--db", db]) == 1
    assert "not valid" in capsys.readouterr().err
    with parts.store.read() as tx:
        ops = [(e.credential, e.operation, e.object) for e in reversed(tx.events())]
    assert ("local admin (python -m controller.auth)", "revoke agent token", "host:h5") in ops


def test_an_older_store_is_upgraded(tmp_path):
    db = str(tmp_path / "old.db")
    Store(db).close()
    with sqlite3.connect(db) as conn:               # what a schema-1 controller left
        for table in ("credentials", "switch_certs", "implicit_pods", "events"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("PRAGMA user_version = 1")
    store = Store(db)
    try:
        assert store.pragma("user_version") == SCHEMA_VERSION == 2
        book = TokenBook(store)
        token = book.issue(AGENT, "h1")
        assert book.find(token).credential.name == "h1"
    finally:
        store.close()


# ---- through the API: revocation bites at once -------------------------------------------

def test_a_revoked_agent_gets_401_even_on_a_waiting_long_poll(parts, creds):
    op = creds.operator_token()
    status, issued = call(parts, "POST", "/v1/hosts/h1/token", token=op)
    assert status == 200 and issued["host"] == "h1"
    a1 = issued["token"]
    assert call(parts, "POST", "/v1/hosts", H1, token=a1)[0] == 201
    v = call(parts, "GET", "/v1/hosts/h1/desired", token=a1)[1]["version"]
    order = []
    with ThreadPoolExecutor(1) as pool:
        def poll():
            result = call(parts, "GET", f"/v1/hosts/h1/desired?since={v}&wait=60", token=a1)
            order.append("poll ended")
            return result

        waiting = pool.submit(poll)
        eventually(lambda: parts.board.polling("h1"), "h1's long poll to wait")
        order.append("revoked")
        assert call(parts, "DELETE", "/v1/hosts/h1/token", token=op) == (204, None)
        status, body = waiting.result(timeout=30)
    assert order == ["revoked", "poll ended"]        # woken by the revocation, not the clock
    assert status == 401 and "revoked" in body["error"]["message"]
    assert call(parts, "GET", "/v1/hosts/h1/desired", token=a1)[0] == 401
    assert call(parts, "PUT", "/v1/hosts/h1/actual", {"version": v}, token=a1)[0] == 401
    status, again = call(parts, "POST", "/v1/hosts/h1/token", token=op)
    assert call(parts, "GET", "/v1/hosts/h1/desired", token=again["token"])[0] == 200


def test_token_routes_are_the_operators_and_check_their_arguments(parts, creds):
    op, a1 = creds.operator_token(), creds.agent_token("h1")
    for method, path in [("POST", "/v1/hosts/h2/token"), ("DELETE", "/v1/hosts/h2/token"),
                         ("POST", "/v1/operators/x/token"), ("DELETE", "/v1/operators/x/token"),
                         ("GET", "/v1/tokens"), ("GET", "/v1/events")]:
        assert call(parts, method, path, token=a1)[0] == 403, (method, path)
    assert call(parts, "POST", "/v1/operators/bad%20name/token", token=op)[0] == 422
    assert call(parts, "DELETE", "/v1/operators/nobody/token", token=op)[0] == 404
    assert call(parts, "DELETE", "/v1/operators/admin/token", token=op)[0] == 409
    status, issued = call(parts, "POST", "/v1/operators/alice/token", token=op)
    assert status == 200 and issued["operator"] == "alice"


def test_tokens_lists_state_never_a_token(parts, creds):
    op = creds.operator_token()
    for h in (H1, H2):
        assert call(parts, "POST", "/v1/hosts", h, token=op)[0] == 201
    call(parts, "POST", "/v1/hosts/h1/token", token=op)
    call(parts, "POST", "/v1/hosts/h9/token", token=op)
    call(parts, "DELETE", "/v1/hosts/h9/token", token=op)
    status, rows = call(parts, "GET", "/v1/tokens", token=op)
    assert status == 200
    states = {(r["kind"], r["name"]): r["state"] for r in rows}
    assert states == {("agent", "h1"): "issued", ("agent", "h2"): "derived",
                      ("agent", "h9"): "revoked", ("operator", "admin"): "issued"}
    assert "token" not in json.dumps(rows).replace('"kind"', "")


# ---- switches --------------------------------------------------------------------------

def test_switch_guard_refuses_revoked_hosts_and_undeclared_certificates():
    guard = SwitchGuard()
    h1_int = contract.dpids("h1")["br-int"]
    cert, other = fingerprint(b"h1 cert"), fingerprint(b"h1 stolen old cert")
    assert guard.refusal(h1_int, None, tls=True, cert_host="h1") is None   # before anything
    assert guard.update(frozenset(), {"h1": cert}) == frozenset()
    assert guard.refusal(h1_int, "h1", True, "h1", cert) is None
    assert "not the one host h1's agent declared" in guard.refusal(h1_int, "h1", True, "h1",
                                                                   other)
    assert "belongs to another host" in guard.refusal(h1_int, "h1", True, "h2", cert)
    assert guard.refusal(h1_int, "h1", False) is None                     # plain TCP
    assert guard.update(frozenset({"h1"}), {"h1": cert}) == frozenset({"h1"})
    assert "revoked" in guard.refusal(h1_int, "h1", True, "h1", cert)
    assert "revoked" in guard.refusal(h1_int, "h1", False)                # its datapath id
    assert "revoked" in guard.refusal(h1_int, None, True, "h1", cert)     # its certificate
    assert guard.update(frozenset(), {"h1": cert}) == frozenset()
    assert guard.refusal(h1_int, "h1", True, "h1", cert) is None


class ClosableDatapath:
    """What Switches and Access use of an os-ken datapath: its id, liveness, close()."""

    def __init__(self, dpid: int) -> None:
        self.id = dpid
        self.address = ("198.19.0.11", 40000)
        self.is_active = True
        self.closed = threading.Event()

    def close(self) -> None:
        self.closed.set()


def test_revoking_a_host_closes_its_switches_sessions(parts, creds):
    op = creds.operator_token()
    for h in (H1, H2):
        assert call(parts, "POST", "/v1/hosts", h, token=op)[0] == 201
    dps = {}
    for h in (H1, H2):
        for bridge, dpid in h["dpids"].items():
            dps[h["id"], bridge] = dp = ClosableDatapath(int(dpid, 16))
            parts.switches.connected(dp)
    assert call(parts, "DELETE", "/v1/hosts/h1/token", token=op)[0] == 204
    assert {k for k, dp in dps.items() if dp.closed.is_set()} == {("h1", "br-int"),
                                                                  ("h1", "br-tun")}
    assert parts.switch_guard.revoked("h1") and not parts.switch_guard.revoked("h2")
    call(parts, "POST", "/v1/hosts/h1/token", token=op)
    assert not parts.switch_guard.revoked("h1")


def test_registration_declares_the_switch_certificate(parts, creds):
    op = creds.operator_token()
    cert = fingerprint(b"h1's switch certificate")
    assert call(parts, "POST", "/v1/hosts", {**H1, "switch_cert_sha256": cert}, token=op)[0] \
        == 201
    dpid = int(H1["dpids"]["br-int"], 16)
    assert parts.switch_guard.refusal(dpid, "h1", True, "h1", cert) is None
    assert parts.switch_guard.refusal(dpid, "h1", True, "h1", fingerprint(b"x")) is not None
    status, body = call(parts, "POST", "/v1/hosts", {**H1, "switch_cert_sha256": "AB" * 32},
                        token=op)
    assert status == 422 and "fingerprint" in body["error"]["message"]
