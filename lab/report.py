"""What a failed test needs to be understood: logs, OVS state and flows of every host."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lab.command import run

if TYPE_CHECKING:
    from lab.core import Lab
    from lab.ovs import OvsClient


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"({exc})"
    return "\n".join(text.splitlines()[-lines:])


def _safe(fn) -> str:
    try:
        return fn()
    except Exception as exc:  # a report must not fail because one piece is broken
        return f"({type(exc).__name__}: {exc})"


def _flows(ovs: OvsClient, bridge: str) -> str:
    argv = ["ovs-ofctl", "--timeout=5", "dump-flows", bridge]
    res = run(argv[:2] + ["-O", "OpenFlow13"] + argv[2:], check=False, env=ovs.env, timeout=10)
    if res.returncode != 0:  # a bridge that does not speak 1.3
        res = run(argv, check=False, env=ovs.env, timeout=10)
    return res.stdout + res.stderr


def lab_report(lab: Lab, tail: int = 60) -> str:
    out = [f"lab {lab.prefix}: {len(lab.hosts)} hosts, {lab.tunnel}, {lab.datapath_type} "
           f"datapath, state {lab.state}, run dir {lab.dir}"]

    def section(title: str, body: str) -> None:
        out.append(f"===== {title} =====")
        out.append(body.rstrip() or "(empty)")

    for name, proc in sorted(lab.processes.items()):
        if name.endswith(("-ovsdb-server", "-ovs-vswitchd")) or name.startswith("capture-"):
            continue  # OVS logs follow per host; captures have no useful log
        status = "running" if proc.alive else f"exited with {proc.returncode}"
        section(f"process {name} (pid {proc.pid}, {status}), last {tail} log lines",
                proc.log_tail(tail))
    for c in lab.containers.values():
        out.append(f"container {c.name} ({c.kind}) on {c.host.name}")
    quick = 5  # seconds: a report must not hang on a dead or wedged daemon
    for h in lab.hosts:
        ovs = lab.ovs(h)
        daemons = {d: lab.processes.get(f"{h.name}-{d}") for d in ("ovsdb-server",
                                                                     "ovs-vswitchd")}
        dead = [d for d, p in daemons.items() if p is None or not p.alive]
        if dead:
            out.append(f"{h.name}: NOT RUNNING: {', '.join(dead)}")
        if "ovsdb-server" not in dead:
            section(f"{h.name}: ovs-vsctl show", _safe(lambda o=ovs: o.show(timeout=quick)))
        if not dead:
            bridges = _safe(lambda o=ovs: o.bridges(timeout=quick))
            for br in bridges if isinstance(bridges, list) else []:
                section(f"{h.name}: flows of {br}", _safe(lambda o=ovs, b=br: _flows(o, b)))
            section(f"{h.name}: ovs-appctl ovs/route/show",
                    _safe(lambda o=ovs: o.routes(timeout=quick)))
            section(f"{h.name}: ovs-appctl tnl/arp/show",
                    _safe(lambda o=ovs: o.appctl("tnl/arp/show", timeout=quick)))
        section(f"{h.name}: ip addr",
                _safe(lambda h=h: run(["ip", "-n", h.netns, "-br", "addr"], check=False).stdout))
        for log in ("ovs-vswitchd.log", "ovsdb-server.log"):
            section(f"{h.name}: {log}, last {tail} lines", _tail(h.rundir / log, tail))
    return "\n".join(out)
