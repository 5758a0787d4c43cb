"""Level-triggered reconciliation of one host: desired state in, OVS/netlink changes, actual out.

Every pass compares what should be (the controller's desired state) with what is (OVS and
the kernel) and changes only the difference, so running it again changes nothing and a
restarted agent adopts what it finds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flows import contract
from hostagent import dhcp, endpoint_ports, netdev
from hostagent.containers import (
    Container,
    ContainerError,
    ContainerNotFound,
    ContainerNotRunning,
    Runtimes,
)
from hostagent.docker_driver import is_endpoint_ref
from hostagent.faults import pause_point
from hostagent.links import LinkIndex
from hostagent.ovs import Interface, Ovs, OvsError, Snapshot, VsctlDb

if TYPE_CHECKING:
    from hostagent.ovsdb import OvsdbReplica

log = logging.getLogger(__name__)

DEFAULT_UNDERLAY_MTU = 1500
FULL_CHECK_S = 300.0  # how often every container is looked into even if nothing changed


def _settled(result: dict | None, port: dict) -> bool:
    """Whether a port's last result needs no other look until it changes: wired, no error,
    and a DHCP port's lease (an unsettled one is looked at in every pass, as before)."""
    if result is None or "error" in result or not result.get("ofport"):
        return False
    return not port.get("dhcp") or bool(result.get("lease"))


@dataclass
class PortError(Exception):
    code: str
    message: str

    def __str__(self) -> str:
        return self.message


