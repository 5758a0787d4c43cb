"""The read-only operations of the REST API: health, version, hosts, pods and ports.

They read through `Store.read()`, so a GET is answered from the last committed state even
while a write transaction is committing; the JSON shapes are in views.py.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version

from controller import openapi, pods, views
from controller.context import Context
from controller.errors import not_found, unavailable
from controller.store import Host, Tx
from controller.validate import PodRef


class Reads:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def version(self) -> dict:
        try:
            osken = dist_version("os-ken")
        except PackageNotFoundError:
            osken = "unknown"
        return {"version": openapi.VERSION, "api": "v1", "os_ken": osken}

    def health(self) -> dict:
        with self.ctx.store.read() as tx:
            tx.hosts()
        return {"status": "ok"}

    def host_view(self, tx: Tx, host: Host) -> dict:
        ctx = self.ctx
        view = views.host(host, tx.tunnels(host.id), len(tx.ports(host_id=host.id)),
                          ctx.switches, ctx.board, ctx.settings.openflow_port,
                          ctx.settings.openflow_tls, ctx.programmer.problems.of_host(host.id))
        if ctx.cluster is not None:      # several controllers: master and roles (ha_views.py)
            openflow = ctx.cluster.host_openflow(host)
            view["openflow"]["master"] = openflow["master"]
            for bridge, roles in openflow["roles"].items():
                view["openflow"]["bridges"][bridge]["roles"] = roles
        return view

    def controllers(self) -> dict:
        """GET /v1/controllers (controller/ha_views.py)."""
        if self.ctx.cluster is None:
            raise unavailable("this controller has no view of the controllers",
                              "no_cluster_view")
        return self.ctx.cluster.controllers()

    def list_hosts(self) -> list[dict]:
        with self.ctx.store.read() as tx:
            return [self.host_view(tx, h) for h in tx.hosts()]

    def show_host(self, host_id: str) -> dict:
        with self.ctx.store.read() as tx:
            return self.host_view(tx, self.ctx.host_or_404(tx, host_id))

    def list_pods(self) -> list[dict]:
        with self.ctx.store.read() as tx:
            counts = tx.pod_port_counts()
            return [views.pod(p, counts.get(p.id, 0)) for p in tx.pods()]

    def show_pod(self, ref: PodRef) -> dict:
        """One pod, by id or name, with its members."""
        with self.ctx.store.read() as tx:
            pod = pods.existing(tx, ref)
            members = tx.ports(pod_id=pod.id)
            return views.pod(pod, len(members), members, tx.docker_names())

    def list_ports(self, pod: PodRef | None = None, host: str | None = None,
                   container: str | None = None) -> list[dict]:
        """Ports, filtered; a pod named by a name no pod has is a 404 (by a number: an
        empty list, as the pod may come into being with the next connect)."""
        with self.ctx.store.read() as tx:
            pod_id = pods.existing(tx, pod).id if isinstance(pod, str) else pod
            names = tx.docker_names()
            return [views.with_docker_name(views.port(p), names) for p in
                    tx.ports(pod_id, host, container)]

    def show_port(self, port_id: int) -> dict:
        with self.ctx.store.read() as tx:
            port = tx.port(port_id)
            if port is None:
                raise not_found(f"port {port_id} does not exist", "port_not_found")
            return views.with_docker_name(views.port(port), tx.docker_names())
