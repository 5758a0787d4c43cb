"""etcd v3's JSON gateway format, both ways: pure functions and values, no I/O.

The gateway (`/v3/...`, on by default in etcd 3.4) speaks the gRPC messages as JSON: keys
and values base64, 64-bit integers as strings, fields at their default (0, false, empty)
left out. Keys are `str` here (UTF-8; bytes that are not UTF-8 survive a round trip as
surrogate escapes), values `bytes` (`.text` and `.json()` decode them).

Requests: `range_fields` (the compares and operations of a transaction are in ops.py).
Answers: `parse_range`, `parse_put`, `parse_delete`, `parse_txn`, `parse_error`, and
`parse_watch_line` for one line of a watch stream.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

Json = dict[str, Any]


# ----- keys and values -------------------------------------------------------------------

def to_bytes(data: str | bytes) -> bytes:
    return data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)


def encode(data: str | bytes) -> str:
    """base64 of a key or value (str as UTF-8)."""
    return base64.b64encode(to_bytes(data)).decode("ascii")


def decode(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def key_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def prefix_end(prefix: str | bytes) -> bytes:
    """The range end that covers every key starting with `prefix` (etcd's
    GetPrefixRangeEnd): the prefix with its last byte below 0xff incremented and what
    follows dropped; b"\\0" (every key from `prefix` on) when there is no such byte."""
    raw = bytearray(to_bytes(prefix))
    for i in range(len(raw) - 1, -1, -1):
        if raw[i] < 0xFF:
            raw[i] += 1
            return bytes(raw[:i + 1])
    return b"\0"


def range_fields(key: str | bytes, *, prefix: bool = False,
                 range_end: str | bytes | None = None) -> Json:
    """{"key", "range_end"} for one key, a prefix, or [key, range_end)."""
    if prefix and range_end is not None:
        raise ValueError("give prefix=True or a range_end, not both")
    out: Json = {"key": encode(key)}
    if prefix:
        out["range_end"] = encode(prefix_end(key))
    elif range_end is not None:
        out["range_end"] = encode(range_end)
    return out


def _int(value: Any) -> int:
    return int(value) if value not in (None, "") else 0


# ----- values of answers -----------------------------------------------------------------

@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @property
    def text(self) -> str:
        return self.value.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.value)


@dataclass(frozen=True)
class Event:
    type: str                        # "PUT" | "DELETE"
    kv: KeyValue                     # for a DELETE: the key and the deletion's mod_revision
    prev_kv: KeyValue | None = None  # only when the watch asked for prev_kv

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


@dataclass(frozen=True)
class RangeResult:
    revision: int
    kvs: tuple[KeyValue, ...]
    count: int
    more: bool = False


@dataclass(frozen=True)
class PutResult:
    revision: int
    prev_kv: KeyValue | None = None


@dataclass(frozen=True)
class DeleteResult:
    revision: int
    deleted: int
    prev_kvs: tuple[KeyValue, ...] = ()


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int                    # the store's revision after the transaction
    responses: tuple[RangeResult | PutResult | DeleteResult, ...] = ()


@dataclass(frozen=True)
class Lease:
    id: int
    ttl: int                         # seconds granted


@dataclass(frozen=True)
class LeaseInfo:
    id: int
    ttl: int                         # seconds left
    granted_ttl: int
    keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class MemberStatus:
    endpoint: str
    member_id: int
    leader: int                      # 0: this member knows no leader
    raft_term: int
    raft_index: int
    revision: int
    version: str
    db_size: int

    @property
    def is_leader(self) -> bool:
        return self.leader != 0 and self.leader == self.member_id


@dataclass(frozen=True)
class Member:
    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]


def header_revision(body: Json) -> int:
    return _int((body.get("header") or {}).get("revision"))


def parse_kv(d: Json) -> KeyValue:
    return KeyValue(key=key_text(decode(d.get("key"))), value=decode(d.get("value")),
                    create_revision=_int(d.get("create_revision")),
                    mod_revision=_int(d.get("mod_revision")), version=_int(d.get("version")),
                    lease=_int(d.get("lease")))


def parse_range(body: Json, revision: int | None = None) -> RangeResult:
    kvs = tuple(parse_kv(d) for d in body.get("kvs") or ())
    return RangeResult(revision=header_revision(body) if revision is None else revision,
                       kvs=kvs, count=_int(body.get("count")), more=bool(body.get("more")))


def parse_put(body: Json, revision: int | None = None) -> PutResult:
    prev = body.get("prev_kv")
    return PutResult(revision=header_revision(body) if revision is None else revision,
                     prev_kv=parse_kv(prev) if prev else None)


def parse_delete(body: Json, revision: int | None = None) -> DeleteResult:
    return DeleteResult(revision=header_revision(body) if revision is None else revision,
                        deleted=_int(body.get("deleted")),
                        prev_kvs=tuple(parse_kv(d) for d in body.get("prev_kvs") or ()))


def parse_txn(body: Json) -> TxnResult:
    """A TxnResponse; each response of the branch that ran, in order. Their own headers
    carry no full revision, so each takes the transaction's."""
    revision = header_revision(body)
    responses: list[RangeResult | PutResult | DeleteResult] = []
    for item in body.get("responses") or ():
        if "response_range" in item:
            responses.append(parse_range(item["response_range"], revision))
        elif "response_put" in item:
            responses.append(parse_put(item["response_put"], revision))
        elif "response_delete_range" in item:
            responses.append(parse_delete(item["response_delete_range"], revision))
        else:
            raise ValueError(f"unexpected transaction response {sorted(item)}")
    return TxnResult(succeeded=bool(body.get("succeeded")), revision=revision,
                     responses=tuple(responses))


