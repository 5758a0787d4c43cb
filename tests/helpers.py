"""Helpers shared by the integration and e2e tests: waiting for the cluster, connecting
containers, pinging, moving bytes, and views of hosts and flows. Fixtures (labs, clusters)
live in conftest.py; the checks that a lab holds exactly what the store says in
convergence.py.

Import as `from helpers import ...`: pytest puts tests/ on sys.path for its conftest.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

from flows import Kind, contract, parse_cookie
from lab import Lab

if TYPE_CHECKING:
    from lab.containers import Container

SYNC_TIMEOUT = 30
MESH_TIMEOUT = 30


# ---------------------------------------------------------------------- waiting


def wait_for(predicate: Callable[[], object], timeout: float, what: str,
             interval: float = 0.2) -> None:
    """Poll `predicate` until it is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not within {timeout:g}s"
        time.sleep(interval)


def wait_synced(lab: Lab, since: float = 0.0, timeout: float = SYNC_TIMEOUT,
                hosts: Iterable[str] | None = None) -> list[dict]:
    """Every host of `hosts` (default: all the lab's) registered, both its bridges connected
    (after `since`, a Unix time) and reconciled by the controller. Returns GET /v1/hosts."""
    names = sorted(hosts) if hosts is not None else [h.name for h in lab.hosts]
    deadline = time.monotonic() + timeout
    while True:
        status, body = lab.api("GET", "/v1/hosts")
        seen = {h["id"]: h for h in body} if status == 200 else {}
        if all(name in seen and _bridges_synced(seen[name], since) for name in names):
            return body
        assert time.monotonic() < deadline, f"hosts {names} not synced: {status} {body}"
        time.sleep(0.2)


def _bridges_synced(host: dict, since: float) -> bool:
    bridges = host["openflow"]["bridges"]
    return set(bridges) == set(contract.BRIDGES) and all(
        b["connected"] and b["synced"] and b["since"] > since for b in bridges.values())


def wait_meshed(lab: Lab, since: float = 0.0) -> list[dict]:
    """wait_synced, then every host of the lab has its agent polling and reports a tunnel
    to every other one. Returns GET /v1/hosts."""
    n = len(lab.hosts)

    def meshed() -> bool:
        status, hosts = lab.api("GET", "/v1/hosts")
        return status == 200 and len(hosts) == n and all(
            len(h["tunnels"]) == n - 1 and h["agent"]["polling"] for h in hosts)

    wait_synced(lab, since)
    wait_for(meshed, MESH_TIMEOUT, "every host polling with a tunnel to every other one")
    return lab.api("GET", "/v1/hosts")[1]


# ---------------------------------------------------------------------- containers


def connect(lab: Lab, container: str, ip: str, pod: int, host: str | None = None,
            timeout: float = 90, **fields: Any) -> tuple[int, Any]:
    """POST /v1/ports for the lab container `container` (its short name) on its own host
    (or `host`): (status, body). `fields` go into the request too (mac=...)."""
    c = lab.container(container)
    body = {"host": host or c.host.name, "container": c.name, "ip": ip, "pod": pod, **fields}
    return lab.api("POST", "/v1/ports", body, timeout=timeout)


def cli_connect(lab: Lab, container: str, ip: str, pod: int | str,
                *options: str) -> subprocess.CompletedProcess[str]:
    """`loris connect <name> <ip> <pod> [options]` on the container's host, which must
    succeed."""
    c = lab.container(container)
    r = lab.loris(c.host, "connect", c.name, ip, str(pod), *options)
    assert r.returncode == 0, f"loris connect {container}: {r.stderr}"
    return r


def cli_connect_json(lab: Lab, container: str, ip: str, pod: int | str,
                     *options: str) -> dict:
    """cli_connect with --json: the port as the controller returned it."""
    return json.loads(cli_connect(lab, container, ip, pod, *options, "--json").stdout)


def interface(lab: Lab, container: Container | str, ifname: str = "eth1") -> dict | None:
    """`ip -j addr show dev <ifname>` in the container's current namespace (after a
    restart: the new one), None when it has no such interface."""
    c = lab.container(container) if isinstance(container, str) else container
    r = lab.run(c, ["ip", "-j", "addr", "show", "dev", ifname], check=False)
    return json.loads(r.stdout)[0] if r.returncode == 0 else None


