"""The flows benchmark runs end to end at a tiny size (full run: python -m bench.bench_flows)."""

import importlib.util
from pathlib import Path

import pytest

# bench/ is not an installed package: load the script from the repository.
_PATH = Path(__file__).resolve().parents[2] / "bench" / "bench_flows.py"
_SPEC = importlib.util.spec_from_file_location("bench_flows", _PATH)
bench_flows = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench_flows)
main = bench_flows.main


def test_bench_flows_smoke(capsys):
    rows = main(size="smoke")
    assert [r["ports"] for r in rows] == [10, 200]
    for row in rows:
        assert row["flows_h0"] > 0 and row["hosts_touched"] == 10
        assert 0 < row["flows_changed"] < 40        # one port: a handful per host of its pod
    assert "compute-all ms" in capsys.readouterr().out
    with pytest.raises(ValueError, match="size must be one of"):
        main(size="huge")
