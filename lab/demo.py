"""The README's demo: Loris on three simulated hosts with Docker containers in two pods.

Run as root with ``./dev demo`` (or ``python -m lab.demo``). It builds a lab (each host with
its own dockerd, served the ``loris`` plugin by its agent), starts the controller and one
agent per host, creates the pods, and shows the Docker way first: every pod is a Docker
network on every host, and ``docker run --network web`` on any host reaches the pod. Then it
connects containers started with ``--network none`` with the ``loris`` CLI, and prints who
reaches whom, the evidence that ARP never crosses the underlay and that pods are
isolated, and how to try commands by hand. ``--keep`` leaves everything up until Ctrl-C.
"""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from lab import Lab

# (container, host, address or "dhcp", pod); pods 7 and 8 have subnets, pod 0 is the global pod.
PODS = {7: ("web", "198.18.135.0/24"), 8: ("db", "198.18.136.0/24")}
MEMBERS = [
    ("web1", "h1", "198.18.135.11/24", 7),
    ("web2", "h2", "198.18.135.12/24", 7),
    ("web3", "h3", "dhcp", 7),
    ("db1", "h1", "198.18.136.21/24", 8),
    ("db2", "h2", "198.18.136.22/24", 8),
    ("misc3", "h3", "198.18.140.31/24", 0),
]


@dataclass
class Member:
    short: str
    host: str
    pod: int
    name: str = ""
    ip: str = ""
    mac: str = ""


def say(text: str = "") -> None:
    print(text, flush=True)


def step(text: str) -> None:
    say(f"\n\033[1m== {text}\033[0m")


def loris(lab: Lab, host: str, *args: str) -> dict | list:
    """Run the loris CLI on a host with --json; fail loudly with its one-line reason."""
    proc = lab.loris(host, *args, "--json")
    if proc.returncode != 0:
        raise SystemExit(f"loris {' '.join(args)} on {host} failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout) if proc.stdout.strip() else {}


def ping(lab: Lab, src: Member, dst: Member) -> bool:
    container = lab.container(src.short)
    proc = container.exec(["busybox", "ping", "-c", "1", "-W", "1", dst.ip], check=False)
    return proc.returncode == 0


def reachability(lab: Lab, members: list[Member]) -> dict[tuple[str, str], bool]:
    pairs = [(a, b) for a, b in itertools.permutations(members, 2)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda ab: ping(lab, *ab), pairs))
    return {(a.short, b.short): ok for (a, b), ok in zip(pairs, results, strict=True)}


def print_matrix(members: list[Member], reach: dict[tuple[str, str], bool]) -> None:
    labels = [f"{m.short}({m.pod})" for m in members]
    width = max(len(label) for label in labels) + 1
    say(" " * width + " ".join(f"{label:>{width}}" for label in labels))
    for m, label in zip(members, labels, strict=True):
        cells = []
        for other in members:
            if other is m:
                cells.append(f"{'-':>{width}}")
            else:
                cells.append(f"{'yes' if reach[(m.short, other.short)] else 'no':>{width}}")
        say(f"{label:<{width}}" + " ".join(cells))


def run_demo(lab: Lab) -> int:
    step(f"Lab {lab.prefix}: {len(lab.hosts)} hosts over {lab.tunnel.upper()}, one namespace "
         "and one Open vSwitch each")
    for h in lab.hosts:
        say(f"  {h.name}: tunnel endpoint {h.tunnel_ip}, management {h.mgmt_ip}")

    step("Controller (osken-manager controller/loris_app.py) and one loris-hostagent per host")
    lab.start_controller()
    for h in lab.hosts:
        lab.start_agent(h)
    started = time.monotonic()
    cluster = loris(lab, "h1", "cluster", *(h.tunnel_ip for h in lab.hosts))
    say(f"  loris cluster: {len(lab.hosts)} hosts joined and fully meshed in "
        f"{time.monotonic() - started:.1f}s")
    del cluster

    step("Pods: 7 and 8 with subnets (REST), 0 is the global pod")
    for pod_id, (name, subnet) in PODS.items():
        status, body = lab.api("POST", "/v1/pods", {"id": pod_id, "name": name, "subnet": subnet})
        if status not in (200, 201):
            raise SystemExit(f"creating pod {pod_id} failed: {body}")
        say(f"  POST /v1/pods {{id: {pod_id}, name: {name}, subnet: {subnet}}} -> {status}")

    if not docker_way(lab):
        return 1

    step("Docker containers started with --network none, connected with "
         "`loris connect <container> <ip/mask|dhcp> <pod>`")
    members = []
    for short, host, address, pod in MEMBERS:
        container = lab.add_container(host, short)
        t0 = time.monotonic()
        port = loris(lab, host, "connect", container.name, address, str(pod))
        member = Member(short, host, pod, container.name, port["ip"].split("/")[0], port["mac"])
        members.append(member)
        say(f"  {short:<6} on {host}: pod {pod}, {port['ip']:<18} {port['mac']}  "
            f"({'DHCP, ' if address == 'dhcp' else ''}{time.monotonic() - t0:.2f}s)")

    step("Reachability (ping from row to column; pod in brackets)")
    underlay = lab.capture("ul", "br0", "")
    reach = reachability(lab, members)
    capture = underlay.stop()
    print_matrix(members, reach)
    wrong = [(a, b) for (a, b), ok in reach.items()
             if ok != (next(m for m in members if m.short == a).pod
                       == next(m for m in members if m.short == b).pod)]

    step("ARP: answered on each host by the controller's ARP-responder flows")
    arp_on_wire = [line for line in capture.lines if "ARP" in line.split(" | ")[-1]]
    say(f"  packets on the underlay during the pings: {capture.count}, "
        f"encapsulated ARP among them: {len(arp_on_wire)}")
    for h in lab.hosts:
        hits = sum(_n_packets(line) for line in lab.ovs(h).dump_flows("br-int")
                   if "arp_op=1" in line and "IN_PORT" in line.upper())
        say(f"  {h.name}: ARP requests answered by br-int's responder flows: {hits}")

    step("Isolation: every other pod sends frames straight to db1's MAC; a capture on db1")
    db1 = next(m for m in members if m.short == "db1")
    outsiders = [m for m in members if m.pod != db1.pod]
    # Pods have their own subnets, so a plain ping would not even leave the container: give
    # each outsider an on-link route and db1's MAC, so it really sends unicast frames.
    forced = f"route replace {db1.ip}/32 dev eth1\n" \
             f"neigh replace {db1.ip} lladdr {db1.mac} dev eth1 nud permanent\n"
    for m in outsiders:
        lab.run(lab.container(m.short), ["ip", "-batch", "-"], input=forced)
    cap = lab.capture(lab.container("db1"), "eth1", "icmp")
    for m in outsiders:
        ping(lab, m, db1)
    seen = cap.stop()
    for m in outsiders:
        lab.run(lab.container(m.short), ["ip", "route", "del", f"{db1.ip}/32", "dev", "eth1"])
        lab.run(lab.container(m.short), ["ip", "neigh", "del", db1.ip, "dev", "eth1"])
    say(f"  {len(outsiders)} containers of other pods sent ICMP to {db1.ip} ({db1.mac}); "
        f"packets that reached db1: {seen.count}")

    step("Result")
    if wrong or arp_on_wire or seen.count:
        say(f"  FAILED: unexpected reachability {wrong}, ARP on the wire {len(arp_on_wire)}, "
            f"packets crossing pods {seen.count}")
        return 1
    say("  every pod reaches itself, nothing crosses pods, no ARP broadcast on the underlay")
    return 0


