"""The Loris-vs-OVN benchmark runs end to end at its tiny size (one network size, two rounds),
so it never rots. Not a timed test: well-formed figures, every target of issue #12 given a
verdict or marked unmeasured, both labs gone afterwards. Needs OVN (`./dev bench` installs
it; `./dev test` does not): skipped without it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.runner import run_benchmarks  # noqa: E402
from bench.vs_ovn_figures import TARGETS  # noqa: E402
from lab.naming import lab_dir  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.docker,
              pytest.mark.skipif(shutil.which("ovn-northd") is None,
                                 reason="OVN is not installed (./dev bench installs it)")]


def test_vs_ovn_runs_at_smoke_size(tmp_path):
    results, _ = run_benchmarks(["vs-ovn"], "smoke", out=tmp_path / "vs-ovn.json", echo=False)
    (r,) = results
    assert r.error is None, f"{r.error}\n{r.details.get('traceback')}"
    names = [f.name for f in r.figures]
    for prefix in ("T1 REST connect -> first ping vs OVN", "T1 REST connect -> first ping vs "
                   "script", "T2 loris connect", "T2 loris pods", "T4 DHCP connect",
                   "OVN bind -> first ping", "agent CPU per connect", "flows per host per port"):
        assert any(n.startswith(prefix) for n in names), (prefix, names)
    for f in r.figures:
        assert f.value is not None and f.value > 0 and f.baseline and f.baseline > 0, f
    verdicts = r.details["targets"]
    assert set(verdicts) == set(TARGETS)
    assert verdicts[3][1] is None              # one size: flatness is not measured
    assert all(verdicts[n][1] in (True, False) for n in (1, 2, 4))
    assert r.details["ovn"]["encap"] == "vxlan"
    for prefix in (r.details["ovn"]["prefix"], r.details["ovn"]["loris_prefix"]):
        assert not lab_dir(prefix).exists()


def test_an_ovn_lab_that_does_not_get_ready_is_built_once_more(monkeypatch, capsys):
    from bench.ovn import NotReady, OvnLab

    real, calls = OvnLab.wait_ready, []

    def once_not_ready(self, timeout: float = 60.0) -> None:
        calls.append(self.lab.prefix)
        if len(calls) == 1:
            raise NotReady(f"OVN lab {self.lab.prefix} not ready (test)")
        real(self, timeout)

    monkeypatch.setattr(OvnLab, "wait_ready", once_not_ready)
    ovn = OvnLab(hosts=2, docker=False)
    with ovn:
        assert len(calls) == 2 and calls[0] != calls[1] == ovn.lab.prefix
        assert not lab_dir(calls[0]).exists()           # the first one is torn down
        assert "building it again" in capsys.readouterr().err

    def never_ready(self, timeout: float = 60.0) -> None:
        calls.append(self.lab.prefix)
        raise NotReady("never ready (test)")

    calls.clear()
    monkeypatch.setattr(OvnLab, "wait_ready", never_ready)
    with pytest.raises(NotReady):                       # twice: raised, nothing left
        OvnLab(hosts=2, docker=False).up()
    assert len(calls) == 2 and not any(lab_dir(p).exists() for p in calls)
