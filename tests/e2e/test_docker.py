"""Docker-native networking end to end: containers started only with Docker commands.

Three simulated hosts, each with its own dockerd served the `loris` plugin by its agent
(lab/hostdocker.py). Pods red and blue are created once (`loris pod create`, REST); every host's
agent makes them Docker networks, and `docker run --network red` on any host does the rest.
The tests share one lab per tunnel type (VXLAN, then GRE) and build on each other, in
order.
"""

from __future__ import annotations

import ipaddress
import re
import select
import signal
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import wait_for

from flows import contract
from lab import Lab
from lab.containers import KEEP_ALIVE
from lab.hostdocker import HOST_NICS
from lab.naming import IMAGE

pytestmark = [pytest.mark.integration, pytest.mark.docker,
              pytest.mark.parametrize("make_cluster", ["vxlan", "gre"], indirect=True)]

RED, BLUE = 7, 8
RED_NET, BLUE_NET = "198.18.135.0/24", "198.18.136.0/24"
R3_IP, B1_IP, B2_IP = "198.18.135.50", "198.18.136.60", "198.18.136.61"
GREEN_NET = "198.18.141.0/24"
RB1_IP = "198.18.135.90"


@pytest.fixture(scope="module")
def lab(make_cluster) -> Lab:
    lab = make_cluster(hosts=3, host_dockerd=True)
    lab.loris("h1", "pod", "create", "red", "--subnet", RED_NET, "--id", str(RED), check=True)
    status, body = lab.api("POST", "/v1/pods", {"id": BLUE, "name": "blue", "subnet": BLUE_NET})
    assert status == 201, body
    return lab


def run(lab: Lab, host: str, name: str, network: str, *options: str, check: bool = True):
    return lab.docker_at(host, "run", "-d", "--network", network, "--name", name, *options,
                         IMAGE, *KEEP_ALIVE, check=check)


def addresses(lab: Lab, host: str, name: str, ifname: str = "eth0") -> list[str]:
    out = lab.docker_at(host, "exec", name, "ip", "-4", "-o", "addr", "show", "dev", ifname,
                        check=False).stdout
    found = []
    for line in out.splitlines():
        words = line.split()
        if "inet" in words:
            found.append(words[words.index("inet") + 1].split("/")[0])
    return found


def reaches(lab: Lab, host: str, name: str, ip: str, wait: int = 2) -> bool:
    return lab.docker_at(host, "exec", name, "ping", "-c", "1", "-W", str(wait), ip,
                         check=False).returncode == 0


def ports(lab: Lab, **query: object) -> list[dict]:
    q = "&".join(f"{k}={v}" for k, v in query.items())
    status, body = lab.api("GET", "/v1/ports" + (f"?{q}" if q else ""))
    assert status == 200, body
    return body


def mac_of(lab: Lab, host: str, name: str, ifname: str = "eth0") -> str:
    return lab.docker_at(host, "exec", name, "cat",
                         f"/sys/class/net/{ifname}/address").stdout.strip()


def plugin_answers(lab: Lab, host: str) -> bool:
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.connect(str(lab.dockerd(host).plugin_socket()))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def host_veths(lab: Lab, host: str) -> set[str]:
    out = lab.run(host, ["ip", "-o", "link", "show", "type", "veth"]).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def networks(lab: Lab, host: str) -> set[str]:
    return set(lab.docker_at(host, "network", "ls", "--filter", "driver=loris",
                             "--format", "{{.Name}}").stdout.split())


def test_a_pod_is_a_docker_network_on_every_host(lab):
    for h in lab.hosts:
        wait_for(lambda h=h: {"red", "blue"} <= networks(lab, h.name), 30,
                 f"networks red and blue on {h.name}")


