"""A benchmark lab of one or several controllers (docs/ha.md) for bench/bench_ha.py: the
store on SQLite or on etcd (a cluster of 1 or 3 members in the control namespace), each
controller an osken-manager on its own REST and OpenFlow ports, every agent given every
controller's URL.

`HaLab` is a LorisLab: `api`, `connect`, `grow` and `controller_cpu` go to controller c1
(process `controller`, the lab's usual ports); `api(..., via="c2")` asks another one. Every
setting is the controllers' default (lease TTL 5 s, a look at the registry every 0.5 s).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

from bench.loris import SYNC_TIMEOUT, LorisLab, cpu_seconds
from controller.etcd import EtcdClient
from controller.etcd_layout import DEFAULT_PREFIX
from hostagent.client import Client, ControllerUnreachable
from lab.launchers import REPO_ROOT, venv_bin
from lab.naming import API_PORT, CONTROL_IP, OPENFLOW_PORT
from lab.netns import socket_in_netns

# controller id -> (REST port, OpenFlow port); c1 is the lab's usual controller
PORTS = {"c1": (API_PORT, OPENFLOW_PORT), "c2": (API_PORT + 1, OPENFLOW_PORT + 1),
         "c3": (API_PORT + 2, OPENFLOW_PORT + 2)}
METRIC_LINE = re.compile(
    r'^loris_(?:connect|store_commit)_duration_seconds_(?P<kind>sum|count)'
    r'(?:\{phase="(?P<phase>\w+)"\})? (?P<value>\S+)$', re.M)
STORE_REQUESTS = re.compile(r"^loris_store_requests_total (\S+)$", re.M)
LEASE_TTL = 5.0               # the controllers' default (controller/config.py ha_lease_ttl)


def api_url(cid: str) -> str:
    return f"http://{CONTROL_IP}:{PORTS[cid][0]}"


class HaLab(LorisLab):
    """`controllers` controllers (1 to 3) on `store` ("sqlite" or "etcd", the latter on an
    etcd cluster of `etcd_members`), an agent on each of `hosts` hosts, all settled."""

    def __init__(self, hosts: int, controllers: int = 1, store: str = "sqlite",
                 etcd_members: int = 1) -> None:
        super().__init__(hosts, docker=False)
        if store == "sqlite" and controllers != 1:
            raise ValueError("several controllers need the store on etcd")
        self.store = store
        self.etcd_members = etcd_members
        self.ids = list(PORTS)[:controllers]
        self.env: dict[str, str] = {}
        self.etcd: Any = None

    @property
    def name(self) -> str:
        return ("1 controller, SQLite" if self.store == "sqlite" else
                f"{len(self.ids)} controller{'s' * (len(self.ids) > 1)}, "
                f"etcd of {self.etcd_members}")

    def up(self, agents: bool = True, seed: Any = None) -> HaLab:
        lab = self.lab
        lab.up()
        try:
            if self.store == "etcd":
                self.etcd = lab.start_etcd(members=self.etcd_members)
                self.env = {"LORIS_STORE": "etcd",
                            "LORIS_ETCD_ENDPOINTS": ",".join(self.etcd.endpoints)}
            for cid in self.ids:
                self.start_one(cid)
            urls = ",".join(api_url(c) for c in PORTS)     # every one a lab may run
            for h in lab.hosts:
                lab.start_agent(h, extra_args=["--controller", urls] if self.env else [])
            self.wait_synced(timeout=SYNC_TIMEOUT + 2 * len(lab.hosts), poll=0.5)
        except BaseException:
            lab.down(check=False)
            raise
        return self

    # ---- controllers ------------------------------------------------------------------
    def start_one(self, cid: str) -> None:
        """Start controller `cid` (its process: `controller` for c1, else controller-<cid>)
        and wait for its REST API."""
        api, openflow = PORTS[cid]
        env = dict(self.env)
        if self.env:
            env.update(LORIS_CONTROLLER_ID=cid, LORIS_ADVERTISE_API=api_url(cid),
                       LORIS_ADVERTISE_OPENFLOW=f"tcp:{CONTROL_IP}:{openflow}")
        if cid == "c1":
            self.lab.start_controller(extra_env=env, timeout=60)
            return
        env.update(LORIS_DB=str(self.db), LORIS_CREDENTIALS=str(self.lab.credentials_dir),
                   LORIS_API_LISTEN=f"0.0.0.0:{api}")
        argv = [venv_bin() / "osken-manager", REPO_ROOT / "controller" / "loris_app.py",
                "--ofp-tcp-listen-port", str(openflow)]
        proc = self.lab.start_process(f"controller-{cid}", argv, netns="ctl", env=env,
                                      cwd=REPO_ROOT)
        self._wait_listening(cid, proc)
        if cid not in self.ids:
            self.ids.append(cid)

    def _wait_listening(self, cid: str, proc: Any, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.api("GET", "/v1/controllers", via=cid, timeout=5)
                return
            except ControllerUnreachable:
                if not proc.alive or time.monotonic() > deadline:
                    raise RuntimeError(f"controller {cid} did not serve its API:\n"
                                       f"{proc.log_tail(40)}") from None
                time.sleep(0.2)

    def process(self, cid: str) -> Any:
        return self.lab.processes["controller" if cid == "c1" else f"controller-{cid}"]

    def cpu(self, cid: str) -> float:
        return cpu_seconds(self.process(cid).pid)

    def alive(self) -> list[str]:
        return [c for c in self.ids if self.process(c).alive]

    # ---- REST -------------------------------------------------------------------------
    def api(self, method: str, path: str, body: Any = None, timeout: float = 120,
            via: str = "c1") -> tuple[int, Any]:
        """(status, body) of one request to controller `via`, as the operator."""
        client = Client(api_url(via), timeout=timeout,
                        token_file=str(self.lab.operator_token_file),
                        socket_factory=partial(socket_in_netns, self.lab.netns_path("ctl")))
        try:
            reply = client.send(method.upper(), path, body, timeout=timeout)
        finally:
            client.close()
        return reply.status, reply.body

    def connect_via(self, via: str, container: Any, ip: str, pod: int) -> dict:
        body = {"host": container.host.name, "container": container.name, "ip": ip,
                "pod": pod}
        status, port = self.api("POST", "/v1/ports", body, via=via)
        if status != 201:
            raise RuntimeError(f"connecting {container.name} through {via}: {status} {port}")
        return port

    def timings(self) -> dict[str, float]:
        """Seconds summed over every controller's connect phases and store commits, and
        their counts, from `GET /metrics` ("wiring_s", "wiring_n", ..., "commit_s", ...)."""
        out: dict[str, float] = {}
        for cid in self.alive():
            status, text = self.api("GET", "/metrics", via=cid, timeout=10)
            for m in METRIC_LINE.finditer(text if status == 200 else ""):
                name = m.group("phase") or "commit"
                key = f"{name}_{'s' if m.group('kind') == 'sum' else 'n'}"
                out[key] = out.get(key, 0.0) + float(m.group("value"))
            for m in STORE_REQUESTS.finditer(text if status == 200 else ""):
                out["store_requests"] = out.get("store_requests", 0.0) + float(m.group(1))
        return out

    def master_of(self, host: str, via: str) -> str | None:
        status, view = self.api("GET", f"/v1/hosts/{host}", via=via, timeout=5)
        return view["openflow"].get("master") if status == 200 else None

    def wait_synced(self, since: float = 0.0, timeout: float = SYNC_TIMEOUT,
                    hosts: Sequence[str] | None = None, poll: float = 0.1) -> float:
        """Every host (of `hosts`) mastered by a live controller (with mastership on) whose
        bridges are both connected and reconciled, every agent caught up."""
        want = set(hosts) if hosts is not None else {h.name for h in self.lab.hosts}
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            last = self._unsettled(want, since)
            if not last:
                return time.time()
            if time.monotonic() > deadline:
                raise TimeoutError(f"hosts not settled after {timeout:g} s: {str(last)[:2000]}")
            time.sleep(poll)

    def _unsettled(self, want: set[str], since: float) -> list[str]:
        """The hosts of `want` not settled yet (see wait_synced), each with the reason."""
        views: dict[str, dict[str, dict]] = {}
        for cid in self.alive():
            try:
                status, hosts = self.api("GET", "/v1/hosts", via=cid, timeout=10)
            except ControllerUnreachable:
                continue
            if status == 200:
                views[cid] = {h["id"]: h for h in hosts}
        if not views:
            return ["no controller answers"]
        first = next(iter(views.values()))
        out = []
        for host in sorted(want):
            h = first.get(host)
            if h is None:
                out.append(f"{host}: not registered")
                continue
            master = h["openflow"].get("master") if self.env else next(iter(views))
            if master not in views:
                out.append(f"{host}: master {master} not alive")
                continue
            h = views[master][host]
            bridges = list(h["openflow"]["bridges"].values())
            if len(bridges) != 2 or not all(b["connected"] and b["synced"] and
                                            (b["since"] or 0) > since for b in bridges):
                out.append(f"{host}: bridges not synced on {master}")
            elif h["actual_version"] != h["desired_version"]:
                out.append(f"{host}: agent behind")
        return out

    # ---- etcd -------------------------------------------------------------------------
    def etcd_footprint(self) -> dict[str, int]:
        """Keys, key bytes and value bytes under the store's prefix."""
        client = EtcdClient(self.etcd.endpoints, socket_factory=self.etcd.socket_factory)
        try:
            kvs = client.list_prefix(DEFAULT_PREFIX).kvs
        finally:
            client.close()
        return {"keys": len(kvs), "key_bytes": sum(len(kv.key) for kv in kvs),
                "value_bytes": sum(len(kv.value) for kv in kvs)}
