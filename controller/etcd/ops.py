"""The parts of a transaction (and of a range request), as JSON for etcd's gateway.

Compares: `key_absent` (create-if-absent), `key_exists`, `version_is`, `create_revision_is`,
`mod_revision_is` (optimistic update), `value_is`, `lease_is`; each takes an operator
("==", "!=", "<", ">"). Operations: `Put`, `Delete`, `Get`.

    client.txn([key_absent(idx)], [Put(idx, "port 5"), Put(row, body)], [Get(idx)])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from controller.etcd.codec import Json, encode, range_fields

OPERATORS = {"==": "EQUAL", "!=": "NOT_EQUAL", "<": "LESS", ">": "GREATER"}


# ----- transactions ----------------------------------------------------------------------

@dataclass(frozen=True)
class Compare:
    """One condition of a transaction: `target` of `key` compared with `value`."""

    key: str | bytes
    target: str                      # VERSION | CREATE | MOD | VALUE | LEASE
    result: str                      # EQUAL | NOT_EQUAL | LESS | GREATER
    value: int | str | bytes
    range_end: str | bytes | None = None

    def to_json(self) -> Json:
        out: Json = {"key": encode(self.key), "target": self.target, "result": self.result}
        if self.range_end is not None:
            out["range_end"] = encode(self.range_end)
        field_name = {"VERSION": "version", "CREATE": "create_revision",
                      "MOD": "mod_revision", "VALUE": "value", "LEASE": "lease"}[self.target]
        if self.target == "VALUE":
            out["value"] = encode(self.value)  # type: ignore[arg-type]
        else:
            out[field_name] = str(int(self.value))  # type: ignore[arg-type]
        return out


def _compare(key: str | bytes, target: str, op: str, value: int | str | bytes) -> Compare:
    if op not in OPERATORS:
        raise ValueError(f"compare operator {op!r}: use one of {', '.join(OPERATORS)}")
    return Compare(key, target, OPERATORS[op], value)


def key_absent(key: str | bytes) -> Compare:
    """The key does not exist (its version is 0): create-if-absent."""
    return Compare(key, "VERSION", "EQUAL", 0)


def key_exists(key: str | bytes) -> Compare:
    return Compare(key, "VERSION", "GREATER", 0)


def version_is(key: str | bytes, version: int, op: str = "==") -> Compare:
    return _compare(key, "VERSION", op, version)


def create_revision_is(key: str | bytes, revision: int, op: str = "==") -> Compare:
    return _compare(key, "CREATE", op, revision)


def mod_revision_is(key: str | bytes, revision: int, op: str = "==") -> Compare:
    """Optimistic update: the key is as it was when read at `revision` (its mod_revision)."""
    return _compare(key, "MOD", op, revision)


def value_is(key: str | bytes, value: str | bytes, op: str = "==") -> Compare:
    return _compare(key, "VALUE", op, value)


def lease_is(key: str | bytes, lease_id: int, op: str = "==") -> Compare:
    return _compare(key, "LEASE", op, lease_id)


@dataclass(frozen=True)
class Put:
    key: str | bytes
    value: str | bytes
    lease: int = 0
    prev_kv: bool = False

    def fields(self) -> Json:
        out: Json = {"key": encode(self.key), "value": encode(self.value)}
        if self.lease:
            out["lease"] = str(self.lease)
        if self.prev_kv:
            out["prev_kv"] = True
        return out

    def to_json(self) -> Json:
        return {"request_put": self.fields()}


@dataclass(frozen=True)
class Delete:
    key: str | bytes
    prefix: bool = False
    range_end: str | bytes | None = None
    prev_kv: bool = False

    def fields(self) -> Json:
        out = range_fields(self.key, prefix=self.prefix, range_end=self.range_end)
        if self.prev_kv:
            out["prev_kv"] = True
        return out

    def to_json(self) -> Json:
        return {"request_delete_range": self.fields()}


@dataclass(frozen=True)
class Get:
    key: str | bytes
    prefix: bool = False
    range_end: str | bytes | None = None
    revision: int = 0
    limit: int = 0
    keys_only: bool = False
    count_only: bool = False
    serializable: bool = False

    def fields(self) -> Json:
        out = range_fields(self.key, prefix=self.prefix, range_end=self.range_end)
        for name in ("revision", "limit"):
            if getattr(self, name):
                out[name] = str(getattr(self, name))
        for name in ("keys_only", "count_only", "serializable"):
            if getattr(self, name):
                out[name] = True
        return out

    def to_json(self) -> Json:
        return {"request_range": self.fields()}


Op = Put | Delete | Get


def txn_request(compares: Sequence[Compare], success: Sequence[Op],
                failure: Sequence[Op]) -> Json:
    return {"compare": [c.to_json() for c in compares],
            "success": [op.to_json() for op in success],
            "failure": [op.to_json() for op in failure]}
