"""Authentication and least privilege of the REST API, in-process (WebOb Request.blank)
against a real SQLite store and real credential files (docs/security.md)."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest
from inproc import H1, H2, build_parts
from webob import Request

from controller import auth, config, openapi, schema
from controller.store import Store
from controller.tokens import TokenBook


@pytest.fixture
def creds(tmp_path):
    return auth.load_or_create(auth.credentials_dir(str(tmp_path / "loris.db")))


@pytest.fixture
def parts(tmp_path, creds):
    p = build_parts(tmp_path, creds, wire_timeout=0.5)
    yield p
    p.store.close()


def call(parts, method, path, body=None, token=None, header=None):
    kw = {"method": method}
    if body is not None:
        kw["body"] = json.dumps(body).encode()
        kw["content_type"] = "application/json"
    req = Request.blank(path, **kw)
    if header is not None:
        req.headers["Authorization"] = header
    elif token is not None:
        req.headers["Authorization"] = f"Bearer {token}"
    resp = req.get_response(parts.api)
    data = json.loads(resp.body) if resp.body else None
    if resp.status_code >= 400:
        schema.check(data, openapi.SCHEMAS["Error"], openapi.SCHEMAS, "error")
    return resp, data


def status(parts, *args, **kw) -> int:
    return call(parts, *args, **kw)[0].status_code


# ---- credential files -------------------------------------------------------------------

def test_credentials_created_private_next_to_the_db_and_stable(tmp_path, creds):
    d = tmp_path / "credentials"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for name in (auth.OPERATOR_FILE, auth.AGENT_KEY_FILE):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600
    assert sorted(os.listdir(d)) == sorted([auth.OPERATOR_FILE, auth.AGENT_KEY_FILE])
    again = auth.load_or_create(d)            # a restart reads the same secrets
    assert again.operator_token() == creds.operator_token()
    assert again.agent_token("h1") == creds.agent_token("h1")
    assert (d / auth.OPERATOR_FILE).read_text().strip() == creds.operator_token()


def test_credentials_readable_by_others_refused(tmp_path, creds):
    f = tmp_path / "credentials" / auth.AGENT_KEY_FILE
    f.chmod(0o644)
    with pytest.raises(PermissionError, match=r"agent.key.*chmod 600"):
        auth.load_or_create(tmp_path / "credentials")


def test_rotating_the_agent_key_changes_every_agent_token(tmp_path, creds):
    (tmp_path / "credentials" / auth.AGENT_KEY_FILE).unlink()
    new = auth.load_or_create(tmp_path / "credentials")
    assert new.agent_token("h1") != creds.agent_token("h1")
    assert new.operator_token() == creds.operator_token()
    with pytest.raises(auth.ApiError):
        new.authenticate(f"Bearer {creds.agent_token('h1')}")


def test_admin_command_prints_tokens(tmp_path, creds, capsys):
    db = str(tmp_path / "loris.db")
    assert auth.main(["token", "h3", "--db", db]) == 0
    issued = capsys.readouterr().out.strip()        # issued for h3, kept hashed in the store
    store = Store(db)
    try:
        bound = creds.with_book(TokenBook(store))
        assert bound.authenticate(f"Bearer {issued}") == auth.Principal("agent", "h3")
        with pytest.raises(auth.ApiError):           # h3 has its own now: derived is over
            bound.authenticate(f"Bearer {creds.agent_token('h3')}")
    finally:
        store.close()
    assert auth.main(["token", "operator", "--db", db]) == 0
    assert capsys.readouterr().out.strip() == creds.operator_token()
    assert auth.main(["token", "bad host", "--db", db]) == 1
    assert "not valid" in capsys.readouterr().err


# ---- tokens -----------------------------------------------------------------------------

def test_tokens_identify_their_principal(creds):
    assert creds.authenticate(f"Bearer {creds.operator_token()}") == auth.OPERATOR
    assert creds.authenticate(f"bearer  {creds.agent_token('h1.x')} ") == \
        auth.Principal("agent", "h1.x")
    good = creds.agent_token("h1")
    operator = creds.operator_token()
    altered = operator[:-1] + ("1" if operator.endswith("0") else "0")  # one character off
    for header in (None, "", "Bearer", "Basic abc", f"Token {operator}", "Bearer " + altered,
                   "Bearer " + good.replace("agent:h1:", "agent:h2:"),
                   "Bearer " + good[:-2], "Bearer agent::" + good.rsplit(":", 1)[1],
                   "Bearer " + "x" * 300, "Bearer caf\u00e9"):
        with pytest.raises(auth.ApiError) as e:
            creds.authenticate(header)
        assert e.value.status == 401 and "Authorization: Bearer" in e.value.message


def test_switch_certificates_claim_only_their_hosts_datapaths():
    h48 = int(hashlib.sha256(b"h1").hexdigest()[:12], 16)
    assert auth.switch_may_claim("h1", (1 << 48) | h48, None)
    assert auth.switch_may_claim("h1", (2 << 48) | h48, None)
    assert not auth.switch_may_claim("h2", (1 << 48) | h48, None)
    assert auth.switch_may_claim("h1", 0x42, "h1")          # registered with its own dpids
    assert not auth.switch_may_claim("h2", 0x42, "h1")
    assert not auth.switch_may_claim(None, 0x42, None)
    cert = {"subject": ((("organizationName", "Loris"),), (("commonName", "h1"),))}
    assert auth.common_name(cert) == "h1" and auth.common_name({}) is None


# ---- the API ----------------------------------------------------------------------------

def test_anonymous_gets_401_everywhere_but_health_and_openapi(parts):
    assert status(parts, "GET", "/v1/health") == 200
    assert status(parts, "GET", "/v1/openapi.json") == 200
    for method, path in [("GET", "/v1/version"), ("GET", "/v1/hosts"), ("POST", "/v1/hosts"),
                         ("GET", "/v1/pods"), ("DELETE", "/v1/pods/7"), ("GET", "/v1/ports"),
                         ("POST", "/v1/ports"), ("GET", "/v1/hosts/h1/desired"),
                         ("PUT", "/v1/hosts/h1/actual"), ("POST", "/v1/hosts/h1/token"),
                         ("GET", "/v1/nothing"), ("PATCH", "/v1/hosts")]:
        resp, data = call(parts, method, path, body={})
        assert resp.status_code == 401, (method, path, data)
        assert data["error"]["code"] == "unauthorized"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp, _ = call(parts, "GET", "/v1/hosts", header="Bearer nope")
    assert resp.status_code == 401


def test_operator_may_do_everything(parts, creds):
    op = creds.operator_token()
    assert status(parts, "POST", "/v1/hosts", H1, token=op) == 201
    assert status(parts, "POST", "/v1/hosts", H2, token=op) == 201
    assert status(parts, "POST", "/v1/pods", {"id": 7}, token=op) == 201
    assert status(parts, "GET", "/v1/hosts/h2/desired", token=op) == 200
    assert status(parts, "PUT", "/v1/hosts/h2/actual", {"version": 1}, token=op) == 204
    _, tok = call(parts, "POST", "/v1/hosts/h9/token", token=op)
    assert tok["host"] == "h9" and tok["token"].startswith("agent:h9:")
    assert parts.auth.authenticate(f"Bearer {tok['token']}") == auth.Principal("agent", "h9")
    assert status(parts, "POST", "/v1/hosts/bad%20id/token", token=op) == 422
    assert status(parts, "GET", "/v1/nothing", token=op) == 404
    assert status(parts, "DELETE", "/v1/hosts/h2", token=op) == 204


def test_agent_acts_only_for_its_own_host(parts, creds):
    op, a1 = creds.operator_token(), creds.agent_token("h1")
    assert status(parts, "POST", "/v1/hosts", H1, token=a1) == 201     # registers itself
    resp, data = call(parts, "POST", "/v1/hosts", H2, token=a1)        # not as another host
    assert resp.status_code == 403 and data["error"]["code"] == "forbidden"
    assert "agent of host h1" in data["error"]["message"] and "h2" in data["error"]["message"]
    assert status(parts, "POST", "/v1/hosts", H2, token=op) == 201
    v = call(parts, "GET", "/v1/hosts/h1/desired", token=a1)[1]["version"]
    assert status(parts, "PUT", "/v1/hosts/h1/actual", {"version": v}, token=a1) == 204
    assert status(parts, "GET", "/v1/hosts/h2/desired", token=a1) == 403
    assert status(parts, "PUT", "/v1/hosts/h2/actual", {"version": 1}, token=a1) == 403
    # reporting a port of host B through B's report path is refused; so is everything
    # that is not the agent protocol
    for method, path, body in [("GET", "/v1/hosts", None), ("GET", "/v1/hosts/h1", None),
                               ("DELETE", "/v1/hosts/h1", None), ("GET", "/v1/ports", None),
                               ("POST", "/v1/ports", {"host": "h1", "container": "x",
                                                      "ip": "198.18.135.5/24"}),
                               ("POST", "/v1/pods", {"id": 8}), ("DELETE", "/v1/pods/7", None),
                               ("GET", "/v1/version", None), ("POST", "/v1/hosts/h1/token", None)]:
        assert status(parts, method, path, body, token=a1) == 403, (method, path)
    assert status(parts, "GET", "/v1/health", token=a1) == 200


def test_agent_deletes_only_ports_of_its_own_host(parts, creds):
    import ipaddress

    op = creds.operator_token()
    for h in (H1, H2):
        assert status(parts, "POST", "/v1/hosts", h, token=op) == 201
    with parts.store.tx() as tx:
        tx.insert_pod(7, None, None)
        ports = {}
        for host, n in (("h1", 5), ("h2", 6)):
            tx.ensure_local_vlan(host, 7)
            ports[host] = tx.insert_port(host, f"c{n}", 7, f"02:00:00:00:07:0{n}",
                                         ipaddress.IPv4Interface(f"198.18.135.{n}/24"), False).id
    a1 = creds.agent_token("h1")
    resp, data = call(parts, "DELETE", f"/v1/ports/{ports['h2']}", token=a1)
    assert resp.status_code == 403 and f"port {ports['h2']}" in data["error"]["message"]
    assert status(parts, "DELETE", "/v1/ports/999", token=a1) == 404
    assert status(parts, "DELETE", f"/v1/ports/{ports['h1']}", token=a1) == 204
    with parts.store.tx() as tx:
        assert [p.host_id for p in tx.ports()] == ["h2"]        # B's port untouched


def test_openapi_documents_the_security(parts):
    doc = call(parts, "GET", "/v1/openapi.json")[1]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert doc["security"] == [{"bearer": []}]
    for path, ops in doc["paths"].items():
        for name, op in ops.items():
            if name == "parameters":
                continue
            if path in auth.PUBLIC_ROUTES:
                assert op["security"] == []
            else:
                assert {"401", "403"} <= set(op["responses"]), (path, name)
    assert set(openapi.PUBLIC) == auth.PUBLIC_ROUTES


# ---- TLS settings -----------------------------------------------------------------------

def test_tls_settings_need_both_files(tmp_path):
    with pytest.raises(ValueError, match="both api_cert and api_key"):
        config.load(env={"LORIS_API_CERT": "/x.pem"})
    from controller.api import tls_context

    with pytest.raises(ValueError, match="/nonexistent.pem"):
        tls_context("/nonexistent.pem", "/nonexistent.key")
