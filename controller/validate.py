"""Request validation: JSON Schema first (openapi.SCHEMAS), then what a schema cannot say.

Every function returns plain normalised values or raises ApiError (400/422) naming the field
and how to fix it. Nothing here touches the store: checks that need the current state
(uniqueness, subnet membership) are in ipam.py, hosts.py, pods.py and connect.py.
"""

from __future__ import annotations

import decimal
import ipaddress
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from controller import openapi, schema
from controller.errors import bad_request, invalid
from flows import contract
from flows.contract import BRIDGES, GLOBAL_POD, MAX_POD_ID, MAX_PORT_ID, POD_NAME

DHCP = "dhcp"
_INTEGER_TEXT = re.compile(r"-?[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]{1,3})?", re.ASCII)
# RFC 5737/6890 ranges that can never be a container's or a tunnel endpoint's address
_FORBIDDEN = [ipaddress.IPv4Network(n) for n in
              ("0.0.0.0/8", "127.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4")]


def parse_json(body: bytes) -> object:
    """Decode a request body; 400 with the position of the syntax error."""
    if not body:
        raise bad_request("the request needs a JSON body")
    try:
        return json.loads(body.decode("utf-8"), parse_float=_json_number)
    except UnicodeDecodeError:
        raise bad_request("the body is not UTF-8 encoded JSON") from None
    except json.JSONDecodeError as e:
        raise bad_request(f"the body is not valid JSON: {e.msg} at line {e.lineno} "
                          f"column {e.colno}") from None


def _json_number(text: str) -> int | float:
    """A JSON number with a fraction or exponent: an integer if it has no fractional part
    (JSON Schema's `integer` is the mathematical one, so 7.0 and 7e0 are integers)."""
    value = float(text)
    return int(value) if value.is_integer() else value


def check_schema(value: object, name: str, where: str = "body") -> None:
    schema.check(value, openapi.SCHEMAS[name], openapi.SCHEMAS, where, EXPLAINERS)


def ipv4_address(text: str, field: str) -> ipaddress.IPv4Address:
    """A usable unicast IPv4 address (no loopback, multicast, 0.x, class E)."""
    try:
        addr = ipaddress.IPv4Address(text)
    except ValueError:
        raise invalid(f"{field} {text!r} is not an IPv4 address (want e.g. 198.18.0.11)") \
            from None
    if any(addr in net for net in _FORBIDDEN):
        raise invalid(f"{field} {addr} is loopback, multicast or reserved; use a unicast address")
    return addr


def ipv4_interface(text: str, field: str = "'ip'") -> ipaddress.IPv4Interface:
    """'A.B.C.D/len' with len 1..32, the address neither network nor broadcast of its subnet."""
    if "/" not in text:
        raise invalid(f"{field} {text!r} needs a prefix length, e.g. 10.7.0.5/24, or 'dhcp'")
    addr_text, _, plen = text.partition("/")
    if not (plen.isascii() and plen.isdigit()) or len(plen) > 2 or not 1 <= int(plen) <= 32:
        raise invalid(f"{field} {text!r}: the prefix length must be 1..32")
    ipv4_address(addr_text, field)
    iface = ipaddress.IPv4Interface(f"{addr_text}/{int(plen)}")
    net = iface.network
    if net.prefixlen <= 30 and iface.ip in (net.network_address, net.broadcast_address):
        kind = "network" if iface.ip == net.network_address else "broadcast"
        raise invalid(f"{field} {text}: {iface.ip} is the {kind} address of {net}; "
                      "pick a host address")
    return iface


def subnet(text: str, field: str = "'subnet'") -> ipaddress.IPv4Network:
    """An IPv4 network 'A.B.C.D/len', host bits zero, prefix 1..30 (room for a DHCP server
    and at least one port)."""
    try:
        net = ipaddress.IPv4Network(text, strict=True)
    except ValueError as e:
        raise invalid(f"{field} {text!r} is not an IPv4 network like 10.7.0.0/24 ({e})") from None
    if "/" not in text:
        raise invalid(f"{field} {text!r} needs a prefix length, e.g. 10.7.0.0/24")
    if not 1 <= net.prefixlen <= 30:
        raise invalid(f"{field} {net}: the prefix length must be 1..30 (a /31 or /32 leaves no "
                      "room for the DHCP server and a port)")
    if any(net.overlaps(bad) for bad in _FORBIDDEN):
        raise invalid(f"{field} {net} overlaps loopback, multicast or reserved space")
    return net


