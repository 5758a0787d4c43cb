"""The controller's Prometheus metrics (`GET /metrics`, docs/metrics.md), with the
`prometheus-client` library.

Two kinds, so that nothing costs the hub more than a counter increment:

- *instruments* updated where things happen, each update a dict lookup and an addition
  under a lock that never waits (REST requests, connect phases, store commits);
- a *collector* that reads, only when Prometheus scrapes, what the controller keeps
  anyway: rows by state (one `Store.read()`), switches and their flow counts, OpenFlow
  errors, long polls, the DHCP responder's and rate limiter's counts, and the figures the
  agents carry in their reports. Event handlers and workers do nothing for these.

Each controller has its own registry (tests build several in one process).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.process_collector import ProcessCollector

from flows import BRIDGES

# no `*_created` series: one more sample per counter that nobody graphs (process-wide)
disable_created_metrics()
CONTENT_TYPE = CONTENT_TYPE_LATEST
CONNECT_PHASES = ("wiring", "programming", "lease", "total")
PORT_STATES = ("pending", "wired", "active", "error")
ROLE = "equal"       # OpenFlow role of this controller on every switch (one controller)
_CONNECT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 90)
_COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)


class Metrics:
    """The instruments; `attach(sources)` adds the scrape-time collector."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rest_requests = Counter(
            "loris_rest_requests", "REST requests answered, by route, method and status",
            ["route", "method", "status"], registry=r)
        self.connect_seconds = Histogram(
            "loris_connect_duration_seconds", "Connects (POST /v1/ports) by phase: wiring "
            "(the agent wires the container), programming (flows on every host), lease (a "
            "DHCP port's lease), total (the whole successful connect)", ["phase"],
            buckets=_CONNECT_BUCKETS, registry=r)
        self.connects = Counter("loris_connects", "Connects by result (ok, failed)",
                                ["result"], registry=r)
        self.commit_seconds = Histogram(
            "loris_store_commit_duration_seconds", "Store write transactions: the COMMIT "
            "(its fsync)", buckets=_COMMIT_BUCKETS, registry=r)
        ProcessCollector(registry=r)

    def attach(self, sources: Sources) -> None:
        self.registry.register(StateCollector(sources))

    # ---- the instruments' callers -------------------------------------------------------
    def rest_request(self, route: str, method: str, status: int) -> None:
        self.rest_requests.labels(route, method, str(status)).inc()

    def connect_phase(self, phase: str, seconds: float) -> None:
        self.connect_seconds.labels(phase).observe(seconds)

    def connect_result(self, ok: bool) -> None:
        self.connects.labels("ok" if ok else "failed").inc()

    def store_commit(self, seconds: float) -> None:
        self.commit_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


@dataclass(frozen=True)
class Sources:
    """Where the scrape-time figures come from (wiring.build fills it in)."""
    store: Any
    switches: Any
    board: Any
    dhcp_replies: Callable[[], Mapping[str, int]]
    dhcp_rate_limited: Callable[[], int]


class StateCollector:
    """Reads the controller's state when scraped; nothing is kept between scrapes."""

    def __init__(self, sources: Sources) -> None:
        self.s = sources

    def describe(self) -> list:
        return []            # dynamic: the registry must not call collect() to describe it

    def collect(self) -> Iterator[Any]:
        s = self.s
        with s.store.read(current=False) as tx:
            hosts, pods, ports = tx.hosts(), tx.pods(), tx.ports()
            counts = tx.pod_port_counts()
        yield _gauge("loris_hosts", "Registered hosts by state: synced (the agent applied "
                     "its latest desired state) or behind", ["state"],
                     {("synced",): sum(h.actual_version == h.desired_version for h in hosts),
                      ("behind",): sum(h.actual_version != h.desired_version for h in hosts)})
        yield _gauge("loris_pods", "Pods by state: in_use (has ports) or empty", ["state"],
                     {("in_use",): sum(1 for p in pods if counts.get(p.id)),
                      ("empty",): sum(1 for p in pods if not counts.get(p.id))})
        by_state = dict.fromkeys(PORT_STATES, 0)
        for p in ports:
            by_state["error" if p.error_code else p.state] += 1
        yield _gauge("loris_ports", "Container ports by state (error: the agent reports an "
                     "error for it)", ["state"], {(k,): v for k, v in by_state.items()})
        connected, synced, flows = {}, {}, {}
        for h in hosts:
            for bridge in BRIDGES:
                st = s.switches.bridge_status(h.dpid(bridge))
                connected[(h.id, bridge, ROLE)] = int(st.connected)
                synced[(h.id, bridge)] = int(st.connected and st.synced)
                flows[(h.id, bridge)] = st.flows
        yield _gauge("loris_switch_connected", "1 if the bridge is connected to this "
                     "controller over OpenFlow, with this controller's role",
                     ["host", "bridge", "role"], connected)
        yield _gauge("loris_switch_synced", "1 if the bridge is connected and reconciled",
                     ["host", "bridge"], synced)
        yield _gauge("loris_flows_installed", "Loris flows the controller installed on the "
                     "bridge (its own count)", ["host", "bridge"], flows)
        yield _counter("loris_openflow_errors", "OpenFlow errors by type ('programming': a "
                       "timeout or a lost connection, without an error message)", ["type"],
                       {(k,): v for k, v in s.switches.error_counts().items()})
        yield _gauge("loris_long_polls_open", "Agents' desired-state long polls waiting now",
                     [], {(): s.board.polls_open()})
        replies = s.dhcp_replies()
        yield _counter("loris_dhcp_replies", "DHCP replies sent, by type", ["type"],
                       {(t,): replies.get(t, 0) for t in ("offer", "ack", "nak")})
        yield _counter("loris_dhcp_rate_limited", "DHCP packets dropped by the per-port rate "
                       "limit", [], {(): s.dhcp_rate_limited()})
        client = getattr(s.store, "client", None)      # the store on etcd; 0 on SQLite
        yield _counter("loris_store_requests", "Requests the store sent to etcd (each a "
                       "round trip; watches not counted)", [],
                       {(): client.calls if client is not None else 0})
        yield from _agent_metrics(s.board.agent_stats())


def _agent_metrics(stats: Mapping[str, Mapping[str, float]]) -> Iterator[Any]:
    figures = [("loris_agent_passes", "Reconcile passes of the host's agent since it started",
                "passes", _counter),
               ("loris_agent_pass_seconds", "Seconds the host's agent spent in reconcile "
                "passes since it started", "pass_seconds_total", _counter),
               ("loris_agent_last_pass_duration_seconds", "Duration of the agent's last "
                "reconcile pass", "last_pass_seconds", _gauge),
               ("loris_agent_wiring_errors", "Ports the host's agent failed to wire, since it "
                "started", "wiring_errors", _counter)]
    for name, text, key, make in figures:
        yield make(name, text + " (from its reports)", ["host"],
                   {(h,): v[key] for h, v in stats.items() if key in v})


def _gauge(name: str, text: str, labels: list[str],
           values: Mapping[tuple, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, text, labels=labels)
    for key, value in values.items():
        family.add_metric(list(key), value)
    return family


def _counter(name: str, text: str, labels: list[str],
             values: Mapping[tuple, float]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, text, labels=labels)
    for key, value in values.items():
        family.add_metric(list(key), value)
    return family
