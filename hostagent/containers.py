"""Container runtimes: a container reference -> its network namespace.

References: a Docker container name or id, or `netns:NAME` for a plain namespace
(`/run/netns/NAME`, as made by `ip netns add`).
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

import docker
import docker.errors
import requests.exceptions

log = logging.getLogger(__name__)

NETNS_PREFIX = "netns:"
NETNS_RUN_DIR = "/run/netns"


class ContainerError(RuntimeError):
    code = "container_error"


class ContainerNotFound(ContainerError):
    code = "container_not_found"


class ContainerNotRunning(ContainerError):
    code = "container_not_running"


class RuntimeUnavailable(ContainerError):
    """The runtime could not be asked (Docker engine down): says nothing about the container."""

    code = "runtime_unavailable"


@dataclass(frozen=True)
class Container:
    ref: str  # as the user gave it
    id: str  # Docker's full id, or the `netns:NAME` reference
    name: str
    netns: str  # path of its network namespace


class Runtimes:
    def __init__(self, docker_url: str | None = None) -> None:
        self._docker_url = docker_url
        self._client: docker.APIClient | None = None
        self._lock = threading.Lock()

    def _docker(self) -> docker.APIClient:
        with self._lock:
            if self._client is None:
                try:
                    self._client = (
                        docker.APIClient(base_url=self._docker_url, timeout=20)
                        if self._docker_url
                        else docker.APIClient(timeout=20)
                    )
                except docker.errors.DockerException as e:
                    raise RuntimeUnavailable(f"Docker engine unavailable: {e}") from e
            return self._client

    def resolve(self, ref: str) -> Container:
        """The running container `ref`; raises ContainerNotFound / ContainerNotRunning."""
        if ref.startswith(NETNS_PREFIX):
            name = ref[len(NETNS_PREFIX):]
            path = os.path.join(NETNS_RUN_DIR, name)
            if not name or "/" in name or not os.path.exists(path):
                raise ContainerNotFound(f"network namespace {name} not found (no {path})")
            return Container(ref=ref, id=ref, name=name, netns=path)
        info = self._inspect(ref)
        if info is None:
            raise ContainerNotFound(f"container {ref} not found")
        state = info.get("State") or {}
        pid = state.get("Pid") or 0
        name = (info.get("Name") or ref).lstrip("/")
        if not state.get("Running") or pid <= 0:
            raise ContainerNotRunning(f"container {name} is not running (start it first)")
        return Container(ref=ref, id=info["Id"], name=name, netns=f"/proc/{pid}/ns/net")

    def exists(self, container_id: str) -> bool:
        """Whether a container (Docker id or netns ref) still exists, running or not."""
        if container_id.startswith(NETNS_PREFIX):
            return os.path.exists(os.path.join(NETNS_RUN_DIR, container_id[len(NETNS_PREFIX):]))
        return self._inspect(container_id) is not None

    def identify(self, ref: str) -> tuple[str, str] | None:
        """(Docker id, name) of container `ref`, running or not; None if there is none."""
        if ref.startswith(NETNS_PREFIX):
            return None
        info = self._inspect(ref)
        return (info["Id"], (info.get("Name") or ref).lstrip("/")) if info else None

    def _inspect(self, ref: str) -> dict | None:
        try:
            return self._docker().inspect_container(ref)
        except docker.errors.NotFound:
            return None
        except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
            raise RuntimeUnavailable(f"Docker engine unavailable: {e}") from e

    def watch_docker(
        self, on_event: Callable[[str, str, str], None], stop: threading.Event
    ) -> threading.Thread:
        """Follow Docker's container start/die/destroy events in a thread.

        Calls on_event(action, container_id, container_name); reconnects with backoff.
        """

        def run() -> None:
            delay = 0.5
            warned = False
            while not stop.is_set():
                try:
                    client = docker.APIClient(base_url=self._docker_url) if self._docker_url \
                        else docker.APIClient()
                    stream = client.events(
                        decode=True,
                        filters={"type": "container", "event": ["start", "die", "destroy"]},
                    )
                    delay, warned = 0.5, False
                    for ev in stream:
                        if stop.is_set():
                            break
                        actor = ev.get("Actor") or {}
                        name = (actor.get("Attributes") or {}).get("name", "")
                        try:
                            on_event(ev.get("Action") or ev.get("status", ""),
                                     actor.get("ID") or ev.get("id", ""), name)
                        except Exception:
                            log.exception("handling Docker event %s failed", ev)
                except Exception as e:  # the engine restarted or is not there yet
                    if stop.is_set():
                        break
                    # Once per outage: a host without Docker would otherwise log forever.
                    (log.debug if warned else log.warning)(
                        "Docker events unavailable (%s); retrying", e)
                    warned = True
                stop.wait(delay * (1 + random.random()))
                delay = min(delay * 2, 30.0)

        thread = threading.Thread(target=run, name="docker-events", daemon=True)
        thread.start()
        return thread


def matches(ref: str, container_id: str, name: str) -> bool:
    """Whether the reference a port was connected with designates this container."""
    if ref.startswith(NETNS_PREFIX):
        return False
    if ref.lstrip("/") == name:
        return True
    return len(ref) >= 4 and container_id.startswith(ref)  # a (short) Docker id

