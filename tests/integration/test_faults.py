"""Fault tolerance: what Loris promises when a part crashes, hangs or loses its network
(docs/operations.md, "Failures and what Loris promises").

One 3-host lab for the module (plain network-namespace containers), its tests in order; each
leaves the lab converged for the next. Every test ends by checking that no part holds
anything the store does not know about (`assert_converged`): no veth, no OVS port, no flow
of a port that does not exist, and a consistent database.
"""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import threading
import time

import pytest
from helpers import cookie_of, loris_flows, loss, wait_all_synced, wait_for

from flows import Kind
from lab import Lab, LabError

pytestmark = [pytest.mark.integration]

POD = 20                       # the base pod: a (h1), b (h2), c (h3)
BASE = {"a": ("h1", "198.18.148.11/24"), "b": ("h2", "198.18.148.12/24"),
        "c": ("h3", "198.18.148.13/24")}
CONVERGE_S = 30                # how long the agents and switches get to converge


# ---------------------------------------------------------------------- shared checks
# (also used by test_soak.py)

def wait_meshed(lab: Lab, since: float = 0.0) -> list[dict]:
    """wait_all_synced, and every host reports a tunnel to every other one."""
    n = len(lab.hosts)

    def meshed() -> bool:
        status, hosts = lab.api("GET", "/v1/hosts")
        return status == 200 and len(hosts) == n and all(
            len(h["tunnels"]) == n - 1 and h["agent"]["polling"] for h in hosts)

    wait_all_synced(lab, since)
    wait_for(meshed, 30, "every host polling with a tunnel to every other one")
    return lab.api("GET", "/v1/hosts")[1]


def lp_veths(lab: Lab, host: str) -> set[str]:
    out = lab.run(host, ["ip", "-o", "link", "show", "type", "veth"]).stdout
    return {m for m in re.findall(r"^\d+: ([^:@]+)", out, re.M) if m.startswith("lp")}


def lp_ovs_ports(lab: Lab, host: str) -> dict[str, int | None]:
    """Container ports (lp<id>) in the host's OVS: name -> ofport, in one read."""
    out = lab.ovs(host).vsctl("--format=csv", "--no-headings", "--columns=name,ofport",
                              "list", "Interface")
    rows = [line.split(",") for line in out.split()]
    return {name: int(ofport) if ofport.lstrip("-").isdigit() else None
            for name, ofport in rows if name.startswith("lp")}


def db_problems(lab: Lab) -> list[str]:
    """Read the controller's SQLite file (read-only, beside the running controller):
    integrity, foreign keys, local VLANs exactly for the (host, pod) pairs with ports."""
    conn = sqlite3.connect(f"file:{lab.dir / 'loris.db'}?mode=ro", uri=True, timeout=10)
    try:
        problems = []
        integrity = conn.execute("PRAGMA integrity_check").fetchall()
        if integrity != [("ok",)]:
            problems.append(f"integrity_check: {integrity}")
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            problems.append("the store is not in WAL mode")
        dangling = conn.execute("PRAGMA foreign_key_check").fetchall()
        if dangling:
            problems.append(f"dangling rows: {dangling}")
        orphans = conn.execute("SELECT id FROM ports WHERE pod_id NOT IN (SELECT id FROM pods)"
                               " OR host_id NOT IN (SELECT id FROM hosts)").fetchall()
        if orphans:
            problems.append(f"ports without their pod or host: {orphans}")
        vlans = set(conn.execute("SELECT host_id, pod_id FROM local_vlans").fetchall())
        used = set(conn.execute("SELECT DISTINCT host_id, pod_id FROM ports").fetchall())
        if vlans != used:
            problems.append(f"local VLANs {sorted(vlans)} != (host, pod) with ports "
                            f"{sorted(used)}")
        return problems
    finally:
        conn.close()


