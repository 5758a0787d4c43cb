"""OpenFlow 1.3 FLOW_MOD bytes of a `Flow`, encoded directly with `struct`. Pure, stdlib only.

The controller pushes tens of thousands of flows to a switch that has never had them (a
host joining a big pod, a controller restart): building an os-ken OFPFlowMod per flow and
serializing it costs ~0.15 ms a flow, several times what `ovs-ofctl` needs to write the same
flows. Loris's flows use few match fields and actions (flows/flow.py), so they are encoded
here in a few microseconds each, byte for byte as os-ken serializes them
(`tests/unit/test_ofwire.py` compares both for every flow shape the pipeline makes and for
each field and action).

`flowmod(flow, command="add", xid=0) -> bytes | None`: an OFPT_FLOW_MOD for "add" (install or
replace) or "delete_strict" (this flow only: its cookie under a full mask, out_port and
out_group ANY), exactly what `flows.render.to_flowmod` builds. None when the flow holds a
field, a value or an action this encoder does not know: the caller then falls back to
os-ken's classes (`to_flowmod` + serialize), so an unusual flow costs time, never
correctness.

`AddTemplate`: the OFPFC_ADD of flows of one form (a `flows.Shape`: the 20,000 ARP answers
of a big pod) laid out once, with the bytes of each flow's own values (an address, a port)
and its cookie put in their places: a few microseconds a flow instead of ~20. A flow made by
a shape is encoded through it (`flowmod`); `tests/unit/test_ofwire.py` checks it gives the
same bytes as the flow encoded field by field.
"""

from __future__ import annotations

import socket
import struct

__all__ = ["flowmod", "AddTemplate", "FIELDS", "COMMANDS"]

OFP_VERSION = 0x04
OFPT_FLOW_MOD = 14
COMMANDS = {"add": 0, "delete_strict": 4}          # OFPFC_ADD, OFPFC_DELETE_STRICT
FULL_MASK = (1 << 64) - 1
OFP_NO_BUFFER = 0xFFFFFFFF
OFPP_ANY = 0xFFFFFFFF
OFPG_ANY = 0xFFFFFFFF
OFPP_IN_PORT = 0xFFFFFFF8
OFPP_CONTROLLER = 0xFFFFFFFD
OFPCML_MAX = 0xFFE5            # os-ken's default max_len of an output action
OFPXMC_OPENFLOW_BASIC = 0x8000
NX_VENDOR_ID = 0x00002320
NXAST_REG_MOVE = 6
NXAST_RESUBMIT_TABLE = 14

# OXM OpenFlow-basic fields Loris matches and sets: name -> (field number, kind, bytes).
# kind: "int" (big-endian), "mac" (aa:bb:cc:dd:ee:ff), "ipv4" (dotted quad).
FIELDS: dict[str, tuple[int, str, int]] = {
    "in_port": (0, "int", 4), "metadata": (2, "int", 8), "eth_dst": (3, "mac", 6),
    "eth_src": (4, "mac", 6), "eth_type": (5, "int", 2), "vlan_vid": (6, "int", 2),
    "ip_proto": (10, "int", 1), "ipv4_src": (11, "ipv4", 4), "ipv4_dst": (12, "ipv4", 4),
    "udp_src": (15, "int", 2), "udp_dst": (16, "int", 2), "arp_op": (21, "int", 2),
    "arp_spa": (22, "ipv4", 4), "arp_tpa": (23, "ipv4", 4), "arp_sha": (24, "mac", 6),
    "arp_tha": (25, "mac", 6), "tunnel_id": (38, "int", 8),
}

_HEADER = struct.Struct("!BBHI")                    # ofp_header
_FLOW_MOD = struct.Struct("!QQBBHHHIIIH2x")         # ofp_flow_mod after the header
_HH = struct.Struct("!HH")
_I = struct.Struct("!I")
_OUTPUT = struct.Struct("!HHIH6x")                  # OFPAT_OUTPUT
_PUSH_VLAN = struct.Struct("!HHH2x")                # OFPAT_PUSH_VLAN
_POP_VLAN = b"\x00\x12\x00\x08\x00\x00\x00\x00"     # OFPAT_POP_VLAN
_REG_MOVE = struct.Struct("!HHIHHHHII")             # NXAST_REG_MOVE
_RESUBMIT = struct.Struct("!HHIHHB3x")              # NXAST_RESUBMIT_TABLE
_GOTO = struct.Struct("!HHB3x")                     # OFPIT_GOTO_TABLE
_WRITE_METADATA = struct.Struct("!HH4xQQ")          # OFPIT_WRITE_METADATA
_APPLY_HEAD = struct.Struct("!HH4x")                # OFPIT_APPLY_ACTIONS

