"""Desired-state deltas of the agent protocol (docs/design.md, "Agent protocol"): what the
controller and the agent must compute alike, pure.

A host's desired state is `{"version", "host", "peers", "ports"}`. Its *digest* names its
content (host, peers and ports, not the version): the agent sends the digest of the state it
holds with its long poll (`have=`), and a controller that served a state of that digest
answers with what changed since (`base` = that digest, `ports` = the ports added or changed,
`removed` = the ids of the ports gone) and the digest of the new state. The agent applies a
delta only to the state whose digest is its `base`, and keeps the result only if its digest
is the one announced; anything else (a lost or reordered answer, a controller that
restarted or never served that state, a bug) makes it ask for the full state. A digest is
content-addressed, so any controller that served the same content can answer with a delta,
and none can answer a state it does not know with one.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from threading import Lock
from typing import Any

from flows.contract import STATE_DIGEST_HEX

KEPT_STATES = 4      # states remembered per host: the agent is at most a version or two behind


class DeltaMismatch(ValueError):
    """A delta that does not apply to the state at hand: ask for the full state."""


def digest(host: Mapping[str, Any], peers: Iterable[Mapping[str, Any]],
           ports: Iterable[Mapping[str, Any]]) -> str:
    """The digest of a desired state's content (its version left out)."""
    body = {"host": host, "peers": sorted(peers, key=lambda p: str(p["id"])),
            "ports": sorted(ports, key=lambda p: int(p["id"]))}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:STATE_DIGEST_HEX]


def state_digest(state: Mapping[str, Any]) -> str:
    return digest(state.get("host") or {}, state.get("peers") or [], state.get("ports") or [])


def changes(old: Mapping[int, Mapping[str, Any]],
            new: Mapping[int, Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], list[int]]:
    """(ports added or changed, ids removed) from the ports `old` to `new` (by id)."""
    changed = [new[i] for i in sorted(new) if old.get(i) != new[i]]
    removed = sorted(i for i in old if i not in new)
    return changed, removed


def apply(state: Mapping[str, Any], delta: Mapping[str, Any]) -> dict[str, Any]:
    """The full state `delta` leads to from `state`; DeltaMismatch if it is not `state`'s
    delta or the result is not the state the delta announced."""
    if delta.get("base") is None or delta.get("base") != state.get("digest"):
        raise DeltaMismatch(f"delta from {delta.get('base')} does not apply to state "
                            f"{state.get('digest')}")
    ports = {int(p["id"]): p for p in state.get("ports") or []}
    for i in delta.get("removed") or []:
        ports.pop(int(i), None)
    for p in delta.get("ports") or []:
        ports[int(p["id"])] = p
    out = {"version": delta["version"], "digest": delta["digest"],
           "host": delta.get("host", state.get("host")),
           "peers": delta.get("peers", state.get("peers")),
           "ports": [ports[i] for i in sorted(ports)]}
    if state_digest(out) != delta["digest"]:
        raise DeltaMismatch(f"the state a delta led to is not {delta['digest']}")
    return out


def touched(delta: Mapping[str, Any]) -> set[int]:
    """The ids of the ports a delta adds, changes or removes."""
    return {int(p["id"]) for p in delta.get("ports") or []} | {
        int(i) for i in delta.get("removed") or []}


class ServedStates:
    """The controller's side: per host, the port sets of the last states it served, by
    digest, to answer a long poll that names one of them with a delta."""

    def __init__(self, keep: int = KEPT_STATES) -> None:
        self.keep = keep
        self._lock = Lock()
        self._states: dict[str, OrderedDict[str, dict[int, Mapping[str, Any]]]] = {}

    def answer(self, host_id: str, version: int, host: Mapping[str, Any],
               peers: list[Mapping[str, Any]], ports: list[Mapping[str, Any]],
               have: str | None) -> dict[str, Any]:
        """The long poll's body: a delta from `have` if this state is known, else the full
        state; either way with the new state's digest (remembered for the next poll)."""
        new = {int(p["id"]): p for p in ports}
        name = digest(host, peers, ports)
        with self._lock:
            served = self._states.setdefault(host_id, OrderedDict())
            base = served.get(have) if have is not None else None
            served[name] = new
            served.move_to_end(name)
            while len(served) > self.keep:
                served.popitem(last=False)
        body: dict[str, Any] = {"version": version, "digest": name, "host": host,
                                "peers": peers}
        if base is None:
            body["ports"] = ports
            return body
        changed, removed = changes(base, new)
        body.update(base=have, ports=changed, removed=removed)
        return body

    def forget(self, host_id: str) -> None:
        with self._lock:
            self._states.pop(host_id, None)
