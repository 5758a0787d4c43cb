"""A lab running Loris for the benchmarks: controller, agents, bulk ports, and the probes
the benchmarks read (first ping reply, controller CPU and memory, flow-mods from its log).

Container addresses come from 198.18.128.0/17 (docs/design.md): the bulk pods 100, 101, ...
(50 members each, over every host) and the measured connects use 198.18.144.0/20, the
plain-OVS baseline network 198.18.160.0/20.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import Lab
from lab.netns import socket_in_netns

POD_NET = ipaddress.IPv4Network("198.18.144.0/20")
PLAIN_NET = ipaddress.IPv4Network("198.18.160.0/20")
BULK_POD0 = 100              # bulk pods are 100, 101, ...; the measured pod is 100
BULK_POD_SIZE = 50
CONNECT_WORKERS = 48         # concurrent bulk connects: the agents then wire many per pass
SYNC_TIMEOUT = 120.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def pod_ip(index: int) -> str:
    """The index-th address of the measured/bulk network, with its /20."""
    return f"{POD_NET[index]}/{POD_NET.prefixlen}"


def plain_ip(index: int) -> str:
    return f"{PLAIN_NET[index]}/{PLAIN_NET.prefixlen}"


# ---- processes ------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a live process (10 ms resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def rss_mib(pid: int) -> float:
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * _PAGE / 2**20


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


class Pinger:
    """Sends an ICMP echo to `dst` every `interval` seconds from inside a namespace, from
    `start()` until the first echo reply; `wait()` returns the monotonic time that reply
    arrived. A raw socket: no process to start, so the probe adds no latency of its own."""

    def __init__(self, netns_path: str, dst: str, interval: float = 0.002) -> None:
        self.dst = dst
        self.interval = interval
        self.ident = (os.getpid() + id(self)) & 0xFFFF
        self.sock = socket_in_netns(netns_path, socket.AF_INET, socket.SOCK_RAW,
                                    socket.IPPROTO_ICMP)
        self.sock.setblocking(False)
        self.replied_at: float | None = None
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-pinger", daemon=True)

    def start(self) -> Pinger:
        self._thread.start()
        return self

    def _packet(self, seq: int) -> bytes:
        head = struct.pack("!BBHHH", 8, 0, 0, self.ident, seq & 0xFFFF)
        body = b"loris-bench-ping"
        return struct.pack("!BBHHH", 8, 0, _checksum(head + body), self.ident,
                           seq & 0xFFFF) + body

    def _run(self) -> None:
        import select
        seq = 0
        next_send = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_send:
                seq += 1
                try:
                    self.sock.sendto(self._packet(seq), (self.dst, 0))
                    self.sent += 1
                except OSError:
                    pass            # no route or no neighbour yet: keep trying
                next_send = now + self.interval
            ready, _, _ = select.select([self.sock], [], [], max(0.0, next_send - now))
            if not ready:
                continue
            while True:
                try:
                    data, addr = self.sock.recvfrom(2048)
                except BlockingIOError:
                    break
                except OSError:
                    break
                ihl = (data[0] & 0x0F) * 4
                if len(data) >= ihl + 8 and addr[0] == self.dst and data[ihl] == 0:
                    ident = struct.unpack("!H", data[ihl + 4:ihl + 6])[0]
                    if ident == self.ident:
                        self.replied_at = time.monotonic()
                        self._stop.set()
                        break

    def wait(self, timeout: float) -> float | None:
        self._thread.join(timeout)
        self.stop()
        return self.replied_at

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(1)
        self.sock.close()


def fast_neighbour_retries(lab: Lab, target: Any, ifname: str = "eth1") -> None:
    """Resolve neighbours every 10 ms instead of every second, so that a probe pinging an
    address that does not exist yet learns it within 10 ms of it appearing (for Loris and
    the baseline alike)."""
    lab.run(target, ["sysctl", "-q", "-w", f"net.ipv4.neigh.{ifname}.retrans_time_ms=10"])


# ---- the Loris lab ------------------------------------------------------------------------

@dataclass
class Growth:
    """How the bulk ports came to be: one row per step."""
    steps: list[dict] = field(default_factory=list)


class LorisLab:
    """A lab with the controller and an agent on every host, synced."""

    def __init__(self, hosts: int = 5, docker: bool = True, tunnel: str = "vxlan") -> None:
        self.lab = Lab(hosts=hosts, tunnel=tunnel, docker=docker)
        self.bulk: list[dict] = []          # bulk ports (REST bodies of their 201 answers)
        self.growth = Growth()
        self.controller_started_cpu = 0.0

    def up(self, agents: bool = True,
           seed: Callable[[Path], object] | None = None) -> LorisLab:
        """Build the lab, start the controller (after `seed(<store path>)` if given) and
        an agent on every host, and wait until every host is synced."""
        self.lab.up()
        try:
            if seed is not None:
                seed(self.db)
            self.start_controller()
            if agents:
                for h in self.lab.hosts:
                    self.lab.start_agent(h)
                self.wait_synced()
        except BaseException:
            self.lab.down(check=False)
            raise
        return self

    def down(self) -> None:
        self.lab.down()

    def __enter__(self) -> LorisLab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # ---- processes --------------------------------------------------------------------
    @property
    def db(self) -> Path:
        return self.lab.dir / "loris.db"

    def start_controller(self, extra_env: dict[str, str] | None = None) -> None:
        self.lab.start_controller(extra_env=extra_env)

    @property
    def controller_pid(self) -> int:
        return self.lab.processes["controller"].pid

    def controller_cpu(self) -> float:
        return cpu_seconds(self.controller_pid)

    def controller_rss(self) -> float:
        return rss_mib(self.controller_pid)

    def ovs_pids(self) -> list[int]:
        """Every host's ovs-vswitchd and ovsdb-server."""
        return [int((h.rundir / f"{d}.pid").read_text().strip()) for h in self.lab.hosts
                for d in ("ovs-vswitchd", "ovsdb-server")]

    def agent_pids(self) -> list[int]:
        return [p.pid for name, p in self.lab.processes.items()
                if name.startswith("agent-") and p.alive]

    @staticmethod
    def cpu_of(pids: Sequence[int]) -> float:
        return sum(cpu_seconds(p) for p in pids)

    def wait_idle(self, window: float = 0.3, busy: float = 0.05, timeout: float = 120) -> None:
        """Wait until the controller used less than `busy` of a core over `window` seconds:
        what it does after answering (checking, logging) must not land in the next
        measurement."""
        deadline = time.monotonic() + timeout
        cpu = self.controller_cpu()
        while time.monotonic() < deadline:
            time.sleep(window)
            now = self.controller_cpu()
            if now - cpu < busy * window:
                return
            cpu = now
        raise TimeoutError(f"the controller stayed busy for {timeout:g} s")

    @property
    def controller_log(self) -> Path:
        return self.lab.dir / "logs" / "controller.log"

    def log_offset(self) -> int:
        try:
            return self.controller_log.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, offset: int) -> str:
        with open(self.controller_log, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    # ---- state --------------------------------------------------------------------------
    def api(self, method: str, path: str, body: Any = None, timeout: float = 120):
        return self.lab.api(method, path, body, timeout=timeout)

    def hosts(self) -> list[dict]:
        status, hosts = self.api("GET", "/v1/hosts")
        if status != 200:
            raise RuntimeError(f"GET /v1/hosts: {status} {hosts}")
        return hosts

    def wait_synced(self, since: float = 0.0, timeout: float = SYNC_TIMEOUT,
                    hosts: Sequence[str] | None = None, poll: float = 0.05) -> float:
        """Wait until every bridge of `hosts` (default all) is connected (after `since`,
        controller clock = this machine's) and reconciled, and every agent's actual version
        caught up; returns the time.time() at which that was seen."""
        want = set(hosts) if hosts is not None else {h.name for h in self.lab.hosts}
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                status, found = self.api("GET", "/v1/hosts", timeout=10)
            except Exception as e:          # controller restarting
                status, found = None, str(e)
            if status == 200:
                mine = [h for h in found if h["id"] in want]
                bridges = [b for h in mine for b in h["openflow"]["bridges"].values()]
                if len(mine) == len(want) and len(bridges) == 2 * len(want) and all(
                        b["connected"] and b["synced"] and (b["since"] or 0) > since
                        for b in bridges) and all(
                        h["actual_version"] == h["desired_version"] for h in mine):
                    return time.time()
            last = (status, found)
            if time.monotonic() > deadline:
                raise TimeoutError(f"hosts {sorted(want)} not synced after {timeout:g} s: "
                                   f"{str(last)[:2000]}")
            time.sleep(poll)

    def connect(self, container: Any, ip: str, pod: int, host: str | None = None,
                **extra: Any) -> dict:
        body = {"host": host or container.host.name, "container": container.name, "ip": ip,
                "pod": pod, **extra}
        status, port = self.api("POST", "/v1/ports", body)
        if status != 201:
            raise RuntimeError(f"connecting {container.name}: {status} {port}")
        return port

    def disconnect(self, port_id: int) -> None:
        status, body = self.api("DELETE", f"/v1/ports/{port_id}")
        if status != 204:
            raise RuntimeError(f"disconnecting port {port_id}: {status} {body}")

    # ---- bulk ports -----------------------------------------------------------------------
    def grow(self, total: int, workers: int = CONNECT_WORKERS) -> dict:
        """Add bare-namespace ports until `total` bulk ports exist, round-robin over the
        hosts, in pods of BULK_POD_SIZE, through the real REST API and agents; returns the
        step's record (seconds, controller CPU and memory after it)."""
        start_n = len(self.bulk)
        if total <= start_n:
            return {}
        hosts = self.lab.hosts
        t0 = time.monotonic()
        cpu0 = self.controller_cpu()

        def make(i: int):
            return self.lab.add_container(hosts[i % len(hosts)], f"b{i}", kind="netns")

        with ThreadPoolExecutor(8) as pool:
            containers = list(pool.map(make, range(start_n, total)))
        t_netns = time.monotonic() - t0

        def connect(i: int) -> dict:
            pod = BULK_POD0 + i // BULK_POD_SIZE
            return self.connect(containers[i - start_n], pod_ip(2 + i % BULK_POD_SIZE), pod)

        t1 = time.monotonic()
        ovs0, agents0 = self.cpu_of(self.ovs_pids()), self.cpu_of(self.agent_pids())
        with ThreadPoolExecutor(workers) as pool:
            ports = list(pool.map(connect, range(start_n, total)))
        self.bulk.extend(ports)
        step = {"from": start_n, "to": total, "netns_s": t_netns,
                "connect_s": time.monotonic() - t1,
                "controller_cpu_s": self.controller_cpu() - cpu0,
                "ovs_cpu_s": self.cpu_of(self.ovs_pids()) - ovs0,
                "agents_cpu_s": self.cpu_of(self.agent_pids()) - agents0,
                "controller_cpu_total_s": self.controller_cpu(),
                "controller_rss_mib": self.controller_rss()}
        self.growth.steps.append(step)
        return step

    def flows_per_host(self) -> dict[str, int]:
        return {h["id"]: sum(b["flows"] for b in h["openflow"]["bridges"].values())
                for h in self.hosts()}


FLOWMOD_LINE = re.compile(r"(br-\w+) of (\S+): (\d+) added, (\d+) modified, (\d+) deleted")
RECONCILE_LINE = re.compile(r"reconciled (br-\w+) of (\S+) \S+: (\d+) added, (\d+) stale "
                            r"deleted, (\d+) kept")


def flowmods_in(log: str) -> dict[str, int]:
    """Flow-mods the controller logged sending: incremental updates and reconciles."""
    out = {"added": 0, "modified": 0, "deleted": 0, "reconciles": 0}
    for m in FLOWMOD_LINE.finditer(log):
        out["added"] += int(m.group(3))
        out["modified"] += int(m.group(4))
        out["deleted"] += int(m.group(5))
    for m in RECONCILE_LINE.finditer(log):
        out["reconciles"] += 1
        out["added"] += int(m.group(3))
        out["deleted"] += int(m.group(4))
    out["total"] = out["added"] + out["modified"] + out["deleted"]
    return out
