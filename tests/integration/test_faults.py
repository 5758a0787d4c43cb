"""Fault tolerance: what Loris promises when a part crashes, hangs or loses its network
(docs/operations.md, "Failures and what Loris promises").

One 3-host lab for the module (plain network-namespace containers), its tests in order; each
leaves the lab converged for the next. Every test ends by checking that no part holds
anything the store does not know about (`assert_converged`, tests/convergence.py): no veth,
no OVS port, no flow of a port that does not exist, and a consistent database.
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from functools import partial

import helpers
import pytest
from convergence import assert_converged, lp_ovs_ports, lp_veths
from helpers import (
    cli_connect,
    connect,
    interface,
    loris_flows,
    loss,
    ping_in_background,
    wait_for,
    wait_meshed,
)

from lab import Lab, LabError

pytestmark = [pytest.mark.integration]

POD = 20                       # the base pod: a (h1), b (h2), c (h3)
BASE = {"a": ("h1", "198.18.148.11/24"), "b": ("h2", "198.18.148.12/24"),
        "c": ("h3", "198.18.148.13/24")}


# ---------------------------------------------------------------------- helpers, the lab

# one request, one second for its reply (host's iputils ping)
pings = partial(helpers.pings, interval=0.2)


def stop_ping(ping: subprocess.Popen) -> str:
    ping.send_signal(signal.SIGINT)
    out, _ = ping.communicate(timeout=10)
    return out


def continuous_ping(lab: Lab, src, dst_ip: str, interval: float = 0.1) -> subprocess.Popen:
    """Until stop_ping; -D timestamps for longest_gap."""
    return ping_in_background(lab, src, dst_ip, interval, timestamps=True)


def longest_gap(output: str) -> float:
    """The longest time without a reply, from ping -D's timestamps."""
    stamps = [float(t) for t in re.findall(r"^\[(\d+\.\d+)\].*bytes from", output, re.M)]
    return max((b - a for a, b in zip(stamps, stamps[1:], strict=False)), default=0.0)


def has_eth1(lab: Lab, name: str) -> bool:
    return interface(lab, name) is not None


def kill_controller(lab: Lab) -> None:
    proc = lab.processes["controller"]
    proc.signal(signal.SIGKILL)
    proc.wait(10)


@pytest.fixture(scope="module")
def lab(make_cluster):
    lab = make_cluster(hosts=3, docker=False, wait="meshed")
    assert lab.api("POST", "/v1/pods", {"id": POD, "subnet": "198.18.148.0/24"})[0] == 201
    for name, (host, ip) in BASE.items():
        lab.add_container(host, name, kind="netns")
        status, body = connect(lab, name, ip, POD)
        assert status == 201, body
    return lab


# ---------------------------------------------------------------------- tests

