"""This host as the agent and the CLI name it: its id and its Open vSwitch, from arguments
and the environment. Light on purpose (no Docker SDK, no netlink): the CLI imports it."""

from __future__ import annotations

import os
import socket

TYPE_CHECKING = False   # hostagent.ovs (subprocess) only for the commands that use OVS
if TYPE_CHECKING:
    from hostagent.ovs import Ovs


def ovs_from_args(ovsdb: str | None, rundir: str | None) -> Ovs:
    """The Open vSwitch of --ovsdb/--ovs-rundir, else LORIS_OVSDB/LORIS_OVS_RUNDIR, else the
    system's."""
    from hostagent.ovs import Ovs

    return Ovs(db=ovsdb or os.environ.get("LORIS_OVSDB") or None,
               rundir=rundir or os.environ.get("LORIS_OVS_RUNDIR") or None)  # fmt: skip


def default_host_id() -> str:
    """LORIS_HOST, else the short hostname."""
    return os.environ.get("LORIS_HOST") or socket.gethostname().split(".")[0]
