"""The `loris-hostagent` command: its arguments, its credentials and start-up checks, then
the Agent (hostagent/agent.py) until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from flows import contract
from hostagent import lock, netdev
from hostagent.agent import Agent
from hostagent.agent import __doc__ as _agent_doc
from hostagent.client import (
    Client,
    ControllerUnreachable,
    CredentialsError,
    controller_url,
    read_token,
    token_file_from,
)
from hostagent.containers import Runtimes
from hostagent.docker_plugin import docker_plugin_config
from hostagent.local import default_host_id, ovs_from_args

AGENT_SUMMARY = (_agent_doc or "").splitlines()[0]
log = logging.getLogger("loris-hostagent")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="loris-hostagent", description=AGENT_SUMMARY)
    p.add_argument("--controller", help="controller REST URL, or several separated by "
                   "commas (LORIS_CONTROLLER; "
                   "default http://127.0.0.1:8780)")  # fmt: skip
    p.add_argument("--host-id", default=None, help="this host's id (LORIS_HOST; default hostname)")
    p.add_argument("--tunnel-ip", help="tunnel endpoint IPv4 (default: source address of the "
                   "route towards the controller)")  # fmt: skip
    p.add_argument("--tunnel-type", choices=contract.TUNNEL_TYPES, default="vxlan")
    p.add_argument("--ovsdb", help="OVSDB socket, e.g. unix:/run/openvswitch/db.sock "
                   "(LORIS_OVSDB)")  # fmt: skip
    p.add_argument("--ovs-rundir", help="OVS run directory (LORIS_OVS_RUNDIR)")
    p.add_argument("--container-ifname", default="eth1", help="interface name in containers")
    p.add_argument("--openflow", help="OpenFlow controller target override, e.g. tcp:IP:6653")
    p.add_argument("--docker-url", help="Docker engine URL (default: DOCKER_HOST or the socket)")
    p.add_argument("--token-file", help="this host's agent token (LORIS_TOKEN_FILE; or the "
                   "token itself in LORIS_TOKEN); get it with `loris token HOST`")
    p.add_argument("--ca-cert", help="CA certificate that signed the controller's (https "
                   "controller URL and OpenFlow over TLS; LORIS_CA_CERT)")
    p.add_argument("--switch-cert", help="this host's certificate for OpenFlow over TLS "
                   "(LORIS_SWITCH_CERT)")
    p.add_argument("--switch-key", help="its private key (LORIS_SWITCH_KEY)")
    p.add_argument("--plugin-socket", help="serve the `loris` Docker network and IPAM "
                   "plugin on this unix socket (dockerd looks for "
                   "/run/docker/plugins/loris.sock); under systemd socket activation the "
                   "inherited socket is used (docs/docker.md)")
    p.add_argument("--plugin-state", default="/var/lib/loris/docker-plugin.json",
                   help="where the plugin keeps what Docker told it (networks, endpoints)")
    p.add_argument("--no-docker-networks", action="store_true", help="with the plugin, do "
                   "not keep a Docker network per pod in the engine")
    p.add_argument("--apply", metavar="FILE", help="no controller: prepare the host, apply "
                   "the desired state in FILE (JSON as GET .../desired returns it; - for "
                   "stdin), print the actual state and exit (troubleshooting, tests)")
    p.add_argument("--log-file")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        filename=args.log_file,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    host_id = args.host_id or default_host_id()
    if not contract.HOST_ID.matches(host_id):
        print(f"loris-hostagent: invalid host id {host_id!r}: use 1-63 letters, digits, "
              "'_', '.', '-' (--host-id)", file=sys.stderr)  # fmt: skip
        return 2
    try:
        lock.acquire(ovs_from_args(args.ovsdb, args.ovs_rundir))
    except lock.AgentRunning as e:
        print(f"loris-hostagent: {e}; stop it first", file=sys.stderr)
        return 2
    if args.apply:
        from hostagent.apply_file import apply_once

        return apply_once(args, host_id)
    token_file = token_file_from(args.token_file)
    switch_cert = args.switch_cert or os.environ.get("LORIS_SWITCH_CERT")
    switch_key = args.switch_key or os.environ.get("LORIS_SWITCH_KEY")
    ca_cert = args.ca_cert or os.environ.get("LORIS_CA_CERT")
    try:
        if not read_token(token_file):
            raise CredentialsError("no credentials: give this host's agent token with "
                                   "--token-file or LORIS_TOKEN (the operator gets it with "
                                   f"`loris token {host_id}`)")
        if bool(switch_cert) != bool(switch_key) or (switch_cert and not ca_cert):
            raise CredentialsError("OpenFlow over TLS needs --switch-cert, --switch-key and "
                                   "--ca-cert together")
        client = Client(controller_url(args.controller), token_file=token_file,
                        ca_cert=ca_cert)
    except CredentialsError as e:
        print(f"loris-hostagent: {e}", file=sys.stderr)
        return 2
    tunnel_ip = args.tunnel_ip
    if not tunnel_ip:
        try:
            tunnel_ip = netdev.source_address_towards(client.controller_ip())
        except ControllerUnreachable as e:
            print(f"loris-hostagent: {e}", file=sys.stderr)
            return 2
        if not tunnel_ip:
            print("loris-hostagent: no route towards the controller to derive the tunnel IP "
                  "from; give --tunnel-ip", file=sys.stderr)  # fmt: skip
            return 2
    agent = Agent(client, ovs_from_args(args.ovsdb, args.ovs_rundir), host_id, tunnel_ip,
                  args.tunnel_type, args.container_ifname, args.openflow,
                  Runtimes(args.docker_url),
                  (switch_key, switch_cert, ca_cert) if switch_cert else None,
                  docker_plugin_config(args))  # fmt: skip

    def stop(_sig: int, _frame: object) -> None:
        agent.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("starting: host %s, tunnel %s %s, OVS %s", host_id, args.tunnel_type, tunnel_ip,
             agent.ovs.db_target or "default")  # fmt: skip
    agent.run()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
