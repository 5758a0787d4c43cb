"""REST client of the Loris controller, one for the agent, the CLI and the lab.

`Client(base_url, timeout=30.0, token_file=None, ca_cert=None, *, socket_factory=None)`:

- several controllers (docs/ha.md): `base_url` may be a list, or URLs separated by commas;
  a request goes to the current one and moves on to the next when there was no answer:
  for a request that is safe to repeat (GET, PUT, DELETE) on any failure, for a POST only
  when no connection was made (refused, unreachable), since a POST that reached a
  controller may have been applied. The one that answered stays current. `add_urls()`
  adds controllers learnt from the registry (GET /v1/controllers);
- keep-alive: one connection per thread and controller that uses the client (the agent's
  long poll and its worker each hold their own; a connection is not safe to share between
  threads), closed with `close()`; built on the standard library's sockets
  (hostagent/transport.py), so importing the client costs the CLI no third-party HTTP
  stack;
- `timeout` is the default per-request timeout (connect, and each read); every call can
  give its own (`desired()` waits its long poll plus 15 s);
- credentials: the bearer token is read from `token_file` at each request (else LORIS_TOKEN),
  so a replaced token is used without a restart; `send(..., token=...)` overrides it for one
  request (a string, or False/None for none);
- TLS: an https controller is verified against `ca_cert` (else LORIS_CA_CERT, else the
  system's CAs); an unusable CA file raises CredentialsError at once;
- `socket_factory(family, type) -> socket`: where the connections' sockets come from (see
  hostagent/transport.py); the lab passes one that makes them inside a network namespace.
  With a factory, proxy settings of the environment are ignored; without one, http_proxy,
  https_proxy and no_proxy are honoured as urllib reads them.

Errors: `ApiError` (the controller answered 4xx/5xx, with its code and message),
`ControllerUnreachable` (no answer: refused, timed out, TLS failed; `.timed_out` when it
timed out), `CredentialsError` (a token or CA file that cannot be used). `send()` returns
every answer as a `Reply`; `request()` and the named calls raise ApiError for the errors.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import urllib.parse
import weakref
from collections import namedtuple
from collections.abc import Sequence

from flows import contract
from hostagent.transport import (
    Connection,
    SocketFactory,
    environ_proxy,
    failure_reason,
    request_sent,
)

TYPE_CHECKING = False   # typing costs the CLI's start-up ~10 ms; annotations are not evaluated
if TYPE_CHECKING:
    import ssl
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
    """No answer from the controller; `timed_out` when it did not answer in time."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


def controller_url(given: str | None) -> str:
    """The controller URL(s) to use, normalized; several are kept separated by commas."""
    text = given or os.environ.get("LORIS_CONTROLLER") or DEFAULT_CONTROLLER
    return ",".join(_one_url(u.strip()) for u in text.split(",") if u.strip())


def controller_urls(given: str | Sequence[str]) -> list[str]:
    """A list of controller URLs from a list or a comma-separated text."""
    items = given.split(",") if isinstance(given, str) else list(given)
    urls = [u.strip().rstrip("/") for u in items if u.strip()]
    if not urls:
        raise ValueError("no controller URL given")
    return list(dict.fromkeys(urls))


def _one_url(url: str) -> str:
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


class Reply(namedtuple("Reply", ["status", "body", "reason"], defaults=[""])):
    """An answer of the controller: its status (int), body (parsed JSON; text when the body
    is not JSON; None when empty) and the status line's reason phrase. A named tuple: the
    CLI imports this module, and `dataclasses` (with `inspect`) would weigh on its start-up."""

    __slots__ = ()


