"""HTTP/1.1 transport of the REST client (hostagent/client.py): one keep-alive connection,
written on `socket` alone. Neither `requests` nor `http.client` (which loads the `email`
package to parse headers): the `loris` CLI starts in a fraction of the time, and `ssl` is
loaded only for an https controller.

`Connection(scheme, host, port, tls=None, socket_factory=None, proxy=None)`, opened on
first use and again after it was closed:

- trust: an https controller is verified with one `ssl.SSLContext` (the CA of `--ca-cert`,
  else the system's CAs) and the URL's host name, nothing else;
- socket factory: `socket_factory(family, type)` returns a new, unconnected socket; the
  connection resolves the address, sets TCP_NODELAY and the connect timeout, connects and,
  for https, wraps the socket in TLS. The lab passes one that creates the socket inside a
  network namespace (the socket stays there whichever thread uses it);
- proxy: an http controller is asked through the proxy with absolute URLs, an https one
  through a CONNECT tunnel (`environ_proxy(url)` reads the environment as urllib does);
- answers: a status line, headers, then a body framed by Content-Length, chunked, or the
  end of the connection; 1xx answers are skipped;
- a connection the server closed while idle is noticed before the next request and opened
  anew (as urllib3's pool did); a request is never sent twice.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import urllib.parse
from collections.abc import Callable

TYPE_CHECKING = False   # annotations only: ssl is imported when an https controller is used
if TYPE_CHECKING:
    import ssl

SocketFactory = Callable[[int, int], socket.socket]
"""(address family, socket type) -> a new unconnected socket, e.g. one in another netns."""

_MAX_LINE = 65536
_MAX_HEADERS = 100
_CHUNK = 65536


class ProtocolError(ConnectionError):
    """The other end broke HTTP/1.1: closed without answering, or answered malformed."""


class Connection:
    """One keep-alive connection to the controller (see the module docstring)."""

    def __init__(self, scheme: str, host: str, port: int, *, tls: ssl.SSLContext | None = None,
                 socket_factory: SocketFactory | None = None, proxy: str | None = None) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port
        self._tls = tls if scheme == "https" else None
        self._socket_factory = socket_factory
        self._proxy: tuple[str, int] | None = None
        if proxy:
            parts = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
            self._proxy = (parts.hostname or "", parts.port or 80)
        self._netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.sock: socket.socket | None = None
        self._buffer = bytearray()

    # -- the socket
    def _open(self, timeout: float) -> None:
        address = self._proxy or (self.host, self.port)
        if self._socket_factory is not None:
            sock = connect_with(self._socket_factory, *address, timeout)
        else:
            sock = socket.create_connection((resolvable(address[0]), address[1]), timeout)
        self.sock = sock
        self._buffer.clear()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._proxy and self._tls is not None:
            sock.sendall(f"CONNECT {self._netloc} HTTP/1.1\r\nHost: {self._netloc}\r\n\r\n"
                         .encode("ascii"))
            status, reason, _ = self._read_head()
            if status != 200:
                raise ProtocolError(f"proxy {address[0]}:{address[1]} refused the tunnel: "
                                    f"{status} {reason}")
            self._buffer.clear()
        if self._tls is not None:
            self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)

    def close(self) -> None:
        sock, self.sock = self.sock, None
        self._buffer.clear()
        if sock is not None:
            sock.close()

    def dropped(self) -> bool:
        """True when the open socket was closed by the server (or has unread bytes, which
        a clean keep-alive connection never has): it must not be used again."""
        if self.sock is None:
            return False
        if self._buffer:
            return True
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    # -- one request
    def exchange(self, method: str, target: str, body: bytes | None, headers: dict[str, str],
                 timeout: float) -> tuple[int, str, bytes]:
        """Send one request and read its whole answer: (status, reason, body). Raises
        OSError (ssl.SSLError, TimeoutError, ProtocolError...); the connection is then
        closed."""
        if self.dropped():
            self.close()
        try:
            if self.sock is None:
                try:
                    self._open(timeout)
                except OSError as e:
                    e.loris_request_sent = False     # see request_sent()
                    raise
            assert self.sock is not None
            self.sock.settimeout(timeout)
            if self._proxy and self._tls is None:
                target = f"{self.scheme}://{self._netloc}{target}"
            self.sock.sendall(self._head(method, target, body, headers) + (body or b""))
            while True:
                status, reason, fields = self._read_head()
                if status >= 200:
                    break
            data, keep = self._read_body(method, status, fields)
        except BaseException:
            self.close()
            raise
        if not keep:
            self.close()
        return status, reason, data

    def _head(self, method: str, target: str, body: bytes | None,
              headers: dict[str, str]) -> bytes:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self._netloc}",
                 "Accept-Encoding: identity"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    # -- reading the answer
    def _fill(self) -> bool:
        assert self.sock is not None
        data = self.sock.recv(_CHUNK)
        self._buffer += data
        return bool(data)

    def _line(self) -> bytes:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end + 1])
                del self._buffer[:end + 1]
                return line
            if len(self._buffer) > _MAX_LINE:
                raise ProtocolError("the controller answered a line too long")
            if not self._fill():
                line = bytes(self._buffer)
                self._buffer.clear()
                return line

    def _exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            if not self._fill():
                missing = size - len(self._buffer)
                raise ProtocolError(f"the controller closed the connection {missing} bytes "
                                    "before the end of its answer")
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def _read_head(self) -> tuple[int, str, dict[str, str]]:
        line = self._line()
        if not line:
            raise ProtocolError("the controller closed the connection without answering")
        parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ProtocolError(f"the controller answered something not HTTP: {line[:80]!r}")
        fields: dict[str, str] = {"": parts[0]}
        for _ in range(_MAX_HEADERS + 1):
            header = self._line()
            if header in (b"\r\n", b"\n", b""):
                return int(parts[1]), parts[2] if len(parts) > 2 else "", fields
            name, _, value = header.decode("latin-1").partition(":")
            fields[name.strip().lower()] = value.strip()
        raise ProtocolError(f"the controller answered more than {_MAX_HEADERS} headers")

    def _read_body(self, method: str, status: int,
                   fields: dict[str, str]) -> tuple[bytes, bool]:
        """The body and whether the connection can carry another request."""
        connection = fields.get("connection", "").lower()
        keep = (fields[""] != "HTTP/1.0" or "keep-alive" in connection) \
            and "close" not in connection
        if method == "HEAD" or status in (204, 304):
            return b"", keep
        if "chunked" in fields.get("transfer-encoding", "").lower():
            chunks = []
            while True:
                size_text = self._line().split(b";")[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size {size_text[:20]!r}") from None
                if size == 0:
                    while self._line() not in (b"\r\n", b"\n", b""):
                        pass                    # trailers
                    return b"".join(chunks), keep
                chunks.append(self._exactly(size))
                self._line()
        length = fields.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise ProtocolError(f"bad Content-Length {length[:20]!r}")
            return self._exactly(int(length)), keep
        while self._fill():                     # framed by the end of the connection
            pass
        data = bytes(self._buffer)
        self._buffer.clear()
        return data, False


def connect_with(factory: SocketFactory, host: str, port: int,
                 timeout: float | None) -> socket.socket:
    """A socket from `factory` connected to (host, port): each resolved address in turn, as
    socket.create_connection does."""
    last: OSError | None = None
    for family, socktype, _proto, _name, address in socket.getaddrinfo(
            resolvable(host.strip("[]")), port, 0, socket.SOCK_STREAM):
        sock = factory(family, socktype)
        try:
            if timeout is not None:
                sock.settimeout(timeout)
            sock.connect(address)
            return sock
        except OSError as e:
            last = e
            sock.close()
    raise last or OSError(f"no address for {host}")


def resolvable(host: str) -> str | bytes:
    """`host` as getaddrinfo() is given it: an ASCII name or address as bytes, since a str is
    first encoded with the `idna` codec, whose import (unicodedata, stringprep) costs the
    CLI's start-up ~2 ms, more than a local request; a non-ASCII name stays a str (IDNA)."""
    return host.encode("ascii") if host.isascii() else host


