"""The connect benchmark's REST way (bench/bench_connect.py), with the host agent's CPU per
connect, at a few network sizes: what the agent costs a connect, and whether that grows
with the ports on its host.

    python -m bench.agent_connect [--ports 10 200] [--trials 30] [--out FILE]

Same lab, probe and script baseline as `bench connect` (5 hosts, bulk ports spread over
them, the connected container on h2, the pinging one on h1). The CPU is read from /proc
for the agent of h2 (where every measured connect lands) over all the REST trials of one
size, connects and the disconnects that undo them, divided by the number of connects.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.bench_connect import Bench
from bench.common import median, percentile
from bench.loris import LorisLab, cpu_seconds


def measure(sizes: list[int], trials: int, hosts: int = 5) -> dict:
    ll = LorisLab(hosts).up()
    out: dict = {"sizes": {}}
    try:
        bench = Bench(ll, pool=4)
        h2 = ll.lab.hosts[1]
        agent = ll.lab.processes[f"agent-{h2.name}"]
        for n in sizes:
            ll.grow(n)
            on_h2 = sum(1 for p in ll.bulk if p["host"] == h2.name)
            rest, base = [], []
            cpu_agent = 0.0
            for _ in range(trials):
                cpu0 = cpu_seconds(agent.pid)
                rest.append(bench.rest())
                cpu_agent += cpu_seconds(agent.pid) - cpu0
                base.append(bench.base())
            r = [b for _, b in rest if b is not None]
            s = [b for _, b in base if b is not None]
            out["sizes"][n] = {
                "bulk_ports_on_h2": on_h2, "trials": trials,
                "rest_p50_ms": median(r) * 1e3, "rest_p95_ms": percentile(r, 95) * 1e3,
                "script_p50_ms": median(s) * 1e3, "script_p95_ms": percentile(s, 95) * 1e3,
                "agent_cpu_ms_per_connect": cpu_agent * 1e3 / trials,
                "lost": len(rest) - len(r),
                "rest_samples_s": [b for _, b in rest]}
            print(json.dumps({k: v for k, v in out["sizes"][n].items()
                              if k != "rest_samples_s"} | {"ports": n}), flush=True)
    finally:
        ll.down()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.agent_connect")
    p.add_argument("--ports", type=int, nargs="+", default=[10, 200])
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    result = measure(args.ports, args.trials)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
