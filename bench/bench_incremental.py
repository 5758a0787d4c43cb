"""Incremental cost: the flow-mods the controller sends and the CPU it spends for one
connect, with 10, 1,000 and 10,000 ports in the network. The target is flat: a connect
costs what its pod costs, whatever the size of the rest of the network.

    python -m bench incremental [--size smoke|full]

The network, rebuilt for each size: two real hosts h1, h2 (real agents) and simulated hosts
(bench/seed.py) holding the bulk of the ports. The measured pod always has 10 members (one
container on h1, one on h2, eight on simulated hosts); the other ports sit in pods of 100,
each with one real container on h1, so h1's switch carries flows for the whole network.

A measurement: connect one more container on h2 to the measured pod (REST), with the
controller idle before and after; count the flow-mods it logged and the CPU seconds it used
(/proc, 10 ms ticks, hence the mean over many connects); then disconnect it (not measured).

Baseline, same run: the same connect in the smallest network. The details also give what a
controller without a diff would send (every flow of the touched bridges).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from bench.common import Figure, Result, median
from bench.loris import LorisLab, flowmods_in
from bench.seed import SimPort, seed, sim_host, sim_mac

SIZES = {"full": {"ports": (10, 1_000, 10_000), "connects": 20, "sim_hosts": 8},
         "smoke": {"ports": (10, 200), "connects": 2, "sim_hosts": 2}}
POD = 300                     # the measured pod; the others are 301, 302, ...
POD_SIZE = 100
FLAT_TARGET = 1.25


def ip(pod: int, k: int) -> str:
    """The k-th address of a pod: pods are isolated, so every pod may use the same range."""
    return f"198.18.{128 + (10 + k) // 256}.{(10 + k) % 256}/17"


def plan(n: int, sim_hosts: int) -> tuple[list[SimPort], list[int]]:
    """Simulated ports for a network of about n ports, and the other pods (each gets one
    real container on h1)."""
    sims = [SimPort(sim_host(1 + k % sim_hosts), POD, ip(POD, 2 + k), sim_mac(k))
            for k in range(8)]
    others = [POD + 1 + i for i in range(max(0, round((n - 10) / POD_SIZE)))]
    for pod in others:
        for k in range(POD_SIZE - 1):
            sims.append(SimPort(sim_host(1 + k % sim_hosts), pod, ip(pod, 1 + k),
                                sim_mac(len(sims))))
    return sims, others


def measure(n: int, cfg: dict) -> dict:
    sims, others = plan(n, cfg["sim_hosts"])
    ll = LorisLab(hosts=2, docker=False)
    t0 = time.monotonic()
    ll.up(seed=lambda db: seed(db, cfg["sim_hosts"], sims))
    try:
        lab = ll.lab
        p = lab.add_container("h1", "p", kind="netns")
        r = lab.add_container("h2", "r", kind="netns")
        ll.connect(p, ip(POD, 0), POD)
        ll.connect(r, ip(POD, 1), POD)
        anchors = [lab.add_container("h1", f"a{pod}", kind="netns") for pod in others]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda a: ll.connect(a[0], ip(a[1], 0), a[1]),
                          zip(anchors, others, strict=True)))
        setup_s = time.monotonic() - t0
        total_ports = len(sims) + 2 + len(anchors)
        c = lab.add_container("h2", "c", kind="netns")
        cpu, mods, calls, full = [], [], [], []
        for i in range(cfg["connects"]):
            ll.wait_idle()
            offset, cpu0 = ll.log_offset(), ll.controller_cpu()
            t = time.monotonic()
            port = ll.connect(c, ip(POD, 20 + i), POD)
            calls.append(time.monotonic() - t)
            ll.wait_idle()
            cpu.append(ll.controller_cpu() - cpu0)
            mods.append(flowmods_in(ll.log_since(offset))["total"])
            flows = ll.flows_per_host()
            full.append(flows["h1"] + flows["h2"])
            ll.disconnect(port["id"])
            _wait_gone(lab, c)
        h1_flows = ll.flows_per_host()["h1"]
    finally:
        ll.down()
    return {"ports": total_ports, "setup_s": setup_s, "h1_flows": h1_flows,
            "cpu_ms": sum(cpu) * 1e3 / len(cpu), "flowmods": median(mods),
            "full_push": median(full), "call_ms": median(calls) * 1e3,
            "samples": {"cpu_s": cpu, "flowmods": mods, "call_s": calls}}


def _wait_gone(lab, c, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while lab.run(c, ["ip", "link", "show", "eth1"], check=False).returncode == 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{c.name} kept eth1 after its disconnect")
        time.sleep(0.05)


def run(size: str = "full", session=None) -> Result:
    cfg = SIZES[size]
    result = Result("incremental", size)
    rows = [measure(n, cfg) for n in cfg["ports"]]
    result.details["rows"] = rows
    small = rows[0]
    for row in rows:
        n = row["ports"]
        result.add(
            Figure(f"one connect, {n:,} ports: flow-mods sent", row["flowmods"], "",
                   small["flowmods"], f"same at {small['ports']} ports", ("<=", FLAT_TARGET),
                   note=f"a full push would send {row['full_push']:,.0f}; h1 holds "
                        f"{row['h1_flows']:,} flows"),
            Figure(f"one connect, {n:,} ports: controller CPU", row["cpu_ms"], "ms",
                   small["cpu_ms"], f"same at {small['ports']} ports", ("<=", FLAT_TARGET),
                   note=f"mean of {cfg['connects']}; REST p50 {row['call_ms']:.0f} ms"))
    return result
