"""Observability end to end: `loris trace` on the live network, /metrics, port counters.

One 3-host lab (controller, agents) for the module, with the acceptance suite's layout
(tests/e2e/test_acceptance.py): pods 7 and 8 share a subnet, the global pod 0 has none.
a3 is a Docker container, the others bare namespaces (cheaper; `netns:NAME` to Loris).
The tests build on each other in order: the pairs first, on a healthy lab.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import subprocess
from functools import partial

import pytest
from helpers import connect, pings, wait_for
from prometheus_client.parser import text_string_to_metric_families

from flows import Kind
from hostagent.client import Client
from lab import Lab
from lab.naming import CONTROL_IP
from lab.netns import socket_in_netns

pytestmark = [pytest.mark.integration, pytest.mark.docker]

SUBNET = "198.18.135.0/24"
PREFIX = "198.18.135."
LAYOUT = [("a1", "h1", 7, 11), ("a2", "h1", 7, 12), ("a3", "h2", 7, 13),
          ("b1", "h1", 8, 21), ("b2", "h2", 8, 22), ("b3", "h3", 8, 23),
          ("g1", "h2", 0, 31), ("g2", "h3", 0, 32)]  # fmt: skip
METRICS_PORT = 9780


@pytest.fixture(scope="module")
def lab(make_cluster) -> Lab:
    lab = make_cluster(hosts=3, wait="meshed",
                       controller_env={"LORIS_METRICS_LISTEN": f"{CONTROL_IP}:{METRICS_PORT}"})
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda s: lab.add_container(s[1], s[0], kind="docker" if s[0] == "a3"
                                                  else "netns"), LAYOUT))
    for pod in (7, 8):
        assert lab.api("POST", "/v1/pods", {"id": pod, "subnet": SUBNET})[0] == 201
    lab.ports = {}
    for short, _host, pod, last in LAYOUT:
        status, port = connect(lab, short, f"{PREFIX}{last}/24", pod)
        assert status == 201, port
        lab.ports[short] = port
    return lab


def name(lab: Lab, short: str) -> str:
    return lab.container(short).name


def trace(lab: Lab, src: str, dst: str | None = None, **body) -> dict:
    if dst is not None:
        body["destination"] = name(lab, dst)
    status, result = lab.api("POST", "/v1/trace", {"source": name(lab, src), **body})
    assert status == 200, result
    return result


def cli_trace(lab: Lab, src: str, *args: str) -> tuple[dict, str]:
    """`loris trace` on the source's host: (its JSON, the text of the same trace)."""
    host = lab.container(src).host.name
    r = lab.loris(host, "trace", name(lab, src), *args, "--json")
    assert r.returncode == 0, r.stderr
    text = lab.loris(host, "trace", name(lab, src), *args)
    assert text.returncode == 0, text.stderr
    return json.loads(r.stdout), text.stdout


def reaches(lab: Lab, src: str, dst: str) -> bool:
    ip = lab.ports[dst]["ip"].split("/")[0]
    return pings(lab, src, ip, count=2, interval=0.2, wait=1)


# ---------------------------------------------------------------------------------- tests


def test_every_ordered_pair_traces_as_it_pings(lab):
    pairs = [(a[0], b[0]) for a in LAYOUT for b in LAYOUT if a is not b]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        pinged = dict(zip(pairs, pool.map(lambda p: reaches(lab, *p), pairs), strict=True))
        traced = dict(zip(pairs, pool.map(lambda p: trace(lab, *p), pairs), strict=True))
    pods = {short: pod for short, _, pod, _ in LAYOUT}
    assert {p for p, ok in pinged.items() if ok} == {p for p in pairs if pods[p[0]] ==
                                                     pods[p[1]]}        # the lab is healthy
    wrong = {p: (pinged[p], t["verdict"]["text"]) for p, t in traced.items()
             if t["verdict"]["delivered"] != pinged[p]}
    assert not wrong, wrong
    for (src, dst), t in traced.items():
        assert all(not b["missing"] and not b["unwanted"] for b in t["flows"]), (src, dst)
        if pods[src] != pods[dst]:
            assert t["verdict"]["text"] == (f"dropped: {name(lab, src).removeprefix('netns:')} "
                                            f"(pod {pods[src]}) and "
                                            f"{name(lab, dst).removeprefix('netns:')} (pod "
                                            f"{pods[dst]}) are in different pods")
    across = traced[("a1", "a3")]["verdict"]["text"]
    assert across == (f"delivered to {name(lab, 'a3')} on h2 through the tunnel to "
                      f"198.18.0.12, key 8 (and the reply comes back)")


