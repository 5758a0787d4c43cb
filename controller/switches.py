"""OpenFlow sessions: connected datapaths, request/reply tracking with timeouts, bundles.

Two sides, two kinds of thread:

- the os-ken app's event handlers (the hub thread) call `connected`, `disconnected`,
  `reply` and `error`; these only update dicts and wake waiters, they never block the
  OpenFlow loop;
- programmer workers (one per host) call `request`, `barrier`, `dump_loris_flows`,
  `bundle` and `delete_all_loris_flows`, which block with a timeout (never in an event
  handler); the DHCP worker calls `packet_out`, REST handlers `datapath`,
  `bridge_status`, `error_counts` and `flow_stats` (a trace or port counters: the handler's
  own green thread waits, with the same timeout).

Every dict here (`_dps`, `_pending`, `_watched`, `_rejected`, `status`) and every
`BridgeStatus` in `status` is touched from both sides, so only under `_lock`. No critical
section does I/O, logs, waits or calls out (events are set and errors described after the
lock is released): on the hub, where threads are green and switch only when one blocks,
the lock is therefore never contended, and a handler never waits for a worker. The worker
side owns the rest: a request's `_Pending` entry is created and removed by the worker that
waits on it (a handler only fills it in, under the lock), and the bundle ids come from an
`itertools.count` (atomic). A datapath's xid counter (`_next_xid`) is advanced only by the
worker of its host; os-ken's own users of it (echo requests) run on the hub, which never
preempts a worker.

Replies are matched by (datapath object, xid) here rather than through os-ken's ofctl
service: ofctl's send_msg has no timeout and, in 3.1.x, can block forever when a switch
reconnects mid-request. Because the barrier replies and the error messages of a datapath
arrive through the same app event queue, in the order the switch sent them, the errors for
a bundle's adds have all been recorded by the time the barrier that follows them completes;
that is the "barrier + flush through the app's event queue" check, without a second queue.
"""

from __future__ import annotations

import itertools
import logging
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from controller.planner import Dumped, dump_parts
from flows import LORIS_COOKIE, LORIS_COOKIE_MASK

LOG = logging.getLogger("loris.switches")
MAX_ERRORS_KEPT = 20
FULL_MASK = (1 << 64) - 1
# Bundle adds are written to the socket in chunks of about this many bytes: one write per
# few thousand flow-mods instead of one queue hand-over and one write per message.
SEND_CHUNK = 256 * 1024
ONF_EXPERIMENTER_ID = 0x4F4E4600        # os_ken.ofproto.ofproto_common.ONF_EXPERIMENTER_ID
# OpenFlow header, experimenter header, ONF bundle add (bundle id, 2 pad bytes, flags)
_BUNDLE_ADD_HEAD = struct.Struct("!BBHIIII2xH")

# What a flow-mod is, for error messages: its text, or a function that makes it (rendering
# 20,000 flows as text just in case one is rejected would cost more than sending them).
Description = str | Callable[[], str]


def describe(what: Description | None) -> str | None:
    return what() if callable(what) else what


def bundle_add_frame(ofp: Any, xid: int, bundle_id: int, flags: int, inner: bytes) -> bytes:
    """The ONFBundleAddMsg os-ken would serialize around the serialized message `inner`
    (no properties); the inner message carries the bundle add's xid (OF1.3 bundle
    extension 3.3)."""
    head = _BUNDLE_ADD_HEAD.pack(ofp.OFP_VERSION, ofp.OFPT_EXPERIMENTER,
                                 _BUNDLE_ADD_HEAD.size + len(inner), xid, ONF_EXPERIMENTER_ID,
                                 ofp.ONF_ET_BUNDLE_ADD_MESSAGE, bundle_id, flags)
    return head + inner[:4] + xid.to_bytes(4, "big") + inner[8:]


def serialized(msg: Any) -> bytes:
    """An os-ken message as bytes (its xid is replaced when it is sent in a bundle)."""
    if msg.xid is None:
        msg.set_xid(0)
    msg.serialize()
    return bytes(msg.buf)


class OpenFlowError(RuntimeError):
    """A request failed: rejected by the switch, timed out, or the connection went away."""


