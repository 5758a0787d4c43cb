"""`docker run` latency with the `loris` plugin, against `docker run --network none` and
against OVN's bind, in one run.

    python -m bench docker [--size smoke|full]

Two simulated hosts, each with its own dockerd served the plugin by its agent
(lab/hostdocker.py); pod `bench` (a Docker network on both). Beside it, an OVN lab of two
hosts (bench/ovn.py, the same as bench/bench_vs_ovn.py's). Trial by trial (so the machine's
load hits all alike), on h1: `docker run -d --network none` and
`docker run -d --network bench`, each timed from the CLI's start to its return, the
container removed (not timed) before the next; then one OVN bind (`ovn-nbctl --wait=hv
lsp-add`, the veth, the OVS port) timed to the first ping reply from a container of the
pod on the other host (bench_vs_ovn.OvnTrials). A third series, `docker run -d --network mv`
(a macvlan network, Docker's own driver, no plugin), says what Docker itself spends on any
user-defined network.

With the plugin, `docker run` returns only once the container reaches its pod: what it adds
over `--network none` is the plugin's IPAM call and the controller's connect (wiring on the
host, flows on every host of the pod). Target (issue #14): that addition, at p50 and p95, at
most OVN's bind -> first ping at the same percentile. The timeline says where the plugin's
time goes: each plugin call's handler time, from h1's agent log (docker_plugin.py logs it),
the rest being dockerd's own.

OVN is the benchmarks' dependency (`./dev bench` installs it), not the tests': without it
(a machine set up by `./dev test` alone) the OVN series is left out and the two figures
that compare with it have no baseline.
"""

from __future__ import annotations

import re
import time
from contextlib import nullcontext

from bench.bench_vs_ovn import OvnTrials
from bench.common import Figure, Result, median, percentile
from bench.ovn import OvnLab, missing_tools
from lab import Lab
from lab.containers import KEEP_ALIVE
from lab.naming import IMAGE

SIZES = {"full": 20, "smoke": 2}
POD = {"id": 9, "name": "bench", "subnet": "198.18.137.0/24"}
MACVLAN_NET = "198.18.138.0/24"     # a plain Docker network on h1's underlay NIC, never used
# the calls of one `docker run --network <pod>`, in order (docs/docker.md)
TIMED_CALLS = ("/IpamDriver.RequestAddress", "/NetworkDriver.CreateEndpoint",
               "/NetworkDriver.Join", "/NetworkDriver.EndpointOperInfo")
_PLUGIN_LINE = re.compile(r"plugin (/\S+) .* \(([0-9.]+) ms\)$", re.M)


