"""Any sequence of programming jobs (partial and full), switch reconnects (with and without
their flows), rejected adds, lost sends and lost commit replies: once the controller
reconciles, every fake bridge holds exactly the desired flows. On the way:

- the shadow never lies: a connected bridge the programmer has a shadow for holds exactly
  the shadow's flows;
- no flow that is on a bridge and desired when the workers run ever vanishes while they
  run (they replace and delete, but never take away a flow that stays);
- flows that are not Loris's are never touched.
"""

from __future__ import annotations

from fakeswitch import RejectNext, expected
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from programmer_rig import Rig

HOSTS = ("h1", "h2", "h3")
DPIDS = tuple(sorted(0x100 * b + n for b in (1, 2) for n in (1, 2, 3)))
PODS = (7, 8)
MAX_PORTS = 12
FOREIGN = 0x1234


class Programming(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.rig = Rig(timeout=0.02)
        self.rig.add_hosts(len(HOSTS))
        self.pending: dict[str, set[int]] = {h: set() for h in HOSTS}
        self.ports: dict[int, str] = {}                      # port id -> host
        self.ofports = {h: iter(range(10, 10_000)) for h in HOSTS}
        self.foreign: dict[int, int] = dict.fromkeys(DPIDS, 0)
        self.run_workers()

    # ---- helpers ----------------------------------------------------------------------------
    def changed(self, pod: int) -> None:
        """The store changed in `pod`: every host needs that section (the service names the
        pod's hosts; naming the others too costs nothing)."""
        for h in HOSTS:
            self.pending[h].add(pod)

    def run_workers(self) -> None:
        bridges, desired = self.rig.bridges, self.rig.desired()
        for dpid, sw in bridges.items():
            sw.protected = sw.loris_flows() & desired[dpid]
        self.rig.run()
        for sw in bridges.values():
            sw.protected = set()
        violations = [v for sw in bridges.values() for v in sw.violations]
        assert not violations, violations

    # ---- the store changes ------------------------------------------------------------------
    @precondition(lambda self: len(self.ports) < MAX_PORTS)
    @rule(host=st.sampled_from(HOSTS), pod=st.sampled_from(PODS), dhcp=st.booleans())
    def add_port(self, host: str, pod: int, dhcp: bool) -> None:
        port = self.rig.add_port(host, pod, next(self.ofports[host]), dhcp)
        self.ports[port] = host
        self.changed(pod)

    @precondition(lambda self: self.ports)
    @rule(data=st.data())
    def remove_port(self, data: st.DataObject) -> None:
        port = data.draw(st.sampled_from(sorted(self.ports)))
        with self.rig.store.tx() as tx:
            pod = tx.port(port).pod_id
        self.rig.remove_port(port)
        del self.ports[port]
        self.changed(pod)

    @precondition(lambda self: self.ports)
    @rule(data=st.data())
    def move_port(self, data: st.DataObject) -> None:
        """The port's ofport changes (its veth was re-created)."""
        port = data.draw(st.sampled_from(sorted(self.ports)))
        with self.rig.store.tx() as tx:
            pod = tx.port(port).pod_id
        self.rig.move_port(port, next(self.ofports[self.ports[port]]))
        self.changed(pod)

    # ---- programming ----------------------------------------------------------------------
    @rule(host=st.sampled_from(HOSTS), full=st.booleans(), now=st.booleans())
    def submit(self, host: str, full: bool, now: bool) -> None:
        """A job for what changed (or everything); run now, or left queued to be merged
        with later ones."""
        self.rig.programmer.submit(host, None if full else sorted(self.pending[host]))
        self.pending[host] = set()
        if now:
            self.run_workers()

    @rule()
    def run(self) -> None:
        self.run_workers()

    # ---- the switches -----------------------------------------------------------------------
    @rule(dpid=st.sampled_from(DPIDS), keep_flows=st.booleans(), stray=st.booleans())
    def reconnect(self, dpid: int, keep_flows: bool, stray: bool) -> None:
        """The bridge reconnects; it kept its flows (secure fail mode) or lost them
        (vswitchd restarted); perhaps someone added a flow with Loris's cookie meanwhile."""
        self.rig.disconnect(dpid)
        if stray:
            self.rig.bridges[dpid].add_foreign(20, 1234, 0x4C10000000000001,
                                               eth_dst="02:de:ad:00:00:01")
        self.rig.connect(dpid, keep_flows)
        if not keep_flows:
            self.foreign[dpid] = 0

    @rule(dpid=st.sampled_from(DPIDS))
    def disconnect(self, dpid: int) -> None:
        self.rig.disconnect(dpid)

    @rule(dpid=st.sampled_from(DPIDS))
    def foreign_flow(self, dpid: int) -> None:
        n = self.foreign[dpid] = self.foreign[dpid] + 1
        self.rig.bridges[dpid].add_foreign(20, 1000 + n, FOREIGN, eth_dst=f"02:de:ad:01:00:{n:02x}")

    @rule(dpid=st.sampled_from(DPIDS), n=st.integers(1, 3))
    def reject_adds(self, dpid: int, n: int) -> None:
        self.rig.bridges[dpid].reject = RejectNext(n)

    @rule(dpid=st.sampled_from(DPIDS))
    def lose_a_send(self, dpid: int) -> None:
        self.rig.bridges[dpid].fail_sends += 1

    @rule(dpid=st.sampled_from(DPIDS))
    def lose_a_commit_reply(self, dpid: int) -> None:
        self.rig.bridges[dpid].lose_replies.append("commit")

    # ---- what always holds ----------------------------------------------------------------
    @invariant()
    def the_shadow_never_lies(self) -> None:
        for dpid, sw in self.rig.bridges.items():
            shadow = self.rig.programmer.shadow_flows(dpid)
            if shadow is not None and self.rig.switches.datapath(dpid) is not None:
                assert expected(shadow) == sw.loris_flows(), f"{dpid:#x}"

    @invariant()
    def foreign_flows_stay(self) -> None:
        for dpid, sw in self.rig.bridges.items():
            assert sum(e.cookie == FOREIGN for e in sw.table.entries.values()) == \
                self.foreign[dpid]

    def teardown(self) -> None:
        """No more faults; every bridge connected; a job for what changed on every host:
        every bridge holds exactly the desired flows."""
        try:
            rig = self.rig
            for dpid, sw in rig.bridges.items():
                sw.reject, sw.fail_sends, sw.lose_replies = None, 0, []
                if sw.connection is None:
                    rig.connect(dpid)
            for h in HOSTS:
                rig.programmer.submit(h, sorted(self.pending[h]))
            self.run_workers()
            desired = rig.desired()
            for dpid, sw in rig.bridges.items():
                assert sw.loris_flows() == desired[dpid], f"{dpid:#x}"
                assert rig.switches.bridge_status(dpid).synced, f"{dpid:#x}"
        finally:
            self.rig.store.close()


Programming.TestCase.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestProgramming = Programming.TestCase
