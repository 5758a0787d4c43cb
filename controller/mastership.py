"""Who masters which host, and what role each bridge connection gets (pure).

With several controllers on one etcd (docs/ha.md), each host has one OpenFlow master: the
controller whose lease holds the host's key `<prefix>masters/<host>`. These functions
decide, from one consistent view (the live controllers' registry entries and the master
keys), what one controller should do; controller/ha.py reads the view and applies the
decisions.

- A host goes to the live controller with the highest rendezvous score among those that
  have its switches connected (`preferred`). A controller that joins takes over only the
  hosts for which it now scores highest; every other host keeps its master (no churn).
- The key of a host is created only when absent (a create-if-absent transaction arbitrates
  any race), and its creation revision is the OpenFlow generation id the master sends with
  ROLE_REQUEST MASTER: later masters have higher ids, so the switch refuses a deposed one.
- A master gives a host away (deletes its own key) when another live controller that has
  the host connected scores higher, or when it lost the host's switches itself.
- A controller whose lease may have expired (its last confirmed keep-alive plus the TTL
  minus a margin is past) masters nothing: it stops programming before etcd can hand its
  keys to another (`fenced`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum


class Role(Enum):
    MASTER = "master"
    SLAVE = "slave"


@dataclass(frozen=True)
class ControllerEntry:
    """A live controller, as its registry key says (value bound to its lease)."""
    id: str
    api_url: str = ""
    openflow: str = ""
    connected: frozenset[str] = frozenset()     # hosts whose switches it has connected
    started: float = 0.0
    # host -> bridge -> its role on that controller ("master", "slave", "equal")
    roles: Mapping[str, Mapping[str, str | None]] = field(default_factory=dict, compare=False)
    agents: frozenset[str] = field(default=frozenset(), compare=False)  # hosts polling it

    def to_json(self) -> dict:
        return {"id": self.id, "api_url": self.api_url, "openflow": self.openflow,
                "connected": sorted(self.connected), "started": self.started,
                "roles": {h: dict(b) for h, b in self.roles.items()},
                "agents": sorted(self.agents)}

    @classmethod
    def from_json(cls, data: Mapping) -> ControllerEntry:
        return cls(id=str(data["id"]), api_url=str(data.get("api_url") or ""),
                   openflow=str(data.get("openflow") or ""),
                   connected=frozenset(data.get("connected") or ()),
                   started=float(data.get("started") or 0.0),
                   roles={str(h): dict(b) for h, b in (data.get("roles") or {}).items()},
                   agents=frozenset(data.get("agents") or ()))


@dataclass(frozen=True)
class MasterKey:
    """The mastership key of a host: its owner and its creation revision (the generation)."""
    owner: str
    generation: int


@dataclass(frozen=True)
class Decisions:
    acquire: frozenset[str] = frozenset()       # hosts whose absent key to create
    release: frozenset[str] = frozenset()       # hosts whose own key to delete
    mastered: Mapping[str, int] = field(default_factory=dict)   # host -> generation, kept


def score(controller_id: str, host_id: str) -> int:
    """Rendezvous (highest random weight) score of a controller for a host."""
    digest = hashlib.sha256(f"{controller_id}\0{host_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def preferred(host_id: str, controllers: Iterable[ControllerEntry]) -> str | None:
    """The controller that should master `host_id`: the best score among the live ones that
    have its switches connected (ties by id, so every controller computes the same)."""
    candidates = [c.id for c in controllers if host_id in c.connected]
    if not candidates:
        return None
    return max(candidates, key=lambda cid: (score(cid, host_id), cid))


def decide(me: str, controllers: Mapping[str, ControllerEntry],
           keys: Mapping[str, MasterKey], connected_here: Iterable[str],
           fenced: bool) -> Decisions:
    """What controller `me` should do about mastership now.

    `controllers`: the live registry (by id; `me` is counted as connected to
    `connected_here` whatever its published entry says, since that entry may lag);
    `keys`: the master keys by host; `connected_here`: hosts with a switch connected to
    `me`; `fenced`: my lease may have expired (do nothing that needs it)."""
    if fenced:
        return Decisions()
    here = frozenset(connected_here)
    mine = ControllerEntry(me, connected=here)
    view = {cid: c for cid, c in controllers.items() if cid != me}
    view[me] = replace_connected(controllers.get(me, mine), here)
    acquire, release, mastered = set(), set(), {}
    for host in here:
        key = keys.get(host)
        best = preferred(host, view.values())
        if key is None:
            if best == me:
                acquire.add(host)
        elif key.owner == me:
            if best != me:
                release.add(host)
            else:
                mastered[host] = key.generation
    for host, key in keys.items():
        if key.owner == me and host not in here:
            release.add(host)          # its switches left us: let a connected one take it
    return Decisions(frozenset(acquire), frozenset(release), mastered)


def replace_connected(entry: ControllerEntry, connected: frozenset[str]) -> ControllerEntry:
    return ControllerEntry(entry.id, entry.api_url, entry.openflow, connected, entry.started,
                           entry.roles, entry.agents)


def role_for(host_id: str | None, mastered: Mapping[str, int]) -> tuple[Role, int | None]:
    """The role a bridge of `host_id` should have on this controller, and the generation id
    to send with MASTER (SLAVE takes the switch's current one: see `slave_generation`)."""
    if host_id is not None and host_id in mastered:
        return Role.MASTER, mastered[host_id]
    return Role.SLAVE, None


def slave_generation(switch_generation: int, known: int | None) -> int:
    """The generation id to send with ROLE_REQUEST SLAVE: OVS refuses a role request whose
    id is older than the one it holds (compared modulo 2^64) and keeps the newest; the id it
    holds, read with NOCHANGE, is accepted and changes nothing for the master."""
    if known is None:
        return switch_generation
    return known if generation_newer(known, switch_generation) else switch_generation


def generation_newer(a: int, b: int) -> bool:
    """a is newer than b, as OVS compares generation ids (signed 64-bit difference)."""
    diff = (a - b) & 0xFFFFFFFFFFFFFFFF
    return diff != 0 and diff < (1 << 63)


def fence_deadline(confirmed_at: float, ttl: float, margin: float) -> float:
    """Until when a controller may act on its lease: from the moment it *sent* the last
    keep-alive that etcd confirmed (etcd restarts the TTL later than that, never earlier),
    the TTL less a margin for the time a role request or a bundle takes to reach a switch."""
    return confirmed_at + ttl - margin
