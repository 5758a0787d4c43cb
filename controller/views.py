"""JSON representations of store rows for the REST API (the schemas are in openapi.py)."""

from __future__ import annotations

from collections.abc import Sequence

from controller.agents import AgentBoard
from controller.store import Host, Pod, Port
from controller.switches import BridgeStatus, Switches
from controller.topology import Problem
from flows import contract


def port(p: Port) -> dict:
    error = {"code": p.error_code, "message": p.error_message or ""} if p.error_code else None
    return {"id": p.id, "host": p.host_id, "container": p.container, "pod": p.pod_id,
            "mac": p.mac, "ip": p.ip, "dhcp": p.dhcp, "state": p.state, "ofport": p.ofport,
            "mtu": p.mtu, "lease": p.lease, "error": error, "created_at": p.created_at}


def pod(p: Pod, ports: int, members: list[Port] | None = None) -> dict:
    server = contract.dhcp_server(p.id, p.network)
    out = {"id": p.id, "name": p.name, "subnet": p.subnet, "tunnel_key": contract.tunnel_key(p.id),
           "dhcp_server": {"ip": server[0], "mac": server[1]} if server else None,
           "ports": ports, "created_at": p.created_at}
    if members is not None:
        out["members"] = [port(m) for m in members]
    return out


def host(h: Host, tunnels: dict[str, int], ports: int, switches: Switches | None,
         board: AgentBoard, openflow_port: int, openflow_tls: bool = False,
         problems: Sequence[Problem] = ()) -> dict:
    bridges = {}
    for bridge in contract.BRIDGES:
        dpid = h.dpid(bridge)
        st = switches.bridge_status(dpid) if switches else BridgeStatus(dpid)
        bridges[bridge] = st.to_json()
    return {
        "id": h.id, "tunnel_ip": h.tunnel_ip, "tunnel_type": h.tunnel_type,
        "dpids": {"br-int": f"{h.dpid_int:#018x}", "br-tun": f"{h.dpid_tun:#018x}"},
        "patch": {"br-int": h.int_patch_ofport, "br-tun": h.tun_patch_ofport},
        "tunnels": [{"peer": peer, "ofport": ofport} for peer, ofport in sorted(tunnels.items())],
        "desired_version": h.desired_version, "actual_version": h.actual_version,
        "agent": {"last_seen": board.last_seen(h.id), "polling": board.polling(h.id),
                  "away": board.away(h.id) is not None},
        "ports": ports,
        "openflow": {"port": openflow_port, "tls": openflow_tls, "bridges": bridges},
        "problems": [p.to_json() for p in problems],
        "registered_at": h.registered_at,
    }
