"""REST API v1: a WebOb + Routes WSGI app over the controller's operations, and the server
that runs it.

Every handler is a few lines: parse and validate (validate.py), call one operation,
render JSON. Errors are always `{"error": {"code", "message"}}`. Bodies are capped (64 KiB
by default) before they are read. The server is os-ken's `hub.WSGIServer` (eventlet hub:
one green thread per request, so a long poll or a connect waiting for an agent blocks only
itself) or, when the hub has none (os-ken 4.x native hub), a threaded wsgiref server.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import routes
import webob
import webob.dec

from controller import openapi, validate
from controller.access import Access
from controller.agent_protocol import AgentProtocol
from controller.audit import AuditTrail
from controller.auth import PUBLIC_ROUTES, Authenticator, Principal, authorize_host
from controller.connect import Connections
from controller.docker_ipam import DockerApi, DockerIpam
from controller.errors import ApiError, bad_request
from controller.hosts import Hosts
from controller.metrics import Metrics
from controller.observe import Observe, metrics_response
from controller.pods import Pods
from controller.reads import Reads
from controller.safety_api import SafetyApi

LOG = logging.getLogger("loris.api")

Handler = Callable[[webob.Request, dict], Any]


def _json_response(status: int, body: Any) -> webob.Response:
    if status == 204:
        return webob.Response(status=204)
    payload = (json.dumps(body, indent=None, separators=(",", ":")) + "\n").encode()
    resp = webob.Response(status=status, body=payload, content_type="application/json",
                          charset="utf-8")
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="loris"'
    return resp


@dataclass(frozen=True)
class Operations:
    """What the handlers call, one part per concern (wiring.build assembles them)."""
    reads: Reads
    hosts: Hosts
    pods: Pods
    ports: Connections
    agents: AgentProtocol
    access: Access | None = None     # credentials (controller/access.py)
    observe: Observe | None = None      # trace, resync, port counters, metrics
    docker: DockerIpam | None = None    # Docker IPAM for the hosts' plugins


class Api:
    """The WSGI application. `Api(ops, max_body, auth)(environ, start_response)`.

    With `auth` (the controller always passes one) every route but the public ones needs a
    bearer token, and an agent's token only works for its own host (controller/auth.py).
    Without it the API is open: only for in-process tests of the API's logic. With `audit`
    every write is recorded (or, refused, counted) once answered (controller/audit.py)."""

    def __init__(self, ops: Operations, max_body: int = 64 * 1024,
                 auth: Authenticator | None = None, audit: AuditTrail | None = None,
                 metrics: Metrics | None = None) -> None:
        self.ops = ops
        self.max_body = max_body
        self.auth = auth
        self.audit = audit
        self.metrics = metrics
        self.mapper = routes.Mapper()
        self._routes: dict[str, dict[str, Handler]] = {}
        r = self._route
        r("/v1/health", GET=self.health)
        r("/v1/version", GET=self.version)
        r("/v1/openapi.json", GET=self.openapi)
        r("/v1/hosts", GET=self.list_hosts, POST=self.register_host)
        r("/v1/hosts/{host_id}", GET=self.show_host, DELETE=self.remove_host)
        r("/v1/hosts/{host_id}/desired", GET=self.desired)
        r("/v1/hosts/{host_id}/actual", PUT=self.actual)
        r("/v1/pods", GET=self.list_pods, POST=self.create_pod)
        r("/v1/pods/{pod_id}", GET=self.show_pod, DELETE=self.delete_pod)
        r("/v1/ports", GET=self.list_ports, POST=self.connect)
        r("/v1/ports/{port_id}", GET=self.show_port, DELETE=self.disconnect)
        # ---- credentials and the audit trail (controller/safety_api.py) ------------------
        SafetyApi(self).register()
        # ---- Docker IPAM for the hosts' Docker plugins (controller/docker_ipam.py) -------
        DockerApi(self).register()
        # observability (docs/operations.md, docs/metrics.md)
        r("/v1/trace", POST=self.trace)
        r("/v1/hosts/{host_id}/resync", POST=self.resync)
        r("/v1/metrics/token", POST=self.metrics_token)
        r("/metrics", GET=self.serve_metrics)
        # ---- several controllers (controller/ha_views.py, docs/ha.md) ------------------------
        r("/v1/controllers", GET=self.controllers)

    def _route(self, path: str, **methods: Handler) -> None:
        self.mapper.connect(path, path=path, requirements={
            k: r"[^/]+" for k in ("host_id", "pod_id", "port_id")})
        self._routes[path] = methods

    def routes(self) -> dict[str, list[str]]:
        """path -> methods, for comparing with the OpenAPI document."""
        return {p: sorted(m) for p, m in self._routes.items()}

    @webob.dec.wsgify
    def __call__(self, req: webob.Request) -> webob.Response:
        resp = self._respond(req)
        if self.audit is not None:
            self.audit.observe(req.method, req.environ, resp.status_code)
        if self.metrics is not None:
            self.metrics.rest_request(req.environ.get("loris.route") or "unmatched",
                                      req.method, resp.status_code)
        return resp

    def _respond(self, req: webob.Request) -> webob.Response:
        """The answer; what it was about stays in req.environ (`loris.*`) for the audit."""
        try:
            match = self.mapper.match(req.path_info)
            path = match.pop("path") if match is not None else None
            req.environ["loris.route"], req.environ["loris.args"] = path, match
            who = None
            if self.auth is not None and path not in PUBLIC_ROUTES:
                # before anything else: an anonymous caller learns nothing, not even 404s
                who = self.auth.authenticate(req.headers.get("Authorization"))
                if who.role == "agent":
                    self.ops.agents.heard(who.host)       # liveness: any call counts
            req.environ["loris.principal"] = who
            if path is None:
                raise ApiError(404, "not_found", f"no such resource {req.path_info}; see "
                                                 "GET /v1/openapi.json")
            handler = self._routes[path].get(req.method)
            if handler is None:
                allowed = ", ".join(sorted(self._routes[path]))
                e = ApiError(405, "method_not_allowed",
                             f"{req.method} is not allowed on {path} (allowed: {allowed})")
                e.allow = allowed          # the Allow header RFC 9110 requires on a 405
                raise e
            if who is not None:
                self.auth.authorize_route(who, req.method, path, match)
            status, body = handler(req, match)
            req.environ["loris.result"] = body
            if isinstance(body, webob.Response):       # not JSON (GET /metrics)
                return body
            return _json_response(status, body)
        except ApiError as e:
            req.environ["loris.error"] = e
            if e.status >= 500:
                LOG.warning("%s %s -> %d %s: %s", req.method, req.path_qs, e.status, e.code,
                            e.message)
            else:
                LOG.info("%s %s -> %d %s: %s", req.method, req.path_qs, e.status, e.code,
                         e.message)
            resp = _json_response(e.status, e.to_json())
            if getattr(e, "allow", None):
                resp.headers["Allow"] = e.allow
            return resp
        except Exception:
            LOG.exception("%s %s failed", req.method, req.path_qs)
            return _json_response(500, {"error": {"code": "internal", "message":
                                                  "internal error; see the controller log"}})

    # ---- helpers ---------------------------------------------------------------------------
    def _body(self, req: webob.Request) -> object:
        length = req.content_length
        if length is not None and length > self.max_body:
            raise ApiError(413, "body_too_large", f"the body is {length} bytes; at most "
                                                  f"{self.max_body} are accepted")
        raw = req.body_file.read(self.max_body + 1) if length is None else req.body
        if len(raw) > self.max_body:
            raise ApiError(413, "body_too_large", f"the body exceeds {self.max_body} bytes")
        body = validate.parse_json(raw)
        req.environ["loris.body"] = body
        return body

    @staticmethod
    def _principal(req: webob.Request) -> Principal | None:
        return req.environ.get("loris.principal")

    @staticmethod
    def _no_body(req: webob.Request) -> None:
        if req.content_length:
            raise bad_request(f"{req.method} {req.path} takes no body")

    # ---- handlers --------------------------------------------------------------------------
    def health(self, req: webob.Request, args: dict) -> tuple[int, Any]:
        validate.query(req.GET, ())
        return 200, self.ops.reads.health()

    def version(self, req: webob.Request, args: dict) -> tuple[int, Any]:
        validate.query(req.GET, ())
        return 200, self.ops.reads.version()

    def openapi(self, req: webob.Request, args: dict) -> tuple[int, Any]:
        validate.query(req.GET, ())
        return 200, openapi.document()

    def list_hosts(self, req: webob.Request, args: dict) -> tuple[int, Any]:
        validate.query(req.GET, ())
        return 200, self.ops.reads.list_hosts()

    def register_host(self, req: webob.Request, args: dict) -> tuple[int, Any]:
        validate.query(req.GET, ())
        reg = validate.host_registration(self._body(req))
        authorize_host(self._principal(req), reg.id, "registering it")
        view, created = self.ops.hosts.register(reg)
        if reg.switch_cert_sha256 is not None and self.ops.access is not None:
            self.ops.access.sync()            # the switch guard takes the declared certificate
        return (201 if created else 200), view

    def show_host(self, req: webob.Request, args: dict) -> tuple[int, Any]:
        validate.query(req.GET, ())
        return 200, self.ops.reads.show_host(validate.host_id_param(args["host_id"]))

    def remove_host(self, req: webob.Request, args: dict) -> tuple[int, Any]:
        validate.query(req.GET, ())
        self._no_body(req)
        self.ops.hosts.remove(validate.host_id_param(args["host_id"]))
        return 204, None

    def desired(self, req: webob.Request, args: dict) -> tuple[int, Any]:
        q = validate.query(req.GET, ("since", "wait", "have"))
        host_id = validate.host_id_param(args["host_id"])
        since = validate.int_param(q["since"], "since", 0, 2**62) if "since" in q else None
        have = validate.digest_param(q["have"], "have") if "have" in q else None
        wait = 0.0
        if "wait" in q:
            try:
                wait = float(q["wait"])
            except ValueError:
                raise bad_request(f"wait {q['wait']!r} must be a number of seconds") from None
            if not 0 <= wait <= 60:
                raise ApiError(422, "invalid_value", f"wait {wait:g} must be 0..60 seconds")
        who, auth = self._principal(req), self.auth
        still_valid = (lambda: auth.still_valid(who)) if auth is not None else None
        return 200, self.ops.agents.desired(host_id, since, wait, still_valid, have)

    def actual(self, req: webob.Request, args: dict) -> tuple[int, Any]:
        validate.query(req.GET, ())
        host_id = validate.host_id_param(args["host_id"])
        self.ops.agents.report_actual(host_id, validate.actual_report(self._body(req)))
        return 204, None

    def list_pods(self, req: webob.Request, args: dict) -> tuple[int, Any]:
        validate.query(req.GET, ())
        return 200, self.ops.reads.list_pods()

    def create_pod(self, req: webob.Request, args: dict) -> tuple[int, Any]:
        validate.query(req.GET, ())
        return 201, self.ops.pods.create(validate.pod_create(self._body(req)))

    def show_pod(self, req: webob.Request, args: dict) -> tuple[int, Any]:
        validate.query(req.GET, ())
        return 200, self.ops.reads.show_pod(validate.pod_ref_param(args["pod_id"]))

    def delete_pod(self, req: webob.Request, args: dict) -> tuple[int, Any]:
        q = validate.query(req.GET, ("force",))
        self._no_body(req)
        force = validate.bool_param(q.get("force", "false"), "force")
        pod_id = self.ops.pods.delete(validate.pod_ref_param(args["pod_id"]), force)
        req.environ["loris.pod_id"] = pod_id        # the audit names pods by id
        return 204, None

    def list_ports(self, req: webob.Request, args: dict) -> tuple[int, Any]:
        q = validate.query(req.GET, ("pod", "host", "container", "stats"))
        pod = validate.pod_ref_param(q["pod"]) if "pod" in q else None
        host = validate.host_id_param(q["host"]) if "host" in q else None
        return 200, self._stats(q, self.ops.reads.list_ports(pod, host, q.get("container")))

    def connect(self, req: webob.Request, args: dict) -> tuple[int, Any]:
        validate.query(req.GET, ())
        return 201, self.ops.ports.connect(validate.port_create(self._body(req)))

    def show_port(self, req: webob.Request, args: dict) -> tuple[int, Any]:
        q = validate.query(req.GET, ("stats",))
        port = self.ops.reads.show_port(validate.port_id_param(args["port_id"]))
        return 200, self._stats(q, [port])[0]

    def disconnect(self, req: webob.Request, args: dict) -> tuple[int, Any]:
        validate.query(req.GET, ())
        self._no_body(req)
        port_id = validate.port_id_param(args["port_id"])
        port = self.ops.reads.show_port(port_id)          # 404 before anything else
        req.environ["loris.detail"] = f"{port['container']} on {port['host']}, pod {port['pod']}"
        who = self._principal(req)
        if who is not None and who.role != "operator":
            authorize_host(who, port["host"], f"deleting port {port_id}")
        self.ops.ports.disconnect(port_id)
        return 204, None

    # ---- observability ---------------------------------------------------------------------
    def _stats(self, q: dict, ports: list[dict]) -> list[dict]:
        """With ?stats=true, each port with its counters (port_stats.py)."""
        if not validate.bool_param(q.get("stats", "false"), "stats"):
            return ports
        return self._observe().with_stats(ports)

    def _observe(self) -> Observe:
        if self.ops.observe is None:
            raise ApiError(404, "not_found", "this controller was built without observability")
        return self.ops.observe

    def trace(self, req: webob.Request, args: dict) -> tuple[int, Any]:
        validate.query(req.GET, ())
        return 200, self._observe().trace(validate.trace_request(self._body(req)))

    def resync(self, req: webob.Request, args: dict) -> tuple[int, Any]:
        validate.query(req.GET, ())
        self._no_body(req)
        self._observe().resync(validate.host_id_param(args["host_id"]))
        return 204, None

    def metrics_token(self, req: webob.Request, args: dict) -> tuple[int, Any]:
        validate.query(req.GET, ())
        self._no_body(req)
        if self.auth is None:
            raise ApiError(404, "not_found", "this controller runs without authentication")
        return 200, {"token": self.auth.metrics_token()}

    def serve_metrics(self, req: webob.Request, args: dict) -> tuple[int, Any]:
        validate.query(req.GET, ())
        return 200, metrics_response(self._observe().metrics.render)


    # ---- several controllers ------------------------------------------------------------------
    def controllers(self, req: webob.Request, args: dict) -> tuple[int, Any]:
        self._no_body(req)
        return 200, self.ops.reads.controllers()


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """The REST server's TLS context (TLS 1.2+); raises with the file's name if unusable."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise ValueError(f"REST TLS certificate {cert} / key {key} unusable: {e}") from None
    return ctx


