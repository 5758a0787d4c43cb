"""The Docker network and IPAM driver `loris` (legacy plugin API): one method per call Docker
makes, JSON in, JSON out (docs/docker.md; served by hostagent/docker_plugin.py).

- IPAM is the controller's (controller/docker_ipam.py): RequestPool maps the pool to a pod
  (by `--ipam-opt loris.pod=NAME|ID`, made with the pool's subnet if no pod has that name,
  else by the pod whose subnet it is, else pending: the pod is made from the network's name
  once Docker lists it, hostagent/docker_handmade.py), RequestAddress
  reserves an address of the pod for this host (unique across hosts; `--ip` honoured, a
  taken one refused naming its holder), ReleaseAddress gives it back.
- CreateNetwork refuses a network whose IPAM is not `loris`, and records which pod the
  network is (Docker sends neither the network's name nor the same NetworkID on two hosts).
- CreateEndpoint connects the endpoint through the controller's connect path, as
  `loris connect` does, with the container reference `docker-ep-<EndpointID>`: the agent's
  reconciler makes the veth `lp<port>`/`lc<port>` in this host's namespace, with the
  encapsulation MTU and TX offload off, adds `lp<port>` to br-int and reports it; the
  controller answers once the flows are installed on every host of the pod, so
  `docker run` returns only when the container can reach its pod. The MAC is the one
  Docker sent (`--mac-address`), else the controller's choice (the port's row holds it:
  the MAC that address had last time in the pod, or a new one), which the reply hands back
  to Docker; the book keeps it for the endpoint's life.
- Join hands `lc<port>` to Docker (which moves it into the container as eth0, eth1...)
  with DisableGatewayService; Leave does nothing; DeleteEndpoint disconnects the port.

Every handler is idempotent (Docker retries and replays), bounded by the REST client's
timeouts, and never calls the Docker API. What the driver learnt (network -> pod, endpoint
-> port) is kept in a JSON file, because Docker replays neither CreateNetwork nor
CreateEndpoint to a restarted plugin.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from flows import contract
from hostagent.docker_handmade import PendingNetworks, pool_subnet, subnet_pool

log = logging.getLogger(__name__)

DRIVER = "loris"
ADDRESS_SPACE = "loris"
POD_OPTION = "loris.pod"
GENERIC = "com.docker.network.generic"
GATEWAY_DATA = "com.docker.network.gateway"
REQUEST_TYPE = "RequestAddressType"
CONNECT_TIMEOUT_S = 90.0          # the controller's wire timeout (30 s) plus the flows
ENDPOINT_PREFIX = "docker-ep-"
_ENDPOINT_REF = re.compile(r"^docker-ep-[0-9a-f]{64}$")
POOL_PREFIX = "loris-pod-"

Reply = dict[str, Any]


def endpoint_ref(endpoint_id: str) -> str:
    """The container reference of a Docker endpoint's port (`loris ports` shows it)."""
    return ENDPOINT_PREFIX + endpoint_id


def is_endpoint_ref(ref: str) -> bool:
    return bool(_ENDPOINT_REF.match(ref))


