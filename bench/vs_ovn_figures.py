"""The figures of the Loris-vs-OVN benchmark (bench/bench_vs_ovn.py) from its samples: each
target of issue #12 as a ratio against a baseline of the same run. Pure: no lab.

A figure whose name starts with `T<n> ` counts towards target n; a target is met when every
one of its figures that has a target met it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from bench.common import Figure, Result, median, percentile

CONNECT_VS_OVN = 1.0       # target 1: REST connect <= OVN's bind (and <= the script)
CLI_VS_REST = 1.15         # target 2: `loris connect` <= 1.15 x REST
CLI_VS_PYTHON = 3.0        #           `loris pods` / `loris ports` <= 3 x `python -c pass`
FLAT_P50, FLAT_P95 = 1.25, 1.5   # target 3: the largest size against the smallest
DHCP_VS_STATIC = 1.5       # target 4: DHCP connect -> lease <= 1.5 x a static connect
TARGETS = {
    1: "REST connect -> first ping <= 1.0x OVN's bind -> first ping, and <= 1.0x the script, "
       "p50 and p95, at every size",
    2: "loris connect -> first ping <= 1.15x REST at every size; loris pods / loris ports "
       "<= 3x python -c pass",
    3: "flat: REST p50 at the largest size <= 1.25x at the smallest, p95 <= 1.5x; agent CPU "
       "per connect not growing (<= 1.25x)",
    4: "DHCP connect -> lease <= 1.5x a static connect, p50 and p95",
}
_TARGET_RE = re.compile(r"^T(\d) ")

Samples = Sequence[tuple[float, float | None]]


def replies(rows: Samples) -> list[float]:
    """Seconds to the first reply of the trials that got one."""
    return [b for _, b in rows if b is not None]


def calls(rows: Samples) -> list[float]:
    """Seconds until the call returned."""
    return [a for a, _ in rows]


def _lost_note(rows: Mapping[str, Samples]) -> str:
    lost = {k: sum(1 for _, b in v if b is None) for k, v in rows.items() if k != "dhcp"}
    return "".join(f"; {k}: {v} without reply" for k, v in lost.items() if v)


def _pair(prefix: str, title: str, value: Sequence[float], base: Sequence[float],
          base_name: str, limit95: float | None, limit50: float | None,
          note: str = "") -> list[Figure]:
    """p50 and p95 of `value` against those of `base`, in ms."""
    return [Figure(f"{prefix}{title}, p50", median(value) * 1e3, "ms", median(base) * 1e3,
                   f"{base_name} p50", None if limit50 is None else ("<=", limit50), note=note),
            Figure(f"{prefix}{title}, p95", percentile(value, 95) * 1e3, "ms",
                   percentile(base, 95) * 1e3, f"{base_name} p95",
                   None if limit95 is None else ("<=", limit95))]


def size_figures(n: int, d: Mapping) -> list[Figure]:
    """Every figure measured at one network size `n` (ports in bulk)."""
    rows = d["rows"]
    rest, cli = replies(rows["rest"]), replies(rows["cli"])
    script, ovn = replies(rows["script"]), replies(rows["ovn"])
    at = f", {n:,} ports"
    trials = len(rows["rest"])
    out = _pair("T1 ", f"REST connect -> first ping vs OVN{at}", rest, ovn,
                "OVN bind -> first ping", CONNECT_VS_OVN, CONNECT_VS_OVN,
                note=f"{trials} of each" + _lost_note(rows))
    out += _pair("T1 ", f"REST connect -> first ping vs script{at}", rest, script,
                 "script", CONNECT_VS_OVN, CONNECT_VS_OVN)
    out += _pair("T2 ", f"loris connect -> first ping{at}", cli, rest, "REST",
                 CLI_VS_REST, CLI_VS_REST)
    cmds = d["cli_commands"]
    for cmd in ("pods", "ports"):
        out.append(Figure(f"T2 loris {cmd}, p50{at}", median(cmds[cmd]) * 1e3, "ms",
                          median(cmds["python"]) * 1e3, "python -c pass p50",
                          ("<=", CLI_VS_PYTHON), note=f"{len(cmds[cmd])} runs each"))
    out += _pair("T4 ", f"DHCP connect -> lease{at}", calls(rows["dhcp"]), calls(rows["rest"]),
                 "static connect (REST call)", DHCP_VS_STATIC, DHCP_VS_STATIC)
    out += _pair("", f"OVN bind -> first ping vs script{at}", ovn, script, "script",
                 None, None)
    out.append(Figure(f"agent CPU per connect (h2){at}", d["agent_cpu_ms_per_connect"], "ms",
                      d["ovn_controller_cpu_ms_per_bind"], "ovn-controller per bind (h2)",
                      note="each with its disconnect and the background of those minutes"))
    fpp = d["flows_per_host_per_port"]
    ports = d["ports_in_network"]
    out.append(Figure(f"flows per host per port in the network{at}", fpp["loris"], "",
                      fpp["ovn"], "OVN",
                      note=f"{ports['loris']:,} Loris ports, {ports['ovn']:,} OVN ports"))
    g = d["growth"]
    if g.get("loris") and g.get("ovn"):
        out.append(Figure(f"adding bulk ports {g['loris']['from']:,} -> {g['loris']['to']:,}",
                          g["loris"]["connect_s"], "s", g["ovn"]["connect_s"],
                          "OVN: batched nbctl + one ovs-vsctl per host",
                          note="Loris: REST, many at a time; namespaces not counted"))
    return out


def flat_figures(data: Mapping[int, Mapping]) -> list[Figure]:
    """Target 3: the largest size against the smallest."""
    sizes = sorted(data)
    if len(sizes) < 2:
        return []
    small, big = data[sizes[0]], data[sizes[-1]]
    rest_big, rest_small = replies(big["rows"]["rest"]), replies(small["rows"]["rest"])
    return [
        Figure(f"T3 REST connect -> first ping p50 at {sizes[-1]:,} ports vs at {sizes[0]:,}",
               median(rest_big) * 1e3, "ms", median(rest_small) * 1e3,
               f"p50 at {sizes[0]:,}", ("<=", FLAT_P50)),
        Figure(f"T3 REST connect -> first ping p95 at {sizes[-1]:,} ports vs at {sizes[0]:,}",
               percentile(rest_big, 95) * 1e3, "ms", percentile(rest_small, 95) * 1e3,
               f"p95 at {sizes[0]:,}", ("<=", FLAT_P95)),
        Figure(f"T3 agent CPU per connect at {sizes[-1]:,} ports vs at {sizes[0]:,}",
               big["agent_cpu_ms_per_connect"], "ms", small["agent_cpu_ms_per_connect"],
               f"at {sizes[0]:,}", ("<=", FLAT_P50),
               note="OVN's ovn-controller: "
                    f"{small['ovn_controller_cpu_ms_per_bind']:.0f} -> "
                    f"{big['ovn_controller_cpu_ms_per_bind']:.0f} ms per bind"),
    ]


def figures(result: Result, data: Mapping[int, Mapping]) -> None:
    for n in sorted(data):
        result.add(*size_figures(n, data[n]))
    result.add(*flat_figures(data))


def targets_summary(result: Result) -> dict[int, tuple[str, bool | None]]:
    """Per target: (what it asks, met by every figure of it / None if none measured it)."""
    verdicts: dict[int, list[bool]] = {n: [] for n in TARGETS}
    for f in result.figures:
        m = _TARGET_RE.match(f.name)
        if m and f.met is not None:
            verdicts.setdefault(int(m.group(1)), []).append(f.met)
    return {n: (TARGETS[n], all(v) if v else None) for n, v in verdicts.items()}
