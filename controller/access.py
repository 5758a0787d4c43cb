"""Credentials as operations: issue and revoke agent and operator tokens, list them, and
make a revocation bite at once (docs/security.md).

Revoking host H's agent token: its next request gets 401, and so does a long poll of its
agent that is waiting now (woken here); H's switches lose their OpenFlow sessions and are
refused when they reconnect (switch_guard.py). H stays registered: its containers keep the
flows they have, and the other hosts keep their tunnels to it (remove it with
DELETE /v1/hosts/H to take it out). Issuing H a new token lets it back: the agent started
with the new token registers, and its switches are taken again.

`sync()` brings the switch guard and the sessions in line with the store: after every
change made here, and every few seconds (the admin command changes the store from another
process).
"""

from __future__ import annotations

import logging

from controller.auth import Authenticator
from controller.context import Context
from controller.errors import not_found
from controller.switch_guard import SwitchGuard, close_session
from controller.tokens import AGENT, OPERATOR, TokenBook
from flows import contract

LOG = logging.getLogger("loris.access")


class Access:
    def __init__(self, ctx: Context, auth: Authenticator, guard: SwitchGuard) -> None:
        self.ctx = ctx
        self.auth = auth
        self.guard = guard
        self.book: TokenBook | None = auth.book

    def issue_agent(self, host_id: str) -> dict:
        token = self.auth.issue(AGENT, host_id)
        LOG.info("agent token of host %s issued", host_id)
        self.sync()
        return {"host": host_id, "token": token}

    def revoke_agent(self, host_id: str) -> None:
        self.auth.revoke(AGENT, host_id)
        LOG.warning("agent token of host %s revoked", host_id)
        self.sync()

    def issue_operator(self, name: str) -> dict:
        token = self.auth.issue(OPERATOR, name)
        LOG.info("token of operator %s issued", name)
        return {"operator": name, "token": token}

    def revoke_operator(self, name: str) -> None:
        self.auth.revoke(OPERATOR, name)
        LOG.warning("token of operator %s revoked", name)

    def credentials(self) -> list[dict]:
        """Every issued credential (never a token), and the registered hosts that still
        use their token derived from agent.key."""
        if self.book is None:
            raise not_found("this controller keeps no credentials", "not_found")
        rows = self.book.credentials()
        out = [{"kind": c.kind, "name": c.name, "state": "revoked" if c.revoked else "issued",
                "issued_at": c.issued_at, "revoked_at": c.revoked_at} for c in rows]
        own = {c.name for c in rows if c.kind == AGENT}
        with self.ctx.store.read() as tx:
            derived = [h.id for h in tx.hosts() if h.id not in own]
        out += [{"kind": AGENT, "name": h, "state": "derived", "issued_at": None,
                 "revoked_at": None} for h in derived]
        return sorted(out, key=lambda c: (c["kind"], c["name"]))

    def sync(self) -> None:
        """Swap the store's revocations and declared certificates into the switch guard;
        for each host revoked since, wake its agent's long polls (they answer 401) and
        close its switches' sessions (they are refused when they reconnect)."""
        if self.book is None:
            return
        newly = self.guard.update(self.book.revoked_hosts(), self.book.switch_certs())
        if not newly:
            return
        self.ctx.board.wake(newly)
        with self.ctx.store.read() as tx:
            hosts = [tx.host(h) for h in newly]
        for host in filter(None, hosts):
            for bridge in contract.BRIDGES:
                dp = self.ctx.switches.datapath(host.dpid(bridge))
                if dp is not None:
                    LOG.warning("closing the OpenFlow session of %s of revoked host %s",
                                bridge, host.id)
                    close_session(dp)
