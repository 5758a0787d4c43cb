"""Keeps every host's br-int and br-tun programmed with what flows/ computes.

One worker thread per host does all blocking OpenFlow work for that host's two bridges, so
REST handlers and os-ken event handlers only enqueue jobs. A job names the sections of the
host that may have changed (section None = base pipeline, <pod id> = one pod) or asks for a
full reconcile of a bridge (after it connected). The worker drains every queued job at once,
reads one consistent snapshot of the part of the store those sections depend on (the hosts
and the named pods: the cost of a job follows the pods it touches, not the network's size),
computes only the named sections with `host_flows(topo, host, pods=[...])`, and asks the
planner (controller/planner.py) what to send: the difference from the shadow of what it
installed on that datapath, or, after a (re)connect or a failure, the difference from a
dump of the switch, where the flows the bridge last had go back first. Each plan goes out
as one atomic bundle through `Switches`; any failure drops the shadow and the last flows,
and the next job for that bridge reconciles from a dump and a full recomputation.

The sending edge is here: flows become FLOW_MOD bytes, encoded directly (flows/ofwire.py,
through `flowmod_bytes`; os-ken's classes only for a flow the encoder does not know), each
flow's ADD encoded once and cached (`_wire`; the same MEMBER flow is on every host of its
pod). Threads and what they touch:
- any thread (REST handlers, the hub's event handlers) calls `submit`, `clear`,
  `program`, `forget` and `shadow_flows`; these take short locks and enqueue, never wait
  on a worker (`program` waits on its futures, never in an event handler);
- `_queues`: under `_lock`;
- `_shadow` and `_last` (per dpid): written by the worker of the host that owns the dpid,
  dropped by `forget` (the hub, on a disconnect), read by `shadow_flows` and by every
  worker's cache prune; under `_book_lock`. The mappings they hold are never mutated once
  stored (a plan makes a new one), so a reader may use one after releasing the lock;
- `_wire` and `_wire_limit`: every worker, without a lock: a plan's flow-mods are looked
  up one by one while its bundle is sent, and a lock (a green semaphore on the hub) cost
  more than the look-up, 0.25 s in a push of 40,000 flows. One dict look-up or insertion
  is atomic in CPython; a prune makes a new dict and swaps it in, so a flow inserted into
  the old one meanwhile is only encoded again next time;
- `problems`: its own lock (controller/topology.py).
No critical section does I/O, logs or waits, so on the hub (green threads) no lock is ever
contended and an event handler never waits for a worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from controller import planner, topology
from controller.desired import Desired, HostGone, collector_paused
from controller.planner import Dumped, Plan, Shadow, Step
from controller.store import Store
from controller.switches import FULL_MASK, Description, OpenFlowError, Switches
from flows import BRIDGES, Flow, to_ofctl
from flows.render import flowmod_bytes

LOG = logging.getLogger("loris.programmer")

OK = "ok"
# Serialized flow-mods are kept for the flows installed somewhere (the same MEMBER flow is
# on every host of its pod); the cache is pruned to those when it grows past twice that, or
# past MIN_WIRE_CACHE on a small cluster. The floor stays small: the entries of flows gone
# from every bridge are dead weight (about 500 bytes each), and a prune is cheap then.
MIN_WIRE_CACHE = 4096
NOT_CONNECTED = "not connected"
NOT_REGISTERED = "host is not registered"
# mastership on (docs/ha.md): another controller is this bridge's OpenFlow master, or we are
# not yet confirmed as master: its master programs it
NOT_MASTER = "not master"
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


@dataclass(frozen=True)
class _Batch:
    """The jobs a worker drained, merged: one pass over the host does them all."""
    sections: frozenset[int | None]
    full: bool
    sync: frozenset[str]
    clear: tuple[int, ...]

    @classmethod
    def of(cls, jobs: list[_Job]) -> _Batch:
        sections = frozenset().union(*(j.sections or () for j in jobs))
        full = any(j.sections is None for j in jobs) or None in sections
        return cls(sections, full, frozenset().union(*(j.sync for j in jobs)),
                   tuple(d for j in jobs for d in j.clear))


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
        self._book_lock = threading.Lock()
        # dpid -> (datapath object it is valid for, the flows on that bridge by section)
        self._shadow: dict[int, tuple[Any, Shadow]] = {}
        # dpid -> the flows last installed there, by section, kept across disconnects: a
        # bridge that reconnects gets them back before anything is recomputed
        self._last: dict[int, Shadow] = {}
        # Flow -> its OFPFC_ADD flow-mod bytes: encoding costs ~10 us a flow (os-ken's
        # classes, the fallback, ~150 us), a look-up here less. No lock: see the docstring.
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
        return self.wait({h: self.submit(h, s) for h, s in targets.items()}, timeout)

    @staticmethod
    def wait(futures: Mapping[str, Future], timeout: float) -> dict[str, dict[str, str]]:
        """Wait for submitted jobs, host -> future: host -> {bridge: "ok" | why not}."""
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
        """The flows the controller believes `dpid` holds; None when it does not know."""
        with self._book_lock:
            entry = self._shadow.get(dpid)
        if entry is None:
            return None
        return sorted((f for flows in entry[1].values() for f in flows),
                      key=lambda f: (f.table, -f.priority, f.cookie))

    def forget(self, dpid: int) -> None:
        """`dpid` disconnected: its shadow is no longer trusted (its last flows are kept)."""
        with self._book_lock:
            self._shadow.pop(dpid, None)

    def disown(self, dpid: int) -> None:
        """Our mastership of `dpid` began or ended: another controller may have programmed
        it meanwhile, so neither the shadow nor the last flows say what it holds (the next
        job reconciles from a dump)."""
        with self._book_lock:
            self._shadow.pop(dpid, None)
            self._last.pop(dpid, None)

    def _queue(self, host_id: str) -> Any:
        with self._lock:
            q = self._queues.get(host_id)
            new = q is None
            if new:
                q = self._queues[host_id] = self._make_queue()
        if new:                         # outside the lock: starting a thread may wait
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
        batch = _Batch.of(jobs)
        for dpid in batch.clear:
            self._clear(host_id, dpid)
        with self.store.read(current=False) as tx:
            host = tx.host(host_id)
        if host is None:
            return {b: NOT_REGISTERED for b in BRIDGES}
        desired = Desired(self.store, host_id, batch.sections, self.problems)
        result: dict[str, str] = {}
        later = [todo for bridge in BRIDGES
                 if (todo := self._prepare(host, bridge, batch, result)) is not None]
        for todo in later:
            self._steps(host_id, todo, desired, batch.sections, result)
        # A bridge that connected while the others were programmed (OVS reconnects a host's
        # bridges a few milliseconds apart) is programmed now, from the flows just computed,
        # rather than by its own connect's job after them, which would compute them again.
        for bridge in [b for b, why in result.items() if why == NOT_CONNECTED]:
            todo = self._prepare(host, bridge, batch, result)
            if todo is not None:
                self._steps(host_id, todo, desired, batch.sections, result)
        return result

    def _prepare(self, host: Any, bridge: str, batch: _Batch,
                 result: dict[str, str]) -> tuple[str, Any, tuple[Step, ...]] | None:
        """The steps a job runs on `bridge` after computing (None: none, `result` says
        why); a RESTORE, which needs no computing, is run here."""
        dpid = host.dpid(bridge)
        dp = self.switches.datapath(dpid)
        if dp is None:
            self.forget(dpid)
            result[bridge] = NOT_CONNECTED
            return None
        if not self.switches.write_gate(dp):
            result[bridge] = NOT_MASTER
            return None
        with self._book_lock:
            trusted = self._shadow.get(dpid, (None,))[0] is dp and bridge not in batch.sync
            last = self._last.get(dpid)
        todo = planner.steps(trusted, last is not None, batch.full)
        if todo[0] is Step.RESTORE:
            # What the bridge last had goes back at once, before anything is computed
            # (for any bridge of the host); the store's truth follows as a difference.
            if not self._guarded(result, bridge, dp, partial(self._reconcile, dp, host.id,
                                                             bridge, last)):
                return None
            todo = todo[1:]
        return bridge, dp, todo

    def _steps(self, host_id: str, todo: tuple[str, Any, tuple[Step, ...]], desired: Desired,
               sections: frozenset[int | None], result: dict[str, str]) -> None:
        bridge, dp, steps = todo
        for step in steps:
            self._guarded(result, bridge, dp, partial(self._step, step, dp, host_id, bridge,
                                                      desired, sections))

    def _step(self, step: Step, dp: Any, host_id: str, bridge: str, desired: Desired,
              sections: frozenset[int | None]) -> None:
        if step is Step.RECONCILE:
            started = time.monotonic()
            flows = desired.everything(bridge)
            self._reconcile(dp, host_id, bridge, flows, time.monotonic() - started)
        elif step is Step.ALL:
            self._update(dp, host_id, bridge, desired.everything(bridge), None)
        else:
            self._update(dp, host_id, bridge, desired.partial(bridge), sections)

    def _guarded(self, result: dict[str, str], bridge: str, dp: Any,
                 step: Callable[[], None]) -> bool:
        """Run one bridge's step; a failure is that bridge's result, not the job's."""
        try:
            step()
        except HostGone:
            result[bridge] = NOT_REGISTERED
            return False
        except OpenFlowError as e:
            # what the bridge holds is unknown now: reconcile from a dump next time
            with self._book_lock:
                self._shadow.pop(dp.id, None)
                self._last.pop(dp.id, None)
            self.switches.failed(dp, str(e))
            result[bridge] = str(e)
            return False
        result[bridge] = OK
        return True

    def _clear(self, host_id: str, dpid: int) -> None:
        with self._book_lock:
            self._shadow.pop(dpid, None)
            self._last.pop(dpid, None)
        dp = self.switches.datapath(dpid)
        if dp is not None and self.switches.write_gate(dp):
            try:
                self.switches.delete_all_loris_flows(dp)
            except OpenFlowError as e:
                LOG.warning("clearing the flows of %#018x (%s left): %s", dpid, host_id, e)

    def _reconcile(self, dp: Any, host_id: str, bridge: str, desired: Shadow,
                   computed: float = 0.0) -> None:
        """`computed`: the seconds it took to compute `desired` (for the log)."""
        started = time.monotonic()
        dumped = self.switches.dump_loris_flows(dp)
        with collector_paused():
            plan = planner.reconcile(dumped, desired)
        planned = time.monotonic()
        self._send(dp, plan)
        self.switches.synced(dp, plan.flow_count)
        LOG.info("reconciled %s of %s (%#018x): %d added, %d stale deleted, %d kept "
                 "(%.3f s computing, %.3f s dump and plan, %.3f s sending)", bridge, host_id,
                 dp.id, len(plan.adds), len(plan.stale), plan.kept, computed,
                 planned - started, time.monotonic() - planned)

    def _update(self, dp: Any, host_id: str, bridge: str, new: Shadow,
                sections: Iterable[int | None] | None) -> None:
        with self._book_lock:
            entry = self._shadow.get(dp.id)
        if entry is None or entry[0] is not dp:       # forgotten: it disconnected meanwhile
            raise OpenFlowError(f"datapath {dp.id:#018x} disconnected")
        plan = planner.update(entry[1], new, sections)
        self._send(dp, plan)
        if plan:
            LOG.info("%s of %s: %d added, %d modified, %d deleted", bridge, host_id,
                     len(plan.adds) - plan.replaced, plan.replaced, len(plan.deletes))
        self.switches.flow_count(dp, plan.flow_count)

    def _send(self, dp: Any, plan: Plan) -> None:
        """One bundle; once committed, the plan's shadow is what `dp` holds."""
        if plan:
            self.switches.bundle(dp, self._render(dp, plan))
        with self._book_lock:
            self._shadow[dp.id] = (dp, plan.shadow)
            self._last[dp.id] = plan.shadow

    # ---- the sending edge: flow-mod bytes -----------------------------------------------------
    def _render(self, dp: Any, plan: Plan) -> _Rendered:
        return _Rendered(self._add_bytes, dp, plan)

    def _add_bytes(self, flow: Flow, dp: Any) -> bytes:
        """The flow's OFPFC_ADD, encoded once (every bridge speaks OpenFlow 1.3 only)."""
        data = self._wire.get(flow)
        if data is None:
            data = self._wire[flow] = flowmod_bytes(flow, dp, "add")
        return data

    def _prune_wire_cache(self) -> None:
        wire = self._wire
        if len(wire) <= self._wire_limit:
            return
        with self._book_lock:
            lasts = list(self._last.values())
        installed = {f for last in lasts for flows in last.values() for f in flows}
        kept = {f: b for f, b in list(wire.items()) if f in installed}
        self._wire, self._wire_limit = kept, max(MIN_WIRE_CACHE, 2 * len(kept))


