"""The lab's sockets and calls inside a simulated host's network namespace, through the
agent's helper-thread mechanism (hostagent/netns_thread.py): this process never moves."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import TypeVar

from hostagent.netns_thread import call_in_netns_fd

T = TypeVar("T")


def call_in_netns(netns_path: str, fn: Callable[[], T]) -> T:
    """Call `fn` in a helper thread inside the network namespace `netns_path` (e.g.
    /run/netns/<name> or /proc/<pid>/ns/net) and return its result or raise its error
    (FileNotFoundError when the namespace does not exist)."""
    fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return call_in_netns_fd(fd, fn)
    finally:
        os.close(fd)


def socket_in_netns(netns_path: str, family: int = socket.AF_INET,
                    type: int = socket.SOCK_STREAM, proto: int = 0) -> socket.socket:
    """A socket that lives in the network namespace `netns_path`."""
    return call_in_netns(netns_path, lambda: socket.socket(family, type, proto))
