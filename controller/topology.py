"""Build the pipeline's `Topology` from one consistent read of the store.

Rows that would make the whole topology invalid (an ofport two ports claim, a tunnel to a
peer that was just removed, a row the flow model refuses) are left out and reported as
`Problem`s instead: one bad row must not stop every other pod or host from being
programmed. The agent's next report fixes most; the host's view shows the rest.

A host's flows depend only on the hosts and on the pods present on that host (their members
on every host), so a programming job reads just those pods: one connect costs the same in
a network of 10 ports as in one of 10,000 (bench/bench_incremental.py).

A port being connected has the ofport its connect chose (`Port.switch_ofport`,
controller/planned_ofports.py) before its agent reported it, so every host, its own
included, is programmed while the agent wires it (controller/connect.py). A port being
connected without a planned number (its host's patch port was not known yet) is left out
of its own host's flows until it is reported; built for another host (`for_host`, as the
programmer does), the topology holds it with a stand-in ofport no port of its host uses:
what `for_host` has for it (the ARP answer, the unicast rule towards its host, the flood
list) does not depend on that number, which appears in no flow of `for_host`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from controller.store import Host, Port, Tx
from flows import HostSpec, PodSpec, PortSpec, Topology, TopologyError
from flows.contract import MAX_OFPORT
from flows.pipeline import FLOW_CACHE

LOG = logging.getLogger("loris.topology")


@dataclass(frozen=True)
class Problem:
    """A store row left out of the flows, and why: shown in its host's view."""
    kind: str                 # "host" | "pod" | "port"
    id: int | str
    host: str | None          # the host it belongs to (None: a pod, on every host)
    pod: int | None
    message: str

    def to_json(self) -> dict:
        return {"kind": self.kind, "id": self.id, "pod": self.pod, "message": self.message}


