"""Several controllers in a lab (docs/ha.md), for tests/integration/test_ha_*.py: each
controller an osken-manager in the control namespace on its own REST and OpenFlow ports,
registered in the lab's etcd, sharing the store; the REST client to one of them.

Import as `from ha_lab import ...` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import re
import socket
import struct
from collections.abc import Mapping
from functools import partial

from helpers import wait_for

from hostagent.client import Client
from lab import Lab
from lab.launchers import REPO_ROOT, venv_bin
from lab.naming import CONTROL_IP
from lab.netns import socket_in_netns
from lab.procs import LabProcess

TTL = 3                                  # the controllers' lease TTL in the tests


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