def mac(text: str, field: str = "'mac'") -> str:
    """Lower-case unicast, non-zero MAC."""
    value = text.lower()
    if int(value[:2], 16) & 1:
        raise invalid(f"{field} {value} is a multicast address (lowest bit of the first byte "
                      "set); use a unicast MAC such as 02:00:00:00:00:01")
    if value == "00:00:00:00:00:00":
        raise invalid(f"{field} 00:00:00:00:00:00 is not a usable MAC")
    return value


@dataclass(frozen=True)
class HostRegistration:
    id: str
    tunnel_ip: str
    tunnel_type: str
    dpid_int: int
    dpid_tun: int
    switch_cert_sha256: str | None = None   # the agent's switch certificate (TLS)


def host_registration(body: object) -> HostRegistration:
    check_schema(body, "HostRegistration")
    assert isinstance(body, dict)
    tunnel_ip = str(ipv4_address(body["tunnel_ip"], "'tunnel_ip'"))
    dpids = {b: int(body["dpids"][b], 16) for b in BRIDGES}
    for bridge, dpid in dpids.items():
        if dpid == 0:
            raise invalid(f"'dpids.{bridge}' must not be 0")
    if dpids["br-int"] == dpids["br-tun"]:
        raise invalid("'dpids': br-int and br-tun need different datapath ids")
    return HostRegistration(body["id"], tunnel_ip, body["tunnel_type"],
                            dpids["br-int"], dpids["br-tun"], body.get("switch_cert_sha256"))


PodRef = int | str          # a pod by its id or its name (contract.POD_NAME)


@dataclass(frozen=True)
class PodCreate:
    id: int | None          # None: the lowest free one (pods.py)
    name: str | None        # None: contract.default_pod_name(id)
    subnet: ipaddress.IPv4Network | None


def pod_create(body: object) -> PodCreate:
    check_schema(body, "PodCreate")
    assert isinstance(body, dict)
    net = subnet(body["subnet"]) if body.get("subnet") is not None else None
    return PodCreate(body.get("id"), body.get("name"), net)


@dataclass(frozen=True)
class PortCreate:
    host: str
    container: str
    ip: ipaddress.IPv4Interface | None      # None = DHCP
    mac: str | None
    pod: PodRef


def _no_number_in_quotes(body: object, field: str) -> None:
    """A pod id sent as a string ("7") is a JSON type error (400), not a bad name."""
    value = body.get(field) if isinstance(body, dict) else None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        raise bad_request(f"'{field}' must be an integer (a pod id, e.g. {value} without "
                          "quotes) or a pod name, got string " + repr(value))


def port_create(body: object) -> PortCreate:
    _no_number_in_quotes(body, "pod")
    check_schema(body, "PortCreate")
    assert isinstance(body, dict)
    ip_text = body["ip"]
    iface = None if ip_text.lower() == DHCP else ipv4_interface(ip_text)
    mac_value = mac(body["mac"]) if "mac" in body else None
    return PortCreate(body["host"], body["container"], iface, mac_value,
                      body.get("pod", GLOBAL_POD))


@dataclass(frozen=True)
class PortReport:
    ofport: int | None
    mtu: int | None
    lease: str | None
    error: tuple[str, str] | None


@dataclass(frozen=True)
class ActualReport:
    version: int
    patch: Mapping[str, int | None] | None        # None: not reported, keep what we have
    tunnels: Mapping[str, int] | None
    ports: Mapping[int, PortReport]
    stats: Mapping[str, float] | None = None      # the agent's own figures (AgentStats)


def actual_report(body: object) -> ActualReport:
    check_schema(body, "ActualReport")
    assert isinstance(body, dict)
    tunnels = body.get("tunnels")
    ports: dict[int, PortReport] = {}
    for key, rep in (body.get("ports") or {}).items():
        if not (key.isascii() and key.isdigit()) or not 1 <= int(key) <= MAX_PORT_ID:
            raise invalid(f"'ports' key {key!r} must be a port id 1..{MAX_PORT_ID} in decimal")
        err = rep.get("error")
        lease = rep.get("lease")
        if lease is not None:
            ipv4_interface(lease, f"'ports.{key}.lease'")
        ports[int(key)] = PortReport(rep.get("ofport"), rep.get("mtu"), lease,
                                     (err["code"], err["message"]) if err else None)
    patch = body.get("patch")
    return ActualReport(body["version"], dict(patch) if patch is not None else None,
                        dict(tunnels) if tunnels is not None else None, ports,
                        dict(body["stats"]) if body.get("stats") is not None else None)


