"""The etcd client's `requests` adapter: trust exactly the CAs it is given, take sockets from
a caller's factory (the lab makes them in its control namespace), and say in a few words why
a request failed.

The etcd JSON gateway is spoken through `requests` (streamed watches, connection pools); the
Loris REST client has its own lighter transport (hostagent/transport.py) for the CLI's
start-up. Both take the same `SocketFactory`.

Trust: a TLS member is verified with one `ssl.SSLContext` (the CA given, else the system's
CAs), never with requests' bundled `certifi` CAs.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

import requests
import requests.adapters
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions

from hostagent.transport import SocketFactory, connect_with


class Transport(requests.adapters.HTTPAdapter):
    """Keep-alive connection pools with `tls` as the only trust, sockets from `socket_factory`
    when one is given. No retries: each request is sent once, as the callers expect."""

    def __init__(self, tls: ssl.SSLContext | None = None,
                 socket_factory: SocketFactory | None = None) -> None:
        # Set before HTTPAdapter.__init__, which calls init_poolmanager.
        self._tls = tls
        self._socket_factory = socket_factory
        super().__init__(pool_connections=1, max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False,
                         **pool_kwargs: Any) -> None:
        if self._tls is not None:
            pool_kwargs["ssl_context"] = self._tls
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        if self._socket_factory is not None:
            self.poolmanager.pool_classes_by_scheme = _pools_with(self._socket_factory)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        if self._tls is not None:
            proxy_kwargs.setdefault("ssl_context", self._tls)
        return super().proxy_manager_for(proxy, **proxy_kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # requests would load its certifi bundle into the pool; our SSLContext already holds
        # the CAs to trust and checks the hostname.
        if url.lower().startswith("https"):
            conn.cert_reqs = "CERT_REQUIRED"
            conn.ca_certs = None
            conn.ca_cert_dir = None


def _pools_with(factory: SocketFactory) -> dict[str, type]:
    """urllib3 pool classes whose connections take their socket from `factory`."""

    def new_conn(conn: urllib3.connection.HTTPConnection) -> socket.socket:
        timeout = conn.timeout if isinstance(conn.timeout, int | float) else None
        try:
            sock = connect_with(factory, conn.host, conn.port, timeout)
            for option in conn.socket_options or ():    # urllib3's: TCP_NODELAY
                sock.setsockopt(*option)
            return sock
        except socket.gaierror as e:
            raise urllib3.exceptions.NameResolutionError(conn.host, conn, e) from e
        except TimeoutError as e:
            raise urllib3.exceptions.ConnectTimeoutError(
                conn, f"Connection to {conn.host} timed out. (connect timeout={timeout})") from e
        except OSError as e:
            raise urllib3.exceptions.NewConnectionError(
                conn, f"Failed to establish a new connection: {e}") from e

    http = type("FactoryHTTPConnection", (urllib3.connection.HTTPConnection,),
                {"_new_conn": new_conn})
    https = type("FactoryHTTPSConnection", (urllib3.connection.HTTPSConnection,),
                 {"_new_conn": new_conn})
    return {
        "http": type("FactoryHTTPConnectionPool", (urllib3.connectionpool.HTTPConnectionPool,),
                     {"ConnectionCls": http}),
        "https": type("FactoryHTTPSConnectionPool",
                      (urllib3.connectionpool.HTTPSConnectionPool,), {"ConnectionCls": https}),
    }


def failure_reason(error: requests.RequestException) -> tuple[str, bool]:
    """What went wrong, in a few words, and whether it was TLS: the innermost OSError or
    ssl.SSLError under requests' and urllib3's wrappers ("[Errno 111] Connection refused",
    "[SSL: CERTIFICATE_VERIFY_FAILED] ..."); "timed out" for any timeout."""
    if isinstance(error, requests.Timeout):
        return "timed out", False
    cause: BaseException = error
    seen: set[int] = set()
    while id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLError):
            return str(cause), True
        if isinstance(cause, OSError) and not isinstance(cause, requests.RequestException):
            return str(cause), False
        inner = _inner(cause)
        if inner is None:
            break
        cause = inner
    return str(cause) or type(cause).__name__, isinstance(error, requests.exceptions.SSLError)


def _inner(error: BaseException) -> BaseException | None:
    reason = getattr(error, "reason", None)
    if isinstance(reason, BaseException):
        return reason
    for arg in error.args:
        if isinstance(arg, BaseException):
            return arg
    return error.__cause__ or error.__context__
