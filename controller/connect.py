"""Connecting a container to a pod (POST /v1/ports) and disconnecting it (DELETE).

Connect is the long one (docs/design.md), a saga of steps each undone on failure:
insert the port `pending` (IPAM chooses its address and MAC; the host's agent is told),
wait for the agent to report its ofport, install the flows on every host of the pod
(barrier-confirmed), mark it `active`, wait for a DHCP port's lease, return. Any failure
removes the row again (and a pod the connect created), bumps the host's version so the
agent removes what it made, and reprograms the pod.

A connect waits on its own port id (`Context.port_waiters`): woken when an agent's report
changes that port or when the port is deleted, not by other ports' news.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable

from controller import ipam, validate, views
from controller.context import Context
from controller.errors import ApiError, conflict, invalid, not_found, unavailable
from controller.metrics import Metrics
from controller.store import Port

LOG = logging.getLogger("loris.service")


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

    def connect(self, req: validate.PortCreate) -> dict:
        ctx = self.ctx
        port, created_pod = self._insert(req)
        what = f"connecting {port.container} on {port.host_id} to pod {port.pod_id}"
        LOG.info("%s: port %d %s %s", what, port.id, port.ip, port.mac)
        phases = _Phases(ctx.metrics)
        try:
            self._wait_wired(port)
            phases.done("wiring")
            with ctx.store.read() as tx:
                hosts = ctx.pod_hosts(tx, port.pod_id)
            ctx.program_pod(port.pod_id, hosts, port.host_id, what)
            phases.done("programming")
            with ctx.store.tx() as tx:
                if tx.port(port.id) is None:
                    raise _deleted(port)
                tx.update_port(port.id, state="active")
                tx.bump([port.host_id])
            ctx.publish()
            if port.dhcp:
                self._wait_leased(port)
                phases.done("lease")
            with ctx.store.read() as tx:
                final = tx.port(port.id)
            if final is None:
                raise _deleted(port)
            phases.finished(True)
            return views.port(final)
        except BaseException as e:
            LOG.warning("%s failed, undoing: %s", what, getattr(e, "message", e))
            phases.finished(False)
            self._undo(port, created_pod)
            raise

    def _insert(self, req: validate.PortCreate) -> tuple[Port, bool]:
        ctx = self.ctx
        try:
            with ctx.store.tx() as tx:
                if tx.host(req.host) is None:
                    raise invalid(f"host {req.host} is not registered; start loris-hostagent "
                                  "on it first", "unknown_host")
                pod = tx.pod(req.pod)
                created_pod = pod is None
                if pod is None:                 # pods come into being on first connect
                    pod = tx.insert_pod(req.pod, None, None)
                existing = tx.port_by_container(req.host, req.container)
                if existing is not None:
                    raise conflict(f"container {req.container} on {req.host} is already "
                                   f"connected (port {existing.id}, pod {existing.pod_id}, "
                                   f"{existing.ip}); disconnect it first", "container_connected")
                iface = ipam.address(tx, pod, req.ip)
                mac = ipam.mac(tx, pod, req.mac)
                if tx.ensure_local_vlan(req.host, pod.id) is None:
                    raise conflict(f"host {req.host} has no free local VLAN (4094 pods there)",
                                   "no_local_vlan")
                port = tx.insert_port(req.host, req.container, pod.id, mac, iface,
                                      req.ip is None)
                tx.bump([req.host])
        except sqlite3.IntegrityError as e:      # a unique constraint the checks above missed
            raise conflict(f"port conflicts with an existing one: {e}", "conflict") from None
        ctx.publish()
        return port, created_pod

    def _wait_for(self, port: Port, done: Callable[[Port], bool], timeout: float) -> Port | None:
        """The port's row once `done(row)` holds; None after `timeout` seconds. Raises if the
        port was deleted meanwhile."""
        found: list[Port | None] = [None]

        def reported() -> bool:
            with self.ctx.store.read() as tx:
                found[0] = row = tx.port(port.id)
            return row is None or done(row)

        if not self.ctx.port_waiters.wait_until(port.id, reported, timeout):
            return None
        if found[0] is None:
            raise _deleted(port)
        return found[0]

    def _wait_wired(self, port: Port) -> None:
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

    def _undo(self, port: Port, created_pod: bool) -> None:
        ctx = self.ctx
        try:
            with ctx.store.tx() as tx:
                if tx.port(port.id) is not None:
                    tx.delete_port(port.id)
                tx.release_unused_vlans(port.host_id)
                if created_pod and not tx.ports(pod_id=port.pod_id):
                    tx.delete_pod(port.pod_id)
                tx.bump([port.host_id])
                hosts = ctx.pod_hosts(tx, port.pod_id) | {port.host_id}
            ctx.publish()
            ctx.program_pod_quietly(port.pod_id, hosts, f"undoing port {port.id}")
        except Exception:
            LOG.exception("undoing port %d failed", port.id)

    def disconnect(self, port_id: int) -> None:
        ctx = self.ctx
        with ctx.store.tx() as tx:
            port = tx.port(port_id)
            if port is None:
                raise not_found(f"port {port_id} does not exist", "port_not_found")
            hosts = ctx.pod_hosts(tx, port.pod_id)
            tx.delete_port(port_id)
            tx.release_unused_vlans(port.host_id)
            tx.bump([port.host_id])
        ctx.publish()
        ctx.ports_changed([port_id])
        LOG.info("disconnected port %d (%s on %s, pod %d)", port.id, port.container,
                 port.host_id, port.pod_id)
        ctx.program_pod_quietly(port.pod_id, hosts, f"disconnecting port {port_id}")
