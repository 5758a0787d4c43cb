"""Mastership decisions (controller/mastership.py): rendezvous spread without churn, the
create-if-absent and hand-over rules, self-fencing, generation ids as OVS compares them."""

from __future__ import annotations

from collections import Counter

from controller.mastership import (
    ControllerEntry,
    MasterKey,
    Role,
    decide,
    fence_deadline,
    generation_newer,
    preferred,
    role_for,
    slave_generation,
)

HOSTS = [f"h{i}" for i in range(300)]


def entries(*ids: str, connected=HOSTS) -> dict[str, ControllerEntry]:
    return {i: ControllerEntry(i, connected=frozenset(connected)) for i in ids}


def owners(controllers: dict[str, ControllerEntry]) -> dict[str, str | None]:
    return {h: preferred(h, controllers.values()) for h in HOSTS}


def test_hosts_spread_over_the_live_controllers():
    counts = Counter(owners(entries("c1", "c2", "c3")).values())
    assert set(counts) == {"c1", "c2", "c3"}
    assert min(counts.values()) > len(HOSTS) / 3 * 0.7


def test_a_joining_controller_takes_only_the_hosts_that_move_to_it():
    before = owners(entries("c1", "c2", "c3"))
    after = owners(entries("c1", "c2", "c3", "c4"))
    moved = {h for h in HOSTS if before[h] != after[h]}
    assert moved and all(after[h] == "c4" for h in moved)


def test_a_leaving_controller_gives_only_its_own_hosts_away():
    before = owners(entries("c1", "c2", "c3"))
    after = owners(entries("c1", "c2"))
    assert {h for h in HOSTS if before[h] != after[h]} == {h for h in HOSTS
                                                              if before[h] == "c3"}


def test_only_controllers_with_the_switches_connected_are_candidates():
    controllers = {"c1": ControllerEntry("c1", connected=frozenset({"h1"})),
                   "c2": ControllerEntry("c2", connected=frozenset())}
    assert preferred("h1", controllers.values()) == "c1"
    assert preferred("h2", controllers.values()) is None


def test_every_controller_computes_the_same_preference():
    views = [entries("c1", "c2", "c3"), dict(reversed(entries("c1", "c2", "c3").items()))]
    assert owners(views[0]) == owners(views[1])


def test_absent_key_is_acquired_only_by_the_preferred_controller():
    controllers = entries("c1", "c2")
    best = preferred("h1", controllers.values())
    other = "c2" if best == "c1" else "c1"
    assert decide(best, controllers, {}, {"h1"}, fenced=False).acquire == {"h1"}
    assert decide(other, controllers, {}, {"h1"}, fenced=False).acquire == frozenset()


def test_a_held_key_is_kept_by_its_owner_and_left_alone_by_the_others():
    controllers = entries("c1", "c2")
    best = preferred("h1", controllers.values())
    other = "c2" if best == "c1" else "c1"
    keys = {"h1": MasterKey(best, 42)}
    mine = decide(best, controllers, keys, {"h1"}, fenced=False)
    assert mine.mastered == {"h1": 42} and not mine.acquire and not mine.release
    theirs = decide(other, controllers, keys, {"h1"}, fenced=False)
    assert theirs == decide(other, controllers, keys, {"h1"}, fenced=False)
    assert not theirs.acquire and not theirs.release and not theirs.mastered


def test_a_non_preferred_master_hands_the_host_over():
    controllers = entries("c1", "c2")
    best = preferred("h1", controllers.values())
    other = "c2" if best == "c1" else "c1"
    d = decide(other, controllers, {"h1": MasterKey(other, 7)}, {"h1"}, fenced=False)
    assert d.release == {"h1"} and not d.mastered


def test_a_non_preferred_master_keeps_the_host_while_the_preferred_lacks_its_switches():
    best = preferred("h1", entries("c1", "c2").values())
    other = "c2" if best == "c1" else "c1"
    controllers = {best: ControllerEntry(best, connected=frozenset()),
                   other: ControllerEntry(other, connected=frozenset({"h1"}))}
    d = decide(other, controllers, {"h1": MasterKey(other, 7)}, {"h1"}, fenced=False)
    assert d.mastered == {"h1": 7} and not d.release


def test_my_own_connections_count_even_before_my_registry_entry_shows_them():
    controllers = {"c1": ControllerEntry("c1", connected=frozenset())}
    assert decide("c1", controllers, {}, {"h1"}, fenced=False).acquire == {"h1"}


def test_a_master_that_lost_the_switches_releases_the_host():
    d = decide("c1", entries("c1"), {"h1": MasterKey("c1", 3)}, set(), fenced=False)
    assert d.release == {"h1"}


def test_a_fenced_controller_masters_nothing_and_writes_nothing():
    d = decide("c1", entries("c1"), {"h1": MasterKey("c1", 3)}, {"h1", "h2"}, fenced=True)
    assert not d.acquire and not d.release and not d.mastered


def test_role_master_carries_the_key_generation_else_slave():
    assert role_for("h1", {"h1": 12}) == (Role.MASTER, 12)
    assert role_for("h2", {"h1": 12}) == (Role.SLAVE, None)
    assert role_for(None, {"h1": 12}) == (Role.SLAVE, None)


def test_generation_ids_compare_as_ovs_does():
    assert generation_newer(5, 4) and not generation_newer(4, 5) and not generation_newer(4, 4)
    assert generation_newer(0, (1 << 64) - 1)          # wraps around
    assert slave_generation(10, None) == 10
    assert slave_generation(10, 12) == 12              # raise the switch to the new master's
    assert slave_generation(12, 10) == 12              # never below what the switch holds


def test_fence_deadline_counts_from_the_keepalive_sent():
    assert fence_deadline(100.0, ttl=5, margin=1.5) == 103.5


def test_registry_entry_round_trips():
    e = ControllerEntry("c1", "http://10.0.0.1:8780", "tcp:10.0.0.1:6653",
                        frozenset({"h2", "h1"}), 12.5)
    assert ControllerEntry.from_json(e.to_json()) == e


def test_identity_from_the_settings_or_guessed():
    from controller import config
    from controller.ha import identity

    me = identity(config.load(env={}, api_listen="10.0.0.7:8790", openflow_port=6653))
    assert me.api_url == "http://10.0.0.7:8790" and me.openflow == "tcp:10.0.0.7:6653"
    assert me.id.endswith("-8790")
    me = identity(config.load(env={"LORIS_CONTROLLER_ID": "ctl-a",
                                   "LORIS_ADVERTISE_API": "https://ctl-a.example:8780/",
                                   "LORIS_API_CERT": "c.pem", "LORIS_API_KEY": "k.pem"},
                              openflow_port=6643, openflow_tls=True))
    assert me == type(me)("ctl-a", "https://ctl-a.example:8780", "ssl:ctl-a.example:6643")
