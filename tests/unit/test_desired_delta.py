"""Desired-state deltas (flows/desired_delta.py, hostagent/desired_follow.py): what changed
since a state, applying it, and an agent that can never be left wrong by a lost, reordered
or unknown delta."""

from __future__ import annotations

import pytest

from flows import desired_delta
from flows.desired_delta import DeltaMismatch, ServedStates
from hostagent.desired_follow import DesiredFollower

HOST = {"id": "h1", "tunnel_ip": "198.18.0.11", "tunnel_type": "vxlan"}
PEERS = [{"id": "h2", "tunnel_ip": "198.18.0.12"}]


def port(i: int, state: str = "active") -> dict:
    return {"id": i, "container": f"c{i}", "pod": 7, "mac": f"02:00:00:00:00:{i:02x}",
            "ip": f"198.18.135.{i}/24", "dhcp": False, "state": state}


def test_changes_names_what_was_added_changed_and_removed():
    old = {1: port(1), 2: port(2, "pending"), 3: port(3)}
    new = {1: port(1), 2: port(2), 4: port(4)}
    changed, removed = desired_delta.changes(old, new)
    assert changed == [port(2), port(4)] and removed == [3]
    assert desired_delta.changes(new, new) == ([], [])


def test_the_digest_names_the_content_not_the_order_or_version():
    a = desired_delta.digest(HOST, PEERS, [port(1), port(2)])
    assert a == desired_delta.digest(dict(HOST), list(PEERS), [port(2), port(1)])
    assert a != desired_delta.digest(HOST, PEERS, [port(1), port(2, "pending")])
    assert a != desired_delta.digest(HOST, [], [port(1), port(2)])


def test_a_controller_answers_a_known_state_with_a_delta_and_an_unknown_one_in_full():
    served = ServedStates()
    first = served.answer("h1", 5, HOST, PEERS, [port(1), port(2)], None)
    assert "base" not in first and first["ports"] == [port(1), port(2)]
    second = served.answer("h1", 6, HOST, PEERS, [port(1), port(3)], first["digest"])
    assert second["base"] == first["digest"]
    assert second["ports"] == [port(3)] and second["removed"] == [2]
    assert desired_delta.apply(first, second) == {
        "version": 6, "digest": second["digest"], "host": HOST, "peers": PEERS,
        "ports": [port(1), port(3)]}
    # a digest this controller never served (a restart, another controller): the full state
    unknown = served.answer("h1", 7, HOST, PEERS, [port(1)], "0" * 32)
    assert "base" not in unknown and unknown["ports"] == [port(1)]
    # another host's states are its own
    assert "base" not in served.answer("h2", 7, HOST, PEERS, [port(1)], first["digest"])


def test_only_the_last_few_states_are_kept():
    served = ServedStates(keep=2)
    digests = [served.answer("h1", v, HOST, PEERS, [port(v)], None)["digest"]
               for v in range(1, 4)]
    assert "base" not in served.answer("h1", 9, HOST, PEERS, [], digests[0])
    assert served.answer("h1", 9, HOST, PEERS, [], digests[2])["base"] == digests[2]


def test_a_delta_applies_only_to_its_base_and_must_lead_to_its_digest():
    served = ServedStates()
    s1 = served.answer("h1", 1, HOST, PEERS, [port(1)], None)
    s2 = desired_delta.apply(s1, served.answer("h1", 2, HOST, PEERS, [port(1), port(2)],
                                               s1["digest"]))
    d3 = served.answer("h1", 3, HOST, PEERS, [port(2)], s2["digest"])
    with pytest.raises(DeltaMismatch):
        desired_delta.apply(s1, d3)                 # reordered: not from this state
    with pytest.raises(DeltaMismatch):
        desired_delta.apply(s2, dict(d3, digest="f" * 32))     # would not lead there
    assert desired_delta.apply(s2, d3)["ports"] == [port(2)]
    assert desired_delta.touched(d3) == {1}


def test_the_agent_asks_for_the_full_state_when_a_delta_does_not_apply():
    served, follow = ServedStates(), DesiredFollower()
    assert follow.poll_args() == (None, None)
    s1 = served.answer("h1", 1, HOST, PEERS, [port(1)], None)
    assert follow.take(s1) and follow.poll_args() == (1, s1["digest"])
    assert follow.take_dirty() is None                  # a full state: every port
    s2 = served.answer("h1", 2, HOST, PEERS, [port(1), port(2)], s1["digest"])
    assert follow.take(s2) and follow.state["ports"] == [port(1), port(2)]
    assert follow.take_dirty() == {2} and follow.take_dirty() == set()
    # a delta from a state it does not hold (lost answer, reordering): kept state, full next
    stray = served.answer("h1", 3, HOST, PEERS, [port(2)], s1["digest"])
    assert not follow.take(stray)
    assert follow.state["version"] == 2 and follow.poll_args() == (None, None)
    full = served.answer("h1", 3, HOST, PEERS, [port(2)], None)
    assert follow.take(full) and follow.state == full and follow.take_dirty() is None
    assert follow.poll_args() == (3, full["digest"])


def test_an_agent_without_deltas_polls_as_before():
    follow = DesiredFollower()
    follow.deltas = False
    follow.take({"version": 4, "ports": []})
    assert follow.poll_args() == (4, None)


def test_reports_carry_what_changed_unless_the_controller_may_not_know_the_rest():
    follow = DesiredFollower()
    follow.take({"version": 1, "ports": []})
    last = {"version": 1, "ports": {"1": {"ofport": 7}, "2": {"ofport": 8}}}
    now = {"version": 2, "ports": {"1": {"ofport": 7}, "2": {"ofport": 9}, "3": {"ofport": 10}}}
    assert follow.report(now, last, stale=False) is now      # after a full state: all
    follow.reported(full=True)
    assert follow.report(now, last, stale=False) == {
        "version": 2, "ports": {"2": {"ofport": 9}, "3": {"ofport": 10}}}
    assert follow.report(now, None, stale=False) is now       # the last report failed
    assert follow.report(now, last, stale=True) is now        # periodic: all again
