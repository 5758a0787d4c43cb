"""Several controllers in a lab (docs/ha.md), for tests/integration/test_ha_*.py: each
controller an osken-manager in the control namespace on its own REST and OpenFlow ports,
registered in the lab's etcd, sharing the store; the REST client to one of them.

Import as `from ha_lab import ...` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import re
import socket
import struct
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import partial

from helpers import wait_for

from hostagent.client import ApiError, Client, ControllerUnreachable
from lab import Lab
from lab.launchers import REPO_ROOT, venv_bin
from lab.naming import CONTROL_IP
from lab.netns import socket_in_netns
from lab.procs import LabProcess

TTL = 3                                  # the controllers' lease TTL in the tests
# three controllers over a three-member etcd, three hosts (three_controllers)
CLUSTER_PORTS = {"c1": (8780, 6653), "c2": (8781, 6654), "c3": (8782, 6655)}
CLUSTER_HOSTS = ("h1", "h2", "h3")


def url(api_port: int) -> str:
    return f"http://{CONTROL_IP}:{api_port}"


def start_controller(lab: Lab, cid: str, api_port: int, openflow_port: int,
                     env: Mapping[str, str]) -> LabProcess:
    """Controller `cid` (process controller-<cid>), its store and etcd from `env`; waits
    until its REST API listens."""
    full = {**env, "LORIS_DB": str(lab.dir / "loris.db"),
            "LORIS_CREDENTIALS": str(lab.credentials_dir),
            "LORIS_API_LISTEN": f"0.0.0.0:{api_port}", "LORIS_CONTROLLER_ID": cid,
            "LORIS_ADVERTISE_API": url(api_port),
            "LORIS_ADVERTISE_OPENFLOW": f"tcp:{CONTROL_IP}:{openflow_port}",
            "LORIS_HA_LEASE_TTL": str(TTL), "LORIS_HA_INTERVAL": "0.3"}
    argv = [venv_bin() / "osken-manager", REPO_ROOT / "controller" / "loris_app.py",
            "--ofp-tcp-listen-port", str(openflow_port)]
    proc = lab.start_process(f"controller-{cid}", argv, netns="ctl", env=full, cwd=REPO_ROOT)
    wait_for(lambda: listening(lab, api_port) or not proc.alive, 60,
             f"controller {cid}'s API")
    assert proc.alive, proc.log_tail(40)
    return proc


def listening(lab: Lab, port: int) -> bool:
    sock = socket_in_netns(lab.netns_path("ctl"))
    try:
        sock.settimeout(1)
        sock.connect((CONTROL_IP, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def client(lab: Lab, api_port: int, timeout: float = 10) -> Client:
    """The REST client of the agent and the CLI, to one controller, from the control
    namespace, as the operator."""
    return Client(url(api_port), timeout=timeout, token_file=str(lab.operator_token_file),
                  socket_factory=partial(socket_in_netns, lab.netns_path("ctl")))


def registry(lab: Lab, api_port: int) -> dict[str, dict]:
    """GET /v1/controllers of one controller: id -> entry."""
    body = client(lab, api_port).request("GET", "/v1/controllers")
    return {c["id"]: c for c in body["controllers"]}


def ovs_controllers(lab: Lab, host: str, bridge: str) -> dict[str, dict]:
    """target -> {role, connected} of the bridge's Controller rows, as OVS shows them."""
    ovs = lab.ovs(host)
    out = {}
    for uuid in re.findall(r"[0-9a-f-]{36}", ovs.vsctl("get", "Bridge", bridge, "controller")):
        target, role, connected = (ovs.vsctl("get", "Controller", uuid, column).strip()
                                   for column in ("target", "role", "is_connected"))
        out[target.strip('"')] = {"role": None if role == "[]" else role,
                                  "connected": connected == "true"}
    return out


