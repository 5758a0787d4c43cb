"""The OpenAPI 3.1 document of REST API v1, and the request schemas the server enforces.

`schema.check` validates every request body against the schemas below, and the same dict
is served at GET /v1/openapi.json, so what is documented is exactly what is accepted.
Semantic checks that JSON Schema cannot express (IP in subnet, uniqueness, ...) are in
validate.py and the operations (ipam.py, hosts.py, pods.py, connect.py) and surface as the
documented 4xx errors.
"""

from __future__ import annotations

import copy

from flows import contract
from flows.contract import (
    CONTAINER_REF,
    DPID_TEXT,
    HOST_ID,
    MAC,
    MAX_OFPORT,
    MAX_POD_ID,
    MAX_PORT_ID,
    POD_NAME,
)

VERSION = "2.0.0.dev0"



def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: dict, required: list[str] | tuple = (), closed: bool = True,
         examples: list[dict] | None = None) -> dict:
    out: dict = {"type": "object", "properties": props}
    if examples:
        out["examples"] = examples
    if required:
        out["required"] = list(required)
    if closed:
        out["additionalProperties"] = False
    return out


def _text(rule: contract.Pattern, explain: str | None = None, **more: object) -> dict:
    """A string schema for one contract rule. `explain` names the validate.py check that
    tells the user precisely what is wrong when the pattern fails (schema.check)."""
    out: dict = {"type": "string", "pattern": rule.json, "x-hint": rule.hint, **more}
    if explain:
        out["x-explain"] = explain
    return out


_nullable_int = {"type": ["integer", "null"]}
_nullable_str = {"type": ["string", "null"]}
_ofport = {"type": "integer", "minimum": 1, "maximum": MAX_OFPORT}
_DHCP_OR_CIDR = contract.Pattern(
    "address", f"{contract.IPV4_CIDR.regex}|[dD][hH][cC][pP]",
    "give an address with its prefix length, e.g. 198.18.135.5/24, or 'dhcp'")

