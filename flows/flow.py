"""The `Flow` value, its actions, its canonical text and its cookie.

A flow is (table, priority, match, actions, cookie), all plain hashable data:

- `match` is a tuple of `(field, value)` pairs in a fixed field order, with OXM field names
  as os-ken spells them (`eth_dst`, `ipv4_src`, `tunnel_id`, ...). A masked value is a
  `(value, mask)` tuple. `vlan_vid` carries OFPVID_PRESENT (0x1000), as in OXM.
- `actions` is a tuple of small tuples, applied in order. `write_metadata` and `goto` are
  OpenFlow instructions and may only come last (in that order). An empty tuple drops.

The canonical text of a flow is its `ovs-ofctl` form without the cookie; the cookie is

    bits 63..56  marker 0x4C ("L"): every Loris flow, and only Loris flows
    bits 55..52  kind of the object the flow belongs to (Kind)
    bits 51..28  object id (port id, pod id, tunnel ofport, 0 for the host's base)
    bits 27..0   crc32 of the canonical text, so a changed flow has a changed cookie

so comparing the switch's cookie set with the desired cookie set finds stale and missing
flows without parsing matches (docs/pipeline.md).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from enum import IntEnum

__all__ = ["Flow", "Kind", "make_flow", "flow_text", "ofctl_text", "cookie_of", "parse_cookie",
           "LORIS_MARKER", "LORIS_COOKIE", "LORIS_COOKIE_MASK", "OBJECT_COOKIE_MASK",
           "IN_PORT", "CONTROLLER", "NO_BUFFER", "VID_PRESENT", "MULTICAST", "UNICAST",
           "output", "to_controller", "push_vlan", "pop_vlan", "set_field", "move",
           "write_metadata", "goto", "resubmit"]

LORIS_MARKER = 0x4C
LORIS_COOKIE = LORIS_MARKER << 56
LORIS_COOKIE_MASK = 0xFF << 56                      # "is this a Loris flow?"
OBJECT_COOKIE_MASK = (1 << 64) - (1 << 28)           # marker + kind + object id
DIGEST_BITS = 28

IN_PORT = 0xFFFFFFF8        # OFPP_IN_PORT: send back out the ingress port
CONTROLLER = 0xFFFFFFFD     # OFPP_CONTROLLER
NO_BUFFER = 0xFFFF          # OFPCML_NO_BUFFER: the whole packet goes to the controller
VID_PRESENT = 0x1000        # OFPVID_PRESENT
BROADCAST = "ff:ff:ff:ff:ff:ff"
MULTICAST = ("01:00:00:00:00:00", "01:00:00:00:00:00")    # eth_dst mask: group bit set
UNICAST = ("00:00:00:00:00:00", "01:00:00:00:00:00")      # eth_dst mask: group bit clear


class Kind(IntEnum):
    """What a flow belongs to; the object id beside it in the cookie says which one."""
    BASE = 1      # the host's own pipeline (table defaults, patch classification); id 0
    TUNNEL = 2    # classification of one tunnel port on br-tun; id = its ofport
    POD = 3       # one pod on one host (VLAN mapping, flood lists, DHCP server); id = pod id
    PORT = 4      # one local container port (port security, delivery, DHCP); id = port id
    MEMBER = 5    # one pod member as seen by every host of the pod (ARP answer, unicast
    #               towards its host); id = port id


# Match fields in canonical order: OXM name (os-ken) -> ovs-ofctl name.
FIELDS = {
    "in_port": "in_port", "metadata": "metadata", "tunnel_id": "tun_id",
    "eth_src": "dl_src", "eth_dst": "dl_dst", "vlan_vid": "dl_vlan", "eth_type": "dl_type",
    "ip_proto": "nw_proto", "ipv4_src": "nw_src", "ipv4_dst": "nw_dst",
    "udp_src": "tp_src", "udp_dst": "tp_dst",
    "arp_op": "arp_op", "arp_spa": "arp_spa", "arp_tpa": "arp_tpa",
    "arp_sha": "arp_sha", "arp_tha": "arp_tha",
}
_ORDER = {name: i for i, name in enumerate(FIELDS)}
_HEX_FIELDS = {"metadata", "tunnel_id", "eth_type"}
# NXM names for `move`, which ovs-ofctl wants in this form.
NXM = {"eth_src": "NXM_OF_ETH_SRC", "eth_dst": "NXM_OF_ETH_DST",
       "arp_sha": "NXM_NX_ARP_SHA", "arp_tha": "NXM_NX_ARP_THA",
       "arp_spa": "NXM_OF_ARP_SPA", "arp_tpa": "NXM_OF_ARP_TPA"}
_SET_FIELD_NAMES = {"tunnel_id": "tun_id"}           # others keep their OXM name in ovs-ofctl


# ---- actions: tuples whose first element names the action ---------------------------------

def output(port: int) -> tuple:
    return ("output", port)


def to_controller(max_len: int = NO_BUFFER) -> tuple:
    return ("controller", max_len)


def push_vlan(ethertype: int = 0x8100) -> tuple:
    return ("push_vlan", ethertype)


def pop_vlan() -> tuple:
    return ("pop_vlan",)


def set_field(name: str, value: int | str) -> tuple:
    return ("set_field", name, value)


def move(src: str, dst: str, n_bits: int) -> tuple:
    return ("move", src, dst, n_bits)


def write_metadata(value: int, mask: int = (1 << 64) - 1) -> tuple:
    return ("write_metadata", value, mask)


def goto(table: int) -> tuple:
    return ("goto", table)


def resubmit(table: int) -> tuple:
    return ("resubmit", table)


_INSTRUCTIONS = ("write_metadata", "goto")


@dataclass(frozen=True, slots=True)
class Flow:
    """One OpenFlow 1.3 flow. Build it with `make_flow` so match order and cookie are canonical."""
    table: int
    priority: int
    match: tuple[tuple[str, object], ...]
    actions: tuple[tuple, ...]
    cookie: int

    @property
    def key(self) -> tuple:
        """What OpenFlow identifies a flow by: an ADD with the same key replaces it."""
        return (self.table, self.priority, self.match)

    @property
    def kind(self) -> Kind:
        return Kind((self.cookie >> 52) & 0xF)

    @property
    def object_id(self) -> int:
        return (self.cookie >> 28) & 0xFFFFFF

    def __str__(self) -> str:
        return ofctl_text(self)


def make_flow(table: int, priority: int, match: dict[str, object], actions: list | tuple,
              kind: Kind, object_id: int) -> Flow:
    """A flow with its match in canonical field order and its cookie computed."""
    items = tuple(sorted(match.items(), key=lambda kv: _ORDER[kv[0]]))
    acts = tuple(actions)
    _check_instruction_order(acts)
    text = _text(table, priority, items, acts)
    return Flow(table, priority, items, acts, cookie_of(kind, object_id, text))


def cookie_of(kind: Kind, object_id: int, text: str) -> int:
    if not 0 <= object_id < 1 << 24:
        raise ValueError(f"cookie object id {object_id} does not fit in 24 bits")
    digest = zlib.crc32(text.encode()) & ((1 << DIGEST_BITS) - 1)
    return LORIS_COOKIE | (int(kind) << 52) | (object_id << 28) | digest


def parse_cookie(cookie: int) -> tuple[Kind, int, int] | None:
    """(kind, object id, digest) of a Loris cookie, or None for anyone else's cookie."""
    if cookie & LORIS_COOKIE_MASK != LORIS_COOKIE:
        return None
    try:
        kind = Kind((cookie >> 52) & 0xF)
    except ValueError:
        return None
    return kind, (cookie >> 28) & 0xFFFFFF, cookie & ((1 << DIGEST_BITS) - 1)


