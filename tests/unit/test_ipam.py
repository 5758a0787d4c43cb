"""IPAM (controller/ipam.py) without HTTP: the pure choices, then the checks against a real
store's pods and ports."""

from __future__ import annotations

import ipaddress

import pytest

from controller import ipam
from controller.errors import ApiError
from controller.store import Store

NET = ipaddress.IPv4Network("198.18.135.0/24")
SERVER_MAC = "0a:4c:00:00:00:08"          # pod 7's DHCP server (tunnel key 8)


def iface(text: str) -> ipaddress.IPv4Interface:
    return ipaddress.IPv4Interface(text)


def addr(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


# ---- pure ---------------------------------------------------------------------------------

def test_lowest_free_skips_network_server_and_broadcast():
    assert ipam.lowest_free(NET, set()) == iface("198.18.135.2/24")
    assert ipam.lowest_free(NET, {addr("198.18.135.2"), addr("198.18.135.3")}) == \
        iface("198.18.135.4/24")
    assert ipam.lowest_free(NET, {addr("198.18.135.2"), addr("198.18.135.4")}) == \
        iface("198.18.135.3/24")                  # a hole is reused
    small = ipaddress.IPv4Network("198.18.131.0/29")
    used = {addr(f"198.18.131.{i}") for i in range(2, 6)}
    assert ipam.lowest_free(small, used) == iface("198.18.131.6/29")
    assert ipam.lowest_free(small, used | {addr("198.18.131.6")}) is None   # .7 is broadcast


def test_assignable_counts_what_ports_can_get():
    assert ipam.assignable(NET) == 253
    assert ipam.assignable(ipaddress.IPv4Network("198.18.131.0/30")) == 1


def test_random_macs_are_local_unicast_and_free():
    taken = {ipam.random_mac(()) for _ in range(200)}
    assert len(taken) == 200
    for mac in taken:
        first = int(mac[:2], 16)
        assert mac.startswith("02:") and not first & 1 and not mac.startswith("02:00:00:00:00")
    assert ipam.random_mac(taken) not in taken


# ---- against the store ----------------------------------------------------------------------

@pytest.fixture
def tx(tmp_path):
    store = Store(str(tmp_path / "loris.db"))
    with store.tx() as t:
        t.insert_host("h1", "198.18.0.11", "vxlan", 1, 2)
        t.insert_pod(7, "web", str(NET))
        t.insert_pod(9, None, None)
        t.insert_port("h1", "web1", 7, "02:00:00:00:07:05", iface("198.18.135.2/24"), True)
        yield t
    store.close()


def pod(tx, pod_id):
    return tx.pod(pod_id)


def refused(status: int, code: str, call, *args) -> str:
    with pytest.raises(ApiError) as e:
        call(*args)
    assert (e.value.status, e.value.code) == (status, code)
    return e.value.message


def test_dhcp_gets_the_lowest_free_address(tx):
    assert ipam.address(tx, pod(tx, 7), None) == iface("198.18.135.3/24")


def test_dhcp_needs_a_subnet(tx):
    msg = refused(422, "no_subnet", ipam.address, tx, pod(tx, 9), None)
    assert "pod 9 has no subnet" in msg and "create the pod with a subnet" in msg


def test_a_full_subnet_is_a_409_naming_it(tx):
    tx.insert_pod(3, None, "198.18.131.0/30")
    tx.insert_port("h1", "a", 3, "02:00:00:00:03:02", iface("198.18.131.2/30"), True)
    msg = refused(409, "subnet_full", ipam.address, tx, pod(tx, 3), None)
    assert "pod 3's subnet 198.18.131.0/30 is full (1 addresses in use)" in msg


@pytest.mark.parametrize("ip,status,code,needle", [
    ("198.18.136.9/24", 422, "ip_outside_subnet", "not in pod 7's subnet 198.18.135.0/24"),
    ("198.18.135.9/16", 422, "ip_outside_subnet", "with /24"),
    ("198.18.135.1/24", 422, "ip_reserved", "pod 7's DHCP server address"),
    ("198.18.135.2/24", 409, "ip_in_use", "IP 198.18.135.2 already used by web1 in pod 7"),
])
def test_static_addresses_are_checked(tx, ip, status, code, needle):
    assert needle in refused(status, code, ipam.address, tx, pod(tx, 7), iface(ip))


def test_static_addresses_that_pass(tx):
    assert ipam.address(tx, pod(tx, 7), iface("198.18.135.9/24")) == iface("198.18.135.9/24")
    # pods are separate networks: the same address elsewhere, any address without a subnet
    assert ipam.address(tx, pod(tx, 9), iface("198.18.135.2/24")) == iface("198.18.135.2/24")
    assert ipam.address(tx, pod(tx, 9), iface("10.1.2.3/8")) == iface("10.1.2.3/8")


def test_macs_are_checked_or_chosen(tx):
    msg = refused(409, "mac_in_use", ipam.mac, tx, pod(tx, 7), "02:00:00:00:07:05")
    assert msg == "MAC 02:00:00:00:07:05 already used by web1 in pod 7"
    assert "DHCP server MAC" in refused(422, "mac_reserved", ipam.mac, tx, pod(tx, 7),
                                        SERVER_MAC)
    assert ipam.mac(tx, pod(tx, 9), "02:00:00:00:07:05") == "02:00:00:00:07:05"
    assert ipam.mac(tx, pod(tx, 9), SERVER_MAC) == SERVER_MAC     # pod 9 has no DHCP server
    chosen = ipam.mac(tx, pod(tx, 7), None)
    assert chosen.startswith("02:") and chosen not in tx.macs(7)
