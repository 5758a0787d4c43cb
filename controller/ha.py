"""Several controllers on one etcd: the registry, host mastership and OpenFlow roles (glue).

On (`LORIS_ETCD_ENDPOINTS` set) the controller holds one etcd lease (`ha_lease_ttl`) and,
bound to it, under `<prefix>` (the store's etcd_prefix + "-ha/", by default /loris/v1-ha/):

    <prefix>controllers/<id>     its registry entry (JSON: REST URL, OpenFlow target, the
                                 hosts it has switches of, each bridge's role here, the
                                 hosts whose agents poll it: the others count them alive)
    <prefix>masters/<host>       value = the id of the host's master; the key's creation
                                 revision is the generation id sent to the host's switches

Two threads. The keep-alive refreshes the lease every TTL/3 and moves the fencing
deadline (mastership.fence_deadline) forward from the moment each confirmed refresh was
sent; past it, `fenced()` is true and `Roles.may_write` refuses every write at once, before
etcd can expire the lease and give the hosts to another controller.

The loop, every `ha_interval` seconds or when a switch connects, first follows the changes
committed by other controllers (SQLite's data_version, or the etcd store's revision,
moved): our agents' long polls and waiting connects wake, and the hosts we master are
recomputed. Then it reads the registry and the master keys,
publishes its own entry when it changed, asks mastership.decide what to acquire and
release, does it with conditional transactions (create if absent; delete only our own
key, by creation revision) and gives every connection of ours the role that follows:
MASTER with the key's generation (then the host's bridges are reconciled from a dump in
one bundle each), else SLAVE. etcd unreachable: the loop keeps what it had until the
fence falls.

The decisions are pure (controller/mastership.py); this module only reads, writes and
sends. Without etcd nothing here runs and every connection stays EQUAL (roles.py).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from controller import recovery
from controller.context import Context
from controller.etcd import (
    Delete,
    EtcdClient,
    LeaseNotFound,
    Put,
    StoreError,
    create_revision_is,
    key_absent,
)
from controller.installed import InstalledMarks, store_revision
from controller.mastership import ControllerEntry, MasterKey, Role, decide, fence_deadline, role_for
from controller.programmer import Programmer
from controller.roles import Roles
from controller.switches import OpenFlowError, Switches

LOG = logging.getLogger("loris.ha")
DEFAULT_PREFIX = "/loris/v1-ha/"      # wiring: the store's etcd_prefix + "-ha/"
FOLLOW_PAUSE = 0.1      # seconds between two passes over our hosts woken by writes
SWEEP_EVERY = 10.0      # seconds between two looks for unfinished connects left over
KEEPALIVE_RETRY_S = 0.05  # pause before trying a failed lease keep-alive again (another member)


@dataclass(frozen=True)
class Identity:
    id: str
    api_url: str
    openflow: str


def identity(settings: Any) -> Identity:
    """This controller's registry name and addresses, from the settings or guessed."""
    host, port = settings.api_host, settings.api_port
    if host in ("", "0.0.0.0", "::"):
        host = _own_address()
    cid = settings.controller_id or f"{socket.gethostname()}-{port}"
    scheme = "https" if settings.api_cert else "http"
    api_url = settings.advertise_api or f"{scheme}://{host}:{port}"
    of_host = api_url.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    of_scheme = "ssl" if settings.openflow_tls else "tcp"
    openflow = settings.advertise_openflow or f"{of_scheme}:{of_host}:{settings.openflow_port}"
    return Identity(cid, api_url.rstrip("/"), openflow)


def _store_marker(store: Any) -> object:
    """What moves when a controller committed: the etcd store's last write (its watch
    keeps the mirror current), else SQLite's data_version of the writing connection (it
    moves on other connections' commits only)."""
    revision = store_revision(store)
    return store.pragma("data_version") if revision is None else revision


def _own_address() -> str:
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


