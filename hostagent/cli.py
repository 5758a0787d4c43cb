"""`loris`: prepare a host and manage container networking through the Loris controller.

Every command prints a one-line reason on stderr and exits non-zero when it fails.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass

from flows import contract
from hostagent import hostprep, lock, pki
from hostagent.agent import default_host_id, ovs_from_args
from hostagent.client import (
    DEFAULT_OPERATOR_TOKEN_FILE,
    ApiError,
    Client,
    ControllerUnreachable,
    controller_url,
    token_file_from,
)
from hostagent.containers import ContainerError, Runtimes, matches
from hostagent.ovs import OvsError
from hostagent.tables import ago, table

CONNECT_TIMEOUT_S = 90.0
PROBE_TIMEOUT_S = 5.0  # a controller that is up answers /v1/health in milliseconds


class CliError(Exception):
    """A failure to report as one line on stderr."""


# ------------------------------------------------------------------ pure helpers
@dataclass
class MeshState:
    unregistered: list[str]  # tunnel IPs nobody registered with
    missing: list[tuple[str, str]]  # (host, peer) pairs without a tunnel ofport

    @property
    def complete(self) -> bool:
        return not self.unregistered and not self.missing

    def describe(self) -> str:
        parts = []
        if self.unregistered:
            parts.append("not registered: " + ", ".join(self.unregistered))
        if self.missing:
            parts.append("tunnels missing: " + ", ".join(f"{a}->{b}" for a, b in self.missing))
        return "; ".join(parts) or "fully meshed"


def mesh_state(hosts: list[dict], tunnel_ips: Iterable[str], self_id: str | None) -> MeshState:
    """Are the hosts with these tunnel IPs (and this host) registered and fully meshed?"""
    by_ip = {h.get("tunnel_ip"): h for h in hosts}
    by_id = {h["id"]: h for h in hosts}
    unregistered = [ip for ip in tunnel_ips if ip not in by_ip]
    members = [by_ip[ip] for ip in tunnel_ips if ip in by_ip]
    if self_id:
        if self_id in by_id:
            if by_id[self_id] not in members:
                members.append(by_id[self_id])
        else:
            unregistered.append(f"{self_id} (this host)")
    missing = []
    for h in members:
        up = {t["peer"] for t in h.get("tunnels") or [] if t.get("ofport")}
        for peer in members:
            if peer["id"] != h["id"] and peer["id"] not in up:
                missing.append((h["id"], peer["id"]))
    return MeshState(unregistered=unregistered, missing=missing)


def parse_pod(text: str | None) -> int | None:
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()) or int(text) > contract.MAX_POD_ID:
        raise CliError(f"pod {text!r} is not a pod id: use a number 0..{contract.MAX_POD_ID} "
                       "(0 is the global pod)")  # fmt: skip
    return int(text)


def check_ip_argument(text: str) -> str:
    """Catch the obvious typos before asking the controller (which checks everything)."""
    if text.lower() == "dhcp":
        return "dhcp"
    try:
        ipaddress.IPv4Interface(text)
    except ValueError:
        raise CliError(f"{text!r} is not an address like 198.18.135.5/24, nor 'dhcp'") from None
    if "/" not in text:
        raise CliError(f"{text!r} needs a prefix length, e.g. {text}/24")
    return text


def port_address(port: dict) -> str:
    return port.get("lease") or port.get("ip") or "-"


# ------------------------------------------------------------------ commands
def _client(args: argparse.Namespace) -> Client:
    """A client with the operator's credentials: --token-file, LORIS_TOKEN_FILE, LORIS_TOKEN,
    else the controller's own token file when run on the controller machine."""
    return Client(args.controller, token_file=token_file_from(
        args.token_file, DEFAULT_OPERATOR_TOKEN_FILE), ca_cert=args.ca_cert)


def cmd_token(args: argparse.Namespace) -> int:
    if not contract.HOST_ID.matches(args.for_host):
        raise CliError(f"invalid host id {args.for_host!r}: use 1-63 letters, digits, '_', '.', "
                       "'-'")  # fmt: skip
    reply = _client(args).agent_token(args.for_host)
    if args.json:
        _print_json(reply)
    else:
        print(reply["token"])
    return 0


def cmd_pki_init(args: argparse.Namespace) -> int:
    made = pki.init(args.dir, args.controller_ip, args.controller_name, args.hosts, args.days)
    return _print_made(args, made)


def cmd_pki_host(args: argparse.Namespace) -> int:
    return _print_made(args, pki.add_hosts(args.dir, args.hosts, args.days))


