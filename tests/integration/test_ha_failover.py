"""Issue 13, lab tests 1 and 6: three controllers on a 3-member etcd, three hosts
(ha_lab.three_controllers), clients given all three controllers as the CLI is.

1. kill -9 the OpenFlow master of h1 during a 20 ms ping between containers on h1 and h2
   and a burst of 100 concurrent connects into their pod spread over the three
   controllers (the containers on h3: see the test): no ping is lost, from before the
   burst until every connect has ended; every acknowledged connect is in the store, wired on its
   host's br-int with its ofport, has its flows on every host of its pod and answers a
   ping; every refused one leaves nothing (no row, no veth, no OVS port); one whose
   controller was killed before it answered (the client cannot know the outcome: the
   commit may have come first) either left nothing once the killed controller's lease
   ended (the survivors drop its unfinished connects: controller/recovery.py) or is made
   in full, never half; another controller masters h1 within the lease TTL + 1 s (the
   takeover time is printed).
2. 1,000 connect/disconnect cycles through the three controllers (a connect refused at
   once as agent_away, by an overloaded controller, is allowed up to 2 %: it makes
   nothing) leave no key behind in etcd (the key sets of the store's and the registry's
   prefixes are unchanged, but for the audit trail and the writers' bookkeeping) and no
   lease but the controllers' own.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from functools import partial

import pytest
from convergence import lp_ovs_ports, lp_veths
from ha_lab import (
    CLUSTER_HOSTS,
    CLUSTER_PORTS,
    TTL,
    agents_heard,
    client,
    cluster_urls,
    ovs_controllers,
    registry,
    settled,
    start_controller,
    three_controllers,
)
from helpers import (
    cookie_of,
    interface,
    loris_flows,
    ping_counts,
    ping_in_background,
    pings,
    wait_for,
)

from controller.etcd import EtcdClient
from controller.etcd_layout import DEFAULT_PREFIX as STORE_PREFIX
from controller.ha import DEFAULT_PREFIX as HA_PREFIX
from flows import Kind
from hostagent.client import Client, ControllerUnreachable
from lab import Lab
from lab.netns import socket_in_netns

pytestmark = [pytest.mark.integration]

BURST = 100
POD, NET = 41, "198.18.141"
# store keys that legitimately come and go: the audit trail, each writer's last
# transaction, the commit marker and id sequences
CHANGING = ("events/", "idx/events/", "txns/", "meta/")


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict]:
    with three_controllers() as parts:
        lab = parts["lab"]
        wait_for(lambda: settled(lab), 90, "three healthy controllers, one master per host")
        wait_for(lambda: agents_heard(lab), 30, "every agent heard")
        body = {"id": POD, "subnet": f"{NET}.0/24"}
        assert client(lab, CLUSTER_PORTS["c1"][0]).send("POST", "/v1/pods", body).status == 201
        yield parts


def clients(lab: Lab, first: str, timeout: float = 120) -> Client:
    """The CLI's REST client with every controller, `first` first."""
    return Client(cluster_urls(first), timeout=timeout, token_file=str(lab.operator_token_file),
                  socket_factory=partial(socket_in_netns, lab.netns_path("ctl")))


def connect(lab: Lab, via: str, name: str, host: str, ip: str) -> tuple[object, object]:
    """(status, body) of POST /v1/ports through the controllers, `via` first; ("no answer",
    why) when the controller that took the request died before answering."""
    body = {"host": host, "container": name, "ip": ip, "pod": POD}
    try:
        reply = clients(lab, via).send("POST", "/v1/ports", body)
    except (OSError, ControllerUnreachable) as e:
        return "no answer", str(e)
    return reply.status, reply.body


def ports_now(lab: Lab, via: str) -> dict[str, dict]:
    return {p["container"]: p for p in clients(lab, via).request("GET", "/v1/ports")}


def member_flows(lab: Lab, host: str) -> set[int]:
    """Port ids with a MEMBER flow on the host's br-int."""
    return {c[1] for f in loris_flows(lab, host, "br-int")
            if (c := cookie_of(f)) is not None and c[0] == Kind.MEMBER}


