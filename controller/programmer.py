"""Keeps every host's br-int and br-tun programmed with what flows/ computes.

One worker thread per host does all blocking OpenFlow work for that host's two bridges, so
REST handlers and os-ken event handlers only enqueue jobs. A job names the sections of the
host that may have changed (section None = base pipeline, <pod id> = one pod) or asks for a
full reconcile of a bridge (after it connected). The worker drains every queued job at once,
reads one consistent snapshot of the part of the store those sections depend on (the hosts
and the named pods: the cost of a job follows the pods it touches, not the network's size),
computes only the named sections with `host_flows(topo, host, pods=[...])`, diffs them
against the shadow of what it installed on that datapath, and sends only the difference as
one atomic bundle.

After a (re)connect there is no trustworthy shadow: the worker dumps the Loris flows
(cookie marker), adds what is missing and deletes-strict what is stale, in one atomic
bundle, so traffic using flows that stay is never interrupted. A bridge that had flows
before gets exactly those back first (kept per datapath across disconnects, their flow-mods
already serialized), then the flows recomputed from the store as a difference: a switch that
lost 20,000 flows has them again in about the time the switch needs to take them. Any
failure drops the shadow; the next job for that bridge reconciles from a dump and a full
recomputation.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from controller import topology
from controller.store import Store
from controller.switches import FULL_MASK, OpenFlowError, Switches, serialized
from flows import BRIDGES, Flow, HostFlows, diff, host_flows, to_flowmod, to_ofctl

LOG = logging.getLogger("loris.programmer")

OK = "ok"
# Serialized flow-mods are kept for the flows installed somewhere (the same MEMBER flow is
# on every host of its pod); the cache is pruned to those when it grows past twice that, or
# past MIN_WIRE_CACHE on a small cluster. The floor stays small: the entries of flows gone
# from every bridge are dead weight (about 500 bytes each), and a prune is cheap then.
MIN_WIRE_CACHE = 4096
NOT_CONNECTED = "not connected"
NOT_REGISTERED = "host is not registered"
Sections = frozenset  # of int | None


class Future:
    """The outcome of a job, waited on by the caller (with a timeout)."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._result: Any = None
        self._error: BaseException | None = None

    def set_result(self, value: Any) -> None:
        self._result = value
        self._done.set()

    def set_error(self, error: BaseException) -> None:
        self._error = error
        self._done.set()

    def wait(self, timeout: float) -> Any:
        if not self._done.wait(timeout):
            raise TimeoutError(f"not done within {timeout:g} s")
        if self._error is not None:
            raise self._error
        return self._result


@dataclass(frozen=True)
class _Job:
    sections: Sections | None          # None: every section
    sync: frozenset[str]               # bridges to reconcile from a dump
    future: Future
    clear: tuple[int, ...] = ()        # dpids to strip of every Loris flow (host removed)


def _install_order(flow: Flow) -> tuple:
    return (-flow.table, -flow.priority, flow.cookie)


