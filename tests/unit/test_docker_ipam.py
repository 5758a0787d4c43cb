"""Docker IPAM at the controller (controller/docker_ipam.py), in-process through REST: the
addresses the hosts' plugins reserve are unique per pod across hosts, `--ip` is honoured or
refused naming its holder, and a connect of the same host takes its reservation over."""

from __future__ import annotations

import ipaddress
import re

import pytest
from inproc import H1, H2, POD7, ApiClient, add_port, build_parts

from controller import docker_ipam


@pytest.fixture
def api(tmp_path):
    parts = build_parts(tmp_path)
    client = ApiClient(parts)
    client.ok("POST", "/v1/hosts", H1)
    client.ok("POST", "/v1/hosts", H2)
    client.ok("POST", "/v1/pods", POD7)
    yield client
    parts.store.close()


def reserve(api, host, body, status=201):
    return api.ok("POST", f"/v1/hosts/{host}/addresses", body, status=status)


def test_the_pods_a_plugin_maps_networks_to(api):
    pods = api.ok("GET", "/v1/hosts/h1/pods")
    assert {"id": 7, "name": "web", "subnet": "198.18.135.0/24"} in pods


def test_addresses_are_unique_across_hosts(api):
    assert reserve(api, "h1", {"pod": 7})["ip"] == "198.18.135.2/24"
    assert reserve(api, "h2", {"pod": 7})["ip"] == "198.18.135.3/24"
    add_port(api.parts, host="h2", container="web1", ip="198.18.135.4/24")
    assert reserve(api, "h1", {"pod": 7})["ip"] == "198.18.135.5/24"
    # DHCP and other connects do not take a reserved address either
    api.error("POST", "/v1/ports", {"host": "h2", "container": "x", "pod": 7,
                                    "ip": "198.18.135.2/24"}, status=409, code="ip_in_use")


def test_a_requested_address_is_honoured_or_refused_naming_its_holder(api):
    assert reserve(api, "h1", {"pod": 7, "ip": "198.18.135.9"})["ip"] == "198.18.135.9/24"
    assert reserve(api, "h1", {"pod": 7, "ip": "198.18.135.9"})["ip"] == "198.18.135.9/24"
    message = api.error("POST", "/v1/hosts/h2/addresses", {"pod": 7, "ip": "198.18.135.9"},
                        status=409, code="ip_in_use")
    assert "198.18.135.9" in message and "h1" in message
    add_port(api.parts, host="h2", container="web1", ip="198.18.135.20/24")
    message = api.error("POST", "/v1/hosts/h1/addresses", {"pod": 7, "ip": "198.18.135.20"},
                        status=409, code="ip_in_use")
    assert "web1 on host h2" in message
    api.error("POST", "/v1/hosts/h1/addresses", {"pod": 7, "ip": "198.18.136.1"},
              status=422)


def test_release_is_idempotent_and_only_the_holders(api):
    reserve(api, "h1", {"pod": 7, "ip": "198.18.135.9"})
    api.ok("DELETE", "/v1/hosts/h2/addresses/198.18.135.9?pod=7", status=204)   # not h2's
    api.error("POST", "/v1/hosts/h2/addresses", {"pod": 7, "ip": "198.18.135.9"},
              status=409, code="ip_in_use")
    api.ok("DELETE", "/v1/hosts/h1/addresses/198.18.135.9?pod=7", status=204)
    api.ok("DELETE", "/v1/hosts/h1/addresses/198.18.135.9?pod=7", status=204)
    assert reserve(api, "h2", {"pod": 7, "ip": "198.18.135.9"})["host"] == "h2"


def test_a_connect_of_the_holder_takes_its_reservation_over(api):
    reserve(api, "h1", {"pod": 7, "ip": "198.18.135.9"})
    body = {"host": "h1", "container": "docker-ep-" + "ab" * 32, "pod": 7,
            "ip": "198.18.135.9/24"}
    # no agent in-process: the connect fails at the wiring step, after taking the address
    # over; the undo removes the port, and the address is free again for anyone
    api.error("POST", "/v1/hosts/h1/ports", body, status=503)
    assert reserve(api, "h2", {"pod": 7, "ip": "198.18.135.9"})["host"] == "h2"
    api.error("POST", "/v1/hosts/h1/ports", dict(body, host="h2"), status=422,
              code="host_mismatch")


