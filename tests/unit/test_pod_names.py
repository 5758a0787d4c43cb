"""Pods by name: the contract's rule (a name is never an id), the choice of a free id, the
store's upgrade to unique names, the REST API naming pods by id or name, and the CLI's pod
commands and POD arguments (against the controller in-process, served over HTTP).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from inproc import H1, POD7, ApiClient, add_port, build_parts, snapshot

from controller import auth, validate
from controller.errors import ApiError
from controller.rows import SCHEMA_VERSION
from controller.store import Store
from flows import contract
from flows.contract import POD_NAME, default_pod_name, pod_name_fits, reserved_pod_id
from hostagent.cli import main
from hostagent.cli.common import CliError, parse_pod
from hostagent.cli.pod_commands import describe, pod_id_argument, pod_name_argument

# ---- the rule ---------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(name=st.from_regex(POD_NAME.regex, fullmatch=True))
def test_a_pod_name_is_never_read_as_an_id(name):
    assert validate.pod_ref_param(name) == name
    with pytest.raises(ApiError):
        validate.pod_id_param(name)


@pytest.mark.parametrize("text,expected", [
    ("7", 7), ("0", 0), ("7.0", 7), ("red", "red"), ("web.prod-1", "web.prod-1"),
    ("pod-7", "pod-7"), ("R" * 63, "R" * 63),
])
def test_a_pod_reference_is_an_id_or_a_name(text, expected):
    assert validate.pod_ref_param(text) == expected


@pytest.mark.parametrize("text,status", [
    ("7x", 400), ("", 400), ("-1", 422), ("16777215", 422), ("r d", 422), ("r" * 64, 422),
    ("red\n", 422), ("_red", 400), ("rouge\u00e9", 422),
])
def test_a_bad_pod_reference_is_refused(text, status):
    with pytest.raises(ApiError) as e:
        validate.pod_ref_param(text)
    assert e.value.status == status


def test_default_names_are_reserved_for_their_own_pod():
    assert default_pod_name(7) == "pod-7" and POD_NAME.matches(default_pod_name(7))
    assert reserved_pod_id("pod-7") == 7 and reserved_pod_id("pod-07") == 7
    assert reserved_pod_id("pod-7x") is None and reserved_pod_id("red") is None
    assert pod_name_fits("pod-7", 7) and pod_name_fits("red", 7) and pod_name_fits("pod-x", 3)
    assert not pod_name_fits("pod-7", 8) and not pod_name_fits("pod-07", 7)
    assert not POD_NAME.matches("7") and not POD_NAME.matches("7e0")


# ---- the store ------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "loris.db"))
    yield s
    s.close()


def test_the_lowest_free_id_is_chosen(store):
    with store.tx() as tx:
        assert tx.free_pod_id() == 1
        for pod_id in (1, 2, 4):
            tx.insert_pod(pod_id, None, None)
        assert tx.free_pod_id() == 3
        tx.insert_pod(3, None, None)
        assert tx.free_pod_id() == 5
        tx.insert_pod(contract.MAX_POD_ID, None, None)
        assert tx.free_pod_id() == 5
        assert tx.pod(4).name == "pod-4" and tx.pod_id_by_name("pod-4") == 4
        assert tx.pod_id_by_name("nothing") is None


def test_a_name_is_unique_in_the_store(store):
    with store.tx() as tx:
        tx.insert_pod(7, "web", None)
    with pytest.raises(sqlite3.IntegrityError), store.tx() as tx:
        tx.insert_pod(8, "web", None)


def test_an_older_store_gets_a_unique_valid_name_for_every_pod(tmp_path):
    db = str(tmp_path / "old.db")
    Store(db).close()
    with sqlite3.connect(db) as conn:                # what a schema-2 controller left
        conn.execute("DROP INDEX pods_name")
        conn.execute("PRAGMA user_version = 2")
        conn.executemany("INSERT INTO pods (id, name, subnet, created_at) VALUES (?, ?, ?, 0)",
                         [(3, "web", None), (4, "web", None), (5, None, None),
                          (6, "my web", None), (7, "pod-4", None), (8, "9lives", None),
                          (9, "ok.name_1", None), (10, "pod-010", None), (11, "x" * 64, None),
                          (12, "db:1", None), (13, "pod-13", None)])
    store = Store(db)
    try:
        assert store.pragma("user_version") == SCHEMA_VERSION
        with store.tx() as tx:
            names = {p.id: p.name for p in tx.pods()}
        assert names == {0: "global", 3: "web", 4: "pod-4", 5: "pod-5", 6: "pod-6",
                         7: "pod-7", 8: "pod-8", 9: "ok.name_1", 10: "pod-10", 11: "pod-11",
                         12: "pod-12", 13: "pod-13"}
        assert all(POD_NAME.matches(n) and pod_name_fits(n, i) for i, n in names.items())
        with pytest.raises(sqlite3.IntegrityError), store.tx() as tx:
            tx.insert_pod(14, "web", None)
    finally:
        store.close()


# ---- the REST API ---------------------------------------------------------------------------


@pytest.fixture
def parts(tmp_path):
    p = build_parts(tmp_path)
    yield p
    p.store.close()


@pytest.fixture
def api(parts):
    return ApiClient(parts)


def test_create_by_name_by_id_or_both(api):
    red = api.ok("POST", "/v1/pods", {"name": "red", "subnet": "10.1.0.0/24"}, status=201)
    assert (red["id"], red["name"], red["tunnel_key"]) == (1, "red", 2)
    assert red["dhcp_server"]["ip"] == "10.1.0.1"
    assert api.ok("POST", "/v1/pods", {"id": 5})["name"] == "pod-5"
    assert api.ok("POST", "/v1/pods", {"name": "blue"})["id"] == 2           # lowest free
    assert api.ok("POST", "/v1/pods", {"name": "pod-9"})["id"] == 9        # its own id
    assert api.ok("POST", "/v1/pods", POD7)["name"] == "web"
    assert [(p["id"], p["name"]) for p in api.ok("GET", "/v1/pods")] == [
        (0, "global"), (1, "red"), (2, "blue"), (5, "pod-5"), (7, "web"), (9, "pod-9")]


@pytest.mark.parametrize("body,status,code,needle", [
    ({"name": "red"}, 409, "pod_exists", "pod 1 (red) already exists"),
    ({"id": 1, "name": "green"}, 409, "pod_exists", "pod 1 (red) already exists"),
    ({"name": "pod-1"}, 409, "pod_exists", "reserved for pod 1"),
    ({"name": "pod-3", "id": 4}, 422, "invalid_value", "pod-3 is reserved"),
    ({"name": "pod-03"}, 422, "invalid_value", "pod-03 is reserved"),
    ({}, 400, "bad_request", "'name'"),
    ({"name": "7"}, 422, "invalid_format", "starting with a letter"),
    ({"name": "r" * 64}, 422, "invalid_format", "1-63"),
    ({"name": 7}, 400, "bad_request", "string"),
])
def test_conflicts_and_bad_names_are_refused_naming_the_pod(api, parts, body, status, code,
                                                            needle):
    api.ok("POST", "/v1/pods", {"name": "red"})
    before = snapshot(parts)
    assert needle in api.error("POST", "/v1/pods", body, status=status, code=code)
    assert snapshot(parts) == before


def test_show_list_filter_and_delete_by_name(api, parts):
    api.ok("POST", "/v1/hosts", H1)
    api.ok("POST", "/v1/pods", POD7)
    add_port(parts)                                             # web1 in pod 7 "web"
    assert api.ok("GET", "/v1/pods/web") == api.ok("GET", "/v1/pods/7")
    assert api.ok("GET", "/v1/pods/web")["members"][0]["container"] == "web1"
    assert [p["container"] for p in api.ok("GET", "/v1/ports?pod=web")] == ["web1"]
    assert api.ok("GET", "/v1/ports?pod=99") == []               # a number: maybe later
    assert "loris pod create nope" in api.error("GET", "/v1/ports?pod=nope", status=404,
                                                code="pod_not_found")
    msg = api.error("DELETE", "/v1/pods/web", status=409, code="pod_in_use")
    assert "pod 7 (web)" in msg and "web1 on h1" in msg and "loris pod delete web --force" in msg
    assert "global" in api.error("DELETE", "/v1/pods/global", status=409, code="global_pod")
    api.ok("DELETE", "/v1/pods/web?force=true", status=204)
    api.error("GET", "/v1/pods/web", status=404, code="pod_not_found")
    assert api.ok("GET", "/v1/ports") == []


def test_a_connect_to_an_unknown_name_is_404_and_changes_nothing(api, parts):
    api.ok("POST", "/v1/hosts", H1)
    before = snapshot(parts)
    msg = api.error("POST", "/v1/ports", {"host": "h1", "container": "web1",
                                          "ip": "198.18.135.5/24", "pod": "red"},
                    status=404, code="pod_not_found")
    assert "pod red does not exist" in msg and "loris pod create red" in msg
    assert snapshot(parts) == before


def test_a_connect_by_name_puts_the_port_in_that_pod(api, parts):
    """No agent: the connect times out, but the agent was told the port's pod id."""
    api.ok("POST", "/v1/hosts", H1)
    api.ok("POST", "/v1/pods", {"name": "red", "id": 12})
    seen: list[dict] = []
    stop = threading.Event()

    def agent():
        since = 0
        while not stop.is_set():
            status, desired = api.call("GET", f"/v1/hosts/h1/desired?since={since}&wait=0.2")
            since = desired["version"]
            seen.extend(desired["ports"])

    poller = threading.Thread(target=agent, daemon=True)
    poller.start()
    try:
        api.error("POST", "/v1/ports", {"host": "h1", "container": "web1",
                                        "ip": "198.18.135.5/24", "pod": "red"},
                  status=503, code="agent_timeout")
    finally:
        stop.set()
        poller.join(5)
    assert {p["pod"] for p in seen if p["container"] == "web1"} == {12}
    with parts.store.tx() as tx:
        assert tx.pod(12).name == "red", "a pod created by name stays after a failed connect"


