"""REST client of the Loris controller, shared by the agent and the CLI (stdlib only)."""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_CONTROLLER = "http://127.0.0.1:8780"


class ApiError(RuntimeError):
    """The controller answered with an error (`{"error": {"code", "message"}}`)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class ControllerUnreachable(RuntimeError):
    pass


def controller_url(given: str | None) -> str:
    url = given or os.environ.get("LORIS_CONTROLLER") or DEFAULT_CONTROLLER
    if "://" not in url:
        url = "http://" + url
    parsed = urllib.parse.urlsplit(url)
    if parsed.port is None:
        url = f"{parsed.scheme}://{parsed.hostname}:8780{parsed.path}"
    return url.rstrip("/")


class Client:
    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    @property
    def hostname(self) -> str:
        return urllib.parse.urlsplit(self.base_url).hostname or "127.0.0.1"

    def controller_ip(self) -> str:
        """The controller's address as an IP (OVS controller targets want one)."""
        try:
            return socket.gethostbyname(self.hostname)
        except OSError as e:
            raise ControllerUnreachable(
                f"cannot resolve controller host {self.hostname}: {e}") from e

    def request(
        self, method: str, path: str, body: Any = None, *, timeout: float | None = None,
        query: dict[str, Any] | None = None,
    ) -> Any:
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise _api_error(e) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ControllerUnreachable(
                f"controller {self.base_url} unreachable ({reason}); is it running? "
                "(set --controller or LORIS_CONTROLLER)"
            ) from None
        return json.loads(raw) if raw.strip() else None

    # -- agent side
    def register(self, host: dict) -> dict:
        return self.request("POST", "/v1/hosts", host)

    def desired(self, host_id: str, since: int | None, wait: float) -> dict:
        query: dict[str, Any] = {"wait": int(wait)}
        if since is not None:
            query["since"] = since
        return self.request("GET", f"/v1/hosts/{_q(host_id)}/desired", query=query,
                            timeout=wait + 15)  # fmt: skip

    def put_actual(self, host_id: str, actual: dict) -> Any:
        return self.request("PUT", f"/v1/hosts/{_q(host_id)}/actual", actual)

    # -- shared
    def hosts(self) -> list[dict]:
        return _items(self.request("GET", "/v1/hosts"), "hosts")

    def host(self, host_id: str) -> dict:
        return self.request("GET", f"/v1/hosts/{_q(host_id)}")

    def delete_host(self, host_id: str) -> Any:
        return self.request("DELETE", f"/v1/hosts/{_q(host_id)}")

    def pods(self) -> list[dict]:
        return _items(self.request("GET", "/v1/pods"), "pods")

    def ports(self, **filters: Any) -> list[dict]:
        query = {k: v for k, v in filters.items() if v is not None}
        return _items(self.request("GET", "/v1/ports", query=query or None), "ports")

    def create_port(self, body: dict, timeout: float) -> dict:
        return self.request("POST", "/v1/ports", body, timeout=timeout)

    def delete_port(self, port_id: int) -> Any:
        return self.request("DELETE", f"/v1/ports/{int(port_id)}")


def _q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _items(body: Any, key: str) -> list[dict]:
    if isinstance(body, dict):
        return list(body.get(key) or body.get("items") or [])
    return list(body or [])


def _api_error(e: urllib.error.HTTPError) -> ApiError:
    raw = e.read()
    try:
        err = json.loads(raw)["error"]
        return ApiError(e.code, str(err.get("code", "error")), str(err.get("message", "")))
    except (ValueError, KeyError, TypeError):
        text = raw.decode(errors="replace").strip() or e.reason
        return ApiError(e.code, "http_error", f"controller answered {e.code}: {text}")


def backoff_wait(stop: threading.Event, attempt: int, cap: float = 10.0) -> None:
    """Exponential backoff with full jitter (so a fleet of agents does not reconnect in step),
    interruptible by `stop`."""
    stop.wait(random.uniform(0.2, max(0.2, min(cap, 0.5 * 2**attempt))))
