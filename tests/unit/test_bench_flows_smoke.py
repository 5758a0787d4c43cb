"""The flows benchmark runs end to end at a tiny size (full run: python -m bench flows)."""

import sys
from pathlib import Path

import pytest

# bench/ is not an installed package: import it from the repository.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import bench_flows  # noqa: E402


def test_bench_flows_smoke(capsys):
    rows = bench_flows.main(size="smoke")
    assert [r["ports"] for r in rows] == [10, 200]
    for row in rows:
        assert row["flows_h0"] > 0 and row["hosts_touched"] == 10
        assert 0 < row["flows_changed"] < 40        # one port: a handful per host of its pod
    assert "compute-all ms" in capsys.readouterr().out
    with pytest.raises(ValueError, match="size must be one of"):
        bench_flows.main(size="huge")


def test_bench_flows_figures_are_well_formed():
    result = bench_flows.run("smoke")
    assert result.benchmark == "flows" and not result.error
    assert len(result.figures) == 4
    for f in result.figures:
        assert f.value > 0 and f.baseline > 0 and f.ratio == f.value / f.baseline