@dataclass
class BridgeStatus:
    """What `GET /v1/hosts/{id}` shows about one datapath."""
    dpid: int
    connected: bool = False
    since: float | None = None
    synced: bool = False
    flows: int = 0
    errors: deque = field(default_factory=lambda: deque(maxlen=MAX_ERRORS_KEPT))
    reconciled_at: float | None = None     # the last reconcile from a dump of the switch

    def to_json(self) -> dict:
        return {"dpid": f"{self.dpid:#018x}", "connected": self.connected, "since": self.since,
                "synced": self.synced, "flows": self.flows, "errors": list(self.errors),
                "reconciled_at": self.reconciled_at}


class _Pending:
    __slots__ = ("event", "replies", "error")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.replies: list = []
        self.error: str | None = None


def error_text(ofp: Any, err_type: int, code: int) -> str:
    """'OFPET_BAD_ACTION/OFPBAC_BAD_OUT_PORT (2/4)' from the datapath's ofproto constants."""
    types = {v: k for k, v in vars(ofp).items() if k.startswith("OFPET_") and isinstance(v, int)}
    tname = types.get(err_type, str(err_type))
    prefix = {"OFPET_HELLO_FAILED": "OFPHFC_", "OFPET_BAD_REQUEST": "OFPBRC_",
              "OFPET_BAD_ACTION": "OFPBAC_", "OFPET_BAD_INSTRUCTION": "OFPBIC_",
              "OFPET_BAD_MATCH": "OFPBMC_", "OFPET_FLOW_MOD_FAILED": "OFPFMFC_",
              "OFPET_GROUP_MOD_FAILED": "OFPGMFC_", "OFPET_PORT_MOD_FAILED": "OFPPMFC_",
              "OFPET_TABLE_MOD_FAILED": "OFPTMFC_", "OFPET_QUEUE_OP_FAILED": "OFPQOFC_",
              "OFPET_SWITCH_CONFIG_FAILED": "OFPSCFC_", "OFPET_ROLE_REQUEST_FAILED": "OFPRRFC_",
              "OFPET_METER_MOD_FAILED": "OFPMMFC_", "OFPET_TABLE_FEATURES_FAILED": "OFPTFFC_"
              }.get(tname)
    cname = str(code)
    if prefix:
        names = [k for k, v in vars(ofp).items() if k.startswith(prefix) and v == code]
        cname = names[0] if names else cname
    return f"{tname}/{cname} ({err_type}/{code})"