def parse_status(endpoint: str, body: Json) -> MemberStatus:
    header = body.get("header") or {}
    return MemberStatus(endpoint=endpoint, member_id=_int(header.get("member_id")),
                        leader=_int(body.get("leader")), raft_term=_int(body.get("raftTerm")),
                        raft_index=_int(body.get("raftIndex")),
                        revision=_int(header.get("revision")),
                        version=str(body.get("version", "")), db_size=_int(body.get("dbSize")))


def parse_members(body: Json) -> list[Member]:
    return [Member(id=_int(m.get("ID")), name=str(m.get("name", "")),
                   peer_urls=tuple(m.get("peerURLs") or ()),
                   client_urls=tuple(m.get("clientURLs") or ()))
            for m in body.get("members") or ()]


def parse_error(body: Any) -> tuple[int | None, str]:
    """(gRPC code, message) of an error answer: `{"error", "message", "code"}` for a call,
    `{"error": {"grpc_code", "http_code", "message"}}` in a stream; else the text."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            code = err.get("grpc_code")
            return (int(code) if code is not None else None), str(err.get("message", ""))
        code = body.get("code")
        message = body.get("message") or err or ""
        return (int(code) if code is not None else None), str(message)
    return None, str(body or "").strip()[:300]


# ----- watch streams ---------------------------------------------------------------------

@dataclass(frozen=True)
class WatchMessage:
    """One line of a watch stream, by kind: "created", "events", "progress" (no events: the
    watch has seen everything up to `revision`), "canceled" (`compact_revision` > 0 when
    because of compaction, else `reason`) or "error" (`code`, `reason`)."""

    kind: str
    revision: int = 0
    events: tuple[Event, ...] = ()
    compact_revision: int = 0
    reason: str = ""
    code: int | None = None


def parse_event(d: Json) -> Event:
    prev = d.get("prev_kv")
    return Event(type=d.get("type") or "PUT", kv=parse_kv(d.get("kv") or {}),
                 prev_kv=parse_kv(prev) if prev else None)


def parse_watch_line(line: bytes | str) -> WatchMessage:
    body = json.loads(line)
    if not isinstance(body, dict):
        raise ValueError(f"watch stream line is not an object: {str(line)[:200]}")
    if "error" in body:
        code, message = parse_error(body)
        return WatchMessage("error", code=code, reason=message)
    result = body.get("result")
    if not isinstance(result, dict):
        raise ValueError(f"watch stream line without result: {str(line)[:200]}")
    revision = header_revision(result)
    if result.get("canceled"):
        return WatchMessage("canceled", revision=revision,
                            compact_revision=_int(result.get("compact_revision")),
                            reason=str(result.get("cancel_reason", "")))
    if result.get("created"):
        return WatchMessage("created", revision=revision)
    events = tuple(parse_event(e) for e in result.get("events") or ())
    if events:
        return WatchMessage("events", revision=revision, events=events)
    return WatchMessage("progress", revision=revision)


class LineBuffer:
    """Bytes of a stream in, complete lines out (the gateway ends each message with \\n)."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._pending + chunk
        *lines, self._pending = data.split(b"\n")
        return [line for line in lines if line.strip()]

    @property
    def pending(self) -> bytes:
        return self._pending
