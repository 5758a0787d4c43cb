"""The rules the parts of Loris must agree on, written once (docs/design.md).

The controller, the host agent, the CLI, the lab and the benchmarks import these; none of
them writes a pattern, a name, a formula or a range of its own. Pure: stdlib only, no I/O.

Patterns are matched whole (`re.fullmatch`, ASCII only): a trailing newline, a NUL or a
non-ASCII digit never passes. `Pattern.json` is the same rule as an anchored ECMA-262
regular expression for the OpenAPI document; ECMA's `$` (no multiline flag) matches only
at the very end, like `\\Z` here, so what the document allows is what the server accepts.
"""

from __future__ import annotations

import ipaddress
import re
from collections import namedtuple

__all__ = [
    "Pattern", "HOST_ID", "CONTAINER_REF", "POD_NAME", "MAC", "DPID_TEXT", "IPV4", "IPV4_CIDR",
    "GLOBAL_POD", "GLOBAL_POD_NAME", "default_pod_name", "reserved_pod_id", "pod_name_fits",
    "MAX_POD_ID", "MAX_PORT_ID", "MAX_OFPORT", "MIN_LOCAL_VLAN",
    "MAX_LOCAL_VLAN", "MIN_MTU", "MAX_MTU", "tunnel_key", "pod_of_tunnel_key",
    "INTEGRATION_BRIDGE", "TUNNEL_BRIDGE", "BRIDGES", "PATCH_ON_INT", "PATCH_ON_TUN",
    "dpids", "dpid_hex", "tunnel_port_name", "is_tunnel_port_name", "host_port_name",
    "container_port_temp_name", "port_id_of_host_port", "TUNNEL_TYPES", "TUNNEL_OVERHEAD",
    "container_mtu", "dhcp_server", "LORIS_MARK", "PORT_ALIAS_PREFIX", "EXT_PORT_ID",
    "EXT_CONTAINER", "EXT_CONTAINER_ID", "EXT_POD", "EXT_PEER", "EXT_IFNAME",
    "EXT_ATTACHED_MAC", "DEFAULT_OPENFLOW_PORT", "DEFAULT_API_PORT", "AGENT_RETRY_MAX_S",
    "STATE_DIGEST", "STATE_DIGEST_HEX",
]


class Pattern(namedtuple("Pattern", ["what", "regex", "hint"])):
    """One textual identifier rule: what it names, the regex (unanchored, ASCII), and a hint
    for errors. Immutable. A named tuple rather than a dataclass: the `loris` CLI imports
    this module, and `dataclasses` (which loads `inspect`) is the largest import it would
    otherwise pay for at every start (docs/benchmarks.md)."""

    __slots__ = ()

    def matches(self, value: object) -> bool:
        if not isinstance(value, str):
            return False
        compiled = _COMPILED.get(self.regex)
        if compiled is None:
            compiled = _COMPILED[self.regex] = re.compile(self.regex, re.ASCII)
        return compiled.fullmatch(value) is not None

    @property
    def json(self) -> str:
        """The rule for a JSON Schema `pattern` (ECMA-262; `$` is end of input there)."""
        return f"^(?:{self.regex})$"

    def error(self, value: object) -> str:
        return f"{self.what} {value!r} is not valid: {self.hint}"


_COMPILED: dict[str, re.Pattern] = {}   # Pattern.regex -> its compiled form

HOST_ID = Pattern(
    "host id", r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}",
    "a host id is 1-63 characters of letters, digits, '_', '.', '-', starting with a "
    "letter or digit")
CONTAINER_REF = Pattern(
    "container", r"(?:netns:)?[A-Za-z0-9][A-Za-z0-9_.-]{0,127}",
    "a container is a Docker name or id, or netns:NAME for a plain network namespace: "
    "letters, digits, '_', '.', '-', at most 128")
# A pod name starts with a letter, so it can never be read as a pod id (ids are decimal and
# the REST API also reads "7.0" and "7e0" as 7): wherever a pod is named, a number is its
# id and anything else its name.
POD_NAME = Pattern(
    "pod name", r"[A-Za-z][A-Za-z0-9_.-]{0,62}",
    "a pod name is 1-63 letters, digits, '_', '.', '-', starting with a letter (a number "
    "names a pod by its id)")