class Client:
    """The controller's REST API (see the module docstring for the arguments)."""

    def __init__(self, base_url: str | Sequence[str], timeout: float = 30.0,
                 token_file: str | None = None, ca_cert: str | None = None, *,
                 socket_factory: SocketFactory | None = None) -> None:
        self.base_urls = controller_urls(base_url)
        self._current = 0
        self._urls_lock = threading.Lock()
        self.timeout = timeout
        self.token_file = token_file
        self.ca_cert = ca_cert if ca_cert is not None else os.environ.get("LORIS_CA_CERT")
        self.socket_factory = socket_factory
        self._tls: ssl.SSLContext | None = None
        if any(u.startswith("https://") for u in self.base_urls):
            self._tls = self._tls_context()
        self._local = threading.local()
        self._connections: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._connections_lock = threading.Lock()

    @property
    def base_url(self) -> str:
        """The controller requests go to now."""
        with self._urls_lock:
            return self.base_urls[self._current]

    def add_urls(self, urls: Sequence[str]) -> None:
        """Controllers learnt from the registry: tried after the ones already known."""
        with self._urls_lock:
            for url in urls:
                url = url.rstrip("/")
                if url and url not in self.base_urls:
                    self.base_urls.append(url)

    def _move_on(self, failed: str) -> None:
        with self._urls_lock:
            if self.base_urls[self._current] == failed:
                self._current = (self._current + 1) % len(self.base_urls)

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

    def _tls_context(self) -> ssl.SSLContext:
        import ssl  # only for an https controller (the CLI's start-up)

        try:
            return ssl.create_default_context(cafile=self.ca_cert or None)
        except (OSError, ssl.SSLError) as e:
            raise CredentialsError(f"cannot load CA certificate {self.ca_cert}: {e}") \
                from None

    @staticmethod
    def _path_of(base: str) -> str:
        return urllib.parse.urlsplit(base).path

    def _connection(self, base: str) -> Connection:
        """This thread's own keep-alive connection to the controller at `base`."""
        connections = getattr(self._local, "connections", None)
        if connections is None:
            connections = self._local.connections = {}
        connection = connections.get(base)
        if connection is None:
            parts = urllib.parse.urlsplit(base)
            if parts.scheme == "https" and self._tls is None:    # learnt from the registry
                self._tls = self._tls_context()
            # The environment's proxy, as urllib reads it; nothing else from the environment.
            proxy = None if self.socket_factory else environ_proxy(base)
            connection = Connection(parts.scheme, parts.hostname or "127.0.0.1",
                                    parts.port or (443 if parts.scheme == "https" else 80),
                                    tls=self._tls, socket_factory=self.socket_factory,
                                    proxy=proxy)
            connections[base] = connection
            with self._connections_lock:
                self._connections.add(connection)
        return connection

    def close(self) -> None:
        """Close every thread's connection (a later request opens anew). A thread's
        connection also goes when the thread ends."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            connection.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def send(
        self, method: str, path: str, body: Any = None, *, timeout: float | None = None,
        query: dict[str, Any] | None = None, token: str | bool | None = True,
    ) -> Reply:
        """One request; every HTTP answer comes back as a Reply. `token`: True for the
        client's credentials, False or None for none, or the token to use. Raises
        ControllerUnreachable when there is no answer, CredentialsError when the token file
        cannot be read."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        bearer = read_token(self.token_file) if token is True else token or None
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        tries = len(self.base_urls)
        for attempt in range(tries):
            base = self.base_url
            target = self._path_of(base) + path
            if query:
                target += "?" + urllib.parse.urlencode(
                    {k: v for k, v in query.items() if v is not None}, doseq=True)
            try:
                status, reason_phrase, content = self._connection(base).exchange(
                    method, target, data, headers, timeout or self.timeout)
                break
            except OSError as e:
                reason, tls = failure_reason(e)
                if attempt + 1 < tries and _may_move_on(method, e):
                    self._move_on(base)
                    continue
                if tls:
                    raise ControllerUnreachable(
                        f"TLS with controller {base} failed ({reason}); is its "
                        "certificate signed by the CA given with --ca-cert / LORIS_CA_CERT, "
                        "for this address?") from None
                others = f" (and {tries - 1} other controllers)" if tries > 1 else ""
                raise ControllerUnreachable(
                    f"controller {base}{others} unreachable ({reason}); is it running? "
                    "(set --controller or LORIS_CONTROLLER)",
                    timed_out=isinstance(e, TimeoutError)) from None
        text = content.decode(errors="replace")
        if not text.strip():
            return Reply(status, None, reason_phrase)
        try:
            return Reply(status, json.loads(text), reason_phrase)
        except ValueError:
            return Reply(status, text, reason_phrase)

    def request(
        self, method: str, path: str, body: Any = None, *, timeout: float | None = None,
        query: dict[str, Any] | None = None,
    ) -> Any:
        """The parsed JSON answer (None when empty); ApiError for an error status."""
        reply = self.send(method, path, body, timeout=timeout, query=query)
        if reply.status >= 400:
            raise _api_error(reply)
        if isinstance(reply.body, str):
            raise ApiError(reply.status, "bad_reply", f"controller answered {reply.status} "
                           f"with a body that is not JSON: {reply.body.strip()[:200]}")
        return reply.body

    # -- agent side
    def register(self, host: dict) -> dict:
        return self.request("POST", "/v1/hosts", host)

    def desired(self, host_id: str, since: int | None, wait: float,
                have: str | None = None) -> dict:
        """The desired state; with `have` (the digest of the state held), possibly a delta
        from it (flows/desired_delta.py)."""
        query: dict[str, Any] = {"wait": int(wait)}
        if since is not None:
            query["since"] = since
        if have is not None:
            query["have"] = have
        return self.request("GET", f"/v1/hosts/{_q(host_id)}/desired", query=query,
                            timeout=wait + 15)  # fmt: skip

    def controllers(self) -> dict:
        """The controllers' registry (GET /v1/controllers; docs/ha.md)."""
        return self.request("GET", "/v1/controllers")

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

    # -- a host's Docker plugin (controller/docker_ipam.py; the agent's own host)
    def host_pods(self, host_id: str) -> list[dict]:
        return list(self.request("GET", f"/v1/hosts/{_q(host_id)}/pods") or [])

    def ensure_docker_pod(self, host_id: str, name: str, subnet: str) -> dict:
        return self.request("POST", f"/v1/hosts/{_q(host_id)}/pods",
                            {"name": name, "subnet": subnet})

    def reserve_address(self, host_id: str, pod: int, ip: str | None) -> dict:
        body: dict[str, Any] = {"pod": pod} if ip is None else {"pod": pod, "ip": ip}
        return self.request("POST", f"/v1/hosts/{_q(host_id)}/addresses", body)

    def release_address(self, host_id: str, pod: int, ip: str) -> Any:
        return self.request("DELETE", f"/v1/hosts/{_q(host_id)}/addresses/{_q(ip)}",
                            query={"pod": pod})

    def name_docker_port(self, host_id: str, port_id: int, container: str) -> Any:
        return self.request("PUT", f"/v1/hosts/{_q(host_id)}/ports/{int(port_id)}/docker",
                            {"container": container})

    def connect_on_host(self, host_id: str, body: dict, timeout: float) -> dict:
        return self.request("POST", f"/v1/hosts/{_q(host_id)}/ports", body, timeout=timeout)

    # -- pods by id or name (operator)
    def pod(self, pod: int | str) -> dict:
        return self.request("GET", f"/v1/pods/{_q(str(pod))}")

    def create_pod(self, name: str | None = None, pod_id: int | None = None,
                   subnet: str | None = None) -> dict:
        body = {k: v for k, v in (("name", name), ("id", pod_id), ("subnet", subnet))
                if v is not None}
        return self.request("POST", "/v1/pods", body)

    def delete_pod(self, pod: int | str, force: bool = False) -> Any:
        return self.request("DELETE", f"/v1/pods/{_q(str(pod))}",
                            query={"force": "true"} if force else None)

    # -- credentials and the audit trail (operator)
    def revoke_agent_token(self, host_id: str) -> Any:
        return self.request("DELETE", f"/v1/hosts/{_q(host_id)}/token")

    def operator_token(self, name: str) -> dict:
        return self.request("POST", f"/v1/operators/{_q(name)}/token")

    def revoke_operator_token(self, name: str) -> Any:
        return self.request("DELETE", f"/v1/operators/{_q(name)}/token")

    def credentials(self) -> list[dict]:
        return list(self.request("GET", "/v1/tokens") or [])

    def events(self, **query: Any) -> dict:
        """One page of the audit trail (object, since, until, before, limit)."""
        query = {k: v for k, v in query.items() if v is not None}
        return self.request("GET", "/v1/events", query=query or None)


