"""What `ovs-appctl ofproto/trace` says a host's switch does with a packet, and whether it
agrees with the controller's trace (pure: text in, text out; `loris trace` runs the tools).

The controller traces the flows it read from the switch with its own table simulator;
ofproto/trace runs the same packet through the switch itself. Both name every flow they
hit by its cookie, so they agree when the same flows are hit in the same tables and the
packet ends in the same place: dropped, out of the same container ports, into the same
tunnels with the same keys, or to the controller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from flows.contract import BRIDGES

_BRIDGE = re.compile(r'^\s*bridge\("([^"]+)"\)')
_FLOW = re.compile(r"^\s*(\d+)\.\s+(.*)$")
_COOKIE = re.compile(r"\bcookie (0x[0-9a-f]+)")
_ODP_PORT = re.compile(r"^\s+\S+ (\d+)/(\d+):")
_ODP_BRIDGE = re.compile(r"^  (\S+):$")
_TUNNEL_DST = re.compile(r"\bdst=(\d+\.\d+\.\d+\.\d+)")
_TUNNEL_KEY = re.compile(r"\b(?:vni|key|tun_id)=(0x[0-9a-f]+)")


@dataclass
class SwitchTrace:
    """The parts of ofproto/trace's answer that a comparison needs."""
    path: list[tuple[str, int, int | None]] = field(default_factory=list)  # bridge, table,
    #                                                      cookie (None: no flow matched)
    actions: str = ""               # the "Datapath actions:" line
    ports: set[int] = field(default_factory=set)           # datapath port numbers
    tunnels: set[tuple[str, int]] = field(default_factory=set)   # (remote IP, key)
    controller: bool = False

    @property
    def dropped(self) -> bool:
        return not (self.ports or self.tunnels or self.controller)


def parse(text: str) -> SwitchTrace:
    out = SwitchTrace()
    bridge = ""
    for line in text.splitlines():
        if m := _BRIDGE.match(line):
            bridge = m.group(1)
        elif line.startswith("Datapath actions:"):
            out.actions = line.split(":", 1)[1].strip()
        elif (m := _FLOW.match(line)) and bridge:
            cookie = _COOKIE.search(m.group(2))
            if "No match" in m.group(2):
                out.path.append((bridge, int(m.group(1)), None))
            else:
                out.path.append((bridge, int(m.group(1)), int(cookie.group(1), 16)
                                 if cookie else 0))
    _outcome(out)
    return out


def _outcome(out: SwitchTrace) -> None:
    for token in split_top(out.actions):
        if token == "drop":
            continue
        if token.startswith(("tnl_push(", "set(tunnel(")):
            dst, key = _TUNNEL_DST.search(token), _TUNNEL_KEY.search(token)
            if dst and key:
                out.tunnels.add((dst.group(1), int(key.group(1), 16)))
        elif token.startswith("userspace(") or token.startswith("controller("):
            out.controller = True
        elif token.isdigit():
            out.ports.add(int(token))
        elif token.startswith("clone(") and token.endswith(")"):
            inner = _outcome_of(token[6:-1])
            out.ports |= inner.ports
            out.tunnels |= inner.tunnels
            out.controller |= inner.controller


def _outcome_of(actions: str) -> SwitchTrace:
    inner = SwitchTrace(actions=actions)
    _outcome(inner)
    return inner


def split_top(text: str) -> list[str]:
    """Datapath actions split at the commas that are not inside parentheses."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            out.append(text[start:i])
            start = i + 1
    out.append(text[start:])
    return [t.strip() for t in out if t.strip()]


def odp_ports(dpif_show: str) -> dict[int, tuple[str, int]]:
    """Datapath port number -> (bridge, OpenFlow port), from `ovs-appctl dpif/show`."""
    out, bridge = {}, None
    for line in dpif_show.splitlines():
        if m := _ODP_BRIDGE.match(line):
            bridge = m.group(1)
        elif (m := _ODP_PORT.match(line)) and bridge:
            out[int(m.group(2))] = (bridge, int(m.group(1)))
    return out


def compare(expected: dict, switch: SwitchTrace, odp: dict[int, tuple[str, int]]) -> list[str]:
    """Where the switch and the controller's trace disagree ([] when they agree).
    `expected` is the leg's `on_host` of the controller's answer."""
    problems = []
    want = [(b, t, int(c, 16)) for b, t, c in expected.get("path", [])]
    # a table miss is no flow: the controller's trace lists only the flows hit; and only
    # Loris's bridges (the userspace datapath traces a tunnel packet on through the bridge
    # that holds the tunnel IP, e.g. br-phy)
    hit = [step for step in switch.path if step[2] is not None and step[0] in BRIDGES]
    if want != hit:
        i = next((i for i, (a, b) in enumerate(zip(want, hit, strict=False)) if a != b),
                 min(len(want), len(hit)))
        mine = _step(hit[i]) if i < len(hit) else "nothing more"
        theirs = _step(want[i]) if i < len(want) else "nothing more"
        problems.append(f"flows: the switch hit {mine} where the controller's trace hit "
                        f"{theirs}")
    ports = {odp[p][1] for p in switch.ports if odp.get(p, ("", 0))[0] == "br-int"}
    if ports != set(expected.get("ports", [])):
        problems.append(f"out of ports: the switch {sorted(ports) or 'none'}, the controller's "
                        f"trace {sorted(expected.get('ports', [])) or 'none'}")
    tunnels = {(ip, key) for ip, key in expected.get("tunnels", [])}
    if tunnels != switch.tunnels:
        problems.append(f"into tunnels: the switch {_tunnels(switch.tunnels)}, the "
                        f"controller's trace {_tunnels(tunnels)}")
    if bool(expected.get("controller")) != switch.controller:
        problems.append("to the controller: the switch "
                        f"{'yes' if switch.controller else 'no'}, the controller's trace "
                        f"{'yes' if expected.get('controller') else 'no'}")
    return problems


def _step(step: tuple[str, int, int | None]) -> str:
    bridge, table, cookie = step
    return f"{bridge} table {table} " + ("(no flow)" if cookie is None else f"cookie {cookie:#x}")


def _tunnels(tunnels: set[tuple[str, int]]) -> str:
    return ", ".join(f"{ip} key {key}" for ip, key in sorted(tunnels)) or "none"
