"""Acceptance suite: Loris as a user runs it, end to end.

Three simulated hosts, the controller, one `loris-hostagent` per host, Docker containers in
pods 7 and 8 and in the global pod 0, connected with the `loris` CLI; checked with pings,
captures, neighbour tables, flow dumps and the REST API. The class runs once over VXLAN and
once over GRE, each on ONE lab that its tests share and build on, in order: what a test
leaves (a DHCP container, a removed container, a cleaned-up h3) is what the next one expects.

Every container of every pod has an address in the same /24, on purpose: a frame that
crossed pods would be delivered on-link, so isolation rests on the flows alone.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import time

import pytest
from acceptance_helpers import (
    Member,
    Net,
    finish_ping,
    flows_of_port,
    flush_neighbours,
    in_parallel,
    inbound_filter,
    neigh,
    ping_many,
    responder_hits,
    send_arp_reply,
    start_ping,
)
from helpers import (
    all_loris_flows,
    cli_connect,
    cli_connect_json,
    cookie_of,
    host_view,
    inet,
    loris_flows,
    ports_by_container,
    transfer,
    wait_for,
    wait_synced,
)

from flows import Kind

pytestmark = [pytest.mark.integration, pytest.mark.docker]

SUBNET = "198.18.135.0/24"
PREFIX = "198.18.135."
# short name, host, pod, last byte of the address. Pods 7 and 8 share SUBNET (pods may reuse
# addresses: they never see each other); the global pod 0 has no subnet.
LAYOUT = [("a1", "h1", 7, 11), ("a2", "h1", 7, 12), ("a3", "h2", 7, 13),
          ("b1", "h1", 8, 21), ("b2", "h2", 8, 22), ("b3", "h3", 8, 23),
          ("g1", "h2", 0, 31), ("g2", "h3", 0, 32)]  # fmt: skip
DHCP_SERVER = {7: ("198.18.135.1", "0a:4c:00:00:00:08")}  # first usable address, key 8
FAKE_MAC = "02:00:00:00:66:66"
FREE_IP = PREFIX + "99"


@pytest.fixture(scope="module")
def net(make_cluster) -> Net:
    # `loris cluster` below waits for the mesh, as a user would
    lab = make_cluster(hosts=3, wait=None, record_before=True)
    n = Net(lab)
    n.pristine_h3 = lab.before["h3"]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda s: lab.add_container(s[1], s[0]), LAYOUT))
    r = lab.loris("h1", "cluster", *(h.tunnel_ip for h in lab.hosts), "--timeout", "30")
    assert r.returncode == 0, r.stderr
    for pod in (7, 8):
        status, body = lab.api("POST", "/v1/pods", {"id": pod, "subnet": SUBNET})
        assert status == 201, body
    for short, host, pod, last in LAYOUT:
        m = Member(short, host, pod, PREFIX + str(last), name=lab.container(short).name)
        port = cli_connect_json(lab, short, f"{m.ip}/24", pod)
        m.mac, m.port_id = port["mac"], port["id"]
        n.members[short] = m
    return n


# -------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("make_cluster", ["vxlan", "gre"], indirect=True)
class TestAcceptance:
    def test_every_pair_in_a_pod_pings_both_ways(self, net: Net) -> None:
        by_pod: dict[int, list[Member]] = {}
        for m in net.alive():
            by_pod.setdefault(m.pod, []).append(m)
        results = in_parallel(
            lambda m: (m, ping_many(net, m, [o.ip for o in by_pod[m.pod] if o is not m])),
            net.alive())
        failed = [f"{m.short}->{ip} ({n}/2)" for m, got in results for ip, n in got.items()
                  if n != 2]
        assert not failed, f"same-pod pings lost: {failed}"
        # same host and across hosts were both covered
        assert any(a.host == b.host for p in by_pod.values() for a in p for b in p if a is not b)

    def test_10mb_tcp_across_hosts_arrives_intact(self, net: Net) -> None:
        mtu = net.lab.inner_mtu
        assert net.eth1(net["a1"])["mtu"] == mtu and net.eth1(net["a3"])["mtu"] == mtu
        # A wrong MTU or checksum offload stalls or corrupts full-size segments.
        transfer(net.container("a1"), net.container("a3"), net["a3"].ip, 10 * 1024 * 1024)

    def test_pods_are_isolated(self, net: Net) -> None:
        """No container reaches another pod's, even with the target's MAC forced into its
        neighbour table (so unicast frames are sent); a capture on every target sees nothing
        from another pod."""
        members = net.alive()
        caps = {m.short: net.lab.capture(net.container(m), "eth1", inbound_filter(
            [o.mac for o in members if o.pod == m.pod])) for m in members}
        others = {m.short: [o for o in members if o.pod != m.pod] for m in members}
        for m in members:  # the host's `ip` in the container's namespace (busybox has no -batch)
            batch = "".join(f"neigh replace {o.ip} lladdr {o.mac} dev eth1 nud permanent\n"
                            for o in others[m.short])
            net.lab.run(net.container(m), ["ip", "-batch", "-"], input=batch)
        try:
            forced = in_parallel(lambda m: (m, ping_many(
                net, m, [o.ip for o in others[m.short]], count=1, wait=1)), members)
        finally:
            flush_neighbours(net, members)
        resolved = in_parallel(lambda m: (m, ping_many(
            net, m, [o.ip for o in others[m.short]], count=1, wait=1)), members)
        # a pod-wide broadcast stays in its pod too
        # (iputils ping: busybox's cannot ping a broadcast address)
        net.lab.run(net.container("a1"), ["ping", "-b", "-c", "2", "-i", "0.2", "-W", "1",
                                          PREFIX + "255"], check=False)  # fmt: skip
        reached = [f"{m.short}->{ip}" for m, got in forced + resolved
                   for ip, n in got.items() if n]
        seen = {short: cap.stop() for short, cap in caps.items()}
        assert not reached, f"reached across pods: {reached}"
        leaked = {short: res.lines for short, res in seen.items() if res.count}
        assert not leaked, f"frames from other pods arrived: {leaked}"
        same_host = [(m.short, o.short) for m in members for o in others[m.short]
                     if o.host == m.host]
        assert same_host  # both cases (same host, across hosts) were tried

    def test_no_arp_broadcast_crosses_the_underlay(self, net: Net) -> None:
        lab = net.lab
        pairs = [(net["a1"], net["a3"]), (net["b1"], net["b3"]), (net["g2"], net["g1"]),
                 (net["b3"], net["b2"])]
        members = net.alive()
        flush_neighbours(net, members)
        hits_before = {(a.short, t.short): responder_hits(net, a, t) for a, t in pairs}
        tunnel = "udp port 4789" if lab.tunnel == "vxlan" else "ip proto 47"
        cap = lab.capture("ul", "br0", tunnel)
        arping = in_parallel(lambda p: net.container(p[0]).exec(
            ["busybox", "arping", "-c", "2", "-w", "2", "-I", "eth1", p[1].ip],
            check=False).stdout, pairs)  # fmt: skip
        flush_neighbours(net, members)
        first = in_parallel(lambda p: ping_many(net, p[0], [p[1].ip], count=1), pairs)
        result = cap.stop()
        for (asker, target), out in zip(pairs, arping, strict=True):
            assert f"Unicast reply from {target.ip} [{target.mac}]" in out, out
            assert responder_hits(net, asker, target) >= \
                hits_before[(asker.short, target.short)] + 2, (asker.short, target.short)
        assert all(got == {p[1].ip: 1} for p, got in zip(pairs, first, strict=True)), first
        # Every packet captured is a tunnel packet between hosts (unicast, IPv4): "ARP" and
        # the broadcast MAC can only come from an inner frame.
        assert any("ICMP echo request" in line for line in result.lines), \
            f"the capture saw no encapsulated ping: {result.lines}"
        arp = [line for line in result.lines if "ARP" in line or "ff:ff:ff:ff:ff:ff" in line]
        assert not arp, f"ARP or broadcast over the underlay: {arp}"
        for asker, target in pairs:
            assert target.mac in neigh(net, asker, target.ip)

    def test_dhcp_address_from_the_pod_subnet_served_by_the_controller(self, net: Net) -> None:
        lab = net.lab
        c = lab.add_container("h3", "d1")
        d1 = Member("d1", "h3", 7, "", name=c.name)
        r = cli_connect(lab, "d1", "dhcp", 7)
        port = ports_by_container(lab)[d1.name]
        d1.ip, d1.mac, d1.port_id = port["lease"].split("/")[0], port["mac"], port["id"]
        assert f"ip {port['lease']}" in r.stdout and port["dhcp"] and port["state"] == "active"
        assert port["lease"].endswith("/24") and d1.ip.startswith(PREFIX)
        assert d1.ip not in [m.ip for m in net.alive() if m.pod == 7] + [DHCP_SERVER[7][0]]
        assert inet(net.eth1(d1)) == [d1.ip]
        net.members["d1"] = d1
        # Ask again by hand: the controller answers, as the pod's DHCP server.
        server_ip, server_mac = DHCP_SERVER[7]
        cap = lab.capture(c, "eth1", "udp port 67 or udp port 68")
        out = c.exec(["busybox", "udhcpc", "-i", "eth1", "-n", "-q", "-t", "3", "-T", "1",
                      "-s", "/bin/true"], check=False)  # fmt: skip
        replies = [line for line in cap.stop().lines if f"{server_ip}.67 >" in line]
        assert f"lease of {d1.ip} obtained from {server_ip}" in out.stdout + out.stderr, out
        assert replies and all(line.split()[1] == server_mac for line in replies), replies
        got = ping_many(net, d1, [m.ip for m in net.alive() if m.pod == 7 and m is not d1])
        assert all(n == 2 for n in got.values()), got
        assert ping_many(net, d1, [net["b3"].ip], count=1, wait=1) == {net["b3"].ip: 0}

    def test_spoofed_mac_or_ip_reaches_nobody(self, net: Net) -> None:
        lab, a1, a2, a3 = net.lab, net["a1"], net["a2"], net["a3"]
        c = net.container(a1)

        def attack(bpf: str, victims: list[Member]) -> None:
            """a1 pings the victims (their MACs forced into its neighbour table, so it sends
            unicast frames at once); nothing arrives, a capture on each victim says so."""
            caps = [lab.capture(net.container(v), "eth1", bpf) for v in victims]
            batch = "".join(f"neigh replace {v.ip} lladdr {v.mac} dev eth1 nud permanent\n"
                            for v in victims)
            lab.run(c, ["ip", "-batch", "-"], input=batch)
            got = ping_many(net, a1, [v.ip for v in victims], count=2, wait=1)
            seen = [cap.stop() for cap in caps]
            assert got == {v.ip: 0 for v in victims}, (bpf, got)
            assert not any(s.count for s in seen), (bpf, [s.lines for s in seen])

        def use_address(ip: str) -> None:
            c.exec(["ip", "addr", "flush", "dev", "eth1"])
            c.exec(["ip", "addr", "add", f"{ip}/24", "dev", "eth1"])

        try:
            c.exec(["ip", "link", "set", "eth1", "address", FAKE_MAC])
            attack(f"ether src {FAKE_MAC}", [a2, a3])
            c.exec(["ip", "link", "set", "eth1", "address", a1.mac])
            # a free address, then the address of a container on the same host, then the
            # address of one on another host (each towards the other victim)
            for ip, victims in ((FREE_IP, [a2, a3]), (a3.ip, [a2]), (a2.ip, [a3])):
                use_address(ip)
                attack(f"host {ip} and ether src {a1.mac}", victims)
        finally:
            c.exec(["ip", "link", "set", "eth1", "address", a1.mac])
            use_address(a1.ip)
            flush_neighbours(net, [a1])
        got = ping_many(net, a1, [a2.ip, a3.ip])
        assert got == {a2.ip: 2, a3.ip: 2}, f"a1 not back with its own identity: {got}"

    def test_spoofed_arp_poisons_nobody(self, net: Net) -> None:
        """a1 claims a3's address towards a2 (same host) and a2's towards a3 (across hosts):
        gratuitous requests, broadcast replies (busybox arping -U/-A) and crafted unicast
        replies. The victims, who already know the real owners, keep the right MACs."""
        lab, a1, a2, a3 = net.lab, net["a1"], net["a2"], net["a3"]
        c = net.container(a1)
        assert ping_many(net, a2, [a3.ip]) == {a3.ip: 2}   # both have live entries that a
        assert ping_many(net, a3, [a2.ip]) == {a2.ip: 2}   # poisoning would overwrite
        time.sleep(1.1)  # past the kernel's ARP locktime (1 s), so an update would be taken
        caps = {v.short: lab.capture(net.container(v), "eth1", f"arp and ether src {a1.mac}")
                for v in (a2, a3)}
        try:
            for claimed, victim in ((a3.ip, a2), (a2.ip, a3)):
                c.exec(["ip", "addr", "add", f"{claimed}/32", "dev", "eth1"])
                for mode in ("-U", "-A"):
                    c.exec(["busybox", "arping", mode, "-c", "2", "-w", "1", "-I", "eth1",
                            "-s", claimed, victim.ip], check=False)  # fmt: skip
                send_arp_reply(net, a1, victim.mac, claimed, victim)
                c.exec(["ip", "addr", "del", f"{claimed}/32", "dev", "eth1"])
        finally:
            for claimed in (a2.ip, a3.ip):
                c.exec(["ip", "addr", "del", f"{claimed}/32", "dev", "eth1"], check=False)
        seen = {short: cap.stop() for short, cap in caps.items()}
        assert not any(s.count for s in seen.values()), {k: s.lines for k, s in seen.items()}
        assert a3.mac in neigh(net, a2, a3.ip), neigh(net, a2, a3.ip)
        assert a2.mac in neigh(net, a3, a2.ip), neigh(net, a3, a2.ip)
        assert ping_many(net, a2, [a3.ip]) == {a3.ip: 2}
        assert ping_many(net, a3, [a2.ip]) == {a2.ip: 2}

    def test_duplicates_in_a_pod_are_refused_and_change_nothing(self, net: Net) -> None:
        lab, a1 = net.lab, net["a1"]
        x1 = Member("x1", "h1", 8, PREFIX + "24", name=lab.add_container("h1", "x1").name)
        ports_before, flows_before = ports_by_container(lab), all_loris_flows(lab)
        ifaces_before = lab.ovs("h1").vsctl("list-ifaces", "br-int")
        d1 = net["d1"]  # an address leased by DHCP is taken just the same
        for args, message in (
                ([a1.ip + "/24", "7"], f"IP {a1.ip} already used by {a1.name} in pod 7"),
                ([d1.ip + "/24", "7"], f"IP {d1.ip} already used by {d1.name} in pod 7"),
                ([PREFIX + "14/24", "7", "--mac", a1.mac],
                 f"MAC {a1.mac} already used by {a1.name} in pod 7")):
            r = lab.loris("h1", "connect", x1.name, *args)
            assert r.returncode == 1, r.stdout
            assert r.stderr.strip().splitlines() == [f"loris connect: {message}"], r.stderr
        assert ports_by_container(lab) == ports_before
        assert all_loris_flows(lab) == flows_before
        assert lab.ovs("h1").vsctl("list-ifaces", "br-int") == ifaces_before
        assert net.eth1(x1) is None
        # The same MAC in another pod is fine, even on the same host as its first owner.
        port = cli_connect_json(lab, "x1", x1.ip + "/24", 8, "--mac", a1.mac)
        x1.mac, x1.port_id = port["mac"], port["id"]
        assert x1.mac == a1.mac
        net.members["x1"] = x1
        cap = lab.capture(net.container(a1), "eth1", "icmp")
        pod8 = [m for m in net.alive() if m.pod == 8 and m is not x1]
        assert ping_many(net, x1, [m.ip for m in pod8]) == {m.ip: 2 for m in pod8}
        assert ping_many(net, net["b2"], [x1.ip]) == {x1.ip: 2}
        assert cap.stop().count == 0  # x1's traffic never went to a1
        assert ping_many(net, net["a3"], [a1.ip]) == {a1.ip: 2}
        assert net["a1"].mac in neigh(net, net["a3"], a1.ip)

    def test_restarted_containers_are_reachable_again_with_the_same_ip_and_mac(
            self, net: Net) -> None:
        """b2 (static) and d1 (DHCP) restart: nobody acts, both come back as they were."""
        restarted = [net["b2"], net["d1"]]
        before = {m.short: ports_by_container(net.lab)[m.name] for m in restarted}
        in_parallel(lambda m: net.container(m).restart(), restarted)
        for m in restarted:
            # The old namespace may outlive the restart for a while (the kernel destroys it
            # asynchronously): look at eth1 in the new one.
            wait_for(lambda m=m: (e := net.eth1(m)) is not None and e["address"] == m.mac
                     and inet(e) == [m.ip], 20, f"eth1 of {m.short} re-made")  # fmt: skip
        peers = {"b2": [net["b1"], net["x1"]], "d1": [net["a1"], net["a3"]]}
        for m in restarted:
            wait_for(lambda m=m: ping_many(net, peers[m.short][0], [m.ip], count=1,
                                           wait=1)[m.ip] == 1, 15, f"{m.short} reachable again")
            assert ping_many(net, m, [p.ip for p in peers[m.short]]) == \
                {p.ip: 2 for p in peers[m.short]}
            after = ports_by_container(net.lab)[m.name]
            keys = ("id", "ip", "mac", "ofport", "lease")
            assert [after[k] for k in keys] == [before[m.short][k] for k in keys]
            assert after["state"] == "active" and after["error"] is None

    def test_removed_container_leaves_no_flow_on_any_bridge(self, net: Net) -> None:
        lab, b3 = net.lab, net["b3"]
        hosts = [h.name for h in lab.hosts]
        before = flows_of_port(lab, hosts, b3.port_id, b3.mac)
        # its own host's br-int (port flows), the others' br-int (ARP answer) and br-tun
        # (unicast into the tunnel to h3)
        assert {f.split(":")[0] for f in before} == {"h1 br-int", "h1 br-tun", "h2 br-int",
                                                     "h2 br-tun", "h3 br-int"}, before
        lab.remove_container("b3")
        del net.members["b3"]
        wait_for(lambda: b3.name not in ports_by_container(lab), 15,
                 "the removed container's port deleted")
        wait_for(lambda: not flows_of_port(lab, hosts, b3.port_id, b3.mac), 10,
                 "its flows gone from every bridge")  # fmt: skip
        wait_for(lambda: f"lp{b3.port_id}" not in lab.ovs("h3").vsctl("list-ifaces", "br-int"),
                 10, "its OVS port removed")  # fmt: skip
        assert f"lp{b3.port_id}" not in lab.run("h3", ["ip", "-br", "link"]).stdout
        # b3 was pod 8's last member on h3: h3 keeps nothing of pod 8, and the other hosts
        # no longer flood pod 8's broadcasts to h3.
        assert not [f for b in ("br-int", "br-tun") for f in loris_flows(lab, "h3", b)
                    if cookie_of(f)[:2] == (Kind.POD, 8)]  # fmt: skip
        for host in ("h1", "h2"):
            to_h3 = lab.ovs(host).vsctl("get", "Interface", "lt-c612000d", "ofport").strip()
            flood = [f for f in loris_flows(lab, host, "br-tun")
                     if cookie_of(f)[:2] == (Kind.POD, 8) and "table=10," in f]
            assert flood and not [f for f in flood if re.search(rf"output:{to_h3}\b", f)], flood
        assert b3.name not in lab.loris("h1", "ports").stdout
        assert ping_many(net, net["b1"], [net["b2"].ip]) == {net["b2"].ip: 2}

    def test_controller_restart_loses_no_packet(self, net: Net) -> None:
        lab = net.lab
        ports_before, flows_before = ports_by_container(lab), all_loris_flows(lab)
        count = 75  # 15 s: the restart and resynchronisation take about 5
        pinger = start_ping(net, "ping-ctl", net["a1"], net["a3"], count)
        time.sleep(1)
        lab.processes["controller"].stop()
        time.sleep(2)  # traffic flows on without it (fail_mode=secure)
        restarted = time.time()
        lab.start_controller()
        wait_synced(lab, since=restarted)
        finish_ping(pinger, count)
        assert ports_by_container(lab) == ports_before
        assert all_loris_flows(lab) == flows_before

    def test_agent_restart_loses_no_packet(self, net: Net) -> None:
        lab = net.lab
        flows_before = all_loris_flows(lab)
        count = 50  # 10 s: the restart takes about 3
        pinger = start_ping(net, "ping-agent", net["a3"], net["a1"], count)
        time.sleep(1)
        assert lab.processes["agent-h1"].stop() == 0
        restarted = time.time()
        lab.start_agent("h1")

        def agent_back() -> bool:
            h1 = lab.api("GET", "/v1/hosts/h1")[1]
            return h1["agent"]["polling"] and h1["agent"]["last_seen"] > restarted and \
                h1["actual_version"] == h1["desired_version"]
        wait_for(agent_back, 20, "agent h1 back and in sync")
        finish_ping(pinger, count)
        assert all_loris_flows(lab) == flows_before

    def test_cleanup_removes_loris_from_one_host_and_the_others_keep_working(
            self, net: Net) -> None:
        lab = net.lab
        lab.processes["agent-h3"].stop()
        r = lab.loris("h3", "cleanup")
        assert r.returncode == 0 and "host h3 deregistered" in r.stdout, r.stderr
        assert host_view(lab, "h3") == net.pristine_h3  # no bridge, veth or tunnel port
        ovs = lab.ovs("h3")
        assert "loris" not in ovs.vsctl("--columns=name,external_ids", "list", "Interface")
        for m in [m for m in net.alive() if m.host == "h3"]:
            assert net.eth1(m) is None, m.short
        status = json.loads(lab.loris("h1", "status", "--json").stdout)
        assert sorted(h["id"] for h in status) == ["h1", "h2"]
        assert not [p for p in ports_by_container(lab).values() if p["host"] == "h3"]
        for host in ("h1", "h2"):
            wait_for(lambda h=host: "lt-c612000d" not in lab.ovs(h).vsctl("list-ports", "br-tun"),
                     10, f"{host} dropping its tunnel to h3")  # fmt: skip
        assert ping_many(net, net["a1"], [net["a3"].ip]) == {net["a3"].ip: 2}
        assert ping_many(net, net["b2"], [net["b1"].ip]) == {net["b1"].ip: 2}
