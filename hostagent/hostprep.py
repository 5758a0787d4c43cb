"""Host preparation (`loris init`, agent start) and its inverse (`loris cleanup`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from flows import contract
from hostagent import netdev
from hostagent.ovs import Ovs, kv

BRIDGE_PATCH = {
    contract.INTEGRATION_BRIDGE: (contract.PATCH_ON_INT, contract.PATCH_ON_TUN),
    contract.TUNNEL_BRIDGE: (contract.PATCH_ON_TUN, contract.PATCH_ON_INT),
}
CONTROLLER_SETTINGS = {
    "inactivity_probe": "30000",
    "controller_rate_limit": "1000",  # packet-in storms must not starve the controller
    "controller_burst_limit": "250",
    "connection_mode": "out-of-band",
}


def datapath_type() -> str:
    """`system` needs the kernel module; without it OVS runs the userspace datapath."""
    return "system" if os.path.exists("/sys/module/openvswitch") else "netdev"


def prepare_host(ovs: Ovs, host_id: str, openflow_target: str | None) -> dict[str, int | None]:
    """Create or repair br-int/br-tun and their patch ports; returns the patch ofports.

    Idempotent and non-disruptive: values already right are left untouched (in particular an
    unchanged controller target is not re-created, which would drop the OpenFlow session).
    """
    dpids = contract.dpids(host_id)
    mark = dict([contract.LORIS_MARK])
    cmds: list[list[str]] = []
    for bridge, (patch, peer) in BRIDGE_PATCH.items():
        cmds += [
            ["--may-exist", "add-br", bridge],
            # Same transaction as add-br: the bridge never exists without secure fail mode,
            # so it never forwards on its own (no NORMAL flow, no in-band rules).
            [
                "set", "Bridge", bridge,
                "fail_mode=secure",
                "protocols=OpenFlow13",
                f"datapath_type={datapath_type()}",
                'other-config:disable-in-band="true"',
                f'other-config:datapath-id="{contract.dpid_hex(dpids[bridge])}"',
                *kv("external_ids", mark),
            ],
            ["--may-exist", "add-port", bridge, patch],
            ["set", "Interface", patch, "type=patch", f'options:peer="{peer}"',
             *kv("external_ids", mark)],
            ["set", "Port", patch, *kv("external_ids", mark)],
        ]  # fmt: skip
    ovs.vsctl(cmds)
    if openflow_target:
        set_controller(ovs, openflow_target)
    got = ovs.ofports([contract.PATCH_ON_INT, contract.PATCH_ON_TUN])
    return {contract.INTEGRATION_BRIDGE: got[contract.PATCH_ON_INT],
            contract.TUNNEL_BRIDGE: got[contract.PATCH_ON_TUN]}  # fmt: skip


def controller_targets(target: str | Sequence[str]) -> list[str]:
    """OpenFlow targets from one, a list, or a comma-separated text (order kept, no
    duplicates: OVS leaves duplicate targets' behaviour unspecified)."""
    items = target.split(",") if isinstance(target, str) else list(target)
    return list(dict.fromkeys(t.strip() for t in items if t.strip()))


def set_controller(ovs: Ovs, target: str | Sequence[str]) -> None:
    """Point both bridges at every target (several controllers: docs/ha.md). A target
    already there keeps its Controller row, and so its OpenFlow session; only new ones are
    created and gone ones dropped. fail_mode stays secure, connections out-of-band."""
    targets = controller_targets(target)
    snap = ovs.snapshot()
    settings = [f"{k}={v}" for k, v in CONTROLLER_SETTINGS.items()]
    cmds: list[list[str]] = []
    for bridge in BRIDGE_PATCH:
        rows = {snap.controllers[u]["target"]: snap.controllers[u]
                for u in snap.bridges[bridge]["controller"] if u in snap.controllers}
        refs: list[str] = []
        for i, t in enumerate(targets):
            row = rows.get(t)
            if row is not None:
                cmds.append(["set", "Controller", row["_uuid"], *settings])
                refs.append(row["_uuid"])
                continue
            ref = f"@c_{bridge.replace('-', '_')}_{i}"
            cmds.append([f"--id={ref}", "create", "Controller", f'target="{t}"', *settings,
                         *kv("external_ids", dict([contract.LORIS_MARK]))])
            refs.append(ref)
        if set(rows) != set(targets) or len(rows) != len(snap.bridges[bridge]["controller"]):
            cmds.append(["set", "Bridge", bridge, f"controller=[{','.join(refs)}]"])
    ovs.vsctl(cmds)


@dataclass
class CleanupReport:
    bridges: list[str]
    veths: list[str]


def cleanup_host(ovs: Ovs) -> CleanupReport:
    """Remove what Loris created on this host, and only that. Idempotent.

    Ours = bridges marked external_ids loris=1 (their ports, tunnels and patch ports go with
    them) and host-side veths whose alias says they are Loris ports (their container ends die
    with them). Foreign bridges, ports, interfaces and namespaces are never touched.
    """
    key, value = contract.LORIS_MARK
    bridges: list[str] = []
    if ovs.reachable():
        snap = ovs.snapshot()
        bridges = sorted(b for b, row in snap.bridges.items()
                         if row["external_ids"].get(key) == value)  # fmt: skip
        if bridges:
            ovs.vsctl([["--if-exists", "del-br", b] for b in bridges])
    veths = netdev.delete_loris_veths()
    return CleanupReport(bridges=bridges, veths=veths)
