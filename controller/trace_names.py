"""What a flow belongs to and what it does, in words (pure: no store, no switch).

Every Loris flow carries its owner in its cookie (docs/pipeline.md): kind and object id.
`Names` turns that into "port 12: web1 in pod 7 on h2" (`owner`) and, with the flow's
bridge and table, into what the flow is for: "port security of web1", "flood list of pod
7", "the flow for db1's MAC into the tunnel to h2" (`role`). `loris trace` prints both
beside every flow a packet meets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from flows import Flow, Kind, parse_cookie
from flows.contract import INTEGRATION_BRIDGE, TUNNEL_BRIDGE
from flows.pipeline import (
    INT_ARP,
    INT_FROM_TUN,
    INT_INGRESS,
    INT_L2,
    P_DHCP,
    P_FLOOD,
    P_OWN_IP,
    P_PORT_DROP,
    P_TO_TUN,
    TUN_CLASSIFY,
    TUN_FROM_TUN,
    TUN_TO_TUN,
)

TABLE_NAMES = {
    INTEGRATION_BRIDGE: {INT_INGRESS: "port security", INT_ARP: "ARP responder",
                         INT_L2: "switching", INT_FROM_TUN: "from the tunnels"},
    TUNNEL_BRIDGE: {TUN_CLASSIFY: "classification", TUN_TO_TUN: "into the tunnels",
                    TUN_FROM_TUN: "from the tunnels"},
}


@dataclass(frozen=True)
class PortInfo:
    """A container port as a trace needs it (the store's row, flattened)."""
    id: int
    container: str
    host: str
    pod: int
    mac: str
    ip: str                      # bare address
    ofport: int | None
    state: str
    dhcp: bool = False
    error: str | None = None

    @property
    def name(self) -> str:
        """The container's name as a user reads it (netns:NAME shows as NAME)."""
        return self.container.removeprefix("netns:")

    def label(self) -> str:
        return f"port {self.id}: {self.name} in pod {self.pod} on {self.host}"


@dataclass(frozen=True)
class Names:
    """What the store says about the objects cookies name."""
    ports: Mapping[int, PortInfo] = field(default_factory=dict)
    tunnel_ips: Mapping[str, str] = field(default_factory=dict)             # host -> IP
    tunnel_peers: Mapping[tuple[str, int], str] = field(default_factory=dict)  # (host, ofport)
    dhcp_servers: Mapping[int, tuple[str, str]] = field(default_factory=dict)  # pod -> ip, mac
    patch: Mapping[str, tuple[int | None, int | None]] = field(default_factory=dict)
    reconciled: Mapping[tuple[str, str], float | None] = field(default_factory=dict)

    def port_at(self, host: str, ofport: int) -> PortInfo | None:
        for port in self.ports.values():
            if port.host == host and port.ofport == ofport:
                return port
        return None

    def in_port_name(self, host: str, bridge: str, ofport: int) -> str:
        """Where a packet came into a bridge from, in words."""
        int_patch, tun_patch = self.patch.get(host, (None, None))
        if bridge == INTEGRATION_BRIDGE and ofport == int_patch:
            return "br-tun (patch port)"
        if bridge == TUNNEL_BRIDGE and ofport == tun_patch:
            return "br-int (patch port)"
        if bridge == TUNNEL_BRIDGE and (host, ofport) in self.tunnel_peers:
            return f"the tunnel from {self.tunnel_peers[(host, ofport)]}"
        port = self.port_at(host, ofport) if bridge == INTEGRATION_BRIDGE else None
        return f"{port.name} (port {port.id}, ofport {ofport})" if port else f"ofport {ofport}"

    def port_name(self, port_id: int) -> str:
        port = self.ports.get(port_id)
        return port.name if port else f"port {port_id}"

    def owner(self, cookie: int, host: str) -> str:
        """Who a flow belongs to, from its cookie alone."""
        parsed = parse_cookie(cookie)
        if parsed is None:
            return f"not a Loris flow (cookie {cookie:#x}): added by someone else"
        kind, obj, _ = parsed
        if kind is Kind.BASE:
            return f"base pipeline of {host}"
        if kind is Kind.TUNNEL:
            peer = self.tunnel_peers.get((host, obj))
            return f"tunnel port {obj} of {host}" + (f" (to {peer})" if peer else "")
        if kind is Kind.POD:
            return f"pod {obj} on {host}"
        port = self.ports.get(obj)
        if port is None:
            return f"port {obj}, which the controller no longer has"
        return port.label()

    def role(self, flow: Flow, bridge: str, host: str) -> str:
        """What the flow does, in the terms of docs/pipeline.md."""
        parsed = parse_cookie(flow.cookie)
        table = TABLE_NAMES.get(bridge, {}).get(flow.table, f"table {flow.table}")
        if parsed is None:
            return f"a foreign flow in {table}"
        kind, obj, _ = parsed
        if kind is Kind.BASE:
            if flow.priority == 0:
                return f"default drop of table {flow.table} ({table})"
            if bridge == TUNNEL_BRIDGE:
                return "traffic from br-int"
            return "unicast ARP replies go on to switching"
        if kind is Kind.TUNNEL:
            peer = self.tunnel_peers.get((host, obj))
            return f"traffic from the tunnel to {peer or 'port ' + str(obj)}"
        if kind is Kind.POD:
            return self._pod_role(flow, bridge, obj)
        who = self.port_name(obj)
        if kind is Kind.PORT:
            return self._port_role(flow, who)
        port = self.ports.get(obj)
        if bridge == TUNNEL_BRIDGE:
            there = f" into the tunnel to {port.host}" if port else ""
            return f"the flow for {who}'s MAC{there}"
        ip = f" ({port.ip})" if port else ""
        return f"ARP answer for {who}{ip}"

    @staticmethod
    def _pod_role(flow: Flow, bridge: str, pod: int) -> str:
        if bridge == TUNNEL_BRIDGE:
            if flow.table == TUN_FROM_TUN:
                return f"tunnel key of pod {pod} to its local VLAN"
            return f"flood list of pod {pod} (its other hosts)"
        if flow.table == INT_INGRESS:
            return f"local VLAN of pod {pod} back to the pod (from br-tun)"
        if flow.table == INT_ARP:
            return f"ARP answer for pod {pod}'s DHCP server"
        if flow.priority == P_FLOOD:
            return f"flood list of pod {pod}"
        if flow.priority == P_TO_TUN:
            return f"unicast of pod {pod} to its other hosts (br-tun)"
        return f"pipeline of pod {pod}"

    @staticmethod
    def _port_role(flow: Flow, who: str) -> str:
        if flow.table == INT_INGRESS:
            if flow.priority == P_DHCP:
                return f"DHCP of {who} to the controller"
            if flow.priority == P_PORT_DROP:
                return f"port security of {who}: anything else is dropped"
            return f"port security of {who}"
        if flow.table == INT_ARP and flow.priority == P_OWN_IP:
            return f"{who}'s own address is never answered"
        if flow.table == INT_FROM_TUN:
            return f"delivery to {who} (from the tunnels)"
        return f"delivery to {who}"
