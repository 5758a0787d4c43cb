"""The CLI's commands that act on this host: `loris init` (bridges, patch ports, the
OpenFlow target) and `loris cleanup` (everything Loris made here, and deregistration).

hostprep (and through it netlink) is imported inside the commands, so that the controller
commands do not pay for pyroute2."""

from __future__ import annotations

import argparse

from flows import contract
from hostagent import lock
from hostagent.cli.common import CliError, operator_client, print_json
from hostagent.client import ApiError, ControllerUnreachable
from hostagent.local import ovs_from_args


def cmd_init(args: argparse.Namespace) -> int:
    from hostagent import hostprep

    ovs = ovs_from_args(args.ovsdb, args.ovs_rundir)
    target = args.openflow
    if not target and args.controller_given:
        target = f"tcp:{operator_client(args).controller_ip()}:{contract.DEFAULT_OPENFLOW_PORT}"
    patch = hostprep.prepare_host(ovs, args.host, target)
    dpids = contract.dpids(args.host)
    out = {"host": args.host, "datapath_type": hostprep.datapath_type(),
           "bridges": {b: {"dpid": f"0x{contract.dpid_hex(d)}", "patch_ofport": patch[b]}
                       for b, d in dpids.items()},
           "openflow": target}  # fmt: skip
    if args.json:
        print_json(out)
    else:
        print(f"host {args.host} ready: br-int 0x{contract.dpid_hex(dpids['br-int'])}, "
              f"br-tun 0x{contract.dpid_hex(dpids['br-tun'])} ({hostprep.datapath_type()} datapath)"
              + (f", controller {target}" if target else ""))  # fmt: skip
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    from hostagent import hostprep

    ovs = ovs_from_args(args.ovsdb, args.ovs_rundir)
    running = lock.holder(ovs)
    if running:
        raise CliError(f"{running}: stop it first, it would re-create at once what cleanup "
                       "removes")  # fmt: skip
    client = operator_client(args)
    deregistered, unreachable = "", ""
    try:
        client.delete_host(args.host)
        deregistered = f"host {args.host} deregistered"
    except ApiError as e:
        if e.status != 404:
            raise
        deregistered = f"host {args.host} was not registered"
    except ControllerUnreachable as e:
        unreachable = str(e)
    report = hostprep.cleanup_host(ovs)
    local = (f"removed bridges {', '.join(report.bridges) or 'none'}, "
             f"{len(report.veths)} container veth(s)")  # fmt: skip
    if args.json:
        print_json({"host": args.host, "bridges": report.bridges, "veths": report.veths,
                    "deregistered": bool(deregistered)})  # fmt: skip
    if not deregistered:
        raise CliError(f"cleaned up locally ({local}) but NOT deregistered: {unreachable}; "
                       "run `loris cleanup` again once the controller is back")  # fmt: skip
    if not args.json:
        print(f"{deregistered}; {local}")
    return 0
