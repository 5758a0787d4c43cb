"""REST client of the Loris controller, shared by the agent and the CLI (stdlib only)."""

from __future__ import annotations

import json
import os
import random
import socket
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_CONTROLLER = "http://127.0.0.1:8780"
# Where the controller keeps its operator token (docs/security.md): the CLI's default on the
# controller machine itself.
DEFAULT_OPERATOR_TOKEN_FILE = "/var/lib/loris/credentials/operator.token"


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


class CredentialsError(ControllerUnreachable):
    """A token or CA file that cannot be used (the controller cannot be talked to either)."""


def token_file_from(given: str | None, default: str | None = None) -> str | None:
    """The token file to use: `--token-file`, else LORIS_TOKEN_FILE, else `default` if it
    exists (None: use LORIS_TOKEN, or no token)."""
    path = given or os.environ.get("LORIS_TOKEN_FILE")
    if path:
        return path
    if os.environ.get("LORIS_TOKEN"):
        return None
    return default if default and os.access(default, os.R_OK) else None


def read_token(token_file: str | None) -> str | None:
    """The bearer token from `token_file`, else from LORIS_TOKEN, else None."""
    if token_file:
        try:
            with open(token_file) as f:
                token = f.read().strip()
        except OSError as e:
            raise CredentialsError(f"cannot read token file {token_file}: {e.strerror}") from None
        if not token:
            raise CredentialsError(f"token file {token_file} is empty")
        return token
    return os.environ.get("LORIS_TOKEN", "").strip() or None


class Client:
    """`token_file` is read at every request, so a replaced token is used without a restart;
    `ca_cert` verifies an https controller (default: the system's CAs)."""

    def __init__(self, base_url: str, timeout: float = 30.0, token_file: str | None = None,
                 ca_cert: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.token_file = token_file
        self.ca_cert = ca_cert if ca_cert is not None else os.environ.get("LORIS_CA_CERT")
        self._tls: ssl.SSLContext | None = None
        if self.base_url.startswith("https://"):
            try:
                self._tls = ssl.create_default_context(cafile=self.ca_cert or None)
            except (OSError, ssl.SSLError) as e:
                raise CredentialsError(f"cannot load CA certificate {self.ca_cert}: {e}") \
                    from None

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
        token = read_token(self.token_file)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout,
                                        context=self._tls) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise _api_error(e) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, ssl.SSLError):
                raise ControllerUnreachable(
                    f"TLS with controller {self.base_url} failed ({reason}); is its "
                    "certificate signed by the CA given with --ca-cert / LORIS_CA_CERT, "
                    "for this address?") from None
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

    def agent_token(self, host_id: str) -> dict:
        return self.request("POST", f"/v1/hosts/{_q(host_id)}/token")

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