MAC = Pattern(
    "MAC", r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}",
    "a MAC address is six colon-separated hex bytes, e.g. 02:42:0a:07:00:05")
DPID_TEXT = Pattern(
    "datapath id", r"0x[0-9a-fA-F]{1,16}", "a datapath id is '0x' and 1-16 hex digits")
# credentials (docs/security.md): an operator's name follows the host id's rule; a switch
# certificate is named by the SHA-256 of its DER bytes, as 64 lowercase hex digits
OPERATOR_NAME = Pattern(
    "operator name", HOST_ID.regex,
    "an operator name is 1-63 characters of letters, digits, '_', '.', '-', starting with a "
    "letter or digit")
CERT_SHA256 = Pattern(
    "certificate fingerprint", r"[0-9a-f]{64}",
    "a certificate fingerprint is the SHA-256 of its DER bytes as 64 lowercase hex digits")
# a desired state's digest (flows/desired_delta.py): the agent's `have`, the answer's `digest`
STATE_DIGEST_HEX = 32
STATE_DIGEST = Pattern(
    "desired state digest", rf"[0-9a-f]{{{STATE_DIGEST_HEX}}}",
    f"a desired state's digest is {STATE_DIGEST_HEX} lowercase hex digits, as the last "
    "answer's 'digest'")
AUDIT_OBJECT = Pattern(
    "object", r"[a-z]+(?::[\x21-\x7e]{1,200})?",
    "an object of the audit trail is KIND:ID (e.g. port:12, host:h2, pod:7, operator:alice) "
    "or a kind alone (port)")

# ---- numbers ---------------------------------------------------------------------------
GLOBAL_POD = 0                    # the pod of a connect that names none
MAX_POD_ID = 2**24 - 2            # tunnel key = pod id + 1 must fit in 24 bits, and is never 0
MAX_PORT_ID = 2**24 - 1           # the flow cookie carries a 24-bit object id
MAX_OFPORT = 0xFEFF               # OVS assigns ofports below 0xff00 (OFPP_MAX in OpenFlow 1.0)
MIN_LOCAL_VLAN, MAX_LOCAL_VLAN = 1, 4094
MIN_MTU, MAX_MTU = 68, 65535


def tunnel_key(pod_id: int) -> int:
    """The VNI / GRE key of a pod; key 0 is never used."""
    return pod_id + 1


def pod_of_tunnel_key(key: int) -> int:
    return key - 1


# ---- pod names ------------------------------------------------------------------------
GLOBAL_POD_NAME = "global"
_DEFAULT_POD_NAME = re.compile(r"pod-([0-9]+)", re.ASCII)


def default_pod_name(pod_id: int) -> str:
    """The name of a pod made without one (by a connect to its number, or POST /v1/pods
    with only an id): `pod-7`. Names of this form are reserved for the pod of that id."""
    return f"pod-{pod_id}"


def reserved_pod_id(name: str) -> int | None:
    """The id a name of the form `pod-<digits>` is reserved for, or None for a name anyone
    may take. Only the pod of that id may carry such a name, and only spelled as
    `default_pod_name(id)` (`pod-07` fits no pod), so a default name never clashes."""
    m = _DEFAULT_POD_NAME.fullmatch(name)
    return int(m.group(1)) if m else None


def pod_name_fits(name: str, pod_id: int) -> bool:
    """Whether pod `pod_id` may be called `name` (the reserved names, above)."""
    reserved = reserved_pod_id(name)
    return reserved is None or name == default_pod_name(pod_id)


# ---- bridges, ports and datapath ids on a host -----------------------------------------
INTEGRATION_BRIDGE = "br-int"
TUNNEL_BRIDGE = "br-tun"
BRIDGES = (INTEGRATION_BRIDGE, TUNNEL_BRIDGE)
PATCH_ON_INT = "patch-tun"        # lives on br-int, peers with patch-int
PATCH_ON_TUN = "patch-int"        # lives on br-tun, peers with patch-tun
_DPID_KIND = {INTEGRATION_BRIDGE: 0x0001, TUNNEL_BRIDGE: 0x0002}
_TUNNEL_PORT = re.compile(r"lt-[0-9a-f]{8}", re.ASCII)
_HOST_PORT = re.compile(r"lp([1-9][0-9]{0,7})", re.ASCII)


