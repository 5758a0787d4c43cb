"""Several controllers on etcd (issue #13, docs/ha.md): what they cost and how they fail over.

    python -m bench ha [--size smoke|full] [--parts connect,footprint,failover,scale]

Four parts, each against a baseline measured in the same run:

- connect latency: `POST /v1/ports` until a container of the same pod on another host gets
  its first ping reply from the new container (bench_connect.py's probe: a raw ICMP socket
  pinging every 2 ms from before the call), p50 and p95, in three labs of the same shape
  side by side, one connect in each per round so that the machine's load hits all alike:
  one controller on SQLite (the baseline), one on etcd (a 1-member cluster), three on etcd
  (a 3-member cluster; the connects go to c1, c2, c3 in turn). Target: three on etcd
  <= 1.3 x one on SQLite.
- etcd keys and bytes per port: the keys and bytes under the store's prefix with N and 2N
  bulk ports (bare namespaces wired through the agents) in the 3-controller lab; the slope
  per port, against the SQLite lab's rows and file bytes per port over the same ports.
- failover: in the 3-controller lab, a ping every 20 ms from a container on h1 to one on
  h2; kill -9 of h1's master. Pings lost (target 0), and the takeover: the time until
  another controller holds h1's master key, and until both of h1's bridges are MASTER and
  reconciled on it (target <= lease TTL + 1 s).
- scale (ha_scale.py): many hosts (50 in a full run), one controller then three on a
  3-member etcd: connect p50/p95 and each controller's CPU.

Defaults everywhere (lease TTL 5 s, a look at the registry every 0.5 s): the figures are
what a deployment gets.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

from bench import ha_scale
from bench.bench_connect import first_reply, wait_unwired
from bench.bench_resync import ping_summary
from bench.common import Figure, Result, median, percentile
from bench.ha_cluster import LEASE_TTL, HaLab
from bench.loris import BULK_POD0, fast_neighbour_retries, pod_ip

SIZES = {"full": {"hosts": 3, "trials": 30, "ports": 100, "scale_hosts": 50,
                  "scale_trials": 30},
         "smoke": {"hosts": 2, "trials": 2, "ports": 4, "scale_hosts": 3, "scale_trials": 2}}
POD = BULK_POD0               # the measured pod
FAILOVER_POD = 99
SQLITE_TARGET = 1.3           # three controllers on etcd <= 1.3 x one on SQLite
TAKEOVER_TIMEOUT = 60.0


class ConnectProbe:
    """Connects into one lab, timed by bench_connect's probe: a pinging container on h1,
    containers on h2 connected in turn (each connect undone before the next)."""

    def __init__(self, ll: HaLab, pool: int = 2) -> None:
        self.ll = ll
        lab = ll.lab
        self.p = lab.add_container(lab.hosts[0], "p", kind="netns")
        ll.connect(self.p, pod_ip(1), POD)
        fast_neighbour_retries(lab, self.p)
        self.pool = itertools.cycle([lab.add_container(lab.hosts[1], f"c{i}", kind="netns")
                                     for i in range(pool)])
        self.via = itertools.cycle(ll.ids)
        self.addresses = itertools.count(256)
        self.samples: list[tuple[float, float | None]] = []

    def once(self) -> None:
        c, ip, via = next(self.pool), pod_ip(next(self.addresses)), next(self.via)
        wait_unwired(self.ll.lab, c)
        port: dict = {}
        times = first_reply(self.p.netns_path, ip,
                            lambda: port.update(self.ll.connect_via(via, c, ip, POD)))
        self.samples.append(times)
        status, body = self.ll.api("DELETE", f"/v1/ports/{port['id']}", via=via)
        if status != 204:
            raise RuntimeError(f"disconnecting port {port['id']} through {via}: {status} {body}")

    def replies(self) -> list[float]:
        return [r for _, r in self.samples if r is not None]


def mean_phases(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """The mean seconds of each connect phase and store commit between two `timings()`."""
    out = {}
    for key in after:
        if key.endswith("_s"):
            n = after[key[:-2] + "_n"] - before.get(key[:-2] + "_n", 0.0)
            if n:
                out[key[:-2]] = (after[key] - before.get(key, 0.0)) / n
    return out


def connect_figures(result: Result, probes: dict[str, ConnectProbe]) -> None:
    base = probes["sqlite"].replies()
    for key, target in (("etcd1", None), ("etcd3", ("<=", SQLITE_TARGET))):
        mine = probes[key].replies()
        lost = sum(1 for _, r in probes[key].samples if r is None)
        name = probes[key].ll.name
        result.add(
            Figure(f"REST connect -> first ping, p50, {name}", median(mine) * 1e3, "ms",
                   median(base) * 1e3, "1 controller on SQLite, p50", target,
                   note=f"{len(probes[key].samples)} connects each"
                        + (f"; {lost} without reply" if lost else "")),
            Figure(f"REST connect -> first ping, p95, {name}", percentile(mine, 95) * 1e3,
                   "ms", percentile(base, 95) * 1e3, "1 controller on SQLite, p95", target))


def footprint_figures(result: Result, sqlite: HaLab, etcd: HaLab, ports: int) -> None:
    """Grow both labs to `ports`, then 2 x `ports` bulk ports; the slope per port."""
    rows: dict[str, list[dict]] = {"sqlite": [], "etcd": []}
    for total in (ports, 2 * ports):
        for ll in (sqlite, etcd):
            ll.grow(total)
            ll.wait_synced()
        rows["sqlite"].append(sqlite_footprint(sqlite))
        rows["etcd"].append(etcd.etcd_footprint())
    result.details["footprint"] = {"ports": [ports, 2 * ports], **rows}

    def slope(key: str, field: Callable[[dict], int]) -> float:
        first, second = rows[key]
        return (field(second) - field(first)) / ports

    result.add(
        Figure("etcd keys per port (slope from N to 2N ports)",
               slope("etcd", lambda r: r["keys"]), "keys",
               slope("sqlite", lambda r: r["rows"]), "SQLite rows per port",
               note=f"N = {ports}; {rows['etcd'][-1]['keys']} keys at {2 * ports} ports"),
        Figure("etcd bytes per port (keys + values, slope)",
               slope("etcd", lambda r: r["key_bytes"] + r["value_bytes"]), "B",
               slope("sqlite", lambda r: r["file_bytes"]), "SQLite file bytes per port",
               note="values alone: "
                    f"{slope('etcd', lambda r: r['value_bytes']):.0f} B per port"))


def sqlite_footprint(ll: HaLab) -> dict[str, int]:
    """Rows in every table and the database's size (pages in use x page size)."""
    import sqlite3

    conn = sqlite3.connect(f"file:{ll.db}?mode=ro", uri=True, timeout=30)
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite_%'")]
        rows = sum(conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables)
        pages, free, size = (conn.execute(f"PRAGMA {p}").fetchone()[0]
                             for p in ("page_count", "freelist_count", "page_size"))
    finally:
        conn.close()
    return {"rows": rows, "file_bytes": (pages - free) * size}


