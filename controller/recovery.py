"""After a (re)start of the controller: finish what the old process left half done."""

from __future__ import annotations

import logging

from controller.context import Context

LOG = logging.getLogger("loris.service")


def recover(ctx: Context) -> None:
    """Drop ports whose connect call died with the old process, and give every host a new
    desired version so each agent resynchronises in full."""
    with ctx.store.tx() as tx:
        stale = [p for p in tx.ports() if p.state != "active"]
        for port in stale:
            tx.delete_port(port.id)
        for h in {p.host_id for p in stale}:
            tx.release_unused_vlans(h)
        tx.bump_all()
        counts = (len(tx.hosts()), len(tx.pods()), len(tx.ports()))
    ctx.publish()
    for port in stale:
        LOG.warning("dropped port %d (%s on %s): its connect did not finish before the "
                    "restart", port.id, port.container, port.host_id)
    LOG.info("state loaded from %s: %d hosts, %d pods, %d ports", ctx.store.path, *counts)
