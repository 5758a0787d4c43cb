"""Every benchmark runs end to end at its tiny size, so the benchmarks never rot.

Not a timed test: it checks that each benchmark produces well-formed figures (a number, a
same-run baseline, a ratio, a target that is a comparison) and that the JSON file carries the
machine's conditions. The figures themselves are docs/benchmarks.md's business
(`python -m bench` for the full run).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import Figure  # noqa: E402
from bench.runner import BENCHMARKS, run_benchmarks  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.docker]


def well_formed(f: Figure) -> None:
    assert f.name and isinstance(f.unit, str)
    assert isinstance(f.value, (int, float)) and math.isfinite(f.value) and f.value >= 0, f
    if f.baseline is not None:
        assert math.isfinite(f.baseline) and f.baseline >= 0 and f.baseline_name, f
        if f.baseline > 0:
            assert f.ratio == pytest.approx(f.value / f.baseline)
    if f.target is not None:
        op, limit = f.target
        assert op in ("<=", ">=") and isinstance(limit, (int, float)), f
        assert f.met in (True, False, None)


def test_every_benchmark_runs_at_smoke_size(tmp_path):
    out = tmp_path / "smoke.json"
    results, path = run_benchmarks(list(BENCHMARKS), "smoke", out=out, echo=False)
    assert path == out
    assert [r.benchmark for r in results] == list(BENCHMARKS)
    for r in results:
        assert r.error is None, f"{r.benchmark}: {r.error}\n{r.details.get('traceback')}"
        assert r.figures, r.benchmark
        for f in r.figures:
            well_formed(f)
    by_name = {r.benchmark: r for r in results}
    # the properties the benchmarks exist to show, where a tiny run shows them too
    datapath = {f.name: f for f in by_name["datapath"].figures}
    arp = next(f for name, f in datapath.items() if "ARP broadcasts" in name)
    assert arp.value == 0 and arp.baseline > 0          # Loris floods none, plain OVS does
    for f in by_name["resync"].figures:
        if f.name.startswith("pings lost"):
            assert f.value == 0 and f.baseline > 0, f
    doc = json.loads(out.read_text())
    assert doc["size"] == "smoke"
    for key in ("date", "cpu", "cores", "load_average", "kernel", "ovs", "os_ken"):
        assert doc["conditions"][key] not in (None, "", "unknown"), key
    assert [r["benchmark"] for r in doc["results"]] == list(BENCHMARKS)
    assert all("ratio" in f and "met" in f for r in doc["results"] for f in r["figures"])


def test_unknown_benchmark_or_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown benchmark.*choose from"):
        run_benchmarks(["nope"], "smoke", out=tmp_path / "x.json", echo=False)
    with pytest.raises(ValueError, match="size must be one of"):
        run_benchmarks(["flows"], "huge", out=tmp_path / "x.json", echo=False)
    assert not (tmp_path / "x.json").exists()


def test_the_docker_benchmark_runs_without_ovn(tmp_path, monkeypatch):
    """`./dev test` does not install OVN (`./dev bench` does): on such a machine the Docker
    benchmark leaves its OVN series out instead of failing."""
    import bench.bench_docker

    monkeypatch.setattr(bench.bench_docker, "missing_tools", lambda: ["ovn-northd"])
    (r,), _ = run_benchmarks(["docker"], "smoke", out=tmp_path / "docker.json", echo=False)
    assert r.error is None, f"{r.error}\n{r.details.get('traceback')}"
    adds = [f for f in r.figures if f.name.startswith("what the plugin adds to docker run")]
    assert len(adds) == 2 and all(f.baseline is None and "ovn-northd missing" in f.note
                                  for f in adds)
    assert r.details["ovn_bind_first_ping_s"] == []
    for f in r.figures:
        well_formed(f)
