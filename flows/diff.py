"""Flow-set differences: what to add, replace and delete to turn `before` into `after`.

A flow is identified on the switch by (table, priority, match). A flow whose key is in both
sets but whose actions (hence cookie) changed is a `modify`: send it as an OpenFlow ADD,
which replaces the flow *and its cookie* (an OF1.3 MODIFY would keep the old cookie).
Deletes should be sent delete-strict with the old flow's cookie and a full cookie mask, so
they can never remove a newer flow that reuses the same match (a reused VLAN or ofport).

Order is safe without bundles: adds go deepest table first (a goto never points at a table
that is not ready yet), deletes go entry table first. `install_order` and `remove_order` are
the one definition of that order; the controller's planner sorts with them too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .flow import Flow

__all__ = ["FlowDiff", "diff", "flatten", "install_order", "remove_order"]


@dataclass(frozen=True, slots=True)
class FlowDiff:
    add: tuple[Flow, ...] = ()
    modify: tuple[Flow, ...] = ()      # the new versions; send as ADD
    delete: tuple[Flow, ...] = ()      # the old versions; send as delete-strict with cookie

    def __len__(self) -> int:
        return len(self.add) + len(self.modify) + len(self.delete)

    def __bool__(self) -> bool:
        return len(self) > 0


def install_order(flow: Flow) -> tuple[int, int, int]:
    """Sort key for adds: deepest table first, then by priority and cookie. No need for the
    match: the cookie carries a digest of it, so two flows of one table tie only when their
    digests collide, and then either order is safe."""
    return (-flow.table, -flow.priority, flow.cookie)


def remove_order(flow: Flow) -> tuple[int, int, int]:
    """Sort key for deletes: entry table first (traffic stops entering before its targets go)."""
    return (flow.table, -flow.priority, flow.cookie)


def diff(before: Mapping[str, frozenset[Flow]],
         after: Mapping[str, frozenset[Flow]]) -> dict[str, FlowDiff]:
    """Per bridge (every bridge named on either side), the changes from `before` to `after`."""
    out: dict[str, FlowDiff] = {}
    for bridge in sorted(set(before) | set(after)):
        old = before.get(bridge, frozenset())
        new = after.get(bridge, frozenset())
        if old == new:
            out[bridge] = FlowDiff()
            continue
        gone = old - new
        came = new - old
        old_keys = {f.key: f for f in gone}
        new_keys = {f.key for f in came}
        add = [f for f in came if f.key not in old_keys]
        modify = [f for f in came if f.key in old_keys]
        delete = [f for f in gone if f.key not in new_keys]
        out[bridge] = FlowDiff(tuple(sorted(add, key=install_order)),
                               tuple(sorted(modify, key=install_order)),
                               tuple(sorted(delete, key=remove_order)))
    return out


def flatten(sections: Mapping[object, Mapping[str, frozenset[Flow]]]) -> dict[str, frozenset[Flow]]:
    """Merge the sections of `host_flows` into one flow set per bridge."""
    out: dict[str, set[Flow]] = {}
    for bridges in sections.values():
        for bridge, flows in bridges.items():
            out.setdefault(bridge, set()).update(flows)
    return {bridge: frozenset(flows) for bridge, flows in out.items()}
