"""A watch that neither hangs nor loses events.

    watcher = client.watch("/loris/v1/", prefix=True, start_revision=listed.revision + 1)
    for batch in watcher:          # WatchBatch(revision, events); blocks; in its own thread
        ...                        # batch.events empty: a progress notification
    # Compacted raised: the resume point is compacted; list again and watch anew.
    watcher.cancel()               # from any thread: the loop ends at once

What it does that etcd3gw's watch does not (see the research notes):

- `start_revision` is inclusive; after each batch the watch resumes from the last event's
  revision + 1 (a batch ends at a revision boundary), after a progress notification from
  its revision + 1. A reconnect asks for exactly that revision, so nothing is lost and
  nothing repeated (an event older than the resume point would be dropped).
- `canceled` with `compact_revision` raises `Compacted`; another cancel raises
  `WatchCanceled`; `{"error": ...}` lines ("no leader", an expired token) and a stream
  that ends or breaks make it reconnect, to another member after a failure.
- Every stream asks `Grpc-Metadata-Hasleader: true` (a member that loses its leader ends
  it) and `progress_notify`; a stream silent for `idle_timeout` seconds is dropped and
  opened again, so a hung member is left. `idle_timeout` must exceed the members'
  `--experimental-watch-progress-notify-interval` (default 10 min: then a quiet watch just
  reconnects every idle_timeout, which loses nothing).
- It retries forever with capped backoff, unless `max_disconnected` seconds pass without a
  stream, when it raises StoreUnavailable. `connected`, `endpoint`, `reconnects` and
  `last_error` say how it is.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import requests
import urllib3.exceptions

from controller.etcd import codec
from controller.etcd.codec import Event, Json, LineBuffer, WatchMessage
from controller.etcd.endpoints import Verdict, judge_answer, judge_exception
from controller.etcd.errors import Compacted, StoreUnavailable, WatchCanceled
from controller.etcd.transport import ShutdownSockets

if TYPE_CHECKING:
    from controller.etcd.client import EtcdClient


@dataclass(frozen=True)
class WatchBatch:
    """Events of one or more whole revisions, in order; `revision`: the watch has now seen
    everything up to it (no events: a progress notification)."""

    revision: int
    events: tuple[Event, ...] = ()


@dataclass(frozen=True)
class Step:
    """What one message of a stream means for the watch (WatchState.apply)."""

    action: str                      # created | deliver | skip | compacted | reauth |
    batch: WatchBatch | None = None  # failover | canceled
    reason: str = ""
    compact_revision: int = 0


class WatchState:
    """Where a watch stands (pure): the revision to resume from, and what each message of
    a stream means. `next_revision` None: from whatever is current when the stream opens."""

    def __init__(self, start_revision: int | None = None) -> None:
        if start_revision is not None and start_revision < 1:
            raise ValueError(f"start_revision {start_revision}: revisions start at 1")
        self.next_revision = start_revision

    def create_request(self, range_fields: Json, prev_kv: bool) -> Json:
        request: Json = dict(range_fields, progress_notify=True)
        if self.next_revision is not None:
            request["start_revision"] = str(self.next_revision)
        if prev_kv:
            request["prev_kv"] = True
        return {"create_request": request}

    def apply(self, msg: WatchMessage) -> Step:
        if msg.kind == "created":
            if self.next_revision is None:
                # Watching from "now": events come after the revision of the creation.
                self.next_revision = msg.revision + 1
            return Step("created")
        if msg.kind == "events":
            floor = self.next_revision or 0
            events = tuple(e for e in msg.events if e.revision >= floor)
            if not events:
                return Step("skip")
            self.next_revision = events[-1].revision + 1
            return Step("deliver", WatchBatch(events[-1].revision, events))
        if msg.kind == "progress":
            if self.next_revision is None or msg.revision + 1 > self.next_revision:
                self.next_revision = msg.revision + 1
            return Step("deliver", WatchBatch(self.next_revision - 1))
        if msg.kind == "canceled":
            if msg.compact_revision:
                return Step("compacted", reason=msg.reason,
                            compact_revision=msg.compact_revision)
            if _auth_problem(msg.reason):
                return Step("reauth", reason=msg.reason)
            return Step("canceled", reason=msg.reason or "no reason given")
        # "error": the member could not keep the stream ("no leader", a timeout, a token).
        if _auth_problem(msg.reason) or msg.code == 16:
            return Step("reauth", reason=msg.reason)
        return Step("failover", reason=msg.reason or f"error {msg.code}")


def _auth_problem(reason: str) -> bool:
    return "auth token" in reason or "user name is empty" in reason


class _StreamFailed(Exception):
    def __init__(self, reason: str, *, member_failed: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.member_failed = member_failed


_STREAM_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError)


class Watcher:
    """One key, a prefix or a range, watched from `start_revision` (see the module)."""

    def __init__(self, client: EtcdClient, key: str | bytes, *, prefix: bool = False,
                 range_end: str | bytes | None = None, start_revision: int | None = None,
                 prev_kv: bool = False, idle_timeout: float = 15.0,
                 max_disconnected: float | None = None, backoff_cap: float = 2.0) -> None:
        self._client = client
        self._range = codec.range_fields(key, prefix=prefix, range_end=range_end)
        self._prev_kv = prev_kv
        self.state = WatchState(start_revision)
        self.idle_timeout = idle_timeout
        self.max_disconnected = max_disconnected
        self.backoff_cap = backoff_cap
        self.connected = False
        self.endpoint: str | None = None     # the member of the current (or last) stream
        self.last_error: str | None = None
        self.reconnects = 0
        self._canceled = threading.Event()
        self._sockets: ShutdownSockets | None = None
        self._lock = threading.Lock()

    @property
    def next_revision(self) -> int | None:
        return self.state.next_revision

    def cancel(self) -> None:
        """End the watch from any thread; the iteration stops at once."""
        self._canceled.set()
        with self._lock:
            sockets = self._sockets
        if sockets is not None:
            sockets.shutdown()

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.cancel()

    def __iter__(self) -> Iterator[WatchBatch]:
        return self.batches()

    def batches(self) -> Iterator[WatchBatch]:
        """Batches of events (and progress), in revision order, until cancel()."""
        failures = 0
        down_since: float | None = None
        avoid: str | None = None
        while not self._canceled.is_set():
            url = self._pick(avoid)
            avoid = None
            self.endpoint = url
            try:
                for item in self._stream(url):
                    if item is None:                        # the stream is created
                        self.connected, failures, down_since = True, 0, None
                        continue
                    yield item
                raise _StreamFailed("the stream ended", member_failed=not self.connected)
            except _StreamFailed as e:
                reason, member_failed = e.reason, e.member_failed
            except _STREAM_ERRORS as e:
                verdict, reason = (judge_exception(e) if isinstance(e, requests.RequestException)
                                   else (Verdict.UNKNOWN, str(e) or type(e).__name__))
                # Silent for idle_timeout after it was created: reconnect, elsewhere if we
                # can, but a quiet key space is no failure of the member.
                member_failed = not (self.connected and isinstance(e, requests.RequestException)
                                     and "timed out" in reason)
            if self._canceled.is_set():
                break
            was_connected, self.connected = self.connected, False
            self.last_error = f"{url}: {reason}"
            self.reconnects += 1
            if member_failed:
                self._client.endpoints.failed(url, time.monotonic(), reason)
            else:
                avoid = url
            now = time.monotonic()
            down_since = down_since or now
            if self.max_disconnected is not None and now - down_since > self.max_disconnected:
                raise StoreUnavailable(self._client.name, f"the watch could not reconnect for "
                                       f"{now - down_since:.1f}s", [(url, reason)])
            if not was_connected:
                failures += 1
                delay = min(self.backoff_cap, 0.05 * 2 ** failures)
                self._canceled.wait(random.uniform(delay / 2, delay))
        self.connected = False

    def _pick(self, avoid: str | None) -> str:
        order = self._client.endpoints.order(time.monotonic())
        if avoid is not None and len(order) > 1 and order[0] == avoid:
            return order[1]
        return order[0]

    def _stream(self, url: str) -> Iterator[WatchBatch | None]:
        """One stream from `url`: None once created, then batches. Raises _StreamFailed,
        the errors of requests, Compacted or WatchCanceled."""
        sockets = ShutdownSockets(self._client.socket_factory)
        with self._lock:
            self._sockets = sockets
        session = self._client.stream_session(sockets)
        headers: dict[str, str] = {}
        try:
            if self._canceled.is_set():
                return
            try:
                headers = self._client.request_headers(url,
                                                       time.monotonic() + self.idle_timeout)
            except StoreUnavailable as e:
                raise _StreamFailed(e.attempts[0][1] if e.attempts else str(e)) from None
            body = self.state.create_request(self._range, self._prev_kv)
            timeout = (min(self._client.connect_timeout, self.idle_timeout), self.idle_timeout)
            with session.post(url + "/v3/watch", json=body, headers=headers, stream=True,
                              timeout=timeout) as resp:
                if self._canceled.is_set():
                    return
                if resp.status_code != 200:
                    self._refused(url, resp, headers)
                lines = LineBuffer()
                for chunk in resp.iter_content(chunk_size=None):
                    for line in lines.feed(chunk):
                        batch = self._handle(url, codec.parse_watch_line(line), headers)
                        if batch is not _SKIP:
                            yield batch
                    if self._canceled.is_set():
                        return
        finally:
            with self._lock:
                self._sockets = None
            session.close()
            sockets.close()

    def _handle(self, url: str, msg: WatchMessage, headers: dict[str, str]) -> Any:
        step = self.state.apply(msg)
        if step.action == "created":
            return None
        if step.action == "deliver":
            return step.batch
        if step.action == "skip":
            return _SKIP
        if step.action == "compacted":
            raise Compacted(self._client.name, step.compact_revision, self.state.next_revision)
        if step.action == "reauth" and self._client.has_credentials:
            self._client.token_refused(headers)
            raise _StreamFailed(step.reason, member_failed=False)
        if step.action in ("canceled", "reauth"):
            raise WatchCanceled(self._client.name, url, step.reason)
        raise _StreamFailed(step.reason)

    def _refused(self, url: str, resp: requests.Response, headers: dict[str, str]) -> None:
        try:
            answer: Any = resp.json()
        except ValueError:
            answer = resp.text
        code, message = codec.parse_error(answer)
        verdict = judge_answer(resp.status_code, code, message)
        reason = message or f"HTTP {resp.status_code}"
        if verdict is Verdict.REAUTH and self._client.has_credentials:
            self._client.token_refused(headers)
            raise _StreamFailed(reason, member_failed=False)
        if verdict in (Verdict.RETRY, Verdict.UNKNOWN):
            raise _StreamFailed(reason)
        raise WatchCanceled(self._client.name, url, reason)


_SKIP = object()