def test_an_implicit_pod_is_named_by_its_number(api, parts):
    api.ok("POST", "/v1/hosts", H1)
    add_port(parts, pod=8)
    assert api.ok("GET", "/v1/pods/pod-8")["id"] == 8


def test_the_audit_names_a_pod_deleted_by_name_by_its_id(tmp_path):
    creds = auth.load_or_create(auth.credentials_dir(str(tmp_path / "loris.db")))
    parts = build_parts(tmp_path, creds)
    try:
        op = ApiClient(parts, creds.operator_token())
        created = op.ok("POST", "/v1/pods", {"name": "red"})
        op.ok("DELETE", "/v1/pods/red", status=204)
        page = op.ok("GET", "/v1/events?object=pod:1")["events"]
        assert [(e["operation"], e["object"]) for e in reversed(page)] == [
            ("create pod", f"pod:{created['id']}"), ("delete pod", "pod:1")]
        assert "red" in page[0]["detail"] and "red" in page[1]["detail"]
    finally:
        parts.store.close()


# ---- the CLI ----------------------------------------------------------------------------------


def test_cli_pod_arguments():
    assert parse_pod("7") == 7 and parse_pod("red") == "red" and parse_pod(None) is None
    for bad in ("7x", "r d", "16777215", "-1"):
        with pytest.raises(CliError, match="pod"):
            parse_pod(bad)
    assert pod_name_argument("red") == "red"
    with pytest.raises(CliError, match="--id 7"):
        pod_name_argument("7")
    with pytest.raises(CliError, match="starting with a letter"):
        pod_name_argument("my web")
    assert pod_id_argument("7") == 7 and pod_id_argument(None) is None
    for bad in ("0", "x", "16777215"):
        with pytest.raises(CliError, match="--id"):
            pod_id_argument(bad)
    assert describe({"id": 1, "name": "red", "tunnel_key": 2, "subnet": "10.1.0.0/24",
                     "dhcp_server": {"ip": "10.1.0.1"}}) == \
        "pod red (id 1, tunnel key 2, subnet 10.1.0.0/24, DHCP server 10.1.0.1)"