def _serve_tls(server: Any) -> None:
    """hub.WSGIServer.serve_forever over a TLS listening socket: each connection's handshake
    runs first in its own green thread, and a failed one (a plain-HTTP client, a client
    that does not trust our certificate) is logged in one line, not as a traceback."""
    import eventlet.wsgi
    from os_ken.lib.hub import LoggingWrapper

    class _TlsProtocol(eventlet.wsgi.HttpProtocol):
        def handle(self) -> None:
            try:
                self.request.do_handshake()
            except (ssl.SSLError, OSError) as e:
                LOG.info("TLS handshake with %s failed: %s", self.client_address[0], e)
                self.close_connection = True
                return
            try:
                super().handle()
            except ssl.SSLError as e:
                LOG.info("TLS connection with %s: %s", self.client_address[0], e)
                self.close_connection = True

    eventlet.wsgi.server(server.server, server.handle, LoggingWrapper(), protocol=_TlsProtocol)


def make_server(app: Callable, host: str, port: int, tls: ssl.SSLContext | None = None) -> Any:
    """A bound server for `app` (call `.serve_forever()`): os-ken's hub.WSGIServer when the
    hub has one, else threaded wsgiref (os-ken 4.x native hub). Binding here, not in the
    serving thread, makes a busy port fail the controller's start-up loudly.

    With `tls` the listening socket is wrapped: every connection is TLS, a plain one fails
    its handshake. The handshake runs in the connection's own thread (not in accept), so a
    client that stalls it holds up nobody else."""
    from os_ken.lib import hub

    scheme = "https" if tls else "http"
    if hasattr(hub, "WSGIServer"):
        LOG.info("REST API listening on %s://%s:%d", scheme, host, port)
        server = hub.WSGIServer((host, port), app)
        if tls:
            # eventlet's green SSL socket accepts without handshaking; _serve_tls does it in
            # the connection's green thread
            server.server = tls.wrap_socket(server.server, server_side=True,
                                            do_handshake_on_connect=False)
            server.serve_forever = lambda: _serve_tls(server)
        return server
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
    from wsgiref.simple_server import make_server as wsgiref_server

    class _Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class _QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:   # noqa: A002 (wsgiref's name)
            LOG.debug("%s " + format, self.address_string(), *args)

    LOG.info("REST API listening on %s://%s:%d (threaded wsgiref)", scheme, host, port)
    server = wsgiref_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
    if tls:
        server.socket = tls.wrap_socket(server.socket, server_side=True,
                                        do_handshake_on_connect=False)
    return server
