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

`make_flow` builds any flow; `Shape` builds many flows of one form (a pod's ARP answers, its
unicast rules towards one host: 20,000 of each for a pod of 20,000) from a template made
once, where only a few values differ: the same `Flow`, cookie included, at a fraction of
the cost (`tests/unit/test_flows_identity.py` compares both on a large topology).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from enum import IntEnum

from flows import ofwire

__all__ = ["Flow", "Kind", "make_flow", "flow_text", "ofctl_text", "cookie_of", "parse_cookie",
           "LORIS_MARKER", "LORIS_COOKIE", "LORIS_COOKIE_MASK", "OBJECT_COOKIE_MASK",
           "IN_PORT", "CONTROLLER", "NO_BUFFER", "VID_PRESENT", "MULTICAST", "UNICAST",
           "output", "to_controller", "push_vlan", "pop_vlan", "set_field", "move",
           "write_metadata", "goto", "resubmit", "Shape", "Hole"]

LORIS_MARKER = 0x4C
LORIS_COOKIE = LORIS_MARKER << 56
LORIS_COOKIE_MASK = 0xFF << 56                      # "is this a Loris flow?"
OBJECT_COOKIE_MASK = (1 << 64) - (1 << 28)           # marker + kind + object id
DIGEST_BITS = 28
_DIGEST_MASK = (1 << DIGEST_BITS) - 1

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
    # (the Shape that made it, its values): lets flows/ofwire.py encode it from the shape's
    # template. Not part of what the flow is (equality, hash, text).
    origin: tuple | None = field(default=None, compare=False, repr=False)

    def __hash__(self) -> int:
        # The cookie carries a digest of the whole text (match and actions included), so
        # hashing the match and the actions again (tuples of tuples, rehashed at every set
        # or dict look-up) would cost much and separate little. A foreign flow read from a
        # switch may share its cookie with many others: it hashes its match too.
        if self.cookie & LORIS_COOKIE_MASK == LORIS_COOKIE:
            return hash((self.table, self.priority, self.cookie))
        return hash((self.table, self.priority, self.cookie, self.match))

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


class Hole:
    """Stands for the `index`-th value given to a `Shape` when it makes a flow."""
    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __str__(self) -> str:        # where it stands in the template's text (`_format_of`)
        return f"\0{self.index}\0"


class Shape:
    """Flows of one form: `make_flow`'s arguments with `Hole`s for the values that differ
    from flow to flow, which are filled in by position:

        answer = Shape(INT_ARP, 100, {"arp_tpa": Hole(0), ...}, [set_field("eth_src",
                       Hole(1)), ...], Kind.MEMBER)
        answer(port_id, "10.0.0.5", "02:00:00:00:00:05")   # == make_flow(..., port_id)

    A hole may stand where the canonical text shows the value as `str(value)`: a match
    field written in decimal or as an address (not `metadata`, `tun_id`, `dl_type` or
    `dl_vlan`), or the value of a `set_field` other than `tunnel_id`; a hole anywhere else
    is refused when the shape is made. The text is one `str.format` and the flow's parts
    are copied from the template with the values put in."""

    __slots__ = ("table", "priority", "kind", "_match", "_match_holes", "_actions",
                 "_action_holes", "_text", "_tag", "_wire")

    def __init__(self, table: int, priority: int, match: dict[str, object],
                 actions: list | tuple, kind: Kind) -> None:
        items = tuple(sorted(match.items(), key=lambda kv: _ORDER[kv[0]]))
        acts = tuple(actions)
        _check_instruction_order(acts)
        self.table, self.priority, self.kind = table, priority, kind
        self._match = items
        self._match_holes = tuple((i, name, v.index) for i, (name, v) in enumerate(items)
                                  if isinstance(v, Hole))
        for _, name, _ in self._match_holes:
            if name not in FIELDS or name in _HEX_FIELDS or name == "vlan_vid":
                raise ValueError(f"Shape: field {name} cannot be a hole (its text is not "
                                 "the value as written)")
        self._actions = acts
        self._action_holes = []
        for i, action in enumerate(acts):
            slots = tuple((j, v.index) for j, v in enumerate(action) if isinstance(v, Hole))
            if slots and (action[0] != "set_field" or action[1] == "tunnel_id"
                          or slots != ((2, slots[0][1]),)):
                raise ValueError(f"Shape: a hole in {action!r}: only a set_field value "
                                 "(not tunnel_id) can be one")
            if slots:
                self._action_holes.append((i, action[0], action[1], slots[0][1]))
        self._action_holes = tuple(self._action_holes)
        text = _text(table, priority, items, acts)
        if text.count("\0") != 2 * (len(self._match_holes) + len(self._action_holes)):
            raise ValueError("Shape: a hole inside a masked value or an action's other "
                             "argument; give those as plain values")
        self._text = _format_of(text)
        self._tag = LORIS_COOKIE | (int(kind) << 52)
        self._wire: ofwire.AddTemplate | None | bool = False     # False: not made yet

    def __call__(self, object_id: int, *values: object) -> Flow:
        match = self._match
        if self._match_holes:
            match = list(match)
            for i, name, index in self._match_holes:
                match[i] = (name, values[index])
            match = tuple(match)
        actions = self._actions
        if self._action_holes:
            actions = list(actions)
            for i, op, name, index in self._action_holes:
                actions[i] = (op, name, values[index])
            actions = tuple(actions)
        if not 0 <= object_id < 1 << 24:
            raise ValueError(f"cookie object id {object_id} does not fit in 24 bits")
        digest = zlib.crc32(self._text.format(*values).encode()) & _DIGEST_MASK
        return Flow(self.table, self.priority, match, actions,
                    self._tag | (object_id << 28) | digest, (self, values))

    def add_bytes(self, cookie: int, values: tuple) -> bytes | None:
        """The OFPFC_ADD of the flow made with `values` (flows/ofwire.py), from a template
        laid out at the first call; None if it cannot be (the flow is then encoded field by
        field)."""
        if self._wire is False:
            self._wire = ofwire.AddTemplate.make(
                self.table, self.priority, self._match, self._actions,
                {i: index for i, _name, index in self._match_holes},
                {i: index for i, _op, _name, index in self._action_holes})
        return None if self._wire is None else self._wire.encode(cookie, values)


def _format_of(text: str) -> str:
    """A `str.format` string from a text where holes show as NUL<index>NUL: every other
    brace doubled, each hole "{index}"."""
    pieces = text.split("\0")
    return "".join(p.replace("{", "{{").replace("}", "}}") if i % 2 == 0 else "{" + p + "}"
                   for i, p in enumerate(pieces))


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
