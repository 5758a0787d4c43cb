"""The OpenAPI part of observability (controller/observe.py: loris trace, /metrics, port
counters, resync): its schemas and paths, added to openapi.py's document by `extend()`
(called from there, once its helpers exist)."""

from __future__ import annotations


def extend(SCHEMAS: dict, PATHS: dict) -> None:  # noqa: N803 (openapi.py's names)
    from controller.openapi import (
        _HOST,
        _errors,
        _json,
        _nullable_str,
        _obj,
        _query,
        _ref,
        _resp,
        _text,
    )
    from flows import contract

    _COUNTS = _obj({"packets": {"type": "integer", "minimum": 0},
                    "bytes": {"type": "integer", "minimum": 0}}, ["packets", "bytes"])
    SCHEMAS.update({
        "TraceRequest": _obj({
            "source": _text(contract.CONTAINER_REF,
                            description="the sending container, as connected"),
            "source_host": _ref("HostId"),
            "destination": _text(contract.CONTAINER_REF,
                                 description="the receiving container"),
            "destination_host": _ref("HostId"),
            "destination_ip": _text(contract.IPV4, "ipv4_address", maxLength=15,
                                    description="an address instead of a container"),
            "protocol": {"type": "string", "enum": ["icmp", "tcp", "udp", "arp", "dhcp"],
                         "description": "default icmp; dhcp needs no destination"},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535,
                     "description": "destination port (tcp, udp; default 80 and 53)"},
            "source_mac": _ref("Mac"),
            "source_ip": _text(contract.IPV4, "ipv4_address", maxLength=15,
                               description="send from this address instead of the port's own "
                                           "(what a spoofing container would do)"),
        }, ["source"], examples=[{"source": "web1", "destination": "db1", "protocol": "tcp",
                                  "port": 5432}]),
        "Trace": _obj({
            "source": {"type": "object"},
            "destination": {"oneOf": [{"type": "null"}, {"type": "object"}]},
            "protocol": {"type": "string"},
            "legs": {"type": "array", "items": _obj({
                "name": {"type": "string"}, "what": {"type": "string"},
                "host": {"type": "string"}, "packet": {"type": "object"},
                "ok": {"type": "boolean"}, "text": {"type": "string"}, "fix": _nullable_str,
                "hops": {"type": "array", "items": {"type": "object"}},
                "error": _nullable_str,
                "ofproto_trace": _obj({"bridge": {"type": "string"}, "flow": {"type": "string"}}),
                "on_host": {"oneOf": [{"type": "null"}, {"type": "object"}]},
            }, closed=False)},
            "flows": {"type": "array", "items": {"type": "object"}},
            "verdict": _obj({"delivered": {"type": "boolean"}, "text": {"type": "string"},
                             "fix": _nullable_str,
                             "at": {"oneOf": [{"type": "null"}, {"type": "object"}]}},
                            ["delivered", "text"]),
            "traced_at": {"type": "number"},
        }, ["verdict", "legs"], closed=False),
        "PortStats": _obj({
            "sent": _COUNTS, "received": _COUNTS, "dropped": _COUNTS,
            "read_at": {"type": "number"},
        }, ["sent", "received", "dropped"]),
        "AgentStats": _obj({
            "passes": {"type": "integer", "minimum": 0},
            "pass_seconds_total": {"type": "number", "minimum": 0},
            "last_pass_seconds": {"type": "number", "minimum": 0},
            "wiring_errors": {"type": "integer", "minimum": 0},
        }),
        "MetricsToken": _obj({"token": {"type": "string"}}, ["token"]),
    })
    SCHEMAS["Port"]["properties"]["stats"] = {
        "oneOf": [{"type": "null"}, _ref("PortStats")],
        "description": "with ?stats=true: counters of the port's own flows (null when its "
                       "host's br-int is not connected)"}
    SCHEMAS["OpenFlowBridge"]["properties"]["reconciled_at"] = {
        "type": ["number", "null"], "description": "unix time of the last reconcile from a dump"}
    SCHEMAS["ActualReport"]["properties"]["stats"] = _ref("AgentStats")
    _STATS = _query("stats", {"type": "boolean"}, "add each port's packet counters (asks the "
                    "switches)")
    PATHS["/v1/ports"]["get"]["parameters"].append(_STATS)
    PATHS["/v1/ports/{port_id}"]["get"]["parameters"] = [_STATS]
    PATHS.update({
        "/v1/trace": {
            "post": {"summary": "follow a packet from a container through the flows installed on "
                                "the switches, and say where and why it stops",
                     "requestBody": {"required": True, **_json(_ref("TraceRequest"))},
                     "responses": {"200": _resp("the trace and its verdict", _ref("Trace")),
                                   **_errors(400, 404, 409, 413, 422, 503)}},
        },
        "/v1/hosts/{host_id}/resync": {
            "parameters": [_HOST],
            "post": {"summary": "reconcile the host's bridges with a dump of their flows (puts "
                                "back flows removed by hand, deletes stale ones)",
                     "responses": {"204": _resp("reconciled"),
                                   **_errors(400, 404, 409, 422, 503)}},
        },
        "/v1/metrics/token": {
            "post": {"summary": "issue the read-only metrics token (operator only)",
                     "responses": {"200": _resp("the token", _ref("MetricsToken")),
                                   **_errors(400)}},
        },
        "/metrics": {
            "get": {"summary": "Prometheus metrics (text format); the metrics token or the "
                               "operator's",
                    "responses": {"200": {"description": "metrics", "content": {
                        "text/plain": {"schema": {"type": "string"}}}}, **_errors(400)}},
        },
    })
