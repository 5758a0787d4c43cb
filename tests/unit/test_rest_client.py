"""The REST client (hostagent/client.py) against plain local HTTP(S) servers: keep-alive,
one connection per thread, the socket-factory hook the lab uses for network namespaces,
per-call timeouts, TLS verification and the error types and messages."""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import threading
from collections.abc import Iterator

import pytest

from hostagent import pki
from hostagent.client import ApiError, Client, ControllerUnreachable, CredentialsError


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server: _Server

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append({"path": self.path, "method": self.command,
                                 "peer": self.client_address,
                                 "auth": self.headers.get("Authorization"),
                                 "body": json.loads(body) if body else None})
        if self.path.startswith("/hold"):
            self.server.release.wait(30)
        if self.path.startswith("/chunked"):
            self._chunked([b'{"parts": ', b'[1, 2', b']}'])
            return
        if self.path.startswith("/then-close"):
            self.close_connection = True      # closes after answering, without saying so
        status, payload = self.server.replies.get(self.path.split("?")[0], (200, b'{"ok": true}'))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _chunked(self, parts: list[bytes]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for part in parts:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        self.wfile.write(b"0\r\n\r\n")

    do_GET = do_POST = do_PUT = do_DELETE = _answer  # noqa: N815 (http.server's names)

    def log_message(self, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[dict] = []
        self.replies: dict[str, tuple[int, bytes]] = {}
        self.release = threading.Event()
        self.closed = threading.Event()         # the server closed a connection

    def shutdown_request(self, request: socket.socket) -> None:
        super().shutdown_request(request)
        self.closed.set()

    @property
    def port(self) -> int:
        return self.server_address[1]


def _serve(server: _Server) -> Iterator[_Server]:
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def server() -> Iterator[_Server]:
    yield from _serve(_Server())


@pytest.fixture
def tls_server(tmp_path) -> Iterator[tuple[_Server, str]]:
    pki.init(tmp_path / "pki", ["127.0.0.1"], [], [])
    srv = _Server()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "pki" / "controller.pem", tmp_path / "pki" / "controller.key")
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    for s in _serve(srv):
        yield s, str(tmp_path / "pki" / "ca.pem")


def test_requests_of_a_thread_share_one_kept_alive_connection(server):
    with Client(f"http://127.0.0.1:{server.port}") as client:
        client.hosts()
        client.pods()
        client.put_actual("h1", {"ports": []})
    assert [s["path"] for s in server.seen] == ["/v1/hosts", "/v1/pods", "/v1/hosts/h1/actual"]
    assert len({s["peer"] for s in server.seen}) == 1
    assert server.seen[2]["body"] == {"ports": []} and server.seen[2]["method"] == "PUT"


def test_a_long_poll_in_one_thread_does_not_hold_up_another(server):
    client = Client(f"http://127.0.0.1:{server.port}")
    polled: dict = {}

    def long_poll() -> None:
        polled["reply"] = client.request("GET", "/hold", timeout=30)

    poller = threading.Thread(target=long_poll)
    poller.start()
    try:
        for _ in range(3):                       # answered while the long poll waits
            assert client.request("GET", "/v1/health") == {"ok": True}
        assert "reply" not in polled
    finally:
        server.release.set()
        poller.join(30)
    assert polled["reply"] == {"ok": True}
    hold = next(s for s in server.seen if s["path"] == "/hold")
    others = {s["peer"] for s in server.seen if s["path"] != "/hold"}
    assert len(others) == 1 and hold["peer"] not in others   # one connection per thread
    client.close()


def test_connections_come_from_the_socket_factory(server):
    made: list[tuple[int, int]] = []

    def factory(family: int, type_: int) -> socket.socket:   # the lab makes it in a netns
        made.append((family, type_))
        return socket.socket(family, type_)

    client = Client(f"http://127.0.0.1:{server.port}", socket_factory=factory)
    assert client.request("GET", "/v1/health") == {"ok": True}
    client.request("GET", "/v1/health")
    assert made == [(socket.AF_INET, socket.SOCK_STREAM)]      # one connection, kept alive

    def refusing(family: int, type_: int) -> socket.socket:
        raise PermissionError(1, "setns refused")

    with pytest.raises(ControllerUnreachable, match="setns refused"):
        Client(f"http://127.0.0.1:{server.port}", socket_factory=refusing).pods()


def test_tls_through_the_socket_factory_verifies_the_controller(tls_server):
    server, ca = tls_server
    made: list[int] = []

    def factory(family: int, type_: int) -> socket.socket:
        made.append(family)
        return socket.socket(family, type_)

    url = f"https://127.0.0.1:{server.port}"
    assert Client(url, ca_cert=ca, socket_factory=factory).hosts() == []
    assert made == [socket.AF_INET]
    with pytest.raises(ControllerUnreachable, match="TLS with controller .* --ca-cert"):
        Client(url, ca_cert=None, socket_factory=factory).hosts()   # system CAs: not ours


def test_tls_needs_the_right_ca_and_address(tls_server, tmp_path):
    server, ca = tls_server
    assert Client(f"https://127.0.0.1:{server.port}", ca_cert=ca).pods() == []
    with pytest.raises(ControllerUnreachable, match="Hostname mismatch|not valid for"):
        Client(f"https://localhost:{server.port}", ca_cert=ca).pods()
    with pytest.raises(CredentialsError, match="cannot load CA certificate"):
        Client(f"https://127.0.0.1:{server.port}", ca_cert=str(tmp_path / "missing.pem"))


def test_https_to_a_plain_http_server_fails_as_tls(server):
    with pytest.raises(ControllerUnreachable, match="TLS with controller .* --ca-cert"):
        Client(f"https://127.0.0.1:{server.port}").request("GET", "/x", timeout=5)


def test_a_per_call_timeout_says_timed_out():
    listener = socket.create_server(("127.0.0.1", 0))   # accepts, never answers
    try:
        client = Client(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=30)
        with pytest.raises(ControllerUnreachable, match=r"unreachable \(timed out\)") as e:
            client.request("GET", "/v1/health", timeout=0.3)
        assert e.value.timed_out
    finally:
        listener.close()
    with pytest.raises(ControllerUnreachable, match=r"Connection refused.*is it running") as e:
        Client("http://127.0.0.1:9").hosts()
    assert not e.value.timed_out


def test_errors_and_replies(server, tmp_path):
    server.replies["/v1/hosts/h9"] = (404, b'{"error": {"code": "not_found", "message": "no h9"}}')
    server.replies["/v1/pods"] = (502, b"bad gateway")
    server.replies["/v1/ports"] = (200, b"not json")
    server.replies["/v1/ports/3"] = (204, b"")
    token = tmp_path / "token"
    token.write_text("op:abc\n")
    client = Client(f"http://127.0.0.1:{server.port}", token_file=str(token))
    with pytest.raises(ApiError) as e:
        client.host("h9")
    assert (e.value.status, e.value.code, e.value.message) == (404, "not_found", "no h9")
    with pytest.raises(ApiError, match="controller answered 502: bad gateway"):
        client.pods()
    with pytest.raises(ApiError, match="not JSON"):
        client.ports()
    assert client.delete_port(3) is None
    reply = client.send("GET", "/v1/hosts/h9", token=False)
    assert (reply.status, reply.body["error"]["code"]) == (404, "not_found")
    assert client.send("GET", "/v1/pods", token="other").body == "bad gateway"
    client.desired("h 1/x", 7, 0)
    assert [s["auth"] for s in server.seen][-3:] == [None, "Bearer other", "Bearer op:abc"]
    assert server.seen[-1]["path"] == "/v1/hosts/h%201%2Fx/desired?wait=0&since=7"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_several_controllers_move_on_from_one_that_refuses(server):
    dead = f"http://127.0.0.1:{_closed_port()}"
    live = f"http://127.0.0.1:{server.port}"
    client = Client(f"{dead},{live}")
    assert client.base_urls == [dead, live] and client.base_url == dead
    client.hosts()
    assert client.base_url == live                  # the one that answered stays current
    client.create_port({"host": "h1"}, timeout=5)   # a POST moves on only when refused
    assert [s["path"] for s in server.seen] == ["/v1/hosts", "/v1/ports"]


def test_a_post_that_may_have_reached_a_controller_is_not_sent_to_another(server):
    listener = socket.create_server(("127.0.0.1", 0))   # accepts, never answers
    try:
        client = Client([f"http://127.0.0.1:{listener.getsockname()[1]}",
                         f"http://127.0.0.1:{server.port}"])
        with pytest.raises(ControllerUnreachable, match=r"1 other controllers.*timed out"):
            client.request("POST", "/v1/ports", {"host": "h1"}, timeout=0.3)
        assert server.seen == []
        client.request("GET", "/v1/hosts", timeout=0.3)     # safe to repeat: moves on
        assert [s["path"] for s in server.seen] == ["/v1/hosts"]
    finally:
        listener.close()


def test_controllers_learnt_from_the_registry_are_tried_after_the_known_ones(server):
    dead = f"http://127.0.0.1:{_closed_port()}"
    client = Client(dead)
    with pytest.raises(ControllerUnreachable):
        client.hosts()
    client.add_urls([f"http://127.0.0.1:{server.port}/", dead])
    assert client.base_urls == [dead, f"http://127.0.0.1:{server.port}"]
    client.hosts()
    assert client.base_url == f"http://127.0.0.1:{server.port}"


def test_controller_url_normalizes_each_of_a_list():
    from hostagent.client import controller_url

    assert controller_url("10.0.0.1, https://c2:9000/") == \
        "http://10.0.0.1:8780,https://c2:9000"
def test_a_connection_the_server_closed_while_idle_is_opened_anew(server):
    with Client(f"http://127.0.0.1:{server.port}") as client:
        assert client.request("GET", "/then-close") == {"ok": True}
        assert server.closed.wait(10)
        assert client.request("GET", "/v1/health") == {"ok": True}
    peers = [s["peer"] for s in server.seen]
    assert peers[0] != peers[1]                 # a new connection, the request sent once
    assert [s["path"] for s in server.seen] == ["/then-close", "/v1/health"]


def test_chunked_answers_and_queries(server):
    with Client(f"http://127.0.0.1:{server.port}") as client:
        assert client.request("GET", "/chunked") == {"parts": [1, 2]}
        assert client.ports(pod=3, on_host=None) == []          # same connection after it
        assert client.request("POST", "/v1/pods") == {"ok": True}   # no body: length 0
    assert server.seen[1]["path"] == "/v1/ports?pod=3"
    assert len({s["peer"] for s in server.seen}) == 1


def test_the_environment_proxy_is_asked_with_absolute_urls(server, monkeypatch):
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{server.port}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert Client("http://controller.invalid:8780").pods() == []
    assert server.seen[-1]["path"] == "http://controller.invalid:8780/v1/pods"
    monkeypatch.setenv("no_proxy", "controller.invalid")
    with pytest.raises(ControllerUnreachable, match="controller.invalid"):
        Client("http://controller.invalid:8780", timeout=5).pods()


def test_loris_connect_probes_and_connects_over_one_kept_alive_connection(server, monkeypatch,
                                                                           capsys):
    """`loris connect` asks /v1/health first (it fails fast on a stopped controller), then
    POSTs the port: one TCP connection for both (hostagent/cli/commands.py)."""
    from hostagent.cli import main

    for name in ("LORIS_TOKEN", "LORIS_TOKEN_FILE", "LORIS_CA_CERT", "LORIS_CONTROLLER"):
        monkeypatch.delenv(name, raising=False)
    port = {"id": 3, "pod": 0, "ip": "10.0.0.5/24", "mac": "02:00:00:00:00:05", "host": "h1"}
    server.replies["/v1/ports"] = (201, json.dumps(port).encode())
    assert main(["connect", "c1", "10.0.0.5/24", "--host", "h1",
                 "--controller", f"http://127.0.0.1:{server.port}"]) == 0
    assert [(s["method"], s["path"]) for s in server.seen] == [("GET", "/v1/health"),
                                                               ("POST", "/v1/ports")]
    assert len({s["peer"] for s in server.seen}) == 1
    assert server.seen[1]["body"] == {"host": "h1", "container": "c1", "ip": "10.0.0.5/24"}
    assert capsys.readouterr().out == ("c1 connected to pod 0: ip 10.0.0.5/24 mac "
                                       "02:00:00:00:00:05 (port 3 on h1)\n")