def problems(lab: Lab, via: str, made: dict[str, str], unmade: dict[str, str],
             unknown: dict[str, str]) -> list[str]:
    """What keeps the lab from the promise (containers' short names -> their hosts): `made`
    present and wired, `unmade` gone without a trace, `unknown` (the controller died with
    the request: the outcome is unknown to the client) either, never half-made."""
    ports, out = ports_now(lab, via), []
    lp = {h: (lp_veths(lab, h), lp_ovs_ports(lab, h)) for h in CLUSTER_HOSTS}
    members = {h: member_flows(lab, h) for h in CLUSTER_HOSTS}
    pod_hosts = {p["host"] for p in ports.values() if p["pod"] == POD}
    for h, (veths, ovs_ports) in lp.items():
        want = {f"lp{p['id']}" for p in ports.values() if p["host"] == h}
        if veths != want or set(ovs_ports) != want:
            out.append(f"{h}: veths {sorted(veths - want)} / OVS ports "
                       f"{sorted(set(ovs_ports) - want)} no port holds; missing "
                       f"{sorted(want - veths)} / {sorted(want - set(ovs_ports))}")
    present = {n: h for n, h in unknown.items() if lab.container(n).name in ports}
    for name, host in sorted({**made, **present}.items()):
        p = ports.get(lab.container(name).name)
        if p is None or p["state"] != "active":
            out.append(f"{name} {'acknowledged' if name in made else 'unanswered'} but "
                       f"{p and p['state']}")
            continue
        on_bridge = lp[host][1].get(f"lp{p['id']}")
        if on_bridge != p["ofport"] or on_bridge is None:
            out.append(f"{name}: ofport {p['ofport']} in the store, {on_bridge} on {host}'s "
                       "br-int")
        missing = [h for h in sorted(pod_hosts) if p["id"] not in members[h]]
        if missing:
            out.append(f"{name} (port {p['id']}): no flows on {missing}")
    for name in sorted(unmade.keys() | (unknown.keys() - present.keys())):
        if lab.container(name).name in ports:
            out.append(f"{name} refused but in the store: "
                       f"{ports[lab.container(name).name]['state']}")
        if interface(lab, name) is not None:
            out.append(f"{name} {'refused' if name in unmade else 'unanswered'}, not in the "
                       "store, but has its interface")
    return out


def wait_clean(lab: Lab, via: str, outcomes: tuple[dict[str, str], ...], timeout: float,
               results: dict) -> None:
    deadline = time.monotonic() + timeout
    while (found := problems(lab, via, *outcomes)) and time.monotonic() < deadline:
        time.sleep(1)
    named = sorted({n for line in found if (n := line.split(" ", 1)[0]) in results})
    assert not found, "\n".join(found[:30] + [f"{n}: {results[n]}" for n in named[:10]])


