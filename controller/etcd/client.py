"""A thin etcd v3 client over the JSON gateway (`/v3/...`) with `requests`.

    client = EtcdClient(["http://10.0.0.1:2379", "http://10.0.0.2:2379"], timeout=5.0,
                        ca_cert=None, client_cert=None, client_key=None,
                        username=None, password=None)
    kv = client.get("/loris/v1/hosts/h1")                       # KeyValue | None
    r = client.txn([key_absent("/loris/v1/idx/ip/7/10.0.0.5")],
                   [Put("/loris/v1/idx/ip/7/10.0.0.5", "port 5")], [Get("/loris/...")])
    r.succeeded, r.revision, r.responses

Every call goes to the current member and fails over to the others (endpoints.py says
when); every request carries `Grpc-Metadata-Hasleader: true`, so a member cut off from its
leader answers "no leader" at once instead of holding the request. A call returns or raises
within `timeout` seconds. With several members, each one asked gets at most
`member_timeout` of it (a healthy member answers in milliseconds; one that hangs, SIGSTOPped
or cut off, must not eat the whole call), and a member that failed last time it was asked
gets only `probe_timeout` once another member has answered that there is no leader: so
without quorum a call fails in about a second, not after `timeout`. Reads fail over on any
failure; a write fails over only when it certainly was not applied, and otherwise raises
`OutcomeUnknown` (errors.py), which callers retry as conditional transactions (compares
make them safe to repeat).

With `username`/`password` the client authenticates (`/v3/auth/authenticate`) before its
first request and again whenever etcd says the token is invalid (tokens expire). TLS:
https endpoints are verified against `ca_cert` (else the system's CAs); `client_cert`/
`client_key` are presented to members that require client certificates.

Threads: calls may come from any number of threads (each borrows a keep-alive session from
a pool); under eventlet (the controller) `requests` is green once monkey-patched, so a call
blocks only its own green thread. A watch (watch.py) runs in a thread of its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import requests

from controller.etcd import codec, ops
from controller.etcd.codec import (
    DeleteResult,
    Json,
    KeyValue,
    Lease,
    LeaseInfo,
    Member,
    MemberStatus,
    PutResult,
    RangeResult,
    TxnResult,
)
from controller.etcd.endpoints import (
    EndpointSet,
    Verdict,
    judge_answer,
    judge_exception,
    normalize_endpoint,
)
from controller.etcd.errors import (
    AuthenticationFailed,
    Compacted,
    LeaseNotFound,
    OutcomeUnknown,
    RequestFailed,
    StoreUnavailable,
)
from controller.etcd.ops import Compare, Get, Op
from controller.etcd.transport import SessionPool, new_session, tls_context
from hostagent.transport import SocketFactory

HASLEADER = {"Grpc-Metadata-Hasleader": "true"}


class EtcdClient:
    """An etcd cluster through its JSON gateway (see the module docstring)."""

    def __init__(self, endpoints: Sequence[str] | str, *, timeout: float = 5.0,
                 connect_timeout: float = 2.0, cooldown: float = 5.0,
                 member_timeout: float = 1.0, probe_timeout: float = 0.25,
                 ca_cert: str | None = None, client_cert: str | None = None,
                 client_key: str | None = None, username: str | None = None,
                 password: str | None = None,
                 socket_factory: SocketFactory | None = None) -> None:
        given = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        wants_tls = bool(ca_cert or client_cert)
        urls = [normalize_endpoint(e, wants_tls) for e in given]
        self.endpoints = EndpointSet(urls, cooldown)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.member_timeout = member_timeout
        self.probe_timeout = probe_timeout
        if (username is None) != (password is None):
            raise ValueError("give both the etcd user name and its password, or neither")
        self._credentials = (username, password) if username is not None else None
        self.tls = (tls_context(ca_cert, client_cert, client_key)
                    if wants_tls or any(u.startswith("https://") for u in urls) else None)
        self.socket_factory = socket_factory
        self._sessions = SessionPool(self.tls, socket_factory)
        self._token: str | None = None
        self._token_lock = threading.Lock()
        self.name = f"etcd store ({', '.join(urls)})"
        self.calls = 0          # calls made (not watches): what a step costs in round trips

    # ----- key-value -----------------------------------------------------------------

    def range(self, key: str | bytes, *, prefix: bool = False,
              range_end: str | bytes | None = None, revision: int = 0, limit: int = 0,
              keys_only: bool = False, count_only: bool = False,
              serializable: bool = False) -> RangeResult:
        """Keys in [key, range_end), or under `prefix`, or `key` alone; at `revision`
        (0: the latest); linearizable unless `serializable`. Compacted when `revision`
        is older than the compaction."""
        get = Get(key, prefix, range_end, revision, limit, keys_only, count_only, serializable)
        return codec.parse_range(self.call("/v3/kv/range", get.fields(), write=False,
                                           revision=revision or None))

    def get(self, key: str | bytes, *, revision: int = 0) -> KeyValue | None:
        kvs = self.range(key, revision=revision).kvs
        return kvs[0] if kvs else None

    def list_prefix(self, prefix: str | bytes, *, page_size: int = 1000) -> RangeResult:
        """Every key under `prefix`, read in pages all at the revision of the first page
        (one consistent snapshot; Compacted if it is compacted meanwhile: list again)."""
        first = self.range(prefix, prefix=True, limit=page_size)
        kvs, revision, page = list(first.kvs), first.revision, first
        end = codec.prefix_end(prefix)
        while page.more and page.kvs:
            start = codec.to_bytes(page.kvs[-1].key) + b"\0"
            page = self.range(start, range_end=end, revision=revision, limit=page_size)
            kvs.extend(page.kvs)
        return RangeResult(revision=revision, kvs=tuple(kvs), count=len(kvs))

    def put(self, key: str | bytes, value: str | bytes, *, lease: int = 0,
            prev_kv: bool = False) -> PutResult:
        body = ops.Put(key, value, lease, prev_kv).fields()
        return codec.parse_put(self.call("/v3/kv/put", body, write=True))

    def delete(self, key: str | bytes, *, prefix: bool = False,
               range_end: str | bytes | None = None, prev_kv: bool = False) -> DeleteResult:
        body = ops.Delete(key, prefix, range_end, prev_kv).fields()
        return codec.parse_delete(self.call("/v3/kv/deleterange", body, write=True))

    def txn(self, compares: Sequence[Compare], success: Sequence[Op] = (),
            failure: Sequence[Op] = ()) -> TxnResult:
        """If every compare holds, do `success`, else `failure`, atomically; the result says
        which (`succeeded`), the revision after it and each operation's response. A key may
        be written once per transaction; etcd allows 128 operations by default."""
        body = ops.txn_request(list(compares), list(success), list(failure))
        read_only = all(isinstance(op, Get) for op in (*success, *failure))
        return codec.parse_txn(self.call("/v3/kv/txn", body, write=not read_only))

    def compact(self, revision: int, physical: bool = True) -> None:
        """Drop the history before `revision` (an already compacted revision is fine)."""
        body: Json = {"revision": str(revision)}
        if physical:
            body["physical"] = True
        try:
            self.call("/v3/kv/compaction", body, write=False)
        except Compacted:
            pass

    # ----- leases ----------------------------------------------------------------------

    def grant(self, ttl: int, lease_id: int = 0) -> Lease:
        """A new lease of `ttl` seconds (etcd raises it to its minimum, 1.5 election
        timeouts); keys put with it go when it expires or is revoked."""
        body: Json = {"TTL": str(ttl)}
        if lease_id:
            body["ID"] = str(lease_id)
        answer = self.call("/v3/lease/grant", body, write=True)
        if answer.get("error"):
            raise RequestFailed(self.name, self.endpoints.current, 200, None, answer["error"])
        return Lease(id=int(answer["ID"]), ttl=int(answer.get("TTL", ttl)))

    def keepalive(self, lease_id: int) -> int:
        """Refresh the lease; returns its TTL. LeaseNotFound when it has expired."""
        answer = self.call("/v3/lease/keepalive", {"ID": str(lease_id)}, write=False)
        ttl = int((answer.get("result") or {}).get("TTL") or 0)
        if ttl <= 0:
            raise LeaseNotFound(self.name, self.endpoints.current, 200, None,
                                f"lease {lease_id:x} has expired")
        return ttl

    def revoke(self, lease_id: int) -> bool:
        """Revoke the lease (its keys go); False when it was already gone."""
        try:
            self.call("/v3/lease/revoke", {"ID": str(lease_id)}, write=False)
        except LeaseNotFound:
            return False
        return True

    def time_to_live(self, lease_id: int, keys: bool = False) -> LeaseInfo | None:
        """The lease's remaining TTL (and its keys), or None when it does not exist."""
        body: Json = {"ID": str(lease_id)}
        if keys:
            body["keys"] = True
        answer = self.call("/v3/lease/timetolive", body, write=False)
        ttl = int(answer.get("TTL") or 0)
        if ttl < 0:
            return None
        return LeaseInfo(id=lease_id, ttl=ttl, granted_ttl=int(answer.get("grantedTTL") or 0),
                         keys=tuple(codec.key_text(codec.decode(k))
                                    for k in answer.get("keys") or ()))

    def leases(self) -> list[int]:
        """The ids of every live lease."""
        answer = self.call("/v3/lease/leases", {}, write=False)
        return [int(item["ID"]) for item in answer.get("leases") or ()]

    # ----- cluster ---------------------------------------------------------------------

    def status(self, endpoint: str) -> MemberStatus:
        """What one member says of itself (leader, term, revision); no failover."""
        return codec.parse_status(endpoint, self.call("/v3/maintenance/status", {},
                                                      write=False, only=endpoint))

    def members(self) -> list[Member]:
        return codec.parse_members(self.call("/v3/cluster/member/list", {}, write=False))

    def watch(self, key: str | bytes, **options: Any) -> Any:
        """A Watcher (watch.py) of `key`; options as Watcher takes them."""
        from controller.etcd.watch import Watcher

        return Watcher(self, key, **options)

    def close(self) -> None:
        self._sessions.close()

    def __enter__(self) -> EtcdClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ----- one call, failing over ------------------------------------------------------

    def call(self, path: str, body: Json, *, write: bool, timeout: float | None = None,
             only: str | None = None, revision: int | None = None) -> Json:
        """POST `body` to `path` on the members in turn (or `only` that one), as a write
        or a read (see the module docstring); the answer's JSON."""
        self.calls += 1
        deadline = time.monotonic() + (timeout or self.timeout)
        attempts: list[tuple[str, str]] = []
        order = [only] if only else self.endpoints.order(time.monotonic())
        answered = False      # a member answered that it cannot serve (e.g. no leader)
        for url in order:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if answered and self.endpoints.resting(url, time.monotonic()):
                # The cluster has spoken; a member that just hung would only make this
                # call wait out its timeout before failing the same way.
                attempts.append((url, "not asked: " + self._rest_reason(url)))
                continue
            out = self._attempt(url, path, body, self._attempt_deadline(
                url, deadline, several=len(order) > 1, answered=answered))
            if out.verdict is Verdict.OK:
                self.endpoints.succeeded(url)
                return out.answer
            if out.verdict in (Verdict.RETRY, Verdict.UNKNOWN):
                spoke = out.status != 0 and out.verdict is Verdict.RETRY
                answered = answered or spoke
                self.endpoints.failed(url, time.monotonic(), out.reason, answered=spoke)
                if out.verdict is Verdict.UNKNOWN and write:
                    raise OutcomeUnknown(self.name, url, out.reason)
                attempts.append((url, out.reason))
                continue
            self.endpoints.succeeded(url)       # it answered: the member is fine
            raise self._final(out, url, revision)
        leaderless = attempts and any("no leader" in r for _, r in attempts) and all(
            "no leader" in r or r.startswith("not asked") for _, r in attempts)
        what = ("no member has a leader (quorum lost)" if leaderless
                else "no member answered in time" if not attempts
                else "no member could serve the request")
        raise StoreUnavailable(self.name, what, attempts)

    def _attempt_deadline(self, url: str, deadline: float, *, several: bool,
                          answered: bool) -> float:
        """When to give up on `url` within a call ending at `deadline` (module docstring):
        a lone member has the whole call; one of several `member_timeout`, or
        `probe_timeout` when it failed last time and the cluster has already said it
        has no leader."""
        if not several:
            return deadline
        share = self.probe_timeout if answered and self.endpoints.suspect(url) \
            else self.member_timeout
        return min(deadline, time.monotonic() + share)

    def _rest_reason(self, url: str) -> str:
        return f"it failed less than {self.endpoints.cooldown:g}s ago " \
               f"({self.endpoints.last_errors().get(url, 'no answer')})"

    def _attempt(self, url: str, path: str, body: Json, deadline: float) -> _Outcome:
        """One request to one member, authenticating first when needed, and once more if
        the token was refused."""
        for retry_auth in (True, False):
            try:
                token = self._current_token(url, deadline)
                status, answer = self._post(url, path, body, token, deadline)
            except requests.RequestException as e:
                verdict, reason = judge_exception(e)
                return _Outcome(verdict, 0, None, reason)
            except _AuthAnswer as a:
                return a.outcome
            if status < 300:
                return _Outcome(Verdict.OK, status, answer, "")
            code, message = codec.parse_error(answer)
            verdict = judge_answer(status, code, message)
            if verdict is Verdict.REAUTH and self._credentials and retry_auth:
                self._drop_token(token)
                continue
            return _Outcome(verdict, status, answer, message or f"HTTP {status}")
        raise AssertionError("unreachable")

    def _post(self, url: str, path: str, body: Json, token: str | None,
              deadline: float) -> tuple[int, Any]:
        remaining = max(0.001, deadline - time.monotonic())
        headers = dict(HASLEADER)
        if token:
            headers["Authorization"] = token
        with self._sessions.session() as session:
            resp = session.post(url + path, json=body, headers=headers,
                                timeout=(min(self.connect_timeout, remaining), remaining))
            try:
                answer: Any = resp.json()
            except ValueError:
                answer = resp.text
            return resp.status_code, answer

    # ----- credentials -----------------------------------------------------------------

    @property
    def has_credentials(self) -> bool:
        return self._credentials is not None

    def _current_token(self, url: str, deadline: float) -> str | None:
        if self._credentials is None:
            return None
        with self._token_lock:
            token = self._token
        if token is None:
            token = self.authenticate(url, deadline)
        return token

    def authenticate(self, url: str, deadline: float | None = None) -> str:
        """A new token from member `url` (what the client does by itself when needed)."""
        assert self._credentials is not None, "no credentials to authenticate with"
        name, password = self._credentials
        status, answer = self._post(url, "/v3/auth/authenticate",
                                    {"name": name, "password": password}, None,
                                    deadline or time.monotonic() + self.timeout)
        if status >= 300:
            code, message = codec.parse_error(answer)
            verdict = judge_answer(status, code, message)
            if verdict is Verdict.REAUTH:
                verdict = Verdict.AUTH_FAILED
            raise _AuthAnswer(_Outcome(verdict, status, answer, message or f"HTTP {status}"))
        token = str(answer["token"])
        with self._token_lock:
            self._token = token
        return token

    def _drop_token(self, token: str | None) -> None:
        with self._token_lock:
            if self._token == token:
                self._token = None

    def request_headers(self, url: str, deadline: float) -> dict[str, str]:
        """Headers for a request to `url` that the client does not send itself (a watch's
        stream): the leader requirement and, with credentials, a token."""
        headers = dict(HASLEADER)
        try:
            token = self._current_token(url, deadline)
        except _AuthAnswer as a:
            if a.outcome.verdict in (Verdict.RETRY, Verdict.UNKNOWN):
                raise StoreUnavailable(self.name, "could not authenticate",
                                       [(url, a.outcome.reason)]) from None
            raise self._final(a.outcome, url, None) from None
        if token:
            headers["Authorization"] = token
        return headers

    def token_refused(self, headers: dict[str, str]) -> None:
        """The token in `headers` was refused: the next request authenticates again."""
        self._drop_token(headers.get("Authorization"))

    def stream_session(self, factory: SocketFactory) -> requests.Session:
        """A session of its own for one watch stream, its sockets from `factory`."""
        return new_session(self.tls, factory)

    def _final(self, out: _Outcome, url: str, revision: int | None) -> Exception:
        code, _message = codec.parse_error(out.answer)
        if out.verdict is Verdict.COMPACTED:
            return Compacted(self.name, None, revision)
        if out.verdict is Verdict.LEASE_NOT_FOUND:
            return LeaseNotFound(self.name, url, out.status, code, out.reason)
        if out.verdict is Verdict.AUTH_FAILED:
            hint = ("; the store requires authentication: give Loris the etcd user and "
                    "password" if self._credentials is None else "; check the etcd user "
                    "and password given to Loris")
            return AuthenticationFailed(self.name, url, out.status, code, out.reason + hint)
        return RequestFailed(self.name, url, out.status, code, out.reason)


@dataclass(frozen=True)
class _Outcome:
    """What one request to one member came to."""

    verdict: Verdict
    status: int                       # 0: no HTTP answer
    answer: Any
    reason: str


class _AuthAnswer(Exception):
    """etcd answered the authentication itself with an error (carried to _attempt)."""

    def __init__(self, outcome: _Outcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome
