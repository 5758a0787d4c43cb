"""The CLI's commands that only talk to the controller: status, pods, ports, cluster,
connect, disconnect (token, tokens and events: safety_commands.py). (`disconnect` asks
Docker only when given a name that is not the one the port was connected with.)"""

from __future__ import annotations

import argparse
import ipaddress
import time
from collections import namedtuple
from collections.abc import Iterable

from hostagent.cli import ha_commands
from hostagent.cli.common import (
    CliError,
    check_ip_argument,
    operator_client,
    parse_pod,
    print_json,
)
from hostagent.cli.output import (
    hosts_table,
    pods_table,
    port_address,
    ports_table,
    problems_table,
    tunnels_table,
)
from hostagent.client import ApiError, Client, ControllerUnreachable

CONNECT_TIMEOUT_S = 90.0
APPLY_TIMEOUT_S = 10.0  # how long `disconnect` waits for the host's agent to unwire
PROBE_TIMEOUT_S = 5.0  # a controller that is up answers /v1/health in milliseconds


class MeshState(namedtuple("MeshState", ["unregistered", "missing"])):
    """unregistered: tunnel IPs nobody registered with; missing: (host, peer) pairs without
    a tunnel ofport. (A named tuple: `dataclasses` would weigh on the CLI's start-up.)"""

    __slots__ = ()

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


def cmd_cluster(args: argparse.Namespace) -> int:
    client = operator_client(args)
    for ip in args.ips:
        try:
            ipaddress.IPv4Address(ip)
        except ValueError:
            raise CliError(f"{ip!r} is not an IPv4 address (give the tunnel IPs of the hosts)") \
                from None
    if not args.ips:
        hosts = client.hosts()
        if args.json:
            print_json(hosts)
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
        print_json({"members": members, "hosts": [h for h in hosts if h["id"] in members]})
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
        if not e.timed_out:
            raise
        raise CliError(f"controller {client.base_url} is not answering (no reply within "
                       f"{PROBE_TIMEOUT_S:g} s; is it stopped or overloaded?); nothing was "
                       "changed") from None


def cmd_connect(args: argparse.Namespace) -> int:
    body: dict = {"host": args.host, "container": args.container,
                  "ip": check_ip_argument(args.ip)}  # fmt: skip
    pod = parse_pod(args.pod)          # arguments first: a typo needs no controller
    client = operator_client(args)
    _answering(client)
    if pod is not None:
        body["pod"] = pod
    if args.mac:
        body["mac"] = args.mac
    port = client.create_port(body, timeout=args.timeout)
    if args.json:
        print_json(port)
    else:
        named = f"{pod} ({port.get('pod')})" if isinstance(pod, str) else port.get("pod", pod or 0)
        print(f"{args.container} connected to pod {named}: "
              f"ip {port_address(port)} mac {port.get('mac')} "
              f"(port {port.get('id')} on {port.get('host', args.host)})")  # fmt: skip
    return 0


def cmd_disconnect(args: argparse.Namespace) -> int:
    pod = parse_pod(args.pod)
    client = operator_client(args)
    _answering(client)
    try:
        ports = client.ports(host=args.host, pod=pod)
    except ApiError as e:
        if e.code != "pod_not_found":
            raise
        raise CliError(f"pod {pod} does not exist (`loris pods` lists them), so container "
                       f"{args.container} is not connected to it") from None
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
    _wait_applied(client, args.host)
    if args.json:
        print_json(gone)
    else:
        for p in gone:
            print(f"{args.container} disconnected from pod {p.get('pod')} "
                  f"({port_address(p)}, port {p['id']})")  # fmt: skip
    return 0


def _wait_applied(client: Client, host_id: str) -> None:
    """Until the host's agent has applied the desired state that holds the disconnect (the
    veth gone): the controller answers a disconnect before the agent unwires. At most
    APPLY_TIMEOUT_S, and not at all for an agent that is away (it applies the disconnect
    when it is back)."""
    deadline = time.monotonic() + APPLY_TIMEOUT_S
    want: int | None = None
    while True:
        try:
            host = client.host(host_id)
        except ApiError:
            return
        if want is None:
            want = int(host.get("desired_version") or 0)
        if (host.get("agent") or {}).get("away") or \
                int(host.get("actual_version") or 0) >= want or time.monotonic() > deadline:
            return
        time.sleep(0.02)


def _designates(given: str, stored: str) -> bool:
    """Whether the user's reference and the port's stored one are the same container."""
    if given == stored:
        return True
    if given.startswith("netns:") or stored.startswith("netns:"):
        return False
    # Only here does the CLI need Docker (a name for an id, or the other way round).
    from hostagent.containers import ContainerError, Runtimes, matches

    try:
        found = Runtimes().identify(given)
    except ContainerError:
        return False
    return found is not None and matches(stored, *found)


def cmd_status(args: argparse.Namespace) -> int:
    client = operator_client(args)
    hosts = client.hosts()
    if args.json:
        print_json(hosts)
        return 0
    print(hosts_table(hosts))
    print()
    print(tunnels_table(hosts))
    problems = problems_table(hosts)
    if problems:
        print()
        print(problems)
    controllers = ha_commands.status_part(client, hosts)   # several controllers (docs/ha.md)
    if controllers:
        print()
        print(controllers)
    return 0


def cmd_pods(args: argparse.Namespace) -> int:
    pods = operator_client(args).pods()
    if args.json:
        print_json(pods)
    else:
        print(pods_table(pods))
    return 0


def cmd_ports(args: argparse.Namespace) -> int:
    ports = operator_client(args).ports(pod=parse_pod(args.pod), host=args.filter_host)
    if args.json:
        print_json(ports)
    else:
        print(ports_table(ports))
    return 0
