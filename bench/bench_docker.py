"""`docker run` latency with the `loris` plugin, against `docker run --network none`.

    python -m bench docker [--size smoke|full]

Two simulated hosts, each with its own dockerd served the plugin by its agent
(lab/hostdocker.py); pod `bench` (a Docker network on both). On h1, trial by trial (so the
machine's load hits both alike): `docker run -d --network none` and
`docker run -d --network bench`, each timed from the CLI's start to its return, the
container removed (not timed) before the next. With the plugin, `docker run` returns only
once the container reaches its pod: the difference is the plugin's IPAM call and the
controller's connect (wiring on the host, flows on every host of the pod).
"""

from __future__ import annotations

import time

from bench.common import Figure, Result, median, percentile
from lab import Lab
from lab.containers import KEEP_ALIVE
from lab.naming import IMAGE

SIZES = {"full": 20, "smoke": 2}
POD = {"id": 9, "name": "bench", "subnet": "198.18.137.0/24"}


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


def run(size: str = "full", session=None) -> Result:
    trials = SIZES[size]
    result = Result("docker", size)
    with Lab(hosts=2, host_dockerd=True) as lab:
        lab.start_controller()
        for h in lab.hosts:
            lab.start_agent(h)
        status, body = lab.api("POST", "/v1/pods", POD)
        if status != 201:
            raise RuntimeError(f"creating pod bench failed: {status} {body}")
        _wait("network bench on h1", lambda: "bench" in lab.docker_at(
            "h1", "network", "ls", "--format", "{{.Name}}").stdout.split())
        _wait("a first docker run --network bench", lambda: _warm_up(lab))
        none, plugin = [], []
        for i in range(trials):
            none.append(_timed_run(lab, f"n{i}", "none"))
            plugin.append(_timed_run(lab, f"p{i}", "bench"))
    added = median(plugin) - median(none)
    result.add(
        Figure("docker run --network <pod>, p50", median(plugin), "s",
               baseline=median(none), baseline_name="docker run --network none, p50",
               note=f"adds {added * 1000:.0f} ms: IPAM + connect (wiring, flows everywhere)"),
        Figure("docker run --network <pod>, p90", percentile(plugin, 90), "s",
               baseline=percentile(none, 90), baseline_name="docker run --network none, p90"))
    result.details = {"trials": trials, "plugin_s": plugin, "none_s": none}
    return result
