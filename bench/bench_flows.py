"""Benchmark of flows/: computing a host's flows, and the cost of one added port.

    python -m bench flows [--size smoke]   # as part of the common runner
    python -m bench.bench_flows [smoke]    # this table only

The network: 10 hosts, pods of up to 100 ports, every pod spread over every host, so one
host's pods hold all N ports. For each N it measures, in the same run:

- compute-all: every flow of one host (`host_flows(topo, h)`), against the baseline of merely
  rendering those same flows as `ovs-ofctl` text (what writing them out costs at the least);
- one added port, incremental: recompute that pod's section on that pod's hosts and diff,
  against the baseline of the naive approach, recomputing and diffing every host in full.
  It also reports how many hosts and flows the change touches.
"""

from __future__ import annotations

import sys
import time

from bench.common import Figure, Result
from flows import HostSpec, PodSpec, PortSpec, Topology, diff, flatten, host_flows, to_ofctl

HOSTS = 10
PORTS_PER_POD = 100
SIZES = {"full": (10, 1_000, 10_000), "smoke": (10, 200)}


def mac(n: int) -> str:
    return f"02:00:{n >> 24 & 255:02x}:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}"


def network(n_ports: int) -> tuple[list[HostSpec], list[PodSpec], list[PortSpec]]:
    per_pod = min(n_ports, PORTS_PER_POD)
    n_pods = max(1, n_ports // per_pod)
    names = [f"h{i}" for i in range(HOSTS)]
    hosts = [HostSpec(h, f"198.18.0.{10 + i}", 1, 1,
                      {peer: 2 + j for j, peer in enumerate(p for p in names if p != h)},
                      {pod: 1 + pod % 4094 for pod in range(n_pods)})
             for i, h in enumerate(names)]
    pods = [PodSpec(pod, pod + 1, f"10.{pod >> 8 & 255}.{pod & 255}.0/24",
                    (f"10.{pod >> 8 & 255}.{pod & 255}.1", f"0a:4c:00:00:{pod >> 8:02x}:"
                                                           f"{pod & 255:02x}"))
             for pod in range(n_pods)]
    ports = []
    for pod in range(n_pods):
        for j in range(per_pod):
            pid = len(ports) + 1
            ports.append(PortSpec(pid, pod, names[j % HOSTS], 10 + pid, mac(pid),
                                  f"10.{pod >> 8 & 255}.{pod & 255}.{2 + j}"))
    return hosts, pods, ports


def timed(fn, repeat: int = 3):
    """Best of `repeat` runs: (seconds, result)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def measure(n_ports: int, repeat: int) -> dict:
    hosts, pods, ports = network(n_ports)
    topo = Topology(hosts, pods, ports)
    t_all, sections = timed(lambda: host_flows(topo, "h0"), repeat)
    flows = [f for bridges in sections.values() for fs in bridges.values() for f in fs]
    t_text, _ = timed(lambda: [to_ofctl(f) for f in flows], repeat)

    # One more port in pod 0, on h3 (the pod already spans every host).
    new_port = PortSpec(len(ports) + 1, 0, "h3", 10 + len(ports) + 1, mac(len(ports) + 1),
                        "198.18.130.250")
    after = Topology(hosts, pods, ports + [new_port])

    def incremental():
        touched = sorted(topo.pod_hosts(0) | after.pod_hosts(0))
        return {h: diff(host_flows(topo, h, [0])[0], host_flows(after, h, [0])[0])
                for h in touched}

    def naive():
        return {h: diff(flatten(host_flows(topo, h)), flatten(host_flows(after, h)))
                for h in topo.hosts}

    t_inc, changes = timed(incremental, repeat)
    t_naive, naive_changes = timed(naive, 1)
    assert {h: d for h, d in naive_changes.items() if any(d.values())} == \
        {h: d for h, d in changes.items() if any(d.values())}, "incremental != naive"
    return {
        "ports": n_ports, "flows_h0": len(flows), "compute_all_ms": t_all * 1e3,
        "render_ms": t_text * 1e3,
        "hosts_touched": sum(1 for d in changes.values() if any(d.values())),
        "flows_changed": sum(len(x) for d in changes.values() for x in d.values()),
        "incremental_ms": t_inc * 1e3, "naive_ms": t_naive * 1e3,
    }


COLUMNS = [("ports", "ports", "{:>7,}"), ("flows_h0", "flows on h0", "{:>11,}"),
           ("compute_all_ms", "compute-all ms", "{:>14.1f}"),
           ("render_ms", "baseline: ofctl text ms", "{:>23.1f}"),
           ("hosts_touched", "+1 port: hosts", "{:>14}"),
           ("flows_changed", "flows changed", "{:>13}"),
           ("incremental_ms", "incremental ms", "{:>14.2f}"),
           ("naive_ms", "baseline: all hosts ms", "{:>22.1f}")]


def table(rows: list[dict]) -> str:
    head = " | ".join(title for _, title, _ in COLUMNS)
    lines = [head, "-" * len(head)]
    for row in rows:
        lines.append(" | ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS))
    return "\n".join(lines)


def run(size: str = "full", session: object = None) -> Result:
    """The runner's entry point: the rows as figures against their same-run baselines."""
    rows = main(size, echo=False)
    result = Result("flows", size, details={"rows": rows})
    for row in rows:
        n = row["ports"]
        result.add(
            Figure(f"compute all flows of a host, {n:,} ports ({row['flows_h0']:,} flows)",
                   row["compute_all_ms"], "ms", row["render_ms"], "ofctl text of those flows"),
            Figure(f"+1 port: recompute its pod and diff, {n:,} ports", row["incremental_ms"],
                   "ms", row["naive_ms"], "every host in full", ("<=", 1.0),
                   note=f"{row['flows_changed']} flows on {row['hosts_touched']} hosts"))
    return result


def main(size: str = "full", echo: bool = True) -> list[dict]:
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    rows = [measure(n, repeat=1 if size == "smoke" else 3) for n in SIZES[size]]
    if echo:
        print(f"flows/ benchmark: {HOSTS} hosts, pods of up to {PORTS_PER_POD} ports on every "
              "host")
        print(table(rows))
    return rows


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "full")
