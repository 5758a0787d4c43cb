"""Runs the benchmarks: `python -m bench [name ...] [--size smoke|full] [--out FILE]`.

Every benchmark module has `run(size, session) -> Result`. The session lends the big lab
(1,000 ports on 5 hosts in a full run) to the benchmarks that need it, so it is built once:
`connect` grows it (and times that), `footprint` reads how it grew, `resync` restarts its
controller and an agent (last, since it disturbs it).
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from bench.common import Result, conditions, format_conditions, format_table, write_json

# in the order a full run takes them
BENCHMARKS = {
    "flows": "bench.bench_flows",
    "programming": "bench.bench_programming",
    "incremental": "bench.bench_incremental",
    "datapath": "bench.bench_datapath",
    "connect": "bench.bench_connect",
    "footprint": "bench.bench_footprint",
    "resync": "bench.bench_resync",
    "docker": "bench.bench_docker",
    "ha": "bench.bench_ha",
}
# run only when named: they need more than ./dev installs (OVN: `./dev bench` installs it)
# and take their own labs
BY_NAME_ONLY = {
    "vs-ovn": "bench.bench_vs_ovn",
}
BULK_HOSTS = {"full": 5, "smoke": 3}


class Session:
    """What benchmarks of one run share: the bulk lab, built on first use."""

    def __init__(self, size: str, ports: Sequence[int] | None = None,
                 trials: int | None = None, parts: Sequence[str] | None = None) -> None:
        self.size = size
        self._bulk = None
        # overrides of a benchmark's sizes (`--ports`, `--trials`); those that take them say so
        self.ports = tuple(ports) if ports else None
        self.trials = trials
        # `--parts`: the parts of a benchmark made of several (ha's); None: all of them
        self.parts = frozenset(parts) if parts else None

    def bulk_lab(self, hosts: int | None = None):
        from bench.loris import LorisLab

        if self._bulk is None:
            self._bulk = LorisLab(hosts or BULK_HOSTS[self.size], docker=True).up()
            self._bulk.idle = {"rss_mib": self._bulk.controller_rss(),
                               "cpu_s": self._bulk.controller_cpu()}
        return self._bulk

    def close(self) -> None:
        if self._bulk is not None:
            bulk, self._bulk = self._bulk, None
            bulk.down()


def run_benchmarks(names: Sequence[str], size: str, out: Path | None = None,
                   echo: bool = True, ports: Sequence[int] | None = None,
                   trials: int | None = None,
                   parts: Sequence[str] | None = None) -> tuple[list[Result], Path]:
    known = {**BENCHMARKS, **BY_NAME_ONLY}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(known)}")
    if size not in BULK_HOSTS:
        raise ValueError(f"size must be one of {sorted(BULK_HOSTS)}, got {size!r}")
    order = [n for n in known if n in names]
    before = conditions()
    session = Session(size, ports, trials, parts)
    results: list[Result] = []
    try:
        for name in order:
            if echo:
                print(f"== {name} ({size})", flush=True)
            module = importlib.import_module(known[name])
            t0 = time.monotonic()
            try:
                result = module.run(size, session)
            except Exception as e:
                result = Result(name, size, error=f"{type(e).__name__}: {e}")
                result.details["traceback"] = traceback.format_exc()
                if echo:
                    print(result.details["traceback"], file=sys.stderr, flush=True)
            result.seconds = time.monotonic() - t0
            results.append(result)
            if echo:
                print(format_table([result]), flush=True)
                print(f"({result.seconds:.0f} s)\n", flush=True)
    finally:
        session.close()
    after = conditions()
    path = write_json(results, size, before, after, out)
    if echo:
        print(f"Loris benchmarks, size {size}: {format_conditions(before)}")
        print(format_table(results))
        print(f"\nfigures written to {path}")
    return results, path


def _port_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give sizes as N,N,... e.g. 10,200") \
            from None
    if not sizes or any(n < 1 for n in sizes) or list(sizes) != sorted(set(sizes)):
        raise argparse.ArgumentTypeError(f"{text!r}: sizes must be positive and increasing")
    return sizes


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Loris benchmarks, each figure a ratio against a "
        "baseline measured in the same run (docs/benchmarks.md). Needs root, OVS, Docker.")
    parser.add_argument("names", nargs="*", metavar="name",
                        help=f"benchmarks to run (default all of {', '.join(BENCHMARKS)}); "
                             f"run only when named: {', '.join(BY_NAME_ONLY)}")
    parser.add_argument("--size", choices=sorted(BULK_HOSTS), default="full",
                        help="full (the documented figures, ~20 min) or smoke (tiny, seconds)")
    parser.add_argument("--out", type=Path, help="JSON file (default bench/results/<date>.json)")
    parser.add_argument("--ports", type=_port_sizes, metavar="N,N,...",
                        help="network sizes for vs-ovn instead of the size's (e.g. 10,200: "
                             "a quicker run)")
    parser.add_argument("--trials", type=int, metavar="N",
                        help="connects per way and network size for vs-ovn (default 50 full)")
    parser.add_argument("--parts", type=lambda t: [p for p in t.split(",") if p],
                        metavar="P,P,...",
                        help="only these parts of a benchmark made of several (ha: connect, "
                             "footprint, failover, scale)")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    args = parser.parse_args(argv)
    # SIGTERM ends the run like Ctrl-C: the labs are torn down on the way out
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        results, _ = run_benchmarks(args.names or list(BENCHMARKS), args.size, args.out,
                                    ports=args.ports, trials=args.trials, parts=args.parts)
    except ValueError as e:
        parser.error(str(e))
    if args.markdown:
        print()
        print(format_table(results, markdown=True))
    return 1 if any(r.error for r in results) else 0
