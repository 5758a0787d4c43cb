"""Connecting a container to a pod (POST /v1/ports) and disconnecting it (DELETE).

Connect is the long one (docs/design.md), a saga of steps each undone on failure:
insert the port `pending` (IPAM chooses its address and MAC, planned_ofports.py its ofport;
the host's agent is told), install the pod's flows on every host of the pod while waiting
for the agent to report the port's ofport (all barrier-confirmed; the port's own host once
more if OVS gave it another number), mark it `active` (a static port
without a new desired version: it changes nothing on the host), wait for a DHCP port's
lease, return. Any failure removes the row again (and a pod a connect created that no
connect filled: the store's `implicit_pods`), bumps the host's version so the agent removes
what it made, and reprograms the pod.

A connect needs the host's agent: to a host whose agent is away (agents.py) it is refused
at once (503 agent_away, naming the host and how long it has been silent), and a connect
waiting for an agent that goes away fails the same way within a fraction of a second of
that (it looks every WAIT_SLICE seconds), not at the wire timeout.

A connect waits on its own port id (`Context.port_waiters`): woken when an agent's report
changes that port or when the port is deleted, not by other ports' news.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from functools import partial

from controller import docker_ipam, ipam, pods, validate, views
from controller.context import Context
from controller.errors import ApiError, conflict, invalid, not_found, unavailable
from controller.installed import store_revision
from controller.metrics import Metrics
from controller.store import Port, Tx

LOG = logging.getLogger("loris.service")
WAIT_SLICE = 0.25       # a waiting connect checks this often whether the agent went away


def _deleted(port: Port) -> ApiError:
    return conflict(f"port {port.id} was deleted while it was being connected",
                    "port_deleted")


class _Phases:
    """The connect-latency histogram's phases (wiring, programming, lease) and total."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.started = self.mark = time.monotonic()

    def done(self, phase: str) -> None:
        now = time.monotonic()
        self.metrics.connect_phase(phase, now - self.mark)
        self.mark = now

    def finished(self, ok: bool) -> None:
        if ok:
            self.metrics.connect_phase("total", time.monotonic() - self.started)
        self.metrics.connect_result(ok)


