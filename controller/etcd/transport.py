"""HTTP plumbing of the etcd client: TLS settings, a pool of keep-alive sessions shared by
threads, and sockets that another thread can shut down (how a watch is canceled).

Sessions: a `requests.Session` is not meant to be used by two threads at once, and the
controller runs one green thread per REST request, so a call borrows a session from
`SessionPool` and gives it back: connections are reused without being shared. Sessions
use the etcd adapter (controller/etcd/adapter.py): trust exactly the CA given, sockets from
the caller's factory (the lab makes them in its control namespace).

Cancel: a watch blocks in a read on its stream for up to its idle timeout. `ShutdownSockets`
is the socket factory of a watch's session: it keeps a duplicate of each socket it makes, so
`shutdown()` from another thread ends the blocked read at once (the read sees the end of the
stream), on plain threads and under eventlet alike, TLS or not.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import requests

from controller.etcd.adapter import Transport
from hostagent.transport import SocketFactory


def tls_context(ca_cert: str | None, client_cert: str | None,
                client_key: str | None) -> ssl.SSLContext:
    """Verify members against `ca_cert` (else the system's CAs); present `client_cert`
    (with `client_key`, or a key inside the certificate file) when given."""
    if client_key and not client_cert:
        raise ValueError("an etcd client key was given without its certificate")
    try:
        ctx = ssl.create_default_context(cafile=ca_cert or None)
        if client_cert:
            ctx.load_cert_chain(client_cert, client_key or None)
    except (OSError, ssl.SSLError) as e:
        raise ValueError(f"cannot load the etcd TLS files (CA {ca_cert}, certificate "
                         f"{client_cert}, key {client_key}): {e}") from None
    return ctx


def new_session(tls: ssl.SSLContext | None, factory: SocketFactory | None) -> requests.Session:
    session = requests.Session()
    session.trust_env = False         # no proxies, .netrc or CA bundles from the environment
    adapter = Transport(tls, factory)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class SessionPool:
    """Idle sessions, each used by one thread at a time; at most `keep` stay idle."""

    def __init__(self, tls: ssl.SSLContext | None, factory: SocketFactory | None,
                 keep: int = 8) -> None:
        self._tls = tls
        self._factory = factory
        self._keep = keep
        self._idle: list[requests.Session] = []
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def session(self) -> Iterator[requests.Session]:
        with self._lock:
            session = self._idle.pop() if self._idle else None
        if session is None:
            session = new_session(self._tls, self._factory)
        ok = False
        try:
            yield session
            ok = True
        finally:
            # A session whose request failed may hold a broken connection: drop it.
            with self._lock:
                keep = ok and not self._closed and len(self._idle) < self._keep
                if keep:
                    self._idle.append(session)
            if not keep:
                session.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
            self._closed = True
        for session in idle:
            session.close()


class ShutdownSockets:
    """A socket factory whose sockets `shutdown()` ends from any thread (see above)."""

    def __init__(self, factory: SocketFactory | None) -> None:
        self._factory = factory
        self._dups: list[socket.socket] = []
        self._lock = threading.Lock()
        self._shut = False

    def __call__(self, family: int, type_: int) -> socket.socket:
        with self._lock:
            if self._shut:
                raise OSError("the watch was canceled")
        sock = self._factory(family, type_) if self._factory else socket.socket(family, type_)
        with self._lock:
            self._dups.append(socket.socket(fileno=os.dup(sock.fileno())))
        return sock

    def shutdown(self) -> None:
        with self._lock:
            self._shut = True
            dups = list(self._dups)
        for dup in dups:
            _shutdown(dup)

    def close(self) -> None:
        """Close the duplicates (the connections close with their own sockets)."""
        with self._lock:
            dups, self._dups = self._dups, []
        for dup in dups:
            dup.close()


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass                          # not connected yet, or already closed
