"""Doing one thing inside another network namespace without moving this process.

setns() switches only the calling thread, so the work runs in a short-lived helper thread
that entered the namespace (pyroute2's `setns`) and ends right after: the caller's threads
never change namespace. What that work creates keeps its namespace for good; a socket made
there stays in it whichever thread uses it afterwards.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def call_in_netns(netns_path: str, fn: Callable[[], T]) -> T:
    """Call `fn` in a helper thread inside the network namespace `netns_path` (e.g.
    /run/netns/<name> or /proc/<pid>/ns/net) and return its result or raise its error."""
    # Imported here: pyroute2 takes about 0.3 s to import, and most users of the lab
    # (`loris-lab down`, say) never need it.
    from pyroute2 import netns as pyroute2_netns

    outcome: dict[str, object] = {}

    def enter_and_call() -> None:
        try:
            # flags=0: never create the namespace (pyroute2's default would make a missing
            # one); a missing path raises FileNotFoundError instead.
            pyroute2_netns.setns(netns_path, flags=0)
            outcome["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    helper = threading.Thread(target=enter_and_call, name="lab-netns")
    helper.start()
    helper.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def socket_in_netns(netns_path: str, family: int = socket.AF_INET,
                    type: int = socket.SOCK_STREAM, proto: int = 0) -> socket.socket:
    """A socket that lives in the network namespace `netns_path`."""
    return call_in_netns(netns_path, lambda: socket.socket(family, type, proto))
