"""After a (re)start of the controller: finish what the old process left half done."""

from __future__ import annotations

import logging

from controller import audit
from controller.context import Context
from controller.store import Port, Tx

LOG = logging.getLogger("loris.service")


def recover(ctx: Context) -> None:
    """Drop ports whose connect call died with the old process, and the pods those connects
    created that no connect filled; give every host a new desired version so each agent
    resynchronises in full. What was dropped goes into the audit trail."""
    def drop(tx: Tx) -> tuple[list[Port], list[int], tuple[int, int, int]]:
        # run again if another controller wrote meanwhile (etcd)
        stale = [p for p in tx.ports() if p.state != "active"]
        for port in stale:
            tx.delete_port(port.id)
            tx.insert_event(audit.CONTROLLER, "drop unfinished connect", f"port:{port.id}", 200,
                            "ok", f"{port.container} on {port.host_id}, pod {port.pod_id}: "
                            "its connect did not finish before the controller restarted")
        for h in {p.host_id for p in stale}:
            tx.release_unused_vlans(h)
        empty_pods = tx.drop_empty_implicit_pods()
        for pod_id in empty_pods:
            tx.insert_event(audit.CONTROLLER, "drop unfinished pod", f"pod:{pod_id}", 200,
                            "ok", "created by connects that did not finish before the "
                            "controller restarted")
        tx.bump_all()
        return stale, empty_pods, (len(tx.hosts()), len(tx.pods()), len(tx.ports()))

    stale, empty_pods, counts = ctx.store.write(drop)
    ctx.publish()
    for port in stale:
        LOG.warning("dropped port %d (%s on %s): its connect did not finish before the "
                    "restart", port.id, port.container, port.host_id)
    for pod_id in empty_pods:
        LOG.warning("dropped pod %d: the connects that created it did not finish", pod_id)
    LOG.info("state loaded from %s: %d hosts, %d pods, %d ports", ctx.store.path, *counts)
