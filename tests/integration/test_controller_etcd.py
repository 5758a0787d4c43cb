"""The controller for real on the etcd store (LORIS_STORE=etcd): osken-manager, real OVS,
the real agents, a 3-member etcd cluster in the lab's control namespace (lab/etcd.py).

Connect, ping, restart the controller under a continuous ping: nothing lost, the same
state, every row in etcd and no SQLite file made. The store's other behaviour on etcd is
covered in-process on both backends (tests/unit/test_store.py, test_api.py,
test_etcd_store.py); several controllers are issue #13's other part.
"""

from __future__ import annotations

import re
import signal
import time

import pytest
from conftest import start_cluster
from helpers import connect, ping_counts, pings, wait_synced

from controller.etcd import EtcdClient

pytestmark = [pytest.mark.integration]


def test_controller_on_etcd_connects_pings_and_survives_a_restart(make_lab):
    lab = make_lab(hosts=2, docker=False)
    etcd = lab.start_etcd(members=3)
    env = {"LORIS_STORE": "etcd", "LORIS_ETCD_ENDPOINTS": ",".join(etcd.endpoints)}
    start_cluster(lab, controller_env=env, wait="meshed")
    lab.add_container("h1", "a", kind="netns")
    lab.add_container("h2", "b", kind="netns")
    assert lab.api("POST", "/v1/pods", {"id": 7, "subnet": "198.18.135.0/24"})[0] == 201
    for name, ip in (("a", "198.18.135.5/24"), ("b", "198.18.135.6/24")):
        status, port = connect(lab, name, ip, 7)
        assert status == 201 and port["state"] == "active", port
    assert pings(lab, "a", "198.18.135.6", count=2, interval=0.2)

    with EtcdClient(etcd.endpoints, socket_factory=etcd.socket_factory) as client:
        ports = {kv.key for kv in client.list_prefix("/loris/v1/ports/").kvs}
    assert len(ports) == 2
    assert not (lab.dir / "loris.db").exists()          # the state is in etcd only

    ports_before = lab.api("GET", "/v1/ports")[1]
    ping = lab.start_process("ping-a-b", ["ping", "-i", "0.2", "198.18.135.6"],
                             netns=lab.container("a"))
    time.sleep(1.5)
    lab.processes["controller"].stop()
    time.sleep(2)                                       # traffic keeps flowing without it
    restarted = time.time()
    lab.start_controller(extra_env=env)
    wait_synced(lab, since=restarted)
    time.sleep(1)
    ping.signal(signal.SIGINT)
    ping.wait(5)
    sent, _ = ping_counts(ping.log_text())
    answered = {int(n) for n in re.findall(r"icmp_seq=(\d+)", ping.log_text())}
    # the request in flight when SIGINT arrived has had no time for its reply
    assert sent >= 15 and set(range(1, sent)) <= answered, ping.log_tail(5)
    assert lab.api("GET", "/v1/ports")[1] == ports_before
    assert "etcd store" in lab.processes["controller"].log_text()
    # and it still connects after the restart
    lab.add_container("h2", "c", kind="netns")
    status, port = connect(lab, "c", "198.18.135.7/24", 7)
    assert status == 201, port
    assert pings(lab, "c", "198.18.135.5", count=2, interval=0.2)
