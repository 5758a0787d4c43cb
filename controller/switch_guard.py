"""Which switches may hold an OpenFlow session: a revoked host's may not, and over TLS a
host's switch must present the certificate its agent declared (docs/security.md).

The decision runs in os-ken's event handler when a datapath comes up, so it reads memory
only: an immutable snapshot of the revoked hosts and of the certificate fingerprints the
agents declared at registration, swapped whole by `update()` (after a change through the
API, and every few seconds to catch the admin command's changes in another process).

- A datapath a revoked host registered is refused, with or without TLS.
- Over TLS, a certificate whose CN (the host id) names a revoked host is refused; one that
  names another host than the datapath's owner is refused (auth.switch_may_claim); and
  if the host's agent declared its certificate's SHA-256, only that certificate is taken
  (an allow-list of one per host: a stolen older certificate stops working as soon as the
  host is given a new one). A host whose agent declared nothing (an agent older than this
  rule) is taken on its CN alone, as before.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.auth import switch_may_claim


def fingerprint(der: bytes | None) -> str | None:
    """The SHA-256 of a certificate's DER bytes, as `CERT_SHA256` writes it."""
    return hashlib.sha256(der).hexdigest() if der else None


def close_session(dp: Any) -> None:
    """End a datapath's OpenFlow session (its switch reconnects and is asked again).

    os-ken's Datapath.close() shuts the socket's write side through the socket object,
    which under TLS unwraps it: the session's receive loop then dies with a traceback
    ("Read on closed or unwrapped SSL socket"). Here the TCP socket beneath TLS is shut
    instead: the receive loop sees the end of the stream and stops quietly."""
    sock = getattr(dp, "socket", None)
    if not isinstance(sock, ssl.SSLSocket):
        dp.close()
        return
    from os_ken.controller.handler import DEAD_DISPATCHER

    dp.set_state(DEAD_DISPATCHER)
    try:            # through a duplicate of the descriptor: the TLS object is left alone
        with socket.fromfd(sock.fileno(), sock.family, sock.type) as raw:
            raw.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


@dataclass(frozen=True)
class Snapshot:
    revoked: frozenset[str] = frozenset()
    certs: Mapping[str, str] = field(default_factory=dict)     # host -> declared SHA-256


class SwitchGuard:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot = Snapshot()

    def update(self, revoked: frozenset[str], certs: Mapping[str, str]) -> frozenset[str]:
        """Swap in the store's current view; the hosts revoked since the last one."""
        new = Snapshot(frozenset(revoked), dict(certs))
        with self._lock:
            old, self._snapshot = self._snapshot, new
        return new.revoked - old.revoked

    def revoked(self, host_id: str) -> bool:
        return host_id in self._snapshot.revoked

    def refusal(self, dpid: int, owner: str | None, tls: bool, cert_host: str | None = None,
                cert_sha256: str | None = None) -> str | None:
        """Why the datapath `dpid` (registered by `owner`, if any) gets no session, or None.
        Over TLS `cert_host` is its certificate's CN and `cert_sha256` its fingerprint."""
        snap = self._snapshot
        if owner is not None and owner in snap.revoked:
            return f"it belongs to host {owner}, whose credentials are revoked"
        if not tls:
            return None
        if cert_host is not None and cert_host in snap.revoked:
            return f"its certificate is host {cert_host}'s, whose credentials are revoked"
        if not switch_may_claim(cert_host, dpid, owner):
            return (f"its certificate (CN {cert_host}) belongs to another host than the one "
                    f"that owns this datapath id ({owner})")
        declared = snap.certs.get(cert_host or "")
        if declared is not None and cert_sha256 != declared:
            return (f"its certificate (CN {cert_host}, sha256 {(cert_sha256 or '?')[:16]}...) "
                    f"is not the one host {cert_host}'s agent declared ({declared[:16]}...); "
                    "restart the agent with the host's current certificate")
        return None
