"""The host's veths, kept in memory instead of dumped on every pass.

A pass needs two things from the kernel's link table: the Loris veths (to remove those of
ports no longer desired) and each port's host-side veth index (a port whose veth was
re-made or vanished is looked at again). Dumping every link for that costs the agent time
that grows with the ports on its host (pyroute2 decodes each link in Python: ~150 ms at
200 ports). `LinkIndex` dumps once, then follows the kernel's link events (RTNLGRP_LINK)
in a thread of its own, and is told what the agent itself made and deleted, so a pass
reads it for free. `refresh()` dumps again (the agent does so on its periodic passes:
an event lost by an overflowing socket cannot stay wrong for long).

Without the event thread (`start()` not called, or the thread lost its socket), every read
dumps, as before: nothing relies on the events for correctness, only for speed.
"""

from __future__ import annotations

import logging
import threading

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl import RTMGRP_LINK

from flows import contract

log = logging.getLogger(__name__)


def _kind(link) -> str | None:
    info = link.get("IFLA_LINKINFO")
    return info.get("IFLA_INFO_KIND") if info else None


def _is_loris(link) -> bool:
    return (link.get("IFLA_IFALIAS") or "").startswith(contract.PORT_ALIAS_PREFIX)


class LinkIndex:
    def __init__(self, live: bool = False) -> None:
        """`live`: the index starts as if it followed events (a test that feeds `event()`
        itself); `start()` makes it so for real."""
        self._lock = threading.Lock()
        self._veths: dict[str, tuple[int, bool]] = {}   # name -> (ifindex, Loris alias)
        self._names: dict[int, str] = {}                 # ifindex -> name
        self._live = live                                # events being followed

    # ---- reads --------------------------------------------------------------------------
    def veths(self) -> dict[str, int]:
        """Name -> ifindex of the veths here."""
        self._fresh()
        with self._lock:
            return {name: index for name, (index, _) in self._veths.items()}

    def loris_veths(self) -> list[str]:
        """Names of the veths whose alias marks them as Loris ports."""
        self._fresh()
        with self._lock:
            return [name for name, (_, loris) in self._veths.items() if loris]

    def index_of(self, name: str) -> int | None:
        self._fresh()
        with self._lock:
            found = self._veths.get(name)
        return found[0] if found else None

    @property
    def live(self) -> bool:
        return self._live

    # ---- what the agent did itself --------------------------------------------------------
    def made(self, name: str, index: int, loris: bool = True) -> None:
        with self._lock:
            self._put(name, index, loris)

    def gone(self, name: str) -> None:
        with self._lock:
            found = self._veths.pop(name, None)
            if found:
                self._names.pop(found[0], None)

    # ---- kernel ---------------------------------------------------------------------------
    def refresh(self) -> None:
        """Replace the index with one dump of the links."""
        with IPRoute() as ipr:
            links = [(link.get("IFLA_IFNAME"), link["index"], _is_loris(link))
                     for link in ipr.get_links() if _kind(link) == "veth"]
        with self._lock:
            self._veths, self._names = {}, {}
            for name, index, loris in links:
                self._put(name, index, loris)

    def start(self, stop: threading.Event, timeout: float = 10.0) -> bool:
        """Follow link events in a daemon thread; returns once the index is filled (False if
        the thread could not start in time: reads then keep dumping)."""
        ready = threading.Event()
        threading.Thread(target=self._follow, args=(stop, ready), name="link-events",
                         daemon=True).start()
        return ready.wait(timeout)

    def _fresh(self) -> None:
        if not self._live:
            self.refresh()

    def _put(self, name: str, index: int, loris: bool) -> None:
        old = self._names.get(index)
        if old is not None and old != name:         # renamed
            self._veths.pop(old, None)
        self._veths[name] = (index, loris)
        self._names[index] = name

    def _follow(self, stop: threading.Event, ready: threading.Event) -> None:
        while not stop.is_set():
            try:
                # the socket is made in this thread (pyroute2 ties it to its maker's loop)
                # and bound before the dump, so no change between the two is missed
                with IPRoute() as events:
                    events.bind(groups=RTMGRP_LINK)
                    self.refresh()
                    self._live = True
                    ready.set()
                    while not stop.is_set():
                        for msg in events.get():
                            self.event(msg)
            except Exception as e:          # keep the agent going; reads dump meanwhile
                self._live = False
                log.warning("following link events failed (%s); reads dump until it is back",
                            e)
                stop.wait(1.0)
        self._live = False

    def event(self, msg) -> None:
        """Take in one netlink link message (RTM_NEWLINK / RTM_DELLINK)."""
        index, name = msg.get("index"), msg.get("IFLA_IFNAME")
        with self._lock:
            if msg.get("event") == "RTM_DELLINK":
                gone = self._names.pop(index, None)
                if gone is not None:
                    self._veths.pop(gone, None)
                return
            if msg.get("event") != "RTM_NEWLINK" or name is None:
                return
            kind = _kind(msg)
            known = self._names.get(index)
            if kind == "veth" or (kind is None and known is not None):
                loris = _is_loris(msg) or (known is not None and self._veths[known][1]
                                           and msg.get("IFLA_IFALIAS") is None)
                self._put(name, index, loris)
            elif known is not None:          # same index, no longer a veth: not ours
                self._veths.pop(known, None)
                self._names.pop(index, None)
