"""A host's desired flows for one programming job: read from the store when first needed,
and only as much of it as needed (controller/programmer.py's workers use it).

Computing the flows of a big pod makes hundreds of thousands of small objects (a row, a
`PortSpec`, two `Flow`s and their tuples per member), and Python's cyclic garbage collector
would walk the whole heap several times meanwhile although none of them forms a cycle: the
computation runs with the collector paused (`collector_paused`), about a third less time.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from controller import topology
from controller.store import Store
from flows import Flow, HostFlows, host_flows


class HostGone(Exception):
    """The host was removed from the store while its job ran."""


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block (reference counting still frees
    everything that is not in a cycle), on again after it unless it was off before. The
    block must not wait on anything: no other thread should run without a collector for
    long."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


class Desired:
    """A host's desired flows: the pods present on the host for every section, the named
    pods otherwise."""

    def __init__(self, store: Store, host_id: str, sections: Iterable[int | None],
                 problems: topology.Problems) -> None:
        self.store = store
        self.problems = problems
        self.host_id = host_id
        self.pods = {s for s in sections if s is not None}
        self._topo: Any = None
        self._all_pods = False
        self._everything: HostFlows | None = None
        self._partial: HostFlows | None = None

    def _topology(self, all_pods: bool) -> Any:
        if self._topo is None or (all_pods and not self._all_pods):
            found: list[topology.Problem] = []
            with self.store.read(current=False) as tx, collector_paused():
                pods = self.pods | set(tx.local_vlans(self.host_id)) if all_pods else self.pods
                self._topo, _ = topology.build(tx, pods=pods, problems=found,
                                               for_host=self.host_id)
            self.problems.refresh(pods, found)
            self._all_pods = all_pods
            if self.host_id not in self._topo.hosts:
                raise HostGone(self.host_id)
        return self._topo

    def everything(self, bridge: str) -> dict[int | None, frozenset[Flow]]:
        """Every section's flows on `bridge`."""
        if self._everything is None:
            topo = self._topology(all_pods=True)
            with collector_paused():
                self._everything = host_flows(topo, self.host_id)
        return {s: b[bridge] for s, b in self._everything.items()}

    def partial(self, bridge: str) -> dict[int | None, frozenset[Flow]]:
        """The named pods' flows on `bridge`."""
        if self._partial is None:
            topo = self._topology(all_pods=False)
            with collector_paused():
                self._partial = host_flows(topo, self.host_id, pods=sorted(self.pods))
        return {s: b[bridge] for s, b in self._partial.items()}