class Problems:
    """What the last builds left out, by object. A build refreshes what it read: every host,
    and the ports of the pods it read; a row fixed or gone drops out at the next build that
    reads it. Written by programmer workers, read by REST handlers: locked."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_object: dict[tuple[str, int | str], Problem] = {}

    def refresh(self, pods: Iterable[int] | None, found: Iterable[Problem]) -> None:
        scope = None if pods is None else set(pods)
        with self._lock:
            for key, old in list(self._by_object.items()):
                if old.kind == "host" or scope is None or old.pod in scope:
                    del self._by_object[key]
            for p in found:
                if (p.kind, p.id) not in self._by_object:
                    LOG.warning("%s %s left out of the flows: %s", p.kind, p.id, p.message)
                self._by_object[(p.kind, p.id)] = p

    def of_host(self, host_id: str) -> list[Problem]:
        with self._lock:
            return sorted((p for p in self._by_object.values()
                           if p.host in (host_id, None)), key=lambda p: (p.kind, str(p.id)))


def build(tx: Tx, pods: Iterable[int] | None = None,
          problems: list[Problem] | None = None,
          for_host: str | None = None) -> tuple[Topology, dict[str, Host]]:
    """The desired state of every host, and the host rows (for their dpids).

    With `pods`, only those pods and their ports are read: every host's flows for those pods,
    and its base pipeline, come out as from the whole topology. A row that does not fit the
    flow model is left out and appended to `problems`; the rest is programmed. With
    `for_host`, the result is good for that host's flows only: it also holds the other
    hosts' ports still being wired (the module's docstring)."""
    found: list[Problem] = [] if problems is None else problems
    wanted = None if pods is None else sorted(set(pods))
    hosts = {h.id: h for h in tx.hosts()}
    tunnels = tx.all_tunnels()
    clashes = tx.ofport_clashes(wanted)
    vlans = tx.all_local_vlans(None if wanted is None else
                               set(wanted) | {p.pod_id for p in clashes})
    specs: list[HostSpec] = []
    for h in hosts.values():
        peers: dict[str, int] = {}
        used = {h.tun_patch_ofport}
        for peer, ofport in sorted(tunnels.get(h.id, {}).items()):
            if peer in hosts and peer != h.id and ofport not in used:
                peers[peer] = ofport
                used.add(ofport)
        try:
            specs.append(HostSpec(h.id, h.tunnel_ip, h.int_patch_ofport, h.tun_patch_ofport,
                                  peers, vlans.get(h.id, {})))
        except TopologyError as e:
            found.append(Problem("host", h.id, h.id, None, str(e)))
    known = {s.id for s in specs}
    if wanted is None:
        pod_rows, port_rows = tx.pods(), tx.ports()
    else:
        pod_rows = [p for p in map(tx.pod, wanted) if p is not None]
        port_rows = sorted((port for pod_id in wanted for port in tx.ports(pod_id=pod_id)),
                           key=lambda port: port.id)
    pod_specs = []
    for p in pod_rows:
        try:
            pod_specs.append(PodSpec.for_pod(p.id, p.subnet))
        except (TopologyError, ValueError) as e:
            found.append(Problem("pod", p.id, None, p.id, str(e)))
    pods_ok = {p.id for p in pod_specs}

    standin = _stand_ins(port_rows, for_host, hosts)

    def ofport_of(port: Port) -> int | None:
        n = port.switch_ofport
        return n if n is not None else standin.get(port.id)

    def usable(port: Port) -> bool:
        host = hosts.get(port.host_id)
        return ofport_of(port) is not None and host is not None and port.host_id in known

    def fits(port: Port) -> bool:
        return ofport_of(port) != hosts[port.host_id].int_patch_ofport \
            and port.pod_id in vlans.get(port.host_id, {})

    # an ofport claimed by two ports belongs to the first (by id) that is otherwise fine,
    # whichever pods are being read
    owner: dict[tuple[str, int], int] = {}
    for port in clashes:
        if usable(port) and fits(port):
            owner.setdefault((port.host_id, port.switch_ofport), port.id)
    ports: dict[int, PortSpec] = {}
    for port in port_rows:
        if not usable(port) or port.pod_id not in pods_ok:
            continue
        if port.id in standin:
            if not fits(port):
                continue
        elif owner.get((port.host_id, port.switch_ofport), port.id) != port.id or \
                not fits(port):
            found.append(_port_problem(port, f"ofport {port.switch_ofport} clashes with another "
                                             "port or the pod has no local VLAN on the host"))
            continue
        try:
            ports[port.id] = _port_spec(port.id, port.pod_id, port.host_id, ofport_of(port),
                                        port.mac, port.address, port.dhcp)
        except TopologyError as e:
            found.append(_port_problem(port, str(e)))
    while True:
        try:
            return Topology(specs, pod_specs, ports.values()), hosts
        except TopologyError as e:
            # one port that clashes with the others (a MAC or IP twice in a pod, the DHCP
            # server's address) is left out; everything else still gets its flows
            if e.obj is None or e.obj[0] != "port" or e.obj[1] not in ports:
                raise
            bad = ports.pop(e.obj[1])
            found.append(Problem("port", bad.id, bad.host_id, bad.pod_id, str(e)))


@lru_cache(maxsize=FLOW_CACHE)       # small: see flows/pipeline.py
def _port_spec(*fields: object) -> PortSpec:
    """A port's spec, checked and normalised once: every job of its pod on every host
    builds it from the same row values (a connect to a pod of 50 builds 50 per host)."""
    return PortSpec(*fields)  # type: ignore[arg-type]


def _stand_ins(ports: list[Port], for_host: str | None,
               hosts: dict[str, Host]) -> dict[int, int]:
    """Port id -> stand-in ofport for the ports of other hosts than `for_host` that are
    being connected (pending, no ofport, planned or reported, and no error yet): from the
    top of the range down, skipping what the host's other ports and patch port use."""
    if for_host is None:
        return {}
    waiting = [p for p in ports if p.host_id != for_host and p.state == "pending"
               and p.switch_ofport is None and p.error_code is None]
    out: dict[int, int] = {}
    for host_id in {p.host_id for p in waiting}:
        host = hosts.get(host_id)
        used = {p.switch_ofport for p in ports if p.host_id == host_id}
        used.add(host.int_patch_ofport if host else None)
        free = (n for n in range(MAX_OFPORT, 0, -1) if n not in used)
        for p in sorted((p for p in waiting if p.host_id == host_id), key=lambda p: p.id):
            out[p.id] = next(free)
    return out


def _port_problem(port: Port, why: str) -> Problem:
    return Problem("port", port.id, port.host_id, port.pod_id,
                   f"port {port.id} ({port.container} on {port.host_id}, pod {port.pod_id}): "
                   f"{why}")