def test_docker_run_reaches_its_pod_across_hosts_and_no_other(lab):
    run(lab, "h1", "r1", "red", "--cap-add", "NET_ADMIN")
    run(lab, "h2", "r2", "red")
    r1, r2 = addresses(lab, "h1", "r1")[0], addresses(lab, "h2", "r2")[0]
    assert reaches(lab, "h2", "r2", r1)          # at once: docker run returned when wired
    run(lab, "h3", "r3", "red", "--ip", R3_IP, "--restart", "always")
    assert addresses(lab, "h3", "r3") == [R3_IP]
    run(lab, "h1", "b1", "blue", "--ip", B1_IP)
    run(lab, "h3", "b2", "blue", "--ip", B2_IP)
    assert reaches(lab, "h1", "r1", R3_IP) and reaches(lab, "h3", "r3", r2)
    assert reaches(lab, "h1", "b1", B2_IP)
    # isolation: even with a route, red never reaches blue (same host or not)
    lab.docker_at("h1", "exec", "r1", "ip", "route", "add", BLUE_NET, "dev", "eth0")
    assert not reaches(lab, "h1", "r1", B1_IP, wait=1)
    assert not reaches(lab, "h1", "r1", B2_IP, wait=1)
    mtu = lab.docker_at("h1", "exec", "r1", "cat", "/sys/class/net/eth0/mtu").stdout.strip()
    assert int(mtu) == lab.inner_mtu
    red = ports(lab, pod=RED)
    assert len(red) == 3 and {p["state"] for p in red} == {"active"}
    assert {p["ip"].split("/")[0] for p in red} == {r1, r2, R3_IP}
    # each container's MAC is the one the controller chose: its port row holds it
    for host, name in (("h1", "r1"), ("h2", "r2"), ("h3", "r3")):
        port = next(p for p in ports(lab, pod=RED, host=host))
        assert mac_of(lab, host, name) == port["mac"], (name, port)


def test_loris_ports_shows_docker_started_containers_by_name(lab):
    def names() -> set[str]:
        return {(p.get("docker") or {}).get("container") for p in ports(lab, pod=RED)}

    wait_for(lambda: names() == {"r1", "r2", "r3"}, 30, "the red ports named r1, r2, r3")
    table = lab.loris("h2", "ports", check=True).stdout
    assert all(name in table for name in ("r1", "r2", "r3", "b1", "b2")), table


def test_an_address_taken_on_another_host_is_refused_naming_its_holder(lab):
    refused = run(lab, "h2", "dup", "red", "--ip", R3_IP, check=False)
    assert refused.returncode != 0
    assert R3_IP in refused.stderr and "already used by container r3 on host h3" \
        in refused.stderr, refused.stderr
    lab.docker_at("h2", "rm", "-f", "dup")
    # the same --ip on two hosts at once: one wins, the other is told who has it
    with ThreadPoolExecutor(2) as pool:
        races = list(pool.map(lambda h: run(lab, h, "race", "red", "--ip", "198.18.135.80",
                                            check=False), ("h1", "h2")))
    assert sorted(r.returncode == 0 for r in races) == [False, True], races
    lost = next(r for r in races if r.returncode != 0)
    assert "198.18.135.80 already used by" in lost.stderr, lost.stderr
    for h in ("h1", "h2"):
        lab.docker_at(h, "rm", "-f", "race")
    outside = run(lab, "h2", "out", "red", "--ip", "198.18.136.5", check=False)
    assert outside.returncode != 0
    lab.docker_at("h2", "rm", "-f", "out")
    assert len(ports(lab, pod=RED)) == 3


def test_a_mac_address_given_to_docker_is_kept(lab):
    mac = "02:42:de:ad:be:ef"
    lab.dockerd("h2").client.containers.run(IMAGE, KEEP_ALIVE, name="m1", detach=True,
                                            network="red", mac_address=mac)
    link = lab.docker_at("h2", "exec", "m1", "cat", "/sys/class/net/eth0/address").stdout
    assert link.strip() == mac
    assert mac in {p["mac"] for p in ports(lab, pod=RED, host="h2")}
    assert reaches(lab, "h2", "m1", R3_IP)
    lab.docker_at("h2", "rm", "-f", "m1")