def _wait(what: str, check, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not within {timeout:g}s")
        time.sleep(0.2)


def _timed_run(lab: Lab, name: str, network: str) -> float:
    t0 = time.monotonic()
    lab.docker_at("h1", "run", "-d", "--network", network, "--name", name, IMAGE, *KEEP_ALIVE)
    took = time.monotonic() - t0
    lab.docker_at("h1", "rm", "-f", name)
    return took


def _warm_up(lab: Lab) -> bool:
    """One untimed run (the agents may still be registering): whether it worked."""
    ok = lab.docker_at("h1", "run", "-d", "--network", "bench", "--name", "warm", IMAGE,
                       *KEEP_ALIVE, check=False).returncode == 0
    lab.docker_at("h1", "rm", "-f", "warm", check=False)
    return ok


def _handler_times(log_text: str) -> dict[str, list[float]]:
    """Plugin call -> its handler times (ms), from an agent's log."""
    times: dict[str, list[float]] = {}
    for m in _PLUGIN_LINE.finditer(log_text):
        times.setdefault(m.group(1), []).append(float(m.group(2)))
    return times


def _timeline(before: dict[str, list[float]], after: dict[str, list[float]]
              ) -> dict[str, float]:
    """p50 (ms) of each call made between two reads of the agent's log."""
    out = {}
    for call in TIMED_CALLS:
        new = after.get(call, [])[len(before.get(call, [])):]
        if new:
            out[call] = median(new)
    return out


def run(size: str = "full", session=None) -> Result:
    trials = SIZES[size]
    result = Result("docker", size)
    no_ovn = missing_tools()
    with Lab(hosts=2, host_dockerd=True) as lab, \
            (nullcontext() if no_ovn else OvnLab(hosts=2)) as ovn:
        lab.start_controller()
        for h in lab.hosts:
            lab.start_agent(h)
        status, body = lab.api("POST", "/v1/pods", POD)
        if status != 201:
            raise RuntimeError(f"creating pod bench failed: {status} {body}")
        _wait("network bench on h1", lambda: "bench" in lab.docker_at(
            "h1", "network", "ls", "--format", "{{.Name}}").stdout.split())
        _wait("a first docker run --network bench", lambda: _warm_up(lab))
        ovn_trials = None if ovn is None else OvnTrials(ovn, pool=2)
        if ovn_trials is not None:
            ovn_trials.bind()                  # untimed, as the Loris warm-up
        agent_log = lab.processes["agent-h1"]
        # Docker's own cost of a user-defined network, no plugin: a macvlan network on h1
        lab.docker_at("h1", "network", "create", "-d", "macvlan", "--subnet", MACVLAN_NET,
                      "-o", "parent=eth0", "mv")
        none, plugin, macvlan, ovn_bind = [], [], [], []
        calls_before = _handler_times(agent_log.log_text())
        for i in range(trials):
            none.append(_timed_run(lab, f"n{i}", "none"))
            plugin.append(_timed_run(lab, f"p{i}", "bench"))
            macvlan.append(_timed_run(lab, f"m{i}", "mv"))
            if ovn_trials is not None:
                _, first_reply = ovn_trials.bind()
                if first_reply is None:
                    raise RuntimeError("an OVN bind got no ping reply")
                ovn_bind.append(first_reply)
        timeline = _timeline(calls_before, _handler_times(agent_log.log_text()))
    added = {p: percentile(plugin, p) - percentile(none, p) for p in (50, 95)}

    def vs_ovn(p: int) -> dict:
        if no_ovn:
            return {"note": f"no OVN baseline: {', '.join(no_ovn)} missing (./dev bench "
                            "installs OVN)"}
        return {"baseline": percentile(ovn_bind, p), "target": ("<=", 1.0),
                "baseline_name": f"OVN bind -> first ping, p{p}"}

    plugin_ms = sum(timeline.values())
    docker_own = median(macvlan) - median(none)
    result.add(
        Figure("docker run --network <pod>, p50", median(plugin), "s",
               baseline=median(none), baseline_name="docker run --network none, p50",
               note=f"adds {added[50] * 1000:.0f} ms: IPAM + connect (wiring, flows everywhere)"),
        Figure("docker run --network <pod>, p95", percentile(plugin, 95), "s",
               baseline=percentile(none, 95), baseline_name="docker run --network none, p95"),
        *(Figure(f"what the plugin adds to docker run, p{p}", added[p], "s", **vs_ovn(p))
          for p in (50, 95)),
        Figure("plugin handlers per docker run (p50 each, summed)", plugin_ms / 1000, "s",
               note=", ".join(f"{c.split('.')[-1]} {ms:.0f} ms" for c, ms in timeline.items())
               + f"; dockerd's own share of the addition: "
                 f"{added[50] * 1000 - plugin_ms:.0f} ms"),
        Figure("what any user-defined network adds to docker run (macvlan, no plugin), p50",
               docker_own, "s", baseline=added[50],
               baseline_name="what the plugin adds, p50",
               note="Docker's own work for a network (sandbox, embedded DNS, interface "
                    "setup), which no plugin can cut"))
    result.details = {"trials": trials, "plugin_s": plugin, "none_s": none,
                      "macvlan_s": macvlan,
                      "ovn_bind_first_ping_s": ovn_bind, "plugin_calls_p50_ms": timeline}
    return result