def test_master_killed_under_ping_and_a_burst_of_connects(cluster):
    lab, etcd, procs = cluster["lab"], cluster["etcd"], cluster["procs"]
    a = lab.add_container("h1", "a", kind="netns")
    b = lab.add_container("h2", "b", kind="netns")
    assert connect(lab, "c1", a.name, "h1", f"{NET}.11/24")[0] == 201
    assert connect(lab, "c2", b.name, "h2", f"{NET}.12/24")[0] == 201
    wait_for(lambda: pings(lab, "a", f"{NET}.12", count=1, wait=1), 30, "a pings b")
    # The burst's containers are on h3, off the ping's path: adding a port to a userspace
    # (netdev) datapath drops a packet in flight now and then, with or without Loris
    # (measured: 7 of 260 pings every 20 ms lost while 60 veths were added by ovs-vsctl
    # alone), and the lab has no kernel datapath. h1 and h2 still get every new member's
    # flows (a and b are in the pod), through the failover.
    burst = {f"x{i}": ("h3", f"{NET}.{20 + i}/24", list(CLUSTER_PORTS)[i % 3])
             for i in range(BURST)}
    for name, (host, _, _) in burst.items():
        lab.add_container(host, name, kind="netns")
    master = next(c for c, e in registry(lab, CLUSTER_PORTS["c1"][0]).items()
                  if "h1" in e["masters"])
    results: dict[str, tuple[object, object]] = {}

    def one(name: str) -> None:
        host, ip, via = burst[name]
        results[name] = connect(lab, via, lab.container(name).name, host, ip)

    pinger = ping_in_background(lab, "a", f"{NET}.12", interval=0.02, timestamps=True)
    threads = [threading.Thread(target=one, args=(n,)) for n in burst]
    for t in threads:
        t.start()
    wait_for(lambda: sum(r[0] == 201 for r in results.values()) >= 10, 120,
             "the first ten connects of the burst")
    with EtcdClient(etcd.endpoints, socket_factory=etcd.socket_factory) as kv:
        procs[master].kill()
        killed, killed_at = time.monotonic(), time.time()
        while (key := kv.get(HA_PREFIX + "masters/h1")) is None or key.text == master:
            assert time.monotonic() - killed < TTL + 10, "no new master of h1"
            time.sleep(0.05)
        takeover = time.monotonic() - killed
    in_flight = BURST - len(results)
    for t in threads:
        t.join(300)
    survivor = key.text
    made = {n: burst[n][0] for n, r in results.items() if r[0] == 201}
    unmade = {n: burst[n][0] for n, r in results.items() if isinstance(r[0], int) and
              r[0] != 201}
    unknown = {n: burst[n][0] for n, r in results.items() if r[0] == "no answer"}
    assert len(made) + len(unmade) + len(unknown) == BURST, results
    assert all(burst[n][2] == master for n in unknown), \
        "only the killed controller may leave a request unanswered"
    wait_clean(lab, survivor, (made, unmade, unknown), TTL + 60, results)
    finished = {n for n in unknown if lab.container(n).name in ports_now(lab, survivor)}
    made.update({n: unknown[n] for n in finished})
    unanswered = [n for n in made if not pings(lab, "a", burst[n][1].split("/")[0],
                                               count=1, wait=2)]
    pinger.send_signal(signal.SIGINT)
    out, _ = pinger.communicate(timeout=10)
    sent, received = ping_counts(out)
    replies = {int(n): float(t) for t, n in
               re.findall(r"\[([\d.]+)\] \d+ bytes from .*icmp_seq=(\d+) ttl", out)}
    lost = sorted(set(range(1, sent)) - set(replies))
    # the kill and the takeover: from a second before the kill until the new master has
    # reconciled h1 (the lease, then a few seconds), by the replies around each lost one
    window = (killed_at - 1, killed_at + TTL + 5)
    around_kill = [n for n in lost if window[0] <= max(
        (t for m, t in replies.items() if m < n), default=0) <= window[1]]
    why = sorted({str(r[1])[:120] for r in results.values() if isinstance(r[0], int) and
                  r[0] != 201})
    print(f"\nkill -9 of {master}, master of h1, {in_flight} of {BURST} connects in flight: "
          f"{survivor} master of h1 after {takeover:.2f} s (TTL {TTL} s); "
          f"{len(made) - len(finished)} acknowledged, {len(unmade)} refused ({why[:3]}), "
          f"{len(unknown)} unanswered ({len(finished)} of them made in full, the others "
          f"left nothing); pings {received}/{sent}, {len(around_kill)} lost from 1 s before "
          f"the kill to {TTL + 5} s after, {len(lost)} in all (icmp_seq {lost[:10]})")
    assert not unanswered, f"acknowledged but not answering: {unanswered}"
    assert sent > 100 and not lost, f"lost icmp_seq {lost} ({len(around_kill)} around the kill)"
    assert takeover <= TTL + 1, f"takeover after {takeover:.2f} s"
    revive(cluster)
    for name, (_, _, via) in burst.items():          # the soak starts from the anchors
        if name in made:
            port = ports_now(lab, via)[lab.container(name).name]
            assert clients(lab, via).send("DELETE", f"/v1/ports/{port['id']}").status == 204


def revive(cluster: dict) -> None:
    """Start again the controllers that are not running (the one the burst test killed,
    also when that test failed before it could), and wait until the cluster settled."""
    lab, procs = cluster["lab"], cluster["procs"]
    for cid, proc in sorted(procs.items()):
        if not proc.alive:
            procs[cid] = start_controller(lab, cid, *CLUSTER_PORTS[cid], cluster["env"])
    wait_for(lambda: settled(lab), 90, "every controller running and the cluster settled")
    wait_for(lambda: agents_heard(lab), 30, "every agent heard")


# The issue's 1,000 cycles: 210 s on 2 quiet cores since the controllers' own steps read
# the mirror (12 min before); LORIS_HA_SOAK_CYCLES sets another count.
CYCLES = int(os.environ.get("LORIS_HA_SOAK_CYCLES", "1000"))
SOAK_CLIENTS = 6                 # two per controller, each cycling two containers
REFUSED_MAX = 0.02               # connects refused at once (an overloaded machine)
# Refusals that make nothing (the keys are compared afterwards): an agent judged away, or a
# bridge reconnecting to the controller asked (seen once right after the burst test).
REFUSED_AT_ONCE = ("agent_away", "switch_not_connected")


