"""The CLI's pod commands (operator token needed):

    loris pod create NAME [--subnet CIDR] [--id N]   a new pod (id: the lowest free one)
    loris pod show POD                               a pod and its members
    loris pod delete POD [--force]                   refused while it has members, unless
                                                     --force (which disconnects them)
    loris pods                                       every pod (commands.cmd_pods)

POD is a pod's name or its id (flows/contract.POD_NAME: a name starts with a letter).
"""

from __future__ import annotations

import argparse

from flows import contract
from hostagent.cli.common import CliError, operator_client, parse_pod, print_json
from hostagent.cli.output import ports_table
from hostagent.client import ApiError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hostagent.cli.parser import Commands

USAGE = ("loris pod create NAME [--subnet CIDR] [--id N] | loris pod show POD | "
         "loris pod delete POD [--force]")


def add_parsers(cmds: Commands, common: argparse.ArgumentParser) -> None:
    cmds.add("pod", "create, show or delete a pod (by name or id)",
             lambda s: _define(s, common), usage=USAGE)


def _define(s: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    pod_sub = s.add_subparsers(dest="pod_command", required=True, metavar="POD_COMMAND")
    s = pod_sub.add_parser("create", parents=[common], help="create a pod")
    s.add_argument("name", help="the pod's name: 1-63 letters, digits, '_', '.', '-', "
                                "starting with a letter")
    s.add_argument("--subnet", metavar="CIDR", help="its IPv4 subnet, e.g. 10.1.0.0/24 "
                                                    "(needed for DHCP)")
    s.add_argument("--id", dest="pod_id", metavar="N",
                   help=f"its number 1..{contract.MAX_POD_ID} (default: the lowest free one; "
                        "the tunnel key is N + 1)")
    s.set_defaults(func=cmd_pod_create)
    s = pod_sub.add_parser("show", parents=[common], help="a pod and its members")
    s.add_argument("pod", help="name or id")
    s.set_defaults(func=cmd_pod_show)
    s = pod_sub.add_parser("delete", parents=[common], help="delete a pod")
    s.add_argument("pod", help="name or id")
    s.add_argument("--force", action="store_true",
                   help="also disconnect its members (else a pod with members is refused)")
    s.set_defaults(func=cmd_pod_delete)


def pod_name_argument(text: str) -> str:
    """NAME of `loris pod create`: a pod name, never a number."""
    if contract.POD_NAME.matches(text):
        return text
    if text.isascii() and text.isdigit():
        raise CliError(f"{text} is a number, and a pod name starts with a letter: give a name, "
                       f"and --id {text} to choose the pod's number")
    raise CliError(contract.POD_NAME.error(text))


def pod_id_argument(text: str | None) -> int | None:
    """--id N: 1..MAX_POD_ID (0 is the global pod, which always exists)."""
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= contract.MAX_POD_ID:
        raise CliError(f"--id {text!r} is not a pod id: use a number 1..{contract.MAX_POD_ID} "
                       "(0 is the global pod), or leave it out to get the lowest free one")
    return int(text)


def describe(pod: dict) -> str:
    """One line: `pod red (id 7, tunnel key 8, subnet 10.1.0.0/24, DHCP server 10.1.0.1)`."""
    parts = [f"id {pod['id']}", f"tunnel key {pod.get('tunnel_key')}"]
    if pod.get("subnet"):
        parts.append(f"subnet {pod['subnet']}")
        if pod.get("dhcp_server"):
            parts.append(f"DHCP server {pod['dhcp_server']['ip']}")
    else:
        parts.append("no subnet")
    return f"pod {pod.get('name')} ({', '.join(parts)})"


def cmd_pod_create(args: argparse.Namespace) -> int:
    name = pod_name_argument(args.name)
    pod_id = pod_id_argument(args.pod_id)
    pod = operator_client(args).create_pod(name=name, pod_id=pod_id, subnet=args.subnet)
    if args.json:
        print_json(pod)
    else:
        print(f"created {describe(pod)}")
    return 0


def _existing(client: object, ref: int | str) -> dict:
    try:
        return client.pod(ref)
    except ApiError as e:
        if e.status == 404:
            raise CliError(f"pod {ref} does not exist (`loris pods` lists them; "
                           f"`loris pod create NAME` makes one)") from None
        raise


def cmd_pod_show(args: argparse.Namespace) -> int:
    ref = parse_pod(args.pod)
    pod = _existing(operator_client(args), ref)
    if args.json:
        print_json(pod)
        return 0
    print(describe(pod))
    members = pod.get("members") or []
    print(ports_table(members) if members else "no members")
    return 0


def cmd_pod_delete(args: argparse.Namespace) -> int:
    ref = parse_pod(args.pod)
    client = operator_client(args)
    pod = _existing(client, ref)
    members = pod.get("members") or []
    if members and not args.force:
        shown = ", ".join(f"{m['container']} on {m['host']}" for m in members[:5])
        more = f" and {len(members) - 5} more" if len(members) > 5 else ""
        raise CliError(f"pod {pod['name']} ({pod['id']}) still has {len(members)} member(s): "
                       f"{shown}{more}; disconnect them (loris disconnect CONTAINER "
                       f"{pod['name']}) or add --force to disconnect them with the pod")
    client.delete_pod(ref, force=args.force)       # by what the user named
    if args.json:
        print_json({"deleted": pod})
    else:
        gone = f", disconnected {len(members)} member(s)" if members else ""
        print(f"deleted pod {pod['name']} ({pod['id']}){gone}")
    return 0
