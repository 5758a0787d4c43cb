"""`loris-hostagent`: registers the host, follows the controller's desired state, wires ports.

Threads: one long-polls the controller; a worker reconciles (on every new desired
state, on a Docker event, and every RESYNC_S seconds) and reports; a third follows Docker
events. The controller being away stops nothing on the host: OVS keeps its flows (secure
fail mode), the worker keeps repairing containers from the last desired state it had.
"""

from __future__ import annotations

import logging
import threading
import time

from flows import contract
from hostagent import hostprep, netdev, pki, underlay
from hostagent.client import (
    ApiError,
    Client,
    ControllerUnreachable,
    CredentialsError,
    backoff_wait,
)
from hostagent.containers import Runtimes, matches
from hostagent.desired_follow import DesiredFollower
from hostagent.docker_driver import ENDPOINT_PREFIX, is_endpoint_ref
from hostagent.docker_plugin import DockerPluginConfig, serve_plugin
from hostagent.links import LinkIndex
from hostagent.ovs import Ovs, OvsError
from hostagent.reconcile import Reconciler

log = logging.getLogger("loris-hostagent")

LONG_POLL_S = 30
RESYNC_S = 30.0
CONTROLLERS_REFRESH_S = 10.0  # how often the registry's controller list is read again
CONTROLLER_GONE_S = 120.0  # a controller missing from the registry this long loses its target


