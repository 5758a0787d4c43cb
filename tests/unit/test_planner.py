"""The planner on its own (plain flows in, plans out), the fake switch it is checked
against, and the real Programmer and Switches driving fake bridges: what is sent after a
change, a reconnect, a rejected add, a lost message."""

from __future__ import annotations

import pytest
from fakeswitch import FakeDatapath, FakeSwitch, FlowMod, RejectNext, entry_of, expected
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser
from programmer_rig import Rig

from controller import planner
from controller.planner import Dumped, Step
from controller.programmer import NOT_CONNECTED, NOT_REGISTERED, OK
from controller.switches import FULL_MASK, OpenFlowError, serialized
from controller.wiring import _agent_back
from flows import LORIS_COOKIE, LORIS_COOKIE_MASK, Kind, diff, to_flowmod
from flows.diff import install_order, remove_order
from flows.flow import goto, make_flow, output


def flow(table: int, priority: int, obj: int = 1, out: int = 1, **match) -> object:
    return make_flow(table, priority, match, [output(out)] if table else [goto(10)],
                     Kind.PORT, obj)


A = flow(0, 100, in_port=5)
B = flow(10, 100, eth_dst="02:00:00:00:00:01")
C = flow(20, 50, eth_dst="02:00:00:00:00:02")
B2 = flow(10, 100, out=9, eth_dst="02:00:00:00:00:01")      # B's key, new actions


def dumped(f) -> Dumped:
    return Dumped(f.cookie, f.table, f.priority, ("match of", f.match))


# ---- the planner ------------------------------------------------------------------------------

def test_update_sends_only_the_named_sections_difference():
    D = flow(20, 50, obj=2, eth_dst="02:00:00:00:00:03")
    shadow = {None: frozenset({A}), 7: frozenset({B}), 8: frozenset({C})}
    plan = planner.update(shadow, {7: frozenset({B2}), 9: frozenset({D})}, [7, 9])
    assert plan.adds == (D, B2) and plan.replaced == 1     # deepest table first
    assert plan.deletes == () and plan.stale == ()        # B is replaced by B2's add
    assert plan.shadow == {None: frozenset({A}), 7: frozenset({B2}), 8: frozenset({C}),
                           9: frozenset({D})}
    assert plan.flow_count == 4


def test_update_of_every_section_drops_the_sections_that_are_gone():
    shadow = {None: frozenset({A}), 7: frozenset({B, C})}
    plan = planner.update(shadow, {None: frozenset({A})})
    assert plan.adds == () and set(plan.deletes) == {B, C}
    assert [f.table for f in plan.deletes] == [10, 20]      # entry table first
    assert plan.shadow == {None: frozenset({A})}


def test_update_without_change_sends_nothing():
    shadow = {None: frozenset({A, B})}
    plan = planner.update(shadow, {None: frozenset({A, B})}, [None])
    assert len(plan) == 0 and not plan and plan.shadow == shadow


def test_reconcile_keeps_what_is_right_adds_what_is_missing_deletes_the_rest():
    foreign_loris = Dumped(0x4C10000000000001, 20, 1234, "a flow nobody wants")
    plan = planner.reconcile([dumped(A), dumped(B), foreign_loris],
                             {None: frozenset({A}), 7: frozenset({B2, C}), 8: frozenset()})
    assert plan.kept == 1                                  # A
    assert plan.adds == (C, B2)                            # deepest table first
    assert set(plan.stale) == {dumped(B), foreign_loris}   # B's old version: strict + cookie
    assert [d.table for d in plan.stale] == [10, 20]
    assert plan.shadow == {None: frozenset({A}), 7: frozenset({B2, C})}


