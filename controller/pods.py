"""Pods: creation (POST /v1/pods) and deletion (DELETE /v1/pods/{id}).

A pod also comes into being on the first connect to it (connect.py). Deleting a pod that
still has members needs `force`; its ports go with it and their hosts' agents are told.
"""

from __future__ import annotations

from controller import validate, views
from controller.context import Context
from controller.errors import conflict, not_found
from flows.contract import GLOBAL_POD


class Pods:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def create(self, req: validate.PodCreate) -> dict:
        with self.ctx.store.tx() as tx:
            if tx.pod(req.id) is not None:
                raise conflict(f"pod {req.id} already exists", "pod_exists")
            pod = tx.insert_pod(req.id, req.name, str(req.subnet) if req.subnet else None)
            return views.pod(pod, 0, [])

    def delete(self, pod_id: int, force: bool) -> None:
        ctx = self.ctx
        with ctx.store.tx() as tx:
            pod = tx.pod(pod_id)
            if pod is None:
                raise not_found(f"pod {pod_id} does not exist", "pod_not_found")
            if pod_id == GLOBAL_POD:
                raise conflict("the global pod 0 cannot be deleted", "global_pod")
            members = tx.ports(pod_id=pod_id)
            if members and not force:
                names = ", ".join(f"{p.container} on {p.host_id}" for p in members[:5])
                more = f" and {len(members) - 5} more" if len(members) > 5 else ""
                raise conflict(f"pod {pod_id} still has {len(members)} member(s): {names}{more};"
                               " disconnect them first or delete with ?force=true", "pod_in_use")
            hosts = {p.host_id for p in members}
            for port in members:
                tx.delete_port(port.id)
            for h in hosts:
                tx.release_unused_vlans(h)
            tx.delete_pod(pod_id)
            tx.bump(hosts)
        ctx.publish()
        ctx.ports_changed(p.id for p in members)
        if hosts:
            ctx.program_pod_quietly(pod_id, hosts, f"deleting pod {pod_id}")