class Agent:
    def __init__(
        self,
        client: Client,
        ovs: Ovs,
        host_id: str,
        tunnel_ip: str,
        tunnel_type: str,
        container_ifname: str = "eth1",
        openflow: str | None = None,
        runtimes: Runtimes | None = None,
        switch_tls: tuple[str, str, str] | None = None,
        docker_plugin: DockerPluginConfig | None = None,
    ) -> None:
        self.client = client
        self.switch_tls = switch_tls  # (key, cert, CA) for OpenFlow over TLS
        self.ovs = ovs
        self.host_id = host_id
        self.tunnel_ip = tunnel_ip
        self.tunnel_type = tunnel_type
        self.openflow = openflow  # --openflow: the targets, as given (else from the controllers)
        self.targets: list[str] | None = None  # what the bridges point at
        self._controllers_read_at = 0.0
        self._target_missing: dict[str, float] = {}  # target -> since when the registry lacks it
        self.runtimes = runtimes or Runtimes()
        self.stop = threading.Event()
        self.kick = threading.Event()
        self._lock = threading.Lock()
        self.follow = DesiredFollower()   # the desired state held; deltas (docs/design.md)
        self._reported: dict | None = None
        self._reported_at = 0.0
        self._pending_deletes: set[int] = set()  # ports whose container was removed
        # ports whose ofport a report the controller took carried: wired, whatever the
        # desired state says (a static port's `active` does not bump the host's version)
        self._wired: set[int] = set()
        # figures carried in the report's `stats` (the controller's /metrics shows them)
        self.passes = 0
        self.pass_seconds_total = 0.0
        self.last_pass_seconds = 0.0
        self.send_stats = True
        self._deletes_lock = threading.Lock()  # Docker-event thread and worker both retry
        self.registered = False
        self.docker_plugin = docker_plugin
        self.reconciler = Reconciler(
            ovs, self.runtimes, host_id, tunnel_ip, tunnel_type, container_ifname,
            ensure_bridges=self.prepare, on_container_gone=self._container_gone,
        )  # fmt: skip

    @property
    def desired(self) -> dict | None:
        return self.follow.state

    @desired.setter
    def desired(self, state: dict | None) -> None:
        if state is None:
            self.follow.forget()
        else:
            self.follow.take(state)

    # ---------------------------------------------------------------- host and controller
    def prepare(self) -> dict:
        targets = ",".join(self.targets) if self.targets else self.openflow
        return hostprep.prepare_host(self.ovs, self.host_id, targets)

    def register(self) -> None:
        dpids = contract.dpids(self.host_id)
        host = {
            "id": self.host_id, "tunnel_ip": self.tunnel_ip, "tunnel_type": self.tunnel_type,
            "dpids": {b: f"0x{contract.dpid_hex(d)}" for b, d in dpids.items()},
        }  # fmt: skip
        if self.switch_tls:  # the one certificate the controller takes from our bridges
            host["switch_cert_sha256"] = pki.certificate_sha256(self.switch_tls[1])
        reply = self.client.register(host)
        openflow = (reply or {}).get("openflow") or {}
        port = openflow.get("port") or contract.DEFAULT_OPENFLOW_PORT
        if openflow.get("tls") and not self.switch_tls:
            raise CredentialsError("the controller takes OpenFlow over TLS only: give "
                                   "--switch-cert, --switch-key and --ca-cert")
        if self.switch_tls:
            pki.configure_ovs(self.ovs, *self.switch_tls)
        if self.openflow:
            targets = hostprep.controller_targets(self.openflow)
        else:
            scheme = "ssl" if openflow.get("tls") else "tcp"
            targets = [f"{scheme}:{self.client.controller_ip()}:{port}"]
            targets += self._registry_targets()
        self.targets = hostprep.controller_targets(targets)
        hostprep.set_controller(self.ovs, self.targets)
        self.registered = True
        log.info("registered as %s (tunnel %s %s), OpenFlow %s",
                 self.host_id, self.tunnel_type, self.tunnel_ip, ", ".join(self.targets))

    def _registry_targets(self) -> list[str]:
        """The OpenFlow targets of every live controller in the registry (docs/ha.md), whose
        REST URLs the client learns too; none from a controller without one."""
        self._controllers_read_at = time.monotonic()
        try:
            registry = self.client.controllers()
        except ApiError as e:  # a controller older than the registry: one controller
            log.debug("no controllers' registry: %s", e.message)
            return []
        if not registry.get("mastership"):  # one controller: the target we derived
            return []
        live = [c for c in registry.get("controllers") or () if c.get("healthy")]
        self.client.add_urls([c["api_url"] for c in live if c.get("api_url")])
        return [c["openflow"] for c in live if c.get("openflow")]

    def refresh_controllers(self, now: float | None = None) -> None:
        """Point the bridges at the controllers the registry lists: new ones at once; one
        missing from it for CONTROLLER_GONE_S goes (a restarting controller keeps its
        target); the one we registered with stays. An unchanged list touches nothing."""
        if self.openflow or not self.targets:
            return
        found = self._registry_targets()
        if not found:
            return
        now = time.monotonic() if now is None else now
        for target in found:
            self._target_missing.pop(target, None)
        kept = [t for t in self.targets[1:] if t not in found
                and now - self._target_missing.setdefault(t, now) < CONTROLLER_GONE_S]
        targets = hostprep.controller_targets([self.targets[0], *found, *kept])
        if set(targets) != set(self.targets):
            log.info("controllers changed: OpenFlow %s", ", ".join(targets))
            hostprep.set_controller(self.ovs, targets)
            self.targets = targets

    def check_underlay(self) -> str | None:
        """On the userspace datapath, warn (once: at start) when the tunnel IP is not on an
        OVS bridge; returns the warning given."""
        datapath = hostprep.datapath_type()
        if datapath != underlay.USERSPACE_DATAPATH:
            return None
        try:
            holder = netdev.interface_of_address(self.tunnel_ip)
            interfaces = self.ovs.snapshot().interfaces
        except (OvsError, netdev.NetdevError) as e:
            log.warning("cannot check where tunnel IP %s is: %s", self.tunnel_ip, e)
            return None
        warning = underlay.userspace_tunnel_warning(datapath, self.tunnel_ip, holder,
                                                    interfaces)
        if warning:
            log.warning("%s", warning)
        return warning

    # ---------------------------------------------------------------- main loop
    def run(self) -> None:
        attempt = 0
        while not self.stop.is_set():
            try:
                self.prepare()
                self.check_underlay()
                break
            except OvsError as e:
                log.warning("OVS not ready (%s); retrying", e)
                backoff_wait(self.stop, attempt)
                attempt += 1
        # The long poll blocks in a socket read that a signal does not interrupt: it runs in
        # a daemon thread so that stopping never waits for it. It starts first: it is how
        # the controller knows the agent is there.
        threading.Thread(target=self._poll, name="long-poll", daemon=True).start()
        self.follow_host()
        self.runtimes.watch_docker(self._docker_event, self.stop)
        self.start_docker_plugin()
        worker = threading.Thread(target=self._worker, name="reconcile", daemon=True)
        worker.start()
        while not self.stop.wait(1.0):
            pass
        self.kick.set()
        worker.join(timeout=10)

    def follow_host(self) -> None:
        """Keep OVS's database and the host's veths in memory (an OVSDB monitor, link
        events) so that a pass forks and dumps nothing; without them the agent works as
        before, by `ovs-vsctl` and netlink dumps."""
        links = LinkIndex()
        if not links.start(self.stop):
            log.warning("link events not followed: every pass dumps the host's links")
        db = None
        try:
            from hostagent.ovsdb import OvsdbReplica

            db = OvsdbReplica(self.ovs.db_target, self.ovs.timeout)
            db.start(self.stop)
        except Exception as e:     # the agent still works through ovs-vsctl
            log.warning("no OVSDB replica (%s): every pass runs ovs-vsctl", e)
            db = None
        self.reconciler.use(db, links)

    def _poll(self) -> None:
        attempt = 0
        while not self.stop.is_set():
            try:
                if not self.registered:
                    self.register()
                version, have = self.follow.poll_args()
                desired = self._long_poll(version, have)
                attempt = 0
                if self.follow.take(desired):
                    self.kick.set()
                if time.monotonic() - self._controllers_read_at > CONTROLLERS_REFRESH_S:
                    self.refresh_controllers()
            except ControllerUnreachable as e:
                log.warning("%s; retrying", e)
                backoff_wait(self.stop, attempt)
                attempt += 1
            except ApiError as e:
                if e.status == 404:  # the controller forgot us (new database, host deleted)
                    log.warning("controller does not know host %s: registering again",
                                self.host_id)
                    self.registered = False
                    self.follow.forget()
                elif e.status in (401, 403):
                    log.error("controller refused our credentials: %s (check --token-file / "
                              "LORIS_TOKEN: it must be this host's agent token)", e.message)
                else:
                    log.error("controller refused: %s (%s)", e.message, e.code)
                backoff_wait(self.stop, attempt)
                attempt += 1
            except (OvsError, CredentialsError, pki.PkiError) as e:
                log.error("%s", e)
                backoff_wait(self.stop, attempt)
                attempt += 1

    def _long_poll(self, version: int | None, have: str | None) -> dict:
        wait = LONG_POLL_S if version is not None else 0
        try:
            return self.client.desired(self.host_id, version, wait, have)
        except ApiError as e:
            # a controller older than deltas refuses `have` (400 unknown query parameter):
            # full states from now on
            if have is None or e.status != 400 or "have" not in e.message:
                raise
            log.info("the controller sends no desired-state deltas: %s", e.message)
            self.follow.deltas = False
            return self.client.desired(self.host_id, version, wait)

    def _worker(self) -> None:
        while not self.stop.is_set():
            kicked = self.kick.wait(RESYNC_S)
            self.kick.clear()
            if self.stop.is_set():
                break
            try:
                self.reconcile_and_report(full=not kicked)
            except Exception:  # keep the agent alive; the next pass retries
                log.exception("reconcile failed")
                self.follow.all_dirty()
                self.stop.wait(1.0)

    def reconcile_and_report(self, full: bool = True) -> dict | None:
        """One pass and its report; a `full` one (periodic) also re-reads what the agent
        otherwise follows by events, and looks at every port; another looks only at the
        ports a delta touched since the last pass (all of them after a full state)."""
        with self._lock:
            desired = self.desired
            if desired is None:
                return None
            self._retry_deletes()
            desired = self._known_wired(desired)
            started = time.monotonic()
            only = None if full else self.follow.take_dirty()
            if only is None:
                actual = self.reconciler.apply(desired, full=full)
            else:
                actual = self.reconciler.apply(desired, full=False, only=only)
            self._count_pass(time.monotonic() - started)
            stale = time.monotonic() - self._reported_at > RESYNC_S * 2
            # the stats ride along with a report that goes anyway: they change every pass,
            # and a report is sent only when what the agent made changed (or went stale)
            if actual != self._reported or stale:
                try:
                    body = self.follow.report(actual, self._reported, stale)
                    self._report(body)
                    self.follow.reported(full=body is actual)
                    self._reported, self._reported_at = actual, time.monotonic()
                    self._wired = {int(p) for p, r in actual.get("ports", {}).items()
                                   if r.get("ofport")}
                except (ControllerUnreachable, ApiError) as e:
                    log.warning("reporting actual state failed: %s", e)
                    self._reported = None
            if getattr(self.reconciler, "lease_pending", False):
                self.follow.all_dirty()
                self.kick.set()   # the re-made port's flows are on their way: its lease next
            return actual

    def _known_wired(self, desired: dict) -> dict:
        """`desired` with the ports this agent reported wired no longer `pending`: the
        controller marks a static port `active` without a new desired version (the mark
        changes nothing on the host), so the version the agent has may still say
        `pending` for a port whose connect went on. (`pending` matters to a pass: a port
        still pending whose container stops or goes is dropped here, not kept or deleted.)"""
        if not self._wired:
            return desired
        ports = [dict(p, state="wired") if p.get("state") == "pending"
                 and int(p["id"]) in self._wired else p for p in desired.get("ports") or []]
        return dict(desired, ports=ports)

    def _report(self, actual: dict) -> None:
        if not self.send_stats:
            self.client.put_actual(self.host_id, actual)
            return
        try:
            self.client.put_actual(self.host_id, dict(actual, stats=self.stats()))
        except ApiError as e:
            # a controller older than the `stats` field refuses it (400 unknown field):
            # report without it from now on
            if e.status != 400 or "stats" not in e.message:
                raise
            log.info("the controller takes no stats in reports: %s", e.message)
            self.send_stats = False
            self.client.put_actual(self.host_id, actual)

    def _count_pass(self, seconds: float) -> None:
        self.passes += 1
        self.pass_seconds_total += seconds
        self.last_pass_seconds = seconds

    def stats(self) -> dict:
        """The report's optional `stats` (docs/design.md, the agent protocol)."""
        return {"passes": self.passes, "pass_seconds_total": round(self.pass_seconds_total, 6),
                "last_pass_seconds": round(self.last_pass_seconds, 6),
                "wiring_errors": self.reconciler.wiring_errors}

    # ---------------------------------------------------------------- Docker plugin
    def start_docker_plugin(self) -> None:
        """Serve the `loris` Docker plugin and keep a Docker network per pod
        (docs/docker.md), when configured."""
        if self.docker_plugin is not None:
            serve_plugin(self.docker_plugin, self.client, self.host_id, self._desired_port,
                         self._endpoint_ports, self.stop)

    def _endpoint_ports(self) -> dict[str, int]:
        return {p["container"][len(ENDPOINT_PREFIX):]: int(p["id"])
                for p in (self.desired or {}).get("ports") or []
                if is_endpoint_ref(p["container"])}

    def _desired_port(self, ref: str) -> dict | None:
        for p in (self.desired or {}).get("ports") or []:
            if p["container"] == ref:
                return p
        return None

    # ---------------------------------------------------------------- Docker events
    def _docker_event(self, action: str, container_id: str, name: str) -> None:
        desired = self.desired or {}
        ours = [p for p in desired.get("ports") or []
                if matches(p["container"], container_id, name)]  # fmt: skip
        if not ours:
            return
        if action == "destroy":
            for p in ours:
                self._container_gone(int(p["id"]))
        log.info("Docker %s of %s (ports %s)", action, name or container_id[:12],
                 [p["id"] for p in ours])
        self.follow.all_dirty()
        self.kick.set()

    def _container_gone(self, port_id: int) -> None:
        self._pending_deletes.add(port_id)
        self._retry_deletes()

    def _retry_deletes(self) -> None:
        with self._deletes_lock:
            self._retry_deletes_locked()

    def _retry_deletes_locked(self) -> None:
        for port_id in sorted(self._pending_deletes):
            try:
                self.client.delete_port(port_id)
                log.info("port %s deleted: its container was removed", port_id)
            except ApiError as e:
                if e.status != 404:
                    log.warning("deleting port %s failed: %s", port_id, e)
                    continue
            except ControllerUnreachable as e:
                log.warning("deleting port %s postponed: %s", port_id, e)
                continue
            self._pending_deletes.discard(port_id)
