"""The scale part of `python -m bench ha` (bench_ha.py): many simulated hosts (one OVS and
one agent per host, bare namespaces as containers), a 3-member etcd, first one controller
(c1), then three (c2 and c3 started, the hosts spread over them by rendezvous hashing).

In each phase: `trials` connects (REST -> first ping, bench_connect.py's probe) from a
pinging container on h1 to a container on another host, the hosts taken in turn, through
the controllers in turn; p50 and p95, and each controller's CPU over the phase. The
3-controller figures are against the 1-controller ones of the same lab.
"""

from __future__ import annotations

import itertools
import os
import time
from concurrent.futures import ThreadPoolExecutor

from bench.bench_connect import first_reply, wait_unwired
from bench.common import Figure, Result, median, percentile
from bench.ha_cluster import HaLab
from bench.loris import BULK_POD0, fast_neighbour_retries, pod_ip, rss_mib
from hostagent.client import ControllerUnreachable

POD = BULK_POD0
SETTLE_TIMEOUT = 600.0


def run(result: Result, hosts: int, trials: int) -> None:
    """Add the scale figures (and details) to `result`; a lab that cannot be built or
    settled is reported in the details and as the result's error, not raised past the
    other parts' figures."""
    ll = HaLab(hosts, 1, "etcd", 3)
    t0 = time.monotonic()
    detail: dict = {"hosts": hosts, "load_before": os.getloadavg()}
    result.details["scale"] = detail
    try:
        ll.up()
        detail["lab_up_s"] = time.monotonic() - t0
        detail["per_host_rss_mib"] = sum(
            rss_mib(p) for p in ll.ovs_pids() + ll.agent_pids()) / hosts
        lab = ll.lab
        p = lab.add_container(lab.hosts[0], "sp", kind="netns")
        ll.connect(p, pod_ip(1), POD)
        fast_neighbour_retries(lab, p)
        others = lab.hosts[1:]
        with ThreadPoolExecutor(8) as pool:
            targets = list(pool.map(lambda h: lab.add_container(h, f"s{h.name}", kind="netns"),
                                    others))
        addresses = itertools.count(256)
        pool_cycle = itertools.cycle(targets)
        phases: dict[int, dict] = {}
        for n in (1, 3):
            if n == 3:
                t1 = time.monotonic()
                ll.start_one("c2")
                ll.start_one("c3")
                wait_spread(ll, SETTLE_TIMEOUT)
                detail["three_settled_s"] = time.monotonic() - t1
            ll.wait_synced(timeout=SETTLE_TIMEOUT, poll=1.0)
            via = itertools.cycle(ll.ids)
            cpu0 = {c: ll.cpu(c) for c in ll.ids}
            t_phase = time.monotonic()
            samples: list = []
            refused: list[str] = []
            for _ in range(trials):
                c, ip, cid = next(pool_cycle), pod_ip(next(addresses)), next(via)
                wait_unwired(lab, c)
                port: dict = {}
                try:
                    samples.append(first_reply(
                        p.netns_path, ip, lambda c=c, ip=ip, cid=cid, port=port:
                        port.update(ll.connect_via(cid, c, ip, POD))))
                except (RuntimeError, ControllerUnreachable) as e:   # counted; the next tried
                    refused.append(f"{time.monotonic() - t_phase:.1f} s: {e}")
                    time.sleep(1)
                    continue
                try:
                    ll.api("DELETE", f"/v1/ports/{port['id']}", via=cid)
                except ControllerUnreachable as e:
                    refused.append(f"disconnect: {e}")
            detail.setdefault("refused", {})[n] = refused
            if not samples:
                raise RuntimeError(f"every connect with {n} controller(s) was refused: "
                                   f"{refused[-3:]}")
            seconds = time.monotonic() - t_phase
            phases[n] = {"samples": samples, "seconds": seconds, "refused": refused,
                         "cpu_s": {c: ll.cpu(c) - cpu0[c] for c in ll.ids},
                         "masters": masters(ll)}
        detail["phases"] = {n: {**ph, "samples": [{"call": a, "reply": b}
                                                   for a, b in ph["samples"]]}
                            for n, ph in phases.items()}
        figures(result, hosts, phases)
    except Exception as e:
        detail["error"] = f"{type(e).__name__}: {e}"
        result.error = f"scale ({hosts} hosts): {detail['error']}"
    finally:
        detail["load_after"] = os.getloadavg()
        ll.down()


def wait_spread(ll: HaLab, timeout: float) -> None:
    """Wait until every running controller is healthy and has every host's switches (the
    agents add new controllers to their bridges within 10 s), then for rendezvous hashing
    to move the hosts that now score highest for the new ones."""
    hosts = len(ll.lab.hosts)
    deadline = time.monotonic() + timeout
    while True:
        status, body = ll.api("GET", "/v1/controllers", timeout=10)
        entries = {c["id"]: c for c in body["controllers"]} if status == 200 else {}
        if set(entries) == set(ll.ids) and all(
                e["healthy"] and len(e["connected"]) == hosts for e in entries.values()):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"controllers {ll.ids} not all connected to the {hosts} hosts "
                               f"after {timeout:g} s: {str(entries)[:1500]}")
        time.sleep(1)
    time.sleep(2)         # a few looks at the registry (every 0.5 s): the moves are made


def masters(ll: HaLab) -> dict[str, int]:
    """controller -> how many hosts it masters (from GET /v1/controllers of c1)."""
    status, body = ll.api("GET", "/v1/controllers", timeout=10)
    if status != 200:
        return {}
    return {c["id"]: len(c["masters"]) for c in body["controllers"]}


def figures(result: Result, hosts: int, phases: dict[int, dict]) -> None:
    one, three = ([r for _, r in phases[n]["samples"] if r is not None] for n in (1, 3))
    lost = {n: sum(1 for _, r in ph["samples"] if r is None) for n, ph in phases.items()}
    note = f"{len(phases[3]['samples'])} connects per phase" + "".join(
        f"; {v} without reply with {n}" for n, v in lost.items() if v) + "".join(
        f"; {len(ph['refused'])} refused (503) with {n}" for n, ph in phases.items()
        if ph["refused"])
    result.add(
        Figure(f"{hosts} hosts: REST connect -> first ping, p50, 3 controllers",
               median(three) * 1e3, "ms", median(one) * 1e3, "1 controller, p50",
               note=note),
        Figure(f"{hosts} hosts: REST connect -> first ping, p95, 3 controllers",
               percentile(three, 95) * 1e3, "ms", percentile(one, 95) * 1e3,
               "1 controller, p95"))
    alone = phases[1]["cpu_s"]["c1"] / max(phases[1]["seconds"], 1e-9)
    for cid, cpu in phases[3]["cpu_s"].items():
        result.add(Figure(f"{hosts} hosts: {cid}'s CPU over the 3-controller phase",
                          cpu / max(phases[3]["seconds"], 1e-9) * 100, "% of a core",
                          alone * 100, "c1 alone, % of a core",
                          note=f"masters {phases[3]['masters'].get(cid, 0)} hosts"))
