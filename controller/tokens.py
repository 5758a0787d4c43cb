"""Issued credentials: per-host agent tokens and named operator tokens, kept hashed in the
store (docs/security.md).

A token is random (256 bits) and shown once, when it is issued; the store keeps its SHA-256
only, so a copy of the database gives nobody a working token. Issuing again replaces the
credential (the previous token stops working at once); revoking marks it revoked.

- Agent tokens: `agent:<host id>:<64 hex>`. Until a host is issued its own, the token
  derived from `agent.key` (controller/auth.py) still works for it, so agents of an
  existing deployment keep working after an upgrade; issuing or revoking the host's token
  ends that for this host (and the `derived_agent_tokens` setting for every host).
- Operator tokens: `operator:<name>:<64 hex>`; the token in `operator.token` is the
  operator named `admin`, recorded at each start (a new file, e.g. after the old one was
  deleted, replaces the recorded one; the same file keeps its state, revoked or not).

`TokenBook` works on a Store, from the controller and from `python -m controller.auth`
on the same machine (another process: SQLite serialises the two).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from controller.errors import ApiError
from controller.safety_rows import Credential
from controller.store import Store, Tx
from flows.contract import HOST_ID, OPERATOR_NAME

AGENT = "agent"
OPERATOR = "operator"
ADMIN = "admin"                   # the operator whose token is the operator.token file
AGENT_PREFIX = "agent:"
OPERATOR_PREFIX = "operator:"


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(kind: str, name: str) -> str:
    return f"{AGENT_PREFIX if kind == AGENT else OPERATOR_PREFIX}{name}:{secrets.token_hex(32)}"


def check_name(kind: str, name: str) -> None:
    rule = HOST_ID if kind == AGENT else OPERATOR_NAME
    if not rule.matches(name):
        raise ApiError(422, "invalid_format", rule.error(name))


@dataclass(frozen=True)
class Found:
    """What the store says about a presented token."""
    credential: Credential | None     # the row whose hash it is (None: no such token)
    has_own: bool                     # (agent tokens) the host has a row: derived no longer counts


class TokenBook:
    """Issue, revoke, look up and list credentials in the store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def issue(self, kind: str, name: str) -> str:
        """A new token for (kind, name); the previous one stops working."""
        check_name(kind, name)
        token = new_token(kind, name)
        self.store.write(lambda tx: tx.put_credential(kind, name, token_sha256(token)))
        return token

    def revoke(self, kind: str, name: str, derived: str | None = None) -> Credential:
        """Revoke (kind, name). `derived`: the agent.key token of a host that has no row,
        recorded so that its holder is told "revoked". 404 when there is nothing to revoke.
        The last operator who is not revoked cannot be revoked (409): nobody could issue
        tokens through the API any more."""
        check_name(kind, name)

        def revoke(tx: Tx) -> Credential:
            row = tx.credential(kind, name)
            if row is None and derived is None:
                raise ApiError(404, "credential_not_found",
                               f"{kind} {name} has no token to revoke; `loris tokens` lists "
                               "the credentials")
            if kind == OPERATOR and row is not None and not row.revoked:
                others = [c for c in tx.credentials(OPERATOR)
                          if c.name != name and not c.revoked]
                if not others:
                    raise ApiError(409, "last_operator",
                                   f"operator {name} is the last operator who is not "
                                   "revoked; issue another operator's token first "
                                   "(`loris token --operator NAME`)")
            tx.revoke_credential(kind, name, row.token_sha256 if row else
                                 token_sha256(derived or ""))
            return tx.credential(kind, name)

        return self.store.write(revoke)

    def find(self, token: str, kind: str | None = None, name: str | None = None) -> Found:
        """The row of `token`; with kind/name also whether (kind, name) has a row at all."""
        digest = token_sha256(token)

        def look(tx: Tx) -> Found:
            return Found(tx.credential_by_hash(digest),
                         bool(kind and name and tx.credential(kind, name) is not None))

        return self.store.read_confirmed(look, missing=lambda f: f.credential is None)

    def current(self, kind: str, name: str) -> Credential | None:
        with self.store.read(current=False) as tx:
            return tx.credential(kind, name)

    def credentials(self) -> list[Credential]:
        with self.store.read() as tx:
            return tx.credentials()

    def record_admin(self, token: str) -> None:
        """At start: the operator.token file is operator `admin`'s token. A file the store
        already knows keeps its state (revoked stays revoked); another one replaces it."""
        digest = token_sha256(token)
        with self.store.read() as tx:
            row = tx.credential(OPERATOR, ADMIN)
        if row is not None and row.token_sha256 == digest:
            return
        self.store.write(lambda tx: tx.put_credential(OPERATOR, ADMIN, digest))

    def revoked_hosts(self) -> frozenset[str]:
        with self.store.read(current=False) as tx:
            return frozenset(c.name for c in tx.credentials(AGENT) if c.revoked)

    def switch_certs(self) -> dict[str, str]:
        with self.store.read(current=False) as tx:
            return tx.switch_certs()
