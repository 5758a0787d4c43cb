"""The client side of authentication and TLS: where the CLI and the agent take their
token from, that it travels as a bearer token, and that `loris pki` certificates verify
(a real TLS handshake over loopback; no root needed)."""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import stat
import threading

import pytest

from hostagent import cli, pki
from hostagent.client import (
    Client,
    ControllerUnreachable,
    CredentialsError,
    read_token,
    token_file_from,
)


def test_token_sources_in_order(tmp_path, monkeypatch):
    f = tmp_path / "t"
    f.write_text("  tok-from-file\n")
    default = tmp_path / "default"
    default.write_text("tok-default")
    monkeypatch.delenv("LORIS_TOKEN_FILE", raising=False)
    monkeypatch.delenv("LORIS_TOKEN", raising=False)
    assert token_file_from(str(f), str(default)) == str(f)
    assert token_file_from(None, str(default)) == str(default)
    assert token_file_from(None, str(tmp_path / "missing")) is None
    monkeypatch.setenv("LORIS_TOKEN", "tok-env")
    assert token_file_from(None, str(default)) is None          # the env token wins
    assert read_token(None) == "tok-env"
    monkeypatch.setenv("LORIS_TOKEN_FILE", str(f))
    assert token_file_from(None, str(default)) == str(f)
    assert read_token(str(f)) == "tok-from-file"
    with pytest.raises(CredentialsError, match="cannot read token file"):
        read_token(str(tmp_path / "missing"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(CredentialsError, match="is empty"):
        read_token(str(tmp_path / "empty"))
    assert issubclass(CredentialsError, ControllerUnreachable)  # agent loops retry on it


def test_the_client_sends_the_token_as_bearer(tmp_path):
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            seen.append(self.headers.get("Authorization"))
            body = json.dumps([]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        token = tmp_path / "token"
        token.write_text("agent:h1:abc\n")
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert Client(url, token_file=str(token)).hosts() == []
        token.write_text("agent:h1:def\n")                        # re-read per request
        Client(url, token_file=str(token)).pods()
        assert seen == ["Bearer agent:h1:abc", "Bearer agent:h1:def"]
    finally:
        server.shutdown()


def test_pki_certificates_verify_in_a_real_handshake(tmp_path):
    d = tmp_path / "pki"
    made = pki.init(d, ["127.0.0.1"], ["localhost"], ["h1"])
    assert {p.name for p in made} == {"ca.pem", "ca.key", "controller.pem", "controller.key",
                                      "h1.pem", "h1.key"}
    for key in ("ca.key", "controller.key", "hosts/h1.key"):
        assert stat.S_IMODE((d / key).stat().st_mode) == 0o600
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(d / "controller.pem", d / "controller.key")
    server_ctx.verify_mode = ssl.CERT_REQUIRED                  # as os-ken does for switches
    server_ctx.load_verify_locations(d / "ca.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    peer = {}

    def serve():
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            peer["cert"] = tls.getpeercert()
            tls.sendall(b"ok")

    t = threading.Thread(target=serve)
    t.start()
    client_ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
    client_ctx.load_cert_chain(d / "hosts" / "h1.pem", d / "hosts" / "h1.key")
    with socket.create_connection(listener.getsockname()) as raw, \
            client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.recv(2) == b"ok"
    t.join(5)
    listener.close()
    from controller.auth import common_name
    assert common_name(peer["cert"]) == "h1"
    with pytest.raises(pki.PkiError, match="already holds a CA"):
        pki.init(d, ["127.0.0.1"], [], [])
    with pytest.raises(pki.PkiError, match="controller-ip"):
        pki.init(tmp_path / "other", [], [], [])
    with pytest.raises(pki.PkiError, match="not an IP"):
        pki.init(tmp_path / "other", ["ctl"], [], [])
    assert pki.add_hosts(d, ["h2"])[0].name == "h2.pem"


def test_cli_pki_and_token_errors_are_one_line(tmp_path, capsys, monkeypatch):
    assert cli.main(["pki", "init", str(tmp_path / "p"), "--controller-ip", "198.19.0.1",
                     "--host", "h1"]) == 0
    assert "controller.pem" in capsys.readouterr().out
    assert cli.main(["pki", "host", str(tmp_path / "nope"), "h2"]) == 1
    assert "no CA in" in capsys.readouterr().err
    monkeypatch.setenv("LORIS_TOKEN_FILE", str(tmp_path / "missing"))
    assert cli.main(["status", "--controller", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("loris status: cannot read token file") and err.count("\n") == 1
