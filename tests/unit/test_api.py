"""REST API v1 driven in-process (WebOb Request.blank) against a real store, on both
backends: SQLite and etcd (the session's local etcd, tests/etcd_local.py).

Every response is also checked against the OpenAPI document the server publishes. No
switch is connected and no agent runs here (that is tests/integration/test_controller*.py),
so these tests cover validation, the error kinds, state left unchanged by refused writes,
the agent protocol's long poll and reports, and the undo paths of a connect that fails.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from inproc import H1, H2, POD7, add_port, eventually, snapshot

from controller import openapi, recovery
from flows.flow import Kind, cookie_of

# ---- basics ---------------------------------------------------------------------------------

def test_health_version_and_openapi(api):
    assert api.ok("GET", "/v1/health") == {"status": "ok"}
    v = api.ok("GET", "/v1/version")
    assert v["api"] == "v1" and v["version"] == openapi.VERSION
    doc = api.ok("GET", "/v1/openapi.json")
    assert doc["openapi"].startswith("3.")
    served = api.app.routes()
    documented = {p: sorted(m.upper() for m in ops if m != "parameters")
                  for p, ops in doc["paths"].items()}
    assert served == documented


def test_unknown_path_and_method(api):
    assert "openapi.json" in api.error("GET", "/v1/nothing", status=404, code="not_found")
    msg = api.error("PUT", "/v1/pods", body={}, status=405, code="method_not_allowed")
    assert "GET, POST" in msg


# ---- pods -----------------------------------------------------------------------------------

def test_pod_lifecycle(api, parts):
    pod = api.ok("POST", "/v1/pods", POD7, status=201)
    assert pod["dhcp_server"] == {"ip": "198.18.135.1", "mac": "0a:4c:00:00:00:08"}
    assert pod["tunnel_key"] == 8 and pod["members"] == []
    assert [p["id"] for p in api.ok("GET", "/v1/pods")] == [0, 7]
    assert "already exists" in api.error("POST", "/v1/pods", POD7, status=409, code="pod_exists")
    api.ok("POST", "/v1/pods", {"id": 16777214})
    api.ok("DELETE", "/v1/pods/16777214", status=204)
    api.error("GET", "/v1/pods/16777214", status=404, code="pod_not_found")


@pytest.mark.parametrize("body,status", [
    ({"id": 16777215}, 422), ({"id": -1}, 422), ({"id": "7"}, 400), ({"id": True}, 400),
    ({"id": 7.5}, 400), ({}, 400), ({"id": 8, "colour": "red"}, 400),
    ({"id": 8, "subnet": "198.18.135.1/24"}, 422), ({"id": 8, "subnet": "198.18.135.0/31"}, 422),
    ({"id": 8, "subnet": "198.18.135.0"}, 422), ({"id": 8, "subnet": "224.0.0.0/24"}, 422),
    ({"id": 8, "subnet": "banana"}, 422), ({"id": 8, "subnet": 24}, 400),
    ({"id": 8, "name": ""}, 422), ({"id": 8, "name": "x" * 65}, 422),
])
def test_bad_pods_are_refused_and_change_nothing(api, parts, body, status):
    before = snapshot(parts)
    api.error("POST", "/v1/pods", body, status=status)
    assert snapshot(parts) == before


def test_pod_delete_rules(api, parts):
    api.ok("POST", "/v1/hosts", H1)
    api.ok("POST", "/v1/pods", POD7)
    add_port(parts)
    msg = api.error("DELETE", "/v1/pods/7", status=409, code="pod_in_use")
    assert "web1 on h1" in msg and "force=true" in msg
    assert "global" in api.error("DELETE", "/v1/pods/0", status=409, code="global_pod")
    api.error("DELETE", "/v1/pods/99", status=404)
    api.error("DELETE", "/v1/pods/7x", status=400)      # neither an id nor a name
    assert "loris pod create abc" in api.error("DELETE", "/v1/pods/abc", status=404,
                                               code="pod_not_found")      # a name: pod_names
    api.error("DELETE", "/v1/pods/99999999", status=422)
    api.error("DELETE", "/v1/pods/7?force=maybe", status=400)
    version = parts.board.version("h1")
    api.ok("DELETE", "/v1/pods/7?force=true", status=204)
    assert api.ok("GET", "/v1/ports") == []
    assert parts.board.version("h1") > version          # the agent removes the veth
    with parts.store.tx() as tx:
        assert tx.local_vlans("h1") == {}


def test_show_pod_lists_members(api, parts):
    api.ok("POST", "/v1/hosts", H1)
    api.ok("POST", "/v1/pods", POD7)
    add_port(parts)
    pod = api.ok("GET", "/v1/pods/7")
    assert pod["ports"] == 1 and pod["members"][0]["container"] == "web1"


# ---- bodies -----------------------------------------------------------------------------------

@pytest.mark.parametrize("raw,needle", [
    (b"{", "not valid JSON"), (b"", "needs a JSON body"), (b"[1, 2]", "must be an object"),
    (b'"pod"', "must be an object"), (b"\xff\xfe", "UTF-8"), (b"null", "must be an object"),
])
def test_malformed_bodies_are_400(api, parts, raw, needle):
    before = snapshot(parts)
    assert needle in api.error("POST", "/v1/pods", raw=raw, status=400)
    assert snapshot(parts) == before


def test_oversized_body_is_refused_before_reading(api, parts):
    before = snapshot(parts)
    body = json.dumps({"id": 9, "name": "x" * (70 * 1024)}).encode()
    api.error("POST", "/v1/pods", raw=body, status=413, code="body_too_large")
    assert snapshot(parts) == before


def test_bodies_on_deletes_and_unknown_query_parameters(api):
    api.error("GET", "/v1/pods?colour=red", status=400)
    code, _ = api.call("DELETE", "/v1/pods/7", body={"force": True})
    assert code == 400


# ---- hosts ------------------------------------------------------------------------------------

def test_register_is_idempotent_and_reports_the_openflow_port(api, parts):
    host = api.ok("POST", "/v1/hosts", H1, status=201)
    assert host["openflow"]["port"] == 6653
    assert host["openflow"]["bridges"]["br-int"]["connected"] is False
    assert host["dpids"] == H1["dpids"]
    again = api.ok("POST", "/v1/hosts", H1, status=200)
    assert again["desired_version"] == host["desired_version"]
    assert [h["id"] for h in api.ok("GET", "/v1/hosts")] == ["h1"]


def test_a_new_or_moved_host_wakes_every_agent(api, parts):
    api.ok("POST", "/v1/hosts", H1)
    v1 = parts.board.version("h1")
    api.ok("POST", "/v1/hosts", H2)
    v2 = parts.board.version("h1")
    assert v2 > v1
    moved = dict(H2, tunnel_ip="198.18.0.22")
    assert api.ok("POST", "/v1/hosts", moved, status=200)["tunnel_ip"] == "198.18.0.22"
    assert parts.board.version("h1") > v2
    peers = api.ok("GET", "/v1/hosts/h1/desired")["peers"]
    assert peers == [{"id": "h2", "tunnel_ip": "198.18.0.22"}]


@pytest.mark.parametrize("change,status,code", [
    ({"id": "h2"}, 409, "dpid_in_use"),
    ({"id": "h2", "dpids": {"br-int": "0x99", "br-tun": "0x98"}}, 409, "tunnel_ip_in_use"),
    ({"id": "h2", "tunnel_ip": "198.18.0.12", "tunnel_type": "gre",
      "dpids": {"br-int": "0x99", "br-tun": "0x98"}}, 409, "tunnel_type_mismatch"),
    ({"dpids": {"br-int": "0x1", "br-tun": "0x1"}}, 422, None),
    ({"dpids": {"br-int": "0x0", "br-tun": "0x1"}}, 422, None),
    ({"dpids": {"br-int": "1", "br-tun": "0x2"}}, 422, None),
    ({"dpids": {"br-int": "0x1"}}, 400, None),
    ({"dpids": {"br-int": "0x1", "br-tun": "0x2", "br-ex": "0x3"}}, 400, None),
    ({"dpids": {"br-int": "0x10000000000000000", "br-tun": "0x2"}}, 422, None),
    ({"id": "-h"}, 422, None), ({"id": "h" * 64}, 422, None), ({"id": 5}, 400, None),
    ({"tunnel_ip": "127.0.0.1"}, 422, None), ({"tunnel_ip": "198.18.0.256"}, 422, None),
    ({"tunnel_ip": "198.18.0.11/24"}, 422, None), ({"tunnel_type": "geneve"}, 422, None),
])
def test_bad_registrations_are_refused_and_change_nothing(api, parts, change, status, code):
    api.ok("POST", "/v1/hosts", H1)
    before = snapshot(parts)
    api.error("POST", "/v1/hosts", dict(H1, **change), status=status, code=code)
    assert snapshot(parts) == before


def test_show_and_remove_host(api, parts):
    api.ok("POST", "/v1/hosts", H1)
    api.ok("POST", "/v1/hosts", H2)
    add_port(parts, host="h1")
    add_port(parts, host="h2", container="web2", mac="02:00:00:00:07:06", ip="198.18.135.6/24")
    assert api.ok("GET", "/v1/hosts/h1")["ports"] == 1
    api.error("GET", "/v1/hosts/h9", status=404, code="host_not_found")
    api.error("GET", "/v1/hosts/bad%20id", status=422)
    api.ok("DELETE", "/v1/hosts/h1", status=204)
    assert [p["container"] for p in api.ok("GET", "/v1/ports")] == ["web2"]
    assert api.ok("GET", "/v1/hosts/h2/desired")["peers"] == []
    api.error("DELETE", "/v1/hosts/h1", status=404)


# ---- ports: validation ------------------------------------------------------------------------

@pytest.fixture
def cluster(api, parts):
    api.ok("POST", "/v1/hosts", H1)
    api.ok("POST", "/v1/hosts", H2)
    api.ok("POST", "/v1/pods", POD7)
    add_port(parts)                                         # web1, 198.18.135.5, 02:..:07:05
    return api


@pytest.mark.parametrize("body,status,code,needle", [
    ({"host": "h9", "container": "c", "ip": "198.18.135.9/24", "pod": 7}, 422, "unknown_host",
     "h9 is not registered"),
    ({"host": "h1", "container": "c", "ip": "198.18.135.9", "pod": 7}, 422, None, "prefix length"),
    ({"host": "h1", "container": "c", "ip": "198.18.135.300/24", "pod": 7},
     422, None, "not an IPv4"),
    ({"host": "h1", "container": "c", "ip": "198.18.135.9/33", "pod": 7}, 422, None, "1..32"),
    ({"host": "h1", "container": "c", "ip": "198.018.135.9/24", "pod": 7},
     422, None, "not an IPv4"),
    ({"host": "h1", "container": "c", "ip": "198.18.135.0/24", "pod": 7},
     422, None, "network address"),
    ({"host": "h1", "container": "c", "ip": "198.18.135.255/24", "pod": 7}, 422, None, "broadcast"),
    ({"host": "h1", "container": "c", "ip": "224.0.0.9/24", "pod": 7}, 422, None, "multicast"),
    ({"host": "h1", "container": "c", "ip": "198.18.136.9/24", "pod": 7}, 422, "ip_outside_subnet",
     "not in pod 7's subnet 198.18.135.0/24"),
    ({"host": "h1", "container": "c", "ip": "198.18.135.9/16", "pod": 7}, 422, "ip_outside_subnet",
     "/24"),
    ({"host": "h1", "container": "c", "ip": "198.18.135.1/24", "pod": 7}, 422, "ip_reserved",
     "DHCP server"),
    ({"host": "h1", "container": "c", "ip": "dhcp", "pod": 0}, 422, "no_subnet", "no subnet"),
    ({"host": "h1", "container": "c", "ip": "198.18.135.9/24", "pod": 7,
      "mac": "01:00:5e:00:00:01"}, 422, None, "multicast"),
    ({"host": "h1", "container": "c", "ip": "198.18.135.9/24", "pod": 7,
      "mac": "ff:ff:ff:ff:ff:ff"}, 422, None, "multicast"),
    ({"host": "h1", "container": "c", "ip": "198.18.135.9/24", "pod": 7,
      "mac": "00:00:00:00:00:00"}, 422, None, "not a usable MAC"),
    ({"host": "h1", "container": "c", "ip": "198.18.135.9/24", "pod": 7,
      "mac": "02:00:00:00:00"}, 422, None, "six colon-separated"),
    ({"host": "h1", "container": "c", "ip": "198.18.135.9/24", "pod": 7,
      "mac": "0a:4c:00:00:00:08"}, 422, "mac_reserved", "DHCP server MAC"),
    ({"host": "h1", "container": "c", "ip": "198.18.135.5/24", "pod": 7}, 409, "ip_in_use",
     "IP 198.18.135.5 already used by web1 in pod 7"),
    ({"host": "h2", "container": "c", "ip": "198.18.135.9/24", "pod": 7,
      "mac": "02:00:00:00:07:05"}, 409, "mac_in_use",
     "MAC 02:00:00:00:07:05 already used by web1 in pod 7"),
    ({"host": "h1", "container": "web1", "ip": "198.18.137.9/24", "pod": 9}, 409,
     "container_connected", "already connected (port 1, pod 7"),
    ({"host": "h1", "container": "c", "ip": "198.18.135.9/24", "pod": 16777215},
     422, None, "range"),
    ({"host": "h1", "container": "c", "ip": "198.18.135.9/24", "pod": "7"}, 400, None, "integer"),
    ({"host": "h1", "container": "c", "ip": 167772169, "pod": 7}, 400, None, "string"),
    ({"host": "h1", "container": "c", "pod": 7}, 400, None, "'ip'"),
    ({"host": "h1", "container": "c", "ip": "dhcp", "vlan": 5}, 400, None, "unknown field"),
    ({"host": "h1", "container": "-c", "ip": "dhcp", "pod": 7}, 422, None, "Docker name"),
])
def test_bad_ports_are_refused_and_change_nothing(cluster, parts, body, status, code, needle):
    before = snapshot(parts)
    versions = parts.board.versions()
    msg = cluster.error("POST", "/v1/ports", body, status=status, code=code)
    assert needle in msg
    assert snapshot(parts) == before
    assert parts.board.versions() == versions              # no agent was bothered


def test_same_ip_and_mac_in_another_pod_are_fine_until_the_agent(cluster, parts):
    """Validation passes (the connect then fails for want of an agent, and is undone)."""
    body = {"host": "h2", "container": "web1", "ip": "198.18.135.5/24", "pod": 8,
            "mac": "02:00:00:00:07:05"}
    cluster.error("POST", "/v1/ports", body, status=503, code="agent_timeout")


def test_full_subnet_is_a_clear_409(api, parts):
    api.ok("POST", "/v1/hosts", H1)
    api.ok("POST", "/v1/pods", {"id": 3, "subnet": "198.18.131.0/30"})   # .1 server, .2 only
    add_port(parts, container="a", pod=3, ip="198.18.131.2/30", dhcp=True)
    msg = api.error("POST", "/v1/ports", {"host": "h1", "container": "b", "ip": "dhcp",
                                          "pod": 3}, status=409, code="subnet_full")
    assert "198.18.131.0/30 is full" in msg


# ---- ports: a connect that cannot finish leaves nothing behind ---------------------------------

class FakeAgent(threading.Thread):
    """Speaks the agent protocol through the API, as loris-hostagent would, answering each
    port with `answer(port) -> report`. Only for the controller's side of the protocol: the
    real agent is exercised in tests/integration."""

    def __init__(self, api, host, answer):
        super().__init__(daemon=True)
        self.api, self.host, self.answer = api, host, answer
        self.stop = threading.Event()
        self.seen: list[dict] = []

    def run(self):
        since = 0
        while not self.stop.is_set():
            code, desired = self.api.call("GET", f"/v1/hosts/{self.host}/desired?since={since}"
                                                 "&wait=0.2")
            if code != 200:
                return
            since = desired["version"]
            self.seen.append(desired)
            ports = {str(p["id"]): self.answer(p) for p in desired["ports"]}
            self.api.call("PUT", f"/v1/hosts/{self.host}/actual",
                          {"version": since, "patch": {"br-int": 1, "br-tun": 1},
                           "tunnels": {}, "ports": ports})

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.join(5)


def assert_nothing_left(api, parts, before_ports, container):
    with parts.store.tx() as tx:
        assert [p.container for p in tx.ports()] == before_ports
        assert tx.pod(8) is None, "the implicitly created pod must go too"
        assert 8 not in tx.local_vlans("h1")
    desired = api.ok("GET", "/v1/hosts/h1/desired")
    assert container not in [p["container"] for p in desired["ports"]]


def test_connect_without_agent_times_out_and_is_undone(cluster, parts):
    v = parts.board.version("h1")
    msg = cluster.error("POST", "/v1/ports", {"host": "h1", "container": "web8",
                                              "ip": "198.18.136.5/24", "pod": 8},
                        status=503, code="agent_timeout")
    assert "did not wire container web8 within 1 s" in msg and "never seen" in msg
    assert_nothing_left(cluster, parts, ["web1"], "web8")
    assert parts.board.version("h1") > v + 1                  # told to add, then to remove


def test_connect_with_agent_error_is_undone_and_the_agent_told(cluster, parts):
    def answer(port):
        return {"error": {"code": "container_not_found",
                          "message": f"container {port['container']} not found"}}

    with FakeAgent(cluster, "h1", answer) as agent:
        msg = cluster.error("POST", "/v1/ports", {"host": "h1", "container": "web8",
                                                  "ip": "198.18.136.5/24", "pod": 8},
                            status=422, code="container_not_found")
        assert "could not wire container web8: container web8 not found" in msg
        eventually(lambda: "web8" not in [p["container"] for p in agent.seen[-1]["ports"]],
                   "the agent to be told to remove web8")
    assert_nothing_left(cluster, parts, ["web1"], "web8")


def test_connect_fails_cleanly_when_the_switch_is_not_connected(cluster, parts):
    with FakeAgent(cluster, "h1", lambda port: {"ofport": 7, "mtu": 1450}):
        msg = cluster.error("POST", "/v1/ports", {"host": "h1", "container": "web8",
                                                  "ip": "198.18.136.5/24", "pod": 8},
                            status=503, code="switch_not_connected")
    assert "br-int of host h1 is not connected" in msg
    assert_nothing_left(cluster, parts, ["web1"], "web8")


# ---- the agent protocol ------------------------------------------------------------------------

def test_long_poll_returns_at_once_on_a_different_version(api, parts):
    api.ok("POST", "/v1/hosts", H1)
    v = api.ok("GET", "/v1/hosts/h1/desired")["version"]
    versions = parts.board.versions()
    with ThreadPoolExecutor(2) as pool:
        # wait=60 and no version is published meanwhile: only "at once" lets them return
        behind = pool.submit(api.ok, "GET", f"/v1/hosts/h1/desired?since={v - 1}&wait=60")
        ahead = pool.submit(api.ok, "GET", f"/v1/hosts/h1/desired?since={v + 100}&wait=60")
        assert behind.result(timeout=30)["version"] == v
        assert ahead.result(timeout=30)["version"] == v
    assert parts.board.versions() == versions


def test_long_poll_waits_while_the_version_is_the_same(api, parts):
    api.ok("POST", "/v1/hosts", H1)
    v = api.ok("GET", "/v1/hosts/h1/desired")["version"]
    with ThreadPoolExecutor(1) as pool:
        poll = pool.submit(api.ok, "GET", f"/v1/hosts/h1/desired?since={v}&wait=5")
        eventually(lambda: api.ok("GET", "/v1/hosts/h1")["agent"]["polling"] or poll.done(),
                   "the long poll to wait")
        assert not poll.done(), "the long poll returned although the version is the same"
        assert poll.result(timeout=30)["version"] == v          # after its wait, unchanged
    assert api.ok("GET", "/v1/hosts/h1")["agent"]["polling"] is False


def test_long_poll_wakes_as_soon_as_work_exists(api, parts):
    api.ok("POST", "/v1/hosts", H1)
    v = api.ok("GET", "/v1/hosts/h1/desired")["version"]
    order = []

    def poll():
        desired = api.ok("GET", f"/v1/hosts/h1/desired?since={v}&wait=60")
        order.append("poll returned")
        return desired

    with ThreadPoolExecutor(1) as pool:
        polling = pool.submit(poll)
        eventually(lambda: api.ok("GET", "/v1/hosts/h1")["agent"]["polling"],
                   "the long poll to wait")
        order.append("h2 registers")
        api.ok("POST", "/v1/hosts", H2)
        desired = polling.result(timeout=30)
    assert order == ["h2 registers", "poll returned"]
    assert desired["version"] > v and desired["peers"][0]["id"] == "h2"
    assert api.ok("GET", "/v1/hosts/h1")["agent"]["last_seen"] is not None


def test_a_long_poll_is_woken_by_its_own_host_only(api, parts):
    """Work for h2 leaves h1's long poll asleep; h1's own work wakes it."""
    api.ok("POST", "/v1/hosts", H1)
    api.ok("POST", "/v1/hosts", H2)
    api.ok("POST", "/v1/pods", POD7)
    v1 = api.ok("GET", "/v1/hosts/h1/desired")["version"]
    v2 = api.ok("GET", "/v1/hosts/h2/desired")["version"]
    with ThreadPoolExecutor(2) as pool:
        h1_poll = pool.submit(api.ok, "GET", f"/v1/hosts/h1/desired?since={v1}&wait=60")
        eventually(lambda: parts.board.polling("h1"), "h1's long poll to wait")
        add_port(parts, host="h2", container="web2")
        with parts.store.tx() as tx:
            tx.bump(["h2"])
        parts.context.publish()
        h2_poll = pool.submit(api.ok, "GET", f"/v1/hosts/h2/desired?since={v2}&wait=60")
        assert h2_poll.result(timeout=30)["version"] > v2
        assert not h1_poll.done() and parts.board.polling("h1")
        add_port(parts, host="h1", container="web1", mac="02:00:00:00:07:06",
                 ip="198.18.135.6/24")
        with parts.store.tx() as tx:
            tx.bump(["h1"])
        parts.context.publish()
        assert h1_poll.result(timeout=30)["ports"][0]["container"] == "web1"


@pytest.mark.parametrize("query,status", [
    ("since=abc", 400), ("since=-1", 422), ("wait=61", 422), ("wait=soon", 400),
    ("since=1&since=2", 400), ("lag=1", 400),
])
def test_long_poll_parameters(api, query, status):
    api.ok("POST", "/v1/hosts", H1)
    api.error("GET", f"/v1/hosts/h1/desired?{query}", status=status)


def test_unknown_host_cannot_poll_or_report(api):
    api.error("GET", "/v1/hosts/h9/desired", status=404, code="host_not_found")
    api.error("PUT", "/v1/hosts/h9/actual", {"version": 1}, status=404, code="host_not_found")


def test_actual_report_updates_ofports_tunnels_and_ports(api, parts):
    api.ok("POST", "/v1/hosts", H1)
    api.ok("POST", "/v1/hosts", H2)
    api.ok("POST", "/v1/pods", POD7)
    port = add_port(parts, state="pending")
    report = {"version": 5, "patch": {"br-int": 1, "br-tun": 2},
              "tunnels": {"h2": 3, "h-gone": 4},
              "ports": {str(port.id): {"ofport": 9, "mtu": 1450}, "999": {"ofport": 10}}}
    api.ok("PUT", "/v1/hosts/h1/actual", report, status=204)
    host = api.ok("GET", "/v1/hosts/h1")
    assert host["patch"] == {"br-int": 1, "br-tun": 2}
    assert host["tunnels"] == [{"peer": "h2", "ofport": 3}]          # unknown peer ignored
    assert host["actual_version"] == 5
    p = api.ok("GET", f"/v1/ports/{port.id}")
    assert (p["ofport"], p["mtu"], p["state"], p["error"]) == (9, 1450, "wired", None)
    report["ports"] = {str(port.id): {"error": {"code": "container_not_running",
                                                "message": "web1 is stopped"}}}
    api.ok("PUT", "/v1/hosts/h1/actual", report)
    p = api.ok("GET", f"/v1/ports/{port.id}")
    assert p["ofport"] is None and p["error"]["code"] == "container_not_running"


@pytest.mark.parametrize("report,status", [
    ({}, 400), ({"version": "1"}, 400), ({"version": 1, "ports": {"abc": {"ofport": 1}}}, 422),
    ({"version": 1, "ports": {"1": {"ofport": 0}}}, 422),
    ({"version": 1, "ports": {"1": {"ofport": 1, "colour": 1}}}, 400),
    ({"version": 1, "tunnels": {"h2": 70000}}, 422), ({"version": 1, "tunnels": {"-x": 3}}, 422),
    ({"version": 1, "patch": {"br-int": "1"}}, 400),
    ({"version": 1, "ports": {"1": {"lease": "198.18.135.5"}}}, 422),
    ({"version": 1, "extra": True}, 400),
])
def test_bad_reports_are_refused_and_change_nothing(api, parts, report, status):
    api.ok("POST", "/v1/hosts", H1)
    before = snapshot(parts)
    api.error("PUT", "/v1/hosts/h1/actual", report, status=status)
    assert snapshot(parts) == before


# ---- ports: listing, showing, disconnecting --------------------------------------------------

def test_list_filter_show_and_delete_ports(cluster, parts):
    add_port(parts, host="h2", container="web2", mac="02:00:00:00:07:06", ip="198.18.135.6/24")
    add_port(parts, host="h2", container="db", pod=9, mac="02:00:00:00:09:01", ip="198.18.137.1/24")
    assert len(cluster.ok("GET", "/v1/ports")) == 3
    assert [p["container"] for p in cluster.ok("GET", "/v1/ports?pod=7&host=h2")] == ["web2"]
    assert [p["container"] for p in cluster.ok("GET", "/v1/ports?container=db")] == ["db"]
    cluster.error("GET", "/v1/ports?pod=7x", status=400)      # neither an id nor a name
    cluster.error("GET", "/v1/ports?pod=x", status=404, code="pod_not_found")   # a name
    cluster.error("GET", "/v1/ports?pod=16777215", status=422)
    cluster.error("GET", "/v1/ports?host=-", status=422)
    cluster.error("GET", "/v1/ports?vlan=3", status=400)
    cluster.error("GET", "/v1/ports/0", status=422)
    cluster.error("GET", "/v1/ports/77", status=404, code="port_not_found")
    v = parts.board.version("h2")
    cluster.ok("DELETE", "/v1/ports/3", status=204)
    assert parts.board.version("h2") > v
    with parts.store.tx() as tx:
        assert 9 not in tx.local_vlans("h2") and 7 in tx.local_vlans("h2")
    cluster.error("DELETE", "/v1/ports/3", status=404)


# ---- DHCP lookups -------------------------------------------------------------------------------

def test_dhcp_binding_only_for_the_dhcp_port_at_its_own_switch_port(cluster, parts):
    port = add_port(parts, container="dh", mac="02:00:00:00:07:09", ip="198.18.135.9/24",
                    dhcp=True, ofport=7)
    static = add_port(parts, container="st", mac="02:00:00:00:07:0a", ip="198.18.135.10/24",
                      ofport=8)
    dpid = int(H1["dpids"]["br-int"], 16)
    cookie = cookie_of(Kind.PORT, port.id, "anything")
    binding, found = parts.switch_events.dhcp_binding(dpid, 7, cookie)
    assert (str(binding.ip), binding.mac, binding.server_ip, binding.server_mac) == (
        "198.18.135.9/24", "02:00:00:00:07:09", "198.18.135.1", "0a:4c:00:00:00:08")
    assert found.id == port.id
    assert parts.switch_events.dhcp_binding(dpid, 8, cookie) is None                 # other ofport
    assert parts.switch_events.dhcp_binding(dpid + 1, 7, cookie) is None             # br-tun
    assert parts.switch_events.dhcp_binding(dpid, 8, cookie_of(Kind.PORT, static.id, "x")) is None
    assert parts.switch_events.dhcp_binding(dpid, 7, cookie_of(Kind.MEMBER, port.id, "x")) is None
    assert parts.switch_events.dhcp_binding(dpid, 7, 0x1234) is None                 # not Loris's


# ---- restart -------------------------------------------------------------------------------------

def test_recover_drops_unfinished_ports_and_bumps_every_host(api, parts):
    api.ok("POST", "/v1/hosts", H1)
    api.ok("POST", "/v1/pods", POD7)
    add_port(parts)
    add_port(parts, container="half", mac="02:00:00:00:07:06", ip="198.18.135.6/24",
             state="wired", ofport=4)
    v = parts.board.version("h1")
    recovery.recover(parts.context)
    assert [p["container"] for p in api.ok("GET", "/v1/ports")] == ["web1"]
    assert parts.board.version("h1") > v