def _print_made(args: argparse.Namespace, made: list) -> int:
    if args.json:
        _print_json([str(p) for p in made])
    else:
        for p in made:
            print(p)
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    ovs = ovs_from_args(args.ovsdb, args.ovs_rundir)
    target = args.openflow
    if not target and args.controller_given:
        target = f"tcp:{_client(args).controller_ip()}:{contract.DEFAULT_OPENFLOW_PORT}"
    patch = hostprep.prepare_host(ovs, args.host, target)
    dpids = contract.dpids(args.host)
    out = {"host": args.host, "datapath_type": hostprep.datapath_type(),
           "bridges": {b: {"dpid": f"0x{contract.dpid_hex(d)}", "patch_ofport": patch[b]}
                       for b, d in dpids.items()},
           "openflow": target}  # fmt: skip
    if args.json:
        _print_json(out)
    else:
        print(f"host {args.host} ready: br-int 0x{contract.dpid_hex(dpids['br-int'])}, "
              f"br-tun 0x{contract.dpid_hex(dpids['br-tun'])} ({hostprep.datapath_type()} datapath)"
              + (f", controller {target}" if target else ""))  # fmt: skip
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    ovs = ovs_from_args(args.ovsdb, args.ovs_rundir)
    running = lock.holder(ovs)
    if running:
        raise CliError(f"{running}: stop it first, it would re-create at once what cleanup "
                       "removes")  # fmt: skip
    client = _client(args)
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
        _print_json({"host": args.host, "bridges": report.bridges, "veths": report.veths,
                     "deregistered": bool(deregistered)})  # fmt: skip
    if not deregistered:
        raise CliError(f"cleaned up locally ({local}) but NOT deregistered: {unreachable}; "
                       "run `loris cleanup` again once the controller is back")  # fmt: skip
    if not args.json:
        print(f"{deregistered}; {local}")
    return 0


def cmd_cluster(args: argparse.Namespace) -> int:
    client = _client(args)
    for ip in args.ips:
        try:
            ipaddress.IPv4Address(ip)
        except ValueError:
            raise CliError(f"{ip!r} is not an IPv4 address (give the tunnel IPs of the hosts)") \
                from None
    if not args.ips:
        hosts = client.hosts()
        if args.json:
            _print_json(hosts)
        else:
            print(hosts_table(hosts))
            print()
            print(tunnels_table(hosts))
        return 0
    deadline = time.monotonic() + args.timeout
    last = None
    while True:
        hosts = client.hosts()
        state = mesh_state(hosts, args.ips, args.host)
        if state.complete:
            break
        if state.describe() != last and not args.json:
            # Progress goes to stdout: stderr carries only the one-line failure reason.
            last = state.describe()
            print(f"waiting: {last}", flush=True)
        if time.monotonic() >= deadline:
            raise CliError(f"cluster not ready after {args.timeout:g}s: {state.describe()}")
        time.sleep(0.5)
    members = sorted({h["id"] for h in hosts if h.get("tunnel_ip") in args.ips} | {args.host})
    if args.json:
        _print_json({"members": members, "hosts": [h for h in hosts if h["id"] in members]})
    else:
        print(f"cluster ready: {len(members)} hosts fully meshed ({', '.join(members)})")
    return 0


def _answering(client: Client) -> None:
    """Fail fast on a controller that is stopped or hung: it still accepts TCP connections
    (the kernel does), so a connect would wait CONNECT_TIMEOUT_S for nothing, and the request
    would sit in the socket queue and be carried out when the controller runs again,
    after we reported a failure. A short health probe first avoids both."""
    try:
        client.request("GET", "/v1/health", timeout=PROBE_TIMEOUT_S)
    except ControllerUnreachable as e:
        if "timed out" not in str(e):
            raise
        raise CliError(f"controller {client.base_url} is not answering (no reply within "
                       f"{PROBE_TIMEOUT_S:g} s; is it stopped or overloaded?); nothing was "
                       "changed") from None


def cmd_connect(args: argparse.Namespace) -> int:
    client = _client(args)
    _answering(client)
    body: dict = {"host": args.host, "container": args.container,
                  "ip": check_ip_argument(args.ip)}  # fmt: skip
    pod = parse_pod(args.pod)
    if pod is not None:
        body["pod"] = pod
    if args.mac:
        body["mac"] = args.mac
    port = client.create_port(body, timeout=args.timeout)
    if args.json:
        _print_json(port)
    else:
        print(f"{args.container} connected to pod {port.get('pod', pod or 0)}: "
              f"ip {port_address(port)} mac {port.get('mac')} "
              f"(port {port.get('id')} on {port.get('host', args.host)})")  # fmt: skip
    return 0