def flow_text(flow: Flow) -> str:
    """The canonical text: `ovs-ofctl` syntax, without the cookie."""
    return _text(flow.table, flow.priority, flow.match, flow.actions)


def _check_instruction_order(actions: tuple) -> None:
    names = [a[0] for a in actions]
    tail = [n for n in names if n in _INSTRUCTIONS]
    if tail and (names[-len(tail):] != tail or tail not in (["goto"], ["write_metadata"],
                                                            ["write_metadata", "goto"])):
        raise ValueError(f"write_metadata/goto must end the action list, in that order: {names}")


def _text(table: int, priority: int, match: tuple, actions: tuple, cookie: str = "") -> str:
    parts = [f"table={table}", f"priority={priority}"] + ([cookie] if cookie else [])
    parts += [_match_text(name, value) for name, value in match]
    acts = ",".join(_action_text(a) for a in actions) or "drop"
    return ",".join(parts) + " actions=" + acts


def ofctl_text(flow: Flow) -> str:
    """The `ovs-ofctl add-flows` line: canonical text with the cookie after the priority."""
    return _text(flow.table, flow.priority, flow.match, flow.actions, f"cookie={flow.cookie:#x}")


def _value_text(name: str, value: object) -> str:
    if name == "vlan_vid":
        return str(int(value) & 0xFFF)
    if name in _HEX_FIELDS:
        return f"{value:#x}"
    return str(value)


def _match_text(name: str, value: object) -> str:
    # a field Loris never matches on (a foreign flow's, read from a switch) keeps its OXM name
    text = FIELDS.get(name, name)
    if isinstance(value, tuple):
        v, m = value
        return f"{text}={_value_text(name, v)}/{_value_text(name, m)}"
    return f"{text}={_value_text(name, value)}"


def _action_text(action: tuple) -> str:
    op = action[0]
    if op == "output":
        return "IN_PORT" if action[1] == IN_PORT else f"output:{action[1]}"
    if op == "controller":
        return f"CONTROLLER:{action[1]}"
    if op == "push_vlan":
        return f"push_vlan:{action[1]:#x}"
    if op == "pop_vlan":
        return "pop_vlan"
    if op == "set_field":
        name, value = action[1], action[2]
        shown = f"{value:#x}" if name == "tunnel_id" else str(value)   # vlan_vid: 0x1000|vid
        return f"set_field:{shown}->{_SET_FIELD_NAMES.get(name, name)}"
    if op == "move":
        return f"move:{NXM.get(action[1], action[1])}[]->{NXM.get(action[2], action[2])}[]"
    if op == "write_metadata":
        mask = action[2]
        return f"write_metadata:{action[1]:#x}" + ("" if mask == (1 << 64) - 1 else f"/{mask:#x}")
    if op == "goto":
        return f"goto_table:{action[1]}"
    if op == "resubmit":
        return f"resubmit(,{action[1]})"
    if op == "unsupported":           # read from a switch, not modelled (flowdump)
        return f"<{action[1]}>"
    raise ValueError(f"unknown action {action!r}")
