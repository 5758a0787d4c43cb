"""The REST routes of credentials and the audit trail (docs/api.md, docs/security.md):

    POST   /v1/hosts/{host_id}/token     issue (or re-issue) a host's agent token
    DELETE /v1/hosts/{host_id}/token     revoke it
    POST   /v1/operators/{name}/token    issue (or re-issue) an operator's token
    DELETE /v1/operators/{name}/token    revoke it (not the last operator's)
    GET    /v1/tokens                    the credentials (never a token)
    GET    /v1/events                    the audit trail, newest first, paged

All of them are the operator's (an agent's token gets 403: auth.AGENT_ROUTES).
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import webob

from controller import validate
from controller.errors import ApiError, bad_request, invalid

if TYPE_CHECKING:
    from controller.access import Access
    from controller.api import Api

MAX_EVENTS_PAGE = 1000
_OBJECT = re.compile(r"[a-z]+(?::[\x21-\x7e]{1,200})?", re.ASCII)
Answer = tuple[int, Any]


def _time_param(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise bad_request(f"{name} {text!r} must be a time in seconds since the epoch") \
            from None
    if not math.isfinite(value) or value < 0:
        raise invalid(f"{name} {text!r} must be a time in seconds since the epoch")
    return value


class SafetyApi:
    """The handlers; `register()` adds their routes to the API."""

    def __init__(self, api: Api) -> None:
        self.api = api

    @property
    def access(self) -> Access:
        access = self.api.ops.access
        if access is None:
            raise ApiError(404, "not_found", "this controller runs without authentication")
        return access

    def register(self) -> None:
        r = self.api._route
        r("/v1/hosts/{host_id}/token", POST=self.issue_agent, DELETE=self.revoke_agent)
        r("/v1/operators/{name}/token", POST=self.issue_operator, DELETE=self.revoke_operator)
        r("/v1/tokens", GET=self.tokens)
        r("/v1/events", GET=self.events)

    def _no_query_or_body(self, req: webob.Request) -> None:
        validate.query(req.GET, ())
        self.api._no_body(req)

    def issue_agent(self, req: webob.Request, args: dict) -> Answer:
        self._no_query_or_body(req)
        return 200, self.access.issue_agent(validate.host_id_param(args["host_id"]))

    def revoke_agent(self, req: webob.Request, args: dict) -> Answer:
        self._no_query_or_body(req)
        self.access.revoke_agent(validate.host_id_param(args["host_id"]))
        return 204, None

    def issue_operator(self, req: webob.Request, args: dict) -> Answer:
        self._no_query_or_body(req)
        return 200, self.access.issue_operator(validate.operator_name_param(args["name"]))

    def revoke_operator(self, req: webob.Request, args: dict) -> Answer:
        self._no_query_or_body(req)
        self.access.revoke_operator(validate.operator_name_param(args["name"]))
        return 204, None

    def tokens(self, req: webob.Request, args: dict) -> Answer:
        validate.query(req.GET, ())
        return 200, self.access.credentials()

    def events(self, req: webob.Request, args: dict) -> Answer:
        q = validate.query(req.GET, ("object", "since", "until", "before", "limit"))
        trail = self.api.audit
        if trail is None:
            raise ApiError(404, "not_found", "this controller keeps no audit trail")
        obj = q.get("object")
        if obj is not None and not _OBJECT.fullmatch(obj):
            raise invalid(f"object {obj!r} must be KIND:ID (e.g. port:12, host:h2, pod:7) or "
                          "a kind alone (port)", "invalid_format")
        since = _time_param(q["since"], "since") if "since" in q else None
        until = _time_param(q["until"], "until") if "until" in q else None
        before = validate.int_param(q["before"], "before", 1, 2**62) if "before" in q else None
        limit = validate.int_param(q.get("limit", "100"), "limit", 1, MAX_EVENTS_PAGE)
        return 200, trail.page(obj, since, until, before, limit)
