"""The agent's memory of its host: the link index follows link events, and a port the
agent reported wired counts as wired while its desired state still says pending (a static
port's `active` brings no new desired version)."""

from __future__ import annotations

from hostagent.agent import Agent
from hostagent.links import LinkIndex
from hostagent.ovs import Ovs


def link(event: str, name: str, index: int, kind: str | None = "veth",
         alias: str | None = None) -> dict:
    msg: dict = {"event": event, "index": index, "IFLA_IFNAME": name}
    if kind is not None:
        msg["IFLA_LINKINFO"] = {"IFLA_INFO_KIND": kind}
    if alias is not None:
        msg["IFLA_IFALIAS"] = alias
    return msg


def live_index() -> LinkIndex:
    """An index as the event thread leaves it after its first dump (an empty host); no
    kernel here: the events a test feeds are all it learns."""
    return LinkIndex(live=True)


def test_link_events_keep_the_index():
    index = live_index()
    index.event(link("RTM_NEWLINK", "lp5", 40, alias="loris port 5"))
    index.event(link("RTM_NEWLINK", "veth0", 41))
    index.event(link("RTM_NEWLINK", "eth0", 2, kind="dummy"))
    assert index.veths() == {"lp5": 40, "veth0": 41}
    assert index.loris_veths() == ["lp5"]
    # a change that carries no alias (link up) keeps the port a Loris one
    index.event(link("RTM_NEWLINK", "lp5", 40))
    assert index.loris_veths() == ["lp5"]
    index.event(link("RTM_NEWLINK", "veth9", 41))         # renamed
    assert index.veths() == {"lp5": 40, "veth9": 41}
    index.event(link("RTM_DELLINK", "lp5", 40))            # its container went
    assert index.veths() == {"veth9": 41} and index.loris_veths() == []


def test_what_the_agent_made_and_deleted_is_known_at_once():
    index = live_index()
    index.made("lp7", 70)
    assert index.index_of("lp7") == 70 and index.loris_veths() == ["lp7"]
    index.gone("lp7")
    assert index.index_of("lp7") is None


class Reporter:
    def __init__(self) -> None:
        self.reports: list[dict] = []

    def put_actual(self, host_id: str, actual: dict) -> None:
        self.reports.append(actual)


class Passes:
    wiring_errors = 0
    lease_pending = False

    def __init__(self) -> None:
        self.seen: list[dict] = []

    def apply(self, desired: dict, full: bool = True) -> dict:
        self.seen.append(desired)
        return {"version": desired["version"],
                "ports": {str(p["id"]): {"ofport": 7} for p in desired["ports"]}}


def test_a_port_reported_wired_is_not_pending_any_more():
    agent = Agent(Reporter(), Ovs(), "h1", "198.18.0.11", "vxlan", runtimes=object())
    agent.send_stats = False
    agent.reconciler = passes = Passes()
    port = {"id": 5, "container": "c", "pod": 7, "state": "pending"}
    agent.desired = {"version": 3, "ports": [port]}
    agent.reconcile_and_report()          # wires it and reports its ofport
    assert passes.seen[0]["ports"][0]["state"] == "pending"
    agent.reconcile_and_report()          # same desired version: the port is wired now
    assert passes.seen[1]["ports"][0]["state"] == "wired"
    assert agent.desired["ports"][0]["state"] == "pending"   # what it holds is unchanged


class LookedAt:
    """A pass that records which ports it was asked to look at (None: all)."""
    wiring_errors = 0
    lease_pending = False

    def __init__(self) -> None:
        self.only: list[set[int] | None] = []

    def apply(self, desired: dict, full: bool = True, only: set[int] | None = None) -> dict:
        self.only.append(only)
        return {"version": desired["version"],
                "ports": {str(p["id"]): {"ofport": 7} for p in desired["ports"]}}


def test_a_pass_after_a_delta_looks_at_the_ports_it_touched_and_reports_those():
    from flows.desired_delta import ServedStates

    served, reporter = ServedStates(), Reporter()
    agent = Agent(reporter, Ovs(), "h1", "198.18.0.11", "vxlan", runtimes=object())
    agent.send_stats = False
    agent.reconciler = passes = LookedAt()
    host = {"id": "h1", "tunnel_ip": "198.18.0.11", "tunnel_type": "vxlan"}
    ports = [{"id": i, "container": f"c{i}", "pod": 7, "state": "active"} for i in (1, 2)]
    first = served.answer("h1", 1, host, [], ports, None)
    assert agent.follow.take(first)
    agent.reconcile_and_report(full=False)
    assert passes.only == [None] and set(reporter.reports[-1]["ports"]) == {"1", "2"}
    new = {"id": 3, "container": "c3", "pod": 7, "state": "pending"}
    assert agent.follow.take(served.answer("h1", 2, host, [], [*ports, new], first["digest"]))
    agent.reconcile_and_report(full=False)
    assert passes.only[-1] == {3} and reporter.reports[-1]["ports"] == {"3": {"ofport": 7}}
    agent._docker_event("die", "c1", "c1")            # a container of ours: every port
    agent.reconcile_and_report(full=False)
    assert passes.only[-1] is None