def test_a_network_without_loris_ipam_is_refused(lab):
    made = lab.docker_at("h1", "network", "create", "-d", "loris", "--subnet",
                         "198.18.140.0/24", "plain", check=False)
    assert made.returncode != 0 and "--ipam-driver loris" in made.stderr, made.stderr


def test_a_network_made_by_hand_maps_to_its_pod(lab):
    lab.docker_at("h2", "network", "create", "-d", "loris", "--ipam-driver", "loris",
                  "--subnet", RED_NET, "-o", "loris.pod=red", "--ipam-opt", "loris.pod=red",
                  "handmade")
    # a fresh address: m1's, freed above, would come with another MAC than the one r3
    # still has in its ARP cache (docs/docker.md, "Limits")
    run(lab, "h2", "hm", "handmade", "--ip", "198.18.135.70")
    assert reaches(lab, "h2", "hm", R3_IP)            # pod red, across hosts
    assert len(ports(lab, pod=RED)) == 4
    lab.docker_at("h2", "rm", "-f", "hm")
    lab.docker_at("h2", "network", "rm", "handmade")
    assert len(ports(lab, pod=RED)) == 3


def test_a_network_made_by_hand_for_a_new_pod_makes_the_pod(lab):
    def green_pods() -> list[dict]:
        status, body = lab.api("GET", "/v1/pods")
        assert status == 200, body
        return [p for p in body if p["name"] == "green"]

    # the same network by hand on two hosts at once: one pod. A host whose agent made the
    # network first (the pod came from the other) tells the user it exists
    with ThreadPoolExecutor(2) as pool:
        made = list(pool.map(lambda h: lab.docker_at(
            h, "network", "create", "-d", "loris", "--ipam-driver", "loris", "--subnet",
            GREEN_NET, "green", check=False), ("h1", "h2")))
    assert made[0].returncode == 0 or made[1].returncode == 0, made
    assert all(r.returncode == 0 or "already exists" in r.stderr for r in made), made
    wait_for(lambda: len(green_pods()) == 1, 30, "pod green")
    assert green_pods()[0]["subnet"] == GREEN_NET
    run(lab, "h1", "g1", "green")
    wait_for(lambda: "green" in networks(lab, "h3"), 30, "h3's agent making network green")
    run(lab, "h3", "g3", "green")
    assert reaches(lab, "h3", "g3", addresses(lab, "h1", "g1")[0])
    assert len(green_pods()) == 1
    # a pod without a subnet cannot be one: refused when a container starts, naming both
    status, body = lab.api("POST", "/v1/pods", {"name": "gray"})
    assert status == 201, body
    lab.docker_at("h2", "network", "create", "-d", "loris", "--ipam-driver", "loris",
                  "--subnet", "198.18.142.0/24", "gray")
    refused = run(lab, "h2", "gr", "gray", check=False)
    assert refused.returncode != 0 and "198.18.142.0/24" in refused.stderr \
        and "has subnet none" in refused.stderr, refused.stderr
    lab.docker_at("h2", "rm", "-f", "gr")
    lab.docker_at("h2", "network", "rm", "gray")
    # a network removed on one host: its pod stays (a Docker network on the others)
    for h, name in (("h1", "g1"), ("h3", "g3")):
        lab.docker_at(h, "rm", "-f", name)
    lab.docker_at("h1", "network", "rm", "green")
    assert len(green_pods()) == 1 and ports(lab, pod=green_pods()[0]["id"]) == []


