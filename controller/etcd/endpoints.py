"""Which etcd member to ask, and what an answer (or its absence) means: pure decisions, the
time passed in, so that the failover rules are tested without a cluster or a clock.

`judge_answer` and `judge_exception` sort every outcome of one request into a `Verdict`:

- OK; RETRY: certainly not applied (refused connection, "no leader" from a member asked
  with `Grpc-Metadata-Hasleader: true`, "too many requests"): ask another member;
- UNKNOWN: sent, and no answer that says what happened (read timeout, connection lost,
  etcd's "request timed out", other 5xx): a read asks another member, a write reports
  OutcomeUnknown, because etcd may apply it later (seen: a put to a member without quorum
  timed out and was applied when quorum returned);
- REAUTH: the auth token expired or is unknown: authenticate again and resend once;
- COMPACTED, LEASE_NOT_FOUND, AUTH_FAILED, REFUSED: a final answer, raised as such.

`EndpointSet` keeps the client on one member (its keep-alive connection) until that member
fails; a member that did not answer then rests for `cooldown` seconds: while any member is
not resting, calls skip the resting ones, so that a member that hangs (SIGSTOP, partition)
costs one timeout per cooldown, not one per call. A member that answers "no leader" does
not rest: when quorum is lost, calls fail at once on it, and succeed on it once quorum is
back.
"""

from __future__ import annotations

import enum
import threading
import urllib.parse
from collections.abc import Sequence

import requests
import urllib3.exceptions

from controller.etcd.adapter import failure_reason


class Verdict(enum.Enum):
    OK = "ok"
    RETRY = "retry"
    UNKNOWN = "unknown"
    REAUTH = "reauth"
    COMPACTED = "compacted"
    LEASE_NOT_FOUND = "lease_not_found"
    AUTH_FAILED = "auth_failed"
    REFUSED = "refused"


# gRPC codes etcd uses (google.golang.org/grpc/codes).
INVALID_ARGUMENT, NOT_FOUND, OUT_OF_RANGE, UNAVAILABLE, UNAUTHENTICATED = 3, 5, 11, 14, 16

# etcd errors returned before a request reaches raft: nothing was applied.
NOT_APPLIED = ("etcdserver: no leader", "etcdserver: not capable",
               "etcdserver: too many requests")


def judge_answer(status: int, code: int | None, message: str) -> Verdict:
    """What an HTTP answer of the gateway means (`code`, `message` from codec.parse_error)."""
    if 200 <= status < 300:
        return Verdict.OK
    text = message.lower()
    if "compacted" in text and (code == OUT_OF_RANGE or status == 400):
        return Verdict.COMPACTED
    if "lease not found" in text or (code == NOT_FOUND and status == 404):
        return Verdict.LEASE_NOT_FOUND
    if "invalid auth token" in text or (code == UNAUTHENTICATED and "token" in text):
        return Verdict.REAUTH
    if "authentication failed" in text or "user name is empty" in text \
            or code == UNAUTHENTICATED or status == 401:
        return Verdict.AUTH_FAILED
    if any(m in text for m in NOT_APPLIED) or status == 429:
        return Verdict.RETRY
    if status >= 500:
        return Verdict.UNKNOWN
    return Verdict.REFUSED


def judge_exception(error: requests.RequestException) -> tuple[Verdict, str]:
    """What a request that got no HTTP answer means, and why in a few words: RETRY when the
    connection was never made (so nothing was sent), UNKNOWN otherwise."""
    reason, tls = failure_reason(error)
    if isinstance(error, requests.ConnectTimeout) or tls:
        return Verdict.RETRY, reason
    if isinstance(error, requests.Timeout):
        return Verdict.UNKNOWN, reason
    cause = _innermost(error)
    if isinstance(cause, (urllib3.exceptions.NewConnectionError,
                          urllib3.exceptions.NameResolutionError, ConnectionRefusedError)):
        return Verdict.RETRY, reason
    return Verdict.UNKNOWN, reason


def _innermost(error: BaseException) -> BaseException:
    seen: set[int] = set()
    while id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, urllib3.exceptions.NewConnectionError):
            return error
        nxt = getattr(error, "reason", None)
        if not isinstance(nxt, BaseException):
            nxt = next((a for a in error.args if isinstance(a, BaseException)), None)
        if nxt is None:
            return error
        error = nxt
    return error


def normalize_endpoint(text: str, tls: bool = False) -> str:
    """`host:port` or a URL, as `scheme://host:port` (https when `tls`, port 2379 when
    none is given). Raises ValueError naming the endpoint when it is not one."""
    url = text.strip()
    if "://" not in url:
        url = ("https://" if tls else "http://") + url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or \
            parts.path not in ("", "/") or parts.query:
        raise ValueError(f"etcd endpoint {text!r}: give host:port or http(s)://host:port")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{parts.port or 2379}"


class EndpointSet:
    """The members to ask, the current one first (see the module docstring)."""

    def __init__(self, urls: Sequence[str], cooldown: float = 5.0) -> None:
        if not urls:
            raise ValueError("no etcd endpoints given")
        if len(set(urls)) != len(urls):
            raise ValueError(f"etcd endpoints repeat: {', '.join(urls)}")
        self.urls = tuple(urls)
        self.cooldown = cooldown
        self._current = 0
        self._failed_at: dict[str, float] = {}
        self._last_error: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def current(self) -> str:
        with self._lock:
            return self.urls[self._current]

    def resting(self, url: str, now: float) -> bool:
        with self._lock:
            return self._resting(url, now)

    def _resting(self, url: str, now: float) -> bool:
        failed = self._failed_at.get(url)
        return failed is not None and now - failed < self.cooldown

    def suspect(self, url: str) -> bool:
        """`url` failed the last time it was asked (and has not served a request since)."""
        with self._lock:
            return url in self._last_error

    def order(self, now: float) -> list[str]:
        """The members to try for one call, in turn: those not resting, from the current
        one round the list; when every member rests, all of them, the one that failed
        longest ago first."""
        with self._lock:
            ring = [self.urls[(self._current + i) % len(self.urls)]
                    for i in range(len(self.urls))]
            awake = [u for u in ring if not self._resting(u, now)]
            if awake:
                return awake
            return sorted(ring, key=lambda u: self._failed_at[u])

    def failed(self, url: str, now: float, reason: str, *, answered: bool = False) -> None:
        """`url` did not serve a request: the current member moves on. A member that did
        not answer (refused, timed out) rests; one that answered at once that it cannot
        serve (no leader) does not, so that while no member can serve, calls fail fast
        on it rather than wait for those that hang."""
        with self._lock:
            self._last_error[url] = reason
            if not answered:
                self._failed_at[url] = now
            if self.urls[self._current] == url:
                for i in range(1, len(self.urls) + 1):
                    candidate = (self._current + i) % len(self.urls)
                    if not self._resting(self.urls[candidate], now):
                        self._current = candidate
                        break

    def succeeded(self, url: str) -> None:
        """`url` served a request: it is healthy, and the current member."""
        with self._lock:
            self._failed_at.pop(url, None)
            self._last_error.pop(url, None)
            self._current = self.urls.index(url)

    def last_errors(self) -> dict[str, str]:
        with self._lock:
            return dict(self._last_error)
