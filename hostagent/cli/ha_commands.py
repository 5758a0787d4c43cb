"""`loris controllers` and the controllers part of `loris status` (several controllers on
etcd, docs/ha.md): each controller, its health and the hosts it masters; each host's
master and the role of its bridges on each controller."""

from __future__ import annotations

import argparse

from hostagent.cli.common import operator_client, print_json
from hostagent.client import ApiError, Client
from hostagent.tables import table

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hostagent.cli.parser import Commands


def add_parsers(cmds: Commands, common: argparse.ArgumentParser) -> None:
    cmds.add("controllers", "the controllers, their health and the hosts each masters",
             lambda s: s.set_defaults(func=cmd_controllers), parents=[common])


def cmd_controllers(args: argparse.Namespace) -> int:
    client = operator_client(args)
    registry = client.controllers()
    if args.json:
        print_json(registry)
        return 0
    print(controllers_table(registry))
    if registry.get("mastership"):
        print()
        print(masters_table(client.hosts()))
    return 0


def status_part(client: Client, hosts: list[dict]) -> str | None:
    """The tables `loris status` adds with several controllers (none without etcd, or
    from a controller older than the registry)."""
    try:
        registry = client.controllers()
    except ApiError:
        return None
    if not registry.get("mastership"):
        return None
    return controllers_table(registry) + "\n\n" + masters_table(hosts)


def controllers_table(registry: dict) -> str:
    rows = []
    for c in registry.get("controllers") or []:
        health = "healthy" if c.get("healthy") else "UNHEALTHY"
        if c.get("self") and registry.get("fenced"):
            health = "FENCED (etcd lease unconfirmed)"
        rows.append([c["id"] + (" *" if c.get("self") else ""), c.get("api_url"),
                     c.get("openflow"), health, len(c.get("connected") or []),
                     ", ".join(c.get("masters") or []) or "-"])
    out = table(["CONTROLLER", "REST", "OPENFLOW", "HEALTH", "SWITCH HOSTS", "MASTER OF"], rows)
    if registry.get("error"):
        out += f"\netcd: {registry['error']}"
    return out


def masters_table(hosts: list[dict]) -> str:
    rows = []
    for h in sorted(hosts, key=lambda h: h["id"]):
        openflow = h.get("openflow") or {}
        for bridge, b in sorted((openflow.get("bridges") or {}).items()):
            roles = b.get("roles") or {}
            rows.append([h["id"], openflow.get("master") or "NONE", bridge,
                         " ".join(f"{c}:{r}" for c, r in sorted(roles.items())) or "-"])
    return table(["HOST", "MASTER", "BRIDGE", "ROLES"], rows)