@dataclass(frozen=True)
class TraceRequest:
    source: str
    protocol: str = "icmp"
    destination: str | None = None
    destination_ip: str | None = None
    source_host: str | None = None
    destination_host: str | None = None
    port: int | None = None
    source_mac: str | None = None
    source_ip: str | None = None


DEFAULT_TRACE_PORTS = {"tcp": 80, "udp": 53}


def trace_request(body: object) -> TraceRequest:
    check_schema(body, "TraceRequest")
    assert isinstance(body, dict)
    protocol = body.get("protocol", "icmp")
    if body.get("destination") and body.get("destination_ip"):
        raise invalid("give 'destination' (a container) or 'destination_ip' (an address), "
                      "not both")
    if protocol != "dhcp" and not (body.get("destination") or body.get("destination_ip")):
        raise invalid(f"a {protocol} trace needs 'destination' (a container) or "
                      "'destination_ip' (an address)")
    if "port" in body and protocol not in DEFAULT_TRACE_PORTS:
        raise invalid(f"'port' only goes with tcp or udp, not {protocol}")
    dst_ip = body.get("destination_ip")
    src_ip = body.get("source_ip")
    return TraceRequest(
        body["source"], protocol, body.get("destination"),
        str(ipv4_address(dst_ip, "'destination_ip'")) if dst_ip else None,
        body.get("source_host"), body.get("destination_host"),
        body.get("port", DEFAULT_TRACE_PORTS.get(protocol)),
        body["source_mac"].lower() if body.get("source_mac") else None,
        src_ip)


def int_param(text: str, name: str, low: int, high: int) -> int:
    """An integer from a URL path or query; 400 when it is not one, 422 when out of range."""
    # ASCII only: str.isdigit() and int() also take other scripts' digits ("٥" is 5). A JSON
    # Schema integer is the mathematical one, so "7.0" and "7e0" are 7, as in bodies.
    number = _INTEGER_TEXT.fullmatch(text) if len(text) <= 32 else None
    value = decimal.Decimal(text) if number else None
    if value is None or value != value.to_integral_value() or abs(value) > 2**64:
        raise bad_request(f"{name} {text!r} must be an integer {low}..{high}")
    value = int(value)
    if not low <= value <= high:
        raise invalid(f"{name} {value} is out of range {low}..{high}")
    return value


def pod_id_param(text: str) -> int:
    return int_param(text, "pod id", 0, MAX_POD_ID)


def pod_ref_param(text: str) -> PodRef:
    """A pod in a path or query: its name (it starts with a letter) or else its id."""
    if POD_NAME.matches(text):
        return text
    if text[:1].isascii() and text[:1].isalpha():         # meant as a name, but not one
        check_schema(text, "PodName", "pod name")
    return pod_id_param(text)


def port_id_param(text: str) -> int:
    return int_param(text, "port id", 1, MAX_PORT_ID)


def host_id_param(text: str) -> str:
    check_schema(text, "HostId", "host id")
    return text


def operator_name_param(text: str) -> str:
    check_schema(text, "OperatorName", "operator name")
    return text


def bool_param(text: str, name: str) -> bool:
    value = text.lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no", ""):
        return False
    raise bad_request(f"{name} {text!r} must be true or false")


def digest_param(value: str, name: str) -> str:
    """A desired state's digest (flows/desired_delta.py, contract.STATE_DIGEST)."""
    if not contract.STATE_DIGEST.matches(value):
        raise bad_request(f"{name} {value[:40]!r} must be a desired state's digest "
                          f"({contract.STATE_DIGEST.hint})")
    return value


def query(params: Mapping[str, str], allowed: Collection[str]) -> dict[str, str]:
    """Query parameters as a dict; unknown or repeated names are a 400."""
    out: dict[str, str] = {}
    for key, value in params.items():
        if key not in allowed:
            names = ", ".join(sorted(allowed)) or "none"
            raise bad_request(f"unknown query parameter {key!r} (allowed: {names})")
        if key in out:
            raise bad_request(f"query parameter {key!r} is given twice")
        out[key] = value
    return out



def _port_address(text: str, where: str) -> None:
    if text.lower() != DHCP:
        ipv4_interface(text, where)


# What words a refusal when a value breaks its documented pattern (schema.py `x-explain`).
EXPLAINERS: dict[str, schema.Explainer] = {
    "ipv4_address": ipv4_address,
    "subnet": subnet,
    "port_address": _port_address,
    "lease": ipv4_interface,
}
