"""Docker's IPAM, served by the controller for the hosts' Docker plugins (docs/docker.md).

Docker asks its IPAM driver for a container's address (RequestAddress) before it creates
the endpoint, and each host's dockerd asks on its own; so the plugin on every host asks the
controller, which keeps addresses unique per pod across hosts:

    GET    /v1/hosts/{host_id}/pods                  the pods (id, name, subnet) a host's
                                                     plugin maps Docker networks to
    POST   /v1/hosts/{host_id}/pods                  {"name", "subnet"}: the pod of a Docker
                                                     network made by hand (`docker network
                                                     create ... --subnet S red`): pod red,
                                                     made if missing (201), the same if it
                                                     has subnet S (200), else 409 naming both
    POST   /v1/hosts/{host_id}/ports                 connect a container of that host (the
                                                     body of POST /v1/ports, same host)
    POST   /v1/hosts/{host_id}/addresses             {"pod", "ip"?}: reserve an address of
                                                     the pod for that host (lowest free, or
                                                     the one asked: `docker run --ip`)
    DELETE /v1/hosts/{host_id}/addresses/{address}?pod=N   release it (idempotent)
    PUT    /v1/hosts/{host_id}/ports/{port_id}/docker {"container"}: the Docker container
                                                     of an endpoint's port (what `loris
                                                     ports` shows), learnt by the agent

The reservation holds the address until the host's plugin connects the endpoint
(POST /v1/hosts/{host_id}/ports with that address: connect.py takes the reservation over,
`claim`, and gives the port the MAC the controller chooses for it unless Docker sent one)
or releases it. A reservation its host neither used nor released within RESERVATION_TTL
seconds is a leak (a plugin that died between the two calls) and is dropped at the host's
next reservation. An agent may call these routes for its own host only (auth.AGENT_ROUTES).
"""

from __future__ import annotations

import ipaddress
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import webob

from controller import ipam, validate
from controller import pods as pod_ops
from controller.context import Context
from controller.errors import ApiError, conflict, invalid, not_found
from controller.store import Tx

if TYPE_CHECKING:
    from controller.api import Api

RESERVATION_TTL = 300.0


def claim(tx: Tx, pod_id: int, ip: ipaddress.IPv4Interface | None, host_id: str,
          mac: str | None) -> str | None:
    """A connect of `host_id` asking for an address its Docker plugin reserved takes the
    reservation over (the port holds the address from now on). Returns the MAC the port
    gets: `mac` if the user gave one (`--mac-address`), else the controller's choice for a
    Docker endpoint: the MAC this address had last time if no port holds it now, else a new
    random one (remembered for next time). None for any other connect (ipam.mac chooses)."""
    if ip is None:
        return mac
    held = tx.reservation(pod_id, int(ip.ip))
    if held is None or held[0] != host_id:
        return mac
    tx.unreserve_addr(pod_id, int(ip.ip))
    if mac is not None:
        return mac
    taken = tx.macs(pod_id)
    chosen = tx.docker_mac(pod_id, int(ip.ip))
    if chosen is None or chosen in taken:
        chosen = ipam.random_mac(taken)
        tx.remember_docker_mac(pod_id, int(ip.ip), chosen)
    return chosen


