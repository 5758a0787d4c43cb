"""What to send to a bridge so that it holds the flows it should. Pure: plain `Flow` values
in, plain plans out; no sockets, no os-ken, no store, no threads (controller/programmer.py
does all of that and asks this module what to send).

A bridge's flows come in sections (None = the host's base pipeline, <pod id> = one pod), as
`flows.host_flows` computes them; a flow is in one section only (its cookie names the
object it belongs to). The programmer keeps per datapath a *shadow*: the flows it installed
there, by section, trusted for as long as the connection it was built on lasts.

- `update(shadow, new, sections)`: the shadow is trusted, so the plan is the difference
  between the shadow's and the new flows of the named sections (all of them by default),
  nothing read from the switch. Sections not named keep their flows.
- `reconcile(dumped, desired)`: after a (re)connect or a failure there is no trusted
  shadow; from a dump of the bridge's Loris flows, add what is missing and delete what
  nobody wants. A dumped flow whose (cookie, table, priority) is wanted stays: the cookie
  carries a digest of the flow's text, match and actions included.
- `steps(...)`: which of those a job runs on one bridge, from what the programmer knows.

A plan is one atomic, ordered bundle: `adds` first (deepest table first, so a goto never
points at a table that is not filled yet), then `deletes` and `stale` (entry table first).
An add of a flow whose key (table, priority, match) is on the switch replaces that flow,
cookie included; every delete is strict and carries the deleted flow's full cookie, so it
can never remove a flow that an add of the same bundle put under the same key. Hence a flow
that is on the switch and wanted by a plan stays on the switch throughout.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NamedTuple

from flows import LORIS_COOKIE, LORIS_COOKIE_MASK, Flow, diff
from flows.diff import install_order

Section = int | None
# section -> the flows of that section on one bridge; a section without flows is left out
Shadow = Mapping[Section, frozenset[Flow]]
_NONE: frozenset[Flow] = frozenset()


class Dumped(NamedTuple):
    """A Loris flow as a dump of the switch gave it. `match` is whatever the dump carried
    (an os-ken OFPMatch); the planner only hands it back, for a strict delete. (A tuple: a
    dump of 20,000 flows makes 20,000 of them.)"""
    cookie: int
    table: int
    priority: int
    match: Any = None

    @property
    def identity(self) -> tuple[int, int, int]:
        return self[:3]


# os-ken parses every message a switch streams to it before it yields to the hub (it yields
# once per 2,048 messages): a dump of 20,000 flows in one request held the controller for
# 5-8 s (~0.3 ms a flow), long enough for every agent's long poll to go unanswered. A dump is
# asked for in parts of about this many flows, each a request of its own: the hub runs other
# work between them.
DUMP_PART_FLOWS = 1024


def dump_parts(flows: int, per_part: int = DUMP_PART_FLOWS) -> list[tuple[int, int]]:
    """(cookie, cookie mask) of each flow-stats request that together dump the Loris flows
    of a bridge holding `flows` of them, about `per_part` each. The parts split on the low
    bits of the cookie's digest (a crc32: evenly spread), so they are disjoint and cover
    every Loris cookie."""
    bits = 0
    while flows > per_part << bits:
        bits += 1
    low = (1 << bits) - 1
    return [(LORIS_COOKIE | part, LORIS_COOKIE_MASK | low) for part in range(1 << bits)]


def dumped_order(flow: Dumped) -> tuple[int, int, int]:
    """Deletes of dumped flows go entry table first, as `flows.diff.remove_order`."""
    return (flow.table, -flow.priority, flow.cookie)


@dataclass(frozen=True)
class Plan:
    """One bundle for one bridge, and what the bridge holds once it is committed."""
    adds: tuple[Flow, ...] = ()        # OFPFC_ADD: new flows, and new versions of a key
    deletes: tuple[Flow, ...] = ()     # delete-strict, full cookie: flows we installed
    stale: tuple[Dumped, ...] = ()     # delete-strict, full cookie: dumped, not wanted
    shadow: Shadow = field(default_factory=dict)   # never mutated once made
    replaced: int = 0                  # how many of `adds` replace a flow of the same key
    kept: int = 0                      # reconcile: wanted flows that were in place

    def __len__(self) -> int:
        return len(self.adds) + len(self.deletes) + len(self.stale)

    @property
    def flow_count(self) -> int:
        return sum(len(flows) for flows in self.shadow.values())


def update(shadow: Shadow, new: Shadow, sections: Iterable[Section] | None = None) -> Plan:
    """The bridge holds `shadow` (trusted); make the named sections what `new` says (every
    section of either side when `sections` is None: what is in no section of `new` goes)."""
    names = set(shadow) | set(new) if sections is None else set(sections)
    before = _NONE.union(*(shadow.get(s, _NONE) for s in names))
    after = _NONE.union(*(new.get(s, _NONE) for s in names))
    change = diff({"": before}, {"": after})[""]
    result = {s: flows for s, flows in shadow.items() if s not in names}
    result.update((s, new[s]) for s in names if new.get(s))
    return Plan(adds=change.add + change.modify, deletes=change.delete, shadow=result,
                replaced=len(change.modify))


def reconcile(dumped: Iterable[Dumped], desired: Shadow) -> Plan:
    """The bridge holds `dumped` (its Loris flows, from a dump); make it hold `desired`
    exactly, leaving every wanted flow that is already there in place."""
    want = {(f.cookie, f.table, f.priority): f for flows in desired.values() for f in flows}
    present: set[tuple[int, int, int]] = set()
    stale: list[Dumped] = []
    for flow in dumped:
        identity = flow[:3]                     # flow.identity, without a call per flow
        if identity in want:
            present.add(identity)
        else:
            stale.append(flow)
    missing = sorted((f for k, f in want.items() if k not in present), key=install_order)
    return Plan(adds=tuple(missing), stale=tuple(sorted(stale, key=dumped_order)),
                shadow={s: flows for s, flows in desired.items() if flows},
                kept=len(present))


class Step(Enum):
    RESTORE = "reconcile a dump with the flows the bridge last had, before any computing"
    RECONCILE = "reconcile a dump with every section computed from the store"
    ALL = "update every section from the shadow"
    SECTIONS = "update the job's sections from the shadow"


def steps(shadow_trusted: bool, last_known: bool, full: bool) -> tuple[Step, ...]:
    """What a job does on one connected bridge.

    `shadow_trusted`: the programmer has a shadow built on this very connection and the job
    does not ask for a resync. `last_known`: the flows last installed on this datapath are
    known (kept across disconnects, dropped after any failure). `full`: the job covers
    every section.

    Without a trusted shadow the switch is read: a bridge that had flows gets exactly those
    back first (their flow-mods are cached, nothing needs computing; a switch that lost
    20,000 flows has them again in about the time it needs to take them), then the store's
    truth as a difference; otherwise the dump is reconciled with the store's truth at once.
    """
    if not shadow_trusted:
        return (Step.RESTORE, Step.ALL) if last_known else (Step.RECONCILE,)
    return (Step.ALL,) if full else (Step.SECTIONS,)
