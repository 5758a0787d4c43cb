"""Flows as a switch reports them (an OpenFlow 1.3 flow-stats reply) turned back into
`flows.Flow` values, with their counters.

The offline tracer (flows/trace.py) and the cookie comparisons work on `Flow`s; a dump gives
os-ken objects (`OFPFlowStats`: an `OFPMatch`, instructions and actions). This module is the
one place that reads those, so `flows/` stays free of os-ken. A dumped Loris flow comes back
as exactly the `Flow` that `flows.host_flows` computed (same match, actions and cookie):
the cookie's digest is the crc32 of the flow's canonical text, so a flow someone changed by
hand (or a conversion that went wrong) shows as `intact == False`.

Actions the pipeline never uses are kept as ("unsupported", what) so that a foreign flow
still shows; the tracer refuses to run through one (it raises TraceError naming it).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flows.flow import (
    FIELDS,
    IN_PORT,
    VID_PRESENT,
    Flow,
    cookie_of,
    flow_text,
    parse_cookie,
)

ONF_EXPERIMENTER_ID = 0x4F4E4600
ONF_COPY_FIELD = 3200            # ONFACT_ET_COPY_FIELD: OVS's "move" in OpenFlow 1.3
_COPY_FIELD = struct.Struct("!H2xHHH2xII")   # exp type, n_bits, src ofs, dst ofs, src, dst
_ORDER = {name: i for i, name in enumerate(FIELDS)}


@dataclass(frozen=True)
class DumpedFlow:
    """One flow of a bridge as the switch holds it."""
    flow: Flow
    packets: int = 0
    bytes: int = 0
    duration: float = 0.0

    @property
    def loris(self) -> bool:
        return parse_cookie(self.flow.cookie) is not None

    @property
    def intact(self) -> bool:
        """A Loris flow whose content is what its cookie was computed from."""
        return is_intact(self.flow)


def is_intact(flow: Flow) -> bool:
    parsed = parse_cookie(flow.cookie)
    if parsed is None or any(a[0] == "unsupported" for a in flow.actions):
        return False
    try:
        return cookie_of(parsed[0], parsed[1], flow_text(flow)) == flow.cookie
    except (KeyError, ValueError, TypeError):
        return False


def from_stats(stats: Iterable[Any], ofp: Any) -> list[DumpedFlow]:
    """`DumpedFlow`s of the `OFPFlowStats` of flow-stats replies; `ofp` is the datapath's
    ofproto module (its constants and OXM helpers)."""
    out = []
    for stat in stats:
        flow = Flow(stat.table_id, stat.priority, match_items(stat.match),
                    actions_of(stat.instructions, ofp), stat.cookie)
        duration = getattr(stat, "duration_sec", 0) + getattr(stat, "duration_nsec", 0) / 1e9
        out.append(DumpedFlow(flow, getattr(stat, "packet_count", 0) or 0,
                              getattr(stat, "byte_count", 0) or 0, duration))
    return out


def match_items(match: Any) -> tuple[tuple[str, object], ...]:
    """An OFPMatch as `Flow.match`: (field, value) pairs in the canonical field order, a
    masked value as (value, mask), MACs in lower case; a mask of all ones is no mask."""
    items = []
    for name, value in match.items():
        if isinstance(value, tuple):
            value = tuple(_plain(name, v) for v in value)
            if _full_mask(value[1]):
                value = value[0]
        else:
            value = _plain(name, value)
        items.append((name, value))
    return tuple(sorted(items, key=lambda kv: (_ORDER.get(kv[0], len(_ORDER)), kv[0])))


def _plain(name: str, value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _full_mask(mask: object) -> bool:
    if isinstance(mask, str):
        return mask.lower() in ("ff:ff:ff:ff:ff:ff", "255.255.255.255")
    return isinstance(mask, int) and mask > 0 and (mask + 1) & mask == 0 and mask >= 0xFFF


def actions_of(instructions: Iterable[Any], ofp: Any) -> tuple[tuple, ...]:
    """Instructions as `Flow.actions`: the apply-actions in order, then write_metadata,
    then goto (the only order the pipeline makes)."""
    actions: list[tuple] = []
    tail: list[tuple] = []
    for inst in instructions:
        kind = type(inst).__name__
        if kind == "OFPInstructionActions" and inst.type == ofp.OFPIT_APPLY_ACTIONS:
            actions.extend(_action(a, ofp) for a in inst.actions)
        elif kind == "OFPInstructionWriteMetadata":
            tail.insert(0, ("write_metadata", inst.metadata, inst.metadata_mask))
        elif kind == "OFPInstructionGotoTable":
            tail.append(("goto", inst.table_id))
        else:
            actions.append(("unsupported", f"instruction {kind}"))
    return tuple(actions + tail)


def _action(action: Any, ofp: Any) -> tuple:
    kind = type(action).__name__
    if kind == "OFPActionOutput":
        if action.port == ofp.OFPP_CONTROLLER:
            return ("controller", action.max_len)
        return ("output", IN_PORT if action.port == ofp.OFPP_IN_PORT else action.port)
    if kind == "OFPActionPushVlan":
        return ("push_vlan", action.ethertype)
    if kind == "OFPActionPopVlan":
        return ("pop_vlan",)
    if kind == "OFPActionSetField":
        value = _plain(action.key, action.value)
        if action.key == "vlan_vid":
            value = int(value) | VID_PRESENT        # OpenFlow 1.3 sets a tag that is present
        return ("set_field", action.key, value)
    if kind == "NXActionRegMove":
        # os-ken names NXM_OF_ETH_SRC "eth_src_nxm"; the pipeline writes the OXM name
        return ("move", action.src_field.removesuffix("_nxm"),
                action.dst_field.removesuffix("_nxm"), action.n_bits)
    if kind == "NXActionResubmitTable":
        return ("resubmit", action.table_id)
    if kind == "OFPActionExperimenterUnknown" and action.experimenter == ONF_EXPERIMENTER_ID:
        moved = _copy_field(bytes(action.data), ofp)
        if moved is not None:
            return moved
    return ("unsupported", f"action {kind}")


def _copy_field(data: bytes, ofp: Any) -> tuple | None:
    """ONF's copy-field extension (how OVS dumps a `move` over OpenFlow 1.3) as a move."""
    if len(data) < _COPY_FIELD.size:
        return None
    exp_type, n_bits, _src_ofs, _dst_ofs, src, dst = _COPY_FIELD.unpack_from(data)
    if exp_type != ONF_COPY_FIELD:
        return None
    try:
        names = [ofp.oxm_to_user_header(ofp.oxm_parse_header(struct.pack("!I", h), 0)[0])
                 for h in (src, dst)]
    except (KeyError, struct.error, ValueError):
        return None
    return ("move", names[0], names[1], n_bits)
