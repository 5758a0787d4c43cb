"""Find and remove what a lab left behind, by its prefix only.

What belongs to lab `<prefix>`:
- namespaces `/run/netns/<prefix>-*`;
- Docker containers labelled `loris-lab=<prefix>`;
- the run directory `/run/loris-lab/<prefix>/`;
- processes: those recorded in `<run dir>/procs/*.json` (pid and start time both match),
  those named in `<run dir>/**/*.pid` whose command line mentions the run directory, and
  every process whose network namespace is one of the lab's namespaces, and every process
  in a cgroup `<prefix>-*` (the containers of the hosts' own dockerds, lab/hostdocker.py),
  whose cgroups are then removed.
Never by process name.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

from lab import procs
from lab.command import run
from lab.hostdocker import cgroup_pids, remove_cgroups
from lab.naming import DOCKER_LABEL, NETNS_DIR, NETNS_RE, PREFIX_RE, RUN_ROOT, lab_dir

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def lab_namespaces(prefix: str) -> list[str]:
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix + "-") and NETNS_RE.match(n))


def namespace_inodes(names: list[str]) -> dict[int, str]:
    inodes = {}
    for name in names:
        try:
            inodes[os.stat(NETNS_DIR / name).st_ino] = name
        except OSError:
            pass
    return inodes


def read_info(prefix: str) -> dict | None:
    try:
        return json.loads((lab_dir(prefix) / "lab.json").read_text())
    except (OSError, ValueError):
        return None


def owner_alive(info: dict | None) -> bool:
    """True if the process that owns the lab (e.g. a running pytest) is still running."""
    owner = (info or {}).get("owner")
    if not owner:
        return False
    return procs.same_process(owner["pid"], owner["starttime"])


def docker_client():
    """A Docker client, or None if there is no engine to ask."""
    try:
        import docker

        client = docker.from_env(timeout=30)
        client.ping()
        return client
    except Exception:
        return None


def docker_containers(client, prefix: str | None = None) -> list:
    if client is None:
        return []
    label = DOCKER_LABEL if prefix is None else f"{DOCKER_LABEL}={prefix}"
    return client.containers.list(all=True, filters={"label": label})


def find_prefixes(client=None) -> set[str]:
    """Every lab prefix with something left on this machine."""
    found: set[str] = set()
    if RUN_ROOT.is_dir():
        found.update(p for p in os.listdir(RUN_ROOT) if PREFIX_RE.match(p))
    if NETNS_DIR.is_dir():
        for name in os.listdir(NETNS_DIR):
            m = NETNS_RE.match(name)
            if m:
                found.add(m.group(1))
    for c in docker_containers(client):
        prefix = c.labels.get(DOCKER_LABEL, "")
        if PREFIX_RE.match(prefix):
            found.add(prefix)
    return found


def lab_processes(prefix: str) -> dict[int, str]:
    """pid -> why it belongs to the lab, for every running process of lab `prefix`."""
    found: dict[int, str] = {}
    root = lab_dir(prefix)
    for rec in procs.read_records(root):
        if procs.same_process(rec["pid"], rec.get("starttime")):
            found[rec["pid"]] = f"started by the lab as {rec['name']}"
    for pidfile in root.glob("**/*.pid"):
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if procs.running(pid) and str(root) + "/" in procs.cmdline(pid):
            found.setdefault(pid, f"pidfile {pidfile}")
    for group in lab_cgroups(prefix):
        for pid in cgroup_pids(group):
            found.setdefault(pid, f"in cgroup {group}")
    inodes = namespace_inodes(lab_namespaces(prefix))
    if inodes:
        me = os.getpid()
        for pid in procs.all_pids():
            if pid == me:
                continue
            ino = procs.netns_inode(pid)
            if ino in inodes and procs.running(pid):
                found.setdefault(pid, f"in namespace {inodes[ino]}")
    return found


def lab_cgroups(prefix: str) -> list[str]:
    """Cgroup names `<prefix>-*` (the cgroup parents of the hosts' dockerds)."""
    try:
        return sorted(n for n in os.listdir("/sys/fs/cgroup/pids")
                      if n.startswith(prefix + "-"))
    except OSError:
        return []


@dataclass
class CleanupReport:
    prefix: str
    processes: list[int] = field(default_factory=list)
    survivors: list[int] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    run_dir: bool = False
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{len(self.processes)} processes", f"{len(self.containers)} containers",
                 f"{len(self.namespaces)} namespaces",
                 "run dir" if self.run_dir else "no run dir"]
        text = f"{self.prefix}: removed " + ", ".join(parts)
        if self.survivors:
            text += f"; STILL RUNNING: {self.survivors}"
        if self.errors:
            text += "; errors: " + "; ".join(self.errors)
        return text


def cleanup_prefix(prefix: str, client=None, log: Log = _quiet) -> CleanupReport:
    """Remove everything of lab `prefix`: processes, containers, namespaces, run dir."""
    if not PREFIX_RE.match(prefix):
        raise ValueError(f"{prefix!r} is not a lab prefix (lrs + 6 hex digits, e.g. lrs1a2b3c)")
    report = CleanupReport(prefix)
    root = lab_dir(prefix)
    # Processes first: they hold namespaces and files.
    found = lab_processes(prefix)
    for pid, why in sorted(found.items()):
        log(f"{prefix}: ending pid {pid} ({why}): {procs.cmdline(pid)[:120]}")
    report.processes = sorted(found)
    report.survivors = procs.terminate(found)
    # Processes recorded by a dead lab owner may have been adopted by us (if we are a
    # subreaper); reap those. Our own children are reaped by their Popen objects.
    me = os.getpid()
    procs.reap(r["pid"] for r in procs.read_records(root) if r.get("spawner") != me)

    if client is None:
        client = docker_client()
    for c in docker_containers(client, prefix):
        log(f"{prefix}: removing Docker container {c.name}")
        try:
            c.remove(force=True, v=True)
            report.containers.append(c.name)
        except Exception as exc:  # keep going: the rest must still be removed
            report.errors.append(f"container {c.name}: {exc}")

    for group in lab_cgroups(prefix):
        for left in remove_cgroups(group):
            report.errors.append(f"cgroup {left} could not be removed")

    for ns in lab_namespaces(prefix):
        log(f"{prefix}: deleting namespace {ns}")
        res = run(["ip", "netns", "del", ns], check=False)
        if res.returncode == 0:
            report.namespaces.append(ns)
        else:
            report.errors.append(f"namespace {ns}: {res.stderr.strip()}")

    if root.exists():
        log(f"{prefix}: removing {root}")
        shutil.rmtree(root, ignore_errors=True)
        report.run_dir = True
        if root.exists():
            report.errors.append(f"could not remove {root}")
    return report


def cleanup_all(force: bool = False, log: Log = _quiet) -> list[CleanupReport]:
    """Remove every lab's leftovers. Labs whose owner (the process that built them, e.g. a
    running test session) is still alive are kept unless `force`."""
    client = docker_client()
    reports = []
    for prefix in sorted(find_prefixes(client)):
        info = read_info(prefix)
        if not force and owner_alive(info):
            owner = info["owner"]["pid"]
            log(f"{prefix}: kept, its owner pid {owner} is running (use --force, or "
                f"`loris-lab down {prefix}`)")
            continue
        reports.append(cleanup_prefix(prefix, client, log))
    return reports
