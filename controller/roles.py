"""The OpenFlow role of each of our switch connections, and whether we may write to it.

With one controller (no etcd) roles are not used: every connection stays EQUAL, as OVS
starts it, and everything may be written (`enforced=False`). With mastership on
(controller/ha.py), a connection may be written only once the switch confirmed it as
MASTER with the generation id of our mastership key, and only while our etcd lease is
surely alive (`fenced()` false). Until then it is neither programmed nor are its packet-ins
answered; `Switches` asks `may_write` before every bundle, flow delete and packet-out.

`assign` sends the role request and waits for the reply (blocking: the HA loop's thread
calls it, never an event handler). SLAVE is sent with the generation id the switch holds
(read with ROLE_REQUEST NOCHANGE) or the newer one of the host's current master: OVS refuses
any MASTER or SLAVE request older than the id it holds, and keeps the newest it accepted.
`demoted` (the switch told us, by a role-status message or an IS_SLAVE error, that another
controller is master) and `connected` make a connection unwritable at once, under the lock,
before anything else happens. The state is per datapath object, so a reconnect starts over.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from controller.mastership import Role, slave_generation
from controller.switches import OpenFlowError, Switches

LOG = logging.getLogger("loris.roles")
ROLE_STATUS_EXP_TYPE = 1911          # ONF EXT-191 role status (OVS sends it in OpenFlow 1.3)
ROLE_NAMES = {Role.MASTER: "master", Role.SLAVE: "slave", None: "equal"}


class Roles:
    def __init__(self, switches: Switches, enforced: bool,
                 fenced: Callable[[], bool] = lambda: False, timeout: float = 3.0) -> None:
        self.switches = switches
        self.enforced = enforced
        self.fenced = fenced
        self.timeout = timeout
        self._lock = threading.Lock()
        self._state: dict[int, tuple[Any, Role | None, int | None]] = {}

    # ---- event-handler side: memory only ---------------------------------------------------
    def connected(self, dp: Any) -> None:
        """A new connection is EQUAL on the switch; for us it is unwritable until MASTER."""
        with self._lock:
            self._state[dp.id] = (dp, None, None)

    def disconnected(self, dp: Any) -> None:
        with self._lock:
            if self._state.get(dp.id, (None,))[0] is dp:
                del self._state[dp.id]

    def demoted(self, dp: Any, generation: int | None = None) -> bool:
        """The switch made another controller master of `dp`: stop writing now. True when
        we believed we were master."""
        with self._lock:
            entry = self._state.get(dp.id)
            if entry is None or entry[0] is not dp:
                return False
            was_master = entry[1] is Role.MASTER
            self._state[dp.id] = (dp, Role.SLAVE, generation if generation is not None
                                  else entry[2])
        if was_master:
            LOG.warning("datapath %#018x: another controller became master%s; we stop "
                        "programming it", dp.id,
                        f" (generation {generation})" if generation is not None else "")
        return was_master

    # ---- any thread ---------------------------------------------------------------------------
    def may_write(self, dp: Any) -> bool:
        if not self.enforced:
            return True
        with self._lock:
            entry = self._state.get(dp.id)
        return (entry is not None and entry[0] is dp and entry[1] is Role.MASTER
                and not self.fenced())

    def role(self, dpid: int) -> tuple[Any, Role | None, int | None] | None:
        """(datapath, role, generation) of our connection to `dpid`, None if not connected."""
        with self._lock:
            return self._state.get(dpid)

    def role_name(self, dpid: int) -> str | None:
        """'master', 'slave' or 'equal' (not yet assigned) for views; None: not connected."""
        entry = self.role(dpid)
        if entry is None:
            return None
        if not self.enforced:
            return "equal"
        return ROLE_NAMES[entry[1]]

    # ---- the HA loop: blocks ----------------------------------------------------------------
    def assign(self, dp: Any, role: Role, generation: int | None = None,
               known: int | None = None) -> int:
        """Make `dp` MASTER with `generation`, or SLAVE (with the switch's id, or `known`
        when newer); returns the generation the switch confirmed. OpenFlowError when it
        refused (a stale id: a newer master exists) or did not answer."""
        ofp = dp.ofproto
        if role is Role.SLAVE:
            self._set(dp, Role.SLAVE, None, only_if_current=True)     # stop writing first
            held = self._request(dp, ofp.OFPCR_ROLE_NOCHANGE, 0).generation_id
            generation = slave_generation(held, known)
            code = ofp.OFPCR_ROLE_SLAVE
        else:
            if generation is None:
                raise ValueError("MASTER needs the generation id of the mastership key")
            code = ofp.OFPCR_ROLE_MASTER
        reply = self._request(dp, code, generation)
        if reply.role != code:
            raise OpenFlowError(f"datapath {dp.id:#018x} answered role {reply.role} to a "
                                f"request for {role.value}")
        self._set(dp, role, reply.generation_id)
        return reply.generation_id

    def _request(self, dp: Any, role_code: int, generation: int) -> Any:
        msg = dp.ofproto_parser.OFPRoleRequest(dp, role_code, generation)
        replies = self.switches.request(dp, msg, self.timeout)
        if not replies:
            raise OpenFlowError(f"datapath {dp.id:#018x} sent no role reply")
        return replies[-1]

    def _set(self, dp: Any, role: Role, generation: int | None,
             only_if_current: bool = False) -> None:
        with self._lock:
            entry = self._state.get(dp.id)
            if entry is None or entry[0] is not dp:
                if only_if_current:
                    return
                raise OpenFlowError(f"datapath {dp.id:#018x} reconnected meanwhile")
            self._state[dp.id] = (dp, role, generation if generation is not None else entry[2])


def role_status(msg: Any) -> tuple[int, int] | None:
    """(role, generation id) of an ONF role-status experimenter message; None otherwise.
    os-ken 3.x has no class for it in OpenFlow 1.3: data = role u32, reason u8, pad 3,
    generation id u64."""
    from controller.switches import ONF_EXPERIMENTER_ID

    if getattr(msg, "experimenter", None) != ONF_EXPERIMENTER_ID or \
            getattr(msg, "exp_type", None) != ROLE_STATUS_EXP_TYPE:
        return None
    data = bytes(msg.data or b"")
    if len(data) < 16:
        return None
    return int.from_bytes(data[0:4], "big"), int.from_bytes(data[8:16], "big")