def test_install_order_is_the_one_diff_uses():
    flows = [A, B, C, B2]
    change = diff({"br": frozenset()}, {"br": frozenset(flows)})["br"]
    assert list(change.add) == sorted(flows, key=install_order)
    gone = diff({"br": frozenset(flows)}, {"br": frozenset()})["br"]
    assert list(gone.delete) == sorted(flows, key=remove_order)
    assert planner.reconcile([], {None: frozenset(flows)}).adds == tuple(
        sorted(flows, key=install_order))


@pytest.mark.parametrize("trusted, last, full, want", [
    (True, True, False, (Step.SECTIONS,)),
    (True, False, True, (Step.ALL,)),
    (False, True, False, (Step.RESTORE, Step.ALL)),
    (False, True, True, (Step.RESTORE, Step.ALL)),
    (False, False, False, (Step.RECONCILE,)),
])
def test_steps(trusted, last, full, want):
    assert planner.steps(trusted, last, full) == want


# ---- the fake switch --------------------------------------------------------------------------

def send(dp: FakeDatapath, msg) -> None:
    assert dp.send_msg(msg)


def test_fake_add_replaces_its_key_cookie_included_modify_keeps_the_cookie():
    sw = FakeSwitch(1, lambda kind, msg: None)
    dp = sw.connect()
    send(dp, to_flowmod(B, dp, "add"))
    send(dp, to_flowmod(B2, dp, "add"))
    assert sw.loris_flows() == expected([B2])
    modify = to_flowmod(B, dp, "add")
    modify.command = ofp.OFPFC_MODIFY_STRICT
    send(dp, modify)
    [(key, cookie, instructions)] = sw.loris_flows()
    assert cookie == B2.cookie and instructions == entry_of(B)[2]


def test_fake_delete_strict_needs_the_cookie_and_delete_filters_by_mask():
    sw = FakeSwitch(1, lambda kind, msg: None)
    dp = sw.connect()
    for f in (A, B, C):
        send(dp, to_flowmod(f, dp, "add"))
    sw.add_foreign(20, 1, 0x1234, eth_dst="02:de:ad:00:00:02")
    send(dp, to_flowmod(B2, dp, "delete_strict"))          # B's key, B2's cookie: no-op
    assert sw.loris_flows() == expected([A, B, C])
    send(dp, to_flowmod(B, dp, "delete_strict"))
    assert sw.loris_flows() == expected([A, C])
    send(dp, parser.OFPFlowMod(dp, cookie=A.cookie, cookie_mask=FULL_MASK,
                               table_id=ofp.OFPTT_ALL, command=ofp.OFPFC_DELETE,
                               out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY))
    assert sw.loris_flows() == expected([C]) and len(sw.table.entries) == 2


def bundle_ctrl(dp, bundle_id, kind):
    return parser.ONFBundleCtrlMsg(dp, bundle_id, kind, ofp.ONF_BF_ATOMIC, [])


def test_fake_commits_a_bundle_without_its_rejected_add_as_ovs_does():
    events = []
    sw = FakeSwitch(1, lambda kind, msg: events.append((kind, msg.xid)))
    dp = sw.connect()
    sw.reject = lambda mod: mod.cookie == C.cookie
    send(dp, bundle_ctrl(dp, 5, ofp.ONF_BCT_OPEN_REQUEST))
    for f in (A, C):
        send(dp, parser.ONFBundleAddMsg(dp, 5, ofp.ONF_BF_ATOMIC, to_flowmod(f, dp), []))
    assert sw.loris_flows() == set()                       # nothing before the commit
    send(dp, bundle_ctrl(dp, 5, ofp.ONF_BCT_COMMIT_REQUEST))
    assert sw.loris_flows() == expected([A])               # the rejected add is just missing
    assert [kind for kind, _ in events] == ["reply", "error", "reply"]


def one_bridge() -> tuple[Rig, FakeSwitch, FakeDatapath]:
    """A programmed rig of one host, and one of its bridges with its connection."""
    rig = Rig()
    rig.add_hosts(1)
    rig.run()
    dpid = next(iter(rig.bridges))
    return rig, rig.bridges[dpid], rig.switches.datapath(dpid)


