"""Host agent plumbing against real OVS, namespaces and Docker, without a controller.

`loris-hostagent --apply FILE` runs one reconcile pass from a desired state (the JSON the
controller would serve) in a lab host's namespace; `loris init` / `loris cleanup` are the CLI.
One lab for the module; the tests run in order and build on each other's state.
"""

from __future__ import annotations

import json
from functools import partial

import helpers
import pytest
from helpers import host_view, inet, interface

from flows import contract
from lab import Lab
from lab.core import venv_bin

pytestmark = [pytest.mark.integration, pytest.mark.docker]

POD = 7
MAC_C1 = "02:00:00:07:00:05"
MAC_N1 = "02:00:00:07:00:06"


@pytest.fixture(scope="module")
def lab():
    with Lab(hosts=2, tunnel="vxlan") as lab:
        lab.before = {h.name: host_view(lab, h.name) for h in lab.hosts}
        lab.add_container("h1", "c1")
        lab.add_container("h1", "n1", kind="netns")
        yield lab


def ovs_rows(lab: Lab, host: str) -> dict:
    """Configuration rows (with their uuids) of the host's OVS: equal dumps = nothing changed."""
    tables = {
        "Bridge": "_uuid,name,fail_mode,protocols,datapath_type,other_config,external_ids,"
                  "controller,ports",
        "Port": "_uuid,name,interfaces,external_ids",
        "Interface": "_uuid,name,type,options,external_ids,ofport,ofport_request",
        "Controller": "_uuid,target,inactivity_probe,controller_rate_limit,"
                      "controller_burst_limit,connection_mode,external_ids",
    }  # fmt: skip
    out = {}
    for table, cols in tables.items():
        raw = lab.ovs(host).vsctl("--format=json", "--data=json", f"--columns={cols}",
                                  "list", table)  # fmt: skip
        doc = json.loads(raw)
        rows = [dict(zip(doc["headings"], r, strict=True)) for r in doc["data"]]
        out[table] = {r["name"] if "name" in r else r["_uuid"][1]: r for r in rows}
    return out


def ovsmap(value: list) -> dict:
    assert value[0] == "map"
    return dict(value[1])


def desired(lab: Lab, ports: list[dict], peers: list[dict] | None = None,
            tunnel_type: str = "vxlan") -> dict:  # fmt: skip
    h1 = lab.host("h1")
    if peers is None:
        peers = [{"id": "h2", "tunnel_ip": lab.host("h2").tunnel_ip}]
    return {"version": 1, "host": {"id": "h1", "tunnel_ip": h1.tunnel_ip,
                                   "tunnel_type": tunnel_type},
            "peers": peers, "ports": ports}  # fmt: skip


def port(port_id: int, container: str, mac: str, ip: str | None, pod: int = POD,
         state: str = "active") -> dict:  # fmt: skip
    return {"id": port_id, "container": container, "pod": pod, "mac": mac,
            "ip": ip or "", "dhcp": ip is None, "state": state}  # fmt: skip


