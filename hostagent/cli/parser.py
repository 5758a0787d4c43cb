"""The `loris` command line: every command, its arguments and the function that runs it.

Start-up (docs/benchmarks.md; tests/unit/test_cli_imports.py): argparse makes a parser per
command and looks up a translation of each of its messages in the locale directories, which
costs more than the rest of the parsing. So only the command being run gets a parser
(`Commands`); `loris --help`, `loris -h COMMAND` and an unknown command get every one, for
the list of commands they show. The commands that act on this host (`init`, `cleanup`: OVS,
netlink, the agent's lock) and the `pki` ones are imported only when they run (`_command`):
a command that only talks to the controller loads neither `subprocess` nor OVS's modules."""

from __future__ import annotations

import argparse
from importlib import import_module

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
    from typing import Any

DESCRIPTION = ("`loris`: prepare a host and manage container networking through the Loris "
               "controller.")


class Commands:
    """The sub-commands of `loris`, as they are added: a command gets its parser (arguments
    and function) only when it is `only`, or when `only` is None (all of them)."""

    def __init__(self, sub: argparse._SubParsersAction, only: str | None = None) -> None:
        self._sub = sub
        self.only = only
        self.defined = 0

    def add(self, name: str, help: str,
            define: Callable[[argparse.ArgumentParser], object], **options: Any) -> None:
        """`loris NAME`: `help` for `loris --help`; `define(parser)` adds its arguments and
        function; `options` (parents, usage) are argparse's."""
        if self.only is None or name == self.only:
            define(self._sub.add_parser(name, help=help, **options))
            self.defined += 1


def _command(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """The function `name` of hostagent/cli/<module>.py, imported when the command runs."""

    def run(args: argparse.Namespace) -> int:
        return getattr(import_module(f"hostagent.cli.{module}"), name)(args)

    run.__name__ = run.__qualname__ = name
    return run


def command_word(argv: list[str]) -> str | None:
    """The command `argv` runs: its first word, unless that is an option (`loris` itself
    takes none but -h, whose help lists every command), else None."""
    return argv[0] if argv and not argv[0].startswith("-") else None


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


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line, with only the command `only` (None, or a word that is no command:
    every command; see the module docstring)."""
    common, ovs_opts = _common_options()
    p = argparse.ArgumentParser(prog="loris", description=DESCRIPTION)
    cmds = Commands(p.add_subparsers(dest="command", required=True, metavar="COMMAND"), only)
    cmds.add("init", "prepare this host: bridges br-int/br-tun and patch ports", _init,
             parents=[common, ovs_opts])
    cmds.add("cluster", "show the cluster, or wait until hosts are registered and meshed",
             _cluster, parents=[common])
    cmds.add("connect", "connect a container to a pod", _connect, parents=[common])
    cmds.add("disconnect", "disconnect a container from a pod (default: from all its pods)",
             _disconnect, parents=[common])
    cmds.add("cleanup", "remove everything Loris made on this host; deregister it",
             lambda s: s.set_defaults(func=_command("host_commands", "cmd_cleanup")),
             parents=[common, ovs_opts])
    cmds.add("status", "hosts, tunnels, OpenFlow state",
             lambda s: s.set_defaults(func=commands.cmd_status), parents=[common])
    cmds.add("pods", "list pods", lambda s: s.set_defaults(func=commands.cmd_pods),
             parents=[common])
    cmds.add("ports", "list container ports", _ports, parents=[common])
    # ---- pods by name: pod create, pod show, pod delete (pod_commands.py) ------------------
    pod_commands.add_parsers(cmds, common)
    # ---- credentials and the audit trail: token, tokens, events (safety_commands.py) ----
    safety_commands.add_parsers(cmds, common)
    # ---- observability: trace, resync (observe_commands.py) ------------------------------
    observe_commands.add_parsers(cmds, common, ovs_opts)
    # ---- several controllers: controllers (ha_commands.py) -----------------------------
    ha_commands.add_parsers(cmds, common)
    cmds.add("pki", "make certificates for TLS (CA, controller, hosts)", _pki)
    if not cmds.defined:
        return build_parser(None)
    return p


def _init(s: argparse.ArgumentParser) -> None:
    s.add_argument("--openflow", help="OpenFlow controller target (default: the controller's "
                   "address, port 6653, when --controller/LORIS_CONTROLLER is set)")
    s.set_defaults(func=_command("host_commands", "cmd_init"))


def _cluster(s: argparse.ArgumentParser) -> None:
    s.add_argument("ips", nargs="*", metavar="IP", help="tunnel IPs of the hosts to wait for")
    s.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    s.set_defaults(func=commands.cmd_cluster)


def _connect(s: argparse.ArgumentParser) -> None:
    s.add_argument("container", help="Docker name or id, or netns:NAME")
    s.add_argument("ip", help="A.B.C.D/len, or dhcp")
    s.add_argument("pod", nargs="?", help="pod name or id (default 0, the global pod); a "
                   "name must exist (loris pod create NAME), a number is created if need be")
    s.add_argument("--mac", help="MAC address (default: chosen by the controller)")
    s.add_argument("--timeout", type=float, default=commands.CONNECT_TIMEOUT_S)
    s.set_defaults(func=commands.cmd_connect)


def _disconnect(s: argparse.ArgumentParser) -> None:
    s.add_argument("container")
    s.add_argument("pod", nargs="?", help="pod name or id (default: every pod)")
    s.set_defaults(func=commands.cmd_disconnect)


def _ports(s: argparse.ArgumentParser) -> None:
    s.add_argument("--pod", help="only this pod (name or id)")
    s.add_argument("--on-host", dest="filter_host", help="only ports of this host")
    s.add_argument("--stats", action="store_true", help="packets and bytes each port sent, "
                   "received and had dropped by its port security")
    s.set_defaults(func=observe_commands.cmd_ports)


def _pki(s: argparse.ArgumentParser) -> None:
    from hostagent import pki  # its default validity; pki.py and pathlib only for `loris pki`

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
