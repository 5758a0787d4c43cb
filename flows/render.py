"""Renderers: `ovs-ofctl` text, os-ken OFPFlowMod messages and their bytes.

os-ken is never imported here: `to_flowmod` builds the message with the datapath's own
`ofproto` / `ofproto_parser` (OpenFlow 1.3), so `flows/` stays importable without it.
`flowmod_bytes` is what the controller sends: the direct encoding of flows/ofwire.py, or,
for a flow it does not support, os-ken's serialization of `to_flowmod`.
"""

from __future__ import annotations

from typing import Any

from . import ofwire
from .flow import IN_PORT, Flow, ofctl_text

__all__ = ["to_ofctl", "to_flowmod", "flowmod_bytes", "delete_by_cookie", "FULL_MASK"]

FULL_MASK = (1 << 64) - 1
COMMANDS = ("add", "delete_strict")


def to_ofctl(flow: Flow) -> str:
    """One line for `ovs-ofctl -O OpenFlow13 add-flows`:
    "table=..,priority=..,cookie=..,<match> actions=..". """
    return ofctl_text(flow)


def to_flowmod(flow: Flow, datapath: Any, command: str = "add") -> Any:
    """An OFPFlowMod for `flow` on `datapath` (anything with `.ofproto`/`.ofproto_parser`).

    command "add": install or replace (a replaced flow takes the new cookie).
    command "delete_strict": remove exactly this flow: same table, priority and match, and
    its cookie under a full cookie mask, with out_port/out_group ANY (the OF1.3 defaults of
    0 would only match flows that output to port 0).
    """
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    match = parser.OFPMatch(**dict(flow.match))
    if command == "add":
        return parser.OFPFlowMod(datapath, cookie=flow.cookie, table_id=flow.table,
                                 command=ofp.OFPFC_ADD, priority=flow.priority,
                                 out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=match,
                                 instructions=_instructions(flow, ofp, parser))
    if command == "delete_strict":
        return parser.OFPFlowMod(datapath, cookie=flow.cookie, cookie_mask=FULL_MASK,
                                 table_id=flow.table, command=ofp.OFPFC_DELETE_STRICT,
                                 priority=flow.priority, out_port=ofp.OFPP_ANY,
                                 out_group=ofp.OFPG_ANY, match=match, instructions=[])
    raise ValueError(f"to_flowmod: command {command!r} is not one of {COMMANDS}; "
                     "send a modified flow as 'add' (it replaces the flow and its cookie)")


def flowmod_bytes(flow: Flow, datapath: Any, command: str = "add") -> bytes:
    """The OFPT_FLOW_MOD of `to_flowmod(flow, datapath, command)` serialized (xid 0): encoded
    directly by flows/ofwire.py (same bytes, ~20 times faster), else through os-ken's
    classes for a field or action the encoder does not know."""
    data = ofwire.flowmod(flow, command)
    if data is not None:
        return data
    msg = to_flowmod(flow, datapath, command)
    msg.set_xid(0)
    msg.serialize()
    return bytes(msg.buf)


def delete_by_cookie(datapath: Any, cookie: int, cookie_mask: int = FULL_MASK) -> Any:
    """An OFPFlowMod deleting, in every table, the flows whose cookie matches under the mask:
    one stale flow (full mask), one object (`flow.OBJECT_COOKIE_MASK`) or every Loris flow
    (`flow.LORIS_COOKIE_MASK`)."""
    ofp, parser = datapath.ofproto, datapath.ofproto_parser
    return parser.OFPFlowMod(datapath, cookie=cookie, cookie_mask=cookie_mask,
                             table_id=ofp.OFPTT_ALL, command=ofp.OFPFC_DELETE,
                             out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
                             match=parser.OFPMatch(), instructions=[])


def _instructions(flow: Flow, ofp: Any, parser: Any) -> list:
    actions, instructions = [], []
    for action in flow.actions:
        op = action[0]
        if op == "output":
            port = ofp.OFPP_IN_PORT if action[1] == IN_PORT else action[1]
            actions.append(parser.OFPActionOutput(port))
        elif op == "controller":
            actions.append(parser.OFPActionOutput(ofp.OFPP_CONTROLLER, action[1]))
        elif op == "push_vlan":
            actions.append(parser.OFPActionPushVlan(action[1]))
        elif op == "pop_vlan":
            actions.append(parser.OFPActionPopVlan())
        elif op == "set_field":
            actions.append(parser.OFPActionSetField(**{action[1]: action[2]}))
        elif op == "move":
            actions.append(parser.NXActionRegMove(src_field=action[1], dst_field=action[2],
                                                  n_bits=action[3]))
        elif op == "resubmit":
            actions.append(parser.NXActionResubmitTable(in_port=ofp.OFPP_IN_PORT & 0xFFFF,
                                                        table_id=action[1]))
        elif op == "write_metadata":
            instructions.append(parser.OFPInstructionWriteMetadata(action[1], action[2]))
        elif op == "goto":
            instructions.append(parser.OFPInstructionGotoTable(action[1]))
        else:
            raise ValueError(f"to_flowmod: unknown action {action!r} in {flow}")
    if actions:
        instructions.insert(0, parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions))
    return instructions
