"""The store's table for Docker's IPAM (schema version 4): addresses a host's Docker plugin
reserved in a pod before any port holds them.

Docker asks its IPAM driver for an address (RequestAddress) before it creates the endpoint
(CreateEndpoint, where the agent connects the port). Between the two the address is
reserved here, per pod and host, so no other host or connect takes it; the connect of the
same host then takes the reservation over (controller/docker_ipam.py). `DockerRows` is
mixed into `store.Tx`.

`docker_macs` (schema version 5): the MAC the controller gave an address of a pod when a
Docker endpoint took it (the user gave no `--mac-address`). The next endpoint with that
address gets it again while no port holds it, so a container that restarts with its address
keeps its MAC and its peers' ARP caches stay right (Loris forwards by destination MAC).

`docker_names`: the Docker container of an endpoint's port, once its agent learnt it (Docker
sends no container to a network plugin; the agent looks it up after the fact), so that
`GET /v1/ports` and `loris ports` show Docker-started containers by name.
"""

from __future__ import annotations

import time

DOCKER_SCHEMA = """
CREATE TABLE IF NOT EXISTS docker_addresses (
    pod_id INTEGER NOT NULL REFERENCES pods(id) ON DELETE CASCADE,
    addr INTEGER NOT NULL,
    ip TEXT NOT NULL,
    host_id TEXT NOT NULL,
    reserved_at REAL NOT NULL,
    PRIMARY KEY (pod_id, addr)
);
CREATE TABLE IF NOT EXISTS docker_names (
    port_id INTEGER PRIMARY KEY REFERENCES ports(id) ON DELETE CASCADE,
    container TEXT NOT NULL
)
"""

DOCKER_MACS_SCHEMA = """
CREATE TABLE IF NOT EXISTS docker_macs (
    pod_id INTEGER NOT NULL REFERENCES pods(id) ON DELETE CASCADE,
    addr INTEGER NOT NULL,
    mac TEXT NOT NULL,
    PRIMARY KEY (pod_id, addr)
)
"""


class DockerRows:
    """SQL of `docker_addresses` (mixed into store.Tx, which provides _one/_all/_c)."""

    def reserved_addrs(self, pod_id: int) -> set[int]:
        return {r[0] for r in self._all(  # type: ignore[attr-defined]
            "SELECT addr FROM docker_addresses WHERE pod_id = ?", (pod_id,))}

    def reservation(self, pod_id: int, addr: int) -> tuple[str, str] | None:
        """(host id, "a.b.c.d/len") of the reservation of `addr` in the pod, if any."""
        row = self._one(  # type: ignore[attr-defined]
            "SELECT host_id, ip FROM docker_addresses WHERE pod_id = ? AND addr = ?",
            (pod_id, addr))
        return (row[0], row[1]) if row else None

    def reserve_addr(self, pod_id: int, addr: int, ip: str, host_id: str) -> None:
        self._c.execute(  # type: ignore[attr-defined]
            "INSERT OR REPLACE INTO docker_addresses (pod_id, addr, ip, host_id, reserved_at) "
            "VALUES (?, ?, ?, ?, ?)", (pod_id, addr, ip, host_id, time.time()))

    def unreserve_addr(self, pod_id: int, addr: int) -> None:
        self._c.execute(  # type: ignore[attr-defined]
            "DELETE FROM docker_addresses WHERE pod_id = ? AND addr = ?", (pod_id, addr))

    def drop_reservations_before(self, host_id: str, before: float) -> None:
        self._c.execute(  # type: ignore[attr-defined]
            "DELETE FROM docker_addresses WHERE host_id = ? AND reserved_at < ?",
            (host_id, before))

    def docker_mac(self, pod_id: int, addr: int) -> str | None:
        """The MAC last given to a Docker endpoint with address `addr` in the pod."""
        row = self._one(  # type: ignore[attr-defined]
            "SELECT mac FROM docker_macs WHERE pod_id = ? AND addr = ?", (pod_id, addr))
        return row[0] if row else None

    def remember_docker_mac(self, pod_id: int, addr: int, mac: str) -> None:
        self._c.execute(  # type: ignore[attr-defined]
            "INSERT OR REPLACE INTO docker_macs (pod_id, addr, mac) VALUES (?, ?, ?)",
            (pod_id, addr, mac))

    def set_docker_name(self, port_id: int, container: str) -> None:
        self._c.execute(  # type: ignore[attr-defined]
            "INSERT OR REPLACE INTO docker_names (port_id, container) VALUES (?, ?)",
            (port_id, container))

    def docker_names(self) -> dict[int, str]:
        return dict(self._all("SELECT port_id, container FROM docker_names"))  # type: ignore[attr-defined]