class OpenFlowProbe:
    """A bare OpenFlow 1.3 connection from the test to the host's br-int, listening on
    `port` of the control namespace: HELLO, then role requests."""

    def __init__(self, lab: Lab, host: str, port: int) -> None:
        self.lab, self.host = lab, host
        listener = socket_in_netns(lab.netns_path("ctl"))
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((CONTROL_IP, port))
        listener.listen(1)
        listener.settimeout(30)
        self.target = f"tcp:{CONTROL_IP}:{port}"
        ovs = lab.ovs(host)
        current = re.findall(r"[0-9a-f-]{36}", ovs.vsctl("get", "Bridge", "br-int",
                                                          "controller"))
        ovs.vsctl("--", "--id=@p", "create", "Controller", f'target="{self.target}"',
                  "connection_mode=out-of-band", "--", "set", "Bridge", "br-int",
                  f"controller=[{','.join([*current, '@p'])}]")
        self.conn, _ = listener.accept()
        listener.close()
        self.conn.settimeout(10)
        self.xid = 100
        self._send(0, b"")                  # HELLO

    def _send(self, kind: int, body: bytes) -> int:
        self.xid += 1
        self.conn.sendall(struct.pack("!BBHI", 4, kind, 8 + len(body), self.xid) + body)
        return self.xid

    def _read(self) -> tuple[int, int, bytes]:
        head = self._exact(8)
        _version, kind, length, xid = struct.unpack("!BBHI", head)
        return kind, xid, self._exact(length - 8)

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.conn.recv(n - len(data))
            assert chunk, "OVS closed the probe's connection"
            data += chunk
        return data

    def role(self, role: int, generation: int) -> tuple[str, int, int]:
        """('reply', role, generation) or ('error', type, code)."""
        xid = self._send(24, struct.pack("!I4xQ", role, generation))
        while True:
            kind, got, body = self._read()
            if kind == 2:                   # ECHO_REQUEST
                self.conn.sendall(struct.pack("!BBHI", 4, 3, 8 + len(body), got) + body)
                continue
            if got != xid:
                continue
            if kind == 25:
                r, g = struct.unpack("!I4xQ", body[:16])
                return "reply", r, g
            if kind == 1:
                t, c = struct.unpack("!HH", body[:4])
                return "error", t, c

    def close(self) -> None:
        self.conn.close()
        ovs = self.lab.ovs(self.host)
        uuid = ovs.vsctl("--bare", "--columns=_uuid", "find", "Controller",
                         f'target="{self.target}"').strip()
        if uuid:
            ovs.vsctl("remove", "Bridge", "br-int", "controller", uuid)


@contextmanager
def three_controllers() -> Iterator[dict]:
    """A lab of three hosts, a 3-member etcd and three controllers (CLUSTER_PORTS) on the
    store on etcd; the agents are given all three REST URLs. Yields {"lab", "etcd", "env",
    "procs": {controller id: process}}."""
    with Lab(hosts=3, tunnel="vxlan", docker=False) as lab:
        etcd = lab.start_etcd(members=3)
        env = {"LORIS_STORE": "etcd", "LORIS_ETCD_ENDPOINTS": ",".join(etcd.endpoints)}
        lab.controller_env = env            # where lab.agent_token_file issues the tokens
        procs = {cid: start_controller(lab, cid, *CLUSTER_PORTS[cid], env)
                 for cid in CLUSTER_PORTS}
        for host in CLUSTER_HOSTS:
            lab.start_agent(host, extra_args=["--controller", cluster_urls()])
        yield {"lab": lab, "etcd": etcd, "env": env, "procs": procs}


def cluster_urls(first: str = "c1") -> str:
    """The three controllers' REST URLs, comma-separated, `first` first (as the CLI and
    the agents take them)."""
    order = [first, *(c for c in CLUSTER_PORTS if c != first)]
    return ",".join(url(CLUSTER_PORTS[c][0]) for c in order)


def settled(lab: Lab, via: str = "c1", alive: tuple[str, ...] = tuple(CLUSTER_PORTS)) -> bool:
    """Every live controller healthy, every host mastered by one of them, both bridges of
    every host MASTER on exactly that one and synced (not yet while a controller answers
    503 because etcd is electing a leader)."""
    try:
        return _settled(lab, via, alive)
    except (ApiError, ControllerUnreachable):
        return False


def _settled(lab: Lab, via: str, alive: tuple[str, ...]) -> bool:
    reg = registry(lab, CLUSTER_PORTS[via][0])
    if set(reg) != set(alive) or not all(c["healthy"] for c in reg.values()):
        return False
    masters = {h: c for c, entry in reg.items() for h in entry["masters"]}
    if set(masters) != set(CLUSTER_HOSTS):
        return False
    for host in CLUSTER_HOSTS:
        view = client(lab, CLUSTER_PORTS[masters[host]][0]).request("GET", f"/v1/hosts/{host}")
        bridges = view["openflow"]["bridges"].values()
        if view["openflow"]["master"] != masters[host] or not all(
                b["synced"] and b["roles"].get(masters[host]) == "master" for b in bridges):
            return False
    return True


def agents_heard(lab: Lab, via: str = "c1") -> bool:
    """No host's agent is away for controller `via` (after an outage agents back off for up
    to 10 s between tries, so they are heard again a little after the controllers settle)."""
    try:
        hosts = client(lab, CLUSTER_PORTS[via][0]).request("GET", "/v1/hosts")
    except (ApiError, ControllerUnreachable):
        return False
    return all(not h["agent"]["away"] for h in hosts)
