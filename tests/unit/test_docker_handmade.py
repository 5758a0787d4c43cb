"""Docker networks made by hand for a pod that does not exist yet
(hostagent/docker_handmade.py): `docker network create -d loris --ipam-driver loris
--subnet S red` makes pod red. The calls are the JSON dockerd 20.10 sent in the lab with the
pool changed; Docker's network list is in the shape its API returns."""

from __future__ import annotations

import threading

import pytest
from test_docker_driver import (
    CREATE_ENDPOINT,
    CREATE_NETWORK,
    NID,
    REQUEST_ADDRESS,
    REQUEST_POOL,
    FakeController,
    call,
)

from hostagent import docker_handmade
from hostagent.docker_driver import Book, Driver

SUBNET = "198.18.140.0/24"
POOL = dict(REQUEST_POOL, Pool=SUBNET)
NETWORK = dict(CREATE_NETWORK, IPv4Data=[{"AddressSpace": "loris", "Gateway": "198.18.140.1/24",
                                          "Pool": SUBNET}],
               Options={"com.docker.network.enable_ipv6": False,
                        "com.docker.network.generic": {}})
ENDPOINT = dict(CREATE_ENDPOINT, Interface=dict(CREATE_ENDPOINT["Interface"],
                                                Address="198.18.140.2/24"))


def listed(name: str, nid: str = NID, subnet: str = SUBNET) -> dict:
    """A network as dockerd's GET /networks lists it."""
    return {"Name": name, "Id": nid, "Scope": "local", "Driver": "loris", "EnableIPv6": False,
            "IPAM": {"Driver": "loris", "Options": {}, "Config": [{"Subnet": subnet,
                                                                   "Gateway": "198.18.140.1"}]},
            "Internal": False, "Attachable": False, "Containers": {}, "Options": {},
            "Labels": {}}


def create_by_hand(driver: Driver) -> str:
    pool = call(driver, "/IpamDriver.RequestPool", POOL)
    assert pool["Pool"] == SUBNET and pool["Data"] == {
        "com.docker.network.gateway": "198.18.140.1/24"}
    assert call(driver, "/NetworkDriver.CreateNetwork", NETWORK) == {}
    return pool["PoolID"]


def test_a_network_for_a_new_pod_makes_the_pod_from_its_name(tmp_path):
    ctl = FakeController()
    driver = Driver(ctl, Book(tmp_path / "plugin.json"), "h1")
    kicks = []
    driver.pending.kick = lambda: kicks.append(1)
    pool_id = create_by_hand(driver)
    assert kicks and driver.pending.waiting()       # the Docker thread is woken at once
    assert [p["name"] for p in ctl.pods()] == ["global", "red"]     # nothing made yet
    driver.pending.adopt([listed("bridge", "f" * 64), listed("blue", NID)])
    assert {p["name"] for p in ctl.pods()} == {"global", "red", "blue"}
    blue = next(p for p in ctl.pods() if p["name"] == "blue")
    assert blue["subnet"] == SUBNET and not driver.pending.waiting()
    call(driver, "/IpamDriver.RequestAddress", dict(REQUEST_ADDRESS, PoolID=pool_id))
    call(driver, "/NetworkDriver.CreateEndpoint", ENDPOINT)
    assert ctl.connects[0]["pod"] == blue["id"]
    # the agent restarts: what it learnt is in its book
    again = Driver(ctl, Book(tmp_path / "plugin.json"), "h1")
    call(again, "/IpamDriver.RequestAddress", dict(REQUEST_ADDRESS, PoolID=pool_id))
    # the network removed: the pod stays
    assert call(again, "/NetworkDriver.DeleteNetwork", {"NetworkID": NID}) == {}
    assert blue in ctl.pods()


def test_a_container_start_waits_for_the_pod_of_its_network(driver, ctl):
    pool_id = create_by_hand(driver)
    adopter = threading.Timer(0.2, driver.pending.adopt, [[listed("blue")]])
    adopter.start()
    reply = call(driver, "/IpamDriver.RequestAddress", dict(REQUEST_ADDRESS, PoolID=pool_id))
    adopter.join()
    assert reply["Address"] and ctl.reserved


