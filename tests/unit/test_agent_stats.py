"""The agent's figures in its reports (`stats`): counted per pass, carried by a report that
goes anyway (never a reason to report), dropped for a controller that refuses them."""

from __future__ import annotations

from hostagent.agent import Agent
from hostagent.client import ApiError
from hostagent.ovs import Ovs


class FakeClient:
    def __init__(self, refuse_stats: bool = False) -> None:
        self.reports: list[dict] = []
        self.refuse_stats = refuse_stats

    def put_actual(self, host_id: str, actual: dict) -> None:
        if self.refuse_stats and "stats" in actual:
            raise ApiError(400, "bad_request", "body has unknown field 'stats' (allowed: ...)")
        self.reports.append(actual)


class FakeReconciler:
    wiring_errors = 0

    def __init__(self) -> None:
        self.actual = {"version": 1, "ports": {}}

    def apply(self, desired: dict, full: bool = True) -> dict:
        return dict(self.actual)


def agent(client: FakeClient) -> Agent:
    a = Agent(client, Ovs(), "h1", "198.18.0.11", "vxlan", runtimes=object())
    a.reconciler = FakeReconciler()
    a.desired = {"version": 1}
    return a


def test_stats_ride_along_with_reports_that_go_anyway():
    client = FakeClient()
    a = agent(client)
    a.reconcile_and_report()
    a.reconcile_and_report()                       # nothing changed: no report
    assert len(client.reports) == 1
    a.reconciler.actual = {"version": 2, "ports": {}}
    a.reconciler.wiring_errors = 3
    a.reconcile_and_report()
    first, second = client.reports
    assert first["stats"]["passes"] == 1 and second["stats"]["passes"] == 3
    assert second["stats"]["wiring_errors"] == 3
    assert second["stats"]["pass_seconds_total"] >= second["stats"]["last_pass_seconds"] >= 0
    assert {k: v for k, v in second.items() if k != "stats"} == {"version": 2, "ports": {}}


def test_a_controller_that_refuses_stats_gets_reports_without_them():
    client = FakeClient(refuse_stats=True)
    a = agent(client)
    a.reconcile_and_report()
    assert client.reports == [{"version": 1, "ports": {}}] and not a.send_stats
