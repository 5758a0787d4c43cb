"""Pods: creation (POST /v1/pods), deletion (DELETE /v1/pods/{pod}), and finding a pod by
its id or its name wherever the API names one.

Every pod has a unique name (contract.POD_NAME; store: pod_rows.py). A pod created without
an id gets the lowest free one; without a name it is called `pod-<id>`. A pod also comes
into being on the first connect to its *number* (connect.py), named `pod-<id>`; a connect
to a *name* that no pod has is refused (404, naming `loris pod create`): a name is chosen by
someone, so a typo must not silently make a second network. Deleting a pod that still has
members needs `force`; its ports go with it and their hosts' agents are told.
"""

from __future__ import annotations

from controller import validate, views
from controller.context import Context
from controller.errors import ApiError, conflict, invalid, not_found
from controller.store import Pod, Port, Tx
from flows.contract import (
    GLOBAL_POD,
    MAX_POD_ID,
    default_pod_name,
    pod_name_fits,
    reserved_pod_id,
)


def label(pod: Pod) -> str:
    """How messages name a pod: `pod 7 (web)`."""
    return f"pod {pod.id} ({pod.name})"


def find(tx: Tx, ref: validate.PodRef) -> Pod | None:
    """The pod with this id (an int) or name (a str), or None."""
    if isinstance(ref, str):
        pod_id = tx.pod_id_by_name(ref)
        return tx.pod(pod_id) if pod_id is not None else None
    return tx.pod(ref)


def missing(ref: validate.PodRef) -> ApiError:
    """The 404 for a pod that does not exist, with the way to make it."""
    if isinstance(ref, str):
        return not_found(f"pod {ref} does not exist; create it with `loris pod create {ref}` "
                         f"(POST /v1/pods {{\"name\": \"{ref}\"}})", "pod_not_found")
    return not_found(f"pod {ref} does not exist", "pod_not_found")


def existing(tx: Tx, ref: validate.PodRef) -> Pod:
    """The pod named by `ref`, else 404 pod_not_found."""
    pod = find(tx, ref)
    if pod is None:
        raise missing(ref)
    return pod


def choose_id(tx: Tx, name: str | None) -> int:
    """The id of a pod created without one: the id its name is reserved for (`pod-7`),
    else the lowest free id above the global pod."""
    if name is not None:
        reserved = reserved_pod_id(name)
        if reserved is not None and name == default_pod_name(reserved) \
                and reserved <= MAX_POD_ID:
            return reserved
    pod_id = tx.free_pod_id()
    if pod_id is None:
        raise conflict(f"every pod id 1..{MAX_POD_ID} is taken; delete a pod first",
                       "pod_ids_exhausted")
    return pod_id


class Pods:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def create(self, req: validate.PodCreate) -> dict:
        def create(tx: Tx) -> dict:
            if req.id is not None and (same := tx.pod(req.id)) is not None:
                raise conflict(f"{label(same)} already exists; choose another id, or leave "
                               "the id out to get a free one", "pod_exists")
            if req.name is not None and (other := tx.pod_id_by_name(req.name)) is not None:
                raise conflict(f"the name {req.name} is taken: {label(tx.pod(other))} "
                               "already exists; choose another name", "pod_exists")
            pod_id = req.id if req.id is not None else choose_id(tx, req.name)
            if req.id is None and tx.pod(pod_id) is not None:     # pod-7 asked, 7 taken
                raise conflict(f"the name {req.name} is reserved for pod {pod_id}, and "
                               f"{label(tx.pod(pod_id))} already exists; choose another name",
                               "pod_exists")
            if req.name is not None and not pod_name_fits(req.name, pod_id):
                raise invalid(f"the name {req.name} is reserved (pod-<id> is the name of a pod "
                              f"made without one); choose another name for pod {pod_id}")
            pod = tx.insert_pod(pod_id, req.name, str(req.subnet) if req.subnet else None)
            return views.pod(pod, 0, [])

        return self.ctx.store.write(create)

    def delete(self, ref: validate.PodRef, force: bool) -> int:
        """Delete the pod; its id."""
        ctx = self.ctx

        def delete(tx: Tx) -> tuple[int, list[Port], set[str]]:
            pod = existing(tx, ref)
            pod_id = pod.id
            if pod_id == GLOBAL_POD:
                raise conflict(f"the global pod 0 ({pod.name}) cannot be deleted", "global_pod")
            members = tx.ports(pod_id=pod_id)
            if members and not force:
                names = ", ".join(f"{p.container} on {p.host_id}" for p in members[:5])
                more = f" and {len(members) - 5} more" if len(members) > 5 else ""
                raise conflict(f"{label(pod)} still has {len(members)} member(s): {names}{more};"
                               " disconnect them first or delete with ?force=true "
                               f"(`loris pod delete {pod.name} --force`)", "pod_in_use")
            hosts = {p.host_id for p in members}
            for port in members:
                tx.delete_port(port.id)
            for h in hosts:
                tx.release_unused_vlans(h)
            tx.delete_pod(pod_id)
            tx.bump(hosts)
            return pod_id, members, hosts

        pod_id, members, hosts = ctx.store.write(delete)
        ctx.publish()
        ctx.ports_changed(p.id for p in members)
        if hosts:
            ctx.program_pod_quietly(pod_id, hosts, f"deleting pod {pod_id}")
        return pod_id