class _Rendered(Sequence):
    """A plan's flow-mods as `Switches.bundle` takes them, (bytes, description) pairs,
    encoded as they are iterated: the bundle writes them in chunks and yields between
    chunks, so the switch applies one chunk while the next is encoded, and a push of tens of
    thousands of new flows never holds the hub for the whole encoding."""

    def __init__(self, encode_add: Callable[[Flow, Any], bytes], dp: Any, plan: Plan) -> None:
        self._encode_add = encode_add
        self._dp = dp
        self._plan = plan

    def __len__(self) -> int:
        return len(self._plan.adds) + len(self._plan.deletes) + len(self._plan.stale)

    def __getitem__(self, index: Any) -> Any:       # the Sequence contract; a bundle iterates
        return list(self)[index]

    def __iter__(self) -> Iterator[tuple[Any, Description]]:
        dp, plan = self._dp, self._plan
        for f in plan.adds:
            yield self._encode_add(f, dp), partial(to_ofctl, f)
        for f in plan.deletes:
            yield flowmod_bytes(f, dp, "delete_strict"), partial(to_ofctl, f)
        for d in plan.stale:
            yield _delete_dumped(dp, d), partial(_describe_dumped, d)


def _delete_dumped(dp: Any, flow: Dumped) -> Any:
    """Delete-strict exactly the dumped flow: its table, priority, match and full cookie."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    return parser.OFPFlowMod(dp, cookie=flow.cookie, cookie_mask=FULL_MASK,
                             table_id=flow.table, command=ofp.OFPFC_DELETE_STRICT,
                             priority=flow.priority, out_port=ofp.OFPP_ANY,
                             out_group=ofp.OFPG_ANY, match=flow.match, instructions=[])


def _describe_dumped(flow: Dumped) -> str:
    fields = ",".join(f"{k}={v}" for k, v in flow.match.items())
    return (f"stale table={flow.table},priority={flow.priority},cookie={flow.cookie:#x}"
            + (f",{fields}" if fields else ""))