def request_sent(error: OSError) -> bool:
    """Whether the request that failed with `error` may have reached the controller: False
    only when the connection could not even be opened (refused, unreachable, TLS handshake),
    so that sending it to another controller cannot apply it twice."""
    return getattr(error, "loris_request_sent", True)


def environ_proxy(url: str) -> str | None:
    """The proxy the environment names for `url` (http_proxy, https_proxy, no_proxy, as
    urllib reads them), or None. urllib.request is imported only when a proxy is set."""
    if not any(name.lower().endswith("_proxy") for name in os.environ):
        return None
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    if urllib.request.proxy_bypass_environment(parts.hostname or "", proxies):
        return None
    return proxies.get(parts.scheme) or proxies.get("all")


def failure_reason(error: OSError) -> tuple[str, bool]:
    """What went wrong, in a few words, and whether it was TLS: "[Errno 111] Connection
    refused", "[SSL: CERTIFICATE_VERIFY_FAILED] ...", "timed out" for any timeout."""
    if isinstance(error, TimeoutError):
        return "timed out", False
    ssl = sys.modules.get("ssl")   # not loaded: there was no TLS, so no TLS error
    if ssl is not None and isinstance(error, ssl.SSLError):
        return str(error), True
    return str(error) or type(error).__name__, False
