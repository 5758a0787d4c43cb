"""Helpers shared by the integration and e2e tests (fixtures live in conftest.py).

Import as `from helpers import ...`: pytest puts tests/ on sys.path for its conftest.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable

from flows import Kind, parse_cookie
from lab import Lab

SYNC_TIMEOUT = 30


def wait_for(predicate: Callable[[], object], timeout: float, what: str,
             interval: float = 0.2) -> None:
    """Poll `predicate` until it is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not within {timeout:g}s"
        time.sleep(interval)


def ping_counts(output: str) -> tuple[int, int]:
    """(transmitted, received) from the summary of iputils or busybox ping."""
    m = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", output)
    assert m, f"no ping summary in: {output!r}"
    return int(m.group(1)), int(m.group(2))


def loss(output: str) -> int:
    """The packet loss in percent reported by ping."""
    m = re.search(r"(\d+)% packet loss", output)
    assert m, output
    return int(m.group(1))


def transfer(sender, receiver, receiver_ip: str, size: int, port: int = 5001) -> float:
    """Send `size` random bytes with busybox nc; assert they arrive intact (md5).
    Returns the seconds the send took."""
    payload = os.urandom(size)
    server = receiver.popen(["busybox", "sh", "-c", f"busybox nc -l -p {port} | busybox md5sum"])
    try:
        deadline = time.monotonic() + 10
        while f":{port} " not in receiver.exec(["busybox", "netstat", "-ltn"]).stdout:
            assert server.poll() is None, server.stderr.read().decode()
            assert time.monotonic() < deadline, f"nc on {receiver.name} is not listening"
            time.sleep(0.05)
        started = time.monotonic()
        sender.exec(["busybox", "nc", receiver_ip, str(port)], input=payload, timeout=120)
        elapsed = time.monotonic() - started
        out, err = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert out.decode().split()[0] == hashlib.md5(payload).hexdigest(), err.decode()
    return elapsed


def wait_all_synced(lab: Lab, since: float = 0.0, timeout: float = SYNC_TIMEOUT) -> list[dict]:
    """Every host of the lab registered, both its bridges connected (after `since`, a Unix
    time) and reconciled by the controller. Returns GET /v1/hosts."""
    deadline = time.monotonic() + timeout
    while True:
        status, hosts = lab.api("GET", "/v1/hosts")
        bridges = [b for h in hosts for b in h["openflow"]["bridges"].values()] \
            if status == 200 else []
        if len(bridges) == 2 * len(lab.hosts) and all(
                b["connected"] and b["synced"] and b["since"] > since for b in bridges):
            return hosts
        assert time.monotonic() < deadline, f"hosts not synced: {status} {hosts}"
        time.sleep(0.2)


def host_view(lab: Lab, host: str) -> dict:
    """What Loris may add to a host, to compare before and after: its links and bridges."""
    links = json.loads(lab.run(host, ["ip", "-j", "link"]).stdout)
    return {"links": sorted(link["ifname"] for link in links),
            "bridges": sorted(lab.ovs(host).bridges())}  # fmt: skip


def ports_by_container(lab: Lab) -> dict[str, dict]:
    """GET /v1/ports, keyed by container."""
    status, body = lab.api("GET", "/v1/ports")
    assert status == 200, body
    return {p["container"]: p for p in body}


def loris_flows(lab: Lab, host: str, bridge: str) -> list[str]:
    """The Loris flows of a bridge (cookie marker 0x4c), without counters, sorted: two
    dumps compare equal when the flows did not change."""
    return sorted(f for f in lab.ovs(host).dump_flows(bridge, stats=False)
                  if f.startswith("cookie=0x4c"))  # fmt: skip


def cookie_of(flow: str) -> tuple[Kind, int, int] | None:
    """(kind, object id, digest) of a Loris flow line (docs/pipeline.md), None for others."""
    m = re.search(r"cookie=(0x[0-9a-f]+)", flow)
    return parse_cookie(int(m.group(1), 16)) if m else None