class Reconciler:
    def __init__(
        self,
        ovs: Ovs,
        runtimes: Runtimes,
        host_id: str,
        tunnel_ip: str,
        tunnel_type: str = "vxlan",
        container_ifname: str = "eth1",
        ensure_bridges: Callable[[], object] | None = None,
        on_container_gone: Callable[[int], None] | None = None,
    ) -> None:
        self.ovs = ovs
        # what OVS holds and the writes of a pass: `ovs-vsctl` until the agent gives an
        # OVSDB replica (use()); the host's veths: dumped on each read until it gives a
        # link index that follows the kernel's events
        self.db: VsctlDb | OvsdbReplica = VsctlDb(ovs)
        self.links = LinkIndex()
        self._underlay_mtu: int | None = None
        self.runtimes = runtimes
        self.host_id = host_id
        self.tunnel_ip = tunnel_ip
        self.tunnel_type = tunnel_type
        self.container_ifname = container_ifname
        self.ensure_bridges = ensure_bridges
        # Called with a port id whose container was destroyed (the agent deletes the port).
        self.on_container_gone = on_container_gone or (lambda _port_id: None)
        # Ports found intact, by what would change if they were not any more (container
        # namespace, host veth): a pass then skips looking inside their containers.
        self._verified: dict[int, tuple[tuple, netdev.ContainerSide]] = {}
        self._full_check_at = time.monotonic()
        # ports that failed to wire since the agent started (the report's stats); a missing
        # or stopped container is a state, not a wiring error
        self.wiring_errors = 0
        # a DHCP port was re-made in the last pass and waits for its lease: the agent runs
        # the next pass as soon as it has reported this one
        self.lease_pending = False
        # each desired port's result in the last pass that looked at it (port id -> report):
        # a pass that looks at a few ports reports the others as they were
        self._results: dict[int, dict] = {}

    def use(self, db: OvsdbReplica | None = None, links: LinkIndex | None = None) -> None:
        """Read and write OVS through `db` (a replica kept by a monitor) and read the host's
        veths from `links` (kept by link events) instead of forking and dumping."""
        if db is not None:
            self.db = db
        if links is not None:
            self.links = links

    # ---------------------------------------------------------------- the pass
    def apply(self, desired: dict, full: bool = True, only: set[int] | None = None) -> dict:
        """One pass. A `full` one (the default; the agent's periodic one) also reads again
        what a replica or an event index could have missed: every link, the underlay MTU.
        With `only`, the pass looks into those ports (and any it never looked at) and
        reports the others as the last pass left them: what a delta did not touch; the
        host's tunnels and its ports not desired any more are seen to in every pass."""
        self.lease_pending = False
        if full:
            self._underlay_mtu = None
            if self.links.live:
                self.links.refresh()
        snap = self.db.snapshot()
        if not self._bridges_ready(snap) and self.ensure_bridges:
            log.warning("Loris bridges missing or incomplete: preparing the host again")
            self.ensure_bridges()
            self.db.wait_until(self._bridges_ready, self.ovs.timeout)
            snap = self.db.snapshot()
        host = desired.get("host") or {}
        ttype = host.get("tunnel_type") or self.tunnel_type
        self._reconcile_tunnels(snap, desired.get("peers") or [], ttype)
        ports = {int(p["id"]): p for p in desired.get("ports") or []}
        self._remove_undesired_ports(snap, set(ports))
        for port_id in set(self._verified) - set(ports):
            del self._verified[port_id]
        if time.monotonic() - self._full_check_at > FULL_CHECK_S:
            self._verified.clear()  # now and then look inside every container again
            self._full_check_at = time.monotonic()
        mtu = contract.container_mtu(self.underlay_mtu(), ttype)
        ifaces = self.port_interfaces(self.db.snapshot())   # once a pass, not once a port
        host_veths = self.links.veths()
        for port_id in [p for p in self._results if p not in ports]:
            del self._results[port_id]
        for port_id in sorted(ports):
            if only is None or port_id in only or not _settled(self._results.get(port_id),
                                                               ports[port_id]):
                self._results[port_id] = self._reconcile_port(ports[port_id], mtu, ifaces,
                                                              host_veths)  # fmt: skip
        report_ports = {str(port_id): self._results[port_id] for port_id in sorted(ports)}
        snap = self.db.snapshot()
        return {
            "version": desired.get("version", 0),
            "patch": self._patch_ofports(snap),
            "tunnels": self._tunnel_ofports(snap, desired.get("peers") or []),
            "ports": report_ports,
        }

    def underlay_mtu(self) -> int:
        """The MTU of the tunnel endpoint's interface, read again on every full pass."""
        if self._underlay_mtu is None:
            self._underlay_mtu = netdev.mtu_of_address(self.tunnel_ip) or DEFAULT_UNDERLAY_MTU
        return self._underlay_mtu

    # ---------------------------------------------------------------- bridges
    @staticmethod
    def _bridges_ready(snap: Snapshot) -> bool:
        return all(
            i in snap.interfaces and snap.interfaces[i].bridge == b
            for b, i in ((contract.INTEGRATION_BRIDGE, contract.PATCH_ON_INT),
                         (contract.TUNNEL_BRIDGE, contract.PATCH_ON_TUN))
        )  # fmt: skip

    @staticmethod
    def _patch_ofports(snap: Snapshot) -> dict[str, int | None]:
        def of(name: str) -> int | None:
            i = snap.interfaces.get(name)
            return i.ofport if i else None

        return {contract.INTEGRATION_BRIDGE: of(contract.PATCH_ON_INT),
                contract.TUNNEL_BRIDGE: of(contract.PATCH_ON_TUN)}  # fmt: skip

    # ---------------------------------------------------------------- tunnels
    def _wanted_tunnels(self, peers: list[dict]) -> dict[str, dict]:
        return {
            contract.tunnel_port_name(p["tunnel_ip"]): p
            for p in peers
            if p.get("tunnel_ip") and p["tunnel_ip"] != self.tunnel_ip and p["id"] != self.host_id
        }

    def _reconcile_tunnels(self, snap: Snapshot, peers: list[dict], ttype: str) -> None:
        want = self._wanted_tunnels(peers)
        have = {i.name: i for i in snap.on_bridge(contract.TUNNEL_BRIDGE)
                if contract.is_tunnel_port_name(i.name)}  # fmt: skip
        stale = sorted(set(have) - set(want))
        if stale:
            log.info("tunnels: removing %s", ", ".join(stale))
            self.db.del_ports(contract.TUNNEL_BRIDGE, stale)
        for name, peer in sorted(want.items()):
            options = {"remote_ip": peer["tunnel_ip"], "key": "flow", "df_default": "true"}
            ids = {contract.LORIS_MARK[0]: contract.LORIS_MARK[1], contract.EXT_PEER: peer["id"]}
            cur = have.get(name)
            if cur and cur.type == ttype and cur.options == options \
                    and cur.external_ids.get(contract.EXT_PEER) == peer["id"]:
                continue
            log.info("tunnels: %s %s to %s (%s, %s)", "updating" if cur else "adding", name,
                     peer["id"], ttype, peer["tunnel_ip"])
            # options are replaced as a whole so a stale one never lingers
            self.db.add_port(contract.TUNNEL_BRIDGE, name, dict([contract.LORIS_MARK]), ids,
                             iface_type=ttype, options=options)

    def _tunnel_ofports(self, snap: Snapshot, peers: list[dict]) -> dict[str, int]:
        out = {}
        for name, peer in self._wanted_tunnels(peers).items():
            i = snap.interfaces.get(name)
            if i and i.ofport:
                out[peer["id"]] = i.ofport
        return out

    # ---------------------------------------------------------------- ports
    @staticmethod
    def port_interfaces(snap: Snapshot) -> dict[int, Interface]:
        """Container ports on br-int: by their port id external id, or by their lp name."""
        out = {}
        for i in snap.on_bridge(contract.INTEGRATION_BRIDGE):
            pid = i.external_ids.get(contract.EXT_PORT_ID)
            port_id = int(pid) if pid and pid.isdigit() else contract.port_id_of_host_port(i.name)
            if port_id is not None:
                out[port_id] = i
        return out

    def _remove_undesired_ports(self, snap: Snapshot, wanted: set[int]) -> None:
        have = self.port_interfaces(snap)
        stale = sorted(set(have) - wanted)
        if stale:
            log.info("removing ports not desired here: %s", stale)
            self.db.del_ports(contract.INTEGRATION_BRIDGE, [have[p].name for p in stale])
        for name in self.links.loris_veths():
            port_id = contract.port_id_of_host_port(name)
            if port_id is None or port_id not in wanted:
                self._delete_veth(name)

    def _reconcile_port(self, port: dict, mtu: int, ifaces: dict[int, Interface],
                        host_veths: dict[str, int]) -> dict:  # fmt: skip
        port_id = int(port["id"])
        try:
            return self._ensure_port(port, mtu, ifaces, host_veths)
        except PortError as e:
            log.warning("port %s (%s): %s", port_id, port.get("container"), e.message)
            if e.code not in (ContainerNotFound.code, ContainerNotRunning.code):
                self.wiring_errors += 1
            return {"error": {"code": e.code, "message": e.message}}
        except (OvsError, netdev.NetdevError, OSError) as e:
            log.warning("port %s (%s): %s", port_id, port.get("container"), e)
            self.wiring_errors += 1
            return {"error": {"code": "wiring_failed",
                              "message": f"wiring {port.get('container')} failed: {e}"}}
        except Exception as e:  # one broken port must not stop the others from being served
            log.exception("port %s (%s) failed", port_id, port.get("container"))
            self.wiring_errors += 1
            return {"error": {"code": "internal_error",
                              "message": f"wiring {port.get('container')} failed: {e!r}"}}

    def _ensure_port(self, port: dict, mtu: int, ifaces: dict[int, Interface],
                     host_veths: dict[str, int]) -> dict:  # fmt: skip
        port_id = int(port["id"])
        ref = port["container"]
        if is_endpoint_ref(ref):      # a Docker endpoint: Docker moves it in (docker_driver)
            return endpoint_ports.ensure(self, port, mtu, ifaces)
        iface = ifaces.get(port_id)
        try:
            container = self.runtimes.resolve(ref)
        except ContainerNotFound as e:
            self._container_missing(port, iface, e)
            raise PortError(e.code, str(e)) from None
        except ContainerNotRunning as e:
            self._verified.pop(port_id, None)
            if iface is None or port.get("state") == "pending":
                self._drop_local(port_id, iface)
            # else: a stopped container keeps its OVS port (and so its pinned ofport);
            # `docker start` brings it back on the Docker event without anyone acting.
            raise PortError(e.code, str(e)) from None
        except ContainerError as e:
            raise PortError(e.code, str(e)) from None

        host_name = contract.host_port_name(port_id)
        key = (port["mac"], port.get("ip"), netdev.netns_id(container.netns),
               host_veths.get(host_name))  # fmt: skip
        cached = self._verified.get(port_id)
        attached = False       # (re)attached to OVS in this pass: the controller has not
        if cached and cached[0] == key and iface is not None and iface.ofport:
            side = cached[1]  # nothing that could break it changed since it was checked
        else:
            self._verified.pop(port_id, None)
            side = netdev.inspect_port(port_id, container.netns, port["mac"])
            static_ip = None if port.get("dhcp") else port.get("ip")
            if side is None or iface is None:
                # No veth, or one that never reached OVS: wiring was cut short (agent
                # killed), and its container end may lack its address, link state or
                # offload setting. Make it again rather than adopt it.
                side = self._wire(port, container, iface, static_ip, mtu)
                iface = None
            else:
                if static_ip and static_ip not in side.ipv4:
                    netdev.add_address(container.netns, side.ifname, static_ip)
                    side.ipv4.append(static_ip)
                if iface is None or not iface.ofport:
                    self._attach(port, container, side.ifname)
                    iface = None
            if iface is None:
                attached = True
                iface = self.db.interface(host_name)
            if iface is None or not iface.ofport:
                raise PortError("ovs_error", f"OVS gave no ofport to {host_name}: "
                                             f"{(iface.error if iface else None) or 'unknown'}")
            key = (*key[:3], netdev.ifindex(host_name))
            self._verified[port_id] = (key, side)
        out: dict = {"ofport": iface.ofport, "mtu": mtu}
        if port.get("dhcp"):
            lease = side.ipv4[0] if side.ipv4 else None
            if lease is None and port.get("state") == "active" and attached:
                # re-made (its container restarted): its flows come back once the
                # controller has this report, so the lease is asked for in the pass after
                self.lease_pending = True
            elif lease is None and port.get("state") == "active":
                try:
                    lease = dhcp.obtain_lease(container.netns, side.ifname, port["mac"])
                    side.ipv4.append(lease)
                except dhcp.DhcpError as e:
                    out["error"] = {"code": "dhcp_failed", "message": f"{container.name}: {e}"}
            out["lease"] = lease
        return out

    def _container_missing(self, port: dict, iface: Interface | None, err: Exception) -> None:
        """The container is not there: if we had wired it, it was destroyed -> the port goes."""
        port_id = int(port["id"])
        was_wired = iface is not None and iface.external_ids.get(contract.EXT_CONTAINER_ID)
        self._drop_local(port_id, iface)
        if was_wired and port.get("state") != "pending":
            log.info("container of port %s is gone (%s): deleting the port", port_id, err)
            self.on_container_gone(port_id)

    def _drop_local(self, port_id: int, iface: Interface | None) -> None:
        if iface is not None:
            self.db.del_ports(contract.INTEGRATION_BRIDGE, [iface.name])
        self._delete_veth(contract.host_port_name(port_id))

    def _delete_veth(self, name: str) -> None:
        netdev.delete_link(name)
        self.links.gone(name)

    def _wire(self, port: dict, container: Container, iface: Interface | None,
              ip: str | None, mtu: int) -> netdev.ContainerSide:
        """(Re)create the veth and attach it; all or nothing on this host."""
        port_id = int(port["id"])
        pinned = (iface.ofport_request or iface.ofport) if iface else None
        if iface is not None:
            # The old veth died with the container's old namespace. OVS's userspace datapath
            # does not reopen a device that came back under the same name, so the port is
            # re-added (in its own transaction) with its ofport pinned.
            self.db.del_ports(contract.INTEGRATION_BRIDGE, [iface.name])
        log.info("wiring port %s into %s (%s)", port_id, container.name, container.netns)
        side = netdev.create_port(port_id, container.netns, self.container_ifname,
                                  port["mac"], ip, mtu)  # fmt: skip
        host_name = contract.host_port_name(port_id)
        index = netdev.ifindex(host_name)
        if index is not None:
            self.links.made(host_name, index)
        pause_point("veth_created")
        try:
            self._attach(port, container, side.ifname, pinned=pinned)
        except Exception:
            self._drop_local(port_id, self.port_interfaces(self.db.snapshot()).get(port_id))
            raise
        pause_point("ovs_attached")
        # A namespace that went away (its container died) took both ends of the veth along
        if not netdev.link_exists(host_name):
            self._drop_local(port_id, self.port_interfaces(self.db.snapshot()).get(port_id))
            raise PortError("wiring_failed",
                            f"container {container.name} lost its namespace while being wired")
        return side

    def _attach(self, port: dict, container: Container, ifname: str,
                pinned: int | None = None) -> None:
        port_id = int(port["id"])
        name = contract.host_port_name(port_id)
        ids = {
            contract.LORIS_MARK[0]: contract.LORIS_MARK[1],
            contract.EXT_PORT_ID: str(port_id),
            contract.EXT_CONTAINER: port["container"],
            contract.EXT_CONTAINER_ID: container.id,
            contract.EXT_POD: str(port.get("pod", 0)),
            contract.EXT_ATTACHED_MAC: port["mac"].lower(),
            contract.EXT_IFNAME: ifname,
        }
        # one transaction; the ofport comes back with the replica's update. The number asked
        # for: the one it had (a re-wire keeps the flows that match on it right), else the
        # one the controller chose (its flows may be on the switch already)
        got = self.db.add_port(contract.INTEGRATION_BRIDGE, name, dict([contract.LORIS_MARK]),
                               ids, ofport_request=pinned or port.get("ofport"))
        if got is None or not got.ofport:
            raise PortError("ovs_error", f"OVS could not attach {name}: "
                                         f"{(got.error if got else None) or 'no ofport'}")
        if got.ofport_request != got.ofport:
            # Pin the number OVS chose (none was asked for, or another interface held it),
            # so a re-wire (container restart) keeps it and the flows that match on it stay
            # right.
            self.db.set_ofport_request(name, got.ofport)