@pytest.mark.parametrize("src", ["a1", "b2", "g2"])   # one source on each host
def test_ofproto_trace_on_the_source_host_agrees(lab, src):
    for short, *_ in LAYOUT:
        if short == src:
            continue
        result, text = cli_trace(lab, src, name(lab, short))
        checks = result["switch"]
        assert checks and all(c["agrees"] for c in checks), (short, checks)
        assert {c["leg"] for c in checks} >= {"arp"}
        assert "ofproto/trace on " in text and "agrees" in text
        assert text.splitlines()[-1 if not result["verdict"]["fix"] else -2] == \
            f"verdict: {result['verdict']['text']}"


def test_a_flow_deleted_by_hand_is_named_missing_with_its_host(lab):
    ovs = lab.ovs("h1")
    cookie = next(int(m.group(1), 16) for line in ovs.dump_flows("br-tun", stats=False)
                  if (m := re.search(r"cookie=(0x[0-9a-f]+)", line))
                  and (int(m.group(1), 16) >> 52) & 0xF == Kind.MEMBER
                  and (int(m.group(1), 16) >> 28) & 0xFFFFFF == lab.ports["a3"]["id"])
    ovs.ofctl("del-flows", "br-tun", f"cookie={cookie:#x}/-1")
    try:
        assert not reaches(lab, "a1", "a3")
        result, text = cli_trace(lab, "a1", name(lab, "a3"))
        v = result["verdict"]
        assert not v["delivered"] and v["at"] == {"host": "h1", "bridge": "br-tun", "table": 10}
        assert v["text"].startswith(f"dropped at h1 br-tun table 10: the flow for "
                                    f"{name(lab, 'a3')}'s MAC into the tunnel to h2 that the "
                                    "controller wants is missing on the switch (last "
                                    "reconciled ")
        assert "loris resync h1" in v["fix"]
        [flows] = [b for b in result["flows"] if (b["host"], b["bridge"]) == ("h1", "br-tun")]
        assert [m["cookie"] for m in flows["missing"]] == [f"{cookie:#x}"]
        assert all(c["agrees"] for c in result["switch"]), result["switch"]   # same flows
        assert f"h1 br-tun: missing: the flow for {name(lab, 'a3')}'s MAC" in text
    finally:
        r = lab.loris("h1", "resync", "h1")
        assert r.returncode == 0, r.stderr
    assert reaches(lab, "a1", "a3")
    assert trace(lab, "a1", "a3")["verdict"]["delivered"]


def test_spoofing_cross_pod_unknown_and_own_addresses_are_explained(lab):
    a1 = name(lab, "a1").removeprefix("netns:")
    v = trace(lab, "a1", "a2", source_ip=PREFIX + "99")["verdict"]
    assert v["text"] == (f"dropped at h1 br-int table 0 (port security of {a1}): ARP sender IP "
                         f"{PREFIX}99 is not {a1}'s {PREFIX}11")
    v = trace(lab, "a1", "a3", protocol="tcp", port=80,
              source_mac="02:00:00:00:66:66")["verdict"]
    assert v["text"] == (f"dropped at h1 br-int table 0 (port security of {a1}): source MAC "
                         f"02:00:00:00:66:66 is not {a1}'s {lab.ports['a1']['mac']}")
    result, _ = cli_trace(lab, "a1", PREFIX + "99")
    assert result["verdict"]["text"] == ("dropped at h1 br-int table 10 (ARP responder): no "
                                         f"member of pod 7 has {PREFIX}99")
    result, _ = cli_trace(lab, "a1", PREFIX + "21")          # b1's address, in pod 8
    assert result["verdict"]["text"].endswith(f"{PREFIX}21 is "
                                              f"{name(lab, 'b1').removeprefix('netns:')}'s "
                                              "address in pod 8")
    result, _ = cli_trace(lab, "a1", name(lab, "a1"), "--arp")
    assert result["verdict"]["text"].startswith(f"dropped at h1 br-int table 10 (ARP "
                                                f"responder): {a1} asked for its own address "
                                                f"{PREFIX}11")
    assert all(c["agrees"] for c in result["switch"]), result["switch"]


