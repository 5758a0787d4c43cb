"""Three controllers on the store on etcd, a 3-member etcd cluster, three hosts (docs/ha.md).

The agents are given all three REST URLs. Checked: every host has exactly one master and
every bridge one MASTER connection; a rolling restart of the three controllers, one at a
time, under a continuous ping between containers on two hosts, loses no packet; kill -9 of
the etcd leader: connects resume after the election (the pause is printed); a master cut
off from etcd but still connected to its switches fences itself and another takes over at
a newer generation.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator

import pytest
from ha_lab import (
    CLUSTER_HOSTS,
    CLUSTER_PORTS,
    TTL,
    OpenFlowProbe,
    agents_heard,
    client,
    ovs_controllers,
    registry,
    settled,
    start_controller,
    three_controllers,
)
from helpers import ping_counts, ping_in_background, pings, wait_for

from controller.etcd import EtcdClient
from controller.ha import DEFAULT_PREFIX
from lab import Lab
from lab.naming import CONTROL_IP

pytestmark = [pytest.mark.integration]

PORTS = CLUSTER_PORTS
HOSTS = CLUSTER_HOSTS
PROBE_PORT = 6656                        # the test's own OpenFlow connection


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict]:
    with three_controllers() as lab_and_parts:
        yield lab_and_parts


def test_every_host_has_one_master(cluster):
    lab = cluster["lab"]
    wait_for(lambda: settled(lab), 90, "three healthy controllers, one master per host")
    reg = registry(lab, PORTS["c2"][0])
    print("masters:", {c: e["masters"] for c, e in reg.items()})


def _connect(lab: Lab, via: str, name: str, host: str, ip: str) -> tuple[int, object]:
    c = lab.container(name) if name in lab.containers else lab.add_container(host, name,
                                                                               kind="netns")
    body = {"host": host, "container": c.name, "ip": ip, "pod": 7}
    reply = client(lab, PORTS[via][0], timeout=90).send("POST", "/v1/ports", body)
    return reply.status, reply.body


def test_rolling_restart_under_ping_loses_nothing(cluster):
    lab = cluster["lab"]
    wait_for(lambda: settled(lab), 90, "the cluster settled")
    assert _connect(lab, "c1", "a", "h1", "198.18.135.1/24")[0] == 201
    assert _connect(lab, "c2", "b", "h2", "198.18.135.2/24")[0] == 201
    wait_for(lambda: pings(lab, "a", "198.18.135.2", count=1, wait=1), 30, "a pings b")
    pinger = ping_in_background(lab, "a", "198.18.135.2", interval=0.02)
    for cid in PORTS:
        started = time.monotonic()
        cluster["procs"][cid].stop()
        others = tuple(c for c in PORTS if c != cid)
        wait_for(lambda others=others: settled(lab, via=others[0], alive=others), TTL + 30,
                 f"the others master every host while {cid} is down")
        cluster["procs"][cid] = start_controller(lab, cid, *PORTS[cid], cluster["env"])
        wait_for(lambda others=others: settled(lab, via=others[0]), 60,
                 f"{cid} back in the registry")
        print(f"{cid} restarted, cluster settled after {time.monotonic() - started:.1f} s")
    pinger.send_signal(signal.SIGINT)
    out, _ = pinger.communicate(timeout=10)
    sent, received = ping_counts(out)
    answered = {int(n) for n in re.findall(r"icmp_seq=(\d+) ttl", out)}
    lost = sorted(set(range(1, sent)) - answered)
    print(f"rolling restart: pings {received}/{sent}")
    assert sent > 200 and not lost, f"lost icmp_seq {lost}; {out[-400:]}"


def test_connects_resume_after_the_etcd_leader_is_killed(cluster):
    lab, etcd = cluster["lab"], cluster["etcd"]
    wait_for(lambda: settled(lab), 90, "the cluster settled")
    leader = etcd.leader()
    killed = time.monotonic()
    etcd.kill(leader)
    resumed = None
    for n in range(3, 40):
        status, body = _connect(lab, "c3", f"k{n}", "h3", f"198.18.135.{n}/24")
        if status == 201:
            resumed = time.monotonic() - killed
            break
        assert status == 503, body              # the store named, never a half-made port
        time.sleep(0.2)
    assert resumed is not None, "no connect succeeded after the etcd leader was killed"
    print(f"etcd leader {leader} killed: a connect through c3 succeeded after {resumed:.2f} s")
    etcd.restart(leader)
    wait_for(lambda: settled(lab), 60, "the cluster settled after the leader came back")
    assert pings(lab, f"k{n}", "198.18.135.1", count=2, interval=0.2)


def test_a_master_cut_off_from_etcd_stops_and_another_takes_over(cluster):
    """Issue 13, lab test 4: the master of h1 keeps its switch connections but loses etcd
    (its only member hangs); it fences itself within its lease, another controller takes
    h1 at a newer generation, and OVS has one master per bridge throughout."""
    lab, etcd = cluster["lab"], cluster["etcd"]
    wait_for(lambda: settled(lab), 90, "the cluster settled")
    master = next(c for c, e in registry(lab, PORTS["c1"][0]).items() if "h1" in e["masters"])
    leader = etcd.leader()
    member = next(m for m in etcd.members if m is not leader)
    # the master restarted with one etcd member only: pausing it cuts the master off
    cluster["procs"][master].stop()
    env = {**cluster["env"], "LORIS_ETCD_ENDPOINTS": member.client_url}
    cluster["procs"][master] = start_controller(lab, master, *PORTS[master], env)
    via = next(c for c in PORTS if c != master)
    wait_for(lambda: settled(lab, via=via) and "h1" in registry(lab, PORTS[via][0])[master][
        "masters"], 90, f"{master} master of h1 again")
    others = [m.client_url for m in etcd.members if m is not member]    # the test's view
    with EtcdClient(others, socket_factory=etcd.socket_factory) as kv:
        before = kv.get(DEFAULT_PREFIX + "masters/h1").create_revision
        etcd.pause(member)
        paused = time.monotonic()
        try:
            wait_for(lambda: (k := kv.get(DEFAULT_PREFIX + "masters/h1")) is not None
                     and k.text != master, TTL + 5, "another master of h1")
            takeover = time.monotonic() - paused
            key = kv.get(DEFAULT_PREFIX + "masters/h1")
            assert key.create_revision > before
            wait_for(lambda: "fenced:" in cluster["procs"][master].log_text(), TTL + 5,
                     f"{master} fencing itself")
            new = f"tcp:{CONTROL_IP}:{PORTS[key.text][1]}"

            def one_master() -> bool:       # OVS refreshes these columns about every second
                return all([t for t, r in ovs_controllers(lab, "h1", b).items()
                            if r["role"] == "master"] == [new] for b in ("br-int", "br-tun"))

            wait_for(one_master, 10, f"{new} the only master of h1's bridges")
            probe = OpenFlowProbe(lab, "h1", PROBE_PORT)
            try:
                assert probe.role(0, 0) == ("reply", 1, key.create_revision)
            finally:
                probe.close()
            print(f"{master} cut off from etcd: {key.text} master of h1 after "
                  f"{takeover:.2f} s (TTL {TTL} s), generation {before} -> "
                  f"{key.create_revision}")
        finally:
            etcd.resume(member)
    wait_for(lambda: settled(lab), 90, "the cluster settled after etcd came back")


def test_etcd_without_quorum_fails_fast_keeps_traffic_and_converges(cluster):
    """Issue 13, lab test 3: SIGSTOP two of the three etcd members. Connects fail fast with
    503 naming the store, every controller fences itself (no master can be confirmed), the
    traffic between existing containers flows on; after SIGCONT everything converges
    without anyone acting."""
    lab, etcd = cluster["lab"], cluster["etcd"]
    wait_for(lambda: settled(lab), 90, "the cluster settled")
    wait_for(lambda: pings(lab, "a", "198.18.135.2", count=1, wait=1), 30, "a pings b")
    pinger = ping_in_background(lab, "a", "198.18.135.2", interval=0.05)
    fenced_before = {c: p.log_text().count("fenced:") for c, p in cluster["procs"].items()}
    paused = [m for m in etcd.members if m.running][:2]
    for m in paused:
        etcd.pause(m)
    try:
        asked = time.monotonic()
        status, body = _connect(lab, "c1", "q1", "h3", "198.18.135.60/24")
        answered = time.monotonic() - asked
        assert status == 503 and "etcd" in str(body), body
        wait_for(lambda: all(p.log_text().count("fenced:") > fenced_before[c]
                             for c, p in cluster["procs"].items()),
                 TTL + 10, "every controller fenced")
    finally:
        for m in paused:
            etcd.resume(m)
    wait_for(lambda: settled(lab), 90, "the cluster settled after the quorum came back")
    pinger.send_signal(signal.SIGINT)
    out, _ = pinger.communicate(timeout=10)
    sent, _received = ping_counts(out)
    replies = {int(n) for n in re.findall(r"icmp_seq=(\d+) ttl", out)}
    lost = sorted(set(range(1, sent)) - replies)
    print(f"no quorum: a connect answered 503 after {answered:.2f} s; pings lost {lost}")
    assert sent > 50 and not lost, out[-400:]
    wait_for(lambda: agents_heard(lab), 30, "every agent heard again")
    status, body = _connect(lab, "c1", "q1", "h3", "198.18.135.60/24")
    assert status == 201, body