def test_the_same_network_made_on_two_hosts_at_once_is_one_pod(tmp_path):
    ctl = FakeController()
    h1 = Driver(ctl, Book(None), "h1")
    h2 = Driver(ctl, Book(None), "h2")
    create_by_hand(h1)
    create_by_hand(h2)                   # before h1's agent made the pod
    h1.pending.adopt([listed("blue")])
    h2.pending.adopt([listed("blue", "9" * 64), listed("blue")])
    assert [p["name"] for p in ctl.pods()].count("blue") == 1
    call(h1, "/NetworkDriver.CreateEndpoint", ENDPOINT)
    call(h2, "/NetworkDriver.CreateEndpoint", dict(ENDPOINT, EndpointID="a" * 64))
    assert ctl.connects[0]["pod"] == ctl.connects[1]["pod"]
    # a host where pod blue exists already maps the pool to it at once
    h3 = Driver(ctl, Book(None), "h3")
    assert call(h3, "/IpamDriver.RequestPool", POOL)["PoolID"] == \
        f"loris-pod-{ctl.connects[0]['pod']}"


def test_a_subnet_other_than_the_pods_is_refused_naming_both(driver, ctl, monkeypatch):
    monkeypatch.setattr(docker_handmade, "PENDING_WAIT_S", 0.1)
    pool_id = create_by_hand(driver)
    driver.pending.adopt([listed("red")])                # pod red is 198.18.135.0/24
    assert not driver.pending.waiting()
    for path, body in (("/IpamDriver.RequestAddress", dict(REQUEST_ADDRESS, PoolID=pool_id)),
                       ("/NetworkDriver.CreateEndpoint", ENDPOINT)):
        status, reply = driver.handle(path, body)
        error = reply.get("Error") or reply.get("Err")
        assert SUBNET in error and "198.18.135.0/24" in error, reply
    assert ctl.connects == []


def test_a_pod_named_by_option_is_made_at_once(driver, ctl):
    named = dict(POOL, Options={"loris.pod": "green"})
    pool = call(driver, "/IpamDriver.RequestPool", named)
    green = next(p for p in ctl.pods() if p["name"] == "green")
    assert pool["PoolID"] == f"loris-pod-{green['id']}" and green["subnet"] == SUBNET
    assert not driver.pending.waiting()


def test_a_pod_named_by_the_driver_option_alone_is_made_at_once(driver, ctl):
    """-o loris.pod=green without --ipam-opt: RequestPool sees no name (a pending pool), and
    CreateNetwork makes the pod; the pool's addresses are that pod's."""
    pool_id = call(driver, "/IpamDriver.RequestPool", POOL)["PoolID"]
    generic = {"com.docker.network.generic": {"loris.pod": "green"}}
    call(driver, "/NetworkDriver.CreateNetwork", dict(NETWORK, Options=generic))
    green = next(p for p in ctl.pods() if p["name"] == "green")
    assert not driver.pending.waiting()
    call(driver, "/IpamDriver.RequestAddress", dict(REQUEST_ADDRESS, PoolID=pool_id))
    call(driver, "/NetworkDriver.CreateEndpoint", ENDPOINT)
    assert ctl.connects[0]["pod"] == green["id"]


def test_a_network_whose_pod_never_comes_is_refused_in_bounded_time(driver, monkeypatch):
    monkeypatch.setattr(docker_handmade, "PENDING_WAIT_S", 0.1)
    pool_id = create_by_hand(driver)
    status, reply = driver.handle("/IpamDriver.RequestAddress",
                                  dict(REQUEST_ADDRESS, PoolID=pool_id))
    assert "try again" in reply["Error"]


@pytest.fixture
def ctl() -> FakeController:
    return FakeController()


@pytest.fixture
def driver(ctl: FakeController) -> Driver:
    return Driver(ctl, Book(None), "h1")
