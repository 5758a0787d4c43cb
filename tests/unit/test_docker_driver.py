"""The `loris` Docker plugin's handlers (hostagent/docker_driver.py) against the JSON dockerd
20.10 sent in the lab (recorded from the agent's log), over a controller fake built for the
purpose, and the plan of the per-pod Docker networks (hostagent/docker_networks.py)."""

from __future__ import annotations

import json
import socket

import pytest

from hostagent.docker_driver import Book, ControllerError, Driver, endpoint_ref, is_endpoint_ref
from hostagent.docker_networks import MANAGED_LABEL, plan

NID = "d9b6978e0a278f209126d1c7a467dce2dab67fb0cdaa66cd03a3ab12082714a6"
EID = "e741826d5e6b9e52a0a3398d7ae17577b123c2e10b9a1821b14bcd1bf17d5eca"

# ---- what dockerd sent (docker network create / docker run --network red) -------------
REQUEST_POOL = {"AddressSpace": "loris", "Options": None, "Pool": "198.18.135.0/24",
                "SubPool": "", "V6": False}
CREATE_NETWORK = {"IPv4Data": [{"AddressSpace": "loris", "Gateway": "198.18.135.1/24",
                                "Pool": "198.18.135.0/24"}],
                  "IPv6Data": [], "NetworkID": NID,
                  "Options": {"com.docker.network.enable_ipv6": False,
                              "com.docker.network.generic": {"loris.pod": "7"}}}
REQUEST_ADDRESS = {"Address": "", "Options": None, "PoolID": "loris-pod-7"}
CREATE_ENDPOINT = {"EndpointID": EID,
                   "Interface": {"Address": "198.18.135.2/24", "AddressIPv6": "",
                                 "MacAddress": ""},
                   "NetworkID": NID,
                   "Options": {"com.docker.network.endpoint.exposedports": [],
                               "com.docker.network.portmap": []}}
JOIN = {"EndpointID": EID, "NetworkID": NID,
        "Options": {"com.docker.network.endpoint.exposedports": [],
                    "com.docker.network.portmap": []},
        "SandboxKey": "/run/loris-lab/lrs9df079/h1/docker/x/netns/2bd4127a728b"}
LEAVE = {"EndpointID": EID, "NetworkID": NID}


class FakeController:
    """The controller as the driver sees it: pods, reservations, connects."""

    def __init__(self) -> None:
        self.pod_list = [{"id": 0, "name": "global", "subnet": None},
                         {"id": 7, "name": "red", "subnet": "198.18.135.0/24"}]
        self.reserved: dict[str, str] = {}        # ip -> holder
        self.connects: list[dict] = []
        self.disconnects: list[int] = []
        self.ports: dict[int, dict] = {}

    def pods(self) -> list[dict]:
        return self.pod_list

    def ensure_pod(self, name: str, subnet: str) -> dict:
        """POST /v1/hosts/{host}/pods: the pod of that name, made if missing."""
        for p in self.pod_list:
            if p["name"] == name:
                if p["subnet"] != subnet:
                    raise ControllerError(f"Docker network {name} has subnet {subnet}, but "
                                          f"pod {p['id']} ({name}) has subnet {p['subnet']}",
                                          409, "subnet_mismatch")
                return p
        pod = {"id": max(p["id"] for p in self.pod_list) + 1, "name": name, "subnet": subnet}
        self.pod_list.append(pod)
        return pod

    def reserve(self, pod: int, ip: str | None) -> dict:
        if ip is None:
            ip = f"198.18.135.{2 + len(self.reserved)}"
        elif ip in self.reserved:
            raise ControllerError(f"IP {ip} already used by container web1 on host h2 in "
                                  f"pod {pod}; pick another --ip", 409, "ip_in_use")
        self.reserved[ip] = "h1"
        return {"pod": pod, "ip": f"{ip}/24", "host": "h1"}

    def release(self, pod: int, ip: str) -> None:
        self.reserved.pop(ip, None)

    def connect(self, body: dict) -> dict:
        self.connects.append(body)
        port = {"id": len(self.connects), "mac": body.get("mac", "02:f0:e4:72:c9:9e"),
                "ip": body["ip"], "container": body["container"]}
        self.ports[port["id"]] = port
        return port

    def disconnect(self, port_id: int) -> None:
        self.disconnects.append(port_id)
        self.ports.pop(port_id, None)


@pytest.fixture
def ctl() -> FakeController:
    return FakeController()


@pytest.fixture
def driver(ctl: FakeController, tmp_path) -> Driver:
    return Driver(ctl, Book(tmp_path / "plugin.json"), "h1")


def call(driver: Driver, path: str, body: dict | None = None) -> dict:
    status, reply = driver.handle(path, body or {})
    assert status == 200, reply
    return reply


def test_handshake(driver):
    assert call(driver, "/Plugin.Activate") == {"Implements": ["NetworkDriver", "IpamDriver"]}
    assert call(driver, "/NetworkDriver.GetCapabilities")["Scope"] == "local"
    spaces = call(driver, "/IpamDriver.GetDefaultAddressSpaces")
    assert spaces["LocalDefaultAddressSpace"] == "loris"
    assert driver.handle("/NetworkDriver.Nothing", {})[0] == 404


