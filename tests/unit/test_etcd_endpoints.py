"""The etcd client's choice of members (controller/etcd/endpoints.py): pure, the time given."""

from __future__ import annotations

from controller.etcd.endpoints import EndpointSet

A, B, C = "http://10.0.0.1:2379", "http://10.0.0.2:2379", "http://10.0.0.3:2379"


def test_a_member_that_failed_is_suspect_until_it_serves_again():
    members = EndpointSet([A, B, C], cooldown=5.0)
    assert not any(members.suspect(u) for u in (A, B, C))
    members.failed(A, 100.0, "timed out")                 # hung: it rests, and is suspect
    members.failed(B, 100.0, "no leader", answered=True)  # answered: no rest, still suspect
    assert members.suspect(A) and members.suspect(B) and not members.suspect(C)
    assert sorted(members.order(101.0)) == [B, C]         # A rests
    assert A in members.order(106.0)                      # its cooldown is over
    assert members.suspect(A)                             # rested, not yet proven healthy
    members.succeeded(A)
    assert not members.suspect(A) and members.current == A