def test_two_clients_same_ip_exactly_one_wins(lab):
    """Each round, two clients connect different containers with the same IP (then the
    same MAC) into one pod at the same moment: one 201, one 409 naming the winner."""
    lab.add_container("h1", "r1", kind="netns")
    lab.add_container("h2", "r2", kind="netns")
    names = {lab.container(n).name: n for n in ("r1", "r2")}
    for rnd in range(6):
        ip = f"198.18.148.{100 + rnd}/24"
        same_mac = rnd % 2 == 1
        extra = {"mac": f"02:fa:00:00:01:{rnd:02x}"} if same_mac else {}
        barrier = threading.Barrier(2)
        results: dict[str, tuple[int, dict]] = {}

        def go(name: str, ip: str = ip, extra: dict = extra, barrier=barrier,
               results=results) -> None:
            addr = ip if not extra else f"198.18.148.{110 + (name == 'r2')}/24"
            barrier.wait()
            results[name] = connect(lab, name, addr, POD, **extra)

        threads = [threading.Thread(target=go, args=(n,)) for n in ("r1", "r2")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        statuses = sorted(s for s, _ in results.values())
        assert statuses == [201, 409], results
        winner = next(n for n, (s, _) in results.items() if s == 201)
        loser = next(n for n in results if n != winner)
        err = results[loser][1]["error"]
        assert err["code"] == ("mac_in_use" if same_mac else "ip_in_use"), err
        assert lab.container(winner).name in err["message"], err
        assert names[lab.container(winner).name] == winner
        assert not has_eth1(lab, loser)
        assert lab.api("GET", f"/v1/ports?container={lab.container(loser).name}")[1] == []
        assert_converged(lab, timeout=10)
        assert lab.api("DELETE", f"/v1/ports/{results[winner][1]['id']}")[0] == 204
    assert_converged(lab)


def test_one_hosts_underlay_down_leaves_the_others_alone(lab):
    a_b = continuous_ping(lab, lab.container("a"), "198.18.148.12")
    a_c = continuous_ping(lab, lab.container("a"), "198.18.148.13")
    time.sleep(1)
    lab.run("h3", ["ip", "link", "set", "eth0", "down"])
    time.sleep(10)
    lab.run("h3", ["ip", "link", "set", "eth0", "up"])
    up = time.monotonic()
    wait_for(lambda: pings(lab, lab.container("a"), "198.18.148.13"), 30,
             "h1 -> h3 traffic back after the underlay link came up", interval=0)
    back = time.monotonic() - up
    time.sleep(1)
    out_ab, out_ac = stop_ping(a_b), stop_ping(a_c)
    print(f"\nunderlay of h3 down 10 s: h1<->h2 {loss(out_ab)}% loss; "
          f"h1->h3 back {back:.1f} s after the link came up (longest gap "
          f"{longest_gap(out_ac):.1f} s)")
    assert loss(out_ab) == 0, out_ab
    assert 9 <= longest_gap(out_ac) < 40, out_ac
    assert pings(lab, lab.container("c"), "198.18.148.12")
    assert_converged(lab)


def test_controller_frozen_for_30s(lab):
    """SIGSTOP: the controller accepts TCP connections (the kernel does) but answers
    nothing. Traffic flows, a connect fails within seconds and leaves nothing, and
    everything converges once it runs again."""
    d = lab.add_container("h1", "d", kind="netns")
    hosts_before = {h["id"]: h for h in lab.api("GET", "/v1/hosts")[1]}
    pingers = [continuous_ping(lab, lab.container(s), ip, 0.2)
               for s, ip in (("a", "198.18.148.12"), ("b", "198.18.148.13"))]
    time.sleep(1)
    controller = lab.processes["controller"]
    controller.signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        t0 = time.monotonic()
        r = lab.loris("h1", "connect", d.name, "198.18.148.14/24", str(POD), timeout=120)
        took = time.monotonic() - t0
        print(f"\nconnect with the controller frozen: exit {r.returncode} after {took:.1f} s: "
              f"{r.stderr.strip()}")
        assert r.returncode == 1 and took < 10, (took, r.stdout, r.stderr)
        assert re.fullmatch(r"loris connect: controller .* (not answering|unreachable).*\n",
                            r.stderr), r.stderr
        time.sleep(max(0.0, 30 - (time.monotonic() - stopped)))
    finally:
        controller.signal(signal.SIGCONT)
    outs = [stop_ping(p) for p in pingers]
    for out in outs:
        assert loss(out) == 0, out
    # what the refused connect left: nothing, once the controller has caught up
    wait_meshed(lab)
    assert lab.api("GET", f"/v1/ports?container={d.name}")[1] == []
    assert not has_eth1(lab, "d")
    assert_converged(lab)
    # agents resynchronised: each applied its current desired version
    wait_for(lambda: all(h["actual_version"] == h["desired_version"]
                         for h in lab.api("GET", "/v1/hosts")[1]), 30, "agents in sync")
    assert all(h["openflow"]["bridges"][b]["since"] == hosts_before[h["id"]]["openflow"]
               ["bridges"][b]["since"] for h in lab.api("GET", "/v1/hosts")[1]
               for b in ("br-int", "br-tun")), "an OpenFlow session dropped"
    cli_connect(lab, "d", "198.18.148.14/24", POD)
    assert pings(lab, d, "198.18.148.13")
    assert_converged(lab)


def test_vswitchd_crash_heals_without_anyone_acting(lab):
    """SIGKILL ovs-vswitchd of h2 and start it again: the bridges come back from OVSDB with
    the same ofports, the controller reinstalls the flows when they reconnect, traffic
    resumes."""
    ofports_before = lab.ovs("h2").vsctl("--columns=name,ofport", "list", "Interface")
    flows_before = {b: loris_flows(lab, "h2", b) for b in ("br-int", "br-tun")}
    a_b = continuous_ping(lab, lab.container("a"), "198.18.148.12")
    time.sleep(1)
    killed = time.monotonic()
    lab.restart_vswitchd("h2")
    started = time.monotonic() - killed
    wait_for(lambda: pings(lab, lab.container("a"), "198.18.148.12")
             and pings(lab, lab.container("c"), "198.18.148.12"), 60,
             "traffic to h2 back", interval=0)
    back = time.monotonic() - killed
    time.sleep(1)
    out = stop_ping(a_b)
    print(f"\novs-vswitchd of h2 killed and restarted ({started:.1f} s): traffic back "
          f"{back:.1f} s after the kill; continuous ping's longest gap "
          f"{longest_gap(out):.1f} s")
    assert back < 30
    assert lab.ovs("h2").vsctl("--columns=name,ofport", "list", "Interface") == ofports_before
    wait_for(lambda: {b: loris_flows(lab, "h2", b) for b in flows_before}
             == flows_before, 10, "h2's flows exactly as before")  # fmt: skip
    assert_converged(lab)


@pytest.mark.parametrize("step", ["container_named", "veth_created", "ovs_attached"])
def test_agent_killed_while_wiring_finishes_after_restart(lab, step):
    """The agent is SIGKILLed in the middle of wiring a container (it pauses at `step`,
    see hostagent/faults.py) and restarted while the connect still waits: the connect
    succeeds and the container is fully wired."""
    name = f"k{step[0]}"
    k = lab.add_container("h1", name, kind="netns")
    ip = {"container_named": "198.18.148.20/24", "veth_created": "198.18.148.21/24",
          "ovs_attached": "198.18.148.22/24"}[step]
    port = kill_agent_at(lab, step, name, ip)
    lab.start_agent("h1")
    status, body = port["result"]()
    assert status == 201, body
    assert body["state"] == "active" and body["id"] == port["id"]
    assert pings(lab, k, "198.18.148.13")
    assert_converged(lab)


def test_agent_killed_while_wiring_and_back_too_late_rolls_back(lab):
    """Same, but the agent stays dead past the controller's wire timeout: the connect fails
    (503 agent_timeout) and the restarted agent removes the half-made veth. (The agent is
    counted away only after 30 polls here, so that the wire timeout, not the fail-fast of
    an away agent (test_safety.py), is what ends the connect.)"""
    lab.processes["controller"].stop()
    lab.start_controller(extra_env={"LORIS_WIRE_TIMEOUT": "4", "LORIS_AGENT_AWAY_POLLS": "30"})
    wait_meshed(lab, since=time.time() - 1)
    try:
        k = lab.add_container("h1", "kt", kind="netns")
        port = kill_agent_at(lab, "veth_created", "kt", "198.18.148.23/24")
        status, body = port["result"]()
        assert status == 503 and body["error"]["code"] == "agent_timeout", body
        assert f"lp{port['id']}" in lp_veths(lab, "h1")       # half made, nobody to undo it
        lab.start_agent("h1")
        assert_converged(lab)
        assert not has_eth1(lab, "kt")
        assert lab.api("GET", f"/v1/ports?container={k.name}")[1] == []
    finally:
        lab.processes["controller"].stop()
        lab.start_controller()
    wait_meshed(lab)


def kill_agent_at(lab: Lab, step: str, name: str, ip: str) -> dict:
    """Restart h1's agent paused at `step`, connect `name`, SIGKILL the agent once it
    paused there. Returns the port id and a function giving the connect's outcome."""
    lab.processes["agent-h1"].stop()
    seen = len(lab.processes["agent-h1"].log_text())      # the log is appended to
    agent = lab.start_agent("h1", extra_env={"LORIS_AGENT_PAUSE_AT": f"{step}:60"})
    wait_meshed(lab)
    outcome: dict = {}
    t = threading.Thread(target=lambda: outcome.update(r=connect(lab, name, ip, POD)))
    t.start()
    wait_for(lambda: f"at step {step}" in agent.log_text()[seen:], 30,
             f"the agent paused at {step}")
    agent.kill()
    ports = lab.api("GET", f"/v1/ports?container={lab.container(name).name}")[1]
    assert len(ports) == 1 and ports[0]["state"] in ("pending", "wired"), ports
    port_id = ports[0]["id"]
    assert f"lp{port_id}" in lp_veths(lab, "h1")
    if step == "ovs_attached":
        assert f"lp{port_id}" in lp_ovs_ports(lab, "h1")

    def result() -> tuple[int, dict]:
        t.join(120)
        return outcome["r"]

    return {"id": port_id, "result": result}


def test_controller_killed_during_a_burst_of_100_connects(lab):
    """SIGKILL the controller while 100 clients connect at once. After its restart every
    acknowledged (201) connect is there and wired; the others are either fully there (the
    process died after the commit, before the answer left) or gone without a trace; the
    database is consistent. One in ten connects into a pod nobody created (each its own):
    such a pod is there after the restart exactly when its connect is."""
    n = 100
    assert lab.api("POST", "/v1/pods", {"id": 21, "subnet": "198.18.149.0/24"})[0] == 201
    implicit = {i: 60 + i // 10 for i in range(n) if i % 10 == 9}

    def pod_of(i: int) -> int:
        return implicit.get(i, 21)

    names = [f"x{i}" for i in range(n)]
    for i, name in enumerate(names):
        lab.add_container(lab.hosts[i % 3].name, name, kind="netns")
    results: dict[int, tuple[int, dict] | str] = {}
    acked = threading.Semaphore(0)

    def go(i: int) -> None:
        try:
            results[i] = r = connect(lab, names[i], f"198.18.149.{i + 2}/24", pod_of(i),
                                     mac=f"02:fa:00:00:00:{i + 2:02x}")
            if r[0] == 201:
                acked.release()
        except LabError as e:
            results[i] = str(e)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for _ in range(25):                      # kill once a quarter was acknowledged
        assert acked.acquire(timeout=60), results
    kill_controller(lab)
    killed = time.monotonic() - started
    for t in threads:
        t.join(120)
    ok = {i for i, r in results.items() if isinstance(r, tuple) and r[0] == 201}
    refused = {i: r for i, r in results.items() if isinstance(r, tuple) and r[0] != 201}
    assert not refused, refused                # nothing but the crash went wrong
    restarted = time.time()
    lab.start_controller()
    wait_meshed(lab, since=restarted)
    assert_converged(lab)
    everywhere = {p["container"]: p for p in lab.api("GET", "/v1/ports")[1]
                  if p["pod"] in (21, *implicit.values())}
    ports = {c: p for c, p in everywhere.items() if p["pod"] == 21}
    for i in ok:
        p = everywhere.get(lab.container(names[i]).name)
        assert p is not None, f"acknowledged connect of {names[i]} lost: {results[i]}"
        assert p["id"] == results[i][1]["id"] and p["ofport"] == results[i][1]["ofport"]
    unacked_present = [i for i in set(range(n)) - ok
                       if lab.container(names[i]).name in everywhere]
    for i in set(range(n)) - ok - set(unacked_present):
        assert not has_eth1(lab, names[i]), names[i]
    # the unacknowledged ones that survived are the ones whose commit beat the kill
    # no debris: a pod made by a connect is there exactly when that connect is
    pods = {p["id"] for p in lab.api("GET", "/v1/pods")[1]}
    for i, pod in implicit.items():
        assert (pod in pods) == (lab.container(names[i]).name in everywhere), (i, pod, pods)
    kept = sum(pod in pods for pod in implicit.values())
    print(f"\ncontroller SIGKILLed {killed:.1f} s into 100 concurrent connects: {len(ok)} "
          f"acknowledged, all kept; of the {n - len(ok)} others {len(unacked_present)} "
          f"complete, {n - len(ok) - len(unacked_present)} gone without residue; of "
          f"{len(implicit)} pods made by connects {kept} kept (their connect is there), "
          f"{len(implicit) - kept} removed")
    sample = sorted(ports.values(), key=lambda p: p["id"])
    by_host = {h.name: [p for p in sample if p["host"] == h.name] for h in lab.hosts}
    for src_host, dst_host in (("h1", "h2"), ("h2", "h3"), ("h3", "h1")):
        for src, dst in zip(by_host[src_host][:2], by_host[dst_host][-2:], strict=False):
            src_c = next(c for c in lab.containers.values() if c.name == src["container"])
            assert pings(lab, src_c, dst["ip"].split("/")[0]), (src, dst)
    lab.add_container("h2", "y", kind="netns")
    status, body = connect(lab, "y", "198.18.149.200/24", 21)
    assert status == 201, body
