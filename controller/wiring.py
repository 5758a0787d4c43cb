"""Assemble the controller's parts; the os-ken app and the tests build it the same way."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from controller.access import Access
from controller.agent_protocol import AgentProtocol
from controller.agents import AgentBoard
from controller.api import Api, Operations
from controller.audit import AuditTrail
from controller.auth import Authenticator
from controller.config import Settings
from controller.connect import Connections
from controller.context import Context
from controller.dhcp import RateLimiter, Responder
from controller.docker_ipam import DockerIpam
from controller.etcd_mirror import Changes
from controller.etcd_store import EtcdStore
from controller.ha import HighAvailability
from controller.ha import identity as ha_identity
from controller.ha_views import ClusterView
from controller.hosts import Hosts
from controller.installed import InstalledMarks
from controller.metrics import Metrics, Sources
from controller.observe import Observe
from controller.pods import Pods
from controller.programmer import Programmer
from controller.reads import Reads
from controller.roles import Roles
from controller.store import Store
from controller.stores import etcd_client, open_store
from controller.switch_events import SwitchEvents
from controller.switch_guard import SwitchGuard
from controller.switches import Switches
from controller.tokens import TokenBook

LOG = logging.getLogger("loris.service")


def _agent_back(programmer: Programmer, host_id: str, silent: float) -> None:
    """An agent away for `silent` seconds is back: recompute its host's switches in full
    (the pods' flows other connects sent them meanwhile were not waited for). Not from a
    dump: a bridge whose job failed meanwhile has lost its shadow and is dumped anyway, one
    that reconnected is reconciled on connecting, and the others' shadows are what they
    hold. (A forced dump of a large bridge kept the controller busy for seconds, long
    enough to find the agent away again: a loop.)"""
    LOG.info("the agent of host %s is back after %.0f s away: recomputing its switches",
             host_id, silent)
    programmer.submit(host_id, None)


def _changed_elsewhere(ctx: Context, changes: Changes) -> None:
    """Rows another controller wrote (the etcd store's watch): wake the long polls of the
    hosts whose desired version moved and the connects waiting on those ports."""
    if "hosts" in changes:
        ctx.publish()
    ports = [int(pk[0]) for pk in changes.get("ports", ())]
    if ports:
        ctx.ports_changed(ports)


@dataclass
class Parts:
    settings: Settings
    store: Store | EtcdStore
    switches: Switches
    programmer: Programmer
    board: AgentBoard
    context: Context
    ops: Operations               # what the REST handlers call
    switch_events: SwitchEvents   # what the OpenFlow handlers and the DHCP worker call
    api: Api
    dhcp: Responder
    dhcp_limit: RateLimiter
    metrics: Metrics
    # operator safety: credentials, which switches may connect, the audit trail
    auth: Authenticator | None = None
    access: Access | None = None
    switch_guard: SwitchGuard | None = None
    audit: AuditTrail | None = None
    # several controllers (docs/ha.md): OpenFlow roles; mastership through etcd when set
    roles: Roles | None = None
    ha: HighAvailability | None = None


def build(settings: Settings, spawn: Callable[..., Any], make_queue: Callable[[], Any],
          queue_empty: type[BaseException], auth: Authenticator | None = None,
          store: Store | EtcdStore | None = None) -> Parts:
    """`spawn(fn, *args)` starts a thread of the running hub; `make_queue()` makes a queue
    whose `get(block=False)` raises `queue_empty`. `auth` checks the REST API's callers (the
    controller always has one: auth.load_or_create; None leaves the API open, for in-process
    tests). `store` defaults to the one the settings ask for (stores.open_store). With `auth`
    the credentials are checked against the store (controller/tokens.py) and every write is
    audited."""
    store = open_store(settings) if store is None else store
    switches = Switches(settings.flow_timeout)
    programmer = Programmer(store, switches, spawn, make_queue, queue_empty)
    board = AgentBoard(settings.agent_away_after, partial(_agent_back, programmer))
    metrics = Metrics()
    store.on_commit = metrics.store_commit
    ctx = Context(store, settings, board, programmer, switches, metrics)
    if isinstance(store, EtcdStore):
        store.on_change = partial(_changed_elsewhere, ctx)
    reads = Reads(ctx)
    guard = SwitchGuard()
    access = audit = None
    if auth is not None:
        auth = auth.with_book(TokenBook(store), settings.derived_agent_tokens)
        access = Access(ctx, auth, guard)
        access.sync()
        audit = AuditTrail(store, settings.audit_max_events, settings.audit_max_days)
    ops = Operations(reads=reads, hosts=Hosts(ctx, reads), pods=Pods(ctx),
                     ports=Connections(ctx), agents=AgentProtocol(ctx), access=access,
                     observe=Observe(ctx), docker=DockerIpam(ctx))
    events = SwitchEvents(ctx)
    api = Api(ops, settings.max_body, auth, audit, metrics)

    def lookup(dpid: int, in_port: int, cookie: int) -> tuple[Any, Any] | None:
        found = events.dhcp_binding(dpid, in_port, cookie)
        if found is None:
            return None
        binding, port = found
        return binding, f"port {port.id}, {port.container} on {port.host_id}"

    dhcp, dhcp_limit = Responder(lookup), RateLimiter(settings.dhcp_rate, 10)
    metrics.attach(Sources(store, switches, board, lambda: dict(dhcp.replies),
                           lambda: dhcp_limit.dropped))
    roles, ha = _high_availability(settings, ctx, switches, programmer)
    return Parts(settings, store, switches, programmer, board, ctx, ops, events, api,
                 dhcp, dhcp_limit, metrics, auth, access, guard, audit, roles, ha)


def _high_availability(settings: Settings, ctx: Context, switches: Switches,
                       programmer: Programmer) -> tuple[Roles, HighAvailability | None]:
    """Roles for every connection; with etcd endpoints, the registry and mastership loop
    (its threads are started by the app: loris_app.py)."""
    endpoints = settings.etcd_endpoint_list
    roles = Roles(switches, enforced=bool(endpoints))
    switches.write_gate = roles.may_write
    me = ha_identity(settings)
    ctx.controller_id = me.id
    ha = None
    if endpoints:
        client = etcd_client(settings, timeout=max(1.0, settings.ha_lease_ttl / 4))
        prefix = settings.etcd_prefix.rstrip("/") + "-ha/"
        ha = HighAvailability(client, me, settings.ha_lease_ttl, settings.ha_interval, ctx,
                              switches, roles, programmer, prefix=prefix)
        ctx.lease, ctx.live_leases = ha.lease, ha.live_leases
        ctx.heard_elsewhere_now = ha.heard_elsewhere_now
        if isinstance(ctx.store, EtcdStore):    # revisions to wait for (installed.py)
            ha.marks = ctx.installed = InstalledMarks(client, prefix, ha.lease,
                                                      settings.flow_timeout)
            changed = ctx.store.on_change

            def moved(changes: Changes) -> None:
                if changed is not None:
                    changed(changes)
                ha.store_moved()            # the masters reprogram at once

            ctx.store.on_change = moved
            committed = ctx.store.on_commit

            def wrote(seconds: float) -> None:
                if committed is not None:
                    committed(seconds)
                ha.store_moved()            # our own writes too (an agent's report here)

            ctx.store.on_commit = wrote
    ctx.cluster = ClusterView(ctx, me, roles, ha)
    return roles, ha