SCHEMAS: dict = {
    "Error": _obj({"error": _obj({"code": {"type": "string"}, "message": {"type": "string"}},
                                 ["code", "message"])}, ["error"]),
    "HostId": _text(HOST_ID),
    "PodId": {"type": "integer", "minimum": 0, "maximum": MAX_POD_ID,
              "description": "0 is the global pod; tunnel key = pod id + 1"},
    "PortId": {"type": "integer", "minimum": 1, "maximum": MAX_PORT_ID},
    "Dpid": _text(DPID_TEXT),
    "Mac": _text(MAC),
    "ApiError": _obj({"code": {"type": "string", "maxLength": 64},
                      "message": {"type": "string", "maxLength": 1024}}, ["code", "message"]),
    "HostRegistration": _obj({
        "id": _ref("HostId"),
        "tunnel_ip": _text(contract.IPV4, "ipv4_address", maxLength=15,
                           description="IPv4 address of the host's tunnel endpoint"),
        "tunnel_type": {"type": "string", "enum": ["vxlan", "gre"]},
        "dpids": _obj({"br-int": _ref("Dpid"), "br-tun": _ref("Dpid")}, ["br-int", "br-tun"]),
        "switch_cert_sha256": _text(contract.CERT_SHA256, description="SHA-256 of the DER "
                                    "of the host's switch certificate (OpenFlow over TLS): "
                                    "the only one the controller takes from its bridges"),
    }, ["id", "tunnel_ip", "tunnel_type", "dpids"], examples=[
        {"id": "h1", "tunnel_ip": "198.18.0.11", "tunnel_type": "vxlan",
         "dpids": {"br-int": "0x000133112ee14ee4", "br-tun": "0x000233112ee14ee4"}}]),
    "OpenFlowBridge": _obj({
        "dpid": _ref("Dpid"),
        "connected": {"type": "boolean"},
        "since": {"type": ["number", "null"], "description": "unix time of the last (dis)connect"},
        "synced": {"type": "boolean", "description": "flows reconciled since it connected"},
        "flows": {"type": "integer", "description": "Loris flows installed (controller view)"},
        "errors": {"type": "array", "items": _obj({
            "time": {"type": "number"}, "type": _nullable_int, "code": _nullable_int,
            "message": {"type": "string"}, "flow": _nullable_str}, closed=False)},
    }),
    "Host": _obj({
        "id": _ref("HostId"),
        "tunnel_ip": {"type": "string"},
        "tunnel_type": {"type": "string", "enum": ["vxlan", "gre"]},
        "dpids": _obj({"br-int": _ref("Dpid"), "br-tun": _ref("Dpid")}),
        "patch": _obj({"br-int": _nullable_int, "br-tun": _nullable_int}),
        "tunnels": {"type": "array", "items": _obj({"peer": _ref("HostId"),
                                                     "ofport": {"type": "integer"}})},
        "desired_version": {"type": "integer"},
        "actual_version": _nullable_int,
        "agent": _obj({"last_seen": {"type": ["number", "null"]},
                       "polling": {"type": "boolean"},
                       "away": {"type": "boolean", "description": "not heard from for "
                                "agent_away_polls poll intervals: connects fail at once"}}),
        "ports": {"type": "integer", "description": "number of ports on the host"},
        "openflow": _obj({
            "port": {"type": "integer"},
            "tls": {"type": "boolean", "description": "switches connect with ssl: targets"},
            "bridges": _obj({"br-int": _ref("OpenFlowBridge"),
                             "br-tun": _ref("OpenFlowBridge")}),
        }, ["port"]),
        "problems": {"type": "array", "description": "rows of this host (or of its pods) "
                     "left out of the flows, and why", "items": _obj({
                         "kind": {"type": "string", "enum": ["host", "pod", "port"]},
                         "id": {"type": ["integer", "string"]},
                         "pod": _nullable_int, "message": {"type": "string"}})},
        "registered_at": {"type": "number"},
    }),
    "PodCreate": _obj({
        "id": _ref("PodId"),
        "name": _ref("PodName"),
        "subnet": _text(contract.IPV4_CIDR, "subnet", maxLength=18,
                        description="IPv4 CIDR, e.g. 10.7.0.0/24 (prefix 1..30, host bits "
                                    "zero); enables DHCP"),
    }, examples=[{"name": "web", "subnet": "198.18.135.0/24"},
                 {"id": 7, "name": "web", "subnet": "198.18.135.0/24"}]),
    "Pod": _obj({
        "id": _ref("PodId"),
        "name": _ref("PodName"),
        "subnet": _nullable_str,
        "tunnel_key": {"type": "integer"},
        "dhcp_server": {"oneOf": [{"type": "null"},
                                  _obj({"ip": {"type": "string"}, "mac": _ref("Mac")})]},
        "ports": {"type": "integer"},
        "members": {"type": "array", "items": _ref("Port")},
        "created_at": {"type": "number"},
    }),
    "PortCreate": _obj({
        "host": _ref("HostId"),
        "container": _text(CONTAINER_REF),
        "ip": _text(_DHCP_OR_CIDR, "port_address", maxLength=18,
                    description="'A.B.C.D/len' (prefix 1..32, not the network or broadcast "
                                "address), or 'dhcp' to get a free address of the pod's "
                                "subnet by DHCP"),
        "mac": _ref("Mac"),
        "pod": _ref("PodRef"),
    }, ["host", "container", "ip"], examples=[
        {"host": "h1", "container": "web1", "ip": "198.18.135.5/24", "pod": 7},
        {"host": "h1", "container": "web2", "ip": "dhcp", "pod": "web"}]),
    "Port": _obj({
        "id": _ref("PortId"),
        "host": _ref("HostId"),
        "container": {"type": "string"},
        "pod": _ref("PodId"),
        "mac": _ref("Mac"),
        "ip": {"type": "string", "description": "A.B.C.D/len (allocated one for DHCP)"},
        "dhcp": {"type": "boolean"},
        "state": {"type": "string", "enum": ["pending", "wired", "active"]},
        "ofport": _nullable_int,
        "mtu": _nullable_int,
        "lease": _nullable_str,
        "error": {"oneOf": [{"type": "null"}, _ref("ApiError")]},
        "created_at": {"type": "number"},
        "docker": _obj(       # a Docker endpoint's port whose container is known (docker.md)
            {"container": {"type": "string", "description": "the Docker container's name"},
             "endpoint": {"type": "string", "description": "docker-ep-<EndpointID>"}}),
    }),
    "Desired": _obj({
        "version": {"type": "integer"},
        "digest": {"type": "string", "description": "names this state's content; the next "
                   "long poll gives it as `have` to get a delta"},
        "base": {"type": "string", "description": "a delta: the digest of the state it "
                 "applies to; `ports` are then the ports added or changed"},
        "removed": {"type": "array", "items": _ref("PortId"),
                    "description": "a delta: the ports gone since `base`"},
        "host": _obj({"id": _ref("HostId"), "tunnel_ip": {"type": "string"},
                      "tunnel_type": {"type": "string"}}),
        "peers": {"type": "array", "items": _obj({"id": _ref("HostId"),
                                                   "tunnel_ip": {"type": "string"}})},
        "ports": {"type": "array", "items": _obj({
            "id": _ref("PortId"), "container": {"type": "string"}, "pod": _ref("PodId"),
            "mac": _ref("Mac"), "ip": {"type": "string"}, "dhcp": {"type": "boolean"},
            "state": {"type": "string", "enum": ["pending", "wired", "active"]},
            "ofport": {"oneOf": [{"type": "null"}, _ofport], "description":
                       "the number the port's OVS interface asks for (ofport_request), "
                       "chosen by the controller at connect; null: OVS chooses"}})},
    }),
    "ActualReport": _obj({
        # versions are the store's (SQLite INTEGER, etcd revisions): 64-bit signed
        "version": {"type": "integer", "minimum": 0, "maximum": (1 << 63) - 1},
        "patch": _obj({"br-int": {"oneOf": [{"type": "null"}, _ofport]},
                       "br-tun": {"oneOf": [{"type": "null"}, _ofport]}}),
        "tunnels": {"type": "object", "additionalProperties": _ofport,
                    "propertyNames": _ref("HostId"),
                    "description": "peer host id -> ofport of its lt- port on br-tun"},
        "ports": {"type": "object", "additionalProperties": _obj({
            "ofport": _ofport,
            "mtu": {"type": "integer", "minimum": contract.MIN_MTU,
                    "maximum": contract.MAX_MTU},
            "lease": {"oneOf": [{"type": "null"},
                                _text(contract.IPV4_CIDR, "lease", maxLength=18)]},
            "error": _ref("ApiError"),
        }), "propertyNames": {"pattern": r"^[1-9][0-9]{0,7}$"},
            "description": "port id (decimal string) -> what the agent made of it"},
    }, ["version"]),
    "AgentToken": _obj({"host": _ref("HostId"), "token": {"type": "string"}},
                       ["host", "token"]),
    "Health": _obj({"status": {"type": "string"}}),
    "Version": _obj({"version": {"type": "string"}, "api": {"type": "string"},
                     "os_ken": {"type": "string"}}),
}