def test_an_endpoints_port_is_shown_with_its_containers_name(api):
    port = add_port(api.parts, host="h1", container="docker-ep-" + "ab" * 32)
    api.ok("PUT", f"/v1/hosts/h1/ports/{port.id}/docker", {"container": "web1"}, status=204)
    shown = api.ok("GET", f"/v1/ports/{port.id}")
    assert shown["docker"] == {"container": "web1", "endpoint": "docker-ep-" + "ab" * 32}
    assert api.ok("GET", "/v1/ports?host=h1")[0]["docker"]["container"] == "web1"
    api.error("PUT", f"/v1/hosts/h2/ports/{port.id}/docker", {"container": "x"}, status=404)


def test_a_docker_endpoint_gets_the_mac_its_address_had_unless_one_is_given(api):
    """The MAC is the controller's choice (claim, in the connect's transaction): a new random
    one the first time, the same one the next time that address comes back (a restarted
    container keeps its MAC, so its peers' ARP caches stay right), a new one if a port took
    it meanwhile; `--mac-address` wins; any other connect is left to ipam.mac."""
    ip = ipaddress.IPv4Interface("198.18.135.9/24")

    def claim(host="h1", mac=None):
        with api.parts.store.tx() as tx:
            return docker_ipam.claim(tx, 7, ip, host, mac)

    assert claim() is None and claim(mac="02:11:22:33:44:55") == "02:11:22:33:44:55"
    reserve(api, "h1", {"pod": 7, "ip": "198.18.135.9"})
    assert claim("h2") is None                          # not h2's reservation
    first = claim()
    assert re.fullmatch(r"02(:[0-9a-f]{2}){5}", first), first
    assert claim() is None                              # taken over: no reservation left
    reserve(api, "h2", {"pod": 7, "ip": "198.18.135.9"})
    assert claim("h2") == first                         # the address's MAC, on any host
    add_port(api.parts, container="web1", mac=first, ip="198.18.135.5/24")
    reserve(api, "h1", {"pod": 7, "ip": "198.18.135.9"})
    second = claim()
    assert second != first and re.fullmatch(r"02(:[0-9a-f]{2}){5}", second)
    reserve(api, "h1", {"pod": 7, "ip": "198.18.135.9"})
    assert claim(mac="02:11:22:33:44:55") == "02:11:22:33:44:55"
    reserve(api, "h1", {"pod": 7, "ip": "198.18.135.9"})
    assert claim() == second                            # a given MAC is not remembered


def test_a_network_made_by_hand_makes_its_pod_or_maps_to_it(api):
    """`docker network create -d loris --ipam-driver loris --subnet S red`: the host's agent
    asks for pod red with subnet S; made once, the same for every host that asks again, and
    refused naming both subnets when pod red has another."""
    red = {"name": "red", "subnet": "198.18.140.0/24"}
    made = api.ok("POST", "/v1/hosts/h1/pods", red, status=201)
    assert made["name"] == "red" and made["subnet"] == "198.18.140.0/24"
    assert api.ok("POST", "/v1/hosts/h2/pods", red, status=200) == made     # one pod
    assert api.ok("GET", f"/v1/pods/{made['id']}")["name"] == "red"
    message = api.error("POST", "/v1/hosts/h2/pods", dict(red, subnet="198.18.141.0/24"),
                        status=409, code="subnet_mismatch")
    assert "198.18.141.0/24" in message and "198.18.140.0/24" in message, message
    message = api.error("POST", "/v1/hosts/h1/pods", {"name": "web", "subnet": "10.9.0.0/24"},
                        status=409, code="subnet_mismatch")      # POD7 is web, 198.18.135/24
    assert "198.18.135.0/24" in message and "10.9.0.0/24" in message
    api.error("POST", "/v1/hosts/h1/pods", {"name": "red"}, status=400)