# (field, value) -> (field number, OXM TLV), action -> its bytes: the same few values and
# actions recur in every flow of a host. Bounded: emptied when full.
_oxm_cache: dict[tuple[str, object], tuple[int, bytes]] = {}
_action_cache: dict[tuple, bytes] = {}
_OXM_CACHE_MAX = 100_000


class Unsupported(ValueError):
    """A field, value or action the encoder does not know (the caller uses os-ken)."""


def flowmod(flow: object, command: str = "add", xid: int = 0) -> bytes | None:
    """The OFPT_FLOW_MOD of `flow` (a flows.Flow) as os-ken serializes it, or None when the
    flow needs something this encoder does not know."""
    origin = getattr(flow, "origin", None)
    if origin is not None and command == "add" and xid == 0:
        data = origin[0].add_bytes(flow.cookie, origin[1])
        if data is not None:
            return data
    try:
        code = COMMANDS[command]
        match = _match(flow.match)                               # type: ignore[attr-defined]
        if code == 0:
            instructions = _instructions(flow.actions)           # type: ignore[attr-defined]
            cookie_mask = 0
        else:
            instructions = b""
            cookie_mask = FULL_MASK
        body = _FLOW_MOD.pack(flow.cookie, cookie_mask, flow.table, code,  # type: ignore
                              0, 0, flow.priority, OFP_NO_BUFFER,  # type: ignore
                              OFPP_ANY, OFPG_ANY, 0)
    except (Unsupported, KeyError, struct.error, TypeError, ValueError, OverflowError,
            OSError):
        return None
    length = _HEADER.size + len(body) + len(match) + len(instructions)
    return _HEADER.pack(OFP_VERSION, OFPT_FLOW_MOD, length, xid) + body + match + instructions


def _match(items: tuple) -> bytes:
    # os-ken orders the fields by OXM field number (prerequisites before what needs them)
    entries = []
    for name, value in items:
        address = _ADDRESSES.get(name)
        if address is not None and type(value) is str:
            entries.append((address[0], address[1] + address[2](value, address[3])))
        else:
            entries.append(_oxm(name, value))
    oxms = b"".join([oxm for _number, oxm in sorted(entries)])
    length = 4 + len(oxms)
    return _HH.pack(1, length) + oxms + bytes(-length % 8)      # OFPMT_OXM, padded to 8


def _oxm(name: str, value: object) -> tuple[int, bytes]:
    """(field number, OXM TLV) of a match or set_field entry; cached, as the same few values
    (metadata, ports, ethertypes) recur in every flow of a host."""
    key = (name, value)
    entry = _oxm_cache.get(key)
    if entry is None:
        entry = _encode_oxm(name, value)
        if len(_oxm_cache) >= _OXM_CACHE_MAX:
            _oxm_cache.clear()
        _oxm_cache[key] = entry
    return entry


def _encode_oxm(name: str, value: object) -> tuple[int, bytes]:
    spec = FIELDS.get(name)
    if spec is None:
        raise Unsupported(f"field {name!r}")
    number, kind, size = spec
    encode = _ENCODERS[kind]
    if type(value) is tuple:
        if len(value) != 2:
            raise Unsupported(f"{name} value {value!r}")
        data, mask = encode(value[0], size), encode(value[1], size)
        # as os-ken sends it: the value under its mask
        payload = bytes(d & m for d, m in zip(data, mask, strict=True)) + mask
        header = (OFPXMC_OPENFLOW_BASIC << 16) | (number << 9) | 0x100 | (2 * size)
    else:
        payload = encode(value, size)
        header = (OFPXMC_OPENFLOW_BASIC << 16) | (number << 9) | size
    return number, _I.pack(header) + payload


def _int(value: object, size: int) -> bytes:
    if type(value) is not int:
        raise Unsupported(f"integer value {value!r}")
    return value.to_bytes(size, "big")        # OverflowError when it does not fit