def test_connect_and_disconnect_a_second_network(lab):
    lab.docker_at("h1", "exec", "r1", "ip", "route", "del", BLUE_NET, "dev", "eth0",
                  check=False)               # the isolation test's route
    lab.docker_at("h1", "network", "connect", "blue", "r1")
    eth1 = addresses(lab, "h1", "r1", "eth1")
    assert len(eth1) == 1 and ipaddress.ip_address(eth1[0]) in ipaddress.ip_network(BLUE_NET)
    assert reaches(lab, "h1", "r1", B2_IP)
    assert len(ports(lab, pod=BLUE)) == 3
    lab.docker_at("h1", "network", "disconnect", "blue", "r1")
    assert addresses(lab, "h1", "r1", "eth1") == []
    assert len(ports(lab, pod=BLUE)) == 2
    assert reaches(lab, "h1", "r1", R3_IP)


def test_restart_and_removal_leave_nothing_behind(lab):
    before = {p["id"] for p in ports(lab, host="h2")}
    mac, address = mac_of(lab, "h2", "r2"), addresses(lab, "h2", "r2")[0]
    lab.docker_at("h2", "restart", "-t", "2", "r2")
    r2 = addresses(lab, "h2", "r2")[0]
    assert reaches(lab, "h1", "r1", r2)
    after = ports(lab, host="h2")
    assert len(after) == 1 and after[0]["id"] not in before     # a new endpoint, old one gone
    # back with its address (the lowest free one again), back with its MAC (the
    # controller's), so r1's ARP cache still holds
    assert mac_of(lab, "h2", "r2") == after[0]["mac"]
    assert r2 != address or after[0]["mac"] == mac
    lab.docker_at("h2", "rm", "-f", "r2")
    assert ports(lab, host="h2") == []
    assert not {v for v in host_veths(lab, "h2") if v.startswith(("lp", "lc"))}
    # its address is free again, on another host
    run(lab, "h1", "r4", "red", "--ip", r2)
    assert reaches(lab, "h1", "r4", R3_IP)


def test_dockerd_restart_brings_back_restart_always_containers(lab):
    mac = mac_of(lab, "h3", "r3")
    lab.stop_dockerd("h3", signal.SIGTERM)
    lab.start_dockerd("h3")
    wait_for(lambda: R3_IP in addresses(lab, "h3", "r3"), 60, "r3 back with its address")
    wait_for(lambda: reaches(lab, "h1", "r1", R3_IP, wait=1), 30, "r1 reaching r3 again")
    h3 = ports(lab, host="h3", pod=RED)
    assert [p["ip"].split("/")[0] for p in h3] == [R3_IP]       # nothing leaked
    assert mac_of(lab, "h3", "r3") == h3[0]["mac"] == mac        # a new endpoint, its MAC


def test_restart_always_containers_come_back_when_the_plugin_starts_after_dockerd(lab):
    """dockerd up before the agent (no ordering between them): the plugin's socket is held
    as systemd's loris-docker.socket holds it (the lab plays systemd), so dockerd's calls
    wait in its queue for the agent instead of failing after Docker's 15 s of retries."""
    run(lab, "h2", "ra2", "red", "--restart", "always")
    lab.stop_dockerd("h2", signal.SIGTERM)          # the plugin up: endpoints released
    lab.processes["agent-h2"].stop()
    listener = lab.dockerd("h2").hold_plugin_socket()
    try:
        lab.start_dockerd("h2", wait=False)      # restores ra2; its API waits for that
        readable, _, _ = select.select([listener], [], [], 60)
        assert readable, "dockerd never called the plugin"    # a call waits in the queue
        lab.start_agent("h2", plugin_listener=listener)
    finally:
        listener.close()                         # the agent has it now
    lab.wait_dockerd("h2")
    wait_for(lambda: addresses(lab, "h2", "ra2") != [], 60, "ra2 back with an address")
    address = addresses(lab, "h2", "ra2")[0]
    wait_for(lambda: reaches(lab, "h1", "r1", address, wait=1), 30, "r1 reaching ra2")
    h2 = ports(lab, host="h2")
    assert [p["ip"].split("/")[0] for p in h2] == [address]          # nothing leaked
    assert mac_of(lab, "h2", "ra2") == h2[0]["mac"]
    lab.docker_at("h2", "rm", "-f", "ra2")
    wait_for(lambda: ports(lab, host="h2") == [], 30, "ra2's port gone")


