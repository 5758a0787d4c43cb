"""The OpenAPI part of credentials and the audit trail (controller/safety_api.py): its
schemas and paths, added to openapi.py's document by `extend()` (called from there, once
its helpers exist)."""

from __future__ import annotations


def extend(SCHEMAS: dict, PATHS: dict) -> None:  # noqa: N803 (openapi.py's names)
    from controller.openapi import (
        _errors,
        _nullable_str,
        _obj,
        _path_param,
        _query,
        _ref,
        _resp,
        _text,
    )
    from flows import contract

    SCHEMAS.update({
        "OperatorName": _text(contract.OPERATOR_NAME),
        "OperatorToken": _obj({"operator": _ref("OperatorName"), "token": {"type": "string"}},
                              ["operator", "token"]),
        "Credential": _obj({
            "kind": {"type": "string", "enum": ["agent", "operator"]},
            "name": {"type": "string", "description": "host id or operator name"},
            "state": {"type": "string", "enum": ["issued", "revoked", "derived"],
                      "description": "derived: a registered host still on its agent.key token"},
            "issued_at": {"type": ["number", "null"]},
            "revoked_at": {"type": ["number", "null"]}}),
        "Event": _obj({
            "id": {"type": "integer"}, "time": {"type": "number"},
            "credential": {"type": "string", "description": "operator NAME, agent HOST, "
                           "controller, or the local admin command"},
            "operation": {"type": "string"},
            "object": {"type": "string", "description": "KIND:ID, e.g. port:12, host:h2"},
            "status": {"type": "integer", "description": "HTTP status of the answer"},
            "outcome": {"type": "string", "description": "ok, or the error code"},
            "detail": _nullable_str}),
        "EventPage": _obj({
            "events": {"type": "array", "items": _ref("Event")},
            "next": {"type": ["integer", "null"], "description": "`before` of the next page"},
            "refused": _obj({"since": {"type": "number"}, "total": {"type": "integer"},
                             "by_status": {"type": "object",
                                           "additionalProperties": {"type": "integer"}},
                             "by_credential": {"type": "object",
                                               "additionalProperties": {"type": "integer"}}},
                            closed=False),
            "retention": _obj({"max_events": {"type": "integer"},
                               "max_days": {"type": "number"}})}),
    })
    _OPERATOR = _path_param("name", _ref("OperatorName"), "operator name")
    PATHS["/v1/hosts/{host_id}/token"]["post"]["summary"] = (
        "issue (or re-issue) the agent token of a host: its previous token stops working "
        "(operator only; the host need not be registered yet)")
    PATHS["/v1/hosts/{host_id}/token"]["delete"] = {
        "summary": "revoke the agent token of a host: its agent gets 401, its switches lose "
                   "their OpenFlow session and are refused (operator only)",
        "responses": {"204": _resp("revoked"), **_errors(400, 404, 422)}}
    PATHS.update({
        "/v1/operators/{name}/token": {
            "parameters": [_OPERATOR],
            "post": {"summary": "issue (or re-issue) an operator's token (operator only)",
                     "responses": {"200": _resp("the token", _ref("OperatorToken")),
                                   **_errors(400, 422)}},
            "delete": {"summary": "revoke an operator's token (not the last operator's)",
                       "responses": {"204": _resp("revoked"), **_errors(400, 404, 409, 422)}},
        },
        "/v1/tokens": {"get": {"summary": "the credentials and their state (never a token)",
                               "responses": {"200": _resp("credentials", {
                                   "type": "array", "items": _ref("Credential")}),
                                   **_errors(400)}}},
        "/v1/events": {"get": {
            "summary": "the audit trail: accepted writes, newest first, paged (operator only)",
            "parameters": [
                _query("object", {"type": "string", "maxLength": 210},
                       "one object (port:12, host:h2, pod:7, operator:alice) or a kind (port)"),
                _query("since", {"type": "number", "minimum": 0}, "from this time (epoch s)"),
                _query("until", {"type": "number", "minimum": 0}, "up to this time (epoch s)"),
                _query("before", {"type": "integer", "minimum": 1, "maximum": 2**62},
                       "events older than this id (the `next` of the previous page)"),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000},
                       "events per page (default 100)")],
            "responses": {"200": _resp("a page of events", _ref("EventPage")),
                          **_errors(400, 422)}}},
    })
