"""The controller in-process for unit tests: its real parts (store, service, REST
API) wired as the os-ken app wires them, threads instead of the hub, no switch and no
agent. `ApiClient` drives the WSGI app with WebOb's Request.blank and checks every answer
against the OpenAPI document the server publishes.

Import as `from inproc import ...` (pytest puts tests/ on sys.path for its conftest.py).
"""

from __future__ import annotations

import ipaddress
import json
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from webob import Request

from controller import config, openapi, schema, wiring
from controller.auth import Authenticator

POD7 = {"id": 7, "name": "web", "subnet": "198.18.135.0/24"}
H1 = {"id": "h1", "tunnel_ip": "198.18.0.11", "tunnel_type": "vxlan",
      "dpids": {"br-int": "0x0001000000000011", "br-tun": "0x0002000000000011"}}
H2 = {"id": "h2", "tunnel_ip": "198.18.0.12", "tunnel_type": "vxlan",
      "dpids": {"br-int": "0x0001000000000012", "br-tun": "0x0002000000000012"}}


def spawn(fn, *args) -> None:
    threading.Thread(target=fn, args=args, daemon=True).start()


def build_parts(tmp_path: Path, auth: Authenticator | None = None, store: Any = None,
                **settings: Any) -> wiring.Parts:
    """The controller's parts over a fresh store in `tmp_path` (or `store`, e.g. an etcd
    one); close with `.store.close()`."""
    values = {"wire_timeout": 1.0, "flow_timeout": 0.5, "lease_timeout": 1.0, **settings}
    loaded = config.load(env={}, db=str(tmp_path / "loris.db"), **values)
    return wiring.build(loaded, spawn, queue.Queue, queue.Empty, auth, store=store)


class ApiClient:
    """Calls the REST API in-process; every answer must be one the document describes."""

    def __init__(self, parts: wiring.Parts, token: str | None = None) -> None:
        self.parts = parts
        self.app = parts.api
        self.token = token

    def call(self, method: str, path: str, body=None, raw: bytes | None = None,
             headers: dict | None = None) -> tuple[int, Any]:
        kw: dict[str, Any] = {"method": method}
        if body is not None:
            raw = json.dumps(body).encode()
        if raw is not None:
            kw["body"] = raw
            kw["content_type"] = "application/json"
        req = Request.blank(path, **kw)
        if self.token:
            req.headers["Authorization"] = f"Bearer {self.token}"
        for k, v in (headers or {}).items():
            req.headers[k] = v
        resp = req.get_response(self.app)
        data = json.loads(resp.body) if resp.body else None
        self._conforms(method, req.path_info, resp.status_code, data)
        return resp.status_code, data

    def _conforms(self, method: str, path: str, status: int, data) -> None:
        """The response is one the OpenAPI document describes, in its schema."""
        match = self.app.mapper.match(path)
        if match is None or status in (405, 500):
            assert data["error"]["code"] in ("not_found", "method_not_allowed")
            return
        op = openapi.PATHS[match["path"]][method.lower()]
        assert str(status) in op["responses"], f"{method} {path}: {status} undocumented"
        content = op["responses"][str(status)].get("content")
        if content is None:
            assert data is None
        else:
            schema.check(data, content["application/json"]["schema"], openapi.SCHEMAS,
                         "response")

    def ok(self, method: str, path: str, body=None, status: int | None = None):
        code, data = self.call(method, path, body)
        assert code < 300 and (status is None or code == status), (code, data)
        return data

    def error(self, method: str, path: str, body=None, raw=None, status=None, code=None):
        got, data = self.call(method, path, body, raw)
        assert got == status, (got, data)
        if code is not None:
            assert data["error"]["code"] == code, data
        return data["error"]["message"]


def eventually(check: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Return once check() is true; fail naming `what` if it is not within `timeout` s. A
    guard for what other threads do, not a measure of speed: tests assert order, not time."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"waited {timeout:g} s for {what}"
        time.sleep(0.01)


def snapshot(parts: wiring.Parts) -> tuple:
    """Everything a refused write must leave alone."""
    with parts.store.tx() as tx:
        return (tx.hosts(), tx.pods(), tx.ports(), tx.all_local_vlans(), tx.all_tunnels())


def add_port(parts: wiring.Parts, host="h1", container="web1", pod=7, mac="02:00:00:00:07:05",
             ip="198.18.135.5/24", dhcp=False, ofport=None, state="active"):
    """A port row as a finished connect leaves it (for tests that need existing members)."""
    with parts.store.tx() as tx:
        if tx.pod(pod) is None:
            tx.insert_pod(pod, None, None)
        tx.ensure_local_vlan(host, pod)
        port = tx.insert_port(host, container, pod, mac, ipaddress.IPv4Interface(ip), dhcp)
        tx.update_port(port.id, state=state, ofport=ofport)
    return port
