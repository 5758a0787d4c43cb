"""`loris-hostagent --apply FILE`: one reconcile pass from a file, without a controller
(troubleshooting, tests)."""

from __future__ import annotations

import argparse
import json
import sys

from hostagent import hostprep
from hostagent.containers import Runtimes
from hostagent.local import ovs_from_args
from hostagent.ovs import OvsError
from hostagent.reconcile import Reconciler


def apply_once(args: argparse.Namespace, host_id: str) -> int:
    """One reconcile pass from a file, without a controller."""
    try:
        with (sys.stdin if args.apply == "-" else open(args.apply)) as f:
            desired = json.load(f)
    except (OSError, ValueError) as e:
        print(f"loris-hostagent: cannot read desired state {args.apply}: {e}", file=sys.stderr)
        return 2
    tunnel_ip = args.tunnel_ip or (desired.get("host") or {}).get("tunnel_ip")
    if not tunnel_ip:
        print("loris-hostagent: --apply needs --tunnel-ip (or host.tunnel_ip in the file)",
              file=sys.stderr)  # fmt: skip
        return 2
    ovs = ovs_from_args(args.ovsdb, args.ovs_rundir)
    gone: list[int] = []
    reconciler = Reconciler(
        ovs, Runtimes(args.docker_url), host_id, tunnel_ip, args.tunnel_type,
        args.container_ifname, on_container_gone=gone.append,
    )  # fmt: skip
    try:
        hostprep.prepare_host(ovs, host_id, args.openflow)
        actual = reconciler.apply(desired)
    except OvsError as e:
        print(f"loris-hostagent: OVS: {e}", file=sys.stderr)
        return 1
    if gone:
        actual["containers_gone"] = gone  # what the daemon would DELETE at the controller
    print(json.dumps(actual, indent=2, sort_keys=True))
    return 0
