"""The revisions each host's master has programmed, published and waited for through etcd
(controller/installed.py), against the session's local etcd."""

from __future__ import annotations

import threading

import pytest

from controller.installed import InstalledMarks
from controller.programmer import NOT_MASTER, OK, Future


@pytest.fixture
def etcd(local_etcd):
    client = local_etcd.client()
    lease = client.grant(10).id
    yield client, local_etcd.new_prefix(), lease
    client.revoke(lease)


def done(result: dict) -> Future:
    job = Future()
    job.set_result(result)
    return job


def publish(marks: InstalledMarks, *jobs: tuple[str, int, Future]) -> None:
    for job in jobs:
        marks.track(*job)
    marks.publish_pending()


def test_a_full_job_that_took_publishes_its_revision_and_a_waiter_sees_it(etcd):
    client, prefix, lease = etcd
    master = InstalledMarks(client, prefix, lambda: lease, 1.0)
    waiter = InstalledMarks(client, prefix, lambda: lease, 1.0)
    assert waiter.wait({"h1"}, 5, 0.2) == {"h1"}
    publish(master, ("h1", 5, done({"br-int": OK, "br-tun": OK})),
            ("h2", 7, done({"br-int": OK, "br-tun": NOT_MASTER})))     # not ours yet
    assert waiter.wait({"h1"}, 5, 2) == set()
    assert waiter.wait({"h1", "h2"}, 5, 0.2) == {"h2"}
    assert waiter.wait({"h1"}, 6, 0.2) == {"h1"}                      # not that far yet
    kv = client.get(prefix + "programmed/h1")
    assert (kv.text, kv.lease) == ("5", lease)


def test_a_waiter_wakes_when_the_master_catches_up(etcd):
    client, prefix, lease = etcd
    master = InstalledMarks(client, prefix, lambda: lease, 1.0)
    waiter = InstalledMarks(client, prefix, lambda: lease, 1.0)
    publish(master, ("h1", 3, done({"br-int": OK, "br-tun": OK})))
    missing: list[set[str]] = []
    t = threading.Thread(target=lambda: missing.append(waiter.wait({"h1"}, 9, 10)))
    t.start()
    publish(master, ("h1", 9, done({"br-int": OK, "br-tun": OK})))
    t.join(10)
    assert missing == [set()]


def test_nothing_is_published_without_a_lease_or_going_back(etcd):
    client, prefix, lease = etcd
    held: list[int | None] = [None]
    master = InstalledMarks(client, prefix, lambda: held[0], 1.0)
    publish(master, ("h1", 4, done({"br-int": OK, "br-tun": OK})))
    assert client.get(prefix + "programmed/h1") is None               # fenced: no lease
    held[0] = lease
    publish(master, ("h1", 8, done({"br-int": OK, "br-tun": OK})),
            ("h1", 6, done({"br-int": OK, "br-tun": OK})))
    publish(master, ("h1", 7, done({"br-int": OK, "br-tun": OK})))
    assert client.get(prefix + "programmed/h1").text == "8"
