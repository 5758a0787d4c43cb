"""The observability operations: `loris trace` (tracing.py), a host's resync, per-port
counters (port_stats.py) and the Prometheus metrics (metrics.py), with the small WSGI app
that serves /metrics without credentials on a listen address of its own."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import webob
import webob.dec

from controller import validate
from controller.context import Context
from controller.errors import conflict, unavailable
from controller.metrics import CONTENT_TYPE, Metrics
from controller.port_stats import PortStats
from controller.programmer import NOT_CONNECTED, NOT_MASTER, NOT_REGISTERED, OK
from controller.tracing import Tracer
from flows import BRIDGES


class Observe:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.tracer = Tracer(ctx)
        self.stats = PortStats(ctx)

    @property
    def metrics(self) -> Metrics:
        return self.ctx.metrics

    def trace(self, req: validate.TraceRequest) -> dict:
        return self.tracer.trace(req)

    def with_stats(self, ports: Iterable[dict]) -> list[dict]:
        """Port views with their counters (`stats`, None when unreadable)."""
        ports = list(ports)
        counts = self.stats.of(ports)
        return [dict(p, stats=counts.get(p["id"])) for p in ports]

    def resync(self, host_id: str) -> None:
        """Reconcile the host's bridges with a dump of their flows (POST .../resync).

        The controller trusts what it installed on a connected bridge and only sends
        differences, so a flow removed by hand stays missing until the bridge reconnects;
        this makes the host's worker read both bridges and put them right (missing flows
        added, stale ones deleted, the rest untouched)."""
        ctx = self.ctx
        with ctx.store.read() as tx:
            ctx.host_or_404(tx, host_id)
        timeout = 3 * ctx.settings.flow_timeout
        try:
            result = ctx.programmer.submit(host_id, None, sync=BRIDGES).wait(timeout)
        except TimeoutError:
            raise unavailable(f"the bridges of host {host_id} were not reconciled within "
                              f"{timeout:g} s", "resync_timeout") from None
        except Exception as e:            # the worker failed the job (logged there)
            raise unavailable(f"reconciling host {host_id} failed: {e}",
                              "resync_failed") from None
        failed = {b: why for b, why in result.items() if why != OK}
        if failed and set(failed.values()) == {NOT_MASTER}:      # several controllers
            raise conflict(f"host {host_id}: this controller is not the OpenFlow master of "
                           "its bridges; resync through its master (see `loris controllers` "
                           "or GET /v1/controllers)", "not_master")
        if failed and set(failed.values()) <= {NOT_CONNECTED, NOT_REGISTERED}:
            raise conflict(f"host {host_id}: " + ", ".join(sorted(failed)) + " not connected "
                           "to the controller, nothing to reconcile (it is reconciled when it "
                           "connects); check `loris status`", "switch_not_connected")
        if failed:
            raise unavailable(f"reconciling host {host_id}: " + "; ".join(
                f"{b}: {why}" for b, why in sorted(failed.items())), "resync_failed")


def metrics_response(render: Callable[[], bytes]) -> webob.Response:
    return webob.Response(status=200, body=render(), content_type=CONTENT_TYPE.split(";")[0],
                          charset="utf-8")


def metrics_app(render: Callable[[], bytes]) -> Callable[..., Any]:
    """A WSGI app serving only GET /metrics, without credentials (metrics_listen)."""

    @webob.dec.wsgify
    def app(req: webob.Request) -> webob.Response:
        if req.path_info != "/metrics":
            return webob.Response(status=404, body=b"only /metrics is served here\n",
                                  content_type="text/plain", charset="utf-8")
        if req.method != "GET":
            resp = webob.Response(status=405, body=b"GET only\n", content_type="text/plain",
                                  charset="utf-8")
            resp.headers["Allow"] = "GET"
            return resp
        return metrics_response(render)

    return app
