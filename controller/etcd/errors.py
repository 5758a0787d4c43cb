"""What can go wrong talking to the etcd store, as exceptions a caller can act on.

- `StoreUnavailable`: no endpoint could serve the request (members down, no leader, a read
  that timed out everywhere). Nothing was written. Retry later; the API answers 503.
- `OutcomeUnknown` (a StoreUnavailable): a write was sent and no answer came (timeout, a
  connection lost after sending, etcd's own "request timed out"). It may have been applied,
  now or later. Retry it only as a conditional transaction that is safe to repeat.
- `RequestFailed`: etcd answered with an error that the same request will get again
  (invalid argument, duplicate key in a txn, too many operations, permission denied).
  `LeaseNotFound` and `AuthenticationFailed` are the kinds callers handle.
- `Compacted`: the revision asked for (a read at a revision, a watch's resume point) is
  older than the store's compaction; re-list and start again from the list's revision.
- `WatchCanceled`: etcd ended a watch for a reason other than compaction.

Every message names the store (its endpoints), the failure and, where there is one, the fix.
"""

from __future__ import annotations

from collections.abc import Sequence


class StoreError(RuntimeError):
    """Base class of the etcd client's errors."""


class StoreUnavailable(StoreError):
    """No endpoint could serve the request. `attempts` lists (endpoint, what happened)."""

    def __init__(self, store: str, what: str, attempts: Sequence[tuple[str, str]] = ()) -> None:
        self.store = store
        self.attempts = tuple(attempts)
        tried = "; ".join(f"{url}: {reason}" for url, reason in self.attempts)
        detail = f" ({tried})" if tried else ""
        super().__init__(f"{store} unavailable: {what}{detail}; check that a majority of "
                         "its members are up and reachable (etcdctl endpoint status)")


class OutcomeUnknown(StoreUnavailable):
    """A write was sent and no answer came: it may or may not have been applied."""

    def __init__(self, store: str, endpoint: str, reason: str) -> None:
        self.endpoint = endpoint
        self.reason = reason
        StoreError.__init__(
            self, f"{store}: no answer from {endpoint} to a write ({reason}); it may have "
                  "been applied, or may be applied later: read back, or retry it as a "
                  "conditional transaction")
        self.store = store
        self.attempts = ((endpoint, reason),)


class RequestFailed(StoreError):
    """etcd refused the request; sending it again gets the same answer."""

    def __init__(self, store: str, endpoint: str, status: int, code: int | None,
                 message: str) -> None:
        self.store = store
        self.endpoint = endpoint
        self.status = status
        self.code = code
        self.message = message
        super().__init__(f"{store} at {endpoint} refused the request: {message} "
                         f"(HTTP {status}{'' if code is None else f', gRPC code {code}'})")


class LeaseNotFound(RequestFailed):
    """The lease does not exist (expired or revoked)."""


class AuthenticationFailed(RequestFailed):
    """The user name or password was refused; check the etcd credentials given to Loris."""


class Compacted(StoreError):
    """`revision` is older than the store's compaction (`compact_revision`)."""

    def __init__(self, store: str, compact_revision: int | None,
                 revision: int | None = None) -> None:
        self.store = store
        self.compact_revision = compact_revision
        self.revision = revision
        wanted = f"revision {revision}" if revision is not None else "the revision asked for"
        upto = f" up to {compact_revision}" if compact_revision else ""
        super().__init__(f"{store}: {wanted} is compacted (history kept from{upto} on); "
                         "re-list and continue from the list's revision")


class WatchCanceled(StoreError):
    """etcd canceled a watch for a reason other than compaction (e.g. permission denied)."""

    def __init__(self, store: str, endpoint: str, reason: str) -> None:
        self.store = store
        self.endpoint = endpoint
        self.reason = reason
        super().__init__(f"{store} at {endpoint} canceled the watch: {reason}")