def _json(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


def _resp(description: str, schema: dict | None = None) -> dict:
    out = {"description": description}
    if schema is not None:
        out.update(_json(schema))
    return out


_ERR = _ref("Error")


def _errors(*codes: int) -> dict:
    text = {400: "malformed request (JSON, types, unknown or missing fields)",
            401: "no valid credentials (Authorization: Bearer <token>)",
            403: "these credentials may not do this (an agent acts for its own host only)",
            404: "no such object", 409: "conflicts with the current state",
            413: "body larger than the limit (64 KiB)",
            422: "a value is not acceptable", 503: "agent, switch or store not ready in time"}
    return {str(c): _resp(text[c], _ERR) for c in codes}


def _path_param(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": schema,
            "description": description}


def _query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


_HOST = _path_param("host_id", _ref("HostId"), "host id")
_POD = _path_param("pod_id", _ref("PodRef"), "pod id or name")
_PORT = _path_param("port_id", _ref("PortId"), "port id")

PATHS: dict = {
    "/v1/health": {"get": {"summary": "liveness; never needs authentication",
                           "responses": {"200": _resp("alive", _ref("Health")),
                                         **_errors(400, 503)}}},
    "/v1/version": {"get": {"summary": "software and API version",
                            "responses": {"200": _resp("versions", _ref("Version")),
                                          **_errors(400)}}},
    "/v1/openapi.json": {"get": {"summary": "this document",
                                 "responses": {"200": _resp("OpenAPI 3.1", {"type": "object"}),
                                               **_errors(400)}}},
    "/v1/hosts": {
        "get": {"summary": "list hosts with status",
                "responses": {"200": _resp("hosts", {"type": "array", "items": _ref("Host")}),
                              **_errors(400)}},
        "post": {"summary": "register a host (agent start-up; idempotent)",
                 "requestBody": {"required": True, **_json(_ref("HostRegistration"))},
                 "responses": {"201": _resp("registered", _ref("Host")),
                               "200": _resp("already registered (updated)", _ref("Host")),
                               **_errors(400, 409, 413, 422)}},
    },
    "/v1/hosts/{host_id}": {
        "parameters": [_HOST],
        "get": {"summary": "show a host: tunnels, agent and OpenFlow status, last errors",
                "responses": {"200": _resp("host", _ref("Host")), **_errors(400, 404, 422)}},
        "delete": {"summary": "remove a host and all its ports",
                   "responses": {"204": _resp("removed"), **_errors(400, 404, 422)}},
    },
    "/v1/hosts/{host_id}/token": {
        "parameters": [_HOST],
        "post": {"summary": "issue the agent token of a host (operator only; the host need not "
                            "be registered yet)",
                 "responses": {"200": _resp("the token", _ref("AgentToken")),
                               **_errors(400, 422)}},
    },
    "/v1/hosts/{host_id}/desired": {
        "parameters": [_HOST],
        "get": {"summary": "agent long poll: desired state of the host",
                "parameters": [
                    _query("since", {"type": "integer", "minimum": 0, "maximum": 2**62},
                           "the version the agent has; returns at once if it differs"),
                    _query("wait", {"type": "number", "minimum": 0, "maximum": 60},
                           "seconds to wait for a newer version (default 0)"),
                    _query("have", _text(contract.STATE_DIGEST),
                           "the digest of the state the agent holds: the answer is a delta "
                           "from it when the controller knows it")],
                "responses": {"200": _resp("desired state", _ref("Desired")),
                              **_errors(400, 404, 422)}},
    },
    "/v1/hosts/{host_id}/actual": {
        "parameters": [_HOST],
        "put": {"summary": "agent report after each reconcile",
                "requestBody": {"required": True, **_json(_ref("ActualReport"))},
                "responses": {"204": _resp("accepted"), **_errors(400, 404, 413, 422)}},
    },
    "/v1/pods": {
        "get": {"summary": "list pods",
                "responses": {"200": _resp("pods", {"type": "array", "items": _ref("Pod")}),
                              **_errors(400)}},
        "post": {"summary": "create a pod: a name, an id (default: the lowest free one), a "
                            "subnet (optional; enables DHCP)",
                 "requestBody": {"required": True, **_json(_ref("PodCreate"))},
                 "responses": {"201": _resp("created", _ref("Pod")),
                               **_errors(400, 409, 413, 422)}},
    },
    "/v1/pods/{pod_id}": {
        "parameters": [_POD],
        "get": {"summary": "show a pod with its members",
                "responses": {"200": _resp("pod", _ref("Pod")), **_errors(400, 404, 422)}},
        "delete": {"summary": "delete a pod (409 while it has members unless force=true)",
                   "parameters": [_query("force", {"type": "boolean"},
                                         "also disconnect every member")],
                   "responses": {"204": _resp("deleted"), **_errors(400, 404, 409, 422)}},
    },
    "/v1/ports": {
        "get": {"summary": "list ports",
                "parameters": [_query("pod", _ref("PodRef"), "only this pod (id or name)"),
                               _query("host", _ref("HostId"), "only this host"),
                               _query("container", {"type": "string"}, "only this container")],
                "responses": {"200": _resp("ports", {"type": "array", "items": _ref("Port")}),
                              **_errors(400, 404, 422)}},
        "post": {"summary": "connect a container: returns once it is wired and its flows are "
                            "installed on every host that needs them",
                 "requestBody": {"required": True, **_json(_ref("PortCreate"))},
                 "responses": {"201": _resp("connected", _ref("Port")),
                               **_errors(400, 404, 409, 413, 422, 503)}},
    },
    "/v1/ports/{port_id}": {
        "parameters": [_PORT],
        "get": {"summary": "show a port",
                "responses": {"200": _resp("port", _ref("Port")), **_errors(400, 404, 422)}},
        "delete": {"summary": "disconnect a container",
                   "responses": {"204": _resp("disconnected"), **_errors(400, 404, 422)}},
    },
}

# ---- observability (loris trace, /metrics, port counters, resync: openapi_observe.py) ----
from controller import openapi_observe  # noqa: E402 (it uses the helpers above)

openapi_observe.extend(SCHEMAS, PATHS)


# ---- pods by name (controller/pods.py, controller/pod_rows.py) -------------------------
SCHEMAS.update({
    "PodName": _text(POD_NAME, description="unique; a pod made without one is called "
                     "pod-<id>, and such names are reserved for the pod of that id"),
    "PodRef": {"oneOf": [_ref("PodId"), _ref("PodName")],
               "description": "a pod by its id (a number) or its name"},
})
# a pod is created with a name, an id or both (the other is chosen)
SCHEMAS["PodCreate"]["anyOf"] = [{"required": ["name"]}, {"required": ["id"]}]


# ---- credentials and the audit trail (controller/safety_api.py) ------------------------
from controller import openapi_safety  # noqa: E402 (it uses the helpers above)

openapi_safety.extend(SCHEMAS, PATHS)

# ---- Docker IPAM for the hosts' Docker plugins (controller/docker_ipam.py) ---------------
from controller import docker_ipam  # noqa: E402 (it uses the helpers above)

docker_ipam.extend_openapi(SCHEMAS, PATHS)
# ---- several controllers: registry, masters, roles (controller/ha_views.py) ----------------
from controller import openapi_ha  # noqa: E402 (it uses the helpers above)

openapi_ha.extend(SCHEMAS, PATHS)

PUBLIC = ("/v1/health", "/v1/openapi.json")      # controller/auth.py PUBLIC_ROUTES

for _path, _ops in PATHS.items():
    for _name, _op in _ops.items():
        if _name != "parameters":
            if _path in PUBLIC:
                _op["security"] = []
            else:
                _op["responses"].update(_errors(401, 403))
            _op["responses"]["default"] = _resp("unexpected error (500); see the controller log",
                                                _ERR)


def document() -> dict:
    """The OpenAPI document (a fresh copy: callers may not mutate the source of truth)."""
    return copy.deepcopy({
        "openapi": "3.1.0",
        "info": {"title": "Loris controller API", "version": VERSION,
                 "description": "Pods, container ports, hosts, and the host-agent protocol. "
                                "Every error is {\"error\": {\"code\", \"message\"}}."},
        "paths": PATHS,
        "security": [{"bearer": []}],
        "components": {"schemas": SCHEMAS, "securitySchemes": {"bearer": {
            "type": "http", "scheme": "bearer",
            "description": "the operator token, or a host's agent token (docs/security.md)"}}},
    })
