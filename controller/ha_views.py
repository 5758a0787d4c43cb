"""What `GET /v1/controllers` and the host view show about controllers and OpenFlow roles.

With mastership on (etcd), the registry as this controller last read it: every live
controller, its addresses, the hosts whose switches it has connected and the hosts it
masters; a master key whose owner has no registry entry shows that owner unhealthy (its
lease is about to expire). Without etcd, this one controller, master of every switch
connected to it (no role requests: the connections stay EQUAL).
"""

from __future__ import annotations

from typing import Any

from controller.context import Context
from controller.ha import HighAvailability, Identity
from controller.roles import Roles
from controller.store import Host
from flows import contract


class ClusterView:
    def __init__(self, ctx: Context, me: Identity, roles: Roles,
                 ha: HighAvailability | None) -> None:
        self.ctx = ctx
        self.me = me
        self.roles = roles
        self.ha = ha

    def _connected_here(self) -> list[str]:
        hosts = {self.ctx.dpid_owner(dp.id) for dp in self.ctx.switches.connected_datapaths()}
        return sorted({h[0] for h in hosts if h is not None})

    def controllers(self) -> dict:
        here = self._connected_here()
        if self.ha is None:
            return {"mastership": False, "self": self.me.id, "fenced": False, "error": None,
                    "controllers": [{"id": self.me.id, "api_url": self.me.api_url,
                                     "openflow": self.me.openflow, "healthy": True,
                                     "self": True, "connected": here, "masters": here}]}
        view = self.ha.view()
        out = []
        entries = dict(view["controllers"])
        owners = set(view["masters"]) | set(entries) | {self.me.id}
        for cid in sorted(owners):
            entry = entries.get(cid)
            mine = cid == self.me.id
            healthy = entry is not None and not (mine and view["fenced"])
            out.append({"id": cid, "api_url": entry.api_url if entry else
                        (self.me.api_url if mine else None),
                        "openflow": entry.openflow if entry else
                        (self.me.openflow if mine else None),
                        "healthy": healthy, "self": mine,
                        "connected": here if mine else sorted(entry.connected) if entry else [],
                        "masters": sorted(view["masters"].get(cid, []))})
        return {"mastership": True, "self": self.me.id, "fenced": view["fenced"],
                "error": view["error"], "controllers": out}

    def host_openflow(self, host: Host) -> dict[str, Any]:
        """{"master": id | None, "roles": {bridge: {controller id: role}}} of a host."""
        roles: dict[str, dict[str, str | None]] = {b: {} for b in contract.BRIDGES}
        for bridge in contract.BRIDGES:
            mine = self.roles.role_name(host.dpid(bridge))
            if mine is not None:
                roles[bridge][self.me.id] = mine
        if self.ha is None:
            return {"master": self.me.id if any(roles.values()) else None, "roles": roles}
        view = self.ha.view()
        for cid, entry in view["controllers"].items():
            if cid == self.me.id:
                continue
            for bridge, role in (entry.roles.get(host.id) or {}).items():
                if bridge in roles:
                    roles[bridge][cid] = role
        key = view["keys"].get(host.id)
        return {"master": key.owner if key else None, "roles": roles}
