"""A pod is a Docker network on every host: the agent keeps its Docker engine's `loris`
networks in step with the controller's pods (docs/docker.md).

For every pod with a subnet (but the global pod 0) the engine gets a network named as the
pod (or `pod<id>` for a pod without a name):

    docker network create -d loris --ipam-driver loris --subnet <subnet> \
        -o loris.pod=<id> --ipam-opt loris.pod=<id> --label loris.managed=1 <name>

and a network this made is removed once its pod is gone (and no container uses it).
Networks made by hand are left alone. This runs in its own thread, every SYNC_S seconds,
never inside a plugin handler: creating a network makes dockerd call the plugin.

The same pass names the ports of Docker endpoints: Docker sends a network plugin no
container, but its container list says which container holds which endpoint, and the
controller is told (`PUT /v1/hosts/{host}/ports/{id}/docker`) so `loris ports` shows it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from flows.contract import GLOBAL_POD
from hostagent.docker_driver import DRIVER, POD_OPTION

log = logging.getLogger(__name__)

SYNC_S = 2.0
HURRY_S = 0.2      # while a network made by hand waits for its pod (docker_handmade.py)
MANAGED_LABEL = "loris.managed"


def network_name(pod: dict) -> str:
    return pod.get("name") or f"pod{pod['id']}"


def plan(pods: list[dict], networks: list[dict]) -> tuple[list[dict], list[dict]]:
    """(pods to make a network for, managed networks to remove). `networks`: Docker's
    network list (Name, Driver, Options, Labels, Containers)."""
    ours = [n for n in networks if n.get("Driver") == DRIVER]
    names = {n.get("Name") for n in networks}
    wanted = [p for p in pods if p.get("subnet") and p["id"] != GLOBAL_POD]

    def keys(pod: dict) -> set[str]:
        return {str(pod["id"])} | ({pod["name"]} if pod.get("name") else set())

    def pod_key(net: dict) -> str | None:
        return (net.get("Options") or {}).get(POD_OPTION)

    mapped = {pod_key(n) for n in ours}
    create = [p for p in wanted if not keys(p) & mapped and network_name(p) not in names]
    remove = [n for n in ours if (n.get("Labels") or {}).get(MANAGED_LABEL)
              and not any(pod_key(n) in keys(p) for p in wanted)]
    return create, remove


def endpoint_names(containers: list[dict], ports: dict[str, int]) -> dict[int, str]:
    """port id -> container name, for the endpoints (EndpointID -> port id) found in Docker's
    container list."""
    found = {}
    for c in containers:
        name = (c.get("Names") or ["?"])[0].lstrip("/")
        for net in ((c.get("NetworkSettings") or {}).get("Networks") or {}).values():
            port_id = ports.get((net or {}).get("EndpointID") or "")
            if port_id is not None:
                found[port_id] = name
    return found


class NetworkSync:
    """The thread that applies `plan` to the engine at `docker_url`."""

    def __init__(self, pods: Callable[[], list[dict]], docker_url: str | None,
                 stop: threading.Event,
                 endpoint_ports: Callable[[], dict[str, int]] = dict,
                 name_port: Callable[[int, str], None] | None = None,
                 adopt: Callable[[list[dict]], None] | None = None,
                 hurry: Callable[[], bool] = lambda: False) -> None:
        self.pods = pods
        self.hurry = hurry      # whether a network waits for its pod: pass again soon
        self.adopt = adopt      # maps networks made by hand to pods (docker_handmade.py)
        self.endpoint_ports = endpoint_ports    # EndpointID -> port id (this host's)
        self.name_port = name_port
        self.named: dict[int, str] = {}
        self.docker_url = docker_url
        self.stop = stop
        self.kick = threading.Event()
        self._warned = False

    def _client(self):
        import docker

        return docker.APIClient(base_url=self.docker_url, timeout=60) if self.docker_url \
            else docker.APIClient(timeout=60)

    def once(self) -> None:
        import docker.types

        client = self._client()
        try:
            networks = client.networks()
            if self.adopt is not None:
                self.adopt(networks)
            create, remove = plan(self.pods(), networks)
            for pod in create:
                name = network_name(pod)
                log.info("creating Docker network %s for pod %s (%s)", name, pod["id"],
                         pod["subnet"])
                client.create_network(
                    name, driver=DRIVER, options={POD_OPTION: str(pod["id"])},
                    labels={MANAGED_LABEL: "1"},
                    ipam=docker.types.IPAMConfig(
                        driver=DRIVER, pool_configs=[docker.types.IPAMPool(
                            subnet=pod["subnet"])],
                        # the pool's pod, even when pods share a subnet
                        options={POD_OPTION: str(pod["id"])}))
            for net in remove:
                details = client.inspect_network(net["Id"])
                if details.get("Containers"):
                    continue              # still used: removed once its last one goes
                log.info("removing Docker network %s: its pod is gone", net.get("Name"))
                client.remove_network(net["Id"])
            if self.name_port is not None:
                self._name_ports(client.containers())
        finally:
            client.close()

    def _name_ports(self, containers: list[dict]) -> None:
        wanted = self.endpoint_ports()
        for port_id, name in endpoint_names(containers, wanted).items():
            if self.named.get(port_id) != name:
                self.name_port(port_id, name)
                self.named[port_id] = name
        for port_id in set(self.named) - set(wanted.values()):
            del self.named[port_id]

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.once()
                self._warned = False
            except Exception as e:  # engine or controller away: try again later
                (log.debug if self._warned else log.warning)(
                    "keeping Docker networks in step with pods failed: %s", e)
                self._warned = True
            self.kick.wait(HURRY_S if self.hurry() else SYNC_S)
            self.kick.clear()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="docker-networks", daemon=True)
        thread.start()
        return thread