def test_switches_discard_a_bundle_with_a_rejected_add():
    rig, sw, dp = one_bridge()
    before = sw.loris_flows()
    sw.reject = lambda mod: mod.cookie == C.cookie
    with pytest.raises(OpenFlowError, match=r"rejected 1 of 2 flow-mods: OFPET_FLOW_MOD_FAILED/"
                                            r"OFPFMFC_TABLE_FULL .* for table=20"):
        rig.switches.bundle(dp, [(serialized(to_flowmod(f, dp)), str(f)) for f in (A, C)])
    assert sw.loris_flows() == before


def test_switches_read_a_dump_in_several_parts():
    rig, sw, dp = one_bridge()
    flows = [flow(10, 100, obj=n, eth_dst=f"02:00:00:00:01:{n:02x}") for n in range(120)]
    rig.switches.bundle(dp, [(to_flowmod(f, dp), str(f)) for f in flows])
    sw.add_foreign(20, 1, 0x1234, eth_dst="02:de:ad:00:00:02")
    got = rig.switches.dump_loris_flows(dp)
    assert len(got) == len(sw.loris_flows()) > 120
    assert {(d.cookie, d.table, d.priority) for d in got} >= {
        (f.cookie, f.table, f.priority) for f in flows}


def test_a_dump_is_asked_for_in_parts_that_cover_every_loris_cookie_once():
    assert planner.dump_parts(0) == planner.dump_parts(1024) == [(LORIS_COOKIE,
                                                                   LORIS_COOKIE_MASK)]
    parts = planner.dump_parts(20_000)
    assert len(parts) == 32                       # 20,000 / 32 = 625 flows a part
    assert planner.dump_parts(1025) == planner.dump_parts(2048) != planner.dump_parts(2049)
    for cookie in (LORIS_COOKIE, LORIS_COOKIE | 0x0FFF_FFFF, make_flow(
            10, 100, {"eth_dst": "02:00:00:00:00:01"}, [output(1)], Kind.POD, 7).cookie):
        assert sum(cookie & mask == c & mask for c, mask in parts) == 1
    assert not [1 for c, mask in parts if 0x1234 & mask == c & mask]     # a foreign cookie


def test_a_large_dump_is_read_in_several_requests_and_complete():
    rig, sw, dp = one_bridge()
    flows = [flow(10, 100, obj=n, eth_dst=f"02:00:00:00:{n >> 8:02x}:{n & 255:02x}")
             for n in range(2 * planner.DUMP_PART_FLOWS)]
    rig.switches.bundle(dp, [(to_flowmod(f, dp), str(f)) for f in flows])
    sw.flow_stats_requests = 0
    got = rig.switches.dump_loris_flows(dp)
    assert sw.flow_stats_requests == 4            # 2,048 flows and the base pipeline's
    assert sorted(d.identity for d in got) == sorted(
        (e.cookie, k[0], k[1]) for k, e in sw.table.entries.items())


def test_flow_mod_decoding_round_trips():
    dp = FakeSwitch(1, lambda kind, msg: None).connect()
    mod = FlowMod.decode(serialized(to_flowmod(B, dp, "delete_strict")))
    assert (mod.command, mod.table, mod.priority, mod.cookie, mod.cookie_mask) == (
        ofp.OFPFC_DELETE_STRICT, 10, 100, B.cookie, FULL_MASK)


# ---- the Programmer over fake bridges ----------------------------------------------------

@pytest.fixture
def rig():
    rig = Rig(timeout=0.2)
    rig.hosts = rig.add_hosts(2)
    rig.port = rig.add_port("h1", 7, 10)
    rig.add_port("h2", 7, 10)
    rig.run()
    yield rig
    rig.store.close()


def converged(rig: Rig) -> bool:
    desired = rig.desired()
    return all(sw.loris_flows() == desired[dpid] for dpid, sw in rig.bridges.items())


