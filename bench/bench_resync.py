"""Resync: with 1,000 ports on 5 hosts, restart the controller, then an agent, under a
continuous ping between two containers on different hosts.

    python -m bench resync [--size smoke|full]

Uses the run's bulk lab (bench/runner.py); run alone, it builds it. The ping (every 10 ms)
goes from bulk container b0 on h1 to b1 on h2 (same pod) for the whole time.

- controller restart: stop it, start it again; the clock runs from the new process's start
  until every bridge has reconnected to it and been reconciled and every agent has caught
  up with its new desired version. Nothing changed meanwhile, so no flow should change
  either: the reconcile must find everything in place (the log says what it added/deleted).
  Baseline: `ovs-ofctl replace-flows` of the very same flows on every bridge (all hosts in
  parallel): a script's way of checking that the switches hold what they should.
- agent restart: stop h2's agent, disconnect one of h2's other ports meanwhile, start it
  again; the clock runs until the agent has reported a full pass (its actual version
  equals the desired one). Baseline: a script looking at each of h2's ports the way the
  agent does (its address in the container, its ofport), one `ip` and one `ovs-vsctl` each.
"""

from __future__ import annotations

import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor

from bench.common import Figure, Result
from bench.loris import LorisLab, flowmods_in, pod_ip
from flows.contract import BRIDGES

SIZES = {"full": 1_000, "smoke": 6}


PING_INTERVAL = 0.01
IN_FLIGHT = 50        # the last echoes sent before ping is stopped may still be on their way


def ping_summary(proc) -> tuple[int, int]:
    """(echoes sent, echoes lost), counting by sequence number: the echoes sent in the last
    half second before the stop (IN_FLIGHT) are not counted, as their replies may simply
    not have arrived yet when ping was interrupted."""
    proc.signal(signal.SIGINT)
    proc.wait(10)
    text = proc.log_text()
    m = re.search(r"(\d+) packets transmitted", text)
    if not m:
        raise RuntimeError(f"no ping summary: {proc.log_tail(5)}")
    sent = int(m.group(1)) - IN_FLIGHT
    replied = {int(x) for x in re.findall(r"icmp_seq=(\d+) ttl=", text)}
    return sent, sum(1 for seq in range(1, sent + 1) if seq not in replied)


def replace_flows_baseline(ll: LorisLab) -> float:
    lab = ll.lab
    files = {}
    for h in lab.hosts:
        for bridge in BRIDGES:
            flows = [f for f in lab.ovs(h).dump_flows(bridge, stats=False)]
            path = lab.dir / f"{h.name}-{bridge}.flows"
            path.write_text("".join(_strip(f) + "\n" for f in flows))
            files[(h, bridge)] = path

    def replace(item) -> None:
        (h, bridge), path = item
        lab.ovs(h).ofctl("--bundle", "replace-flows", bridge, str(path), timeout=120)

    t0 = time.monotonic()
    with ThreadPoolExecutor(len(files)) as pool:
        list(pool.map(replace, files.items()))
    return time.monotonic() - t0


def _strip(line: str) -> str:
    return re.sub(r"\b(duration|n_packets|n_bytes|idle_age|hard_age)=[^,\s]+,?\s*", "",
                  line).strip()


def script_check_baseline(ll: LorisLab, host: str) -> float:
    lab = ll.lab
    status, ports = ll.api("GET", f"/v1/ports?host={host}")
    lines = []
    for p in ports:
        ns = p["container"].removeprefix("netns:")
        if p["container"].startswith("netns:"):
            lines.append(f"ip -n {ns} -br addr show dev eth1 >/dev/null")
        lines.append(f"ovs-vsctl get Interface lp{p['id']} ofport >/dev/null")
    t0 = time.monotonic()
    lab.run(host, ["bash", "-c", "set -e\n" + "\n".join(lines)], env=lab.ovs(host).env,
            timeout=600)
    return time.monotonic() - t0