def _mac(value: object, size: int) -> bytes:
    if type(value) is not str or len(value) != 17 or value[2::3] != ":::::":
        raise Unsupported(f"MAC {value!r}")
    data = bytes.fromhex(value.replace(":", ""))  # ValueError when not hex
    if len(data) != 6:
        raise Unsupported(f"MAC {value!r}")
    return data


def _ipv4(value: object, size: int) -> bytes:
    if type(value) is not str:
        raise Unsupported(f"IPv4 address {value!r}")
    return socket.inet_pton(socket.AF_INET, value)  # strict dotted quad, else OSError


_ENCODERS = {"int": _int, "mac": _mac, "ipv4": _ipv4}

# An address (MAC, IPv4) is mostly one member's own, in its flows only: encoded each time
# instead of cached (a cache of 20,000 members' addresses would hold each once, and evict
# the values that do recur). name -> (field number, OXM header, encoder, size), and for a
# set_field action of it: (action header + OXM header, encoder, size, padding).
_ADDRESSES = {name: (number, _I.pack((OFPXMC_OPENFLOW_BASIC << 16) | (number << 9) | size),
                     _ENCODERS[kind], size)
              for name, (number, kind, size) in FIELDS.items() if kind != "int"}
_SET_ADDRESS = {name: (_HH.pack(25, 8 + size + (-(8 + size) % 8)) + header, encode, size,
                       bytes(-(8 + size) % 8))
                for name, (_number, header, encode, size) in _ADDRESSES.items()}


def _instructions(actions: tuple) -> bytes:
    applied: list[bytes] = []
    tail: list[bytes] = []
    for action in actions:
        if action[0] in _INSTRUCTION_OPS:
            tail.append(_instruction(action))
        else:
            applied.append(_applied(action))
    if not applied:
        return b"".join(tail)
    actions_bytes = b"".join(applied)
    head = _APPLY_HEAD.pack(4, _APPLY_HEAD.size + len(actions_bytes))
    return head + actions_bytes + b"".join(tail)


_INSTRUCTION_OPS = ("write_metadata", "goto")     # instructions; the other ops are actions


def _instruction(action: tuple) -> bytes:
    if action[0] == "write_metadata":
        return _WRITE_METADATA.pack(2, _WRITE_METADATA.size, action[1], action[2])
    return _GOTO.pack(1, _GOTO.size, action[1])


def _applied(action: tuple) -> bytes:
    """An action of the apply-actions instruction: an address set is encoded each time (one
    member's own), any other action once and cached."""
    if action[0] == "set_field" and action[1] in _SET_ADDRESS and type(action[2]) is str:
        head, encode, size, pad = _SET_ADDRESS[action[1]]
        return head + encode(action[2], size) + pad
    data = _action_cache.get(action)
    if data is None:
        data = _action(action)
        if len(_action_cache) >= _OXM_CACHE_MAX:
            _action_cache.clear()
        _action_cache[action] = data
    return data


def _action(action: tuple) -> bytes:
    op = action[0]
    if op == "output":
        return _OUTPUT.pack(0, _OUTPUT.size, action[1], OFPCML_MAX)
    if op == "controller":
        return _OUTPUT.pack(0, _OUTPUT.size, OFPP_CONTROLLER, action[1])
    if op == "push_vlan":
        return _PUSH_VLAN.pack(17, _PUSH_VLAN.size, action[1])
    if op == "pop_vlan":
        return _POP_VLAN
    if op == "set_field":
        if type(action[2]) is tuple:
            raise Unsupported("a masked set_field")
        oxm = _encode_oxm(action[1], action[2])[1]
        length = 4 + len(oxm)
        return _HH.pack(25, length + (-length % 8)) + oxm + bytes(-length % 8)
    if op == "move":
        src, dst = FIELDS.get(action[1]), FIELDS.get(action[2])
        if src is None or dst is None:
            raise Unsupported(f"move {action!r}")
        return _REG_MOVE.pack(0xFFFF, _REG_MOVE.size, NX_VENDOR_ID, NXAST_REG_MOVE,
                              action[3], 0, 0, _oxm_header(src), _oxm_header(dst))
    if op == "resubmit":
        return _RESUBMIT.pack(0xFFFF, _RESUBMIT.size, NX_VENDOR_ID, NXAST_RESUBMIT_TABLE,
                              OFPP_IN_PORT & 0xFFFF, action[1])
    raise Unsupported(f"action {action!r}")


