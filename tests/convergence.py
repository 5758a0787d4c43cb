"""Whether a lab holds exactly what the controller's store says (docs/operations.md,
"Failures and what Loris promises"): no veth, no OVS port, no flow of a port that does not
exist, every port fully wired, and a consistent database. Used after faults and soaks.

Import as `from convergence import ...` (tests/ is on sys.path, see helpers.py).
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
from collections.abc import Iterator

from helpers import cookie_of, loris_flows

from flows import Kind, contract
from lab import Lab

CONVERGE_S = 30                # how long the agents and switches get to converge


@contextlib.contextmanager
def read_store(lab: Lab) -> Iterator[sqlite3.Connection]:
    """The controller's SQLite file, read-only, beside the running controller."""
    conn = sqlite3.connect(f"file:{lab.dir / 'loris.db'}?mode=ro", uri=True, timeout=10)
    try:
        yield conn
    finally:
        conn.close()


def lp_veths(lab: Lab, host: str) -> set[str]:
    """Container veths (lp<id>) on the host."""
    out = lab.run(host, ["ip", "-o", "link", "show", "type", "veth"]).stdout
    return {m for m in re.findall(r"^\d+: ([^:@]+)", out, re.M) if m.startswith("lp")}


def lp_ovs_ports(lab: Lab, host: str) -> dict[str, int | None]:
    """Container ports (lp<id>) in the host's OVS: name -> ofport, in one read."""
    out = lab.ovs(host).vsctl("--format=csv", "--no-headings", "--columns=name,ofport",
                              "list", "Interface")
    rows = [line.split(",") for line in out.split()]
    return {name: int(ofport) if ofport.lstrip("-").isdigit() else None
            for name, ofport in rows if name.startswith("lp")}


def db_problems(lab: Lab) -> list[str]:
    """Integrity, foreign keys, local VLANs exactly for the (host, pod) pairs with ports."""
    with read_store(lab) as conn:
        problems = []
        integrity = conn.execute("PRAGMA integrity_check").fetchall()
        if integrity != [("ok",)]:
            problems.append(f"integrity_check: {integrity}")
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            problems.append("the store is not in WAL mode")
        dangling = conn.execute("PRAGMA foreign_key_check").fetchall()
        if dangling:
            problems.append(f"dangling rows: {dangling}")
        orphans = conn.execute("SELECT id FROM ports WHERE pod_id NOT IN (SELECT id FROM pods)"
                               " OR host_id NOT IN (SELECT id FROM hosts)").fetchall()
        if orphans:
            problems.append(f"ports without their pod or host: {orphans}")
        vlans = set(conn.execute("SELECT host_id, pod_id FROM local_vlans").fetchall())
        used = set(conn.execute("SELECT DISTINCT host_id, pod_id FROM ports").fetchall())
        if vlans != used:
            problems.append(f"local VLANs {sorted(vlans)} != (host, pod) with ports "
                            f"{sorted(used)}")
        return problems


def residue(lab: Lab) -> list[str]:
    """Everything on the hosts that the controller's store does not account for, and every
    port of the store that is not fully wired. Empty when converged."""
    status, ports = lab.api("GET", "/v1/ports")
    assert status == 200, ports
    problems = db_problems(lab)
    ids = {p["id"] for p in ports}
    macs = {p["mac"] for p in ports}
    by_host = {h.name: {p["id"]: p for p in ports if p["host"] == h.name} for h in lab.hosts}
    pods_on = {h: {p["pod"] for p in mine.values()} for h, mine in by_host.items()}
    for h in lab.hosts:
        mine = by_host[h.name]
        want = {f"lp{i}" for i in mine}
        veths, ovs_ports = lp_veths(lab, h.name), lp_ovs_ports(lab, h.name)
        if veths != want:
            problems.append(f"{h.name}: veths {sorted(veths)}, store wants {sorted(want)}")
        if set(ovs_ports) != want:
            problems.append(f"{h.name}: OVS ports {sorted(ovs_ports)}, store wants "
                            f"{sorted(want)}")
        port_flows: set[int] = set()
        for bridge in contract.BRIDGES:
            for f in loris_flows(lab, h.name, bridge):
                kind, obj, _ = cookie_of(f) or (None, None, None)
                if kind in (Kind.PORT, Kind.MEMBER) and obj not in ids:
                    problems.append(f"{h.name} {bridge}: flow of port {obj}, which does not "
                                    f"exist: {f}")
                if kind == Kind.POD and obj not in pods_on[h.name]:
                    problems.append(f"{h.name} {bridge}: flow of pod {obj}, which has no port "
                                    f"on {h.name}: {f}")
                stray = {m for m in re.findall(r"02(?::[0-9a-f]{2}){5}", f) if m not in macs}
                if stray:
                    problems.append(f"{h.name} {bridge}: flow with unknown MAC {stray}: {f}")
                if kind == Kind.PORT:
                    port_flows.add(obj)
        for i, p in mine.items():
            if p["state"] != "active" or p["error"]:
                problems.append(f"port {i} is {p['state']} {p['error'] or ''}")
            elif ovs_ports.get(f"lp{i}") != p["ofport"]:
                problems.append(f"port {i}: ofport {p['ofport']} in the store, "
                                f"{ovs_ports.get(f'lp{i}')} on {h.name}")
            elif i not in port_flows:
                problems.append(f"port {i} has no flows on {h.name}")
    return problems


def assert_converged(lab: Lab, timeout: float = CONVERGE_S) -> None:
    """Within `timeout`, the hosts hold exactly what the store says, fully wired."""
    deadline = time.monotonic() + timeout
    while True:
        problems = residue(lab)
        if not problems:
            return
        assert time.monotonic() < deadline, \
            f"not converged within {timeout:g}s:\n" + "\n".join(problems[:30])
        time.sleep(0.5)
