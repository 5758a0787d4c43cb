"""A fake Open vSwitch bridge for unit tests: a flow table behind an object that offers
what os-ken's `Datapath` offers (`send_msg`, `send`, `set_xid`, `is_active`, ...), so the
real `Switches` and `Programmer` drive it without a socket. Messages go through their
OpenFlow 1.3 bytes, as on the wire; replies and errors come back through `deliver`, which
the test routes to the app side (`Switches.reply` / `Switches.error`).

What it does, as OVS does:
- a flow table keyed by (table, priority, match), each entry carrying its cookie: an add
  replaces the entry of its key, cookie included; modify keeps the cookie; delete and
  delete-strict filter by cookie under the request's mask;
- ONF bundles, per connection, applied atomically at COMMIT; an add is validated when it
  arrives and a rejected one answered with an error *and left out of a bundle that is then
  committed without it* (OVS's habit, which is why `Switches.bundle` checks the add errors
  before COMMIT and DISCARDs); a connection that goes away discards its open bundles;
- flow-stats requests filtered by cookie/mask, answered in several parts (match and
  instructions as the switch holds them; counters zero), and aggregate requests (the count);

Roles (several controllers, controller/roles.py), as OVS does: a connection starts EQUAL;
ROLE_REQUEST MASTER or SLAVE with a generation id older than the one the bridge holds is
refused (ROLE_REQUEST_FAILED/STALE), else the id is kept; a SLAVE connection's flow-mods
and bundle messages are refused with IS_SLAVE. `another_master(generation)` stands for
another controller becoming master (ours is demoted to SLAVE).

Faults to inject: `reject` (a predicate on flow-mods: rejected adds), `fail_sends` (the
next n sends return False and are lost), `lose_replies` (the next reply of a kind, e.g.
"commit", is never sent: the request times out although the switch acted). A bridge
outlives its connections: `connect(keep_flows=...)` makes a new one (OVS in secure fail
mode keeps its flows across a reconnect; a restarted vswitchd has none).
"""

from __future__ import annotations

import functools
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller.switches import ONF_EXPERIMENTER_ID, serialized
from flows import LORIS_COOKIE, LORIS_COOKIE_MASK, Flow, to_flowmod

Key = tuple        # (table, priority, match items)
_HEADER = struct.Struct(ofp.OFP_HEADER_PACK_STR)
_EXPERIMENTER = struct.Struct("!II")                  # experimenter id, exp_type (at 8)
_BUNDLE_CTRL = struct.Struct("!IHH")                   # bundle id, type, flags (at 16)
_BUNDLE_ADD = struct.Struct("!I2xH")                   # bundle id, flags (at 16)
_FLOW_STATS_REQUEST = struct.Struct("!B3xII4xQQ")      # table, out port/group, cookie/mask
_MULTIPART_REQUEST = struct.Struct("!HH4x")            # type, flags (at 8)
_ROLE = struct.Struct("!I4xQ")                         # role, generation id (at 8)
STATS_PER_PART = 50


class _Parser:
    """What os-ken's parsers need of a datapath."""
    ofproto, ofproto_parser = ofp, parser


@dataclass(frozen=True)
class FlowMod:
    """One OFPT_FLOW_MOD, decoded."""
    command: int
    table: int
    priority: int
    cookie: int
    cookie_mask: int
    match: Any                    # OFPMatch
    instructions: bytes
    xid: int

    @property
    def key(self) -> Key:
        return (self.table, self.priority, _items(self.match))

    @classmethod
    def decode(cls, buf: bytes) -> FlowMod:
        version, msg_type, length, xid = _HEADER.unpack_from(buf)
        msg = parser.OFPFlowMod.parser(_Parser, version, msg_type, length, xid, buf)
        start = 48 + (msg.match.length + 7) // 8 * 8
        return cls(msg.command, msg.table_id, msg.priority, msg.cookie, msg.cookie_mask,
                   msg.match, bytes(buf[start:length]), xid)


@dataclass(frozen=True)
class Entry:
    cookie: int
    instructions: bytes
    match: Any


@functools.lru_cache(maxsize=65536)
def instructions_of(data: bytes) -> list:
    """The instructions of a flow-mod's bytes, parsed as a flow-stats reply carries them."""
    out, offset = [], 0
    while offset < len(data):
        inst = parser.OFPInstruction.parser(data, offset)
        out.append(inst)
        offset += inst.len
    return out


def _items(match: Any) -> tuple:
    return tuple(sorted(match.items()))