def apply(lab: Lab, state: dict, host: str = "h1") -> dict:
    h = lab.host(host)
    r = lab.run(h, [venv_bin() / "loris-hostagent", "--host-id", h.name, "--ovsdb", h.ovsdb,
                    "--ovs-rundir", h.rundir, "--apply", "-"],
                input=json.dumps(state), check=False, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def two_ports(lab: Lab) -> list[dict]:
    return [port(5, lab.container("c1").name, MAC_C1, "198.18.135.5/24"),
            port(6, lab.container("n1").name, MAC_N1, "198.18.135.6/24")]  # fmt: skip


# one request, two seconds for its reply (host's iputils ping)
ping = partial(helpers.pings, wait=2)


# ---------------------------------------------------------------------------------- tests


def test_init_prepares_the_host_and_is_idempotent(lab):
    r = lab.loris("h1", "init", "--openflow", "tcp:198.19.0.1:6653")
    assert r.returncode == 0, r.stderr
    assert "host h1 ready" in r.stdout
    rows = ovs_rows(lab, "h1")
    dpids = contract.dpids("h1")
    for bridge, patch, peer in (("br-int", "patch-tun", "patch-int"),
                                ("br-tun", "patch-int", "patch-tun")):  # fmt: skip
        b = rows["Bridge"][bridge]
        assert b["fail_mode"] == "secure"
        assert b["protocols"] == "OpenFlow13"
        assert b["datapath_type"] == lab.datapath_type
        other = ovsmap(b["other_config"])
        assert other["disable-in-band"] == "true"
        assert int(other["datapath-id"], 16) == dpids[bridge]
        assert ovsmap(b["external_ids"]) == {"loris": "1"}
        iface = rows["Interface"][patch]
        assert iface["type"] == "patch"
        assert ovsmap(iface["options"]) == {"peer": peer}
        ctl = rows["Controller"][b["controller"][1]]
        assert ctl["target"] == "tcp:198.19.0.1:6653"
        assert ctl["inactivity_probe"] == 30000
        assert ctl["controller_rate_limit"] == 1000
        assert ctl["controller_burst_limit"] == 250
    # Again: not one row changes (a re-created Controller row would drop the OpenFlow session).
    r = lab.loris("h1", "init", "--openflow", "tcp:198.19.0.1:6653")
    assert r.returncode == 0, r.stderr
    assert ovs_rows(lab, "h1") == rows


def test_ports_wired_into_docker_and_netns_containers(lab):
    ports = [*two_ports(lab), port(7, "web9", "02:00:00:07:00:07", "198.18.135.7/24")]
    actual = apply(lab, desired(lab, ports))
    assert actual["patch"] == {"br-int": 1, "br-tun": 1}
    assert actual["ports"]["7"] == {"error": {"code": "container_not_found",
                                              "message": "container web9 not found"}}
    mtu = 1500 - 50
    rows = ovs_rows(lab, "h1")
    for pid, cname, mac, ip in ((5, "c1", MAC_C1, "198.18.135.5"),
                                (6, "n1", MAC_N1, "198.18.135.6")):
        rep = actual["ports"][str(pid)]
        assert rep["mtu"] == mtu
        iface = rows["Interface"][f"lp{pid}"]
        assert iface["ofport"] == rep["ofport"] == iface["ofport_request"]
        ids = ovsmap(iface["external_ids"])
        assert ids["loris-port-id"] == str(pid)
        assert ids["loris-container"] == lab.container(cname).name
        assert ids["loris-pod"] == str(POD)
        assert ids["attached-mac"] == mac
        e = interface(lab, cname)
        assert e["address"] == mac and e["mtu"] == mtu and "UP" in e["flags"]
        assert inet(e) == [ip]
        features = lab.run(lab.container(cname), ["ethtool", "-k", "eth1"]).stdout
        assert "tx-checksumming: off" in features
    host_links = host_view(lab, "h1")["links"]
    assert "lp5" in host_links and "lp6" in host_links
    # The failed port left nothing behind.
    assert "lp7" not in host_links and "lc7" not in host_links and "lp7" not in rows["Interface"]

    # A second pass changes nothing: same rows, same veths (nothing re-wired).
    ifindex = {n: interface(lab, n)["ifindex"] for n in ("c1", "n1")}
    assert apply(lab, desired(lab, ports)) == actual
    assert ovs_rows(lab, "h1") == rows
    assert {n: interface(lab, n)["ifindex"] for n in ("c1", "n1")} == ifindex


def test_wired_ports_carry_traffic(lab):
    # No controller here: a NORMAL flow stands in for Loris's pipeline on br-int.
    lab.ovs("h1").ofctl("add-flow", "br-int", "priority=1,actions=NORMAL")
    try:
        assert ping(lab, "c1", "198.18.135.6", count=2)
        assert ping(lab, "n1", "198.18.135.5")
    finally:
        lab.ovs("h1").ofctl("del-flows", "br-int")


def test_second_pod_gets_eth2_and_a_bad_mac_rolls_back(lab):
    c1 = lab.container("c1").name
    ports = [*two_ports(lab), port(8, c1, "02:00:00:08:00:08", "198.18.136.8/24", pod=8),
             port(9, c1, "01:00:5e:00:00:09", "198.18.137.9/24", pod=9)]  # multicast MAC
    actual = apply(lab, desired(lab, ports))
    assert actual["ports"]["8"]["ofport"] > 0
    e = interface(lab, "c1", "eth2")
    assert e["address"] == "02:00:00:08:00:08"
    # Port 9 failed after its veth was made and moved: nothing of it is left anywhere.
    assert actual["ports"]["9"]["error"]["code"] == "wiring_failed"
    assert "lp9" not in host_view(lab, "h1")["links"]
    assert "lp9" not in ovs_rows(lab, "h1")["Interface"]
    inside = json.loads(lab.run(lab.container("c1"), ["ip", "-j", "link"]).stdout)
    assert sorted(i["ifname"] for i in inside) == ["eth1", "eth2", "lo"]


def test_undesired_ports_are_removed(lab):
    apply(lab, desired(lab, two_ports(lab)))
    assert interface(lab, "c1", "eth2") is None
    assert "lp8" not in host_view(lab, "h1")["links"]
    assert "lp8" not in ovs_rows(lab, "h1")["Interface"]
    assert interface(lab, "c1") is not None


def test_restarted_container_is_rewired_with_its_ofport(lab):
    before = apply(lab, desired(lab, two_ports(lab)))
    lab.container("c1").restart()
    assert interface(lab, "c1") is None  # the veth died with the old namespace
    after = apply(lab, desired(lab, two_ports(lab)))
    assert after == before  # same ofports
    e = interface(lab, "c1")
    assert e["address"] == MAC_C1
    assert inet(e) == ["198.18.135.5"]
    lab.ovs("h1").ofctl("add-flow", "br-int", "priority=1,actions=NORMAL")
    try:
        assert ping(lab, "c1", "198.18.135.6", count=2)
    finally:
        lab.ovs("h1").ofctl("del-flows", "br-int")


def test_dhcp_port_runs_a_real_client_once_active(lab):
    # A real DHCP server (busybox udhcpd) in n1 stands in for the controller's responder.
    conf = lab.dir / "udhcpd.conf"
    conf.write_text(f"start 198.18.135.50\nend 198.18.135.59\ninterface eth1\n"
                    f"option subnet 255.255.255.0\nlease_file {lab.dir}/udhcpd.leases\n"
                    f"pidfile {lab.dir}/udhcpd.pid\n")  # fmt: skip
    (lab.dir / "udhcpd.leases").touch()
    lab.add_container("h1", "d1")
    dhcp_port = port(10, lab.container("d1").name, "02:00:00:07:00:0a", None, state="wired")
    lab.ovs("h1").ofctl("add-flow", "br-int", "priority=1,actions=NORMAL")
    server = lab.container("n1").popen(["busybox", "udhcpd", "-f", str(conf)])
    try:
        actual = apply(lab, desired(lab, [*two_ports(lab), dhcp_port]))
        assert actual["ports"]["10"]["lease"] is None  # not active yet: no client runs
        dhcp_port["state"] = "active"
        actual = apply(lab, desired(lab, [*two_ports(lab), dhcp_port]))
        lease = actual["ports"]["10"]["lease"]
        assert lease.startswith("198.18.135.5") and lease.endswith("/24"), actual
        e = interface(lab, "d1")
        assert [f"{a['local']}/{a['prefixlen']}" for a in e["addr_info"]
                if a["family"] == "inet"] == [lease]  # fmt: skip
        assert ping(lab, "d1", "198.18.135.6")
        # The lease is on the interface: the next pass reports it without asking again.
        server.terminate()
        server.wait(timeout=10)
        assert apply(lab, desired(lab, [*two_ports(lab), dhcp_port])) == actual
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=10)
        lab.ovs("h1").ofctl("del-flows", "br-int")
    apply(lab, desired(lab, two_ports(lab)))
    lab.remove_container("d1")


