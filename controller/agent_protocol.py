"""The agent protocol's two calls (docs/design.md): the desired-state long poll
(GET /v1/hosts/{id}/desired) and the actual-state report (PUT /v1/hosts/{id}/actual).

The long poll answers an agent that names the state it holds (`have`, a digest) with what
changed since, when this controller served that state (flows/desired_delta.py), else with
the full state. A report may carry only the ports whose state changed: it is applied port
by port, reading only the rows it names.

A report records what the agent made (patch and tunnel ofports, each port's ofport, MTU,
lease or error), wakes the connects waiting on the ports it changed, and queues the
programming that follows: the pods whose members' ofports changed, on every host of those
pods, and the whole host when its patch or tunnel ports changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial
from typing import Any

from controller import validate
from controller.auth import unauthorized
from controller.context import Context
from controller.store import Port, Tx
from flows.desired_delta import ServedStates

LOG = logging.getLogger("loris.service")
FEW_PORTS = 16      # a report naming more ports reads the host's rows in one query


class AgentProtocol:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.served = ServedStates()

    def heard(self, host_id: str) -> None:
        """A request of the host's agent arrived (any call it makes: liveness)."""
        self.ctx.board.seen(host_id)

    def desired(self, host_id: str, since: int | None, wait: float,
                still_valid: Callable[[], bool] | None = None, have: str | None = None) -> dict:
        """The host's desired state; with `since` and `wait`, a long poll held at most the
        poll interval (agents.py: how the controller knows an agent is there). A poll whose
        credentials are revoked meanwhile ends with 401 (`still_valid`). With `have`, the
        digest of the state the agent holds, the changes since that state if known."""
        ctx = self.ctx
        # an unknown host is answered at once, not after the wait
        if ctx.store.read_confirmed(lambda tx: tx.host(host_id)) is None:
            raise ctx.host_missing(host_id)
        if since is not None and wait > 0:
            ctx.board.wait(host_id, since, min(wait, ctx.settings.long_poll_max,
                                               ctx.settings.agent_poll_interval), still_valid)
            if still_valid is not None and not still_valid():
                raise unauthorized(f"the credentials of host {host_id}'s agent were revoked "
                                   "while it waited; an operator issues a new token with "
                                   f"`loris token {host_id}`")
        else:
            ctx.board.seen(host_id)
        state = ctx.store.read_confirmed(partial(_desired_state, host_id))
        if state is None:
            raise ctx.host_missing(host_id)
        return self.served.answer(host_id, *state, have)

    def report_actual(self, host_id: str, report: validate.ActualReport) -> None:
        ctx = self.ctx

        def apply(tx: Tx) -> tuple[list[int], dict[str, set[int | None] | None]]:
            # store.write runs it again if another controller wrote meanwhile (etcd)
            full = False
            pods: set[int] = set()
            changed: list[int] = []
            host = ctx.host_or_404(tx, host_id)
            if report.patch is not None:
                patch = (report.patch.get("br-int"), report.patch.get("br-tun"))
                if patch != (host.int_patch_ofport, host.tun_patch_ofport):
                    tx.set_patch(host_id, *patch)
                    full = True
            if report.tunnels is not None:
                known = {h.id for h in tx.hosts()}
                tunnels = {p: o for p, o in report.tunnels.items() if p in known and p != host_id}
                if tunnels != tx.tunnels(host_id):
                    tx.set_tunnels(host_id, tunnels)
                    full = True
            for port in _reported_rows(tx, host_id, report.ports):
                rep = report.ports[port.id]
                values: dict[str, Any] = {
                    "ofport": rep.ofport, "mtu": rep.mtu, "lease": rep.lease,
                    "error_code": rep.error[0] if rep.error else None,
                    "error_message": rep.error[1] if rep.error else None}
                if rep.ofport is not None:
                    values["planned_ofport"] = None     # the number is known now
                    if port.state == "pending":
                        values["state"] = "wired"
                current = {k: getattr(port, k) for k in values}
                if values != current:
                    tx.update_port(port.id, **values)
                    changed.append(port.id)
                    # a port wired with the number its connect chose changes no flow
                    if replace(port, **values).switch_ofport != port.switch_ofport:
                        pods.add(port.pod_id)
                    if rep.error and rep.error != (port.error_code, port.error_message):
                        LOG.warning("host %s reports port %d (%s): %s: %s", host_id, port.id,
                                    port.container, *rep.error)
            tx.set_actual_version(host_id, report.version)
            targets: dict[str, set[int | None] | None] = {}
            for pod_id in pods:
                for h in ctx.pod_hosts(tx, pod_id):
                    if targets.get(h, set()) is not None:
                        targets.setdefault(h, set()).add(pod_id)
            if full:
                targets[host_id] = None
            return changed, targets

        changed, targets = ctx.store.write(apply)
        ctx.board.seen(host_id)
        if report.stats is not None:
            ctx.board.report_stats(host_id, report.stats)
        ctx.ports_changed(changed)
        for h, sections in targets.items():
            ctx.programmer.submit(h, sections)


def _desired_state(host_id: str, tx: Tx) -> tuple[int, dict, list[dict], list[dict]] | None:
    """(version, the host, its peers, its ports) as the long poll answers them; None if the
    host is not registered."""
    host = tx.host(host_id)
    if host is None:
        return None
    peers = [{"id": h.id, "tunnel_ip": h.tunnel_ip} for h in tx.hosts() if h.id != host_id]
    ports = [{"id": p.id, "container": p.container, "pod": p.pod_id, "mac": p.mac,
              "ip": p.ip, "dhcp": p.dhcp, "state": p.state, "ofport": p.switch_ofport}
             for p in tx.ports(host_id=host_id)]
    about = {"id": host.id, "tunnel_ip": host.tunnel_ip, "tunnel_type": host.tunnel_type}
    return host.desired_version, about, peers, ports


def _reported_rows(tx: Tx, host_id: str, reported: Mapping[int, object]) -> list[Port]:
    """The host's rows of the ports a report names (a port it leaves out is one the agent
    has not made yet, or whose state did not change since its last report: its row stays):
    a report of a few ports reads those rows only."""
    if len(reported) > FEW_PORTS:
        return [p for p in tx.ports(host_id=host_id) if p.id in reported]
    rows = (tx.port(port_id) for port_id in sorted(reported))
    return [p for p in rows if p is not None and p.host_id == host_id]
