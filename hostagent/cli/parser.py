"""The `loris` command line: every command, its arguments and the function that runs it.

The commands that act on this host (`init`, `cleanup`: OVS, netlink, the agent's lock) and
the `pki` ones are imported only when they run (`_command`): a command that only talks to
the controller loads neither `subprocess` nor OVS's modules (the CLI's start-up,
docs/benchmarks.md; tests/unit/test_cli_imports.py)."""

from __future__ import annotations

import argparse
from importlib import import_module

from hostagent import pki
from hostagent.cli import (
    commands,
    ha_commands,
    observe_commands,
    pod_commands,
    safety_commands,
)
from hostagent.client import DEFAULT_OPERATOR_TOKEN_FILE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

DESCRIPTION = ("`loris`: prepare a host and manage container networking through the Loris "
               "controller.")


def _command(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """The function `name` of hostagent/cli/<module>.py, imported when the command runs."""

    def run(args: argparse.Namespace) -> int:
        return getattr(import_module(f"hostagent.cli.{module}"), name)(args)

    run.__name__ = run.__qualname__ = name
    return run


def _common_options() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """(options of every controller command, options naming this host's Open vSwitch)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--controller", help="controller REST URL, or several separated by "
                        "commas (LORIS_CONTROLLER; "
                        "default http://127.0.0.1:8780)")  # fmt: skip
    common.add_argument("--host", help="this host's id (LORIS_HOST; default the hostname)")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("--token-file", help="operator token file (LORIS_TOKEN_FILE, or the "
                        f"token in LORIS_TOKEN; default {DEFAULT_OPERATOR_TOKEN_FILE})")
    common.add_argument("--ca-cert", help="CA certificate to verify an https controller "
                        "(LORIS_CA_CERT)")  # fmt: skip
    ovs_opts = argparse.ArgumentParser(add_help=False)
    ovs_opts.add_argument("--ovsdb", help="OVSDB socket, e.g. unix:/run/openvswitch/db.sock "
                          "(LORIS_OVSDB)")  # fmt: skip
    ovs_opts.add_argument("--ovs-rundir", help="OVS run directory (LORIS_OVS_RUNDIR)")
    return common, ovs_opts


def build_parser() -> argparse.ArgumentParser:
    common, ovs_opts = _common_options()
    p = argparse.ArgumentParser(prog="loris", description=DESCRIPTION)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("init", parents=[common, ovs_opts],
                       help="prepare this host: bridges br-int/br-tun and patch ports")
    s.add_argument("--openflow", help="OpenFlow controller target (default: the controller's "
                   "address, port 6653, when --controller/LORIS_CONTROLLER is set)")
    s.set_defaults(func=_command("host_commands", "cmd_init"))
    s = sub.add_parser("cluster", parents=[common],
                       help="show the cluster, or wait until hosts are registered and meshed")
    s.add_argument("ips", nargs="*", metavar="IP", help="tunnel IPs of the hosts to wait for")
    s.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    s.set_defaults(func=commands.cmd_cluster)
    s = sub.add_parser("connect", parents=[common], help="connect a container to a pod")
    s.add_argument("container", help="Docker name or id, or netns:NAME")
    s.add_argument("ip", help="A.B.C.D/len, or dhcp")
    s.add_argument("pod", nargs="?", help="pod name or id (default 0, the global pod); a "
                   "name must exist (loris pod create NAME), a number is created if need be")
    s.add_argument("--mac", help="MAC address (default: chosen by the controller)")
    s.add_argument("--timeout", type=float, default=commands.CONNECT_TIMEOUT_S)
    s.set_defaults(func=commands.cmd_connect)
    s = sub.add_parser("disconnect", parents=[common],
                       help="disconnect a container from a pod (default: from all its pods)")
    s.add_argument("container")
    s.add_argument("pod", nargs="?", help="pod name or id (default: every pod)")
    s.set_defaults(func=commands.cmd_disconnect)
    s = sub.add_parser("cleanup", parents=[common, ovs_opts],
                       help="remove everything Loris made on this host; deregister it")
    s.set_defaults(func=_command("host_commands", "cmd_cleanup"))
    s = sub.add_parser("status", parents=[common], help="hosts, tunnels, OpenFlow state")
    s.set_defaults(func=commands.cmd_status)
    s = sub.add_parser("pods", parents=[common], help="list pods")
    s.set_defaults(func=commands.cmd_pods)
    s = sub.add_parser("ports", parents=[common], help="list container ports")
    s.add_argument("--pod", help="only this pod (name or id)")
    s.add_argument("--on-host", dest="filter_host", help="only ports of this host")
    s.add_argument("--stats", action="store_true", help="packets and bytes each port sent, "
                   "received and had dropped by its port security")
    s.set_defaults(func=observe_commands.cmd_ports)
    # ---- pods by name: pod create, pod show, pod delete (pod_commands.py) ------------------
    pod_commands.add_parsers(sub, common)
    # ---- credentials and the audit trail: token, tokens, events (safety_commands.py) ----
    safety_commands.add_parsers(sub, common)
    # ---- observability: trace, resync (observe_commands.py) ------------------------------
    observe_commands.add_parsers(sub, common, ovs_opts)
    # ---- several controllers: controllers (ha_commands.py) -----------------------------
    ha_commands.add_parsers(sub, common)
    _add_pki(sub)
    return p


def _add_pki(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("pki", help="make certificates for TLS (CA, controller, hosts)")
    pki_sub = s.add_subparsers(dest="pki_command", required=True, metavar="PKI_COMMAND")
    days = argparse.ArgumentParser(add_help=False)
    days.add_argument("--days", type=int, default=pki.DAYS, help="validity (default %(default)s)")
    days.add_argument("--json", action="store_true", help="machine-readable output")
    s = pki_sub.add_parser("init", parents=[days], help="new CA, controller and host certificates")
    s.add_argument("dir", help="directory for the files (must not hold a CA yet)")
    s.add_argument("--controller-ip", action="append", default=[], metavar="IP",
                   help="an address clients use to reach the controller (repeatable)")
    s.add_argument("--controller-name", action="append", default=[], metavar="NAME",
                   help="a DNS name of the controller (repeatable)")
    s.add_argument("--host", dest="hosts", action="append", default=[], metavar="ID",
                   help="a host to make a switch certificate for (repeatable)")
    s.set_defaults(func=_command("pki_commands", "cmd_pki_init"))
    s = pki_sub.add_parser("host", parents=[days], help="switch certificates for more hosts")
    s.add_argument("dir", help="the directory of `loris pki init`")
    s.add_argument("hosts", nargs="+", metavar="ID")
    s.set_defaults(func=_command("pki_commands", "cmd_pki_host"))
