"""The audit trail: who changed what, when, and how it ended (docs/security.md).

Every write through the REST API that was accepted (authenticated, authorized, well formed:
its answer is 2xx or 5xx) is recorded in the store's `events` table once its outcome is
known: time, the credential's name ("operator admin", "agent h2"), the operation, the
object ("port:12", "pod:7", "host:h2", "operator:alice"), the HTTP status and outcome
("ok" or the error code) and a detail line. Never a token. Refused writes (4xx) change
nothing: they are counted here by status and credential, not stored, so a flood of bad
requests cannot fill the store. The agents' reports (PUT /v1/hosts/{id}/actual, one per
host every 30-60 s, recording what the agent observed) are not in the trail either.

The trail is bounded: at most `audit_max_events` events, none older than `audit_max_days`
(pruned in the transaction that adds one). `GET /v1/events` pages through it, newest first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from controller.store import Store, Tx

LOG = logging.getLogger("loris.audit")

WRITES = frozenset({"POST", "PUT", "DELETE", "PATCH"})
NOT_RECORDED = frozenset({("PUT", "/v1/hosts/{host_id}/actual")})   # the agent's reports
MAX_DETAIL = 400
MAX_REFUSED_KEYS = 256         # distinct credentials counted; more go under "others"
LOCAL = "local admin (python -m controller.auth)"
CONTROLLER = "controller"

Environ = Mapping[str, Any]


def _body(env: Environ) -> dict:
    body = env.get("loris.body")
    return body if isinstance(body, dict) else {}


def _result(env: Environ) -> dict:
    result = env.get("loris.result")
    return result if isinstance(result, dict) else {}


def _connect_object(env: Environ) -> str:
    port_id = _result(env).get("id")
    if port_id is not None:
        return f"port:{port_id}"
    body = _body(env)
    return f"container:{body.get('host')}/{body.get('container')}"


def _connect_detail(env: Environ) -> str:
    body = _body(env)
    ip = _result(env).get("ip") or body.get("ip")
    return (f"{body.get('container')} on {body.get('host')} to pod {body.get('pod', 0)} "
            f"({ip})")


# (method, route) -> (operation, object of the request, default detail)
Describe = Callable[[Environ], str]
OPERATIONS: dict[tuple[str, str], tuple[str, Describe, Describe | None]] = {
    ("POST", "/v1/hosts"): (
        "register host", lambda e: f"host:{_body(e).get('id')}",
        lambda e: f"{_body(e).get('tunnel_type')} {_body(e).get('tunnel_ip')}"),
    ("DELETE", "/v1/hosts/{host_id}"): (
        "remove host", lambda e: f"host:{e['loris.args']['host_id']}", None),
    ("POST", "/v1/hosts/{host_id}/token"): (
        "issue agent token", lambda e: f"host:{e['loris.args']['host_id']}", None),
    ("DELETE", "/v1/hosts/{host_id}/token"): (
        "revoke agent token", lambda e: f"host:{e['loris.args']['host_id']}", None),
    ("POST", "/v1/operators/{name}/token"): (
        "issue operator token", lambda e: f"operator:{e['loris.args']['name']}", None),
    ("DELETE", "/v1/operators/{name}/token"): (
        "revoke operator token", lambda e: f"operator:{e['loris.args']['name']}", None),
    ("POST", "/v1/pods"): (
        "create pod", lambda e: f"pod:{_result(e).get('id', _body(e).get('id'))}",
        lambda e: f"name {_result(e).get('name', _body(e).get('name'))}, "
                  f"subnet {_body(e).get('subnet')}"),
    ("DELETE", "/v1/pods/{pod_id}"): (           # by id, also when deleted by name
        "delete pod", lambda e: f"pod:{e.get('loris.pod_id', e['loris.args']['pod_id'])}",
        lambda e: f"named {e['loris.args']['pod_id']}"
                  if e.get("loris.pod_id") is not None
                  and str(e["loris.pod_id"]) != e["loris.args"]["pod_id"] else None),
    ("POST", "/v1/ports"): ("connect", _connect_object, _connect_detail),
    ("DELETE", "/v1/ports/{port_id}"): (
        "disconnect", lambda e: f"port:{e['loris.args']['port_id']}", None),
}


class AuditTrail:
    """Records accepted writes in the store, counts refused ones, and pages through both."""

    def __init__(self, store: Store, max_events: int, max_days: float) -> None:
        self.store = store
        self.max_events = max_events
        self.max_days = max_days
        self._lock = threading.Lock()
        self._since = time.time()
        self._refused: dict[str, int] = {}
        self._refused_by: dict[str, int] = {}

    # ---- recording -------------------------------------------------------------------
    def observe(self, method: str, env: Environ, status: int) -> None:
        """After a request was answered: record or count it if it was a write."""
        if method not in WRITES:
            return
        who, error = env.get("loris.principal"), env.get("loris.error")
        credential = (who.label if who is not None else
                      getattr(error, "credential", None) or "anonymous")
        if 400 <= status < 500:
            self._count_refused(credential, status)
            return
        route = env.get("loris.route")
        if (method, route) in NOT_RECORDED or route is None:
            return
        try:
            operation, obj, detail = self._describe(method, route, env)
            if error is not None:
                detail = f"{detail}: {error.message}" if detail else error.message
            self.record(credential, operation, obj, status,
                        error.code if error is not None else "ok", detail)
        except Exception:         # the answer is sent already; never fail the request
            LOG.exception("recording %s %s in the audit trail failed", method, route)

    @staticmethod
    def _describe(method: str, route: str, env: Environ) -> tuple[str, str, str | None]:
        known = OPERATIONS.get((method, route))
        detail = env.get("loris.detail")
        if known is None:               # a route added later: still recorded, plainly
            args = env.get("loris.args") or {}
            obj = ",".join(f"{k}:{v}" for k, v in sorted(args.items())) or route
            return f"{method} {route}", obj, detail
        operation, obj, default = known
        if detail is None and default is not None:
            detail = default(env)
        return operation, obj(env), detail

    def record(self, credential: str, operation: str, obj: str, status: int, outcome: str,
               detail: str | None = None) -> int:
        """Add one event and prune what is past the retention; its id."""
        if detail is not None and len(detail) > MAX_DETAIL:
            detail = detail[:MAX_DETAIL - 3] + "..."
        now = time.time()

        def add(tx: Tx) -> int:        # run again if another controller wrote meanwhile
            event_id = tx.insert_event(credential, operation, obj, status, outcome, detail, now)
            tx.prune_events(self.max_events, now - self.max_days * 86400)
            return event_id

        return self.store.write(add)

    def _count_refused(self, credential: str, status: int) -> None:
        with self._lock:
            key = str(status)
            self._refused[key] = self._refused.get(key, 0) + 1
            if credential not in self._refused_by and len(self._refused_by) >= MAX_REFUSED_KEYS:
                credential = "others"
            self._refused_by[credential] = self._refused_by.get(credential, 0) + 1

    def refused(self) -> dict:
        with self._lock:
            return {"since": self._since, "total": sum(self._refused.values()),
                    "by_status": dict(self._refused), "by_credential": dict(self._refused_by)}

    # ---- reading ---------------------------------------------------------------------
    def page(self, obj: str | None = None, since: float | None = None,
             until: float | None = None, before: int | None = None, limit: int = 100) -> dict:
        """One page, newest first; `next` is the `before` of the following page (None at
        the oldest). `obj` "kind:id" is one object, a bare kind ("port") all of that kind."""
        exact, kind = (obj, None) if obj is None or ":" in obj else (None, obj)
        with self.store.read() as tx:
            rows = tx.events(exact, kind, since, until, before, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return {"events": [e.to_json() for e in rows],
                "next": rows[-1].id if more and rows else None,
                "refused": self.refused(),
                "retention": {"max_events": self.max_events, "max_days": self.max_days}}


def record_local(store: Store, operation: str, obj: str, detail: str | None = None,
                 credential: str = LOCAL) -> None:
    """An event for a change made outside the REST API (the admin command, recovery)."""
    store.write(lambda tx: tx.insert_event(credential, operation, obj, 200, "ok", detail))