class ControllerError(Exception):
    """The controller refused (its message says why) or could not be reached."""

    def __init__(self, message: str, status: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class Controller(Protocol):
    """What the driver asks the controller (hostagent/client.py for this host)."""

    def pods(self) -> list[dict]: ...
    def ensure_pod(self, name: str, subnet: str) -> dict: ...
    def reserve(self, pod: int, ip: str | None) -> dict: ...
    def release(self, pod: int, ip: str) -> None: ...
    def connect(self, body: dict) -> dict: ...
    def disconnect(self, port_id: int) -> None: ...


class Book:
    """network id -> pod id, endpoint id -> {port, pod, mac, ip}, and the networks made by
    hand whose pod is being made (docker_handmade.py: pending network id -> subnet, refused
    network id -> why, subnet -> pod); saved to `path` (JSON, replaced atomically) on every
    change. path None: memory only. `changed` is notified when a pending network settles."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.networks: dict[str, int] = {}
        self.endpoints: dict[str, dict] = {}
        self.pending: dict[str, str] = {}
        self.refused: dict[str, str] = {}
        self.subnet_pods: dict[str, int] = {}
        if self.path and self.path.exists():
            try:
                data = json.loads(self.path.read_text())
                self.networks = {k: int(v) for k, v in data.get("networks", {}).items()}
                self.endpoints = dict(data.get("endpoints", {}))
                self.pending = dict(data.get("pending", {}))
                self.refused = dict(data.get("refused", {}))
                self.subnet_pods = {k: int(v) for k, v in data.get("subnet_pods", {}).items()}
            except (OSError, ValueError) as e:
                log.warning("plugin state %s unreadable (%s): starting empty", self.path, e)

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"networks": self.networks, "endpoints": self.endpoints,
                                   "pending": self.pending, "refused": self.refused,
                                   "subnet_pods": self.subnet_pods}))
        os.replace(tmp, self.path)


class Driver:
    """The handlers. `handle(path, body)` dispatches `/<Iface>.<Method>`."""

    def __init__(self, controller: Controller, book: Book, host_id: str,
                 port_of_ref: Callable[[str], dict | None] = lambda _ref: None) -> None:
        self.controller = controller
        self.book = book
        self.host_id = host_id
        self.pending = PendingNetworks(book, controller)
        # the port ({id, mac, ip}) of a container reference in the agent's desired state
        # (an endpoint the book lost)
        self.port_of_ref = port_of_ref
        self.routes: dict[str, Callable[[dict], Reply]] = {
            "/Plugin.Activate": lambda _b: {"Implements": ["NetworkDriver", "IpamDriver"]},
            "/NetworkDriver.GetCapabilities": lambda _b: {"Scope": "local",
                                                          "ConnectivityScope": "local"},
            "/NetworkDriver.CreateNetwork": self.create_network,
            "/NetworkDriver.DeleteNetwork": self.delete_network,
            "/NetworkDriver.CreateEndpoint": self.create_endpoint,
            "/NetworkDriver.EndpointOperInfo": lambda _b: {"Value": {}},
            "/NetworkDriver.Join": self.join,
            "/NetworkDriver.Leave": lambda _b: {},
            "/NetworkDriver.DeleteEndpoint": self.delete_endpoint,
            "/NetworkDriver.ProgramExternalConnectivity": lambda _b: {},
            "/NetworkDriver.RevokeExternalConnectivity": lambda _b: {},
            "/NetworkDriver.DiscoverNew": lambda _b: {},
            "/NetworkDriver.DiscoverDelete": lambda _b: {},
            "/NetworkDriver.AllocateNetwork": self.swarm_refused,
            "/NetworkDriver.FreeNetwork": lambda _b: {},
            "/IpamDriver.GetCapabilities": lambda _b: {"RequiresMACAddress": False,
                                                       "RequiresRequestReplay": False},
            "/IpamDriver.GetDefaultAddressSpaces": lambda _b: {
                "LocalDefaultAddressSpace": ADDRESS_SPACE,
                "GlobalDefaultAddressSpace": ADDRESS_SPACE},
            "/IpamDriver.RequestPool": self.request_pool,
            "/IpamDriver.ReleasePool": lambda _b: {},
            "/IpamDriver.RequestAddress": self.request_address,
            "/IpamDriver.ReleaseAddress": self.release_address,
        }

    def handle(self, path: str, body: dict) -> tuple[int, Reply]:
        """(HTTP status, reply) of one call. Errors are answered as Docker reads them:
        `Err` for the network driver, `Error` for IPAM, both with status 200."""
        handler = self.routes.get(path)
        if handler is None:
            return 404, {"Err": f"{path}: not implemented by the loris plugin"}
        try:
            return 200, handler(body if isinstance(body, dict) else {})
        except (ControllerError, ValueError, KeyError) as e:
            message = str(e) if not isinstance(e, KeyError) else f"missing field {e}"
            log.warning("%s refused: %s", path, message)
            return 200, ({"Error": message} if path.startswith("/IpamDriver.")
                         else {"Err": message})

    # ---------------------------------------------------------------- IPAM
    def _pod_of(self, wanted: str | None, subnet: str | None) -> dict | None:
        """The pod named or numbered `wanted` (a name no pod has: made with `subnet`), else
        the one whose subnet is `subnet`, else None (the network's name will say)."""
        pods = self.controller.pods()
        if wanted:
            for p in pods:
                if str(p["id"]) == wanted or p.get("name") == wanted:
                    if subnet and p.get("subnet") and p["subnet"] != subnet:
                        raise ValueError(f"pod {wanted} has subnet {p['subnet']}, not "
                                         f"{subnet}; give --subnet {p['subnet']}")
                    return p
            if subnet and not wanted.isdigit():
                return self.controller.ensure_pod(wanted, subnet)
            raise ValueError(f"no Loris pod {wanted}; create it first: loris pod create "
                             f"{wanted}{' --subnet ' + subnet if subnet else ''}")
        if not subnet:
            raise ValueError("a Loris network needs --subnet (the pod's subnet) or "
                             f"-o {POD_OPTION}=POD with --ipam-opt {POD_OPTION}=POD")
        for p in pods:
            if p.get("subnet") == subnet:
                return p
        return None

    def request_pool(self, body: dict) -> Reply:
        if body.get("V6"):
            raise ValueError("Loris pods are IPv4 only: leave out --ipv6")
        pool = body.get("Pool") or None
        if pool:
            pool = str(ipaddress.IPv4Network(pool))
        pod = self._pod_of((body.get("Options") or {}).get(POD_OPTION), pool)
        if pod is None:       # made by hand for a new pod: CreateNetwork makes it pending
            net = ipaddress.IPv4Network(pool)
            return {"PoolID": subnet_pool(net), "Pool": str(net),
                    "Data": {GATEWAY_DATA: f"{net.network_address + 1}/{net.prefixlen}"}}
        if not pod.get("subnet"):
            raise ValueError(f"pod {pod['id']} has no subnet; Docker needs one (create the "
                             "pod with --subnet)")
        net = ipaddress.IPv4Network(pod["subnet"])
        data = {}
        server = contract.dhcp_server(int(pod["id"]), net)
        if server is not None:   # the pod's own first address, so Docker reserves nothing
            data[GATEWAY_DATA] = f"{server[0]}/{net.prefixlen}"
        return {"PoolID": f"{POOL_PREFIX}{pod['id']}", "Pool": str(net), "Data": data}

    def _pool_pod(self, pool_id: str, wait: bool = True) -> int | None:
        """The pod of a pool: `loris-pod-<id>`, or a pending network's pod (waited for, or
        None if not `wait` and it is not known)."""
        subnet = pool_subnet(pool_id)
        if subnet is not None:
            if not wait:
                with self.book.lock:
                    return self.book.subnet_pods.get(subnet)
            return self.pending.pod_of_subnet(subnet)
        if not pool_id.startswith(POOL_PREFIX) or not pool_id[len(POOL_PREFIX):].isdigit():
            raise ValueError(f"pool {pool_id!r} is not a Loris pool")
        return int(pool_id[len(POOL_PREFIX):])

    def request_address(self, body: dict) -> Reply:
        options = body.get("Options") or {}
        address = body.get("Address") or None
        subnet = pool_subnet(body.get("PoolID", ""))
        if subnet is not None and options.get(REQUEST_TYPE) == GATEWAY_DATA:
            net = ipaddress.IPv4Network(subnet)
            return {"Address": f"{net.network_address + 1}/{net.prefixlen}", "Data": {}}
        pod = self._pool_pod(body.get("PoolID", ""))
        assert pod is not None
        if options.get(REQUEST_TYPE) == GATEWAY_DATA:
            # only if Docker ignored the pool's gateway: the pod's server address
            pods = {p["id"]: p for p in self.controller.pods()}
            net = ipaddress.IPv4Network(pods[pod]["subnet"])
            server = contract.dhcp_server(pod, net)
            return {"Address": f"{server[0]}/{net.prefixlen}", "Data": {}}
        if address:
            address = str(ipaddress.IPv4Interface(address).ip)
        got = self.controller.reserve(pod, address)
        return {"Address": got["ip"], "Data": {}}

    def release_address(self, body: dict) -> Reply:
        pod = self._pool_pod(body.get("PoolID", ""), wait=False)
        address = body.get("Address") or ""
        if address and pod is not None:
            self.controller.release(pod, str(ipaddress.IPv4Interface(address).ip))
        return {}

    # ---------------------------------------------------------------- networks
    def create_network(self, body: dict) -> Reply:
        nid = body["NetworkID"]
        v4 = body.get("IPv4Data") or []
        if not v4 or any((d.get("AddressSpace") or "") != ADDRESS_SPACE for d in v4):
            space = (v4[0].get("AddressSpace") if v4 else None) or "none"
            raise ValueError(f"this network's addresses come from another IPAM driver "
                             f"(address space {space}); a Loris network takes its addresses "
                             "from Loris: add --ipam-driver loris")
        if len(v4) != 1:
            raise ValueError("a Loris network has one IPv4 subnet (its pod's)")
        if body.get("IPv6Data"):
            raise ValueError("Loris pods are IPv4 only: leave out --ipv6")
        generic = (body.get("Options") or {}).get(GENERIC) or {}
        subnet = str(ipaddress.IPv4Network(v4[0]["Pool"]))
        pod = self._pod_of(generic.get(POD_OPTION), subnet)
        if pod is None:
            self.pending.add(nid, subnet)
            return {}
        with self.book.lock:
            self.book.networks[nid] = int(pod["id"])
            # `-o loris.pod=NAME` alone: RequestPool (which sees only --ipam-opt) may have
            # answered a pending pool for this subnet; its addresses are this pod's
            self.book.subnet_pods[subnet] = int(pod["id"])
            self.book.save()
        log.info("Docker network %s is pod %s", nid[:12], pod["id"])
        return {}

    def delete_network(self, body: dict) -> Reply:
        self.pending.forget(body.get("NetworkID", ""))    # the pod stays (docs/docker.md)
        with self.book.lock:
            if self.book.networks.pop(body.get("NetworkID", ""), None) is not None:
                self.book.save()
        return {}

    def swarm_refused(self, _body: dict) -> Reply:
        raise ValueError("Loris networks are local-scope; swarm networks are not supported")

    # ---------------------------------------------------------------- endpoints
    def _network_pod(self, nid: str) -> int:
        with self.book.lock:
            pod = self.book.networks.get(nid)
        if pod is None:
            pod = self.pending.pod_of_network(nid)
        if pod is None:
            raise ValueError(f"network {nid[:12]} is unknown to Loris on host {self.host_id} "
                             "(its plugin state was lost); remove and create it again")
        return pod

    def create_endpoint(self, body: dict) -> Reply:
        nid, eid = body["NetworkID"], body["EndpointID"]
        iface = body.get("Interface") or {}
        pod = self._network_pod(nid)
        if iface.get("AddressIPv6"):
            raise ValueError("Loris pods are IPv4 only: leave out --ip6")
        if not iface.get("Address"):
            raise ValueError("no address from IPAM: create the network with "
                             "--ipam-driver loris")
        given_mac = (iface.get("MacAddress") or "").lower() or None
        with self.book.lock:
            known = self.book.endpoints.get(eid)
        if known is None:
            address = ipaddress.IPv4Interface(iface["Address"])
            body = {"host": self.host_id, "container": endpoint_ref(eid), "pod": pod,
                    "ip": str(address)}
            if given_mac:
                body["mac"] = given_mac
            try:
                port = self.controller.connect(body)
            except ControllerError as e:
                if e.code != "container_connected":
                    raise
                port = self._adopt(eid, e)    # a replay after the agent lost its book
            known = {"port": port["id"], "pod": pod, "mac": port["mac"], "ip": port["ip"]}
            with self.book.lock:
                self.book.endpoints[eid] = known
                self.book.save()
            log.info("endpoint %s: port %s %s %s", eid[:12], port["id"], port["ip"],
                     port["mac"])
        return {} if given_mac else {"Interface": {"MacAddress": known["mac"]}}

    def _adopt(self, eid: str, err: ControllerError) -> dict:
        port = self.port_of_ref(endpoint_ref(eid))
        if port is None:
            raise err
        return port

    def _port_of(self, eid: str) -> int | None:
        with self.book.lock:
            known = self.book.endpoints.get(eid)
        if known:
            return int(known["port"])
        port = self.port_of_ref(endpoint_ref(eid))
        return int(port["id"]) if port else None

    def join(self, body: dict) -> Reply:
        eid = body["EndpointID"]
        port_id = self._port_of(eid)
        if port_id is None:
            raise ValueError(f"endpoint {eid[:12]} was not created by Loris on host "
                             f"{self.host_id}")
        return {"InterfaceName": {"SrcName": contract.container_port_temp_name(port_id),
                                  "DstPrefix": "eth"},
                "DisableGatewayService": True}

    def delete_endpoint(self, body: dict) -> Reply:
        eid = body["EndpointID"]
        port_id = self._port_of(eid)
        if port_id is not None:
            self.controller.disconnect(port_id)      # 404 (already gone) is success
        with self.book.lock:
            if self.book.endpoints.pop(eid, None) is not None:
                self.book.save()
        return {}
