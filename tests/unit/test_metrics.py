"""GET /metrics in-process: who may scrape it, that it parses as Prometheus text, that the
counters move with what moves them, and that the docs (reference, Grafana dashboard,
scrape configuration) name the metrics the controller serves."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from inproc import H1, H2, POD7, ApiClient, add_port, build_parts
from os_ken.lib.packet import dhcp
from prometheus_client.parser import text_string_to_metric_families
from test_dhcp import client_packet
from webob import Request

from controller import auth, config
from controller.observe import metrics_app
from flows import LORIS_COOKIE, Kind

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture
def creds(tmp_path):
    return auth.load_or_create(auth.credentials_dir(str(tmp_path / "loris.db")))


@pytest.fixture
def parts(tmp_path, creds):
    p = build_parts(tmp_path, creds, wire_timeout=0.3)
    yield p
    p.store.close()


def get(parts, path, token=None, method="GET"):
    req = Request.blank(path, method=method)
    if token:
        req.headers["Authorization"] = f"Bearer {token}"
    return req.get_response(parts.api)


def scrape(parts, creds) -> dict[str, dict[tuple, float]]:
    """Every sample: name -> {sorted label items: value}."""
    resp = get(parts, "/metrics", creds.metrics_token())
    assert resp.status_code == 200 and resp.content_type == "text/plain"
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def value(samples, name, **labels) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def test_the_metrics_token_scrapes_and_does_nothing_else(parts, creds):
    token = creds.metrics_token()
    assert token.startswith("metrics:") and creds.authenticate(f"Bearer {token}").role == \
        "metrics"
    assert get(parts, "/metrics").status_code == 401
    assert get(parts, "/metrics", "metrics:" + "0" * 64).status_code == 401
    assert get(parts, "/metrics", creds.operator_token()).status_code == 200
    assert get(parts, "/metrics", creds.agent_token("h1")).status_code == 403
    for path in ("/v1/hosts", "/v1/ports", "/v1/version"):
        resp = get(parts, path, token)
        assert resp.status_code == 403 and "may only scrape GET /metrics" in resp.text
    resp = get(parts, "/v1/metrics/token", creds.operator_token(), method="POST")
    assert resp.status_code == 200 and resp.json == {"token": token}
    assert get(parts, "/v1/metrics/token", token, method="POST").status_code == 403


def test_counters_and_gauges_move_with_what_moves_them(parts, creds):
    api = ApiClient(parts, creds.operator_token())
    before = scrape(parts, creds)
    assert value(before, "loris_hosts", state="synced") == 0
    api.ok("POST", "/v1/hosts", H1)
    api.ok("POST", "/v1/hosts", H2)
    api.ok("POST", "/v1/pods", POD7)
    port = add_port(parts, dhcp=True, ofport=9)
    add_port(parts, container="web2", mac="02:00:00:00:07:06", ip="198.18.135.6/24",
             state="wired")
    api.error("POST", "/v1/ports", {"host": "h1", "container": "late", "ip": "198.18.135.9/24",
                                    "pod": 7}, status=503)           # no agent: times out
    api.ok("PUT", "/v1/hosts/h1/actual", {"version": 1, "stats": {
        "passes": 4, "pass_seconds_total": 0.5, "last_pass_seconds": 0.1, "wiring_errors": 2}},
        status=204)
    discover = client_packet(dhcp.DHCP_DISCOVER, chaddr="02:00:00:00:07:05")
    cookie = LORIS_COOKIE | (int(Kind.PORT) << 52) | (port.id << 28)
    dpid = int(H1["dpids"]["br-int"], 16)
    assert parts.dhcp.handle(dpid, 9, cookie, discover) is not None
    while parts.dhcp_limit.allow((dpid, 9)):
        pass
    after = scrape(parts, creds)
    assert value(after, "loris_hosts", state="behind") == 2
    assert value(after, "loris_pods", state="in_use") == 1
    assert value(after, "loris_pods", state="empty") == 1           # the global pod
    assert value(after, "loris_ports", state="active") == 1
    assert value(after, "loris_ports", state="wired") == 1
    assert value(after, "loris_switch_connected", host="h1", bridge="br-int", role="equal") == 0
    assert value(after, "loris_flows_installed", host="h2", bridge="br-tun") == 0
    assert value(after, "loris_rest_requests_total", route="/v1/pods", method="POST",
                 status="201") == 1
    assert value(after, "loris_rest_requests_total", route="/v1/ports", method="POST",
                 status="503") == 1
    assert value(after, "loris_rest_requests_total", route="/metrics", method="GET",
                 status="200") == 1 + value(before, "loris_rest_requests_total",
                                            route="/metrics", method="GET", status="200")
    assert value(after, "loris_connects_total", result="failed") == 1
    assert value(after, "loris_store_commit_duration_seconds_count") > \
        value(before, "loris_store_commit_duration_seconds_count")
    assert value(after, "loris_agent_passes_total", host="h1") == 4
    assert value(after, "loris_agent_wiring_errors_total", host="h1") == 2
    assert value(after, "loris_agent_last_pass_duration_seconds", host="h1") == 0.1
    assert value(after, "loris_dhcp_replies_total", type="offer") == 1
    assert value(after, "loris_dhcp_rate_limited_total") == 1
    assert value(after, "loris_long_polls_open") == 0
    assert "process_resident_memory_bytes" in after


def test_metrics_listen_serves_without_credentials_and_nothing_else(parts):
    app = metrics_app(parts.metrics.render)
    resp = Request.blank("/metrics").get_response(app)
    assert resp.status_code == 200 and "loris_hosts" in resp.text
    assert Request.blank("/v1/hosts").get_response(app).status_code == 404
    assert Request.blank("/metrics", method="POST").get_response(app).status_code == 405
    assert config.load(env={"LORIS_METRICS_LISTEN": "127.0.0.1:9780"}).metrics_listen == \
        "127.0.0.1:9780"
    with pytest.raises(ValueError):
        config.load(env={"LORIS_METRICS_LISTEN": "nowhere"})


def served_families(parts, creds) -> set[str]:
    resp = get(parts, "/metrics", creds.metrics_token())
    return {f.name for f in text_string_to_metric_families(resp.text)
            if f.name.startswith("loris_")}


def test_the_reference_documents_every_metric_the_controller_serves(parts, creds):
    reference = (DOCS / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `(loris_[a-z_]+)`", reference, re.M))
    served = {name + ("_total" if name in COUNTERS else "") for name in served_families(
        parts, creds)}
    assert documented == served


COUNTERS = {"loris_rest_requests", "loris_store_requests", "loris_connects",
            "loris_openflow_errors",
            "loris_dhcp_replies", "loris_dhcp_rate_limited", "loris_agent_passes",
            "loris_agent_pass_seconds", "loris_agent_wiring_errors"}


def test_the_grafana_dashboard_and_the_scrape_config_use_the_served_metrics(parts, creds):
    dashboard = json.loads((DOCS / "grafana-loris.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 8
    families = served_families(parts, creds)
    samples = set(scrape(parts, creds))
    for expr in exprs:
        for name in re.findall(r"\bloris_[a-z_]+", expr):
            assert name in samples or name in families or \
                re.sub(r"_(bucket|sum|count|total)$", "", name) in families, (name, expr)
    scrape_config = yaml.safe_load((DOCS / "prometheus.yml").read_text())
    [job] = scrape_config["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["authorization"]["credentials_file"]
