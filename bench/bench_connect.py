"""Connect latency: from the connect call until a container of the same pod on another host
gets its first ping reply from the new container, with 10, 200 and 1,000 ports already in
the network, spread over 5 hosts.

    python -m bench connect [--size smoke|full]

Three ways, interleaved trial by trial so that the machine's load hits all alike:

- REST: `POST /v1/ports` (from the control namespace);
- CLI: `loris connect <container> <ip/len> <pod>` run on the container's host;
- baseline: the original Loris's way, a shell script of `ip`, `ovs-vsctl` and `ovs-ofctl`
  commands and no controller (bench/baseline.py), on plain OVS bridges of the same hosts.

The probe is a raw ICMP socket in the pinging container, sending an echo every 2 ms to the
new address from before the call until the first reply (neighbour retries every 10 ms), so
the figure covers the wiring, the flows and ARP. Each connect uses a fresh address and is
undone (not timed) before the container is used again. Bulk ports are bare namespaces wired
through the real agents; how long they took to create is reported too.
"""

from __future__ import annotations

import itertools
import time

from bench import baseline
from bench.common import Figure, Result, median, percentile
from bench.loris import BULK_POD0, LorisLab, Pinger, fast_neighbour_retries, plain_ip, pod_ip
from lab.naming import random_mac

SIZES = {"full": {"hosts": 5, "ports": (10, 200, 1000), "trials": 50, "pool": 4},
         "smoke": {"hosts": 3, "ports": (4,), "trials": 2, "pool": 1}}
POD = BULK_POD0               # the measured pod: the first bulk pod, on every host
REPLY_TIMEOUT = 15.0
FLAT_TARGET = 1.25            # "flat": the p50 at the largest size within 25% of the smallest


def wait_unwired(lab, c, ifname: str = "eth1", timeout: float = 30) -> None:
    """Wait until container `c` no longer has `ifname` (its previous connect undone)."""
    deadline = time.monotonic() + timeout
    while lab.run(c, ["ip", "link", "show", ifname], check=False).returncode == 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{c.name} still has {ifname} {timeout:g} s after its "
                               "disconnect")
        time.sleep(0.05)


def first_reply(pinger_ns: str, ip: str, action) -> tuple[float, float | None]:
    """Run `action()` while pinging `ip` from the namespace `pinger_ns`: (seconds until the
    call returned, seconds until the first ping reply, or None if none came within
    REPLY_TIMEOUT)."""
    pinger = Pinger(pinger_ns, ip.split("/")[0]).start()
    try:
        t0 = time.monotonic()
        action()
        t_call = time.monotonic() - t0
        replied = pinger.wait(REPLY_TIMEOUT)
    finally:
        pinger.stop()
    return t_call, None if replied is None else replied - t0


class Bench:
    def __init__(self, ll: LorisLab, pool: int) -> None:
        self.ll = ll
        lab = self.lab = ll.lab
        h1, h2 = lab.hosts[0], lab.hosts[1]
        # the pinging containers on h1: one in Loris's pod, one on the plain network
        self.p = lab.add_container(h1, "p")
        self.ll.connect(self.p, pod_ip(1), POD)
        fast_neighbour_retries(lab, self.p)
        if baseline.BRIDGE not in lab.ovs(h1).bridges():
            lab.plain_mesh(baseline.BRIDGE)
        self.pb = lab.add_container(h1, "pb")
        lab.attach_plain(self.pb, plain_ip(1), bridge=baseline.BRIDGE)
        fast_neighbour_retries(lab, self.pb)
        # the containers being connected, on h2, used in turn
        self.loris_pool = itertools.cycle([lab.add_container(h2, f"c{i}")
                                           for i in range(pool)])
        self.base_pool = itertools.cycle([lab.add_container(h2, f"d{i}")
                                          for i in range(pool)])
        self.addresses = itertools.count(256)
        self.base_ports = itertools.count(1)
        self.failures: list[dict] = []

    def _wait_unwired(self, c, ifname: str = "eth1", timeout: float = 30) -> None:
        wait_unwired(self.lab, c, ifname, timeout)

    def _probe(self, pinger_ns: str, ip: str, action) -> tuple[float, float | None]:
        """(seconds until the call returned, seconds until the first ping reply or None if
        none came within REPLY_TIMEOUT)."""
        t_call, t_reply = first_reply(pinger_ns, ip, action)
        if t_reply is None:
            self.failures.append(self._diagnose(ip))
        return t_call, t_reply

    def _diagnose(self, ip: str) -> dict:
        """What the network looked like when a connect got no ping reply."""
        lab = self.lab
        out: dict = {"ip": ip}
        for h in lab.hosts[:2]:
            for bridge in (baseline.BRIDGE, "br-int"):
                r = lab.run(h, ["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", bridge],
                            env=lab.ovs(h).env, check=False)
                out[f"{h.name} {bridge} flows"] = r.stdout[-4000:]
            out[f"{h.name} fdb"] = lab.ovs(h).appctl("fdb/show", baseline.BRIDGE, check=False)
        for c in (self.p, self.pb):
            out[f"{c.short} neigh"] = lab.run(c, ["ip", "neigh"], check=False).stdout
        return out

    def rest(self) -> tuple[float, float]:
        c, ip = next(self.loris_pool), pod_ip(next(self.addresses))
        self._wait_unwired(c)
        port: dict = {}
        times = self._probe(self.p.netns_path, ip,
                            lambda: port.update(self.ll.connect(c, ip, POD)))
        self.ll.disconnect(port["id"])
        return times

    def cli(self) -> tuple[float, float]:
        c, ip = next(self.loris_pool), pod_ip(next(self.addresses))
        self._wait_unwired(c)

        def connect() -> None:
            r = self.lab.loris(c.host, "connect", c.name, ip, str(POD))
            if r.returncode != 0:
                raise RuntimeError(f"loris connect {c.name} {ip}: {r.stderr.strip()}")

        times = self._probe(self.p.netns_path, ip, connect)
        status, ports = self.ll.api("GET", f"/v1/ports?container={c.name}")
        for p in ports:
            self.ll.disconnect(p["id"])
        return times

    def base(self) -> tuple[float, float]:
        c, ip = next(self.base_pool), plain_ip(next(self.addresses))
        self._wait_unwired(c)
        host_port = f"vb{next(self.base_ports)}"
        times = self._probe(self.pb.netns_path, ip, lambda: baseline.run_connect(
            self.lab, c, host_port, ip, random_mac()))
        baseline.disconnect(self.lab, c, host_port)
        self.lab.run(c, ["ip", "link", "del", "eth1"], check=False)
        return times