class DockerIpam:
    """The operations behind the routes above."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def pods(self) -> list[dict]:
        with self.ctx.store.read() as tx:
            return [{"id": p.id, "name": p.name, "subnet": p.subnet} for p in tx.pods()]

    def ensure_pod(self, pods: pod_ops.Pods, req: validate.PodCreate) -> tuple[bool, dict]:
        """(made, pod) for a Docker network named `req.name` with subnet `req.subnet`: the pod
        of that name if its subnet is the same, else a new one. Two hosts asking at once end
        with one pod: the second's create finds the name taken and maps to the first's."""
        for attempt in (1, 2):
            with self.ctx.store.read() as tx:
                pod = pod_ops.find(tx, req.name) if req.name is not None else None
            if pod is not None:
                if pod.subnet != str(req.subnet):
                    fix = (f"create it with --subnet {pod.subnet}" if pod.subnet else
                           "give it another name (that pod has no subnet)")
                    raise conflict(
                        f"Docker network {req.name} has subnet {req.subnet}, but "
                        f"{pod_ops.label(pod)} has subnet {pod.subnet or 'none'}: remove the "
                        f"network and {fix}", "subnet_mismatch")
                return False, {"id": pod.id, "name": pod.name, "subnet": pod.subnet}
            try:
                made = pods.create(req)
            except ApiError as e:
                if e.code != "pod_exists" or attempt == 2:
                    raise
                continue                  # made meanwhile (another host): map to it
            return True, {"id": made["id"], "name": made["name"], "subnet": made["subnet"]}
        raise AssertionError("unreachable")

    def reserve(self, host_id: str, pod_id: int,
                requested: ipaddress.IPv4Address | None) -> dict:
        # store.write: run again on the fresh state if another controller wrote meanwhile
        return self.ctx.store.write(partial(self._reserve, host_id, pod_id, requested))

    def _reserve(self, host_id: str, pod_id: int, requested: ipaddress.IPv4Address | None,
                 tx: Tx) -> dict:
        if tx.host(host_id) is None:
            raise invalid(f"host {host_id} is not registered; start loris-hostagent on "
                          "it first", "unknown_host")
        pod = tx.pod(pod_id)
        if pod is None:
            raise not_found(f"pod {pod_id} does not exist", "pod_not_found")
        net = pod.network
        if net is None:
            raise invalid(f"pod {pod_id} has no subnet, so Docker cannot take addresses "
                          "from it; create the pod with a subnet", "no_subnet")
        self._drop_stale(tx, host_id)
        if requested is None:
            iface = ipam.address(tx, pod, None)
        else:
            iface = ipaddress.IPv4Interface(f"{requested}/{net.prefixlen}")
            held = tx.reservation(pod_id, int(requested))
            if held is not None and held[0] == host_id:
                return {"pod": pod_id, "ip": held[1], "host": host_id}   # asked again
            if requested in (net.network_address, net.broadcast_address):
                raise invalid(f"ip {requested} is the network or broadcast address of "
                              f"pod {pod_id}'s subnet {net}", "ip_reserved")
            clash = tx.port_by_addr(pod_id, requested)
            if clash is not None:
                holder = tx.docker_names().get(clash.id, clash.container)
                raise conflict(f"IP {requested} already used by container {holder} on "
                               f"host {clash.host_id} in pod {pod_id}; pick another --ip",
                               "ip_in_use")
            iface = ipam.address(tx, pod, iface)
        tx.reserve_addr(pod_id, int(iface.ip), str(iface), host_id)
        return {"pod": pod_id, "ip": str(iface), "host": host_id}

    def release(self, host_id: str, pod_id: int, address: ipaddress.IPv4Address) -> None:
        def release(tx: Tx) -> None:
            held = tx.reservation(pod_id, int(address))
            if held is not None and held[0] == host_id:
                tx.unreserve_addr(pod_id, int(address))

        self.ctx.store.write(release)

    def name_port(self, host_id: str, port_id: int, container: str) -> None:
        def name(tx: Tx) -> None:
            port = tx.port(port_id)
            if port is None or port.host_id != host_id:
                raise not_found(f"port {port_id} does not exist on host {host_id}",
                                "port_not_found")
            tx.set_docker_name(port_id, container)

        self.ctx.store.write(name)

    @staticmethod
    def _drop_stale(tx: Tx, host_id: str) -> None:
        tx.drop_reservations_before(host_id, time.time() - RESERVATION_TTL)


class DockerApi:
    """The handlers; `register()` adds their routes to the API."""

    def __init__(self, api: Api) -> None:
        self.api = api

    @property
    def ops(self) -> DockerIpam:
        docker = self.api.ops.docker
        if docker is None:
            raise not_found("this controller was built without Docker IPAM", "not_found")
        return docker

    def register(self) -> None:
        r = self.api._route
        r("/v1/hosts/{host_id}/pods", GET=self.host_pods, POST=self.ensure_pod)
        r("/v1/hosts/{host_id}/ports", POST=self.connect)
        r("/v1/hosts/{host_id}/addresses", POST=self.reserve)
        r("/v1/hosts/{host_id}/addresses/{address}", DELETE=self.release)
        r("/v1/hosts/{host_id}/ports/{port_id}/docker", PUT=self.name_port)

    def host_pods(self, req: webob.Request, args: dict) -> tuple[int, Any]:
        validate.query(req.GET, ())
        validate.host_id_param(args["host_id"])
        return 200, self.ops.pods()

    def ensure_pod(self, req: webob.Request, args: dict) -> tuple[int, Any]:
        validate.query(req.GET, ())
        validate.host_id_param(args["host_id"])
        body = self.api._body(req)
        validate.check_schema(body, "DockerPod")
        assert isinstance(body, dict)
        made, pod = self.ops.ensure_pod(self.api.ops.pods, validate.pod_create(body))
        return (201 if made else 200), pod

    def connect(self, req: webob.Request, args: dict) -> tuple[int, Any]:
        validate.query(req.GET, ())
        host_id = validate.host_id_param(args["host_id"])
        port = validate.port_create(self._body_of(req))
        if port.host != host_id:
            raise invalid(f"the body's host {port.host} is not the route's {host_id}",
                          "host_mismatch")
        return 201, self.api.ops.ports.connect(port)

    def _body_of(self, req: webob.Request) -> object:
        return self.api._body(req)

    def reserve(self, req: webob.Request, args: dict) -> tuple[int, Any]:
        validate.query(req.GET, ())
        host_id = validate.host_id_param(args["host_id"])
        body = self.api._body(req)
        validate.check_schema(body, "AddressRequest")
        assert isinstance(body, dict)
        ip = validate.ipv4_address(body["ip"], "'ip'") if body.get("ip") is not None else None
        return 201, self.ops.reserve(host_id, body["pod"], ip)

    def name_port(self, req: webob.Request, args: dict) -> tuple[int, Any]:
        validate.query(req.GET, ())
        host_id = validate.host_id_param(args["host_id"])
        port_id = validate.port_id_param(args["port_id"])
        body = self.api._body(req)
        validate.check_schema(body, "DockerName")
        assert isinstance(body, dict)
        self.ops.name_port(host_id, port_id, body["container"])
        return 204, None

    def release(self, req: webob.Request, args: dict) -> tuple[int, Any]:
        q = validate.query(req.GET, ("pod",))
        self.api._no_body(req)
        host_id = validate.host_id_param(args["host_id"])
        if "pod" not in q:
            raise invalid("give the address's pod: ?pod=N", "missing_pod")
        pod_id = validate.pod_id_param(q["pod"])
        address = validate.ipv4_address(args["address"], "address")
        self.ops.release(host_id, pod_id, address)
        return 204, None


def extend_openapi(SCHEMAS: dict, PATHS: dict) -> None:  # noqa: N803 (openapi.py's names)
    from controller.openapi import _HOST, _errors, _json, _obj, _path_param, _query, _ref, _resp
    from controller.openapi import _text as text
    from flows import contract

    SCHEMAS.update({
        "AddressRequest": _obj({
            "pod": _ref("PodId"),
            "ip": text(contract.IPV4, "ipv4_address", maxLength=15,
                       description="the address wanted (docker run --ip); omitted: the "
                                   "lowest free one"),
        }, ["pod"], examples=[{"pod": 7}, {"pod": 7, "ip": "198.18.135.9"}]),
        "AddressReservation": _obj({"pod": _ref("PodId"), "ip": {"type": "string"},
                                    "host": _ref("HostId")}),
        "DockerName": _obj({"container": text(contract.CONTAINER_REF)}, ["container"]),
        "DockerPod": _obj({"name": _ref("PodName"),
                           "subnet": text(contract.IPV4_CIDR, "subnet", maxLength=18)},
                          ["name", "subnet"],
                          examples=[{"name": "red", "subnet": "198.18.135.0/24"}]),
        "PodBrief": _obj({"id": _ref("PodId"), "name": {"type": ["string", "null"]},
                          "subnet": {"type": ["string", "null"]}}),
    })
    PATHS.update({
        "/v1/hosts/{host_id}/pods": {
            "parameters": [_HOST],
            "get": {"summary": "the pods, for a host's Docker plugin (its agent may call it)",
                    "responses": {"200": _resp("pods", {"type": "array",
                                                        "items": _ref("PodBrief")}),
                                  **_errors(400, 422)}},
            "post": {"summary": "the pod of a Docker network made by hand on the host: the "
                                "pod of that name and subnet, made if missing (its agent may "
                                "call it)",
                     "requestBody": {"required": True, **_json(_ref("DockerPod"))},
                     "responses": {"200": _resp("the pod existed", _ref("PodBrief")),
                                   "201": _resp("made", _ref("PodBrief")),
                                   **_errors(400, 409, 413, 422)}}},
        "/v1/hosts/{host_id}/ports": {
            "parameters": [_HOST],
            "post": {"summary": "connect a container of this host (as POST /v1/ports; the "
                                "host's agent may call it: its Docker plugin)",
                     "requestBody": {"required": True, **_json(_ref("PortCreate"))},
                     "responses": {"201": _resp("connected", _ref("Port")),
                                   **_errors(400, 404, 409, 413, 422, 503)}}},
        "/v1/hosts/{host_id}/ports/{port_id}/docker": {
            "parameters": [_HOST, _path_param("port_id", _ref("PortId"), "port id")],
            "put": {"summary": "name the Docker container of an endpoint's port (its host's "
                               "agent, once Docker said which container joined)",
                    "requestBody": {"required": True, **_json(_ref("DockerName"))},
                    "responses": {"204": _resp("named"), **_errors(400, 404, 413, 422)}}},
        "/v1/hosts/{host_id}/addresses": {
            "parameters": [_HOST],
            "post": {"summary": "reserve an address of a pod for a Docker container starting "
                                "on the host (Docker IPAM)",
                     "requestBody": {"required": True, **_json(_ref("AddressRequest"))},
                     "responses": {"201": _resp("reserved", _ref("AddressReservation")),
                                   **_errors(400, 404, 409, 413, 422)}}},
        "/v1/hosts/{host_id}/addresses/{address}": {
            "parameters": [_HOST, _path_param("address", text(contract.IPV4, maxLength=15),
                                              "the reserved IPv4 address")],
            "delete": {"summary": "release an address the host reserved (idempotent)",
                       "parameters": [dict(_query("pod", _ref("PodId"), "the address's pod"),
                                           required=True)],
                       "responses": {"204": _resp("released"), **_errors(400, 422)}}},
    })