@functools.lru_cache(maxsize=65536)
def entry_of(flow: Flow) -> tuple[Key, int, bytes]:
    """How `flow` looks in a fake table once added: (key, cookie, instructions)."""
    mod = FlowMod.decode(serialized(to_flowmod(flow, _Parser, "add")))
    return (mod.key, mod.cookie, mod.instructions)


class FlowTable:
    """Every table of one bridge: (table, priority, match) -> Entry."""

    def __init__(self, entries: dict[Key, Entry] | None = None) -> None:
        self.entries: dict[Key, Entry] = dict(entries or {})

    def copy(self) -> FlowTable:
        return FlowTable(self.entries)

    def apply(self, mod: FlowMod) -> None:
        if mod.command == ofp.OFPFC_ADD:
            self.entries[mod.key] = Entry(mod.cookie, mod.instructions, mod.match)
            return
        for key in self._selected(mod):
            if mod.command in (ofp.OFPFC_MODIFY, ofp.OFPFC_MODIFY_STRICT):
                old = self.entries[key]
                self.entries[key] = Entry(old.cookie, mod.instructions, old.match)
            elif mod.command in (ofp.OFPFC_DELETE, ofp.OFPFC_DELETE_STRICT):
                del self.entries[key]
            else:
                raise AssertionError(f"flow-mod command {mod.command} is not OpenFlow 1.3")

    def _selected(self, mod: FlowMod) -> list[Key]:
        strict = mod.command in (ofp.OFPFC_MODIFY_STRICT, ofp.OFPFC_DELETE_STRICT)
        want = dict(_items(mod.match))
        out = []
        for key, entry in self.entries.items():
            table, priority, items = key
            if entry.cookie & mod.cookie_mask != mod.cookie & mod.cookie_mask:
                continue
            if mod.table != ofp.OFPTT_ALL and table != mod.table:
                continue
            if strict and (priority, items) != (mod.priority, _items(mod.match)):
                continue
            if not strict and any(dict(items).get(k) != v for k, v in want.items()):
                continue
            out.append(key)
        return out

    def flows(self, cookie: int = 0, mask: int = 0) -> set[tuple[Key, int, bytes]]:
        return {(k, e.cookie, e.instructions) for k, e in self.entries.items()
                if e.cookie & mask == cookie & mask}