class HighAvailability:
    def __init__(self, client: EtcdClient, me: Identity, ttl: int, interval: float,
                 ctx: Context, switches: Switches, roles: Roles, programmer: Programmer,
                 prefix: str = DEFAULT_PREFIX,
                 monotonic: Callable[[], float] = time.monotonic,
                 marks: InstalledMarks | None = None) -> None:
        self.client = client
        self.controllers_prefix = prefix + "controllers/"
        self.masters_prefix = prefix + "masters/"
        self.me = me
        self.ttl = ttl
        self.interval = interval
        self.margin = max(1.0, ttl / 4)
        self.ctx = ctx
        self.switches = switches
        self.roles = roles
        self.programmer = programmer
        self.monotonic = monotonic
        self.marks = marks              # the revisions our hosts are programmed up to
        self._full_tick = True          # wake(): a whole tick; store_moved(): follow only
        self._next_sweep = monotonic() + SWEEP_EVERY
        self._lock = threading.Lock()
        self._lease: int | None = None
        self._valid_until = 0.0
        self._wake = threading.Event()
        self._published: dict | None = None
        self._mastered: dict[str, int] = {}
        self._controllers: dict[str, ControllerEntry] = {}
        self._keys: dict[str, MasterKey] = {}
        self.last_error: str | None = None
        self._data_version: object = None
        self._was_fenced = True             # until the first lease
        self.started = time.time()
        roles.fenced = self.fenced

    # ---- fencing and the lease ---------------------------------------------------------------
    def fenced(self) -> bool:
        with self._lock:
            return self.monotonic() >= self._valid_until

    def _confirmed(self, sent: float) -> None:
        with self._lock:
            self._valid_until = max(self._valid_until,
                                    fence_deadline(sent, self.ttl, self.margin))

    def keepalive_forever(self) -> None:
        pause = self.ttl / 3
        while True:
            time.sleep(pause)
            try:
                # After a failure, again at once: the member that failed rests (the
                # client's endpoints), so the next try goes to another; waiting the usual
                # third of the TTL after a member's timeout would fence a healthy controller
                # whenever the one member it talked to hangs.
                pause = self.ttl / 3 if self.keepalive() else KEEPALIVE_RETRY_S
            except Exception:
                LOG.exception("the etcd lease keep-alive failed")
                pause = self.ttl / 3

    def keepalive(self) -> bool:
        """Renew our lease; whether etcd confirmed it (or there is none to renew)."""
        with self._lock:
            lease = self._lease
        if lease is None:
            return True
        sent = self.monotonic()
        try:
            self.client.keepalive(lease)
        except LeaseNotFound:
            LOG.error("our etcd lease %x expired: we master nothing until we register again",
                      lease)
            with self._lock:
                self._lease, self._valid_until = None, 0.0
            self._wake.set()
            return True
        except StoreError as e:
            LOG.warning("etcd lease keep-alive: %s (we stop programming switches %.1f s "
                        "after the last one that worked)", e, self.ttl - self.margin)
            return False
        self._confirmed(sent)
        return True

    def _register(self) -> None:
        sent = self.monotonic()
        lease = self.client.grant(self.ttl)
        with self._lock:
            self._lease, self._published = lease.id, None
        self._confirmed(sent)
        LOG.info("registered in etcd as %s (lease %x, TTL %d s)", self.me.id, lease.id,
                 self.ttl)

    def lease(self) -> int | None:
        """The id of the lease we hold, while it is surely alive (not fenced)."""
        with self._lock:
            return self._lease if self.monotonic() < self._valid_until else None

    def live_leases(self) -> set[int]:
        """Every live lease in etcd (connect_owners.gone: is a connect's owner alive?)."""
        return set(self.client.leases())

    def register(self) -> None:
        """Take a lease now (at start, before the REST API serves connects); on failure
        the loop tries again."""
        try:
            self._register()
        except StoreError as e:
            self.last_error = str(e)
            LOG.warning("registering in etcd: %s", e)

    def revoke(self) -> None:
        """Leave at once (a clean stop): our keys go, the others take our hosts now."""
        with self._lock:
            lease, self._lease, self._valid_until = self._lease, None, 0.0
        if lease is not None:
            try:
                self.client.revoke(lease)
            except StoreError as e:
                LOG.warning("revoking our etcd lease: %s", e)

    # ---- the loop ----------------------------------------------------------------------------
    def wake(self) -> None:
        self._full_tick = True
        self._wake.set()

    def store_moved(self) -> None:
        """Another controller committed (the store's watch): our hosts follow at once,
        the registry and master keys are read at the next tick as usual."""
        self._wake.set()

    def run_forever(self) -> None:
        next_tick = self.monotonic()
        while True:
            full, self._full_tick = self._full_tick or self.monotonic() >= next_tick, False
            try:
                if full:
                    next_tick = self.monotonic() + self.interval
                    self.tick()
                else:
                    self._follow_other_writers(quick=True)
                    time.sleep(FOLLOW_PAUSE)    # a burst of writes: one pass for several
            except Exception:
                LOG.exception("mastership loop")
            self._wake.wait(max(0.0, next_tick - self.monotonic()))
            self._wake.clear()

    def tick(self) -> None:
        self._follow_other_writers()
        here = self._connected()
        if self._lease is None:
            try:
                self._register()
            except StoreError as e:
                self.last_error = str(e)
                LOG.warning("registering in etcd: %s", e)
        fenced = self.fenced()
        if fenced != self._was_fenced:
            self._was_fenced = fenced
            if fenced:
                LOG.error("fenced: etcd has not confirmed our lease for %.1f s; we program "
                          "no switch until it does (our hosts go to other controllers)",
                          self.ttl - self.margin)
            else:
                LOG.info("etcd confirms our lease again: mastership resumes")
        if fenced:
            self._mastered = {}
        else:
            try:
                self._mastered = self._arbitrate(here)
                self.last_error = None
            except StoreError as e:
                self.last_error = str(e)
                LOG.warning("reading the master keys from etcd: %s (keeping what we have "
                            "while our lease lasts)", e)
                self._mastered = {h: g for h, g in self._mastered.items() if h in here}
        self._apply_roles(here, dict(self._mastered))

    def _follow_other_writers(self, quick: bool = False) -> None:
        """Another controller committed to the shared store: our agents' long polls, the
        connects waiting here and the hosts we master follow (the hosts in full: the
        programmer sends only what differs from what they hold). `quick` (woken by a
        write, store_moved): only the hosts; the store's watch and our own commits already
        woke the polls and connects concerned, each its own."""
        try:
            seen = _store_marker(self.ctx.store)
        except Exception as e:          # etcd away: the next tick looks again
            LOG.debug("store change probe: %s", e)
            return
        if seen == self._data_version:
            return
        first, self._data_version = self._data_version is None, seen
        if first:
            return
        if not quick:
            self.ctx.publish()
            self.ctx.port_waiters.notify(self.ctx.port_waiters.keys())
        for host in sorted(self._mastered):
            self._program_all(host, seen)

    def _program_all(self, host: str, revision: object, sync: list[str] | None = None
                      ) -> None:
        """Recompute `host` in full (a dump first for `sync`); once its bridges took it,
        publish that they hold the store up to `revision` (installed.py)."""
        job = self.programmer.submit(host, None, sync=sync or ())
        if self.marks is not None and isinstance(revision, int):
            self.marks.track(host, revision, job)

    def _connected(self) -> dict[str, dict[str, Any]]:
        """host -> {bridge: datapath} of the switches connected to us."""
        dps = self.switches.connected_datapaths()
        if any(self.ctx.dpid_owner(dp.id) is None for dp in dps):
            self.ctx.publish()     # a host registered through another controller
        out: dict[str, dict[str, Any]] = {}
        for dp in dps:
            owner = self.ctx.dpid_owner(dp.id)
            if owner is not None:
                out.setdefault(owner[0], {})[owner[1]] = dp
        return out

    def heard_elsewhere_now(self, host_id: str) -> bool:
        """Whether another controller's registry entry, read now, lists the host's agent as
        heard lately. A connect's last look before refusing a host as away: the loop's
        view is up to two intervals old, more after a store outage, when agents have just
        moved to other controllers."""
        try:
            controllers = self._read_controllers()
        except StoreError:
            return False
        self._note_agents_elsewhere(controllers.values())
        return any(host_id in e.agents for e in controllers.values() if e.id != self.me.id)

    def _note_agents_elsewhere(self, entries: Iterable[ControllerEntry]) -> None:
        for entry in entries:   # agents polling another controller are alive
            if entry.id != self.me.id and entry.agents:
                self.ctx.board.heard_elsewhere(entry.agents)

    def _read_controllers(self) -> dict[str, ControllerEntry]:
        controllers: dict[str, ControllerEntry] = {}
        for kv in self.client.range(self.controllers_prefix, prefix=True).kvs:
            try:
                entry = ControllerEntry.from_json(kv.json())
            except (ValueError, KeyError, TypeError):
                LOG.warning("unreadable registry entry %s", kv.key)
                continue
            controllers[entry.id] = entry
        return controllers

    def _read(self) -> tuple[dict[str, ControllerEntry], dict[str, MasterKey]]:
        controllers = self._read_controllers()
        keys = {kv.key[len(self.masters_prefix):]: MasterKey(kv.text, kv.create_revision)
                for kv in self.client.range(self.masters_prefix, prefix=True).kvs}
        return controllers, keys

    def _arbitrate(self, here: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
        controllers, keys = self._read()
        self._note_agents_elsewhere(controllers.values())
        self._publish(here)
        with self._lock:
            lease = self._lease
        decisions = decide(self.me.id, controllers, keys, set(here), self.fenced())
        for host in sorted(decisions.release):
            self._release(host, keys[host].generation)
            if self.marks is not None:
                self.marks.forget(host)
            keys.pop(host, None)
        mastered = dict(decisions.mastered)
        for host in sorted(decisions.acquire):
            if lease is None:
                break
            result = self.client.txn([key_absent(self.masters_prefix + host)],
                                     [Put(self.masters_prefix + host, self.me.id, lease)])
            if result.succeeded:
                mastered[host] = result.revision
                keys[host] = MasterKey(self.me.id, result.revision)
                LOG.info("we are now the master of host %s (generation %d)", host,
                         result.revision)
        gone = set(self._controllers) - set(controllers)
        self._controllers, self._keys = controllers, keys
        if gone or self.monotonic() >= self._next_sweep:
            self._next_sweep = self.monotonic() + SWEEP_EVERY
            self._sweep(gone)
        return mastered

    def _sweep(self, gone: set[str]) -> None:
        """Controllers left the registry (their leases ended), or a while passed: drop what
        unfinished connects of controllers that are gone left, and those of ours whose undo
        failed (recovery.sweep; any controller may, the store settles races)."""
        why = (f"controller {', '.join(sorted(gone))} went away" if gone else
               "it ended (its undo failed) or its controller went away")
        try:
            dropped = recovery.sweep(self.ctx, why)
        except Exception as e:          # the next departure, or a restart, sweeps again
            LOG.warning("dropping unfinished connects left over: %s", e)
            return
        if dropped:
            LOG.info("dropped %d unfinished connects: %s", dropped, why)

    def _release(self, host: str, generation: int) -> None:
        key = self.masters_prefix + host
        self.client.txn([create_revision_is(key, generation)], [Delete(key)])
        LOG.info("handing host %s over (generation %d ends)", host, generation)

    def _publish(self, here: Mapping[str, Mapping[str, Any]]) -> None:
        """Put our registry entry when what it says changed (and after a new lease)."""
        with self._lock:
            lease = self._lease
        if lease is None:
            return
        roles = {host: {bridge: self.roles.role_name(dp.id) for bridge, dp in bridges.items()}
                 for host, bridges in here.items()}
        entry = ControllerEntry(self.me.id, self.me.api_url, self.me.openflow,
                                frozenset(here), self.started, roles,
                                frozenset(self.ctx.board.heard_here())).to_json()
        if entry == self._published:
            return
        self.client.put(self.controllers_prefix + self.me.id, json.dumps(entry), lease=lease)
        self._published = entry

    def _apply_roles(self, here: Mapping[str, Mapping[str, Any]],
                     mastered: Mapping[str, int]) -> None:
        for host, bridges in sorted(here.items()):
            role, generation = role_for(host, mastered)
            known = self._keys.get(host)
            for bridge, dp in sorted(bridges.items()):
                current = self.roles.role(dp.id)
                if current is not None and current[0] is dp and current[1] is role and \
                        (role is Role.SLAVE or current[2] == generation):
                    continue
                try:
                    got = self.roles.assign(dp, role, generation,
                                            known.generation if known else None)
                except OpenFlowError as e:
                    LOG.warning("role %s for %s of %s: %s", role.value, bridge, host, e)
                    continue
                self.programmer.disown(dp.id)
                if role is Role.MASTER:
                    LOG.info("%s of %s: MASTER (generation %d); reconciling it", bridge,
                             host, got)
                    self._program_all(host, _store_marker(self.ctx.store), [bridge])

    # ---- views ---------------------------------------------------------------------------------
    def view(self) -> dict:
        """The registry and the master keys as this controller last read them."""
        controllers, keys = dict(self._controllers), dict(self._keys)
        masters: dict[str, list[str]] = {}
        for host, key in keys.items():
            masters.setdefault(key.owner, []).append(host)
        return {"self": self.me.id, "fenced": self.fenced(), "error": self.last_error,
                "controllers": controllers, "masters": masters, "keys": keys}
