"""Docker networks made by hand for a pod that does not exist yet (docs/docker.md):

    docker network create -d loris --ipam-driver loris --subnet 198.18.140.0/24 red

makes pod `red` with that subnet. Docker tells a plugin neither the network's name nor the
same NetworkID on two hosts (it sends the pool to RequestPool, then NetworkID and pool to
CreateNetwork), so while Docker creates the network the plugin cannot know which pod it is.
It accepts the network as *pending* (pool `loris-subnet-<subnet>`, kept in the book), and
the agent's Docker thread (docker_networks.py), kicked at once, reads the network's name
from Docker's network list and asks the controller for pod `red` with that subnet
(`POST /v1/hosts/{host}/pods`): made if missing, the existing one if its subnet is the same
(two hosts creating the network at once end with one pod). A different subnet is refused by
the controller naming both; the network then stays unusable and every container start on
it fails with that message (remove it and create it again with the pod's subnet).

RequestAddress and CreateEndpoint of a pending network wait for its pod, at most
PENDING_WAIT_S (the thread needs a pass: well under a second once kicked). Nothing here
calls the Docker API: the thread does, outside any handler.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hostagent.docker_driver import Book, Controller

log = logging.getLogger(__name__)

SUBNET_POOL_PREFIX = "loris-subnet-"
PENDING_WAIT_S = 10.0


def subnet_pool(net: ipaddress.IPv4Network) -> str:
    return f"{SUBNET_POOL_PREFIX}{net}"


def pool_subnet(pool_id: str) -> str | None:
    """The subnet of a pending network's pool id, None for any other pool."""
    if not pool_id.startswith(SUBNET_POOL_PREFIX):
        return None
    return str(ipaddress.IPv4Network(pool_id[len(SUBNET_POOL_PREFIX):]))


class PendingNetworks:
    """The book's pending networks: NetworkID -> subnet until their pod is known
    (`book.subnet_pods`), or the controller's refusal (`book.refused`)."""

    def __init__(self, book: Book, controller: Controller) -> None:
        self.book = book
        self.controller = controller
        self.kick: Callable[[], None] = lambda: None     # wakes the agent's Docker thread

    def add(self, nid: str, subnet: str) -> None:
        with self.book.lock:
            others = [n for n, s in self.book.pending.items() if s == subnet and n != nid]
            if others:
                raise ValueError(f"a Loris network with subnet {subnet} is already waiting "
                                 "for its pod on this host; name the pod with -o loris.pod="
                                 "NAME --ipam-opt loris.pod=NAME")
            self.book.pending[nid] = subnet
            self.book.subnet_pods.pop(subnet, None)     # a pod of an earlier network
            self.book.save()
        log.info("Docker network %s (%s): its pod is made from its name", nid[:12], subnet)
        self.kick()

    def waiting(self) -> bool:
        """Whether a network waits for its pod (not refused)."""
        with self.book.lock:
            return bool(set(self.book.pending) - set(self.book.refused))

    def forget(self, nid: str) -> None:
        with self.book.lock:
            was_pending = self.book.pending.pop(nid, None) is not None
            was_refused = self.book.refused.pop(nid, None) is not None
            if was_pending or was_refused:
                self.book.save()

    def pod_of_subnet(self, subnet: str) -> int:
        """The pod of the pending network with this pool (waits for it)."""
        return self._wait(lambda: self.book.subnet_pods.get(subnet),
                          lambda: [n for n, s in self.book.pending.items() if s == subnet],
                          f"the network with subnet {subnet}")

    def pod_of_network(self, nid: str) -> int | None:
        """The pod of pending network `nid` (waits for it); None if it is not pending."""
        with self.book.lock:
            subnet = self.book.pending.get(nid)
        if subnet is None:
            return None
        return self._wait(lambda: self.book.networks.get(nid), lambda: [nid],
                          f"network {nid[:12]}")

    def _wait(self, found: Callable[[], int | None], nids: Callable[[], list[str]],
              what: str) -> int:
        """`found()` once it is not None (under the book's lock), or the controller's refusal
        of one of the networks `nids()`, or an error after PENDING_WAIT_S."""
        deadline = time.monotonic() + PENDING_WAIT_S
        self.kick()
        with self.book.changed:
            while True:
                pod = found()
                if pod is not None:
                    return pod
                refusal = next((self.book.refused[n] for n in nids()
                                if n in self.book.refused), None)
                if refusal is not None:
                    raise ValueError(refusal)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ValueError(f"Loris has not yet made the pod of {what} (the agent "
                                     "reads its name from Docker); try again in a moment")
                self.book.changed.wait(left)

    def adopt(self, networks: list[dict]) -> None:
        """With Docker's network list (the agent's Docker thread): ask the controller for the
        pod of every pending network, by the network's name."""
        with self.book.lock:
            pending = {n: s for n, s in self.book.pending.items()
                       if n not in self.book.refused}
        for net in networks:
            nid = net.get("Id", "")
            if nid not in pending:
                continue
            name = net.get("Name", "")
            try:
                pod = self.controller.ensure_pod(name, pending[nid])
            except Exception as e:        # ControllerError: refused, or try again next pass
                if getattr(e, "status", None) in (400, 409, 422):
                    self._settle(nid, None, str(e))
                    log.warning("Docker network %s refused: %s", name, e)
                    continue
                raise
            self._settle(nid, int(pod["id"]), None)
            log.info("Docker network %s (%s) is pod %s", name, pending[nid], pod["id"])

    def _settle(self, nid: str, pod: int | None, refusal: str | None) -> None:
        with self.book.changed:
            subnet = self.book.pending.get(nid)
            if subnet is None:
                return                    # removed meanwhile
            if pod is None:
                self.book.refused[nid] = refusal or "refused"
            else:
                self.book.networks[nid] = pod
                self.book.subnet_pods[subnet] = pod
                del self.book.pending[nid]
            self.book.save()
            self.book.changed.notify_all()