def test_agent_restart_keeps_containers_reachable_and_removable(lab):
    macs = {p["id"]: p["mac"] for p in ports(lab, host="h1")}
    lab.processes["agent-h1"].stop()
    assert reaches(lab, "h3", "r3", addresses(lab, "h1", "r1")[0])   # the datapath stays
    lab.start_agent("h1")
    wait_for(lambda: plugin_answers(lab, "h1"), 30, "h1's plugin socket")
    lab.docker_at("h1", "rm", "-f", "r4")             # the plugin still knows its endpoint
    wait_for(lambda: "r4" not in lab.docker_at("h1", "ps", "-a", "--format",
                                               "{{.Names}}").stdout, 30, "r4 removed")
    assert len(ports(lab, host="h1", pod=RED)) == 1
    kept = ports(lab, host="h1")
    assert kept and all(macs[p["id"]] == p["mac"] for p in kept)       # nothing re-chosen
    assert mac_of(lab, "h1", "r1") == next(p["mac"] for p in kept if p["pod"] == RED)


def test_a_host_reboot_brings_back_restart_always_containers_and_leaks_nothing(lab):
    run(lab, "h1", "rb1", "red", "--restart", "always", "--ip", RB1_IP)
    run(lab, "h1", "rb2", "blue", "--restart", "always", "--cap-add", "NET_ADMIN")
    run(lab, "h2", "r5", "red")
    run(lab, "h2", "b5", "blue")
    r5, b5 = addresses(lab, "h2", "r5")[0], addresses(lab, "h2", "b5")[0]
    mac = mac_of(lab, "h1", "rb1")
    lab.reboot_host("h1")
    wait_for(lambda: addresses(lab, "h1", "rb1") == [RB1_IP]
             and addresses(lab, "h1", "rb2") != [], 90, "rb1 and rb2 back with addresses")
    wait_for(lambda: reaches(lab, "h2", "r5", RB1_IP, wait=1), 30, "r5 (h2) reaching rb1")
    assert reaches(lab, "h1", "rb2", b5)                 # its pod, on h2
    # isolation holds: even with a route, blue never reaches red, same host or not
    lab.docker_at("h1", "exec", "rb2", "ip", "route", "add", RED_NET, "dev", "eth0")
    assert not reaches(lab, "h1", "rb2", RB1_IP, wait=1)
    assert not reaches(lab, "h1", "rb2", r5, wait=1)
    # nothing leaked: h1's ports are its two containers', each one veth on br-int, and
    # br-int's flows match no port but those
    h1 = ports(lab, host="h1")
    assert sorted(p["ip"].split("/")[0] for p in h1) == sorted(
        [RB1_IP, addresses(lab, "h1", "rb2")[0]])
    assert {p["state"] for p in h1} == {"active"}
    assert mac_of(lab, "h1", "rb1") == mac          # its address back, its MAC back
    wired = {contract.host_port_name(p["id"]) for p in h1}
    assert host_veths(lab, "h1") - set(HOST_NICS) == wired
    ovs = lab.ovs("h1")
    assert set(ovs.vsctl("list-ports", contract.INTEGRATION_BRIDGE).split()) == \
        wired | {contract.PATCH_ON_INT}
    ofports = {ovs.vsctl("get", "Interface", name, "ofport").strip()
               for name in wired | {contract.PATCH_ON_INT}}
    in_ports = {m.group(1) for m in re.finditer(
        r"in_port=(\w+)", "\n".join(ovs.dump_flows(contract.INTEGRATION_BRIDGE)))}
    assert in_ports <= ofports, (in_ports, ofports)
