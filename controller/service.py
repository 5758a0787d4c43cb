"""The operations behind the REST API, each one store transaction plus its side effects.

A write validates inside its transaction and raises ApiError before anything is committed,
so a refused request changes nothing. Side effects run after the commit: publish the new
desired versions (agents' long polls return), then program the affected hosts' switches.

Connect (POST /v1/ports) is the long one (docs/design.md): insert the port `pending`, wait
for the agent to report its ofport, install the flows on every host of the pod
(barrier-confirmed), mark it `active`, wait for a DHCP port's lease, return. Any failure
removes the row again and bumps the host's version, so the agent removes what it made.
"""

from __future__ import annotations

import ipaddress
import logging
import sqlite3
import time
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from typing import Any

from controller import openapi, validate, views
from controller.agents import AgentBoard, Changes
from controller.config import Settings
from controller.dhcp import Binding
from controller.errors import ApiError, conflict, invalid, not_found, unavailable
from controller.programmer import NOT_CONNECTED, NOT_REGISTERED, OK, Programmer
from controller.store import Host, Port, Store, Tx
from controller.switches import Switches
from flows import Kind, contract, parse_cookie
from flows.contract import GLOBAL_POD

LOG = logging.getLogger("loris.service")


class Service:
    def __init__(self, store: Store, settings: Settings, board: AgentBoard,
                 programmer: Programmer, switches: Switches) -> None:
        self.store = store
        self.settings = settings
        self.board = board
        self.programmer = programmer
        self.switches = switches
        self.port_changes = Changes()     # connect calls wait here for agent reports
        # dpid -> (host id, bridge), kept in memory so OpenFlow event handlers never wait
        # on the store
        self.dpids: dict[int, tuple[str, str]] = {}
        self._publish()

    # ---- plumbing ---------------------------------------------------------------------
    def _publish(self) -> None:
        """After a commit: wake the agents' long polls, refresh the dpid table."""
        with self.store.tx() as tx:
            hosts = tx.hosts()
        self.dpids = {h.dpid(b): (h.id, b) for h in hosts for b in contract.BRIDGES}
        self.board.publish({h.id: h.desired_version for h in hosts})

    def _host_or_404(self, tx: Tx, host_id: str) -> Host:
        host = tx.host(host_id)
        if host is None:
            raise not_found(f"host {host_id} is not registered (start loris-hostagent on it)",
                            "host_not_found")
        return host

    def _program_pod(self, pod_id: int, hosts: Iterable[str], required: str | None = None,
                     what: str = "") -> None:
        """Install a pod's flows on `hosts`; raise if `required`'s bridges did not take them,
        or if a connected switch rejected them. Hosts whose switches are not connected are
        skipped: they are reconciled in full when they connect."""
        results = self.programmer.program({h: [pod_id] for h in hosts},
                                          3 * self.settings.flow_timeout)
        for host_id, bridges in sorted(results.items()):
            for bridge, status in bridges.items():
                if status == OK:
                    continue
                if host_id != required and status in (NOT_CONNECTED, NOT_REGISTERED):
                    LOG.info("%s: %s of %s: %s; it gets the flows when it connects", what,
                             bridge, host_id, status)
                    continue
                if status != NOT_CONNECTED:
                    raise unavailable(f"installing the flows of pod {pod_id} on {bridge} of "
                                      f"host {host_id} failed: {status}", "flows_failed")
                raise unavailable(f"{bridge} of host {host_id} is not connected to the "
                                  "controller over OpenFlow; check loris-hostagent and the "
                                  "bridge's controller target there", "switch_not_connected")

    @staticmethod
    def _pod_hosts(tx: Tx, pod_id: int) -> set[str]:
        return {p.host_id for p in tx.ports(pod_id=pod_id)}

    # ---- reads --------------------------------------------------------------------------
    def version(self) -> dict:
        try:
            osken = dist_version("os-ken")
        except PackageNotFoundError:
            osken = "unknown"
        return {"version": openapi.VERSION, "api": "v1", "os_ken": osken}

    def health(self) -> dict:
        with self.store.tx() as tx:
            tx.hosts()
        return {"status": "ok"}

    def _host_view(self, tx: Tx, host: Host) -> dict:
        return views.host(host, tx.tunnels(host.id), len(tx.ports(host_id=host.id)),
                          self.switches, self.board, self.settings.openflow_port,
                          self.settings.openflow_tls, self.programmer.problems.of_host(host.id))

    def list_hosts(self) -> list[dict]:
        with self.store.tx() as tx:
            return [self._host_view(tx, h) for h in tx.hosts()]

    def show_host(self, host_id: str) -> dict:
        with self.store.tx() as tx:
            return self._host_view(tx, self._host_or_404(tx, host_id))

    def list_pods(self) -> list[dict]:
        with self.store.tx() as tx:
            counts = tx.pod_port_counts()
            return [views.pod(p, counts.get(p.id, 0)) for p in tx.pods()]

    def show_pod(self, pod_id: int) -> dict:
        with self.store.tx() as tx:
            pod = tx.pod(pod_id)
            if pod is None:
                raise not_found(f"pod {pod_id} does not exist", "pod_not_found")
            members = tx.ports(pod_id=pod_id)
            return views.pod(pod, len(members), members)

    def list_ports(self, pod: int | None = None, host: str | None = None,
                   container: str | None = None) -> list[dict]:
        with self.store.tx() as tx:
            return [views.port(p) for p in tx.ports(pod, host, container)]

    def show_port(self, port_id: int) -> dict:
        with self.store.tx() as tx:
            port = tx.port(port_id)
            if port is None:
                raise not_found(f"port {port_id} does not exist", "port_not_found")
            return views.port(port)

    # ---- hosts ----------------------------------------------------------------------------
    def register_host(self, reg: validate.HostRegistration) -> tuple[dict, bool]:
        with self.store.tx() as tx:
            old = tx.host(reg.id)
            for bridge, dpid in (("br-int", reg.dpid_int), ("br-tun", reg.dpid_tun)):
                owner = tx.host_by_dpid(dpid)
                if owner and owner[0].id != reg.id:
                    raise conflict(f"datapath id {dpid:#018x} ({bridge}) is already used by "
                                   f"host {owner[0].id}; each host needs its own datapath ids",
                                   "dpid_in_use")
            other = tx.host_by_tunnel_ip(reg.tunnel_ip)
            if other and other.id != reg.id:
                raise conflict(f"tunnel IP {reg.tunnel_ip} is already used by host {other.id}",
                               "tunnel_ip_in_use")
            for h in tx.hosts():
                if h.id != reg.id and h.tunnel_type != reg.tunnel_type:
                    raise conflict(f"the cluster uses {h.tunnel_type} tunnels (host {h.id}); "
                                   f"start this agent with tunnel type {h.tunnel_type}",
                                   "tunnel_type_mismatch")
            if old is None:
                tx.insert_host(reg.id, reg.tunnel_ip, reg.tunnel_type, reg.dpid_int,
                               reg.dpid_tun)
                tx.bump_all()                 # every agent gets a new peer
            else:
                tx.update_host(reg.id, reg.tunnel_ip, reg.tunnel_type, reg.dpid_int,
                               reg.dpid_tun)
                if (old.tunnel_ip, old.tunnel_type) != (reg.tunnel_ip, reg.tunnel_type):
                    tx.bump_all()             # peers re-point their tunnel ports
            view = self._host_view(tx, tx.host(reg.id))
        self._publish()
        if old is None or (old.dpid_int, old.dpid_tun) != (reg.dpid_int, reg.dpid_tun):
            # bridges that connected before the host registered get their flows now (the
            # others when they connect)
            early = [b for b, d in (("br-int", reg.dpid_int), ("br-tun", reg.dpid_tun))
                     if self.switches.datapath(d) is not None]
            if early:
                self.programmer.submit(reg.id, None, sync=early)
        if old is not None and old.tunnel_ip != reg.tunnel_ip:
            self._program_everyone()
        LOG.info("host %s %s (tunnel %s %s)", reg.id, "registered" if old is None else
                 "re-registered", reg.tunnel_type, reg.tunnel_ip)
        return view, old is None

    def remove_host(self, host_id: str) -> None:
        with self.store.tx() as tx:
            host = self._host_or_404(tx, host_id)
            for port in tx.ports(host_id=host_id):
                tx.delete_port(port.id)
            tx.delete_host(host_id)
            tx.bump_all()
        self._publish()
        self.board.forget(host_id)
        cleared = self.programmer.clear(host_id, [host.dpid(b) for b in contract.BRIDGES])
        try:
            cleared.wait(3 * self.settings.flow_timeout)
        except Exception as e:
            LOG.warning("clearing the flows of removed host %s: %s", host_id, e)
        self._program_everyone(wait=True)
        LOG.info("host %s removed with its ports", host_id)

    def _program_everyone(self, wait: bool = False) -> None:
        """Recompute every host in full; with `wait`, until their switches confirmed (a
        failure is logged: the state change is committed and a switch that missed it is
        reconciled when it reconnects)."""
        with self.store.tx() as tx:
            hosts = [h.id for h in tx.hosts()]
        if not wait:
            for h in hosts:
                self.programmer.submit(h, None)
            return
        results = self.programmer.program({h: None for h in hosts},
                                          3 * self.settings.flow_timeout)
        for host_id, bridges in sorted(results.items()):
            for bridge, status in bridges.items():
                if status not in (OK, NOT_CONNECTED, NOT_REGISTERED):
                    LOG.warning("reprogramming %s of %s: %s", bridge, host_id, status)

    # ---- pods -------------------------------------------------------------------------------
    def create_pod(self, req: validate.PodCreate) -> dict:
        with self.store.tx() as tx:
            if tx.pod(req.id) is not None:
                raise conflict(f"pod {req.id} already exists", "pod_exists")
            pod = tx.insert_pod(req.id, req.name, str(req.subnet) if req.subnet else None)
            return views.pod(pod, 0, [])

    def delete_pod(self, pod_id: int, force: bool) -> None:
        with self.store.tx() as tx:
            pod = tx.pod(pod_id)
            if pod is None:
                raise not_found(f"pod {pod_id} does not exist", "pod_not_found")
            if pod_id == GLOBAL_POD:
                raise conflict("the global pod 0 cannot be deleted", "global_pod")
            members = tx.ports(pod_id=pod_id)
            if members and not force:
                names = ", ".join(f"{p.container} on {p.host_id}" for p in members[:5])
                more = f" and {len(members) - 5} more" if len(members) > 5 else ""
                raise conflict(f"pod {pod_id} still has {len(members)} member(s): {names}{more};"
                               " disconnect them first or delete with ?force=true", "pod_in_use")
            hosts = {p.host_id for p in members}
            for port in members:
                tx.delete_port(port.id)
            for h in hosts:
                tx.release_unused_vlans(h)
            tx.delete_pod(pod_id)
            tx.bump(hosts)
        self._publish()
        if hosts:
            self._program_pod_quietly(pod_id, hosts, f"deleting pod {pod_id}")

    def _program_pod_quietly(self, pod_id: int, hosts: Iterable[str], what: str) -> None:
        try:
            self._program_pod(pod_id, hosts, None, what)
        except ApiError as e:
            # the state change is committed; a switch that missed it is reconciled later
            LOG.warning("%s: %s", what, e.message)

    # ---- ports ------------------------------------------------------------------------------
    def connect(self, req: validate.PortCreate) -> dict:
        port, created_pod = self._insert_port(req)
        what = f"connecting {port.container} on {port.host_id} to pod {port.pod_id}"
        LOG.info("%s: port %d %s %s", what, port.id, port.ip, port.mac)
        try:
            self._wait_wired(port)
            with self.store.tx() as tx:
                hosts = self._pod_hosts(tx, port.pod_id)
            self._program_pod(port.pod_id, hosts, port.host_id, what)
            with self.store.tx() as tx:
                if tx.port(port.id) is None:
                    raise conflict(f"port {port.id} was deleted while it was being connected",
                                   "port_deleted")
                tx.update_port(port.id, state="active")
                tx.bump([port.host_id])
            self._publish()
            if port.dhcp:
                self._wait_lease(port)
            with self.store.tx() as tx:
                final = tx.port(port.id)
            if final is None:
                raise conflict(f"port {port.id} was deleted while it was being connected",
                               "port_deleted")
            return views.port(final)
        except BaseException as e:
            LOG.warning("%s failed, undoing: %s", what, getattr(e, "message", e))
            self._undo_connect(port, created_pod)
            raise

    def _insert_port(self, req: validate.PortCreate) -> tuple[Port, bool]:
        try:
            with self.store.tx() as tx:
                host = tx.host(req.host)
                if host is None:
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
                net = pod.network
                server = contract.dhcp_server(pod.id, net)
                if req.ip is None:
                    if net is None:
                        raise invalid(f"pod {pod.id} has no subnet, so it has no DHCP; create "
                                      "the pod with a subnet or give an address", "no_subnet")
                    iface = self._allocate(tx, pod.id, net)
                else:
                    iface = req.ip
                    if net is not None:
                        if iface.network != net:
                            raise invalid(f"ip {iface} is not in pod {pod.id}'s subnet {net}; "
                                          f"use an address of {net} with /{net.prefixlen}",
                                          "ip_outside_subnet")
                        if str(iface.ip) == server[0]:
                            raise invalid(f"ip {iface.ip} is pod {pod.id}'s DHCP server address"
                                          "; pick another", "ip_reserved")
                    clash = tx.port_by_addr(pod.id, iface.ip)
                    if clash is not None:
                        raise conflict(f"IP {iface.ip} already used by {clash.container} in pod "
                                       f"{pod.id}", "ip_in_use")
                if req.mac is not None:
                    clash = tx.port_by_mac(pod.id, req.mac)
                    if clash is not None:
                        raise conflict(f"MAC {req.mac} already used by {clash.container} in pod "
                                       f"{pod.id}", "mac_in_use")
                    if server and req.mac == server[1]:
                        raise invalid(f"MAC {req.mac} is pod {pod.id}'s DHCP server MAC; pick "
                                      "another", "mac_reserved")
                    mac = req.mac
                else:
                    mac = validate.random_mac(tx.macs(pod.id))
                if tx.ensure_local_vlan(req.host, pod.id) is None:
                    raise conflict(f"host {req.host} has no free local VLAN (4094 pods there)",
                                   "no_local_vlan")
                port = tx.insert_port(req.host, req.container, pod.id, mac, iface,
                                      req.ip is None)
                tx.bump([req.host])
        except sqlite3.IntegrityError as e:      # a unique constraint the checks above missed
            raise conflict(f"port conflicts with an existing one: {e}", "conflict") from None
        self._publish()
        return port, created_pod

    @staticmethod
    def _allocate(tx: Tx, pod_id: int, net: ipaddress.IPv4Network) -> ipaddress.IPv4Interface:
        """The lowest free address of the subnet (not network, server, or broadcast)."""
        used = tx.addrs(pod_id)
        first = int(net.network_address) + 2            # +1 is the DHCP server
        last = int(net.broadcast_address) - 1
        for addr in range(first, last + 1):
            if addr not in used:
                return ipaddress.IPv4Interface(f"{ipaddress.IPv4Address(addr)}/{net.prefixlen}")
        raise conflict(f"pod {pod_id}'s subnet {net} is full ({last - first + 1} addresses in "
                       "use); disconnect a container or use a larger subnet", "subnet_full")

    def _wait_wired(self, port: Port) -> None:
        state: dict[str, Port | None] = {}

        def reported() -> bool:
            with self.store.tx() as tx:
                state["port"] = p = tx.port(port.id)
            return p is None or p.ofport is not None or p.error_code is not None

        timeout = self.settings.wire_timeout
        if not self.port_changes.wait_until(reported, timeout):
            seen = self.board.last_seen.get(port.host_id)
            ago = f"last seen {time.time() - seen:.0f} s ago" if seen else "never seen"
            raise unavailable(f"the agent on host {port.host_id} did not wire container "
                              f"{port.container} within {timeout:g} s (agent {ago}); is "
                              "loris-hostagent running there?", "agent_timeout")
        p = state["port"]
        if p is None:
            raise conflict(f"port {port.id} was deleted while it was being connected",
                           "port_deleted")
        if p.ofport is None:
            raise ApiError(422, p.error_code or "wiring_failed",
                           f"host {port.host_id} could not wire container {port.container}: "
                           f"{p.error_message}")

    def _wait_lease(self, port: Port) -> None:
        state: dict[str, Port | None] = {}

        def leased() -> bool:
            with self.store.tx() as tx:
                state["port"] = p = tx.port(port.id)
            return p is None or p.lease == port.ip or p.error_code is not None

        timeout = self.settings.lease_timeout
        if not self.port_changes.wait_until(leased, timeout):
            raise unavailable(f"container {port.container} on {port.host_id} did not report "
                              f"its DHCP lease {port.ip} within {timeout:g} s", "dhcp_timeout")
        p = state["port"]
        if p is None:
            raise conflict(f"port {port.id} was deleted while it was being connected",
                           "port_deleted")
        if p.lease != port.ip:
            raise ApiError(422, p.error_code or "dhcp_failed",
                           f"container {port.container} on {port.host_id} did not get its DHCP "
                           f"lease {port.ip}: {p.error_message}")

    def _undo_connect(self, port: Port, created_pod: bool) -> None:
        try:
            with self.store.tx() as tx:
                if tx.port(port.id) is not None:
                    tx.delete_port(port.id)
                tx.release_unused_vlans(port.host_id)
                if created_pod and not tx.ports(pod_id=port.pod_id):
                    tx.delete_pod(port.pod_id)
                tx.bump([port.host_id])
                hosts = self._pod_hosts(tx, port.pod_id) | {port.host_id}
            self._publish()
            self._program_pod_quietly(port.pod_id, hosts, f"undoing port {port.id}")
        except Exception:
            LOG.exception("undoing port %d failed", port.id)

    def disconnect(self, port_id: int) -> None:
        with self.store.tx() as tx:
            port = tx.port(port_id)
            if port is None:
                raise not_found(f"port {port_id} does not exist", "port_not_found")
            hosts = self._pod_hosts(tx, port.pod_id)
            tx.delete_port(port_id)
            tx.release_unused_vlans(port.host_id)
            tx.bump([port.host_id])
        self._publish()
        self.port_changes.notify()
        LOG.info("disconnected port %d (%s on %s, pod %d)", port.id, port.container,
                 port.host_id, port.pod_id)
        self._program_pod_quietly(port.pod_id, hosts, f"disconnecting port {port_id}")

    # ---- the agent protocol ------------------------------------------------------------------
    def desired(self, host_id: str, since: int | None, wait: float) -> dict:
        with self.store.tx() as tx:
            self._host_or_404(tx, host_id)
        if since is not None and wait > 0:
            self.board.wait(host_id, since, min(wait, self.settings.long_poll_max))
        else:
            self.board.seen(host_id)
        with self.store.tx() as tx:
            host = self._host_or_404(tx, host_id)
            peers = [{"id": h.id, "tunnel_ip": h.tunnel_ip} for h in tx.hosts()
                     if h.id != host_id]
            ports = [{"id": p.id, "container": p.container, "pod": p.pod_id, "mac": p.mac,
                      "ip": p.ip, "dhcp": p.dhcp, "state": p.state}
                     for p in tx.ports(host_id=host_id)]
            return {"version": host.desired_version,
                    "host": {"id": host.id, "tunnel_ip": host.tunnel_ip,
                             "tunnel_type": host.tunnel_type},
                    "peers": peers, "ports": ports}

    def report_actual(self, host_id: str, report: validate.ActualReport) -> None:
        full = False
        pods: set[int] = set()
        with self.store.tx() as tx:
            host = self._host_or_404(tx, host_id)
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
            for port in tx.ports(host_id=host_id):
                rep = report.ports.get(port.id)
                if rep is None:
                    continue      # not in the desired state the agent applied: not yet made
                values: dict[str, Any] = {
                    "ofport": rep.ofport, "mtu": rep.mtu, "lease": rep.lease,
                    "error_code": rep.error[0] if rep.error else None,
                    "error_message": rep.error[1] if rep.error else None}
                if rep.ofport is not None and port.state == "pending":
                    values["state"] = "wired"
                current = {k: getattr(port, k) for k in values}
                if values != current:
                    tx.update_port(port.id, **values)
                    if rep.ofport != port.ofport:
                        pods.add(port.pod_id)
                    if rep.error and rep.error != (port.error_code, port.error_message):
                        LOG.warning("host %s reports port %d (%s): %s: %s", host_id, port.id,
                                    port.container, *rep.error)
            tx.set_actual_version(host_id, report.version)
            targets: dict[str, set[int | None] | None] = {}
            for pod_id in pods:
                for h in self._pod_hosts(tx, pod_id):
                    if targets.get(h, set()) is not None:
                        targets.setdefault(h, set()).add(pod_id)
            if full:
                targets[host_id] = None
        self.board.seen(host_id)
        self.port_changes.notify()
        for h, sections in targets.items():
            self.programmer.submit(h, sections)

    # ---- switches --------------------------------------------------------------------------
    def switch_connected(self, dpid: int) -> None:
        """A datapath reached MAIN: reconcile its flows (in the host's worker). Called from
        an OpenFlow event handler: memory only, no store access."""
        found = self.dpids.get(dpid)
        if found is None:
            LOG.warning("datapath %#018x connected but no registered host owns it; it gets "
                        "flows once its agent registers", dpid)
            return
        host_id, bridge = found
        self.programmer.submit(host_id, None, sync=[bridge])

    def switch_disconnected(self, dpid: int) -> None:
        self.programmer.forget(dpid)

    def dhcp_binding(self, dpid: int, in_port: int, cookie: int) -> tuple[Binding, Port] | None:
        """The lease a DHCP packet-in may get: the port named by the cookie must be a DHCP
        port on this very datapath and ofport."""
        parsed = parse_cookie(cookie)
        if parsed is None or parsed[0] != Kind.PORT:
            return None
        with self.store.tx() as tx:
            port = tx.port(parsed[1])
            if port is None or not port.dhcp or port.ofport != in_port:
                return None
            host = tx.host(port.host_id)
            pod = tx.pod(port.pod_id)
        if host is None or host.dpid_int != dpid or pod is None or pod.network is None:
            return None
        server = contract.dhcp_server(pod.id, pod.network)
        return Binding(ipaddress.IPv4Interface(port.ip), port.mac, server[0], server[1],
                       self.settings.dhcp_lease_time), port

    # ---- start-up ----------------------------------------------------------------------------
    def recover(self) -> None:
        """After a (re)start: drop ports whose connect call died with the old process, and
        give every host a new desired version so each agent resynchronises in full."""
        with self.store.tx() as tx:
            stale = [p for p in tx.ports() if p.state != "active"]
            for port in stale:
                tx.delete_port(port.id)
            for h in {p.host_id for p in stale}:
                tx.release_unused_vlans(h)
            tx.bump_all()
            counts = (len(tx.hosts()), len(tx.pods()), len(tx.ports()))
        self._publish()
        for port in stale:
            LOG.warning("dropped port %d (%s on %s): its connect did not finish before the "
                        "restart", port.id, port.container, port.host_id)
        LOG.info("state loaded from %s: %d hosts, %d pods, %d ports", self.store.path, *counts)
