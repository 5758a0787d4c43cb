"""Several controllers in a lab (docs/ha.md), for tests/integration/test_ha_*.py: each
controller an osken-manager in the control namespace on its own REST and OpenFlow ports,
registered in the lab's etcd, sharing the store; the REST client to one of them.

Import as `from ha_lab import ...` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import re
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