def cmd_disconnect(args: argparse.Namespace) -> int:
    client = _client(args)
    _answering(client)
    pod = parse_pod(args.pod)
    ports = client.ports(host=args.host, pod=pod)
    mine = [p for p in ports if _designates(args.container, p["container"])]
    where = f" to pod {pod}" if pod is not None else ""
    if not mine:
        raise CliError(f"container {args.container} is not connected{where} on host {args.host}")
    gone = []
    for p in mine:
        try:
            client.delete_port(int(p["id"]))
        except ApiError as e:
            if e.status != 404:
                raise
        gone.append(p)
    if args.json:
        _print_json(gone)
    else:
        for p in gone:
            print(f"{args.container} disconnected from pod {p.get('pod')} "
                  f"({port_address(p)}, port {p['id']})")  # fmt: skip
    return 0


def _designates(given: str, stored: str) -> bool:
    """Whether the user's reference and the port's stored one are the same container."""
    if given == stored:
        return True
    if given.startswith("netns:") or stored.startswith("netns:"):
        return False
    try:
        info = Runtimes()._inspect(given)
    except ContainerError:
        return False
    return info is not None and matches(stored, info["Id"], info["Name"].lstrip("/"))


def cmd_status(args: argparse.Namespace) -> int:
    hosts = _client(args).hosts()
    if args.json:
        _print_json(hosts)
        return 0
    print(hosts_table(hosts))
    print()
    print(tunnels_table(hosts))
    problems = problems_table(hosts)
    if problems:
        print()
        print(problems)
    return 0


def problems_table(hosts: list[dict]) -> str:
    """Rows the controller left out of the flows (a bad row never blocks the others)."""
    seen = set()
    rows = []
    for h in sorted(hosts, key=lambda h: h["id"]):
        for p in h.get("problems") or []:
            key = (p.get("kind"), p.get("id"))
            if key not in seen:
                seen.add(key)
                rows.append([h["id"], p.get("kind"), p.get("id"), p.get("message")])
    return table(["HOST", "LEFT OUT", "ID", "WHY"], rows) if rows else ""


def cmd_pods(args: argparse.Namespace) -> int:
    pods = _client(args).pods()
    if args.json:
        _print_json(pods)
        return 0
    rows = []
    for p in sorted(pods, key=lambda p: p["id"]):
        server = p.get("dhcp_server") or {}
        rows.append([p["id"], p.get("name"), p.get("subnet"), p.get("tunnel_key"),
                     p.get("ports", len(p.get("members") or [])), server.get("ip")])  # fmt: skip
    print(table(["POD", "NAME", "SUBNET", "KEY", "PORTS", "DHCP SERVER"], rows))
    return 0


def cmd_ports(args: argparse.Namespace) -> int:
    ports = _client(args).ports(pod=parse_pod(args.pod), host=args.filter_host)
    if args.json:
        _print_json(ports)
        return 0
    rows = []
    for p in sorted(ports, key=lambda p: p["id"]):
        err = p.get("error") or {}
        rows.append([p["id"], p.get("container"), p.get("pod"), port_address(p), p.get("mac"),
                     p.get("host"), p.get("state"), p.get("ofport"), err.get("message")])
    print(table(["ID", "CONTAINER", "POD", "IP", "MAC", "HOST", "STATE", "OFPORT", "ERROR"],
                rows))  # fmt: skip
    return 0


def hosts_table(hosts: list[dict]) -> str:
    now = time.time()
    rows = []
    for h in sorted(hosts, key=lambda h: h["id"]):
        agent = h.get("agent") or {}
        seen = agent.get("last_seen")
        bridges = ((h.get("openflow") or {}).get("bridges") or {})
        of = " ".join(f"{b}:{'up' if (bridges.get(b) or {}).get('connected') else 'down'}"
                      for b in ("br-int", "br-tun"))  # fmt: skip
        up = sum(1 for t in h.get("tunnels") or [] if t.get("ofport"))
        rows.append([h["id"], h.get("tunnel_ip"), h.get("tunnel_type"),
                     "polling" if agent.get("polling") else ago(now - seen if seen else None),
                     of, f"{up}/{max(len(hosts) - 1, 0)}", h.get("ports")])  # fmt: skip
    return table(["HOST", "TUNNEL IP", "TYPE", "AGENT", "OPENFLOW", "TUNNELS", "PORTS"], rows)