def wait_agent_caught_up(ll: LorisLab, host: str, timeout: float = 300) -> float:
    deadline = time.monotonic() + timeout
    while True:
        status, h = ll.api("GET", f"/v1/hosts/{host}", timeout=10)
        if status == 200 and h["actual_version"] == h["desired_version"]:
            return time.time()
        if time.monotonic() > deadline:
            raise TimeoutError(f"agent of {host} did not catch up: {h}")
        time.sleep(0.05)


def run(size: str = "full", session=None) -> Result:
    if session is None:
        from bench.runner import Session
        session, own = Session(size), True
    else:
        own = False
    result = Result("resync", size)
    try:
        ll = session.bulk_lab()
        ll.grow(SIZES[size])
        lab = ll.lab
        ports = len(ll.bulk)
        a, b = lab.container("b0"), lab.container("b1")
        assert a.host.name != b.host.name
        flows_before = ll.flows_per_host()
        ll.wait_idle()

        # ---- controller restart
        ping = lab.start_process("resync-ping-1", ["ping", "-i", str(PING_INTERVAL),
                                                   pod_ip(3).split("/")[0]], netns=a)
        time.sleep(1)
        lab.processes["controller"].stop()
        offset = ll.log_offset()
        t_start = time.time()
        ll.start_controller()
        t_synced = ll.wait_synced(since=t_start, timeout=300)
        reconnected = max(b["since"] for h in ll.hosts()
                          for b in h["openflow"]["bridges"].values())
        time.sleep(1)
        sent, lost = ping_summary(ping)
        mods = flowmods_in(ll.log_since(offset))
        changed = mods["added"] + mods["deleted"]
        result.details["controller"] = {"seconds": t_synced - t_start, "ping_sent": sent,
                                        "ping_lost": lost, "flowmods": mods,
                                        "last_switch_reconnected_s": reconnected - t_start}
        base = replace_flows_baseline(ll)
        result.add(
            Figure(f"controller restart -> every switch reconciled, {ports:,} ports",
                   t_synced - t_start, "s", base, "ovs-ofctl replace-flows, every bridge",
                   note=f"the last switch reconnected after {reconnected - t_start:.1f} s (OVS "
                        f"retries with backoff); {mods['reconciles']} bridges reconciled, "
                        f"{changed} flows changed"),
            Figure("  of which: last switch reconnected -> all reconciled and agents caught up",
                   max(0.0, t_synced - reconnected), "s", base,
                   "ovs-ofctl replace-flows, every bridge"),
            Figure("pings lost (every 10 ms) during the controller restart", lost, "", sent,
                   "pings sent", ("<=", 0.0)))
        if flows_before != ll.flows_per_host():
            result.details["flows_changed"] = [flows_before, ll.flows_per_host()]

        # ---- agent restart on b's host, a port of that host disconnected meanwhile
        host = b.host.name
        victim = next(p for p in ll.bulk if p["host"] == host and p["id"] != _port_id(ll, b))
        ll.wait_idle()
        ping = lab.start_process("resync-ping-2", ["ping", "-i", str(PING_INTERVAL),
                                                   pod_ip(3).split("/")[0]], netns=a)
        time.sleep(1)
        lab.processes[f"agent-{host}"].stop()
        ll.disconnect(victim["id"])
        ll.bulk.remove(victim)
        t_start = time.time()
        lab.start_agent(host)
        t_done = wait_agent_caught_up(ll, host)
        time.sleep(1)
        sent, lost = ping_summary(ping)
        base = script_check_baseline(ll, host)
        result.details["agent"] = {"seconds": t_done - t_start, "ping_sent": sent,
                                   "ping_lost": lost}
        host_ports = sum(1 for p in ll.bulk if p["host"] == host)
        result.add(
            Figure(f"agent restart -> its host reconciled ({host_ports} ports)", t_done - t_start,
                   "s", base, "script: ip + ovs-vsctl per port"),
            Figure("pings lost (every 10 ms) during the agent restart", lost, "", sent,
                   "pings sent", ("<=", 0.0)))
    finally:
        if own:
            session.close()
    return result


def _port_id(ll: LorisLab, container) -> int:
    status, ports = ll.api("GET", f"/v1/ports?container={container.name}")
    return ports[0]["id"]