def residue(lab: Lab) -> list[str]:
    """Everything on the hosts that the controller's store does not account for, and every
    port of the store that is not fully wired. Empty when converged."""
    status, ports = lab.api("GET", "/v1/ports")
    assert status == 200, ports
    problems = db_problems(lab)
    ids = {p["id"] for p in ports}
    macs = {p["mac"] for p in ports}
    by_host = {h.name: {p["id"]: p for p in ports if p["host"] == h.name} for h in lab.hosts}
    pods_on = {h: {p["pod"] for p in mine.values()} for h, mine in by_host.items()}
    for h in lab.hosts:
        mine = by_host[h.name]
        want = {f"lp{i}" for i in mine}
        veths, ovs_ports = lp_veths(lab, h.name), lp_ovs_ports(lab, h.name)
        if veths != want:
            problems.append(f"{h.name}: veths {sorted(veths)}, store wants {sorted(want)}")
        if set(ovs_ports) != want:
            problems.append(f"{h.name}: OVS ports {sorted(ovs_ports)}, store wants "
                            f"{sorted(want)}")
        port_flows: set[int] = set()
        for bridge in ("br-int", "br-tun"):
            for f in loris_flows(lab, h.name, bridge):
                kind, obj, _ = cookie_of(f) or (None, None, None)
                if kind in (Kind.PORT, Kind.MEMBER) and obj not in ids:
                    problems.append(f"{h.name} {bridge}: flow of port {obj}, which does not "
                                    f"exist: {f}")
                if kind == Kind.POD and obj not in pods_on[h.name]:
                    problems.append(f"{h.name} {bridge}: flow of pod {obj}, which has no port "
                                    f"on {h.name}: {f}")
                stray = {m for m in re.findall(r"02(?::[0-9a-f]{2}){5}", f) if m not in macs}
                if stray:
                    problems.append(f"{h.name} {bridge}: flow with unknown MAC {stray}: {f}")
                if kind == Kind.PORT:
                    port_flows.add(obj)
        for i, p in mine.items():
            if p["state"] != "active" or p["error"]:
                problems.append(f"port {i} is {p['state']} {p['error'] or ''}")
            elif ovs_ports.get(f"lp{i}") != p["ofport"]:
                problems.append(f"port {i}: ofport {p['ofport']} in the store, "
                                f"{ovs_ports.get(f'lp{i}')} on {h.name}")
            elif i not in port_flows:
                problems.append(f"port {i} has no flows on {h.name}")
    return problems


def assert_converged(lab: Lab, timeout: float = CONVERGE_S) -> None:
    """Within `timeout`, the hosts hold exactly what the store says, fully wired."""
    deadline = time.monotonic() + timeout
    while True:
        problems = residue(lab)
        if not problems:
            return
        assert time.monotonic() < deadline, \
            f"not converged within {timeout:g}s:\n" + "\n".join(problems[:30])
        time.sleep(0.5)


def pings(lab: Lab, src, dst_ip: str, count: int = 1) -> bool:
    return lab.run(src, ["ping", "-c", str(count), "-i", "0.2", "-W", "1", dst_ip],
                   check=False).returncode == 0


