"""Finish what a controller that died mid-connect left half done: at a (re)start of this
controller, and (mastership on) when another controller leaves the registry.

What is left over is decided per pending port by its connect's owner
(controller/connect_owners.py): a port whose connect runs in a live controller (this
process, or another whose etcd lease lives) is in flight and stays.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from controller import audit
from controller.connect_owners import Owner, gone
from controller.context import Context
from controller.errors import ApiError
from controller.etcd import StoreError
from controller.store import Port, Tx

LOG = logging.getLogger("loris.service")
DROP_BATCH = 8


LeftOver = Callable[[int, "Owner | None"], bool]


def _left_over(ctx: Context) -> LeftOver:
    """Whether the connect of a port (its id, its owner) can no longer finish. Leases
    unreadable (etcd away): only this controller's own and ownerless rows are left over."""
    me = Owner(ctx.controller_id, ctx.run)
    running = ctx.connects_running
    if ctx.live_leases is None:
        return lambda pid, owner: gone(owner, me, None, pid in running)
    try:
        live = ctx.live_leases()
    except (StoreError, ApiError) as e:
        LOG.warning("reading etcd's leases: %s; the other controllers' unfinished connects "
                    "are left for later", e)
        return lambda pid, owner: (owner is None or owner.controller == me.controller) and \
            gone(owner, me, None, pid in running)
    return lambda pid, owner: gone(owner, me, live, pid in running)


def _stale(tx: Tx, left_over: LeftOver) -> list[Port]:
    owners = tx.connect_owners()
    return [p for p in tx.ports() if p.state != "active" and left_over(p.id, owners.get(p.id))]


def _drop(tx: Tx, left_over: LeftOver, why: str) -> tuple[list[Port], list[int]]:
    """Drop up to DROP_BATCH left-over ports (one etcd transaction holds at most
    --max-txn-ops operations: a port is about ten of them)."""
    owners = tx.connect_owners()
    stale = _stale(tx, left_over)[:DROP_BATCH]
    for port in stale:
        tx.delete_port(port.id)
        owner = owners.get(port.id)
        by = f" (controller {owner.controller})" if owner else ""
        tx.insert_event(audit.CONTROLLER, "drop unfinished connect", f"port:{port.id}", 200,
                        "ok", f"{port.container} on {port.host_id}, pod {port.pod_id}: "
                        f"its connect{by} did not finish before {why}")
    for h in {p.host_id for p in stale}:
        tx.release_unused_vlans(h)
    tx.bump({p.host_id for p in stale})
    empty_pods = tx.drop_empty_implicit_pods()
    for pod_id in empty_pods:
        tx.insert_event(audit.CONTROLLER, "drop unfinished pod", f"pod:{pod_id}", 200,
                        "ok", f"created by connects that did not finish before {why}")
    return stale, empty_pods


def _log(stale: list[Port], empty_pods: list[int], why: str) -> None:
    for port in stale:
        LOG.warning("dropped port %d (%s on %s): its connect did not finish before %s",
                    port.id, port.container, port.host_id, why)
    for pod_id in empty_pods:
        LOG.warning("dropped pod %d: the connects that created it did not finish", pod_id)


def recover(ctx: Context) -> None:
    """At start: drop the ports whose connect died with an earlier run of this controller
    (or with another controller that is gone), and the pods those connects created that no
    connect filled; give every host a new desired version so each agent resynchronises in
    full. What was dropped goes into the audit trail."""
    left_over = _left_over(ctx)
    why = "the controller restarted"

    while True:         # in batches; store.write runs each again if another wrote (etcd)
        stale, empty_pods = ctx.store.write(lambda tx: _drop(tx, left_over, why))
        _log(stale, empty_pods, why)
        if len(stale) < DROP_BATCH:
            break

    def bump(tx: Tx) -> tuple[int, int, int]:
        tx.bump_all()
        return len(tx.hosts()), len(tx.pods()), len(tx.ports())

    counts = ctx.store.write(bump)
    ctx.publish()
    LOG.info("state loaded from %s: %d hosts, %d pods, %d ports", ctx.store.path, *counts)


def sweep(ctx: Context, why: str) -> int:
    """While running (another controller left; every ha.SWEEP_EVERY seconds): drop what
    connects of controllers that are gone left (and ours whose undo failed), tell the
    agents of their hosts and reprogram their pods; how many ports were dropped."""
    left_over = _left_over(ctx)
    with ctx.store.read() as tx:
        if not _stale(tx, left_over):
            return 0
    stale: list[Port] = []
    while True:         # in batches (_drop)
        batch, empty_pods = ctx.store.write(lambda tx: _drop(tx, left_over, why))
        stale += batch
        _log(batch, empty_pods, why)
        if len(batch) < DROP_BATCH:
            break
    if not stale:
        return 0
    ctx.publish()
    ctx.ports_changed([p.id for p in stale])
    with ctx.store.read() as tx:
        hosts = {h.id for h in tx.hosts()}
    for pod_id in {p.pod_id for p in stale}:
        for host in sorted(hosts):
            ctx.programmer.submit(host, [pod_id])
    return len(stale)