class FakeSwitch:
    """One bridge (one dpid). `deliver(kind, msg)` hands "reply"/"error" messages to the
    app side; it is called from whichever thread sends (or from `connect`)."""

    def __init__(self, dpid: int, deliver: Callable[[str, Any], None]) -> None:
        self.dpid = dpid
        self.deliver = deliver
        self.table = FlowTable()
        self.connection: FakeDatapath | None = None
        self.reject: Callable[[FlowMod], bool] | None = None
        self.fail_sends = 0
        self.lose_replies: list[str] = []
        self.commits = 0
        self.flow_stats_requests = 0
        self.protected: set[tuple[Key, int, bytes]] = set()   # must never vanish
        self.violations: list[str] = []
        self._lock = threading.RLock()
        self._bundles: dict[int, list[FlowMod]] = {}
        self.generation: int | None = None     # the bridge's generation id, once defined

    # ---- the test's side ----------------------------------------------------------------
    def connect(self, keep_flows: bool = True) -> FakeDatapath:
        with self._lock:
            self.drop()
            if not keep_flows:
                self.table = FlowTable()
            self.connection = FakeDatapath(self)
            return self.connection

    def drop(self) -> FakeDatapath | None:
        """The connection goes away (its open bundles with it); returns it."""
        with self._lock:
            old, self.connection = self.connection, None
            if old is not None:
                old.is_active = False
                self._bundles.clear()
            return old

    def another_master(self, generation: int) -> None:
        """Another controller became master with `generation`: ours is SLAVE now."""
        with self._lock:
            self.generation = generation
            if self.connection is not None:
                self.connection.role = ofp.OFPCR_ROLE_SLAVE

    def loris_flows(self) -> set[tuple[Key, int, bytes]]:
        with self._lock:
            return self.table.flows(LORIS_COOKIE, LORIS_COOKIE_MASK)

    def add_foreign(self, table: int, priority: int, cookie: int, **match: Any) -> None:
        """A flow someone else installed (ovs-ofctl, another controller)."""
        msg = parser.OFPFlowMod(_Parser, cookie=cookie, table_id=table, priority=priority,
                                match=parser.OFPMatch(**match), instructions=[])
        with self._lock:
            self._change(lambda t: t.apply(FlowMod.decode(serialized(msg))))

    # ---- the wire -------------------------------------------------------------------------
    def receive(self, conn: FakeDatapath, buf: bytes) -> bool:
        with self._lock:
            if conn is not self.connection or not conn.is_active:
                return False
            if self.fail_sends:
                self.fail_sends -= 1
                return False
            offset = 0
            while offset < len(buf):
                length = _HEADER.unpack_from(buf, offset)[2]
                self._message(conn, buf[offset:offset + length])
                offset += length
            return True

    def _message(self, conn: FakeDatapath, buf: bytes) -> None:
        _version, msg_type, _length, xid = _HEADER.unpack_from(buf)
        if conn.role == ofp.OFPCR_ROLE_SLAVE and msg_type in (ofp.OFPT_FLOW_MOD,
                                                              ofp.OFPT_EXPERIMENTER):
            return self._error(conn, xid, ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_IS_SLAVE)
        if msg_type == ofp.OFPT_ROLE_REQUEST:
            self._role_request(conn, buf, xid)
        elif msg_type == ofp.OFPT_BARRIER_REQUEST:
            self._reply(conn, "barrier", parser.OFPBarrierReply(conn), xid)
        elif msg_type == ofp.OFPT_FLOW_MOD:
            mod = FlowMod.decode(buf)
            if self._rejected(conn, mod):
                return
            self._change(lambda t: t.apply(mod))
        elif msg_type == ofp.OFPT_MULTIPART_REQUEST:
            self._flow_stats(conn, buf, xid)
        elif msg_type == ofp.OFPT_EXPERIMENTER:
            experimenter, exp_type = _EXPERIMENTER.unpack_from(buf, 8)
            assert experimenter == ONF_EXPERIMENTER_ID, experimenter
            if exp_type == ofp.ONF_ET_BUNDLE_CONTROL:
                self._bundle_control(conn, buf, xid)
            elif exp_type == ofp.ONF_ET_BUNDLE_ADD_MESSAGE:
                bundle_id, _flags = _BUNDLE_ADD.unpack_from(buf, 16)
                mod = FlowMod.decode(buf[24:])
                assert mod.xid == xid, "a bundled message carries its bundle add's xid"
                if bundle_id not in self._bundles:
                    self._error(conn, xid, ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_TYPE)
                elif not self._rejected(conn, mod):
                    self._bundles[bundle_id].append(mod)
            else:
                raise AssertionError(f"experimenter message type {exp_type}")
        elif msg_type != ofp.OFPT_PACKET_OUT:
            raise AssertionError(f"the fake switch does not know message type {msg_type}")

    def _rejected(self, conn: FakeDatapath, mod: FlowMod) -> bool:
        if mod.command == ofp.OFPFC_ADD and self.reject is not None and self.reject(mod):
            self._error(conn, mod.xid, ofp.OFPET_FLOW_MOD_FAILED, ofp.OFPFMFC_TABLE_FULL)
            return True
        return False

    def _role_request(self, conn: FakeDatapath, buf: bytes, xid: int) -> None:
        role, generation = _ROLE.unpack_from(buf, 8)
        if role in (ofp.OFPCR_ROLE_MASTER, ofp.OFPCR_ROLE_SLAVE):
            held = self.generation
            if held is not None and ((generation - held) & (2**64 - 1)) >= 2**63:
                return self._error(conn, xid, ofp.OFPET_ROLE_REQUEST_FAILED,
                                   ofp.OFPRRFC_STALE)
            self.generation = generation
        if role != ofp.OFPCR_ROLE_NOCHANGE:
            conn.role = role
        self._reply(conn, "role", parser.OFPRoleReply(conn, conn.role, self.generation or 0),
                    xid)

    def _bundle_control(self, conn: FakeDatapath, buf: bytes, xid: int) -> None:
        bundle_id, kind, flags = _BUNDLE_CTRL.unpack_from(buf, 16)
        if kind == ofp.ONF_BCT_OPEN_REQUEST:
            if bundle_id in self._bundles:
                return self._error(conn, xid, ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_TYPE)
            self._bundles[bundle_id] = []
            answer, name = ofp.ONF_BCT_OPEN_REPLY, "open"
        elif kind == ofp.ONF_BCT_COMMIT_REQUEST:
            mods = self._bundles.pop(bundle_id, None)
            if mods is None:
                return self._error(conn, xid, ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_TYPE)

            def commit(table: FlowTable) -> None:
                for mod in mods:
                    table.apply(mod)
            self._change(commit)
            self.commits += 1
            answer, name = ofp.ONF_BCT_COMMIT_REPLY, "commit"
        elif kind == ofp.ONF_BCT_DISCARD_REQUEST:
            self._bundles.pop(bundle_id, None)
            answer, name = ofp.ONF_BCT_DISCARD_REPLY, "discard"
        else:
            raise AssertionError(f"bundle control type {kind}")
        self._reply(conn, name, parser.ONFBundleCtrlMsg(conn, bundle_id, answer, flags, []), xid)

    def _flow_stats(self, conn: FakeDatapath, buf: bytes, xid: int) -> None:
        kind, _flags = _MULTIPART_REQUEST.unpack_from(buf, 8)
        assert kind in (ofp.OFPMP_FLOW, ofp.OFPMP_AGGREGATE), kind
        table, _port, _group, cookie, mask = _FLOW_STATS_REQUEST.unpack_from(buf, 16)
        chosen = [(k, e) for k, e in sorted(self.table.entries.items(), key=lambda ke: str(ke[0]))
                  if e.cookie & mask == cookie & mask and table in (ofp.OFPTT_ALL, k[0])]
        if kind == ofp.OFPMP_AGGREGATE:
            rep = parser.OFPAggregateStatsReply(conn)
            rep.body, rep.flags = parser.OFPAggregateStats(0, 0, len(chosen)), 0
            return self._reply(conn, "aggregate", rep, xid)
        self.flow_stats_requests += 1
        stats = [parser.OFPFlowStats(k[0], 0, 0, k[1], 0, 0, 0, e.cookie, 0, 0, e.match,
                                     instructions_of(e.instructions)) for k, e in chosen]
        parts = [stats[i:i + STATS_PER_PART] for i in range(0, len(stats), STATS_PER_PART)]
        for n, part in enumerate(parts or [[]]):
            rep = parser.OFPFlowStatsReply(conn)
            rep.body = part
            rep.flags = ofp.OFPMPF_REPLY_MORE if n < len(parts) - 1 else 0
            self._reply(conn, "flow_stats", rep, xid)

    def _change(self, change: Callable[[FlowTable], None]) -> None:
        """Apply `change` atomically (to a copy, then swapped in) and check the protected
        flows survived it."""
        table = self.table.copy()
        change(table)
        self.table = table
        gone = self.protected - table.flows()
        if gone:
            self.violations.append(f"{self.dpid:#x}: {len(gone)} protected flows vanished")

    def _reply(self, conn: FakeDatapath, name: str, msg: Any, xid: int) -> None:
        if name in self.lose_replies:
            self.lose_replies.remove(name)
            return
        msg.xid = xid
        self.deliver("reply", msg)

    def _error(self, conn: FakeDatapath, xid: int, err_type: int, code: int) -> None:
        msg = parser.OFPErrorMsg(conn, err_type, code, b"")
        msg.xid = xid
        self.deliver("error", msg)