def store_keys(kv: EtcdClient) -> set[str]:
    """The store's keys but those that legitimately come and go (CHANGING)."""
    keys = {k.key[len(STORE_PREFIX):] for k in kv.list_prefix(STORE_PREFIX).kvs}
    return {k for k in keys if not k.startswith(CHANGING)}


def ha_keys(kv: EtcdClient) -> set[str]:
    return {k.key for k in kv.list_prefix(HA_PREFIX).kvs}


def controllers_leases(kv: EtcdClient) -> set[int]:
    return {k.lease for k in kv.range(HA_PREFIX + "controllers/", prefix=True).kvs}


def test_thousand_cycles_through_three_controllers_leave_no_key_or_lease(cluster):
    lab, etcd = cluster["lab"], cluster["etcd"]
    revive(cluster)
    # A connect checks the switches are connected to the controller asked: after the burst
    # test restarted c1, wait until every bridge is connected to all three again.
    wait_for(lambda: all(len(t) == 3 and all(r["connected"] for r in t.values())
                         for t in (ovs_controllers(lab, h, b) for h in CLUSTER_HOSTS
                                   for b in ("br-int", "br-tun"))),
             60, "every bridge connected to the three controllers")
    # anchors: the pod stays on every host, so its local VLANs and flows stay too
    for name, host, last in (("a", "h1", 11), ("b", "h2", 12), ("n3", "h3", 13)):
        c = lab.container(name) if name in lab.containers else lab.add_container(
            host, name, kind="netns")
        if c.name not in ports_now(lab, "c1"):
            assert connect(lab, "c1", c.name, host, f"{NET}.{last}/24")[0] == 201
    slots = []
    for c in range(SOAK_CLIENTS):
        pair = []
        for j in range(2):
            host = CLUSTER_HOSTS[(c + j) % 3]
            pair.append((lab.add_container(host, f"s{c}{j}", kind="netns").name, host,
                         f"{NET}.{200 + 2 * c + j}/24"))
        slots.append((list(CLUSTER_PORTS)[c % 3], pair))
    kv = EtcdClient(etcd.endpoints, socket_factory=etcd.socket_factory)
    keys_before, ha_before = store_keys(kv), ha_keys(kv)
    counter = itertools.count()
    failures: list[str] = []
    refused: list[str] = []          # 503 agent_away: refused at once, nothing made

    def cycle(c: int) -> None:
        via, pair = slots[c]
        api = clients(lab, via, timeout=60)
        while (i := next(counter)) < CYCLES:
            name, host, ip = pair[i % 2]
            reply = api.send("POST", "/v1/ports", {"host": host, "container": name, "ip": ip,
                                                  "pod": POD})
            if reply.status != 201:
                code = (reply.body or {}).get("error", {}).get("code") \
                    if isinstance(reply.body, dict) else None
                (refused if code in REFUSED_AT_ONCE else failures).append(
                    f"cycle {i}: connect {name} via {via}: {reply.status} {reply.body}")
                continue
            gone = api.send("DELETE", f"/v1/ports/{reply.body['id']}")
            if gone.status != 204:
                failures.append(f"cycle {i}: disconnect {name}: {gone.status} {gone.body}")

    started = time.monotonic()
    threads = [threading.Thread(target=cycle, args=(c,)) for c in range(SOAK_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert not failures, failures[:5]
    assert len(refused) <= REFUSED_MAX * CYCLES, refused[:5]
    names = {name for _, pair in slots for name, _, _ in pair}
    wait_for(lambda: not names & set(ports_now(lab, "c2")) and all(
        interface(lab, n.split("-c-", 1)[1]) is None for n in names), 30,
        "every soak container disconnected")
    keys_after, ha_after = store_keys(kv), ha_keys(kv)
    leases, live = controllers_leases(kv), set(kv.leases())
    kv.close()
    print(f"\nsoak on three controllers: {CYCLES} cycles, {SOAK_CLIENTS} clients, in "
          f"{elapsed:.0f} s ({CYCLES / elapsed:.1f} cycles/s, {len(refused)} connects "
          f"refused as agent_away); {len(keys_after)} store keys "
          f"(the audit trail and bookkeeping aside), {len(live)} leases")
    assert keys_after == keys_before, (sorted(keys_after - keys_before)[:20],
                                       sorted(keys_before - keys_after)[:20])
    assert ha_after == ha_before, (sorted(ha_after ^ ha_before))
    assert live == leases and len(leases) == 3, (live, leases)
    assert pings(lab, "a", f"{NET}.13", count=2, interval=0.2)