class Connections:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def agent_away(self, host_id: str) -> ApiError | None:
        """The 503 a connect to `host_id` gets when its agent is away, else None."""
        silent = self.ctx.board.away(host_id)
        if silent is None:
            return None
        ask = self.ctx.heard_elsewhere_now
        if ask is not None and ask(host_id):
            return None
        settings = self.ctx.settings
        ago = f"{silent:.1f}" if silent < 10 else f"{silent:.0f}"
        seen = (f"was last seen {ago} s ago" if self.ctx.board.last_seen(host_id) is not None
                else f"has not been seen since the controller started {ago} s ago")
        return unavailable(f"the agent of host {host_id} {seen} (agents poll every "
                           f"{settings.agent_poll_interval:g} s and are away after "
                           f"{settings.agent_away_after:g} s); is loris-hostagent running "
                           "there, and can it reach the controller?", "agent_away")

    def connect(self, req: validate.PortCreate) -> dict:
        tried: list[int] = []           # the port ids its insert claimed (connect_owners)
        try:
            return self._connect(req, tried)
        finally:
            self.ctx.connects_running.difference_update(tried)

    def _connect(self, req: validate.PortCreate, tried: list[int]) -> dict:
        ctx = self.ctx
        port = self._insert(req, tried)
        what = f"connecting {port.container} on {port.host_id} to pod {port.pod_id}"
        LOG.info("%s: port %d %s %s", what, port.id, port.ip, port.mac)
        phases = _Phases(ctx.metrics)
        try:
            # Every host of the pod gets its flows while the agent wires the port: the
            # others do not depend on its ofport (controller/topology.py), and its own host
            # uses the number chosen at insert (controller/planned_ofports.py). Without
            # one, or when OVS gave another, the own host is programmed once it is known.
            with ctx.store.read(current=False) as tx:
                hosts = ctx.pod_hosts(tx, port.pod_id) | {port.host_id}
            if port.planned_ofport is None:
                hosts.discard(port.host_id)
            alongside = ctx.start_programming(port.pod_id, hosts, port.host_id, what)
            wired = self._wait_wired(port)
            wired_at = store_revision(ctx.store)        # the store on etcd
            phases.done("wiring")
            elsewhere: set[str] = set()
            if wired.ofport != port.planned_ofport:
                if port.planned_ofport is not None:
                    LOG.info("%s: OVS gave port %d ofport %s, not the planned %s: "
                             "programming %s again", what, port.id, wired.ofport,
                             port.planned_ofport, port.host_id)
                elsewhere = ctx.program_pod(port.pod_id, {port.host_id}, port.host_id, what)
            elsewhere |= ctx.finish_programming(alongside, port.pod_id, port.host_id, what)
            self._wait_masters(port, elsewhere, wired_at, what)
            phases.done("programming")
            ctx.store.write(partial(_activate, port))
            if port.dhcp:
                ctx.publish()
            if port.dhcp:
                self._wait_leased(port)
                phases.done("lease")
            with ctx.store.read(current=False) as tx:
                final = tx.port(port.id)
            if final is None:
                raise _deleted(port)
            phases.finished(True)
            return views.port(final)
        except BaseException as e:
            LOG.warning("%s failed, undoing: %s", what, getattr(e, "message", e))
            phases.finished(False)
            self._undo(port, wait=getattr(e, "code", None) != "agent_away")
            raise

    def _insert(self, req: validate.PortCreate, tried: list[int]) -> Port:
        ctx = self.ctx
        owner = ctx.connect_owner()
        away = self.agent_away(req.host)    # outside the write: it may ask the store

        def insert(tx: Tx) -> Port:
            # store.write runs it again if another controller wrote meanwhile (etcd)
            if tx.host(req.host) is None:
                raise invalid(f"host {req.host} is not registered; start loris-hostagent "
                              "on it first", "unknown_host")
            if away is not None:
                raise away
            pod = pods.find(tx, req.pod)
            if pod is None and isinstance(req.pod, str):
                raise pods.missing(req.pod)     # names are chosen: never made implicitly
            if pod is None:                 # pods come into being on first connect
                pod = tx.insert_pod(req.pod, None, None)      # named pod-<id>
                tx.mark_implicit_pod(pod.id)
            existing = tx.port_by_container(req.host, req.container)
            if existing is not None:
                raise conflict(f"container {req.container} on {req.host} is already "
                               f"connected (port {existing.id}, pod {existing.pod_id}, "
                               f"{existing.ip}); disconnect it first", "container_connected")
            # its own reservation (a Docker endpoint): the MAC that address had, if free
            mac = docker_ipam.claim(tx, pod.id, req.ip, req.host, req.mac)
            iface = ipam.address(tx, pod, req.ip)
            mac = ipam.mac(tx, pod, mac)
            if tx.ensure_local_vlan(req.host, pod.id) is None:
                raise conflict(f"host {req.host} has no free local VLAN (4094 pods there)",
                               "no_local_vlan")
            port = tx.insert_port(req.host, req.container, pod.id, mac, iface,
                                  req.ip is None, tx.plan_ofport(req.host))
            tx.claim_connect(port.id, owner)   # recovery drops it only once we are gone
            # running here before it commits: a sweep of ours never takes it for left over
            ctx.connects_running.add(port.id)
            tried.append(port.id)
            tx.bump([req.host])
            return port

        try:
            port = ctx.store.write(insert)
        except sqlite3.IntegrityError as e:      # a unique constraint the checks above missed
            raise conflict(f"port conflicts with an existing one: {e}", "conflict") from None
        ctx.publish()
        return port

    def _wait_for(self, port: Port, done: Callable[[Port], bool], timeout: float) -> Port | None:
        """The port's row once `done(row)` holds; None after `timeout` seconds. Raises if the
        port was deleted meanwhile."""
        found: list[Port | None] = [None]

        def reported() -> bool:
            with self.ctx.store.read(current=False) as tx:
                found[0] = row = tx.port(port.id)
            return row is None or done(row)

        deadline = time.monotonic() + timeout
        while not self.ctx.port_waiters.wait_until(
                port.id, reported, min(WAIT_SLICE, max(0.0, deadline - time.monotonic()))):
            away = self.agent_away(port.host_id)
            if away is not None:
                raise away
            if time.monotonic() >= deadline:
                return None
        if found[0] is None:
            raise _deleted(port)
        return found[0]

    def _wait_wired(self, port: Port) -> Port:
        timeout = self.ctx.settings.wire_timeout
        row = self._wait_for(port, lambda p: p.ofport is not None or p.error_code is not None,
                             timeout)
        if row is None:
            seen = self.ctx.board.last_seen(port.host_id)
            ago = f"last seen {time.time() - seen:.0f} s ago" if seen else "never seen"
            raise unavailable(f"the agent on host {port.host_id} did not wire container "
                              f"{port.container} within {timeout:g} s (agent {ago}); is "
                              "loris-hostagent running there?", "agent_timeout")
        if row.ofport is None:
            raise ApiError(422, row.error_code or "wiring_failed",
                           f"host {port.host_id} could not wire container {port.container}: "
                           f"{row.error_message}")
        return row

    def _wait_masters(self, port: Port, hosts: set[str], revision: int | None,
                      what: str) -> None:
        """Mastership on: the hosts another controller masters have the port's flows once
        their master says it programmed them from the store at `revision` or later
        (controller/installed.py). The port's own host must; another host that does not
        in time gets them when its master catches up (as a disconnected one would)."""
        marks = self.ctx.installed
        if marks is None or not hosts or revision is None:
            return
        settings = self.ctx.settings
        timeout = 3 * settings.flow_timeout + settings.ha_lease_ttl
        missing = marks.wait(hosts, revision, timeout)
        if port.host_id in missing:
            raise unavailable(f"the OpenFlow master of host {port.host_id} did not install "
                              f"the flows of pod {port.pod_id} within {timeout:g} s; see "
                              "`loris controllers` for the host's master and its health",
                              "flows_failed")
        for host in sorted(missing):
            LOG.warning("%s: the OpenFlow master of host %s has not installed the pod's "
                        "flows within %g s; it will when it catches up", what, host, timeout)

    def _wait_leased(self, port: Port) -> None:
        timeout = self.ctx.settings.lease_timeout
        row = self._wait_for(port, lambda p: p.lease == port.ip or p.error_code is not None,
                             timeout)
        if row is None:
            raise unavailable(f"container {port.container} on {port.host_id} did not report "
                              f"its DHCP lease {port.ip} within {timeout:g} s", "dhcp_timeout")
        if row.lease != port.ip:
            raise ApiError(422, row.error_code or "dhcp_failed",
                           f"container {port.container} on {port.host_id} did not get its DHCP "
                           f"lease {port.ip}: {row.error_message}")

    def _undo(self, port: Port, wait: bool = True) -> None:
        """Remove the port's row (and its implicit pod if it is left empty), tell the agent,
        reprogram the pod; without `wait` the switches are reprogrammed in the background
        (the host's switches may be as unreachable as its agent)."""
        ctx = self.ctx
        def remove(tx: Tx) -> set[str]:
            if tx.port(port.id) is not None:
                tx.delete_port(port.id)
            tx.release_unused_vlans(port.host_id)
            tx.drop_empty_implicit_pods([port.pod_id])
            tx.bump([port.host_id])
            return ctx.pod_hosts(tx, port.pod_id) | {port.host_id}

        try:
            hosts = ctx.store.write(remove)
            ctx.publish()
            if wait:
                ctx.program_pod_quietly(port.pod_id, hosts, f"undoing port {port.id}")
            else:
                for h in hosts:
                    ctx.programmer.submit(h, [port.pod_id])
        except Exception:
            LOG.exception("undoing port %d failed", port.id)

    def disconnect(self, port_id: int) -> None:
        ctx = self.ctx
        def remove(tx: Tx) -> tuple[Port, set[str]]:
            port = tx.port(port_id)
            if port is None:
                raise not_found(f"port {port_id} does not exist", "port_not_found")
            hosts = ctx.pod_hosts(tx, port.pod_id)
            tx.delete_port(port_id)
            tx.release_unused_vlans(port.host_id)
            tx.bump([port.host_id])
            return port, hosts

        port, hosts = ctx.store.write(remove)
        ctx.publish()
        ctx.ports_changed([port_id])
        LOG.info("disconnected port %d (%s on %s, pod %d)", port.id, port.container,
                 port.host_id, port.pod_id)
        ctx.program_pod_quietly(port.pod_id, hosts, f"disconnecting port {port_id}")


def _activate(port: Port, tx: Tx) -> None:
    """The connect's last write: the port is active, its implicit pod stays."""
    if tx.port(port.id) is None:
        raise _deleted(port)
    tx.update_port(port.id, state="active")
    tx.finish_connect(port.id)
    tx.settle_implicit_pod(port.pod_id)
    if port.dhcp:
        # `active` starts a DHCP port's client; for a static port it changes nothing on the
        # host, so its agent is not sent through another pass
        tx.bump([port.host_id])