def test_dhcp_traces_to_the_controller_only_from_a_dhcp_port(lab):
    before = scrape(lab)
    lab.add_container("h3", "d1", kind="netns")
    status, port = connect(lab, "d1", "dhcp", 7)
    assert status == 201 and port["lease"], port
    lab.ports["d1"] = port
    result, _ = cli_trace(lab, "d1", "--dhcp")
    assert result["verdict"] == {"delivered": True, "fix": None, "at": None, "text":
                                 f"sent to the controller's DHCP responder (port {port['id']}: "
                                 f"{name(lab, 'd1').removeprefix('netns:')} in pod 7 on h3)"}
    assert all(c["agrees"] for c in result["switch"]), result["switch"]
    result, _ = cli_trace(lab, "a1", "--dhcp")
    assert "is not a DHCP port" in result["verdict"]["text"]
    after = scrape(lab)
    # the connect moved its counters: one more ok, its three phases, a DHCP exchange
    assert value(after, "loris_connects_total", result="ok") == \
        value(before, "loris_connects_total", result="ok") + 1
    assert value(after, "loris_connect_duration_seconds_count", phase="lease") == \
        value(before, "loris_connect_duration_seconds_count", phase="lease") + 1
    assert value(after, "loris_dhcp_replies_total", type="offer") >= 1
    assert value(after, "loris_dhcp_replies_total", type="ack") >= 1
    assert value(after, "loris_ports", state="active") == \
        value(before, "loris_ports", state="active") + 1


def test_a_spoofing_container_shows_a_rising_drop_count(lab):
    c = lab.container("a1")
    pid = lab.ports["a1"]["id"]

    def dropped() -> int:
        status, port = lab.api("GET", f"/v1/ports/{pid}?stats=true")
        assert status == 200 and port["stats"] is not None, port
        return port["stats"]["dropped"]["packets"]

    first = dropped()
    lab.run(c, ["ip", "addr", "add", f"{PREFIX}99/24", "dev", "eth1"])
    try:
        assert not pings(lab, "a1", PREFIX + "12", count=3, interval=0.2, wait=1,
                         source=PREFIX + "99")
        wait_for(lambda: dropped() > first, 10, "a1's drop count rising")
    finally:
        lab.run(c, ["ip", "addr", "del", f"{PREFIX}99/24", "dev", "eth1"])
    r = lab.loris("h1", "ports", "--stats")
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if line.startswith(f"{pid} "))
    assert first < int(row.split()[-2]) <= dropped()
    status, ports = lab.api("GET", "/v1/ports?stats=true")
    sent = {p["container"]: p["stats"]["sent"]["packets"] for p in ports}
    assert sent[name(lab, "a1")] > 0 and len(ports) == len(lab.ports)


def scrape(lab: Lab) -> dict[str, dict[tuple, float]]:
    """GET /metrics with the metrics token (`loris token --metrics`), parsed."""
    r = lab.loris("h1", "token", "--metrics")
    assert r.returncode == 0, r.stderr
    status, text = lab.api("GET", "/metrics", token=r.stdout.strip())
    assert status == 200, text
    return parse(text)


def parse(text: str) -> dict[str, dict[tuple, float]]:
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def test_metrics_describe_the_cluster_and_move_with_it(lab):
    before = scrape(lab)
    assert all(value(before, "loris_switch_connected", host=h, bridge=b, role="equal") == 1
               for h in ("h1", "h2", "h3") for b in ("br-int", "br-tun"))
    assert all(value(before, "loris_flows_installed", host=h, bridge="br-int") > 10
               for h in ("h1", "h2", "h3"))
    assert value(before, "loris_long_polls_open") == 3
    assert all(value(before, "loris_agent_passes_total", host=h) >= 1 for h in ("h1", "h2"))
    assert value(before, "loris_connect_duration_seconds_count", phase="wiring") >= len(LAYOUT)
    trace(lab, "a1", "a2")
    lab.api("GET", "/v1/ports/999999")
    after = scrape(lab)
    for labels, moved in ((("/v1/trace", "POST", "200"), 1),
                          (("/v1/ports/{port_id}", "GET", "404"), 1)):
        route, method, status = labels
        assert value(after, "loris_rest_requests_total", route=route, method=method,
                     status=status) == value(before, "loris_rest_requests_total", route=route,
                                             method=method, status=status) + moved
    assert value(after, "loris_store_commit_duration_seconds_count") >= \
        value(before, "loris_store_commit_duration_seconds_count")
    # and without credentials on the separate listen address, and only there
    client = Client(f"http://{CONTROL_IP}:{METRICS_PORT}",
                    socket_factory=partial(socket_in_netns, lab.netns_path("ctl")))
    try:
        reply = client.send("GET", "/metrics", token=False)
    finally:
        client.close()
    assert reply.status == 200 and "loris_hosts" in parse(reply.body)
    assert lab.api("GET", "/metrics", token=False)[0] == 401


def test_resync_of_an_unknown_host_names_it(lab):
    r = lab.loris("h1", "resync", "h9")
    assert r.returncode == 1 and "h9 is not registered" in r.stderr
    assert isinstance(r, subprocess.CompletedProcess)
