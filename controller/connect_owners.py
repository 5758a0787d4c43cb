"""Which controller owns an unfinished connect, and whether that owner is gone (schema 6).

A connect inserts its port `pending` and finishes it `active` (controller/connect.py); a
controller killed in between leaves the row behind, and whoever notices drops it
(controller/recovery.py). With several controllers, "the controller restarted" no longer
means "every pending row is left over": the others' connects are in flight. So the connect
writes, in the transaction that inserts its port, who runs it:

    connect_owners(port_id, controller, run, lease)

`controller` is the controller's id (`controller_id`), `run` a random id of this process
(a restart is a new run), `lease` the etcd lease the controller holds (mastership on), else
NULL. The row goes with the port (ON DELETE CASCADE) or when the connect finishes.

`gone` decides (pure): a pending port is left over when it has no owner row (written
before schema 6, or by hand), when its owner is an earlier run of this controller, or when
its owner's lease is no longer among etcd's live leases. Without mastership (one
controller) every run but this one is gone, as before. `ConnectOwnerRows` is mixed into
`store.Tx`.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass

CONNECT_OWNERS_SCHEMA = """
CREATE TABLE IF NOT EXISTS connect_owners (
    port_id INTEGER PRIMARY KEY REFERENCES ports(id) ON DELETE CASCADE,
    controller TEXT NOT NULL,
    run TEXT NOT NULL,
    lease INTEGER
)
"""


@dataclass(frozen=True)
class Owner:
    """Who runs a connect: a controller id, its process's run id, its etcd lease."""
    controller: str
    run: str
    lease: int | None = None


def new_run() -> str:
    """The id of this process's run: no two processes share one."""
    return uuid.uuid4().hex[:16]


def gone(owner: Owner | None, me: Owner, live_leases: Collection[int] | None,
         running_here: bool = True) -> bool:
    """True when the connect owned by `owner` can never finish, so its pending port may be
    dropped by `me`. `live_leases`: etcd's live leases (mastership on), None without etcd
    (one controller: another run is an earlier life of it or of a controller not running).
    `running_here`: a connect of this process still runs for the port (one that ended
    without removing its port, its undo having failed, is left over too)."""
    if owner is None:
        return True                       # no owner recorded: written before schema 6
    if owner.run == me.run:
        return not running_here
    if owner.controller == me.controller:
        return True                       # an earlier run of this controller
    if live_leases is None or owner.lease is None:
        return True
    return owner.lease not in live_leases


class ConnectOwnerRows:
    """SQL of `connect_owners` (mixed into store.Tx, which provides _all/_c)."""

    def claim_connect(self, port_id: int, owner: Owner) -> None:
        self._c.execute(  # type: ignore[attr-defined]
            "INSERT OR REPLACE INTO connect_owners (port_id, controller, run, lease) "
            "VALUES (?, ?, ?, ?)", (port_id, owner.controller, owner.run, owner.lease))

    def finish_connect(self, port_id: int) -> None:
        self._c.execute(  # type: ignore[attr-defined]
            "DELETE FROM connect_owners WHERE port_id = ?", (port_id,))

    def connect_owners(self) -> dict[int, Owner]:
        """port id -> the owner of its unfinished connect."""
        return {r[0]: Owner(r[1], r[2], r[3]) for r in self._all(  # type: ignore[attr-defined]
            "SELECT port_id, controller, run, lease FROM connect_owners")}