def inet(iface: dict | None) -> list[str]:
    """The IPv4 addresses of an interface() result."""
    return [a["local"] for a in (iface or {}).get("addr_info", []) if a["family"] == "inet"]


# ---------------------------------------------------------------------- ping

PingTools = Literal["host", "own", "busybox"]


def ping(lab: Lab, src: Container | str, dst_ip: str, count: int = 1, wait: float = 1,
         interval: float | None = None, source: str | None = None, tools: PingTools = "host",
         timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`ping -c count [-i interval] -W wait [-I source] dst_ip` from the container `src`
    (or its short name), not checked. tools: "host", the host's iputils ping in the
    container's namespace; "own", the container's own `ping` (busybox in a Docker
    container of the lab's image, the host's in a netns one); "busybox", `busybox ping` in
    the container, of either kind."""
    c = lab.container(src) if isinstance(src, str) else src
    argv = ["ping", "-c", str(count)]
    if interval is not None:
        argv += ["-i", f"{interval:g}"]
    argv += ["-W", f"{wait:g}"]
    if source:
        argv += ["-I", source]
    argv.append(dst_ip)
    if tools == "host":
        return lab.run(c, argv, check=False, timeout=timeout)
    return c.exec(["busybox", *argv] if tools == "busybox" else argv, check=False,
                  timeout=timeout)


def pings(lab: Lab, src: Container | str, dst_ip: str, **options: Any) -> bool:
    """At least one reply (ping's exit status 0); `options` as for ping()."""
    return ping(lab, src, dst_ip, **options).returncode == 0


def ping_in_background(lab: Lab, src: Container | str, dst_ip: str, interval: float = 0.1,
                       count: int | None = None, timestamps: bool = False) -> subprocess.Popen:
    """The host's iputils ping in the container's namespace, running on: `count` requests,
    or until SIGINT. Output (stdout and stderr) in one text pipe; `timestamps`: -D."""
    c = lab.container(src) if isinstance(src, str) else src
    argv = ["ping", *(["-D"] if timestamps else []), "-i", f"{interval:g}", "-W", "1",
            *(["-c", str(count)] if count is not None else []), dst_ip]
    return subprocess.Popen(lab.enter(c) + argv, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def ping_counts(output: str) -> tuple[int, int]:
    """(transmitted, received) from the summary of iputils or busybox ping."""
    m = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", output)
    assert m, f"no ping summary in: {output!r}"
    return int(m.group(1)), int(m.group(2))


def loss(output: str) -> float:
    """The packet loss in percent. From the replies' icmp_seq when ping printed them: the
    last request may still have been in flight when the ping was interrupted, so it counts
    as lost only if ping sent nothing after it (it never does). Else ping's own summary
    (which iputils gives with decimals, e.g. 0.649351%)."""
    transmitted, _ = ping_counts(output)
    replies = {int(n) for n in re.findall(r"icmp_seq=(\d+)", output)}
    if replies and transmitted:
        lost = set(range(1, transmitted)) - replies        # not the last one, in flight
        return 100.0 * len(lost) / transmitted
    m = re.search(r"([\d.]+)% packet loss", output)
    assert m, output
    return float(m.group(1))


# ---------------------------------------------------------------------- traffic


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


# ---------------------------------------------------------------------- views


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


def all_loris_flows(lab: Lab) -> dict[tuple[str, str], list[str]]:
    """loris_flows of every bridge of every host, keyed by (host, bridge)."""
    return {(h.name, b): loris_flows(lab, h.name, b)
            for h in lab.hosts for b in contract.BRIDGES}  # fmt: skip


def cookie_of(flow: str) -> tuple[Kind, int, int] | None:
    """(kind, object id, digest) of a Loris flow line (docs/pipeline.md), None for others."""
    m = re.search(r"cookie=(0x[0-9a-f]+)", flow)
    return parse_cookie(int(m.group(1), 16)) if m else None
