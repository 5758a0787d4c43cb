"""Assemble the controller's parts; the os-ken app and the tests build it the same way."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controller.agents import AgentBoard
from controller.api import Api
from controller.auth import Authenticator
from controller.config import Settings
from controller.dhcp import RateLimiter, Responder
from controller.programmer import Programmer
from controller.service import Service
from controller.store import Store
from controller.switches import Switches


@dataclass
class Parts:
    settings: Settings
    store: Store
    switches: Switches
    programmer: Programmer
    board: AgentBoard
    service: Service
    api: Api
    dhcp: Responder
    dhcp_limit: RateLimiter


def build(settings: Settings, spawn: Callable[..., Any], make_queue: Callable[[], Any],
          queue_empty: type[BaseException], auth: Authenticator | None = None) -> Parts:
    """`spawn(fn, *args)` starts a thread of the running hub; `make_queue()` makes a queue
    whose `get(block=False)` raises `queue_empty`. `auth` checks the REST API's callers (the
    controller always has one: auth.load_or_create; None leaves the API open, for in-process
    tests)."""
    store = Store(settings.db)
    switches = Switches(settings.flow_timeout)
    programmer = Programmer(store, switches, spawn, make_queue, queue_empty)
    board = AgentBoard()
    service = Service(store, settings, board, programmer, switches)
    api = Api(service, settings.max_body, auth)

    def lookup(dpid: int, in_port: int, cookie: int) -> tuple[Any, Any] | None:
        found = service.dhcp_binding(dpid, in_port, cookie)
        if found is None:
            return None
        binding, port = found
        return binding, f"port {port.id}, {port.container} on {port.host_id}"

    return Parts(settings, store, switches, programmer, board, service, api,
                 Responder(lookup), RateLimiter(settings.dhcp_rate, 10))