def _oxm_header(spec: tuple[int, str, int]) -> int:
    return (OFPXMC_OPENFLOW_BASIC << 16) | (spec[0] << 9) | spec[2]


class _Value:
    """Where a flow's own value goes in an `AddTemplate`: values[index], encoded."""
    __slots__ = ("index", "encode", "size")

    def __init__(self, index: int, encode, size: int) -> None:
        self.index, self.encode, self.size = index, encode, size


def _width(part: bytes | _Value) -> int:
    return part.size if isinstance(part, _Value) else len(part)


class AddTemplate:
    """The OFPFC_ADD (xid 0) of the flows of one form: table, priority, match and actions
    with the positions of the match fields and set_field values that differ from flow to
    flow, `match_holes` {position in match: index in values} and `action_holes` {position
    in actions: index in values}. A hole may be a match field without a mask, or the value
    of a set_field of an address; `make` returns None for anything else (the flows are then
    encoded one by one)."""

    __slots__ = ("_parts", "_values")

    @classmethod
    def make(cls, table: int, priority: int, match: tuple, actions: tuple,
             match_holes: dict[int, int], action_holes: dict[int, int]) -> AddTemplate | None:
        try:
            return cls(table, priority, match, actions, match_holes, action_holes)
        except (Unsupported, KeyError, struct.error, TypeError, ValueError, OverflowError,
                OSError):
            return None

    def __init__(self, table: int, priority: int, match: tuple, actions: tuple,
                 match_holes: dict[int, int], action_holes: dict[int, int]) -> None:
        entries = []
        for position, (name, value) in enumerate(match):
            index = match_holes.get(position)
            if index is None:
                entries.append((*_oxm(name, value), None))
                continue
            number, kind, size = FIELDS[name]
            header = _I.pack((OFPXMC_OPENFLOW_BASIC << 16) | (number << 9) | size)
            entries.append((number, header, _Value(index, _ENCODERS[kind], size)))
        match_parts: list = []
        length = 4
        for _number, data, value in sorted(entries, key=lambda e: e[0]):
            match_parts.append(data)
            length += len(data)
            if value is not None:
                match_parts.append(value)
                length += value.size
        match_parts = [_HH.pack(1, length), *match_parts, bytes(-length % 8)]
        applied: list = []
        tail: list[bytes] = []
        for position, action in enumerate(actions):
            index = action_holes.get(position)
            if index is None and action[0] in _INSTRUCTION_OPS:
                tail.append(_instruction(action))
                continue
            if index is None:
                applied.append(_applied(action))
                continue
            if action[0] != "set_field" or action[1] not in _SET_ADDRESS:
                raise Unsupported(f"a hole in {action!r}")
            head, encode, size, pad = _SET_ADDRESS[action[1]]
            applied += [head, _Value(index, encode, size), pad]
        if applied:
            applied.insert(0, _APPLY_HEAD.pack(4, _APPLY_HEAD.size + sum(map(_width, applied))))
        rest = [*match_parts, *applied, *tail]
        total = _HEADER.size + _FLOW_MOD.size + sum(map(_width, rest))
        head = _HEADER.pack(OFP_VERSION, OFPT_FLOW_MOD, total, 0)
        body = _FLOW_MOD.pack(0, 0, table, COMMANDS["add"], 0, 0, priority, OFP_NO_BUFFER,
                              OFPP_ANY, OFPG_ANY, 0)
        # constant bytes merged between the values: one slot per value; slot 0 starts with
        # the header and the body, whose cookie each flow puts in
        merged: list = []
        for p in [head + body, *rest]:
            if isinstance(p, bytes) and merged and isinstance(merged[-1], bytes):
                merged[-1] += p
            else:
                merged.append(p)
        self._values = tuple((slot, p) for slot, p in enumerate(merged)
                             if isinstance(p, _Value))
        self._parts = merged

    def encode(self, cookie: int, values: tuple) -> bytes | None:
        """The OFPFC_ADD of the flow with these values and cookie; None if a value does not
        encode (the caller encodes that flow field by field)."""
        parts = list(self._parts)
        try:
            for slot, v in self._values:
                parts[slot] = v.encode(values[v.index], v.size)
        except (Unsupported, ValueError, OSError, OverflowError, IndexError):
            return None
        first, at = parts[0], _HEADER.size          # the body starts with the cookie
        parts[0] = first[:at] + cookie.to_bytes(8, "big") + first[at + 8:]
        return b"".join(parts)
