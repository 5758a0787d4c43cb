"""Agent liveness and what a connect makes of it (controller/agents.py, connect.py), and the
pods a failed connect leaves (none): the away decision, long polls held at most the poll
interval, a connect to a host whose agent is away refused at once, a waiting connect ended
when its agent goes away, implicit pods removed with the connects that made them (also
after a restart). In-process: real store and API, an agent played through the API."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from inproc import H1, H2, POD7, ApiClient, add_port, build_parts, eventually, snapshot

from controller import recovery
from controller.agents import AgentBoard, silent_for

# ---- the away decision (pure) -----------------------------------------------------------

def test_silent_for_counts_from_the_last_word_or_the_start():
    assert silent_for(None, started=100.0, now=103.0, away_after=4.0) is None
    assert silent_for(None, started=100.0, now=104.5, away_after=4.0) == 4.5
    assert silent_for(110.0, started=100.0, now=113.9, away_after=4.0) is None
    assert silent_for(110.0, started=100.0, now=115.0, away_after=4.0) == 5.0
    # heard from before this controller started: it counts from the start
    assert silent_for(50.0, started=100.0, now=103.0, away_after=4.0) is None


def test_board_away_follows_the_agents_requests():
    board = AgentBoard(away_after=4.0)
    start = board.started
    assert board.away("h1", now=start + 1) is None
    assert board.away("h1", now=start + 5) == pytest.approx(5.0)
    board.seen("h1")
    heard = board.last_seen("h1")
    assert board.away("h1", now=heard + 3.9) is None
    assert board.away("h1", now=heard + 6) == pytest.approx(6.0)
    assert board.away("h2", now=heard + 6) is not None          # never heard from


def test_an_agent_heard_by_another_controller_is_not_away_here():
    back = []
    board = AgentBoard(away_after=4.0, on_back=lambda host, silent: back.append(host))
    assert board.heard_here() == []
    board.heard_elsewhere(["h1"])
    heard = board.last_seen("h1")
    assert heard is not None and board.away("h1", now=heard + 3.9) is None
    assert back == []                     # the other controller saw it come back, not us
    board.seen("h2")
    assert board.heard_here() == ["h2"]   # only its own sightings go into its registry entry


def test_an_agent_whose_long_poll_is_open_here_is_never_away():
    board = AgentBoard(away_after=0.05)
    board.publish({"h1": 1})
    poll = threading.Thread(target=board.wait, args=("h1", 1, 5.0))
    poll.start()
    eventually(lambda: board.polling("h1"), "h1's long poll to be open")
    assert board.away("h1", now=board.started + 60) is None     # silent long ago, polling now
    board.publish({"h1": 2})                                     # the poll returns
    poll.join(5)
    assert board.away("h1", now=board.started + 60) is not None


def test_an_agent_back_from_away_is_announced_once():
    back = []
    board = AgentBoard(away_after=0.05, on_back=lambda host, silent: back.append(host))
    board.seen("h1")
    board.seen("h1")                      # present all along: nothing to announce
    assert back == []
    eventually(lambda: board.away("h1") is not None, "h1's agent to be away")
    board.seen("h1")
    board.seen("h1")
    assert back == ["h1"]


def test_the_away_settings_are_checked():
    from controller import config

    s = config.load(env={"LORIS_AGENT_POLL_INTERVAL": "2", "LORIS_AGENT_AWAY_POLLS": "3"})
    assert s.agent_away_after == 6.0
    assert config.load(env={}).agent_away_after == 4.0
    for env in ({"LORIS_AGENT_POLL_INTERVAL": "0"}, {"LORIS_AGENT_AWAY_POLLS": "1"},
                {"LORIS_AUDIT_MAX_EVENTS": "0"},
                # away within the agents' retry period: a live agent back from an outage
                {"LORIS_AGENT_POLL_INTERVAL": "0.5", "LORIS_AGENT_AWAY_POLLS": "4"}):
        with pytest.raises(ValueError):
            config.load(env=env)


# ---- through the API ---------------------------------------------------------------------

class PollingAgent(threading.Thread):
    """Polls its host's desired state through the API as loris-hostagent does, and
    reports every port as made when `wire` is set, else nothing (a wiring that hangs)."""

    def __init__(self, api: ApiClient, host: str, wire: bool = False) -> None:
        super().__init__(daemon=True)
        self.api, self.host, self.wire = api, host, wire
        self.stop = threading.Event()

    def run(self) -> None:
        since = None
        while not self.stop.is_set():
            query = "" if since is None else f"?since={since}&wait=30"
            code, desired = self.api.call("GET", f"/v1/hosts/{self.host}/desired{query}")
            if code != 200:
                return
            since = desired["version"]
            if self.wire:
                self.api.call("PUT", f"/v1/hosts/{self.host}/actual", {
                    "version": since, "ports": {str(p["id"]): {"ofport": 7, "mtu": 1450}
                                                for p in desired["ports"]}})

    def __enter__(self) -> PollingAgent:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join(10)


@pytest.fixture
def parts(tmp_path):
    # polls held 0.1 s, away after 2.5 s (more than an agent's longest retry pause, as the
    # controller requires); a wire timeout no test waits for
    p = build_parts(tmp_path, agent_poll_interval=0.1, agent_away_polls=25, wire_timeout=60.0)
    yield p
    p.store.close()


@pytest.fixture
def api(parts):
    api = ApiClient(parts)
    api.ok("POST", "/v1/hosts", H1)
    api.ok("POST", "/v1/hosts", H2)
    api.ok("POST", "/v1/pods", POD7)
    return api


def test_a_long_poll_is_held_at_most_the_poll_interval(api, parts):
    v = api.ok("GET", "/v1/hosts/h1/desired")["version"]
    with ThreadPoolExecutor(1) as pool:
        poll = pool.submit(api.ok, "GET", f"/v1/hosts/h1/desired?since={v}&wait=60")
        assert poll.result(timeout=30)["version"] == v          # answered, unchanged
    assert api.ok("GET", "/v1/hosts/h1")["agent"]["away"] is False


def test_a_connect_to_a_host_whose_agent_is_away_is_refused_at_once(api, parts):
    eventually(lambda: parts.board.away("h1") is not None, "h1's agent to be away")
    before, versions = snapshot(parts), parts.board.versions()
    msg = api.error("POST", "/v1/ports", {"host": "h1", "container": "web8",
                                          "ip": "198.18.136.5/24", "pod": 8},
                    status=503, code="agent_away")
    assert msg.startswith("the agent of host h1 has not been seen since the controller "
                          "started ") and "loris-hostagent" in msg
    assert snapshot(parts) == before and parts.board.versions() == versions   # nothing at all
    assert api.ok("GET", "/v1/hosts/h1")["agent"]["away"] is True
    with PollingAgent(api, "h2"):                                 # h2's agent is there
        eventually(lambda: parts.board.away("h2") is None, "h2's agent to be heard from")
        v = api.ok("GET", "/v1/hosts/h2/desired")["version"]
        api.ok("PUT", "/v1/hosts/h2/actual", {"version": v}, status=204)
        assert api.ok("GET", "/v1/hosts/h2")["agent"]["away"] is False
    eventually(lambda: parts.board.away("h2") is not None, "h2's agent to be away")
    msg = api.error("POST", "/v1/ports", {"host": "h2", "container": "web9",
                                          "ip": "198.18.136.6/24", "pod": 8},
                    status=503, code="agent_away")
    assert msg.startswith("the agent of host h2 was last seen ") and " s ago " in msg
    # several controllers: one that heard h2's agent lately (the registry, read now)
    # heard there once: the connect gets past its first look (a port row) and waits for
    # the wiring; asked again while waiting, nobody heard the agent: it fails as away
    asked = []
    parts.context.heard_elsewhere_now = lambda host: not asked.append(host) and len(asked) == 1
    try:
        with ThreadPoolExecutor(1) as pool:
            connect = pool.submit(api.call, "POST", "/v1/ports", {
                "host": "h2", "container": "web9", "ip": "198.18.136.6/24", "pod": 8})
            eventually(lambda: api.ok("GET", "/v1/ports?container=web9") or connect.done(),
                       "the port row of the connect")
            status, body = connect.result(timeout=30)
        assert status == 503 and body["error"]["code"] == "agent_away", body
        assert asked[0] == "h2" and len(asked) >= 2, asked
        assert snapshot(parts)[1:] == before[1:]
    finally:
        parts.context.heard_elsewhere_now = None


def test_a_waiting_connect_fails_when_its_agent_goes_away(api, parts):
    """The agent polls but never wires (it hangs), then stops: the connect, which would
    wait 60 s for the wiring, fails as soon as the agent is away, and leaves nothing: no
    row, and not the pod it created."""
    before = snapshot(parts)
    agent = PollingAgent(api, "h1").__enter__()
    eventually(lambda: parts.board.away("h1") is None, "h1's agent to be heard from")
    with ThreadPoolExecutor(1) as pool:
        connect = pool.submit(api.call, "POST", "/v1/ports", {
            "host": "h1", "container": "web8", "ip": "198.18.136.5/24", "pod": 8})
        eventually(lambda: api.ok("GET", "/v1/ports?container=web8"),
                   "the port row of the connect")
        assert not connect.done()
        agent.__exit__()
        status, body = connect.result(timeout=30)
    assert status == 503 and body["error"]["code"] == "agent_away", body
    assert snapshot(parts)[1:] == before[1:]      # pods, ports, VLANs, tunnels as before


def test_pods_made_by_connects_that_failed_go_with_them(api, parts):
    """Two connects into a pod that does not exist yet (the first makes it) both fail: the
    pod goes with the last of them, whichever created it."""
    agent = PollingAgent(api, "h1").__enter__()
    eventually(lambda: parts.board.away("h1") is None, "h1's agent to be heard from")
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(api.call, "POST", "/v1/ports", {
            "host": "h1", "container": "a", "ip": "198.18.136.5/24", "pod": 8})
        eventually(lambda: api.call("GET", "/v1/pods/8")[0] == 200, "pod 8")
        second = pool.submit(api.call, "POST", "/v1/ports", {
            "host": "h1", "container": "b", "ip": "198.18.136.6/24", "pod": 8})
        eventually(lambda: len(api.ok("GET", "/v1/pods/8")["members"]) == 2, "both ports")
        agent.__exit__()
        assert first.result(timeout=30)[0] == second.result(timeout=30)[0] == 503
    api.error("GET", "/v1/pods/8", status=404, code="pod_not_found")
    assert [p["id"] for p in api.ok("GET", "/v1/pods")] == [0, 7]


def test_a_restart_removes_the_pods_of_connects_that_did_not_finish(api, parts):
    """What a controller killed mid-connect leaves: pending ports, and the pods their
    connects created. At the next start both go; a pod a connect filled once stays."""
    with parts.store.tx() as tx:
        for pod in (8, 9):
            tx.insert_pod(pod, None, None)
            tx.mark_implicit_pod(pod)
        tx.settle_implicit_pod(9)                     # a connect into 9 succeeded once
    add_port(parts, container="a", pod=8, ip="198.18.136.5/24", state="pending")
    add_port(parts, container="b", pod=7, ip="198.18.135.9/24", mac="02:00:00:00:07:09",
             state="pending")
    recovery.recover(parts.context)
    assert [p["id"] for p in api.ok("GET", "/v1/pods")] == [0, 7, 9]
    assert api.ok("GET", "/v1/ports") == []
    with parts.store.read() as tx:
        dropped = sorted((e.operation, e.object) for e in tx.events())
    assert [op for op, _ in dropped] == ["drop unfinished connect"] * 2 + \
        ["drop unfinished pod"]
    assert ("drop unfinished pod", "pod:8") in dropped