def tunnels_table(hosts: list[dict]) -> str:
    rows = []
    ids = sorted(h["id"] for h in hosts)
    by_id = {h["id"]: h for h in hosts}
    for hid in ids:
        have = {t["peer"]: t.get("ofport") for t in by_id[hid].get("tunnels") or []}
        for peer in ids:
            if peer != hid:
                ofport = have.get(peer)
                rows.append([hid, peer, by_id[peer].get("tunnel_ip"),
                             contract.tunnel_port_name(by_id[peer]["tunnel_ip"])
                             if by_id[peer].get("tunnel_ip") else None,
                             ofport, "up" if ofport else "missing"])  # fmt: skip
    if not rows:
        return "no tunnels (fewer than two hosts)"
    return table(["HOST", "PEER", "PEER IP", "PORT", "OFPORT", "STATE"], rows)


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


# ------------------------------------------------------------------ arguments
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--controller", help="controller REST URL (LORIS_CONTROLLER; "
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

    p = argparse.ArgumentParser(prog="loris", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("init", parents=[common, ovs_opts],
                       help="prepare this host: bridges br-int/br-tun and patch ports")
    s.add_argument("--openflow", help="OpenFlow controller target (default: the controller's "
                   "address, port 6653, when --controller/LORIS_CONTROLLER is set)")
    s.set_defaults(func=cmd_init)
    s = sub.add_parser("cluster", parents=[common],
                       help="show the cluster, or wait until hosts are registered and meshed")
    s.add_argument("ips", nargs="*", metavar="IP", help="tunnel IPs of the hosts to wait for")
    s.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    s.set_defaults(func=cmd_cluster)
    s = sub.add_parser("connect", parents=[common], help="connect a container to a pod")
    s.add_argument("container", help="Docker name or id, or netns:NAME")
    s.add_argument("ip", help="A.B.C.D/len, or dhcp")
    s.add_argument("pod", nargs="?", help="pod id (default 0, the global pod)")
    s.add_argument("--mac", help="MAC address (default: chosen by the controller)")
    s.add_argument("--timeout", type=float, default=CONNECT_TIMEOUT_S)
    s.set_defaults(func=cmd_connect)
    s = sub.add_parser("disconnect", parents=[common],
                       help="disconnect a container from a pod (default: from all its pods)")
    s.add_argument("container")
    s.add_argument("pod", nargs="?")
    s.set_defaults(func=cmd_disconnect)
    s = sub.add_parser("cleanup", parents=[common, ovs_opts],
                       help="remove everything Loris made on this host; deregister it")
    s.set_defaults(func=cmd_cleanup)
    s = sub.add_parser("status", parents=[common], help="hosts, tunnels, OpenFlow state")
    s.set_defaults(func=cmd_status)
    s = sub.add_parser("pods", parents=[common], help="list pods")
    s.set_defaults(func=cmd_pods)
    s = sub.add_parser("ports", parents=[common], help="list container ports")
    s.add_argument("--pod", help="only this pod")
    s.add_argument("--on-host", dest="filter_host", help="only ports of this host")
    s.set_defaults(func=cmd_ports)
    s = sub.add_parser("token", parents=[common],
                       help="print the agent token of a host (needs the operator token)")
    s.add_argument("for_host", metavar="HOST", help="host id")
    s.set_defaults(func=cmd_token)
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
    s.set_defaults(func=cmd_pki_init)
    s = pki_sub.add_parser("host", parents=[days], help="switch certificates for more hosts")
    s.add_argument("dir", help="the directory of `loris pki init`")
    s.add_argument("hosts", nargs="+", metavar="ID")
    s.set_defaults(func=cmd_pki_host)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "pki":       # local files only: no controller, no host id
        try:
            return args.func(args)
        except pki.PkiError as e:
            _fail("pki", str(e))
            return 1
    args.controller_given = bool(args.controller or os.environ.get("LORIS_CONTROLLER"))
    args.controller = controller_url(args.controller)
    args.host = args.host or default_host_id()
    try:
        if not contract.HOST_ID.matches(args.host):
            raise CliError(f"invalid host id {args.host!r}: use 1-63 letters, digits, '_', '.', "
                           "'-' (--host or LORIS_HOST)")  # fmt: skip
        return args.func(args)
    except (CliError, ControllerUnreachable, OvsError) as e:
        _fail(args.command, str(e))
    except ApiError as e:
        hint = ""
        if e.status in (401, 403):
            hint = (" (the CLI needs the operator token: --token-file, LORIS_TOKEN_FILE or "
                    "LORIS_TOKEN)")
        _fail(args.command, e.message + hint)
    except KeyboardInterrupt:
        _fail(args.command, "interrupted")
    return 1


def _fail(command: str, reason: str) -> None:
    print(f"loris {command}: " + " ".join(reason.split()), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