def job(rig: Rig, host: str, sections=None, sync=()) -> dict[str, str]:
    future = rig.programmer.submit(host, sections, sync)
    rig.run()
    return future.wait(0)


def everywhere(rig: Rig, sections=None) -> dict[int, str]:
    """A job for every host, as the service submits one after a change: dpid -> result."""
    out = {}
    for host in rig.hosts:
        for bridge, result in job(rig, host, sections).items():
            out[0x100 * (1 + (bridge == "br-tun")) + int(host[1:])] = result
    return out


def test_connected_bridges_get_their_flows_and_the_shadow_matches(rig):
    assert converged(rig)
    for dpid, sw in rig.bridges.items():
        assert expected(rig.programmer.shadow_flows(dpid)) == sw.loris_flows()
        status = rig.switches.bridge_status(dpid)
        assert status.synced and status.flows == len(sw.loris_flows())


def test_a_change_sends_one_bundle_with_only_the_difference(rig):
    commits = {dpid: sw.commits for dpid, sw in rig.bridges.items()}
    before = {dpid: sw.loris_flows() for dpid, sw in rig.bridges.items()}
    rig.add_port("h2", 7, 11)
    assert set(everywhere(rig, [7]).values()) == {OK}
    assert converged(rig)
    changed = {dpid for dpid in rig.bridges if before[dpid] != rig.desired(dpid)}
    assert changed == {0x101, 0x102, 0x201}          # h1 learns the member, h2 wires it
    for dpid, sw in rig.bridges.items():
        assert sw.commits == commits[dpid] + (dpid in changed)


def test_a_job_for_an_unchanged_section_sends_nothing(rig):
    commits = {dpid: sw.commits for dpid, sw in rig.bridges.items()}
    assert job(rig, "h1", [7]) == {"br-int": OK, "br-tun": OK}
    assert job(rig, "h1") == {"br-int": OK, "br-tun": OK}
    assert {dpid: sw.commits for dpid, sw in rig.bridges.items()} == commits


def test_an_agent_back_from_away_gets_its_host_recomputed_without_a_dump(rig):
    # a dump of a large bridge held the controller for seconds: long enough for the agent
    # to be counted away again, and its return dumped again (docs/benchmarks.md)
    rig.add_port("h1", 7, 11)
    mine = [dpid for dpid, owner in rig.owner.items() if owner[0] == "h1"]
    for dpid in mine:
        rig.bridges[dpid].flow_stats_requests = 0
    _agent_back(rig.programmer, "h1", 12.0)
    rig.run()
    for dpid in mine:                       # the port added meanwhile is on h1's bridges
        assert rig.bridges[dpid].loris_flows() == rig.desired(dpid)
        assert rig.bridges[dpid].flow_stats_requests == 0


def test_a_reconnect_that_kept_the_flows_sends_nothing_but_fixes_strays(rig):
    dpid = 0x101
    sw = rig.bridges[dpid]
    sw.add_foreign(20, 1234, 0x4C10000000000001, eth_dst="02:de:ad:00:00:01")   # Loris mark
    sw.add_foreign(20, 1235, 0x1234, eth_dst="02:de:ad:00:00:02")               # not ours
    rig.connect(dpid, keep_flows=True)
    rig.run()
    assert converged(rig)
    assert any(e.cookie == 0x1234 for e in sw.table.entries.values())


def test_a_bridge_that_lost_its_flows_gets_its_last_ones_back_before_any_computing(rig):
    dpid = 0x101
    sw = rig.bridges[dpid]
    last = sw.loris_flows()
    rig.disconnect(dpid)
    rig.add_port("h1", 7, 11)               # the store changes while it is away
    assert everywhere(rig, [7])[dpid] == NOT_CONNECTED
    seen = []
    original = sw._change

    def spy(change):
        original(change)
        seen.append(sw.loris_flows())
    sw._change = spy
    rig.connect(dpid, keep_flows=False)
    rig.run()
    assert seen == [last, rig.desired(dpid)]   # first exactly what it had, then the truth
    assert converged(rig)