@pytest.mark.parametrize("argv,needle", [
    (["pod", "create", "7"], "--id 7"),
    (["pod", "create", "red", "--id", "0"], "--id '0' is not a pod id"),
    (["pod", "delete", "r d"], "not a pod id"),
    (["connect", "c1", "10.1.0.5/24", "r:d"], "not a pod id"),
    (["ports", "--pod", "7x"], "not a pod id"),
])
def test_cli_arguments_are_checked_before_asking(argv, needle, capsys):
    assert main([*argv, "--controller", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"loris {argv[0]}: ") and needle in err, err


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def controller(parts):
    """The in-process controller's REST API over HTTP, for the CLI."""
    server = make_server("127.0.0.1", 0, parts.api, server_class=_Server, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


def _loris(url, capsys, *argv):
    code = main([*argv, "--controller", url, "--host", "h1"])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_creates_shows_lists_and_deletes_pods_by_name(controller, parts, capsys,
                                                         monkeypatch):
    monkeypatch.setenv("LORIS_TOKEN", "unused")          # the in-process API has no auth
    code, out, err = _loris(controller, capsys, "pod", "create", "red", "--subnet",
                            "10.1.0.0/24")
    assert code == 0 and out.strip() == ("created pod red (id 1, tunnel key 2, subnet "
                                         "10.1.0.0/24, DHCP server 10.1.0.1)"), err
    code, out, _ = _loris(controller, capsys, "pod", "create", "blue", "--id", "9", "--json")
    assert code == 0 and json.loads(out)["id"] == 9
    code, _, err = _loris(controller, capsys, "pod", "create", "red")
    assert code == 1 and "pod 1 (red) already exists" in err
    code, out, _ = _loris(controller, capsys, "pods")
    assert code == 0 and [line.split()[:2] for line in out.splitlines()[1:]] == [
        ["0", "global"], ["1", "red"], ["9", "blue"]]
    ApiClient(parts).ok("POST", "/v1/hosts", H1)
    add_port(parts, pod=1, ip="10.1.0.5/24")                   # web1 on h1
    code, out, _ = _loris(controller, capsys, "pod", "show", "red")
    assert code == 0 and out.startswith("pod red (id 1") and "web1" in out
    code, _, err = _loris(controller, capsys, "pod", "delete", "red")
    assert code == 1 and "web1 on h1" in err and "--force" in err
    code, out, _ = _loris(controller, capsys, "pod", "delete", "red", "--force")
    assert code == 0 and out.strip() == "deleted pod red (1), disconnected 1 member(s)"
    code, _, err = _loris(controller, capsys, "pod", "delete", "red")
    assert code == 1 and "pod red does not exist" in err and "loris pods" in err
    code, out, _ = _loris(controller, capsys, "pod", "delete", "9", "--json")
    assert code == 0 and json.loads(out)["deleted"]["name"] == "blue"
    code, _, err = _loris(controller, capsys, "connect", "web1", "10.1.0.5/24", "red")
    assert code == 1 and "loris pod create red" in err
    code, _, err = _loris(controller, capsys, "disconnect", "web1", "red")
    assert code == 1 and "pod red does not exist (`loris pods` lists them)" in err
