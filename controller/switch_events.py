"""What the OpenFlow side asks of the controller's state: a datapath came or went, and
which lease a DHCP packet-in may get.

`connected` and `disconnected` run in os-ken's event handlers: memory only (the datapath
table `Context.dpid_owner`, the programmer's queues), never the store, never a wait.
`dhcp_binding` runs in the DHCP worker and reads the store.
"""

from __future__ import annotations

import ipaddress
import logging

from controller.context import Context
from controller.dhcp import Binding
from controller.store import Port
from flows import Kind, contract, parse_cookie

LOG = logging.getLogger("loris.service")


class SwitchEvents:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def connected(self, dpid: int) -> None:
        """A datapath reached MAIN: reconcile its flows (in the host's worker). No dump is
        forced: a shadow is trusted only on the connection it was built on, so the first
        job to reach this connection reconciles it from a dump, whichever job that is (a
        host's other bridge's, which programs a bridge that connected meanwhile, often is);
        forcing one here dumped a bridge again right after it was reconciled (20,000 flows:
        seconds of the controller's CPU)."""
        found = self.ctx.dpid_owner(dpid)
        if found is None:
            LOG.warning("datapath %#018x connected but no registered host owns it; it gets "
                        "flows once its agent registers", dpid)
            return
        host_id, _bridge = found
        self.ctx.programmer.submit(host_id, None)

    def disconnected(self, dpid: int) -> None:
        self.ctx.programmer.forget(dpid)

    def dhcp_binding(self, dpid: int, in_port: int, cookie: int) -> tuple[Binding, Port] | None:
        """The lease a DHCP packet-in may get: the port named by the cookie must be a DHCP
        port on this very datapath and ofport."""
        parsed = parse_cookie(cookie)
        if parsed is None or parsed[0] != Kind.PORT:
            return None
        with self.ctx.store.read(current=False) as tx:
            port = tx.port(parsed[1])
            if port is None or not port.dhcp or port.ofport != in_port:
                return None
            host = tx.host(port.host_id)
            pod = tx.pod(port.pod_id)
        if host is None or host.dpid_int != dpid or pod is None or pod.network is None:
            return None
        server = contract.dhcp_server(pod.id, pod.network)
        return Binding(ipaddress.IPv4Interface(port.ip), port.mac, server[0], server[1],
                       self.ctx.settings.dhcp_lease_time), port
