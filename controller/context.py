"""What every controller operation shares: the parts, publishing after a commit, and
programming the switches with the result.

An operation is one store transaction plus its side effects. A write validates inside its
transaction and raises ApiError before anything is committed, so a refused request changes
nothing. Side effects run after the commit: `publish()` (agents' long polls return, the
datapath table follows), then the affected hosts' switches are programmed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from controller.agents import AgentBoard
from controller.concurrency import Waiters
from controller.config import Settings
from controller.connect_owners import Owner, new_run
from controller.errors import ApiError, not_found, unavailable
from controller.metrics import Metrics
from controller.programmer import NOT_CONNECTED, NOT_MASTER, NOT_REGISTERED, OK, Future, Programmer
from controller.store import Host, Store, Tx
from controller.switches import Switches
from flows import contract

LOG = logging.getLogger("loris.service")


class Context:
    """The parts an operation needs, and the steps every operation shares."""

    def __init__(self, store: Store, settings: Settings, board: AgentBoard,
                 programmer: Programmer, switches: Switches,
                 metrics: Metrics | None = None) -> None:
        self.store = store
        self.settings = settings
        self.board = board
        self.programmer = programmer
        self.switches = switches
        self.metrics = Metrics() if metrics is None else metrics
        # a connect waits here, on its port id, for the agent's report of that port
        self.port_waiters = Waiters()
        self._publish_lock = threading.Lock()
        # dpid -> (host id, bridge): an immutable snapshot, swapped whole by publish(), so
        # that OpenFlow event handlers read it without a lock and never wait on the store
        self._dpids: Mapping[int, tuple[str, str]] = MappingProxyType({})
        # controllers, masters and roles for the views (controller/ha_views.py; wiring.py)
        self.cluster: Any = None
        # who runs this process's connects (connect_owners.py): the controller id and
        # lease are set by wiring.py when mastership is on
        self.controller_id = settings.controller_id or ""
        self.run = new_run()
        self.lease: Callable[[], int | None] | None = None
        self.live_leases: Callable[[], set[int]] | None = None
        # the ports whose connect runs in this process now (a set: add/discard are atomic)
        self.connects_running: set[int] = set()
        # mastership on the store on etcd: up to which revision each host's master has
        # programmed it (controller/installed.py), for connects made elsewhere
        self.installed: Any = None
        # several controllers: whether another one heard the host's agent lately, asked
        # of the store now (ha.py); a connect's last look before refusing a host as away
        self.heard_elsewhere_now: Callable[[str], bool] | None = None
        self.publish()

    # ---- after a commit --------------------------------------------------------------------
    def publish(self) -> None:
        """After a commit: refresh the datapath table, wake the long polls of the hosts whose
        desired version changed. Serialised, so the last publish shows the latest state."""
        with self._publish_lock:
            with self.store.read(current=False) as tx:
                hosts = tx.hosts()
            self._dpids = MappingProxyType(
                {h.dpid(b): (h.id, b) for h in hosts for b in contract.BRIDGES})
            self.board.publish({h.id: h.desired_version for h in hosts})

    def ports_changed(self, port_ids: Iterable[int]) -> None:
        """After a commit that changed or deleted these ports: wake their connects."""
        self.port_waiters.notify(port_ids)

    def dpid_owner(self, dpid: int) -> tuple[str, str] | None:
        """(host id, bridge) of a registered host's datapath; memory only, for event
        handlers."""
        return self._dpids.get(dpid)

    def connect_owner(self) -> Owner:
        """The owner a connect started now records; with mastership on, a controller
        without an etcd lease runs none (no other controller could tell it alive)."""
        if self.lease is None:
            return Owner(self.controller_id, self.run)
        lease = self.lease()
        if lease is None:
            raise unavailable(f"controller {self.controller_id} holds no etcd lease at the "
                              "moment (it is registering again); retry, or connect through "
                              "another controller", "controller_unregistered")
        return Owner(self.controller_id, self.run, lease)

    # ---- reads inside a transaction --------------------------------------------------------
    @staticmethod
    def host_or_404(tx: Tx, host_id: str) -> Host:
        host = tx.host(host_id)
        if host is None:
            raise Context.host_missing(host_id)
        return host

    @staticmethod
    def host_missing(host_id: str) -> ApiError:
        return not_found(f"host {host_id} is not registered (start loris-hostagent on it)",
                         "host_not_found")

    @staticmethod
    def pod_hosts(tx: Tx, pod_id: int) -> set[str]:
        return {p.host_id for p in tx.ports(pod_id=pod_id)}

    # ---- programming the switches ----------------------------------------------------------
    def program_pod(self, pod_id: int, hosts: Iterable[str], required: str | None = None,
                    what: str = "") -> set[str]:
        """Install a pod's flows on `hosts`; raise if `required`'s bridges did not take them,
        or if a connected switch rejected them. Hosts whose switches are not connected are
        skipped: they are reconciled in full when they connect. Hosts other than `required`
        whose agent is away (agents.py) get the flows in the background, unwaited for: they
        may be unreachable, and are recomputed in full when their agent is back. Returns
        the hosts whose OpenFlow master is another controller (mastership on)."""
        return self.finish_programming(self.start_programming(pod_id, hosts, required, what),
                                       pod_id, required, what)

    def start_programming(self, pod_id: int, hosts: Iterable[str], required: str | None = None,
                          what: str = "") -> dict[str, Future]:
        """The first half of program_pod: queue the jobs, return the ones to wait for (give
        them to finish_programming), so that something else can run meanwhile."""
        away = {h for h in hosts if h != required and self.board.away(h) is not None}
        for host_id in sorted(away):
            LOG.info("%s: the agent of host %s is away: its switches get pod %d's flows in "
                     "the background", what, host_id, pod_id)
            self.programmer.submit(host_id, [pod_id])
        return {h: self.programmer.submit(h, [pod_id]) for h in hosts if h not in away}

    def finish_programming(self, started: dict[str, Future], pod_id: int,
                           required: str | None = None, what: str = "") -> set[str]:
        """The second half of program_pod: wait for the jobs, raise and return as it does."""
        results = self.programmer.wait(started, 3 * self.settings.flow_timeout)
        elsewhere: set[str] = set()
        for host_id, bridges in sorted(results.items()):
            for bridge, status in bridges.items():
                if status == OK:
                    continue
                if status == NOT_MASTER:
                    LOG.debug("%s: %s of %s is programmed by its OpenFlow master", what,
                              bridge, host_id)
                    elsewhere.add(host_id)
                    continue
                if host_id != required and status in (NOT_CONNECTED, NOT_REGISTERED):
                    LOG.info("%s: %s of %s: %s; it gets the flows when it connects", what,
                             bridge, host_id, status)
                    continue
                if status != NOT_CONNECTED:
                    raise unavailable(f"installing the flows of pod {pod_id} on {bridge} of "
                                      f"host {host_id} failed: {status}", "flows_failed")
                raise unavailable(f"{bridge} of host {host_id} is not connected to the "
                                  "controller over OpenFlow; check loris-hostagent and the "
                                  "bridge's controller target there", "switch_not_connected")
        return elsewhere

    def program_pod_quietly(self, pod_id: int, hosts: Iterable[str], what: str) -> None:
        """program_pod after a change that is committed whatever happens: a switch that
        missed it is reconciled later, so a failure is only logged."""
        try:
            self.program_pod(pod_id, hosts, None, what)
        except ApiError as e:
            LOG.warning("%s: %s", what, e.message)

    def program_everyone(self, wait: bool = False) -> None:
        """Recompute every host in full; with `wait`, until their switches confirmed (a
        failure is logged: the state change is committed and a switch that missed it is
        reconciled when it reconnects)."""
        with self.store.read(current=False) as tx:
            hosts = [h.id for h in tx.hosts()]
        if not wait:
            for h in hosts:
                self.programmer.submit(h, None)
            return
        results = self.programmer.program({h: None for h in hosts},
                                          3 * self.settings.flow_timeout)
        for host_id, bridges in sorted(results.items()):
            for bridge, status in bridges.items():
                if status not in (OK, NOT_CONNECTED, NOT_REGISTERED, NOT_MASTER):
                    LOG.warning("reprogramming %s of %s: %s", bridge, host_id, status)