class FakeDatapath:
    """One connection to a `FakeSwitch`, as os-ken's `Datapath` looks to the app."""
    ofproto, ofproto_parser = ofp, parser

    def __init__(self, switch: FakeSwitch) -> None:
        self.switch = switch
        self.id = switch.dpid
        self.address = ("192.0.2.1", 40000)
        self.is_active = True
        self.xid = 0
        self.role = ofp.OFPCR_ROLE_EQUAL

    def set_xid(self, msg: Any) -> int:
        self.xid = (self.xid + 1) & ofp.MAX_XID
        msg.set_xid(self.xid)
        return self.xid

    def send_msg(self, msg: Any, close_socket: bool = False) -> bool:
        assert isinstance(msg, parser.MsgBase)
        if msg.xid is None:
            self.set_xid(msg)
        msg.serialize()
        return self.send(msg.buf)

    def send(self, buf: bytes, close_socket: bool = False) -> bool:
        return self.switch.receive(self, bytes(buf))

    def close(self) -> None:
        self.switch.drop()


def expected(flows: Iterable[Flow]) -> set[tuple[Key, int, bytes]]:
    return {entry_of(f) for f in flows}


class RejectNext:
    """A `reject` predicate: the next `n` adds are refused (table full), later ones pass."""

    def __init__(self, n: int = 1) -> None:
        self.n = n

    def __call__(self, mod: FlowMod) -> bool:
        if self.n <= 0:
            return False
        self.n -= 1
        return True