def run(size: str = "full", session=None) -> Result:
    cfg = SIZES[size]
    result = Result("connect", size)
    ll = session.bulk_lab(cfg["hosts"]) if session else LorisLab(cfg["hosts"]).up()
    try:
        bench = Bench(ll, cfg["pool"])
        samples: dict[int, dict[str, list[tuple[float, float]]]] = {}
        for n in cfg["ports"]:
            step = ll.grow(n)
            if step:
                result.details.setdefault("growth", []).append(step)
            cpu0, rest_cli = ll.controller_cpu(), 0
            rows: dict[str, list[tuple[float, float]]] = {"rest": [], "cli": [], "base": []}
            for _ in range(cfg["trials"]):
                rows["rest"].append(bench.rest())
                rows["cli"].append(bench.cli())
                rows["base"].append(bench.base())
                rest_cli += 2
            samples[n] = rows
            result.details.setdefault("controller_cpu_ms_per_connect", {})[n] = \
                (ll.controller_cpu() - cpu0) * 1e3 / rest_cli
        result.details["failures"] = bench.failures
        result.details["samples_s"] = {
            n: {k: [{"call": a, "reply": b} for a, b in v] for k, v in rows.items()}
            for n, rows in samples.items()}
        figures(result, samples, cfg)
    finally:
        if session is None:
            ll.down()
    return result


def figures(result: Result, samples: dict, cfg: dict) -> None:
    """A connect whose ping never came back is left out of the percentiles and counted in
    the note (its diagnostics are in the JSON file's details)."""
    trials = cfg["trials"]
    for n, rows in samples.items():
        rep = {k: [b for _, b in v if b is not None] for k, v in rows.items()}
        lost = {k: sum(1 for _, b in v if b is None) for k, v in rows.items()}
        base50, base95 = median(rep["base"]), percentile(rep["base"], 95)
        for way, title in (("rest", "REST"), ("cli", "loris connect")):
            result.add(
                Figure(f"{title} to first ping, p50, {n} ports", median(rep[way]) * 1e3, "ms",
                       base50 * 1e3, "script p50", ("<=", 1.0),
                       note=f"{trials} connects each" + "".join(
                           f"; {k}: {v} without reply" for k, v in lost.items() if v)),
                Figure(f"{title} to first ping, p95, {n} ports",
                       percentile(rep[way], 95) * 1e3, "ms", base95 * 1e3, "script p95",
                       ("<=", 1.0)))
    sizes = sorted(samples)
    if len(sizes) > 1:
        small, big = sizes[0], sizes[-1]
        result.add(Figure(f"REST p50 at {big} ports vs at {small} (flat)",
                          median([b for _, b in samples[big]["rest"] if b is not None]) * 1e3,
                          "ms",
                          median([b for _, b in samples[small]["rest"] if b is not None]) * 1e3,
                          f"p50 at {small}", ("<=", FLAT_TARGET)))
    growth = result.details.get("growth", [])
    if growth:
        total = growth[-1]["to"]
        seconds = sum(s["netns_s"] + s["connect_s"] for s in growth)
        script = median([b for n in sizes for _, b in samples[n]["base"] if b is not None])
        result.add(Figure(f"creating {total} bulk ports (netns + REST, many at a time)",
                          seconds, "s", script * total, "script p50 x ports",
                          note="the baseline wires one port after the other"))
