"""The lab itself: real namespaces, one Open vSwitch per host, VXLAN/GRE over a real underlay,
Docker and bare-namespace containers, and a teardown that leaves nothing behind."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import ping, transfer

from lab import CommandError, Lab, LabError, cleanup, procs
from lab.core import REPO_ROOT, venv_bin
from lab.naming import DOCKER_LABEL, NETNS_DIR, lab_dir

pytestmark = pytest.mark.integration

# Overlay addresses stay inside the lab range 198.18.0.0/15 (underlay is 198.18.0.0/24).
OVERLAY = {"d1": "198.18.100.1", "d2": "198.18.100.2", "n2": "198.18.100.12",
           "n3": "198.18.100.13"}
TUNNEL_FILTER = {"vxlan": "udp port 4789", "gre": "ip proto 47"}


@pytest.fixture(scope="module")
def mesh(lab3: Lab) -> dict:
    """lab3 with the plain mesh and four containers: Docker d1 (h1), d2 (h2); bare
    namespaces n2 (h2), n3 (h3)."""
    lab3.plain_mesh()
    containers = {"d1": lab3.add_container("h1", "d1"),
                  "d2": lab3.add_container("h2", "d2"),
                  "n2": lab3.add_container("h2", "n2", kind="netns"),
                  "n3": lab3.add_container("h3", "n3", kind="netns")}
    for name, c in containers.items():
        lab3.attach_plain(c, f"{OVERLAY[name]}/24")
    return containers


def all_answered(lab: Lab, src, dst_ip: str, count: int = 3) -> None:
    """busybox ping in the container `src`: every request answered."""
    res = ping(lab, src, dst_ip, count=count, interval=0.2, wait=2, tools="busybox")
    assert f"{count} packets received" in res.stdout, (
        f"{src.name} -> {dst_ip}: {res.stdout}{res.stderr}")


def root_links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True,
                          check=True).stdout


def assert_nothing_left(prefix: str, pids: set[int], netns_inodes: set[int]) -> None:
    """Namespaces, root-namespace links, processes, Docker containers, run dir: all gone."""
    left_ns = [n for n in os.listdir(NETNS_DIR) if n.startswith(prefix)]
    assert not left_ns, f"namespaces left: {left_ns}"
    ip_netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert prefix not in ip_netns
    links = root_links()
    assert prefix not in links
    assert not re.search(r"^\d+: pv\d+[@:]", links, re.M), links
    alive = {p: Path(f"/proc/{p}/stat").read_text() for p in pids
             if procs.state(p) is not None}
    assert not alive, f"processes left (incl. zombies): {alive}"
    in_lab_ns = [p for p in procs.all_pids() if procs.netns_inode(p) in netns_inodes]
    assert not in_lab_ns, f"processes still in lab namespaces: {in_lab_ns}"
    mentions = [p for p in procs.all_pids() if str(lab_dir(prefix)) in procs.cmdline(p)]
    assert not mentions, f"processes mentioning the run dir: {mentions}"
    ps = subprocess.run(["docker", "ps", "-a", "--filter", f"label={DOCKER_LABEL}={prefix}",
                         "--format", "{{.Names}}"], capture_output=True, text=True, check=True)
    assert ps.stdout.strip() == ""
    names = subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}}"],
                           capture_output=True, text=True, check=True).stdout
    assert prefix not in names
    assert not lab_dir(prefix).exists()


def lab_inventory(prefix: str) -> tuple[set[int], set[int]]:
    """(pids, namespace inodes) of a lab, for checking later that they are gone."""
    pids = set(cleanup.lab_processes(prefix))
    pids |= {r["pid"] for r in procs.read_records(lab_dir(prefix))}
    inodes = set(cleanup.namespace_inodes(cleanup.lab_namespaces(prefix)))
    return pids, inodes


@pytest.mark.parametrize("lab3", ["vxlan", "gre"], indirect=True)
class TestPlainMesh:
    def test_each_host_runs_its_own_ovs(self, lab3: Lab) -> None:
        pids = set()
        for h in lab3.hosts:
            ovs = lab3.ovs(h)
            hostname = ovs.vsctl("get", "Open_vSwitch", ".", "external_ids:hostname")
            assert hostname.strip().strip('"') == h.name
            pid = int((h.rundir / "ovs-vswitchd.pid").read_text())
            assert procs.netns_inode(pid) == os.stat(h.netns_path).st_ino
            pids.add(pid)
            assert (h.rundir / "conf.db").exists() and (h.rundir / "ovs-vswitchd.log").exists()
            # The host's own networking: on the userspace datapath eth0 is in br-phy, the IP
            # on br-phy, their MACs differ; OVS routes tunnels through the IP's device.
            dev = lab3.underlay_dev
            assert "198.18.0.0/24 dev " + dev in ovs.routes()
            addr = lab3.run(h, ["ip", "-o", "-4", "addr", "show", "dev", dev]).stdout
            assert f"{h.tunnel_ip}/24" in addr
            if lab3.netdev:
                assert ovs.vsctl("port-to-br", "eth0").strip() == "br-phy"
                macs = {d: lab3.run(h, ["cat", f"/sys/class/net/{d}/address"]).stdout.strip()
                        for d in ("eth0", "br-phy")}
                assert macs["eth0"] != macs["br-phy"], macs
            mtu = lab3.run(h, ["cat", "/sys/class/net/eth0/mtu"]).stdout.strip()
            assert mtu == "1500"
        assert len(pids) == len(lab3.hosts)

    def test_underlay_and_management(self, lab3: Lab) -> None:
        h1, h2, h3 = lab3.hosts
        lab3.run(h1, ["ping", "-c", "1", "-W", "2", h2.tunnel_ip])
        lab3.run(h3, ["ping", "-c", "1", "-W", "2", h1.tunnel_ip])
        for h in lab3.hosts:
            lab3.run("ctl", ["ping", "-c", "1", "-W", "2", h.mgmt_ip])
            lab3.run(h, ["ping", "-c", "1", "-W", "2", "198.19.0.1"])
        # Management and underlay are separate networks: no route from one to the other.
        res = lab3.run("ctl", ["ping", "-c", "1", "-W", "1", h1.tunnel_ip], check=False)
        assert res.returncode != 0

    def test_api_reaches_a_server_in_the_control_namespace(self, lab3: Lab) -> None:
        server = lab3.start_process(
            "http-test", [sys.executable, "-m", "http.server", "8780", "--bind", "198.19.0.1",
                          "--directory", str(lab3.dir)], netns="ctl")
        try:
            lab3.wait_api(timeout=15, process=server)
            status, body = lab3.api("GET", "/lab.json")
            assert status == 200 and body["prefix"] == lab3.prefix
            status, _ = lab3.api("GET", "/no-such-file")
            assert status == 404
        finally:
            server.stop()
        assert not server.alive and "GET /lab.json" in server.log_text()

    def test_ping_between_containers_on_different_hosts(self, lab3: Lab, mesh: dict) -> None:
        d1, n2, n3 = mesh["d1"], mesh["n2"], mesh["n3"]
        assert d1.name == f"{lab3.prefix}-d1" and n3.name == f"netns:{lab3.prefix}-c-n3"
        all_answered(lab3, d1, OVERLAY["d2"])   # Docker h1 -> Docker h2
        # Bare namespaces h2 -> h3, watched on h3's underlay: it really is tunnelled.
        cap = lab3.capture("h3", "eth0", TUNNEL_FILTER[lab3.tunnel])
        all_answered(lab3, n2, OVERLAY["n3"])
        count, lines = cap.stop()
        echoes = [line for line in lines if "198.18.100.12 > 198.18.100.13: ICMP echo request"
                  in line or "198.18.100.13 > 198.18.100.12: ICMP echo reply" in line]
        assert count == len(lines) and len(echoes) == 6, lines  # 3 requests in, 3 replies out
        assert all(("GRE" in line) if lab3.tunnel == "gre" else ("4789" in line)
                   for line in lines), lines
        all_answered(lab3, n3, OVERLAY["d1"])   # mixed kinds, h3 -> h1

        # The MTU inside containers leaves room for the encapsulation.
        link = lab3.run(d1, ["ip", "-o", "link", "show", "eth1"]).stdout
        mtu = int(re.search(r" mtu (\d+)", link).group(1))
        assert mtu == lab3.inner_mtu == {"vxlan": 1450, "gre": 1458}[lab3.tunnel]

    def test_10mb_tcp_transfer_arrives_intact(self, lab3: Lab, mesh: dict) -> None:
        elapsed = transfer(mesh["d1"], mesh["n3"], OVERLAY["n3"], size=10 * 2**20)
        print(f"10 MB over {lab3.tunnel} in {elapsed:.2f}s")

    def test_bad_input_is_refused_clearly(self, lab3: Lab, mesh: dict) -> None:
        with pytest.raises(LabError, match="no host 'h9'.*h1, h2, h3"):
            lab3.add_container("h9", "x")
        with pytest.raises(LabError, match="already has a container 'd1'"):
            lab3.add_container("h1", "d1")
        with pytest.raises(LabError, match="container name 'Bad/Name'"):
            lab3.add_container("h1", "Bad/Name", kind="netns")
        with pytest.raises(LabError, match="kind 'vm'"):
            lab3.add_container("h1", "x", kind="vm")
        with pytest.raises(LabError, match="only Docker containers can restart"):
            mesh["n2"].restart()
        with pytest.raises(LabError, match="already has an interface eth1"):
            lab3.attach_plain(mesh["d1"], "198.18.100.99/24")
        with pytest.raises(LabError, match="h1 has no bridge br-x; call lab.plain_mesh"):
            lab3.attach_plain(mesh["d1"], "198.18.100.99/24", bridge="br-x", ifname="eth2")
        bad = lab3.add_container("h1", "bad", kind="netns")
        ports_before = lab3.ovs("h1").vsctl("list-ports", "br-int")
        with pytest.raises(CommandError, match="198.18.100.999/24"):
            lab3.attach_plain(bad, "198.18.100.999/24")
        assert lab3.ovs("h1").vsctl("list-ports", "br-int") == ports_before
        assert "eth1" not in lab3.run(bad, ["ip", "-o", "link"]).stdout
        lab3.remove_container(bad)
        assert not os.path.exists(bad.netns_path)
        with pytest.raises(ValueError, match="tunnel='ipip'"):
            Lab(tunnel="ipip")
        with pytest.raises(ValueError, match="hosts=0"):
            Lab(hosts=0)
        assert set(lab3.containers) == {"d1", "d2", "n2", "n3"}

    def test_teardown_leaves_nothing(self, lab3: Lab, mesh: dict) -> None:
        prefix = lab3.prefix
        pids, inodes = lab_inventory(prefix)
        assert len(pids) >= 2 * len(lab3.hosts) and len(inodes) == len(lab3.hosts) + 4
        lab3.down()
        assert_nothing_left(prefix, pids, inodes)


@contextlib.contextmanager
def adopting_orphans():
    """While inside, orphaned descendants become our children (not PID 1's), so that we
    can reap what a killed lab owner leaves behind."""
    procs.set_subreaper(True)
    try:
        yield
    finally:
        procs.set_subreaper(False)


INTERRUPTED_OWNER = textwrap.dedent("""
    import json, os, time
    from lab import Lab
    lab = Lab(hosts=2, tunnel="gre").up()
    lab.plain_mesh()
    d = lab.add_container("h1", "d")
    n = lab.add_container("h2", "n", kind="netns")
    lab.attach_plain(d, "198.18.100.1/24")
    lab.attach_plain(n, "198.18.100.2/24")
    lab.start_process("idler", ["sleep", "600"], netns="ctl")
    lab.capture("h1", "eth0", "ip proto 47")
    # Not recorded by the lab: found only because it runs in one of the lab's namespaces.
    stray = n.popen(["sleep", "600"])
    while os.stat(f"/proc/{stray.pid}/ns/net").st_ino != os.stat(n.netns_path).st_ino:
        time.sleep(0.01)
    vswitchd = int((lab.hosts[0].rundir / "ovs-vswitchd.pid").read_text())
    print(json.dumps({"prefix": lab.prefix, "vswitchd_h1": vswitchd}), flush=True)
    time.sleep(600)
""")


def test_down_all_removes_an_interrupted_lab() -> None:
    with adopting_orphans():
        owner = subprocess.Popen([sys.executable, "-c", INTERRUPTED_OWNER], cwd=REPO_ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = owner.stdout.readline()
            assert line, owner.stderr.read()
            info = json.loads(line)
            prefix = info["prefix"]
            pids, inodes = lab_inventory(prefix)
            # The interruption: one daemon dies (stale pidfile), then the owner, with no
            # teardown at all.
            os.kill(info["vswitchd_h1"], signal.SIGKILL)
            owner.send_signal(signal.SIGKILL)
            owner.wait(10)
            time.sleep(0.2)
        finally:
            if owner.poll() is None:
                owner.kill()
                owner.wait()
        running = [p for p in pids if procs.running(p)]
        assert len(running) >= 6, running   # 3 OVS daemons, idler, tcpdump, sleep in n
        assert len(cleanup.lab_namespaces(prefix)) == 5
        assert cleanup.docker_containers(cleanup.docker_client(), prefix)

        res = subprocess.run([venv_bin() / "loris-lab", "down", "--all", "-v"],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"{prefix}: removed" in res.stdout, res.stdout
        procs.reap(pids, within=5.0)   # the killed orphans were adopted by us
    assert_nothing_left(prefix, pids, inodes)


def test_down_refuses_a_bad_prefix() -> None:
    res = subprocess.run([venv_bin() / "loris-lab", "down", "lab1"], capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 2 and "lab1: not a lab prefix" in res.stderr


def test_lab_needs_a_valid_prefix() -> None:
    with pytest.raises(ValueError, match="prefix='x'"):
        Lab(prefix="x")
    assert not Path("/run/netns/x-h1").exists()


def test_two_labs_side_by_side(make_lab) -> None:
    """Same names and addresses inside, distinct prefixes outside: no clash, and removing one
    leaves the other working."""
    labs = [make_lab(hosts=2, tunnel="vxlan", docker=False),
            make_lab(hosts=2, tunnel="gre", docker=False)]
    assert labs[0].prefix != labs[1].prefix
    for lab in labs:
        lab.plain_mesh()
        x = lab.add_container("h1", "x", kind="netns")
        y = lab.add_container("h2", "y", kind="netns")
        lab.attach_plain(x, "198.18.100.1/24")
        lab.attach_plain(y, "198.18.100.2/24")
        all_answered(lab, x, "198.18.100.2")
    first, second = labs
    with pytest.raises(LabError, match=f"prefix {second.prefix} is already in use"):
        Lab(hosts=1, docker=False, prefix=second.prefix).up()
    pids, inodes = lab_inventory(first.prefix)
    first.down()
    assert_nothing_left(first.prefix, pids, inodes)
    all_answered(second, second.container("y"), "198.18.100.1")
