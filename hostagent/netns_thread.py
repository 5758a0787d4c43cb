"""Doing one thing inside another network namespace without moving the caller's thread.

setns() switches only the calling thread, so the work runs in a short-lived helper thread
that entered the namespace and ends right after: the caller's threads never change
namespace. What that work creates keeps its namespace for good (a netlink socket, a TCP
socket stays in it whichever thread uses it afterwards). The agent (hostagent/netdev.py)
and the lab (lab/netns.py) both go through `call_in_netns_fd`.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def call_in_netns_fd(netns_fd: int, fn: Callable[[], T],
                     cannot_enter: Callable[[str], BaseException] = OSError) -> T:
    """`fn()` called in a helper thread inside the namespace `netns_fd` refers to; its
    result, or its error raised here. The caller holds the fd (so the namespace cannot
    vanish meanwhile); a failing setns raises `cannot_enter(reason)`."""
    outcome: dict[str, object] = {}

    def enter_and_call() -> None:
        try:
            if _libc.setns(netns_fd, CLONE_NEWNET) != 0:
                raise cannot_enter(os.strerror(ctypes.get_errno()))
            outcome["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    helper = threading.Thread(target=enter_and_call, name="netns")
    helper.start()
    helper.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