def test_pool_is_the_pod_of_its_subnet_with_the_pods_server_as_gateway(driver):
    reply = call(driver, "/IpamDriver.RequestPool", REQUEST_POOL)
    assert reply == {"PoolID": "loris-pod-7", "Pool": "198.18.135.0/24",
                     "Data": {"com.docker.network.gateway": "198.18.135.1/24"}}
    by_name = call(driver, "/IpamDriver.RequestPool",
                   dict(REQUEST_POOL, Pool="", Options={"loris.pod": "red"}))
    assert by_name["PoolID"] == "loris-pod-7"


def test_a_pool_naming_no_pod_it_can_make_is_refused_saying_how_to_make_one(driver):
    """A pool with a subnet no pod has makes a pod (test_docker_handmade.py); without a
    subnet, or naming a pod id that does not exist, nothing can be made."""
    reply = call(driver, "/IpamDriver.RequestPool",
                 dict(REQUEST_POOL, Pool="", Options={"loris.pod": "blue"}))
    assert "Err" not in reply and "loris pod create blue" in reply["Error"]
    reply = call(driver, "/IpamDriver.RequestPool",
                 dict(REQUEST_POOL, Pool="198.18.140.0/24", Options={"loris.pod": "42"}))
    assert "no Loris pod 42; create it first" in reply["Error"]


def test_addresses_come_from_the_controller_and_a_taken_one_names_its_holder(driver, ctl):
    assert call(driver, "/IpamDriver.RequestAddress", REQUEST_ADDRESS) == {
        "Address": "198.18.135.2/24", "Data": {}}
    fixed = dict(REQUEST_ADDRESS, Address="198.18.135.9")           # docker run --ip
    assert call(driver, "/IpamDriver.RequestAddress", fixed)["Address"] == "198.18.135.9/24"
    refused = call(driver, "/IpamDriver.RequestAddress", fixed)
    assert "web1 on host h2" in refused["Error"]                     # IPAM errors: Error
    call(driver, "/IpamDriver.ReleaseAddress", {"PoolID": "loris-pod-7",
                                                "Address": "198.18.135.9"})
    assert "198.18.135.9" not in ctl.reserved
    call(driver, "/IpamDriver.ReleaseAddress", {"PoolID": "loris-pod-7",   # idempotent
                                                "Address": "198.18.135.9"})


def test_a_network_with_another_ipam_is_refused_naming_the_flag(driver):
    foreign = dict(CREATE_NETWORK, IPv4Data=[{"AddressSpace": "LocalDefault",
                                              "Gateway": "198.18.135.1/24",
                                              "Pool": "198.18.135.0/24"}])
    reply = call(driver, "/NetworkDriver.CreateNetwork", foreign)
    assert "--ipam-driver loris" in reply["Err"]


def test_endpoint_connects_through_the_controller_and_joins_with_its_veth(driver, ctl):
    assert call(driver, "/NetworkDriver.CreateNetwork", CREATE_NETWORK) == {}
    reply = call(driver, "/NetworkDriver.CreateEndpoint", CREATE_ENDPOINT)
    # no MAC asked: the controller chooses it (its port row holds it), Docker is told
    assert ctl.connects == [{"host": "h1", "container": endpoint_ref(EID), "pod": 7,
                             "ip": "198.18.135.2/24"}]
    assert reply == {"Interface": {"MacAddress": ctl.ports[1]["mac"]}}
    assert is_endpoint_ref(ctl.connects[0]["container"])
    # Docker retries: the same endpoint is connected once
    assert call(driver, "/NetworkDriver.CreateEndpoint", CREATE_ENDPOINT) == reply
    assert len(ctl.connects) == 1
    assert call(driver, "/NetworkDriver.Join", JOIN) == {
        "InterfaceName": {"SrcName": "lc1", "DstPrefix": "eth"},
        "DisableGatewayService": True}
    assert call(driver, "/NetworkDriver.EndpointOperInfo", LEAVE) == {"Value": {}}
    assert call(driver, "/NetworkDriver.Leave", LEAVE) == {}
    assert call(driver, "/NetworkDriver.DeleteEndpoint", LEAVE) == {}
    assert ctl.disconnects == [1]
    assert call(driver, "/NetworkDriver.DeleteEndpoint", LEAVE) == {}   # idempotent
    assert ctl.disconnects == [1]


def test_a_given_mac_is_kept_and_not_returned(driver, ctl):
    call(driver, "/NetworkDriver.CreateNetwork", CREATE_NETWORK)
    given = dict(CREATE_ENDPOINT, Interface=dict(CREATE_ENDPOINT["Interface"],
                                                 MacAddress="02:11:22:33:44:55"))
    assert call(driver, "/NetworkDriver.CreateEndpoint", given) == {}
    assert ctl.connects[0]["mac"] == "02:11:22:33:44:55"