class Switches:
    """Every datapath the controller talks to, by dpid."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._dps: dict[int, Any] = {}
        self._pending: dict[tuple[Any, int], _Pending] = {}
        self._watched: dict[tuple[Any, int], Description] = {}   # bundle-add xid -> flow
        self._rejected: dict[tuple[Any, int], str] = {}     # bundle-add xid -> error text
        self._bundle_ids = itertools.count(1)
        self.status: dict[int, BridgeStatus] = {}
        self._error_counts: dict[str, int] = {}      # OpenFlow error type name -> count
        # May this connection be written (flows, packet-outs)? Always, unless mastership
        # is on: then only as the switch's MASTER (controller/roles.py sets it)
        self.write_gate: Callable[[Any], bool] = lambda dp: True

    # ---- app-thread side: never blocks ----------------------------------------------
    def connected(self, dp: Any) -> None:
        with self._lock:
            old = self._dps.get(dp.id)
            self._dps[dp.id] = dp
            st = self._status(dp.id)
            st.connected, st.since, st.synced = True, time.time(), False
            failed = (self._fail_pending(old, "the switch reconnected")
                      if old is not None and old is not dp else [])
        _wake(failed)
        LOG.info("datapath %#018x connected from %s", dp.id, dp.address)

    def disconnected(self, dp: Any) -> bool:
        """Forget `dp` if it is still the current connection of its dpid."""
        with self._lock:
            failed = self._fail_pending(dp, "the switch disconnected")
            current = dp.id is not None and self._dps.get(dp.id) is dp
            if current:
                del self._dps[dp.id]
                st = self._status(dp.id)
                st.connected, st.since, st.synced = False, time.time(), False
        _wake(failed)
        if current:
            LOG.warning("datapath %#018x disconnected", dp.id)
        return current

    def reply(self, msg: Any) -> None:
        """A reply (barrier, multipart, bundle control) for a request of ours."""
        more = getattr(msg, "flags", 0) & getattr(msg.datapath.ofproto, "OFPMPF_REPLY_MORE", 0)
        with self._lock:
            pending = self._pending.get((msg.datapath, msg.xid))
            if pending is not None:
                pending.replies.append(msg)
        if pending is not None and not (hasattr(msg, "body") and more):
            pending.event.set()

    def error(self, msg: Any) -> None:
        """An OFPErrorMsg: fail the request it answers, or record it against a bundle add."""
        dp = msg.datapath
        text = error_text(dp.ofproto, msg.type, msg.code)
        key = (dp, msg.xid)
        with self._lock:
            what = self._watched.get(key)
            if what is not None:
                self._rejected[key] = text
            pending = self._pending.get(key)
            if pending is not None:
                pending.error = text
        if pending is not None:
            pending.event.set()
        self.record_error(dp.id, msg.type, msg.code, text, describe(what))

    def record_error(self, dpid: int | None, err_type: int | None, code: int | None, text: str,
                     flow: str | None) -> None:
        if dpid is None:
            return
        entry = {"time": time.time(), "type": err_type, "code": code, "message": text,
                 "flow": flow}
        kind = text.split("/", 1)[0] if err_type is not None else "programming"
        with self._lock:
            self._status(dpid).errors.append(entry)
            self._error_counts[kind] = self._error_counts.get(kind, 0) + 1
        LOG.error("OpenFlow error from %#018x: %s%s", dpid, text,
                  f" for flow: {flow}" if flow else "")

    # ---- programmer side: may block, always with a timeout ---------------------------
    def datapath(self, dpid: int) -> Any | None:
        with self._lock:
            dp = self._dps.get(dpid)
        return dp if dp is not None and dp.is_active else None

    def connected_datapaths(self) -> list[Any]:
        with self._lock:
            return [dp for dp in self._dps.values() if dp.is_active]

    def check_writable(self, dp: Any) -> None:
        if not self.write_gate(dp):
            raise OpenFlowError(f"datapath {dp.id:#018x}: this controller is not its "
                                "OpenFlow master")

    def synced(self, dp: Any, flows: int) -> None:
        """`dp` holds exactly its `flows` desired flows (shown unless it is gone already)."""
        with self._lock:
            if self._dps.get(dp.id) is dp:
                st = self._status(dp.id)
                st.synced, st.flows, st.reconciled_at = True, flows, time.time()

    def flow_count(self, dp: Any, flows: int) -> None:
        with self._lock:
            if self._dps.get(dp.id) is dp:
                self._status(dp.id).flows = flows

    def failed(self, dp: Any, why: str) -> None:
        """Programming `dp` failed: what it holds is unknown until it is reconciled."""
        with self._lock:
            if self._dps.get(dp.id) is dp:
                self._status(dp.id).synced = False
        self.record_error(dp.id, None, None, why, None)

    def request(self, dp: Any, msg: Any, timeout: float | None = None) -> list:
        """Send `msg`, wait for its reply (all parts of a multipart reply) or error."""
        if msg.xid is None:
            dp.set_xid(msg)
        key = (dp, msg.xid)
        pending = _Pending()
        with self._lock:
            self._pending[key] = pending
        try:
            if not dp.send_msg(msg):
                raise OpenFlowError(f"datapath {dp.id:#018x} is not connected")
            limit = self.timeout if timeout is None else timeout
            if not pending.event.wait(limit):
                raise OpenFlowError(f"datapath {dp.id:#018x} did not answer "
                                    f"{type(msg).__name__} within {limit:g} s")
            if pending.error:
                raise OpenFlowError(f"datapath {dp.id:#018x} rejected {type(msg).__name__}: "
                                    f"{pending.error}")
            with self._lock:
                return list(pending.replies)
        finally:
            with self._lock:
                self._pending.pop(key, None)

    def barrier(self, dp: Any, timeout: float | None = None) -> None:
        self.request(dp, dp.ofproto_parser.OFPBarrierRequest(dp), timeout)

    def dump_loris_flows(self, dp: Any) -> list[Dumped]:
        """Every flow whose cookie carries the Loris marker: counted first, then dumped in
        parts (planner.dump_parts) so that parsing a large dump does not hold the hub."""
        ofp, parser = dp.ofproto, dp.ofproto_parser
        count = parser.OFPAggregateStatsRequest(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY,
                                                ofp.OFPG_ANY, LORIS_COOKIE, LORIS_COOKIE_MASK,
                                                parser.OFPMatch())
        flows = sum(rep.body.flow_count for rep in self.request(dp, count))
        out: list[Dumped] = []
        for cookie, mask in dump_parts(flows):
            req = parser.OFPFlowStatsRequest(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                             cookie, mask, parser.OFPMatch())
            out.extend(Dumped(stat.cookie, stat.table_id, stat.priority, stat.match)
                       for rep in self.request(dp, req) for stat in rep.body)
        return out

    def flow_stats(self, dp: Any, cookie: int = 0, cookie_mask: int = 0) -> list:
        """The flows (os-ken `OFPFlowStats`, counters included) whose cookie matches under
        the mask; every flow of the bridge with the default mask 0. Called by programmer
        workers and by REST handlers (a trace, port counters): only the caller waits."""
        ofp, parser = dp.ofproto, dp.ofproto_parser
        req = parser.OFPFlowStatsRequest(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                         cookie, cookie_mask, parser.OFPMatch())
        return [stat for rep in self.request(dp, req) for stat in rep.body]

    def bundle(self, dp: Any, mods: Sequence[tuple[Any, Description]]) -> None:
        """Apply flow-mods as one atomic, ordered ONF bundle; (message, description) pairs,
        a message being an os-ken message or its serialized bytes (`serialized`).

        OVS validates each add when it arrives and still COMMITs a bundle in which an add
        was rejected, so every add's error is checked (after a barrier) before COMMIT, and
        the bundle is DISCARDed if any was rejected.

        The bundle adds are framed here (a fixed header around the serialized flow-mod) and
        written in chunks of SEND_CHUNK bytes: with pre-serialized flow-mods, sending 20,000
        of them costs little more than the bytes themselves.
        """
        if not mods:
            return
        self.check_writable(dp)
        ofp = dp.ofproto
        bundle_id = next(self._bundle_ids) & 0xFFFFFFFF
        flags = ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED
        self._control(dp, bundle_id, flags, ofp.ONF_BCT_OPEN_REQUEST, ofp.ONF_BCT_OPEN_REPLY)
        keys: list[tuple[Any, int]] = []
        try:
            chunk: list[bytes] = []
            watch: dict[tuple[Any, int], Description] = {}
            size = 0
            for payload, what in mods:
                inner = payload if isinstance(payload, bytes) else serialized(payload)
                xid = _next_xid(dp)
                watch[(dp, xid)] = what
                chunk.append(bundle_add_frame(ofp, xid, bundle_id, flags, inner))
                size += len(chunk[-1])
                if size >= SEND_CHUNK:
                    self._send_watched(dp, chunk, watch, keys)
                    chunk, watch, size = [], {}, 0
            self._send_watched(dp, chunk, watch, keys)
            self.barrier(dp)
            with self._lock:
                rejected = [(self._watched[k], self._rejected[k]) for k in keys
                            if k in self._rejected]
            if rejected:
                first = "; ".join(f"{err} for {describe(what)}" for what, err in rejected[:3])
                raise OpenFlowError(f"datapath {dp.id:#018x} rejected {len(rejected)} of "
                                    f"{len(mods)} flow-mods: {first}")
            self._control(dp, bundle_id, flags, ofp.ONF_BCT_COMMIT_REQUEST,
                          ofp.ONF_BCT_COMMIT_REPLY)
        except BaseException:
            try:
                self._control(dp, bundle_id, flags, ofp.ONF_BCT_DISCARD_REQUEST,
                              ofp.ONF_BCT_DISCARD_REPLY)
            except OpenFlowError as e:
                LOG.warning("discarding bundle %d on %#018x: %s", bundle_id, dp.id, e)
            raise
        finally:
            with self._lock:
                for key in keys:
                    self._watched.pop(key, None)
                    self._rejected.pop(key, None)

    def _send_watched(self, dp: Any, chunk: list[bytes], watch: dict[tuple[Any, int],
                      Description], keys: list[tuple[Any, int]]) -> None:
        """Send bundle adds, watched for errors from before they leave."""
        if not chunk:
            return
        with self._lock:
            self._watched.update(watch)
        keys.extend(watch)
        if not dp.send(b"".join(chunk)):
            raise OpenFlowError(f"datapath {dp.id:#018x} disconnected during a bundle")
        time.sleep(0)       # let echo replies and other switches through

    def _control(self, dp: Any, bundle_id: int, flags: int, kind: int, want: int) -> None:
        parser = dp.ofproto_parser
        replies = self.request(dp, parser.ONFBundleCtrlMsg(dp, bundle_id, kind, flags, []))
        if not replies or replies[-1].type != want:
            got = replies[-1].type if replies else None
            raise OpenFlowError(f"datapath {dp.id:#018x}: bundle control {kind} got reply "
                                f"type {got}, want {want}")

    def delete_all_loris_flows(self, dp: Any) -> None:
        """Remove every Loris flow (a host left the cluster); other flows stay."""
        self.check_writable(dp)
        ofp, parser = dp.ofproto, dp.ofproto_parser
        dp.send_msg(parser.OFPFlowMod(dp, cookie=LORIS_COOKIE, cookie_mask=LORIS_COOKIE_MASK,
                                      table_id=ofp.OFPTT_ALL, command=ofp.OFPFC_DELETE,
                                      out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
                                      match=parser.OFPMatch(), instructions=[]))
        self.barrier(dp)

    def packet_out(self, dpid: int, out_port: int, data: bytes) -> bool:
        dp = self.datapath(dpid)
        if dp is None or not self.write_gate(dp):
            return False
        ofp, parser = dp.ofproto, dp.ofproto_parser
        return dp.send_msg(parser.OFPPacketOut(dp, buffer_id=ofp.OFP_NO_BUFFER,
                                               in_port=ofp.OFPP_CONTROLLER,
                                               actions=[parser.OFPActionOutput(out_port)],
                                               data=data))

    # ---- views ------------------------------------------------------------------------
    def bridge_status(self, dpid: int) -> BridgeStatus:
        """A copy of what is known about `dpid` (a blank one for a datapath never seen)."""
        with self._lock:
            st = self.status.get(dpid)
            if st is None:
                return BridgeStatus(dpid)
            return replace(st, errors=deque(st.errors, maxlen=MAX_ERRORS_KEPT))

    def error_counts(self) -> dict[str, int]:
        """OpenFlow errors since the start, by type ('OFPET_BAD_MATCH', ...; 'programming'
        for a failure the switch sent no error for: a timeout, a lost connection)."""
        with self._lock:
            return dict(self._error_counts)

    def forget(self, dpids: Iterable[int]) -> None:
        with self._lock:
            for dpid in dpids:
                self.status.pop(dpid, None)

    # ---- helpers: call with the lock held ------------------------------------------------
    def _status(self, dpid: int) -> BridgeStatus:
        st = self.status.get(dpid)
        if st is None:
            st = self.status[dpid] = BridgeStatus(dpid)
        return st

    def _fail_pending(self, dp: Any, why: str) -> list[_Pending]:
        """Fail the requests waiting on `dp`; the caller wakes them (`_wake`) after the
        lock is released."""
        failed = [pending for (pdp, _xid), pending in self._pending.items() if pdp is dp]
        for pending in failed:
            pending.error = why
        return failed


def _wake(pending: list[_Pending]) -> None:
    for p in pending:
        p.event.set()


def _next_xid(dp: Any) -> int:
    """The datapath's next xid, as os-ken's `Datapath.set_xid` would assign it."""
    dp.xid = (dp.xid + 1) & dp.ofproto.MAX_XID
    return dp.xid