class Programmer:
    """Per-host workers and the per-datapath shadow of installed flows."""

    def __init__(self, store: Store, switches: Switches, spawn: Callable[..., Any],
                 make_queue: Callable[[], Any], queue_empty: type[BaseException]) -> None:
        self.store = store
        self.switches = switches
        self._spawn = spawn
        self._make_queue = make_queue
        self._queue_empty = queue_empty
        self._queues: dict[str, Any] = {}
        self._lock = threading.Lock()
        # dpid -> (datapath object it is valid for, {section: flows on that bridge})
        self._shadow: dict[int, tuple[Any, dict[int | None, frozenset[Flow]]]] = {}
        # dpid -> the flows last installed there, by section, kept across disconnects: a
        # bridge that reconnects gets them back before anything is recomputed
        self._last: dict[int, dict[int | None, frozenset[Flow]]] = {}
        # Flow -> its OFPFC_ADD flow-mod, serialized: building and serializing os-ken
        # messages costs ~0.3 ms a flow, far more than sending the bytes
        self._wire: dict[Flow, bytes] = {}
        self._wire_limit = MIN_WIRE_CACHE
        # rows left out of the flows by the last builds, for the hosts' views
        self.problems = topology.Problems()

    # ---- submitting ----------------------------------------------------------------------
    def submit(self, host_id: str, sections: Iterable[int | None] | None = None,
               sync: Iterable[str] = ()) -> Future:
        job = _Job(None if sections is None else frozenset(sections), frozenset(sync), Future())
        self._queue(host_id).put(job)
        return job.future

    def clear(self, host_id: str, dpids: Iterable[int]) -> Future:
        """Remove every Loris flow from `dpids` (a removed host's bridges), in the host's
        worker so that no job still queued for it can put flows back afterwards."""
        job = _Job(frozenset(), frozenset(), Future(), tuple(dpids))
        self._queue(host_id).put(job)
        return job.future

    def program(self, targets: Mapping[str, Iterable[int | None] | None],
                timeout: float) -> dict[str, dict[str, str]]:
        """Submit a job per host and wait for all: host -> {bridge: "ok" | why not}."""
        futures = {h: self.submit(h, s) for h, s in targets.items()}
        deadline = time.monotonic() + timeout
        out: dict[str, dict[str, str]] = {}
        for host_id, fut in futures.items():
            try:
                out[host_id] = fut.wait(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                out[host_id] = {b: f"flows not installed within {timeout:g} s" for b in BRIDGES}
            except Exception as e:        # the worker reports, the caller decides
                out[host_id] = {b: f"programming failed: {e}" for b in BRIDGES}
        return out

    def shadow_flows(self, dpid: int) -> list[Flow] | None:
        entry = self._shadow.get(dpid)
        if entry is None:
            return None
        return sorted((f for flows in entry[1].values() for f in flows),
                      key=lambda f: (f.table, -f.priority, f.cookie))

    def forget(self, dpid: int) -> None:
        self._shadow.pop(dpid, None)

    def _queue(self, host_id: str) -> Any:
        with self._lock:
            q = self._queues.get(host_id)
            if q is None:
                q = self._queues[host_id] = self._make_queue()
                self._spawn(self._worker, host_id, q)
            return q

    # ---- the worker ------------------------------------------------------------------------
    def _worker(self, host_id: str, q: Any) -> None:
        while True:
            jobs = [q.get()]
            while True:
                try:
                    jobs.append(q.get(block=False))
                except self._queue_empty:
                    break
            try:
                result = self._run(host_id, jobs)
            except Exception as e:
                LOG.exception("programming host %s failed", host_id)
                for job in jobs:
                    job.future.set_error(e)
            else:
                for job in jobs:
                    job.future.set_result(result)
            self._prune_wire_cache()

    def _run(self, host_id: str, jobs: list[_Job]) -> dict[str, str]:
        for dpid in (d for job in jobs for d in job.clear):
            self._shadow.pop(dpid, None)
            self._last.pop(dpid, None)
            dp = self.switches.datapath(dpid)
            if dp is not None:
                try:
                    self.switches.delete_all_loris_flows(dp)
                except OpenFlowError as e:
                    LOG.warning("clearing the flows of %#018x (%s left): %s", dpid, host_id, e)
        full = any(j.sections is None for j in jobs)
        sections: set[int | None] = set()
        for job in jobs:
            sections |= job.sections or set()
        full = full or None in sections
        sync = set().union(*(j.sync for j in jobs))
        with self.store.tx() as tx:
            host = tx.host(host_id)
        if host is None:
            return {b: NOT_REGISTERED for b in BRIDGES}
        desired = _Desired(self.store, host_id, sections, self.problems)
        result: dict[str, str] = {}
        work: list[tuple[str, Any, Callable[[], None]]] = []
        for bridge in BRIDGES:
            dpid = host.dpid(bridge)
            dp = self.switches.datapath(dpid)
            if dp is None:
                self._shadow.pop(dpid, None)
                result[bridge] = NOT_CONNECTED
                continue
            shadow = self._shadow.get(dpid)
            last = self._last.get(dpid)
            if shadow is None or shadow[0] is not dp or bridge in sync:
                if last is None:
                    work.append((bridge, dp, partial(self._reconcile_from_store, dp, host_id,
                                                     bridge, desired)))
                    continue
                # What the bridge last had goes back at once, before anything is computed
                # (for any bridge of the host); the store's truth follows as a difference.
                if not self._guarded(result, bridge, dp, partial(self._reconcile, dp,
                                                                 host_id, bridge, last)):
                    continue
                work.append((bridge, dp, partial(self._apply_all, dp, host_id, bridge,
                                                  desired)))
            elif full:
                work.append((bridge, dp, partial(self._apply_all, dp, host_id, bridge,
                                                  desired)))
            else:
                work.append((bridge, dp, partial(self._apply_partial, dp, host_id, bridge,
                                                  desired, sections)))
        for bridge, dp, step in work:
            self._guarded(result, bridge, dp, step)
        return result

    def _guarded(self, result: dict[str, str], bridge: str, dp: Any,
                 step: Callable[[], None]) -> bool:
        """Run one bridge's step; a failure is that bridge's result, not the job's."""
        try:
            step()
        except _HostGone:
            result[bridge] = NOT_REGISTERED
            return False
        except OpenFlowError as e:
            self._shadow.pop(dp.id, None)     # unknown now: reconcile from a dump next time
            self._last.pop(dp.id, None)
            self.switches.bridge_status(dp.id).synced = False
            self.switches.record_error(dp.id, None, None, str(e), None)
            result[bridge] = str(e)
            return False
        result[bridge] = OK
        return True

    def _reconcile_from_store(self, dp: Any, host_id: str, bridge: str,
                              desired: _Desired) -> None:
        self._reconcile(dp, host_id, bridge, desired.everything(bridge))

    def _apply_partial(self, dp: Any, host_id: str, bridge: str, desired: _Desired,
                       sections: set[int | None]) -> None:
        self._apply(dp, host_id, bridge, self._shadow[dp.id][1], desired.partial(), sections)

    def _reconcile(self, dp: Any, host_id: str, bridge: str,
                   sections: Mapping[int | None, frozenset[Flow]]) -> None:
        desired = frozenset().union(*sections.values())
        installed = self.switches.dump_loris_flows(dp)
        want = {(f.cookie, f.table, f.priority): f for f in desired}
        have = {(s.cookie, s.table_id, s.priority) for s in installed}
        missing = sorted((f for k, f in want.items() if k not in have), key=_install_order)
        stale = [s for s in installed if (s.cookie, s.table_id, s.priority) not in want]
        mods = [(self._add_bytes(f, dp), partial(to_ofctl, f)) for f in missing]
        mods += [(_delete_stat(dp, s), partial(_describe_stat, s)) for s in stale]
        self.switches.bundle(dp, mods)
        shadow = {s: flows for s, flows in sections.items() if flows}
        self._shadow[dp.id] = (dp, shadow)
        self._last[dp.id] = shadow        # the same dict: it follows every later change
        st = self.switches.bridge_status(dp.id)
        st.synced, st.flows = True, len(desired)
        LOG.info("reconciled %s of %s (%#018x): %d added, %d stale deleted, %d kept",
                 bridge, host_id, dp.id, len(missing), len(stale), len(desired) - len(missing))

    def _apply_all(self, dp: Any, host_id: str, bridge: str, desired: _Desired) -> None:
        everything = desired.everything()
        shadow = self._shadow[dp.id][1]
        self._apply(dp, host_id, bridge, shadow, everything, set(shadow) | set(everything))

    def _apply(self, dp: Any, host_id: str, bridge: str,
               shadow: dict[int | None, frozenset[Flow]],
               new: Mapping[int | None, Mapping[str, frozenset[Flow]]],
               sections: Iterable[int | None]) -> None:
        sections = list(sections)
        before = frozenset().union(*(shadow.get(s, frozenset()) for s in sections))
        after = frozenset().union(*(new.get(s, {}).get(bridge, frozenset()) for s in sections))
        change = diff({bridge: before}, {bridge: after})[bridge]
        if change:
            mods = [(self._add_bytes(f, dp), partial(to_ofctl, f))
                    for f in change.add + change.modify]
            mods += [(to_flowmod(f, dp, "delete_strict"), partial(to_ofctl, f))
                     for f in change.delete]
            self.switches.bundle(dp, mods)
            LOG.info("%s of %s: %d added, %d modified, %d deleted", bridge, host_id,
                     len(change.add), len(change.modify), len(change.delete))
        for s in sections:
            flows = new.get(s, {}).get(bridge, frozenset())
            if flows:
                shadow[s] = flows
            else:
                shadow.pop(s, None)
        self.switches.bridge_status(dp.id).flows = sum(len(f) for f in shadow.values())

    # ---- serialized flow-mods --------------------------------------------------------------
    def _add_bytes(self, flow: Flow, dp: Any) -> bytes:
        """The flow's OFPFC_ADD, serialized once (every bridge speaks OpenFlow 1.3 only)."""
        data = self._wire.get(flow)
        if data is None:
            data = self._wire[flow] = serialized(to_flowmod(flow, dp, "add"))
        return data

    def _prune_wire_cache(self) -> None:
        if len(self._wire) <= self._wire_limit:
            return
        installed = set()
        for sections in list(self._last.values()):
            for flows in sections.values():
                installed.update(flows)
        self._wire = {f: b for f, b in self._wire.items() if f in installed}
        self._wire_limit = max(MIN_WIRE_CACHE, 2 * len(self._wire))


class _HostGone(Exception):
    """The host was removed from the store while its job ran."""


class _Desired:
    """A host's desired flows, read from the store when first needed and only as much of it
    as needed: the pods present on the host for every section, the named pods otherwise."""

    def __init__(self, store: Store, host_id: str, sections: set[int | None],
                 problems: topology.Problems) -> None:
        self.store = store
        self.problems = problems
        self.host_id = host_id
        self.pods = {s for s in sections if s is not None}
        self._sections = sorted(self.pods)
        self._topo: Any = None
        self._all_pods = False
        self._everything: HostFlows | None = None
        self._partial: HostFlows | None = None

    def _topology(self, all_pods: bool) -> Any:
        if self._topo is None or (all_pods and not self._all_pods):
            with self.store.tx() as tx:
                pods = self.pods | set(tx.local_vlans(self.host_id)) if all_pods else self.pods
                found: list[topology.Problem] = []
                self._topo, _ = topology.build(tx, pods=pods, problems=found)
            self.problems.refresh(pods, found)
            self._all_pods = all_pods
            if self.host_id not in self._topo.hosts:
                raise _HostGone(self.host_id)
        return self._topo

    def everything(self, bridge: str | None = None) -> Any:
        """host_flows for every section; with `bridge`, that bridge's sets by section."""
        if self._everything is None:
            self._everything = host_flows(self._topology(all_pods=True), self.host_id)
        if bridge is None:
            return self._everything
        return {s: b[bridge] for s, b in self._everything.items()}

    def partial(self) -> HostFlows:
        """host_flows for the named pods only."""
        if self._partial is None:
            self._partial = host_flows(self._topology(all_pods=False), self.host_id,
                                       pods=self._sections)
        return self._partial


def _delete_stat(dp: Any, stat: Any) -> Any:
    """Delete-strict exactly the dumped flow: its table, priority, match and full cookie."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    return parser.OFPFlowMod(dp, cookie=stat.cookie, cookie_mask=FULL_MASK,
                             table_id=stat.table_id, command=ofp.OFPFC_DELETE_STRICT,
                             priority=stat.priority, out_port=ofp.OFPP_ANY,
                             out_group=ofp.OFPG_ANY, match=stat.match, instructions=[])


def _describe_stat(stat: Any) -> str:
    fields = ",".join(f"{k}={v}" for k, v in stat.match.items())
    return (f"stale table={stat.table_id},priority={stat.priority},cookie={stat.cookie:#x}"
            + (f",{fields}" if fields else ""))