def continuous_ping(lab: Lab, src, dst_ip: str, interval: float = 0.1) -> subprocess.Popen:
    """The host's iputils ping in the container's namespace until SIGINT; -D timestamps."""
    return subprocess.Popen(lab.enter(src) + ["ping", "-D", "-i", str(interval), "-W", "1",
                                              dst_ip],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop_ping(ping: subprocess.Popen) -> str:
    ping.send_signal(signal.SIGINT)
    out, _ = ping.communicate(timeout=10)
    return out


def longest_gap(output: str) -> float:
    """The longest time without a reply, from ping -D's timestamps."""
    stamps = [float(t) for t in re.findall(r"^\[(\d+\.\d+)\].*bytes from", output, re.M)]
    return max((b - a for a, b in zip(stamps, stamps[1:], strict=False)), default=0.0)


def connect(lab: Lab, name: str, ip: str, pod: int, timeout: float = 90,
            **extra) -> tuple[int, dict]:
    c = lab.container(name)
    return lab.api("POST", "/v1/ports", {"host": c.host.name, "container": c.name, "ip": ip,
                                         "pod": pod, **extra}, timeout=timeout)


def has_eth1(lab: Lab, name: str) -> bool:
    return lab.run(lab.container(name), ["ip", "link", "show", "eth1"],
                   check=False).returncode == 0


def kill_controller(lab: Lab) -> None:
    proc = lab.processes["controller"]
    proc.signal(signal.SIGKILL)
    proc.wait(10)


# ---------------------------------------------------------------------- the lab

@pytest.fixture(scope="module")
def lab():
    with Lab(hosts=3, tunnel="vxlan", docker=False) as lab:
        lab.start_controller()
        for h in lab.hosts:
            lab.start_agent(h)
        wait_meshed(lab)
        assert lab.api("POST", "/v1/pods", {"id": POD, "subnet": "198.18.148.0/24"})[0] == 201
        for name, (host, ip) in BASE.items():
            lab.add_container(host, name, kind="netns")
            status, body = connect(lab, name, ip, POD)
            assert status == 201, body
        yield lab


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
    r = lab.loris("h1", "connect", d.name, "198.18.148.14/24", str(POD))
    assert r.returncode == 0, r.stderr
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
    (503 agent_timeout) and the restarted agent removes the half-made veth."""
    lab.processes["controller"].stop()
    lab.start_controller(extra_env={"LORIS_WIRE_TIMEOUT": "4"})
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
    database is consistent."""
    n = 100
    assert lab.api("POST", "/v1/pods", {"id": 21, "subnet": "198.18.149.0/24"})[0] == 201
    names = [f"x{i}" for i in range(n)]
    for i, name in enumerate(names):
        lab.add_container(lab.hosts[i % 3].name, name, kind="netns")
    results: dict[int, tuple[int, dict] | str] = {}
    acked = threading.Semaphore(0)

    def go(i: int) -> None:
        try:
            results[i] = r = connect(lab, names[i], f"198.18.149.{i + 2}/24", 21,
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
    ports = {p["container"]: p for p in lab.api("GET", "/v1/ports?pod=21")[1]}
    for i in ok:
        p = ports.get(lab.container(names[i]).name)
        assert p is not None, f"acknowledged connect of {names[i]} lost: {results[i]}"
        assert p["id"] == results[i][1]["id"] and p["ofport"] == results[i][1]["ofport"]
    unacked_present = [i for i in set(range(n)) - ok if lab.container(names[i]).name in ports]
    for i in set(range(n)) - ok - set(unacked_present):
        assert not has_eth1(lab, names[i]), names[i]
    # the unacknowledged ones that survived are the ones whose commit beat the kill
    print(f"\ncontroller SIGKILLed {killed:.1f} s into 100 concurrent connects: {len(ok)} "
          f"acknowledged, all kept; of the {n - len(ok)} others {len(unacked_present)} "
          f"complete, {n - len(ok) - len(unacked_present)} gone without residue")
    sample = sorted(ports.values(), key=lambda p: p["id"])
    by_host = {h.name: [p for p in sample if p["host"] == h.name] for h in lab.hosts}
    for src_host, dst_host in (("h1", "h2"), ("h2", "h3"), ("h3", "h1")):
        for src, dst in zip(by_host[src_host][:2], by_host[dst_host][-2:], strict=False):
            src_c = next(c for c in lab.containers.values() if c.name == src["container"])
            assert pings(lab, src_c, dst["ip"].split("/")[0]), (src, dst)
    lab.add_container("h2", "y", kind="netns")
    status, body = connect(lab, "y", "198.18.149.200/24", 21)
    assert status == 201, body
