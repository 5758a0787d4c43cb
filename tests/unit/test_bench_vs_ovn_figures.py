"""The Loris-vs-OVN benchmark's figures and target verdicts from made-up samples (the run
itself: python -m bench vs-ovn)."""

import sys
from pathlib import Path

import pytest

# bench/ is not an installed package: import it from the repository.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.bench_vs_ovn import format_targets  # noqa: E402
from bench.common import Result  # noqa: E402
from bench.vs_ovn_figures import figures, targets_summary  # noqa: E402


def size_data(rest: float, cli: float, ovn: float, script: float, dhcp: float,
              agent_ms: float, lost: int = 0) -> dict:
    """Ten rounds at the given seconds to the first reply (the call returns at half of
    it; a DHCP connect at `dhcp`)."""
    def rows(reply: float) -> list[tuple[float, float | None]]:
        return [(reply / 2, reply * (1 + i / 100)) for i in range(10)]

    rest_rows = rows(rest)
    for _ in range(lost):
        rest_rows.append((rest / 2, None))
    return {
        "rows": {"rest": rest_rows, "cli": rows(cli), "script": rows(script),
                 "ovn": rows(ovn), "dhcp": [(dhcp, None)] * 10},
        "cli_commands": {"pods": [0.1] * 5, "ports": [0.12] * 5, "python": [0.05] * 5},
        "growth": {"loris": {"from": 0, "to": 10, "connect_s": 2.0},
                   "ovn": {"from": 0, "to": 10, "connect_s": 0.5}},
        "agent_cpu_ms_per_connect": agent_ms, "ovn_controller_cpu_ms_per_bind": 20.0,
        "flows_per_host": {"loris": {"h1": 70}, "ovn": {"h1": 300}},
        "ports_in_network": {"loris": 11, "ovn": 11},
        "flows_per_host_per_port": {"loris": 70 / 11, "ovn": 300 / 11},
    }


def test_every_target_passes_when_loris_is_fast_and_flat():
    result = Result("vs-ovn", "full")
    figures(result, {10: size_data(0.05, 0.055, 0.07, 0.09, 0.03, 30),
                     1000: size_data(0.055, 0.06, 0.08, 0.1, 0.035, 31)})
    summary = targets_summary(result)
    assert {n: met for n, (_, met) in summary.items()} == {1: True, 2: True, 3: True, 4: True}
    names = [f.name for f in result.figures]
    assert "T1 REST connect -> first ping vs OVN, 1,000 ports, p95" in names
    assert any(n.startswith("T3 REST connect -> first ping p50 at 1,000 ports") for n in names)
    for f in result.figures:
        assert f.value > 0 and f.baseline > 0
    flows = next(f for f in result.figures if f.name.startswith("flows per host per port"))
    assert flows.ratio == (70 / 11) / (300 / 11)


def test_each_target_misses_on_its_own_figures():
    # REST slower than OVN (1), CLI 2x REST (2), p50 grows 3x with the network (3), DHCP 2x (4)
    result = Result("vs-ovn", "full")
    figures(result, {10: size_data(0.05, 0.1, 0.04, 0.09, 0.12, 30),
                     200: size_data(0.15, 0.3, 0.05, 0.1, 0.4, 90)})
    summary = targets_summary(result)
    assert {n: met for n, (_, met) in summary.items()} == {1: False, 2: False, 3: False,
                                                           4: False}
    text = format_targets(summary)
    assert "1. MISS" in text and "5. not measured here" in text


def test_one_size_leaves_flatness_unmeasured_and_lost_pings_are_noted():
    result = Result("vs-ovn", "smoke")
    figures(result, {4: size_data(0.05, 0.055, 0.07, 0.09, 0.06, 30, lost=2)})
    summary = targets_summary(result)
    assert summary[3][1] is None and summary[1][1] is True
    first = result.figures[0]
    assert "rest: 2 without reply" in first.note
    # the median of the 10 replies: the lost ones are left out
    assert first.value == pytest.approx(0.05 * 1.045 * 1e3)