def _may_move_on(method: str, error: OSError) -> bool:
    """Try the next controller? Always for a request safe to repeat; for a POST only when it
    certainly reached no controller (no connection was made: transport.request_sent)."""
    if method.upper() in ("GET", "PUT", "DELETE", "HEAD"):
        return True
    return not request_sent(error)


def _q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _items(body: Any, key: str) -> list[dict]:
    if isinstance(body, dict):
        return list(body.get(key) or body.get("items") or [])
    return list(body or [])


def _api_error(reply: Reply) -> ApiError:
    body = reply.body
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return ApiError(reply.status, str(err.get("code", "error")), str(err.get("message", "")))
    text = (body if isinstance(body, str) else json.dumps(body) if body is not None else "")
    text = text.strip() or reply.reason
    return ApiError(reply.status, "http_error", f"controller answered {reply.status}: {text}")


def backoff_wait(stop: threading.Event, attempt: int,
                 cap: float = contract.AGENT_RETRY_MAX_S) -> None:
    """Exponential backoff with full jitter (so a fleet of agents does not reconnect in step),
    interruptible by `stop`; never longer than `cap` (contract.AGENT_RETRY_MAX_S: the
    controller must hear a live agent within its away window)."""
    import random  # the agent's; not the CLI's start-up

    stop.wait(random.uniform(0.2, max(0.2, min(cap, 0.5 * 2**attempt))))
