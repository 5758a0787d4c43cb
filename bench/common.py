"""What every benchmark shares: figures, ratios, percentiles, the machine's conditions, the
table and the JSON file.

A benchmark returns a `Result`: its figures, each a value measured against a baseline in the
same run (absolute times on a shared machine are noise; the ratio is the figure), plus raw
details for the JSON file.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
SIZES = ("smoke", "full")


@dataclass
class Figure:
    """One measured quantity against its same-run baseline.

    `ratio` = value / baseline (a time: below 1 is better; a rate: above 1 is better).
    `target` is the goal for that ratio, e.g. ("<=", 1.0); `met` says whether this run
    reached it (None: no target)."""
    name: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: tuple[str, float] | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    @property
    def met(self) -> bool | None:
        r = self.ratio
        if self.target is None or r is None:
            return None
        op, limit = self.target
        if op == "<=":
            return r <= limit
        if op == ">=":
            return r >= limit
        raise ValueError(f"target operator must be '<=' or '>=', not {op!r}")

    @property
    def target_text(self) -> str:
        return "" if self.target is None else f"{self.target[0]} {self.target[1]:g}"

    def to_json(self) -> dict:
        out = asdict(self)
        out.update(ratio=self.ratio, met=self.met)
        return out


@dataclass
class Result:
    benchmark: str
    size: str
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    def add(self, *figures: Figure) -> None:
        self.figures.extend(figures)

    def to_json(self) -> dict:
        return {"benchmark": self.benchmark, "size": self.size, "seconds": self.seconds,
                "error": self.error, "figures": [f.to_json() for f in self.figures],
                "details": self.details}


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


# ---- the machine --------------------------------------------------------------------------

def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.splitlines()[0].strip() if out.strip() else "unknown"


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return m.group(1).strip() if m else platform.processor() or "unknown"


def conditions() -> dict[str, Any]:
    """What the figures depend on: where and when they were measured."""
    try:
        osken = version("os-ken")
    except PackageNotFoundError:
        osken = "unknown"
    load = os.getloadavg()
    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(), "cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in load],
        "kernel": platform.release(),
        "ovs": _first_line(["ovs-vswitchd", "--version"]),
        "os_ken": osken, "python": platform.python_version(),
        "git": _first_line(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"]),
    }


# ---- output ------------------------------------------------------------------------------

def _num(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    if isinstance(x, int) or (abs(x) >= 100 and float(x).is_integer()):
        text = f"{int(x):,}"
    elif abs(x) >= 100:
        text = f"{x:,.0f}"
    elif abs(x) >= 10:
        text = f"{x:.1f}"
    else:
        text = f"{x:.3g}"
    return f"{text} {unit}".strip()


def table_rows(results: Iterable[Result]) -> list[list[str]]:
    rows = []
    for r in results:
        if r.error:
            rows.append([r.benchmark, f"FAILED: {r.error}", "", "", "", "", ""])
            continue
        for f in r.figures:
            met = "" if f.met is None else ("yes" if f.met else "NO")
            ratio_text = "-" if f.ratio is None else f"{f.ratio:.2f}"
            base = _num(f.baseline, f.unit)
            if f.baseline_name and f.baseline is not None:
                base = f"{base} ({f.baseline_name})"
            rows.append([r.benchmark, f.name, _num(f.value, f.unit), base, ratio_text,
                         f.target_text, met])
    return rows


HEADER = ["benchmark", "figure", "Loris", "baseline", "ratio", "target", "met"]


def format_table(results: Iterable[Result], markdown: bool = False) -> str:
    rows = table_rows(results)
    if markdown:
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(HEADER)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*HEADER), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row) for row in rows]
    return "\n".join(lines)


def format_conditions(cond: dict[str, Any]) -> str:
    load = " ".join(str(x) for x in cond.get("load_average", []))
    return (f"{cond['date']} | {cond['cpu']}, {cond['cores']} cores, load {load} | "
            f"kernel {cond['kernel']} | {cond['ovs']} | os-ken {cond['os_ken']} | "
            f"git {cond['git']}")


def write_json(results: Sequence[Result], size: str, before: dict, after: dict,
               path: Path | None = None) -> Path:
    """bench/results/<UTC date and time>.json unless `path` is given."""
    if path is None:
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H%M%SZ")
        path = RESULTS_DIR / f"{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"size": size, "conditions": before, "conditions_after": after,
           "results": [r.to_json() for r in results]}
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return path