def test_what_docker_told_survives_a_restart_of_the_agent(ctl, tmp_path):
    first = Driver(ctl, Book(tmp_path / "plugin.json"), "h1")
    call(first, "/NetworkDriver.CreateNetwork", CREATE_NETWORK)
    made = call(first, "/NetworkDriver.CreateEndpoint", CREATE_ENDPOINT)
    again = Driver(ctl, Book(tmp_path / "plugin.json"), "h1")    # no CreateNetwork replay
    # a replayed CreateEndpoint answers the same MAC, without a second connect
    assert call(again, "/NetworkDriver.CreateEndpoint", CREATE_ENDPOINT) == made
    assert len(ctl.connects) == 1
    assert call(again, "/NetworkDriver.Join", JOIN)["InterfaceName"]["SrcName"] == "lc1"
    call(again, "/NetworkDriver.DeleteEndpoint", LEAVE)
    assert ctl.disconnects == [1]


def test_an_endpoint_the_book_lost_keeps_the_mac_of_its_port(ctl):
    """The plugin's state file lost (a replay after a crash): the controller refuses the
    second connect of the endpoint, and the reply is the MAC its port row holds."""
    first = Driver(ctl, Book(None), "h1")
    call(first, "/NetworkDriver.CreateNetwork", CREATE_NETWORK)
    made = call(first, "/NetworkDriver.CreateEndpoint", CREATE_ENDPOINT)

    def connected(body: dict) -> dict:
        raise ControllerError(f"container {body['container']} on h1 is already connected",
                              409, "container_connected")

    ctl.connect = connected
    by_ref = {p["container"]: p for p in ctl.ports.values()}
    lost = Driver(ctl, Book(None), "h1", port_of_ref=by_ref.get)
    lost.book.networks[NID] = 7
    assert call(lost, "/NetworkDriver.CreateEndpoint", CREATE_ENDPOINT) == made


def test_an_endpoint_of_an_unknown_network_is_refused(driver):
    reply = call(driver, "/NetworkDriver.CreateEndpoint", CREATE_ENDPOINT)
    assert "unknown to Loris" in reply["Err"]


def test_networks_follow_pods():
    pods = [{"id": 0, "name": "global", "subnet": None},
            {"id": 7, "name": "red", "subnet": "198.18.135.0/24"},
            {"id": 8, "name": None, "subnet": "198.18.136.0/24"},
            {"id": 9, "name": "blue", "subnet": None}]
    create, remove = plan(pods, [])
    assert [p["id"] for p in create] == [7, 8]
    nets = [{"Name": "red", "Driver": "loris", "Options": {"loris.pod": "7"},
             "Labels": {MANAGED_LABEL: "1"}},
            {"Name": "pod8", "Driver": "loris", "Options": {"loris.pod": "8"},
             "Labels": {MANAGED_LABEL: "1"}},
            {"Name": "old", "Driver": "loris", "Options": {"loris.pod": "5"},
             "Labels": {MANAGED_LABEL: "1"}},
            {"Name": "byhand", "Driver": "loris", "Options": {"loris.pod": "6"}, "Labels": {}}]
    create, remove = plan(pods, nets)
    assert create == [] and [n["Name"] for n in remove] == ["old"]


def _post(path: str, url: str, body: bytes) -> tuple[int, dict]:
    """One call as dockerd makes it: POST, no Content-Type, over a unix socket."""
    import http.client
    import json

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(path)

    conn = UnixConnection("plugin.moby.localhost")
    conn.request("POST", url, body, {"Accept": "application/vnd.docker.plugins.v1.2+json"})
    resp = conn.getresponse()
    out = resp.status, json.loads(resp.read())
    conn.close()
    return out


@pytest.mark.parametrize("inherited", [False, True])
def test_the_plugin_is_served_on_a_unix_socket(driver, tmp_path, inherited):
    from hostagent.docker_plugin import PluginServer

    path = str(tmp_path / "loris.sock")
    if inherited:       # as systemd passes it: bound and listening already
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(path)
        sock.listen(8)
        server = PluginServer(driver, None, sock)
    else:
        server = PluginServer(driver, path)
    server.start()
    try:
        assert _post(path, "/Plugin.Activate", b"") == (
            200, {"Implements": ["NetworkDriver", "IpamDriver"]})
        status, reply = _post(path, "/IpamDriver.RequestPool",
                              json.dumps(REQUEST_POOL).encode())
        assert status == 200 and reply["PoolID"] == "loris-pod-7"
    finally:
        server.shutdown()
        server.server_close()


def test_endpoint_ports_are_named_from_dockers_container_list():
    from hostagent.docker_networks import endpoint_names

    containers = [{"Names": ["/r1"], "NetworkSettings": {"Networks": {
                      "red": {"EndpointID": EID}, "blue": {"EndpointID": "f" * 64}}}},
                  {"Names": ["/other"], "NetworkSettings": {"Networks": {
                      "bridge": {"EndpointID": "0" * 64}}}}]
    assert endpoint_names(containers, {EID: 5, "f" * 64: 6, "e" * 64: 7}) == {5: "r1",
                                                                              6: "r1"}
