"""The CLI's observability commands: `loris trace`, `loris ports --stats` and `loris resync`
(`loris token --metrics` is with the other token commands, safety_commands.py).

`loris trace` asks the controller (POST /v1/trace), which traces the flows it reads from
the switches; when the command runs on a host whose switch a leg starts on (the source
container's host), it also runs `ovs-appctl ofproto/trace` there and says whether the
switch agrees (hostagent/ofproto_trace.py)."""

from __future__ import annotations

import argparse
import ipaddress

from hostagent.cli import commands
from hostagent.cli.common import CliError, operator_client, parse_pod, print_json
from hostagent.cli.trace_output import ports_stats_table, trace_text

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hostagent.cli.parser import Commands


def trace_body(args: argparse.Namespace) -> dict:
    """The POST /v1/trace body from the command line."""
    protocol = ("tcp" if args.tcp is not None else "udp" if args.udp is not None else
                "arp" if args.arp else "dhcp" if args.dhcp else "icmp")
    body: dict = {"source": args.src, "protocol": protocol}
    if args.dst is None and protocol != "dhcp":
        raise CliError("name the destination: a container or an IP address")
    if args.dst is not None:
        try:
            body["destination_ip"] = str(ipaddress.IPv4Address(args.dst))
        except ValueError:
            body["destination"] = args.dst
    if protocol in ("tcp", "udp"):
        body["port"] = args.tcp if protocol == "tcp" else args.udp
    for name in ("source_host", "destination_host", "source_mac", "source_ip"):
        if getattr(args, name):
            body[name] = getattr(args, name)
    return body


def cmd_trace(args: argparse.Namespace) -> int:
    result = operator_client(args).request("POST", "/v1/trace", trace_body(args))
    checks = [] if args.no_switch else switch_checks(args, result)
    if args.json:
        print_json(dict(result, switch=checks))
    else:
        print(trace_text(result, checks))
    return 0


def switch_checks(args: argparse.Namespace, result: dict) -> list[dict]:
    """ofproto/trace on this host for every leg that starts here, compared with the
    controller's trace of it; a note when no leg starts here."""
    mine = [leg for leg in result["legs"] if leg["host"] == args.host and leg.get("on_host")]
    if not mine:
        hosts = sorted({leg["host"] for leg in result["legs"]})
        return [{"leg": None, "agrees": None, "problems": [], "text":
                 f"ofproto/trace not run: this is {args.host}, the packets start on "
                 f"{', '.join(hosts)} (run loris trace there to ask the switch too)"}]
    # Only here does the CLI need OVS (subprocess): not at start-up (parser.py)
    from hostagent import ofproto_trace
    from hostagent.local import ovs_from_args
    from hostagent.ovs import OvsError

    ovs = ovs_from_args(args.ovsdb, args.ovs_rundir)
    try:
        odp = ofproto_trace.odp_ports(ovs.appctl("dpif/show"))
    except OvsError as e:
        return [{"leg": None, "agrees": None, "problems": [str(e)],
                 "text": f"ofproto/trace not run on {args.host}: {e}"}]
    out = []
    for leg in mine:
        spec = leg["ofproto_trace"]
        try:
            switch = ofproto_trace.parse(ovs.appctl("ofproto/trace", spec["bridge"],
                                                    spec["flow"]))
        except OvsError as e:
            out.append({"leg": leg["name"], "agrees": None, "problems": [str(e)],
                        "text": f"ofproto/trace on {args.host} ({leg['name']}) failed: {e}"})
            continue
        problems = ofproto_trace.compare(leg["on_host"], switch, odp)
        text = (f"ofproto/trace on {args.host} agrees ({leg['name']}: {switch.actions})"
                if not problems else
                f"ofproto/trace on {args.host} DISAGREES ({leg['name']}): "
                + "; ".join(problems))
        out.append({"leg": leg["name"], "agrees": not problems, "problems": problems,
                    "actions": switch.actions, "text": text})
    return out


def cmd_ports(args: argparse.Namespace) -> int:
    if not args.stats:
        return commands.cmd_ports(args)
    ports = operator_client(args).ports(pod=parse_pod(args.pod), host=args.filter_host,
                                        stats="true")
    if args.json:
        print_json(ports)
    else:
        print(ports_stats_table(ports))
    return 0


def cmd_resync(args: argparse.Namespace) -> int:
    host = args.target_host or args.host
    operator_client(args).request("POST", f"/v1/hosts/{host}/resync", timeout=120)
    if args.json:
        print_json({"host": host, "resynced": True})
    else:
        print(f"host {host}: both bridges reconciled with the controller's flows")
    return 0


def add_parsers(cmds: Commands, common: argparse.ArgumentParser,
                ovs_opts: argparse.ArgumentParser) -> None:
    cmds.add("trace", "follow a packet through the installed flows; why A cannot reach B",
             _trace, parents=[common, ovs_opts])
    cmds.add("resync", "reconcile a host's bridges with the controller's flows", _resync,
             parents=[common])


def _trace(s: argparse.ArgumentParser) -> None:
    s.add_argument("src", metavar="SRC", help="the sending container (as connected)")
    s.add_argument("dst", metavar="DST", nargs="?", help="a container, or an IP address")
    what = s.add_mutually_exclusive_group()
    what.add_argument("--icmp", action="store_true", help="an ICMP echo (the default)")
    what.add_argument("--tcp", type=_port, metavar="PORT", help="a TCP SYN to PORT")
    what.add_argument("--udp", type=_port, metavar="PORT", help="a UDP datagram to PORT")
    what.add_argument("--arp", action="store_true", help="only SRC's ARP request for DST")
    what.add_argument("--dhcp", action="store_true", help="SRC's DHCP request (no DST)")
    s.add_argument("--source-host", help="SRC's host, when SRC is connected on several")
    s.add_argument("--destination-host", help="DST's host, when DST is connected on several")
    s.add_argument("--source-mac", help="send from this MAC (what if SRC spoofed it)")
    s.add_argument("--source-ip", help="send from this IP (what if SRC spoofed it)")
    s.add_argument("--no-switch", action="store_true",
                   help="do not run ovs-appctl ofproto/trace on this host")
    s.set_defaults(func=cmd_trace)


def _resync(s: argparse.ArgumentParser) -> None:
    s.add_argument("target_host", metavar="HOST", nargs="?", help="default: this host")
    s.set_defaults(func=cmd_resync)


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number 1..65535")
    return int(text)