def docker_way(lab: Lab) -> bool:
    """Pod web as a Docker network on every host, and `docker run --network web`."""
    step("The Docker way: every pod is a Docker network on every host (the agents make them)")
    deadline = time.monotonic() + 30
    for h in lab.hosts:
        while "web" not in lab.docker_at(h, "network", "ls", "--filter", "driver=loris",
                                         "--format", "{{.Name}}").stdout.split():
            if time.monotonic() > deadline:
                say(f"  FAILED: no Docker network web on {h.name}")
                return False
            time.sleep(0.2)
        say(f"  {h.name}: docker network ls --filter driver=loris -> web, db")
    started = []
    for short, host, extra in (("dweb1", "h1", ()), ("dweb2", "h2", ()),
                               ("dweb3", "h3", ("--ip", "198.18.135.50"))):
        t0 = time.monotonic()
        lab.docker_at(host, "run", "-d", "--network", "web", "--name", short, *extra,
                      "loris-test:busybox", "sleep", "1d")
        took = time.monotonic() - t0
        ip = lab.docker_at(host, "exec", short, "ip", "-4", "-o", "addr", "show", "eth0"
                           ).stdout.split()[3]
        started.append((short, host, ip.split("/")[0]))
        say(f"  {host}: docker run -d --network web {' '.join(extra) + ' ' if extra else ''}"
            f"--name {short} ... -> {ip} ({took:.2f}s, reachable when it returns)")
    ok = True
    for (a, ha, _), (b, _, ip) in itertools.permutations(started, 2):
        reached = lab.docker_at(ha, "exec", a, "ping", "-c", "1", "-W", "1", ip,
                                check=False).returncode == 0
        ok &= reached
        say(f"  {a} -> {b} ({ip}): {'yes' if reached else 'NO'}")
    return ok


def _n_packets(flow_line: str) -> int:
    for part in flow_line.replace(",", " ").split():
        if part.startswith("n_packets="):
            return int(part.split("=", 1)[1])
    return 0


def print_try_it(lab: Lab) -> None:
    env = " ".join(f"{k}={v}" for k, v in lab.loris_env("h1").items())
    step("Try it by hand (in another shell)")
    say(f"  ip netns exec {lab.host('h1').netns} env {env} loris status")
    say(f"  ip netns exec {lab.host('h1').netns} env {env} loris ports")
    say(f"  docker -H {lab.dockerd('h1').url} exec -it dweb1 sh     # then: ping "
        "198.18.135.50")
    say(f"  docker -H {lab.dockerd('h2').url} run --rm -it --network web loris-test:busybox")
    say(f"  docker exec -it {lab.container('web1').name} sh     # then: ping "
        "198.18.135.12")
    say(f"  OVS_RUNDIR={lab.host('h1').rundir} ovs-ofctl -O OpenFlow13 dump-flows br-int")
    say(f"  logs: {lab.dir}/logs/")
    say("  Ctrl-C here tears everything down (or, from elsewhere: ./dev down).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loris-demo", description=__doc__.split("\n")[0])
    parser.add_argument("--tunnel", choices=("vxlan", "gre"), default="vxlan")
    parser.add_argument("--keep", action="store_true",
                        help="leave the lab up after the demo until Ctrl-C")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with Lab(hosts=3, tunnel=args.tunnel, host_dockerd=True) as lab:
        code = run_demo(lab)
        say(f"\n(demo ran in {time.monotonic() - started:.0f}s)")
        if args.keep:
            print_try_it(lab)
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            try:
                stop.wait()
            except KeyboardInterrupt:
                pass
        else:
            say("Tearing the lab down (run `./dev demo --keep` to explore it by hand).")
    return code


if __name__ == "__main__":
    sys.exit(main())
