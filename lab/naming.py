"""Names and addresses of a lab: everything carries the lab's unique prefix `lrs<6 hex>`."""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from flows import contract

# Overridable so a test of the lab itself could use another root; nothing else changes it.
RUN_ROOT = Path(os.environ.get("LORIS_LAB_RUN_ROOT", "/run/loris-lab"))
NETNS_DIR = Path("/run/netns")

PREFIX_RE = re.compile(r"^lrs[0-9a-f]{6}$")
# A lab namespace: <prefix>-h<i>, <prefix>-ul, <prefix>-ctl, <prefix>-c-<name>.
NETNS_RE = re.compile(r"^(lrs[0-9a-f]{6})-[A-Za-z0-9_.-]+$")
CONTAINER_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,30}$")

DOCKER_LABEL = "loris-lab"          # value: the lab prefix
DOCKER_HOST_LABEL = "loris-lab-host"  # value: the lab host (h1, ...) the container belongs to
IMAGE = "loris-test:busybox"

UNDERLAY_PREFIXLEN = 24
MGMT_PREFIXLEN = 24
CONTROL_IP = "198.19.0.1"
API_PORT = contract.DEFAULT_API_PORT
OPENFLOW_PORT = contract.DEFAULT_OPENFLOW_PORT
MAX_HOSTS = 200  # host i uses .(10+i) in both /24s

TUNNEL_TYPES = contract.TUNNEL_TYPES
UNDERLAY_MTU = 1500
INNER_MTU = {t: contract.container_mtu(UNDERLAY_MTU, t) for t in TUNNEL_TYPES}


def new_prefix() -> str:
    return "lrs" + secrets.token_hex(3)


def tunnel_ip(index: int) -> str:
    return f"198.18.0.{10 + index}"


def mgmt_ip(index: int) -> str:
    return f"198.19.0.{10 + index}"


def random_mac() -> str:
    """A random locally administered unicast MAC."""
    raw = bytearray(secrets.token_bytes(6))
    raw[0] = (raw[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in raw)


def lab_dir(prefix: str) -> Path:
    return RUN_ROOT / prefix


@dataclass(frozen=True)
class Host:
    """One simulated host: a namespace with its own ovsdb-server and ovs-vswitchd."""

    index: int
    prefix: str

    @property
    def name(self) -> str:
        """Also the Loris host id (`--host-id`)."""
        return f"h{self.index}"

    @property
    def netns(self) -> str:
        return f"{self.prefix}-{self.name}"

    @property
    def netns_path(self) -> str:
        return str(NETNS_DIR / self.netns)

    @property
    def rundir(self) -> Path:
        return lab_dir(self.prefix) / self.name

    @property
    def ovsdb(self) -> str:
        return f"unix:{self.rundir}/db.sock"

    @property
    def tunnel_ip(self) -> str:
        return tunnel_ip(self.index)

    @property
    def mgmt_ip(self) -> str:
        return mgmt_ip(self.index)

    def __str__(self) -> str:
        return self.name
