"""The `loris` CLI end to end: real controller, real agents, real Docker containers.

One 3-host lab for the module. The tests run in order and build on each other's state:
cluster, connect (static, DHCP, errors), tables, disconnect, and cleanup last.
"""

from __future__ import annotations

import json
import subprocess
import time
from functools import partial

import helpers
import pytest
from helpers import cli_connect, cli_connect_json, host_view, inet, interface, wait_for

from lab.core import venv_bin

pytestmark = [pytest.mark.integration, pytest.mark.docker]

IPS = ["198.18.0.11", "198.18.0.12", "198.18.0.13"]


@pytest.fixture(scope="module")
def lab(make_cluster):
    # h3's agent starts during the cluster test, which also waits for the mesh
    lab = make_cluster(hosts=3, agents=["h1", "h2"], wait=None, record_before=True)
    for name, host in (("c1", "h1"), ("c2", "h2"), ("c3", "h3"), ("c4", "h1"), ("c5", "h2")):
        lab.add_container(host, name)
    return lab


def loris(lab, host: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    r = lab.loris(host, *args)
    if ok:
        assert r.returncode == 0, f"loris {' '.join(args)}: {r.stderr}"
    else:
        assert r.returncode != 0, f"loris {' '.join(args)} succeeded: {r.stdout}"
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, f"want one line on stderr, got: {r.stderr!r}"
    return r


def name(lab, short: str) -> str:
    return lab.container(short).name


# one request, two seconds for its reply, with the container's own ping
ping = partial(helpers.pings, wait=2, tools="own")


def ports_json(lab) -> list[dict]:
    return json.loads(loris(lab, "h1", "ports", "--json").stdout)


# ---------------------------------------------------------------------------------- tests


def test_cluster_waits_until_every_host_is_meshed(lab):
    waiting = subprocess.Popen(
        lab.enter("h1") + [str(venv_bin() / "loris"), "cluster", *IPS, "--timeout", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**lab.loris_env("h1"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})  # fmt: skip
    time.sleep(1.0)
    assert waiting.poll() is None  # h3 is not there yet
    lab.start_agent("h3")
    out, err = waiting.communicate(timeout=40)
    assert waiting.returncode == 0, err
    assert "waiting: not registered: 198.18.0.13" in out  # progress named the missing host
    assert "3 hosts fully meshed (h1, h2, h3)" in out

    data = json.loads(loris(lab, "h2", "cluster", *IPS, "--json").stdout)
    assert data["members"] == ["h1", "h2", "h3"]
    table = loris(lab, "h1", "cluster").stdout
    assert "lt-c612000c" in table and "missing" not in table

    r = loris(lab, "h1", "cluster", "198.18.0.11", "198.18.0.99", "--timeout", "1.5", ok=False)
    assert "not registered: 198.18.0.99" in r.stderr
    r = loris(lab, "h1", "cluster", "198.18.0", ok=False)
    assert "not an IPv4 address" in r.stderr


def test_connect_static_addresses(lab):
    r = cli_connect(lab, "c1", "198.18.135.1/24", 7)
    assert "ip 198.18.135.1/24" in r.stdout and "pod 7" in r.stdout
    mac2 = "02:00:00:00:07:02"
    port2 = cli_connect_json(lab, "c2", "198.18.135.2/24", 7, "--mac", mac2)
    assert port2["mac"] == mac2 and port2["state"] == "active" and port2["host"] == "h2"
    cli_connect(lab, "c3", "198.18.135.3/24", 8)  # another pod
    # connect returned: reachable at once, across hosts, and pods are isolated.
    assert ping(lab, "c1", "198.18.135.2")
    assert ping(lab, "c2", "198.18.135.1")
    assert not ping(lab, "c1", "198.18.135.3", wait=1)
    e = interface(lab, "c2")
    assert e["address"] == mac2 and e["mtu"] == 1450


def test_tcp_across_hosts_with_full_size_segments(lab):
    # MTU and checksum offload wrong -> this stalls or corrupts.
    c1, c2 = lab.container("c1"), lab.container("c2")
    c1.exec(["sh", "-c", "mkdir -p /www && head -c 3000000 /dev/urandom > /www/blob"])
    server = c1.popen(["busybox", "httpd", "-f", "-p", "8080", "-h", "/www"])
    try:
        want = c1.exec(["busybox", "md5sum", "/www/blob"]).stdout.split()[0]
        got = c2.exec(["sh", "-c", "busybox wget -q -O - http://198.18.135.1:8080/blob | "
                       "busybox md5sum"], timeout=30).stdout.split()[0]  # fmt: skip
        assert got == want
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_connect_errors_are_one_line_and_change_nothing(lab):
    status, _ = lab.api("POST", "/v1/pods", {"id": 9, "subnet": "198.18.137.0/24"})
    assert status == 201
    before_ports = ports_json(lab)
    before_ovs = lab.ovs("h1").vsctl("--columns=name", "list", "Interface")
    c1_mac = interface(lab, "c1")["address"]
    c4 = name(lab, "c4")
    cases = [
        (["web9", "198.18.135.9/24", "7"], "container web9 not found"),
        ([c4, "10.7.0/24", "7"], "not an address"),
        ([c4, "198.18.135.300/24", "7"], "not an address"),
        ([c4, "198.18.136.5/24", "9"], "not in pod 9's subnet 198.18.137.0/24"),
        ([c4, "198.18.135.1/24", "7"],
         f"IP 198.18.135.1 already used by {name(lab, 'c1')} in pod 7"),
        ([c4, "198.18.135.4/24", "7", "--mac", c1_mac],
         f"MAC {c1_mac} already used by {name(lab, 'c1')} in pod 7"),
        ([c4, "198.18.135.4/24", "seven"], "pod seven does not exist; create it with "
                                           "`loris pod create seven`"),
        ([c4, "198.18.135.4/24", "7x"], "not a pod id"),
        ([c4, "198.18.135.4/24", "7", "--controller", "http://198.19.0.1:9"], "unreachable"),
    ]  # fmt: skip
    for args, message in cases:
        r = loris(lab, "h1", "connect", *args, ok=False)
        assert message in r.stderr, (args, r.stderr)
    assert ports_json(lab) == before_ports
    assert lab.ovs("h1").vsctl("--columns=name", "list", "Interface") == before_ovs
    assert interface(lab, "c4") is None
    assert "lp" not in " ".join(n for n in host_view(lab, "h1")["links"] if n != "lp1")


def test_connect_dhcp(lab):
    r = cli_connect(lab, "c4", "dhcp", 9)
    assert "ip 198.18.137.2/24" in r.stdout  # .1 is the pod's DHCP server
    port5 = cli_connect_json(lab, "c5", "dhcp", 9)
    assert port5["lease"] == "198.18.137.3/24" and port5["dhcp"] is True
    assert inet(interface(lab, "c5")) == ["198.18.137.3"]
    assert ping(lab, "c4", "198.18.137.3")
    assert not ping(lab, "c4", "198.18.135.2", wait=1)


def test_status_pods_and_ports_tables(lab):
    status = loris(lab, "h1", "status").stdout
    assert status.splitlines()[0].split() == ["HOST", "TUNNEL", "IP", "TYPE", "AGENT",
                                              "OPENFLOW", "TUNNELS", "PORTS"]
    for h in ("h1", "h2", "h3"):
        line = next(row for row in status.splitlines() if row.startswith(h + " "))
        assert "br-int:up br-tun:up" in line and "2/2" in line
    hosts = json.loads(loris(lab, "h1", "status", "--json").stdout)
    assert sorted(h["id"] for h in hosts) == ["h1", "h2", "h3"]

    pods = loris(lab, "h1", "pods").stdout
    row9 = next(r for r in pods.splitlines() if r.startswith("9 "))
    assert row9.split() == ["9", "pod-9", "198.18.137.0/24", "10", "2", "198.18.137.1"]
    assert {p["id"] for p in json.loads(loris(lab, "h1", "pods", "--json").stdout)} >= {0, 7, 8, 9}

    ports = loris(lab, "h1", "ports").stdout
    row = next(r for r in ports.splitlines() if name(lab, "c2") in r)
    assert row.split()[2:8] == ["7", "198.18.135.2/24", "02:00:00:00:07:02", "h2", "active", "2"]
    only9 = json.loads(loris(lab, "h1", "ports", "--pod", "9", "--json").stdout)
    assert sorted(p["container"] for p in only9) == [name(lab, "c4"), name(lab, "c5")]


def test_disconnect(lab):
    r = loris(lab, "h2", "disconnect", name(lab, "c5"))
    assert "disconnected from pod 9" in r.stdout
    assert interface(lab, "c5") is None
    assert name(lab, "c5") not in [p["container"] for p in ports_json(lab)]
    assert not ping(lab, "c4", "198.18.137.3", wait=1)
    r = loris(lab, "h2", "disconnect", name(lab, "c5"), ok=False)
    assert "is not connected on host h2" in r.stderr
    r = loris(lab, "h1", "disconnect", name(lab, "c4"), "7", ok=False)  # c4 is in pod 9
    assert f"container {name(lab, 'c4')} is not connected to pod 7 on host h1" in r.stderr
    # By Docker id instead of the name used at connect.
    cid = lab.docker_client.api.inspect_container(name(lab, "c4"))["Id"][:12]
    loris(lab, "h1", "disconnect", cid, "9")
    assert interface(lab, "c4") is None


def test_pods_by_name(lab):
    """A pod created by name, containers on two hosts connected to it by name (one static,
    one DHCP), reachable at once; the REST API by name and by id; delete refused while the
    pod has members, then forced."""
    r = loris(lab, "h1", "pod", "create", "red", "--subnet", "198.18.140.0/24")
    assert r.stdout.startswith("created pod red (id ") and "DHCP server 198.18.140.1" in r.stdout
    red = json.loads(loris(lab, "h1", "pod", "show", "red", "--json").stdout)
    r = loris(lab, "h2", "connect", name(lab, "c5"), "198.18.140.5/24", "red")
    assert f"connected to pod red ({red['id']})" in r.stdout
    port4 = cli_connect_json(lab, "c4", "dhcp", "red")
    assert port4["pod"] == red["id"] and port4["lease"] == "198.18.140.2/24"
    assert ping(lab, "c4", "198.18.140.5") and ping(lab, "c5", "198.18.140.2")
    assert not ping(lab, "c4", "198.18.135.2", wait=1)            # pod 7 stays apart
    only_red = json.loads(loris(lab, "h1", "ports", "--pod", "red", "--json").stdout)
    assert sorted(p["container"] for p in only_red) == [name(lab, "c4"), name(lab, "c5")]
    row = next(r for r in loris(lab, "h1", "pods").stdout.splitlines()
               if r.split()[1:2] == ["red"])
    assert row.split() == [str(red["id"]), "red", "198.18.140.0/24", str(red["id"] + 1), "2",
                           "198.18.140.1"]

    # the REST API: by name and by id, conflicts naming the pod that exists
    status, blue = lab.api("POST", "/v1/pods", {"name": "blue", "id": 41})
    assert status == 201 and blue["tunnel_key"] == 42
    assert lab.api("GET", "/v1/pods/blue") == lab.api("GET", "/v1/pods/41")
    status, err = lab.api("POST", "/v1/pods", {"name": "red"})
    assert status == 409 and f"pod {red['id']} (red) already exists" in err["error"]["message"]
    status, err = lab.api("POST", "/v1/pods", {"name": "green", "id": 41})
    assert status == 409 and "pod 41 (blue) already exists" in err["error"]["message"]
    assert lab.api("DELETE", "/v1/pods/41")[0] == 204
    assert lab.api("GET", "/v1/pods/blue")[0] == 404

    r = loris(lab, "h1", "pod", "delete", "red", ok=False)
    assert f"{name(lab, 'c4')} on h1" in r.stderr and "--force" in r.stderr
    r = loris(lab, "h1", "pod", "delete", "red", "--force")
    assert r.stdout.strip() == f"deleted pod red ({red['id']}), disconnected 2 member(s)"
    wait_for(lambda: interface(lab, "c4") is None and interface(lab, "c5") is None, 20,
             "the agents removing the members of the deleted pod")
    assert lab.api("GET", "/v1/pods/red")[0] == 404
    assert not [p for p in ports_json(lab) if p["pod"] == red["id"]]


def test_cleanup_leaves_no_trace_and_the_others_keep_working(lab):
    # A running agent would re-create everything at once: cleanup refuses and changes nothing.
    r = loris(lab, "h3", "cleanup", ok=False)
    assert f"loris-hostagent (pid {lab.processes['agent-h3'].pid}) is running" in r.stderr
    assert "h3" in [h["id"] for h in json.loads(loris(lab, "h1", "status", "--json").stdout)]
    lab.processes["agent-h3"].stop()
    r = loris(lab, "h3", "cleanup")
    assert "host h3 deregistered" in r.stdout
    assert host_view(lab, "h3") == lab.before["h3"]
    assert interface(lab, "c3") is None
    hosts = json.loads(loris(lab, "h1", "status", "--json").stdout)
    assert sorted(h["id"] for h in hosts) == ["h1", "h2"]
    assert name(lab, "c3") not in [p["container"] for p in ports_json(lab)]
    # The others drop their tunnel to h3 and keep forwarding.
    wait_for(lambda: "lt-c612000d" not in lab.ovs("h1").vsctl("list-ports", "br-tun"), 10,
             "h1 dropping its tunnel to the removed h3")
    assert ping(lab, "c1", "198.18.135.2")
    r = loris(lab, "h3", "cleanup")
    assert "host h3 was not registered" in r.stdout
    assert host_view(lab, "h3") == lab.before["h3"]