def failover(result: Result, ll: HaLab) -> None:
    """kill -9 of h1's master under a ping every 20 ms from h1 to h2."""
    lab = ll.lab
    h1, h2 = lab.hosts[0].name, lab.hosts[1].name
    a = lab.add_container(h1, "fa", kind="netns")
    b = lab.add_container(h2, "fb", kind="netns")
    ll.connect(a, pod_ip(4000), FAILOVER_POD)
    ll.connect(b, pod_ip(4001), FAILOVER_POD)
    target = pod_ip(4001).split("/")[0]
    deadline = time.monotonic() + 30
    while lab.run(a, ["ping", "-c", "1", "-W", "1", target], check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{a.name} cannot ping {target} before the failover")
    ll.wait_synced()
    ping = lab.start_process("ha-ping", ["ping", "-i", "0.02", target], netns=a)
    time.sleep(1)
    victim = ll.master_of(h1, via="c1")
    survivors = [c for c in ll.ids if c != victim]
    killed = time.monotonic()
    ll.process(victim).signal(9)
    key_taken = bridges_master = None
    while time.monotonic() - killed < TAKEOVER_TIMEOUT:
        now = time.monotonic()
        master = _master(ll, h1, survivors[0])
        if master in survivors and key_taken is None:
            key_taken = now - killed
        if master in survivors and _bridges_master(ll, h1, master):
            bridges_master = now - killed
            break
        time.sleep(0.05)
    time.sleep(2)
    sent, lost = ping_summary(ping)
    result.details["failover"] = {"victim": victim, "key_taken_s": key_taken,
                                  "bridges_master_s": bridges_master, "ping_sent": sent,
                                  "ping_lost": lost}
    if key_taken is None or bridges_master is None:
        raise RuntimeError(f"no takeover of {h1} {TAKEOVER_TIMEOUT:g} s after killing its "
                           f"master {victim}: {result.details['failover']}")
    limit = LEASE_TTL + 1
    result.add(
        Figure(f"pings lost (every 20 ms) when h1's master ({victim}) is killed", lost, "",
               sent, "pings sent", ("<=", 0.0)),
        Figure("kill -9 of h1's master -> another holds its master key", key_taken, "s",
               limit, "lease TTL + 1 s", ("<=", 1.0)),
        Figure("kill -9 of h1's master -> h1's bridges MASTER and reconciled on it",
               bridges_master, "s", limit, "lease TTL + 1 s", ("<=", 1.0)))


def _master(ll: HaLab, host: str, via: str) -> str | None:
    try:
        return ll.master_of(host, via)
    except Exception:
        return None


def _bridges_master(ll: HaLab, host: str, master: str) -> bool:
    try:
        status, view = ll.api("GET", f"/v1/hosts/{host}", via=master, timeout=5)
    except Exception:
        return False
    bridges = view["openflow"]["bridges"].values() if status == 200 else ()
    return bool(bridges) and all(b["synced"] and b["roles"].get(master) == "master"
                                 for b in bridges)


PARTS = ("connect", "footprint", "failover", "scale")


def run(size: str = "full", session=None) -> Result:
    cfg = SIZES[size]
    result = Result("ha", size)
    parts = set(PARTS if session is None or session.parts is None else session.parts)
    unknown = parts - set(PARTS)
    if unknown:
        raise ValueError(f"ha has no part {', '.join(sorted(unknown))}; its parts: "
                         f"{', '.join(PARTS)}")
    labs = {"sqlite": HaLab(cfg["hosts"]),
            "etcd1": HaLab(cfg["hosts"], 1, "etcd", 1),
            "etcd3": HaLab(cfg["hosts"], 3, "etcd", 3)}
    if "connect" not in parts:
        labs = {k: ll for k, ll in labs.items()
                if k == "etcd3" or (k == "sqlite" and "footprint" in parts)}
        if not parts & {"footprint", "failover"}:
            labs = {}
    started: list[HaLab] = []
    try:
        for key, ll in labs.items():
            t0 = time.monotonic()
            started.append(ll.up())
            result.details.setdefault("lab_up_s", {})[key] = time.monotonic() - t0
        if "connect" in parts:
            connect_part(result, labs, cfg["trials"])
        if "footprint" in parts:
            footprint_figures(result, labs["sqlite"], labs["etcd3"], cfg["ports"])
        for key in ("sqlite", "etcd1"):
            if key in labs:
                started.remove(labs[key])
                labs[key].down()
        if "failover" in parts:
            failover(result, labs["etcd3"])
    finally:
        for ll in started:
            ll.down()
    if "scale" in parts:
        ha_scale.run(result, cfg["scale_hosts"], cfg["scale_trials"])
    return result


def connect_part(result: Result, labs: dict[str, HaLab], trials: int) -> None:
    """Connect latency in the three labs side by side, one connect in each per round."""
    probes = {key: ConnectProbe(ll) for key, ll in labs.items()}
    cpu0 = {key: {c: ll.cpu(c) for c in ll.ids} for key, ll in labs.items()}
    timings0 = {key: ll.timings() for key, ll in labs.items()}
    for _ in range(trials):
        for probe in probes.values():
            probe.once()
    timings1 = {key: ll.timings() for key, ll in labs.items()}
    result.details["mean_phase_s"] = {key: mean_phases(timings0[key], timings1[key])
                                      for key, ll in labs.items()}
    # etcd round trips of the store per connect (its disconnect included)
    result.details["store_requests_per_connect"] = {
        key: (timings1[key].get("store_requests", 0.0)
              - timings0[key].get("store_requests", 0.0)) / trials for key in labs}
    result.details["controller_cpu_s"] = {
        key: {c: ll.cpu(c) - cpu0[key][c] for c in ll.ids} for key, ll in labs.items()}
    result.details["samples_s"] = {key: [{"call": a, "reply": b} for a, b in p.samples]
                                   for key, p in probes.items()}
    connect_figures(result, probes)