def test_a_rejected_add_fails_that_bridge_only_and_the_next_job_reconciles(rig):
    rig.add_port("h1", 7, 11)
    sw = rig.bridges[0x101]
    before = sw.loris_flows()
    sw.reject = RejectNext(1)
    result = everywhere(rig, [7])
    assert result[0x101] != OK and {result[d] for d in (0x102, 0x201, 0x202)} == {OK}
    assert "OFPFMFC_TABLE_FULL" in result[0x101] and "rejected 1 of" in result[0x101]
    assert sw.loris_flows() == before                      # discarded as a whole
    assert rig.programmer.shadow_flows(0x101) is None
    status = rig.switches.bridge_status(0x101)
    assert not status.synced
    assert any("OFPFMFC_TABLE_FULL" in e["message"] and (e["flow"] or "").startswith("table=")
               for e in status.errors)
    assert job(rig, "h1", []) == {"br-int": OK, "br-tun": OK}
    assert converged(rig) and rig.switches.bridge_status(0x101).synced


def test_a_lost_send_or_commit_reply_leaves_the_bridge_unknown_until_reconciled(rig):
    rig.add_port("h1", 7, 11)
    rig.bridges[0x102].fail_sends = 1
    rig.bridges[0x202].lose_replies.append("commit")       # committed, never confirmed
    result = everywhere(rig, [7])
    assert "is not connected" in result[0x102] and "did not answer" in result[0x202]
    assert rig.bridges[0x202].loris_flows() == rig.desired(0x202)
    assert rig.programmer.shadow_flows(0x102) is rig.programmer.shadow_flows(0x202) is None
    assert set(everywhere(rig, [7]).values()) == {OK}
    assert converged(rig)


def test_an_unregistered_or_removed_host(rig):
    assert job(rig, "h9") == {"br-int": NOT_REGISTERED, "br-tun": NOT_REGISTERED}
    rig.bridges[0x102].add_foreign(20, 1, 0x1234, eth_dst="02:de:ad:00:00:02")
    with rig.store.tx() as tx:
        for port in tx.ports(host_id="h2"):
            tx.delete_port(port.id)
        tx.delete_host("h2")
    future = rig.programmer.clear("h2", [0x102, 0x202])
    rig.run()
    assert future.wait(0) == {"br-int": NOT_REGISTERED, "br-tun": NOT_REGISTERED}
    assert rig.bridges[0x102].loris_flows() == rig.bridges[0x202].loris_flows() == set()
    assert len(rig.bridges[0x102].table.entries) == 1     # the foreign flow stays
    assert rig.programmer.shadow_flows(0x102) is None


def test_threads_and_hub_converge_whatever_the_interleaving():
    """Worker threads, a hub thread delivering replies, errors, connects and disconnects,
    and jobs submitted from the test's thread all at once."""
    rig = Rig(timeout=0.5, threaded=True)
    hosts = rig.add_hosts(3)
    futures = []
    for n in range(30):
        port = rig.add_port(hosts[n % 3], 7 + n % 2, 10 + n)
        futures += [rig.programmer.submit(h, [7 + n % 2]) for h in hosts]
        if n % 4 == 0:
            rig.connect(0x101 + n % 3, keep_flows=n % 8 == 0)
        if n % 5 == 0:
            rig.bridges[0x201 + n % 3].reject = RejectNext(1)
        if n % 7 == 0:
            rig.remove_port(port)
            futures += [rig.programmer.submit(h, [7 + n % 2]) for h in hosts]
    for future in futures:
        future.wait(30)
    for sw in rig.bridges.values():
        sw.reject = None
    rig.settle(hosts)
    assert converged(rig)
    rig.store.close()