def test_tunnel_ports_follow_the_peers(lab):
    h2, h3 = "198.18.0.12", "198.18.0.13"
    peers = [{"id": "h2", "tunnel_ip": h2}, {"id": "h3", "tunnel_ip": h3},
             {"id": "h1", "tunnel_ip": lab.host("h1").tunnel_ip}]  # itself: never a tunnel
    actual = apply(lab, desired(lab, two_ports(lab), peers))
    rows = ovs_rows(lab, "h1")["Interface"]
    assert set(actual["tunnels"]) == {"h2", "h3"}
    for peer, ip in (("h2", h2), ("h3", h3)):
        iface = rows[contract.tunnel_port_name(ip)]
        assert iface["type"] == "vxlan"
        assert ovsmap(iface["options"]) == {"remote_ip": ip, "key": "flow", "df_default": "true"}
        assert ovsmap(iface["external_ids"])["loris"] == "1"
        assert iface["ofport"] == actual["tunnels"][peer]
    assert not any(n.startswith("lt-") and n not in ("lt-c612000c", "lt-c612000d")
                   for n in rows)  # fmt: skip
    # h3 leaves, the cluster switches to GRE.
    actual = apply(lab, desired(lab, two_ports(lab), peers[:1], tunnel_type="gre"))
    rows = ovs_rows(lab, "h1")["Interface"]
    assert set(actual["tunnels"]) == {"h2"}
    assert "lt-c612000d" not in rows
    assert rows["lt-c612000c"]["type"] == "gre"
    assert actual["ports"]["5"]["mtu"] == 1500 - 42


def test_cleanup_removes_everything_loris_made_and_only_that(lab):
    # A foreign veth on the host and a foreign bridge must survive.
    lab.run("h1", ["ip", "link", "add", "lpx1", "type", "veth", "peer", "name", "lpx2"])
    lab.ovs("h1").vsctl("add-br", "br-foreign", "--", "set", "bridge", "br-foreign",
                        f"datapath_type={lab.datapath_type}")  # fmt: skip
    r = lab.loris("h1", "cleanup")
    # No controller in this module: cleanup says so in one line, but still cleans locally.
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1
    assert "NOT deregistered" in r.stderr and "unreachable" in r.stderr
    view = host_view(lab, "h1")
    assert sorted(view["bridges"]) == ["br-foreign", "br-phy"]
    assert "lpx1" in view["links"] and "lpx2" in view["links"]
    lab.ovs("h1").vsctl("del-br", "br-foreign")
    lab.run("h1", ["ip", "link", "del", "lpx1"])
    assert host_view(lab, "h1") == lab.before["h1"]
    for c in ("c1", "n1"):
        inside = json.loads(lab.run(lab.container(c), ["ip", "-j", "link"]).stdout)
        assert [i["ifname"] for i in inside] == ["lo"]
    # Idempotent, and h2 never noticed.
    lab.loris("h1", "cleanup")
    assert host_view(lab, "h1") == lab.before["h1"]
    assert host_view(lab, "h2") == lab.before["h2"]