def dpids(host_id: str) -> dict[str, int]:
    """The fixed datapath ids of a host's bridges: bridge kind << 48 | 48 bits of
    sha256(host id). The agent sets them; the controller and TLS checks derive the same."""
    import hashlib  # here: its OpenSSL bindings cost every importer's start-up ~6 ms

    h48 = int(hashlib.sha256(host_id.encode()).hexdigest()[:12], 16)
    return {bridge: (kind << 48) | h48 for bridge, kind in _DPID_KIND.items()}


def dpid_hex(dpid: int) -> str:
    """16 hex digits, the form of other-config:datapath-id."""
    return f"{dpid:016x}"


def tunnel_port_name(peer_ip: str) -> str:
    """`lt-` + the peer's tunnel IPv4 as 8 hex digits, e.g. 198.18.0.12 -> lt-c612000c."""
    return "lt-" + f"{int(ipaddress.IPv4Address(peer_ip)):08x}"


def is_tunnel_port_name(name: str) -> bool:
    return _TUNNEL_PORT.fullmatch(name) is not None


def host_port_name(port_id: int) -> str:
    """Host-side veth (and OVS port) of a container port: `lp42`."""
    return f"lp{port_id}"


def container_port_temp_name(port_id: int) -> str:
    """Container-side veth end before it is moved and renamed: `lc42`."""
    return f"lc{port_id}"


def port_id_of_host_port(name: str) -> int | None:
    m = _HOST_PORT.fullmatch(name)
    return int(m.group(1)) if m else None


# ---- tunnels and MTU --------------------------------------------------------------------
TUNNEL_TYPES = ("vxlan", "gre")
# Encapsulation overhead over IPv4: outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14,
# or outer IP 20 + GRE with key 8 + inner Ethernet 14.
TUNNEL_OVERHEAD = {"vxlan": 50, "gre": 42}


def container_mtu(underlay_mtu: int, tunnel_type: str) -> int:
    return underlay_mtu - TUNNEL_OVERHEAD[tunnel_type]


# ---- the controller's DHCP responder in a pod --------------------------------------------
def dhcp_server(pod_id: int, subnet: ipaddress.IPv4Network | str | None
                ) -> tuple[str, str] | None:
    """(ip, mac) the DHCP responder answers as in a pod with a subnet: the subnet's first
    usable address (never given to a port) and `0a:4c:` + the tunnel key as 4 bytes
    (locally administered). None for a pod without a subnet."""
    if subnet is None:
        return None
    net = ipaddress.IPv4Network(subnet, strict=False)
    key = tunnel_key(pod_id).to_bytes(4, "big")
    return str(net.network_address + 1), "0a:4c:" + ":".join(f"{b:02x}" for b in key)


# ---- what marks OVS rows and links as Loris's ---------------------------------------------
LORIS_MARK = ("loris", "1")       # external_ids on every bridge, port and controller we make
PORT_ALIAS_PREFIX = "loris port "  # ifalias of a host-side veth: how cleanup knows it is ours
EXT_PORT_ID = "loris-port-id"     # external_ids of a container's OVS Interface
EXT_CONTAINER = "loris-container"
EXT_CONTAINER_ID = "loris-container-id"
EXT_POD = "loris-pod"
EXT_IFNAME = "loris-ifname"
EXT_ATTACHED_MAC = "attached-mac"
EXT_PEER = "loris-peer"           # external_ids of a tunnel port: the peer host id

DEFAULT_OPENFLOW_PORT = 6653
DEFAULT_API_PORT = 8780
# An agent that cannot get through to a controller (refused, 503) tries again at least this
# often: the controller judges an agent away after `agent_away_polls` poll intervals of
# silence, which must be longer, or an agent back from an outage would be refused as away.
AGENT_RETRY_MAX_S = 2.0

# ---- addresses as text (the REST API's formats) --------------------------------------------
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4 = Pattern("IPv4 address", rf"{_OCTET}(?:\.{_OCTET}){{3}}",
               "an IPv4 address is four decimal numbers 0-255 without leading zeros, "
               "e.g. 198.18.0.11")
IPV4_CIDR = Pattern("IPv4 address with prefix", rf"{IPV4.regex}/(?:3[0-2]|[12]?[0-9])",
                    "an address with its prefix length, e.g. 198.18.135.5/24")
