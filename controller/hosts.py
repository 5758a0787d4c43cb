"""Hosts: registration (POST /v1/hosts) and removal (DELETE /v1/hosts/{id}).

A host is what its agent registers: tunnel endpoint, tunnel type (one per cluster) and the
datapath ids of its two bridges (unique). A new host, or one whose tunnel endpoint moved,
gives every agent a new desired version (they keep one tunnel port per peer). Removing a
host removes its ports, strips its bridges of every Loris flow and reprograms the others.
"""

from __future__ import annotations

import logging

from controller import validate
from controller.context import Context
from controller.errors import conflict
from controller.reads import Reads
from controller.store import Host, Port, Tx
from flows import contract

LOG = logging.getLogger("loris.service")


class Hosts:
    def __init__(self, ctx: Context, reads: Reads) -> None:
        self.ctx = ctx
        self.reads = reads

    def register(self, reg: validate.HostRegistration) -> tuple[dict, bool]:
        """The host's view, and whether it is new."""
        ctx = self.ctx

        def register(tx: Tx) -> tuple[Host | None, dict]:
            # store.write runs it again if another controller wrote meanwhile (etcd)
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
            if reg.switch_cert_sha256 is not None:   # the allow-list of switch_guard.py
                tx.declare_switch_cert(reg.id, reg.switch_cert_sha256)
            return old, self.reads.host_view(tx, tx.host(reg.id))

        old, view = ctx.store.write(register)
        ctx.publish()
        if old is None or (old.dpid_int, old.dpid_tun) != (reg.dpid_int, reg.dpid_tun):
            # bridges that connected before the host registered get their flows now (the
            # others when they connect)
            early = [b for b, d in (("br-int", reg.dpid_int), ("br-tun", reg.dpid_tun))
                     if ctx.switches.datapath(d) is not None]
            if early:
                ctx.programmer.submit(reg.id, None, sync=early)
        if old is not None and old.tunnel_ip != reg.tunnel_ip:
            ctx.program_everyone()
        LOG.info("host %s %s (tunnel %s %s)", reg.id, "registered" if old is None else
                 "re-registered", reg.tunnel_type, reg.tunnel_ip)
        return view, old is None

    def remove(self, host_id: str) -> None:
        ctx = self.ctx

        def remove(tx: Tx) -> tuple[Host, list[Port]]:
            host = ctx.host_or_404(tx, host_id)
            ports = tx.ports(host_id=host_id)
            for port in ports:
                tx.delete_port(port.id)
            tx.delete_host(host_id)
            tx.bump_all()
            return host, ports

        host, ports = ctx.store.write(remove)
        ctx.publish()
        ctx.ports_changed(p.id for p in ports)
        ctx.board.forget(host_id)
        cleared = ctx.programmer.clear(host_id, [host.dpid(b) for b in contract.BRIDGES])
        try:
            cleared.wait(3 * ctx.settings.flow_timeout)
        except Exception as e:
            LOG.warning("clearing the flows of removed host %s: %s", host_id, e)
        ctx.program_everyone(wait=True)
        LOG.info("host %s removed with its ports", host_id)
