"""The packets of a trace and what became of them, in words (pure: no store, no switch).

A trace is a few *legs*, the packets a real exchange needs: the sender's ARP request for
the destination (answered on the sender's host), the packet itself and, for ICMP and TCP,
the destination's ARP request back and its reply. Each leg runs through the flows really
installed (dumped from the switches) and through the flows the controller wants (computed
from the store); `judge` compares both with what the leg should do and says why it
stopped: a flow missing on the switch or one the controller does not want (the two
traces part ways there), or the design (port security, another pod, an unknown address).
`verdict` makes the one line `loris trace` ends with, and its fix.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from controller.trace_names import TABLE_NAMES, Names, PortInfo
from flows import Flow, parse_cookie
from flows.contract import INTEGRATION_BRIDGE
from flows.trace import FabricTrace

BROADCAST = "ff:ff:ff:ff:ff:ff"
ZERO_MAC = "00:00:00:00:00:00"
ETH_IP, ETH_ARP = 0x0800, 0x0806
PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17}
EPHEMERAL_PORT = 40000
RESYNC_FIX = ("the controller puts it back when it reconciles the bridge: `loris resync {host}` "
              "(or reconnect the bridge)")


@dataclass(frozen=True)
class Expect:
    """What a leg should do: reach a port ("port"), come back as the ARP answer carrying
    `mac` ("answer"), or reach the controller ("controller")."""
    kind: str
    host: str
    ofport: int | None
    port: PortInfo | None = None
    mac: str | None = None


@dataclass(frozen=True)
class Leg:
    name: str                   # "arp", "request", "arp back", "reply", "dhcp"
    what: str                   # "a1 asks who has 198.18.135.13"
    sender: PortInfo
    packet: Mapping[str, object]
    expect: Expect


@dataclass(frozen=True)
class Bridge:
    """One bridge of the trace: what it holds and what the controller wants there (both
    limited to the pods of the trace), and when the controller last reconciled it."""
    installed: frozenset[Flow] | None       # None: not connected, nothing read
    desired: frozenset[Flow]
    reconciled_at: float | None = None

    @property
    def missing(self) -> list[Flow]:
        have = {f.cookie for f in self.installed or ()}
        return sorted((f for f in self.desired if f.cookie not in have), key=_order)

    @property
    def unwanted(self) -> list[Flow]:
        """Installed flows the controller does not want (stale or altered by hand)."""
        want = {f.cookie for f in self.desired}
        return sorted((f for f in self.installed or () if f.cookie not in want or
                       f not in self.desired), key=_order)


def _order(flow: Flow) -> tuple:
    return (flow.table, -flow.priority, flow.cookie)


@dataclass(frozen=True)
class Run:
    """A leg through the installed flows and through the desired ones (None and the error
    when the tracer could not follow the flows)."""
    leg: Leg
    installed: FabricTrace | None
    desired: FabricTrace | None
    installed_error: str | None = None


@dataclass(frozen=True)
class Outcome:
    ok: bool
    text: str
    fix: str | None = None
    at: tuple[str, str, int] | None = None    # host, bridge, table where it stopped


# ---- the legs ---------------------------------------------------------------------------

def legs(protocol: str, src: PortInfo, dst: PortInfo | None, dst_ip: str | None,
         port: int | None = None, source_mac: str | None = None,
         source_ip: str | None = None, answer_mac: str | None = None) -> list[Leg]:
    """The packets of one trace. `dst` is the destination port (None for a bare IP that no
    member of the sender's pod has); `answer_mac` the MAC the ARP answer must carry (the
    destination's, or the pod's DHCP server's)."""
    mac, ip = source_mac or src.mac, source_ip or src.ip
    if protocol == "dhcp":
        pkt = {"eth_src": mac, "eth_dst": BROADCAST, "eth_type": ETH_IP, "ip_proto": 17,
               "ipv4_src": source_ip or "0.0.0.0", "ipv4_dst": "255.255.255.255",
               "udp_src": 68, "udp_dst": 67}
        return [Leg("dhcp", f"{src.name} asks for a DHCP lease", src, pkt,
                    Expect("controller", src.host, src.ofport, src))]
    target = dst.ip if dst is not None else dst_ip
    out = [Leg("arp", f"{src.name} asks who has {target}", src, _arp(mac, ip, target),
               Expect("answer", src.host, src.ofport, src, answer_mac))]
    if protocol == "arp" or dst is None:
        return out
    pkt = _ip(protocol, mac, dst.mac, ip, dst.ip, port)
    out.append(Leg("request", f"{protocol.upper()} {src.name} -> {dst.name}", src, pkt,
                   Expect("port", dst.host, dst.ofport, dst)))
    if protocol in ("icmp", "tcp"):
        out.append(Leg("arp back", f"{dst.name} asks who has {src.ip}", dst,
                       _arp(dst.mac, dst.ip, src.ip), Expect("answer", dst.host, dst.ofport,
                                                             dst, src.mac)))
        back = _ip(protocol, dst.mac, src.mac, dst.ip, src.ip, port, reply=True)
        out.append(Leg("reply", f"{protocol.upper()} reply {dst.name} -> {src.name}", dst,
                       back, Expect("port", src.host, src.ofport, src)))
    return out


def _arp(mac: str, ip: str, target: str) -> dict:
    return {"eth_src": mac, "eth_dst": BROADCAST, "eth_type": ETH_ARP, "arp_op": 1,
            "arp_sha": mac, "arp_spa": ip, "arp_tha": ZERO_MAC, "arp_tpa": target}


def _ip(protocol: str, src_mac: str, dst_mac: str, src_ip: str, dst_ip: str,
        port: int | None, reply: bool = False) -> dict:
    pkt: dict = {"eth_src": src_mac, "eth_dst": dst_mac, "eth_type": ETH_IP,
                 "ipv4_src": src_ip, "ipv4_dst": dst_ip, "ip_proto": PROTOCOLS[protocol]}
    if protocol in ("tcp", "udp"):
        ports = (port or 0, EPHEMERAL_PORT) if reply else (EPHEMERAL_PORT, port or 0)
        pkt[f"{protocol}_src"], pkt[f"{protocol}_dst"] = ports
    return pkt


# ---- where a trace went -------------------------------------------------------------------

def steps(trace: FabricTrace) -> list[tuple[str, str, int, int]]:
    """(host, bridge, table, cookie) of every flow hit, in order."""
    return [(hop.host, hop.bridge, f.table, f.cookie) for hop in trace.hops for f in hop.flows]


def stop(trace: FabricTrace) -> tuple[str, str, int, Flow | None] | None:
    """Where the packet ended when it reached no port: the last bridge's drop flow, or
    the table it missed in (flow None)."""
    for hop in reversed(trace.hops):
        if not hop.flows:
            return hop.host, hop.bridge, 0, None
        last = hop.flows[-1]
        if last.actions and last.actions[-1][0] == "goto":
            return hop.host, hop.bridge, last.actions[-1][1], None
        if not any(a[0] in ("output", "controller") for a in last.actions):
            return hop.host, hop.bridge, last.table, last
    return None


def reached(trace: FabricTrace, expect: Expect) -> bool:
    if expect.kind == "controller":
        return any(parse_cookie(cookie) is not None and parse_cookie(cookie)[1] == expect.port.id
                   for h, _, cookie, _ in trace.controller if h == expect.host)
    for d in trace.deliveries:
        if (d.host, d.ofport) != (expect.host, expect.ofport):
            continue
        if expect.kind == "port":
            return True
        if d.packet.get("arp_op") == 2 and d.packet.get("arp_sha") == expect.mac:
            return True
    return False


def source_host_path(trace: FabricTrace, host: str) -> list[tuple[str, int, int]]:
    """(bridge, table, cookie) of the flows hit on `host` (what ofproto/trace there shows)."""
    return [(b, t, c) for h, b, t, c in steps(trace) if h == host]


# ---- judging one leg ------------------------------------------------------------------------

def judge(run: Run, names: Names, bridges: Mapping[tuple[str, str], Bridge]) -> Outcome:
    leg, got = run.leg, run.installed
    if got is None:
        return Outcome(False, f"cannot follow the flows on the switches: {run.installed_error}")
    if reached(got, leg.expect):
        return Outcome(True, _success(leg, got, names))
    end = stop(got)
    where = f"at {end[0]} {end[1]} table {end[2]}" if end else "on the way"
    at = end[:3] if end else None
    want = run.desired
    if want is not None and reached(want, leg.expect):
        return _switch_differs(got, want, names, bridges, where, at)
    if got.unexplored:
        host = got.unexplored[0][0]
        return Outcome(False, f"sent into the tunnel to {host}, which is not {leg.expect.host}",
                       RESYNC_FIX.format(host=got.hops[-1].host), at)
    reason, fix = _design_reason(leg, end, names)
    return Outcome(False, f"dropped {where}{reason}", fix, at)


def _switch_differs(got: FabricTrace, want: FabricTrace, names: Names,
                    bridges: Mapping[tuple[str, str], Bridge], where: str,
                    at: tuple | None) -> Outcome:
    """The controller's flows deliver it, the switch's do not: name the flow where the two
    traces part ways."""
    mine, theirs = steps(got), steps(want)
    for i, wanted in enumerate(theirs):
        host, bridge, table, cookie = wanted
        if i < len(mine) and mine[i] == wanted:
            continue
        br = bridges.get((host, bridge))
        flow = next((f for f in br.desired if f.cookie == cookie), None) if br else None
        when = _when(br.reconciled_at if br else None)
        place = f"at {host} {bridge} table {table}"
        if br is not None and br.installed is not None and flow is not None and \
                cookie not in {f.cookie for f in br.installed}:
            return Outcome(False, f"dropped {place}: {_phrase(names.role(flow, bridge, host))} "
                           f"that the controller wants is missing on the switch "
                           f"(last reconciled {when})", RESYNC_FIX.format(host=host),
                           (host, bridge, table))
        if i < len(mine):
            h2, b2, t2, c2 = mine[i]
            return Outcome(False, f"dropped at {h2} {b2} table {t2}: the switch has a flow "
                           f"the controller does not want there ({names.owner(c2, h2)}, "
                           f"cookie {c2:#x}; last reconciled {when})",
                           RESYNC_FIX.format(host=h2), (h2, b2, t2))
        break
    return Outcome(False, f"dropped {where}: the switch's flows differ from what the "
                   "controller wants", None, at)


def _phrase(role: str) -> str:
    return role if role.startswith("the flow") else f"the flow '{role}'"


def _when(stamp: float | None) -> str:
    if not stamp:
        return "never"
    ago = max(0, int(time.time() - stamp))
    clock = time.strftime("%H:%M:%S", time.localtime(stamp))
    return f"{clock}, {ago} s ago" if ago < 120 else f"{clock}, {ago // 60} min ago"


def _design_reason(leg: Leg, end: tuple | None, names: Names) -> tuple[str, str | None]:
    """Why the flows the controller wants drop this packet: ' (what): why', and a fix."""
    s, pkt = leg.sender, leg.packet
    if end is None:
        return "", None
    host, bridge, table, flow = end
    label = f" ({TABLE_NAMES.get(bridge, {}).get(table, 'table')})"
    if host == s.host and bridge == INTEGRATION_BRIDGE and table == 0:
        why = _spoofed(s, pkt)
        if why:
            fix = (f"connect {s.name} with `dhcp` to use DHCP" if "DHCP port" in why else
                   f"{s.name} must send from the MAC and IP Loris gave it ({s.mac}, {s.ip}: "
                   "`ip addr show eth1` in it); for another address, connect it again with it")
            return f" (port security of {s.name}): {why}", fix
    if bridge == INTEGRATION_BRIDGE and table == 10 and pkt.get("eth_type") == ETH_ARP:
        tpa = pkt.get("arp_tpa")
        if tpa == pkt.get("arp_spa") == s.ip:
            return (f" (ARP responder): {s.name} asked for its own address {tpa}; Loris never "
                    "answers that (a duplicate-address probe must stay unanswered)", None)
        owners = [p for p in names.ports.values() if p.ip == tpa and p.id != s.id]
        same = [p for p in owners if p.pod == s.pod]
        if same:
            return (f" (ARP responder): {same[0].name} has {tpa} but its port is "
                    f"{same[0].state}{_error(same[0])}", "see `loris ports`")
        elsewhere = "".join(f"; {tpa} is {p.name}'s address in pod {p.pod}" for p in owners[:2])
        return (f" (ARP responder): no member of pod {s.pod} has {tpa}{elsewhere}",
                "containers reach each other only inside one pod: connect both to the same "
                "pod" if owners else "check the address (`loris ports --pod "
                f"{s.pod}` lists the pod's members)")
    role = names.role(flow, bridge, host) if flow is not None else "no flow matched"
    return f"{label}: {role}", None


def _spoofed(s: PortInfo, pkt: Mapping[str, object]) -> str | None:
    eth_type = pkt.get("eth_type")
    if pkt.get("eth_src") != s.mac:
        return f"source MAC {pkt.get('eth_src')} is not {s.name}'s {s.mac}"
    if eth_type == ETH_ARP:
        if pkt.get("arp_sha") != s.mac:
            return f"ARP sender MAC {pkt.get('arp_sha')} is not {s.name}'s {s.mac}"
        if pkt.get("arp_spa") != s.ip:
            return f"ARP sender IP {pkt.get('arp_spa')} is not {s.name}'s {s.ip}"
        return None
    if eth_type != ETH_IP:
        return (f"EtherType {int(eth_type or 0):#06x} is refused: a container may send IPv4 "
                "and ARP only")
    if pkt.get("ipv4_src") == "0.0.0.0" and pkt.get("udp_dst") == 67 and not s.dhcp:
        return (f"{s.name} is not a DHCP port (it was connected with a static address): DHCP "
                "from 0.0.0.0 is a spoofed source")
    if pkt.get("ipv4_src") != s.ip:
        return f"source IP {pkt.get('ipv4_src')} is not {s.name}'s {s.ip}"
    return None


def _error(port: PortInfo) -> str:
    return f" ({port.error})" if port.error else ""


def _success(leg: Leg, got: FabricTrace, names: Names) -> str:
    e = leg.expect
    if e.kind == "answer":
        who = next((p.name for p in names.ports.values()
                    if p.mac == e.mac and p.ip == leg.packet.get("arp_tpa")), "the DHCP server")
        return (f"answered on {e.host} by the ARP responder: {leg.packet.get('arp_tpa')} is at "
                f"{e.mac} ({who})")
    if e.kind == "controller":
        return f"sent to the controller's DHCP responder ({e.port.label()})"
    tunnels = [(dst, key) for src, dst, key, _ in got.tunnelled if dst == e.host]
    if tunnels:
        dst, key = tunnels[0]
        return (f"delivered to {e.port.name} on {e.host} through the tunnel to "
                f"{names.tunnel_ips.get(dst, dst)}, key {key}")
    return f"delivered to {e.port.name} on {e.host} (same host)"


# ---- the verdict --------------------------------------------------------------------------

def verdict(runs: Sequence[Run], outcomes: Sequence[Outcome], src: PortInfo,
            dst: PortInfo | None, names: Names) -> Outcome:
    """One line for the whole trace: the first leg that fails says why; a container in
    another pod, or a port that is not active, is named first."""
    failed = next((i for i, o in enumerate(outcomes) if not o.ok), None)
    if failed is not None:
        first = outcomes[failed]
        if dst is not None and dst.pod != src.pod:
            return Outcome(False, f"dropped: {src.name} (pod {src.pod}) and {dst.name} (pod "
                           f"{dst.pod}) are in different pods", "containers reach each other "
                           "only inside one pod: connect both to the same pod", first.at)
        for who in (src, dst):
            if who is not None and (who.state != "active" or who.ofport is None):
                return Outcome(False, f"dropped: {who.name}'s port is {who.state}"
                               f"{_error(who)}", "see `loris ports`", first.at)
        leg = runs[failed].leg
        if leg.name in ("arp back", "reply"):
            return Outcome(False, f"the request reaches {leg.sender.name} but the {leg.name} "
                           f"({leg.what}) is {first.text}", first.fix, first.at)
        return first
    last = outcomes[-1]
    if runs[-1].leg.name == "dhcp" and src.pod not in names.dhcp_servers:
        return Outcome(False, f"{last.text}, but pod {src.pod} has no subnet: nobody answers",
                       f"give pod {src.pod} a subnet, or connect {src.name} with a static "
                       "address")
    main = next((o for r, o in zip(runs, outcomes, strict=True)
                 if r.leg.name in ("request", "dhcp")), outcomes[0])
    back = " (and the reply comes back)" if runs[-1].leg.name == "reply" else ""
    return Outcome(True, main.text + back)


def hop_rows(trace: FabricTrace, names: Names,
             packets: Mapping[tuple[str, str, Flow], int] | None = None) -> list[dict]:
    """Every bridge the packet crossed, with the flows it hit, for the JSON answer."""
    rows = []
    for hop in trace.hops:
        flows = []
        for f in hop.flows:
            row = {"table": f.table, "priority": f.priority, "cookie": f"{f.cookie:#x}",
                   "flow": str(f), "owner": names.owner(f.cookie, hop.host),
                   "role": names.role(f, hop.bridge, hop.host)}
            if packets is not None and (hop.host, hop.bridge, f) in packets:
                row["packets"] = packets[(hop.host, hop.bridge, f)]
            flows.append(row)
        rows.append({"host": hop.host, "bridge": hop.bridge, "in_port": hop.in_port,
                     "from": names.in_port_name(hop.host, hop.bridge, hop.in_port),
                     "flows": flows})
    return rows


__all__ = ["Bridge", "Expect", "Leg", "Outcome", "Run", "hop_rows", "judge", "legs",
           "reached", "source_host_path", "steps", "stop", "verdict"]
