"""`loris-lab`: bring a lab up for hands-on work, list labs, remove them (also leftovers)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

from lab import cleanup, procs
from lab.command import LabError
from lab.core import Lab
from lab.naming import MAX_HOSTS, PREFIX_RE, TUNNEL_TYPES, lab_dir


def cmd_up(args: argparse.Namespace) -> int:
    lab = Lab(hosts=args.hosts, tunnel=args.tunnel, docker=not args.no_docker)
    lab.up()
    if args.plain_mesh:
        lab.plain_mesh()
    print(lab.describe(), flush=True)
    if args.detach:
        lab.detach()
        print(f"left up (detached); remove with: loris-lab down {lab.prefix}\n"
              "note: its daemons are orphans now; where PID 1 does not reap (some containers)\n"
              "they remain as zombies after `down`. The foreground mode avoids that.")
        return 0
    print("keeping the lab up until Ctrl-C (or SIGTERM); `--detach` leaves it up instead",
          flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    # Also end when someone ran `loris-lab down <prefix>` from another shell.
    while not stop.wait(1.0):
        if not lab.dir.exists():
            print(f"lab {lab.prefix} was removed from elsewhere")
            for p in lab.processes.values():
                p.popen.poll()  # reap our children, or they linger as zombies
            return 0
    print(f"tearing down {lab.prefix} ...", flush=True)
    lab.down()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    client = cleanup.docker_client()
    prefixes = sorted(cleanup.find_prefixes(client))
    if not prefixes:
        print("no labs")
        return 0
    for prefix in prefixes:
        info = cleanup.read_info(prefix) or {}
        owner = info.get("owner")
        if owner is None:
            who = "detached" if info else "no lab.json (leftover)"
        elif cleanup.owner_alive(info):
            who = f"owner pid {owner['pid']} running"
        else:
            who = f"owner pid {owner['pid']} gone (leftover)"
        age = f"{(time.time() - info['created']) / 60:.0f} min old" if "created" in info else ""
        print(f"{prefix}: {info.get('hosts', '?')} hosts, {info.get('tunnel', '?')}, "
              f"state {info.get('state', '?')}, {who} {age}".rstrip())
        ns = cleanup.lab_namespaces(prefix)
        containers = [c.name for c in cleanup.docker_containers(client, prefix)]
        found = cleanup.lab_processes(prefix)
        print(f"  namespaces: {' '.join(ns) or '-'}")
        print(f"  docker containers: {' '.join(containers) or '-'}")
        print(f"  processes: {len(found)}")
        for pid in sorted(found):
            print(f"    {pid}: {procs.cmdline(pid)[:100]}")
        if lab_dir(prefix).exists():
            print(f"  run dir: {lab_dir(prefix)}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    if bool(args.all) == bool(args.prefixes):
        print("loris-lab down: give lab prefixes (see `loris-lab status`) or --all",
              file=sys.stderr)
        return 2
    bad = [p for p in args.prefixes if not PREFIX_RE.match(p)]
    if bad:
        print(f"loris-lab down: {', '.join(bad)}: not a lab prefix (lrs + 6 hex digits, "
              "see `loris-lab status`)", file=sys.stderr)
        return 2

    def say(message: str) -> None:
        if args.verbose or "kept" in message:
            print(message)

    if args.all:
        reports = cleanup.cleanup_all(force=args.force, log=say)
    else:
        client = cleanup.docker_client()
        reports = [cleanup.cleanup_prefix(p, client, say) for p in args.prefixes]
    failed = False
    for report in reports:
        print(report.summary())
        failed |= bool(report.survivors or report.errors)
    if not reports:
        print("nothing to remove")
    return 1 if failed else 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="loris-lab", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="bring a lab up and keep it up")
    up.add_argument("--hosts", type=int, default=3, help=f"number of hosts (1-{MAX_HOSTS})")
    up.add_argument("--tunnel", choices=TUNNEL_TYPES, default="vxlan")
    up.add_argument("--no-docker", action="store_true", help="no Docker engine needed")
    up.add_argument("--plain-mesh", action="store_true",
                    help="also build the plain br-int mesh (baseline without Loris)")
    up.add_argument("--detach", action="store_true",
                    help="exit and leave the lab up (remove it with `loris-lab down`)")
    up.set_defaults(func=cmd_up)
    st = sub.add_parser("status", help="list labs and what they hold")
    st.set_defaults(func=cmd_status)
    down = sub.add_parser("down", help="remove labs, also after a crash or interrupt")
    down.add_argument("prefixes", nargs="*", metavar="PREFIX")
    down.add_argument("--all", action="store_true",
                      help="every lab whose owner process is gone (detached labs too)")
    down.add_argument("--force", action="store_true",
                      help="with --all: also labs whose owner (e.g. a test run) is running")
    down.add_argument("-v", "--verbose", action="store_true")
    down.set_defaults(func=cmd_down)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (LabError, ValueError) as exc:
        print(f"loris-lab: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
