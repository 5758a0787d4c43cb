"""The CLI's tables: hosts, tunnels, rows left out of the flows, pods, ports (pure)."""

from __future__ import annotations

import time

from flows import contract
from hostagent.tables import ago, table


def port_address(port: dict) -> str:
    return port.get("lease") or port.get("ip") or "-"


def agent_state(agent: dict, now: float) -> str:
    """The AGENT column: `polling`, `away (41s ago)` or when it was last heard from."""
    seen = agent.get("last_seen")
    heard = ago(now - seen if seen else None)
    if agent.get("away"):
        return f"away ({heard})"
    return "polling" if agent.get("polling") else heard


def hosts_table(hosts: list[dict]) -> str:
    now = time.time()
    rows = []
    for h in sorted(hosts, key=lambda h: h["id"]):
        agent = h.get("agent") or {}
        bridges = ((h.get("openflow") or {}).get("bridges") or {})
        of = " ".join(f"{b}:{'up' if (bridges.get(b) or {}).get('connected') else 'down'}"
                      for b in ("br-int", "br-tun"))  # fmt: skip
        up = sum(1 for t in h.get("tunnels") or [] if t.get("ofport"))
        rows.append([h["id"], h.get("tunnel_ip"), h.get("tunnel_type"),
                     agent_state(agent, now),
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


def pods_table(pods: list[dict]) -> str:
    rows = []
    for p in sorted(pods, key=lambda p: p["id"]):
        server = p.get("dhcp_server") or {}
        rows.append([p["id"], p.get("name"), p.get("subnet"), p.get("tunnel_key"),
                     p.get("ports", len(p.get("members") or [])), server.get("ip")])  # fmt: skip
    return table(["POD", "NAME", "SUBNET", "KEY", "PORTS", "DHCP SERVER"], rows)


def ports_table(ports: list[dict]) -> str:
    rows = []
    for p in sorted(ports, key=lambda p: p["id"]):
        err = p.get("error") or {}
        rows.append([p["id"], p.get("container"), p.get("pod"), port_address(p), p.get("mac"),
                     p.get("host"), p.get("state"), p.get("ofport"), err.get("message")])
    return table(["ID", "CONTAINER", "POD", "IP", "MAC", "HOST", "STATE", "OFPORT", "ERROR"],
                 rows)  # fmt: skip
