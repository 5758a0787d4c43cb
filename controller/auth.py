"""Who may call the REST API: bearer tokens, two roles, least privilege (docs/security.md).

- An **operator** token may do everything. Operators are named: `admin` holds the token in
  `<credentials>/operator.token` (random, made on first start); others are issued and
  revoked through the API (`loris token --operator NAME`), kept hashed in the store
  (controller/tokens.py).
- An **agent** token is bound to one host: `agent:<host id>:<64 hex>`, issued per host
  (`loris token h3`, or `python -m controller.auth token h3` on the controller machine) and
  revocable one host at a time (`loris token revoke h3`). Until a host is issued its own,
  the token derived from the secret `<credentials>/agent.key`
  (`agent:<host>:<HMAC-SHA256(agent.key, host)>`) still works for it, so agents of an
  existing deployment keep working after an upgrade (setting `derived_agent_tokens`). An
  agent may only register itself, long-poll its own desired state, report its own actual
  state and delete ports of its own host (Docker removal events).
- `GET /v1/health` and `GET /v1/openapi.json` are public (liveness; the document is the
  source code's own description and holds no state).
- The **metrics** token (`metrics:<HMAC-SHA256(agent.key, "metrics")>`, derived like an
  agent's: `loris token --metrics`) may only scrape `GET /metrics`. The controller can
  also serve /metrics without credentials on a listen address of its own
  (`metrics_listen`), for a Prometheus on a trusted network.

Both files are created on first start, mode 0600 in a 0700 directory (default: next to the
database, `<db dir>/credentials/`); a file others can read stops the controller (like ssh).
Every request is checked against the store, so a token revoked (or re-issued) a moment ago
is refused at its holder's next request, and `still_valid` tells a long poll that waits.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import re
import secrets
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from controller import tokens
from controller.errors import ApiError
from controller.tokens import ADMIN, AGENT, AGENT_PREFIX, TokenBook
from flows import contract
from flows.contract import HOST_ID

OPERATOR_FILE = "operator.token"
AGENT_KEY_FILE = "agent.key"
DERIVED = "derived"          # Principal.credential of a token derived from agent.key
METRICS_PREFIX = "metrics:"
METRICS_ROUTES = frozenset({("GET", "/metrics")})
_TOKEN_CHARS = re.compile(r"^[\x21-\x7e]{1,256}$")       # printable ASCII, no space

PUBLIC_ROUTES = frozenset({"/v1/health", "/v1/openapi.json"})
# What an agent may call at all; host-scoped checks come on top (route argument or body).
AGENT_ROUTES = frozenset({
    ("POST", "/v1/hosts"),                          # register (body id must be its host)
    ("GET", "/v1/hosts/{host_id}/desired"),
    ("PUT", "/v1/hosts/{host_id}/actual"),
    ("DELETE", "/v1/ports/{port_id}"),              # only ports of its host
    # its Docker plugin (controller/docker_ipam.py): connects and addresses of its host
    ("POST", "/v1/hosts/{host_id}/ports"),          # connect (body host = route host)
    ("GET", "/v1/hosts/{host_id}/pods"),
    ("POST", "/v1/hosts/{host_id}/pods"),           # the pod of a network made by hand
    ("POST", "/v1/hosts/{host_id}/addresses"),
    ("DELETE", "/v1/hosts/{host_id}/addresses/{address}"),
    ("PUT", "/v1/hosts/{host_id}/ports/{port_id}/docker"),
    ("GET", "/v1/controllers"),                     # where to point its bridges (docs/ha.md)
})
HOW_TO = ("send 'Authorization: Bearer <token>': the operator token is in the controller's "
          f"credentials directory ({OPERATOR_FILE}); an agent's comes from `loris token HOST`")


@dataclass(frozen=True)
class Principal:
    """Who made a request. Principals compare by what they may do (role and host); `name`
    and `credential` (the token's hash, or DERIVED) say which credential it was."""
    role: str                 # "operator" | "agent" | "metrics"
    host: str | None = None   # the agent's host
    name: str = field(default=ADMIN, compare=False)
    credential: str = field(default="", compare=False, repr=False)

    def __str__(self) -> str:
        if self.role == "metrics":
            return "the metrics token"
        if self.role == "operator":
            return "operator" if self.name == ADMIN else f"operator {self.name}"
        return f"agent of host {self.host}"

    @property
    def label(self) -> str:
        """The credential's name as the audit trail shows it: 'operator admin', 'agent h2'."""
        if self.role == "metrics":
            return "metrics"
        return f"operator {self.name}" if self.role == "operator" else f"agent {self.host}"


OPERATOR = Principal("operator")
METRICS = Principal("metrics")


def agent(host_id: str, credential: str = DERIVED) -> Principal:
    return Principal("agent", host_id, host_id, credential)


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message)


def forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


class Authenticator:
    """Checks bearer tokens: against the store's credentials once bound to it
    (`with_book`), else against the operator token and the agent key only."""

    def __init__(self, operator_token: str, agent_key: bytes, directory: Path | None = None,
                 book: TokenBook | None = None, derived_agent_tokens: bool = True) -> None:
        if len(operator_token) < 32 or len(agent_key) < 32:
            raise ValueError("operator token and agent key must be at least 32 characters")
        self._operator = operator_token.encode()
        self._agent_key = agent_key
        self.directory = directory
        self.book = book
        self.derived_agent_tokens = derived_agent_tokens

    def with_book(self, book: TokenBook, derived_agent_tokens: bool = True) -> Authenticator:
        """This authenticator checking the credentials in `book`'s store; records the
        operator.token file as operator `admin`'s token."""
        book.record_admin(self.operator_token())
        return Authenticator(self.operator_token(), self._agent_key, self.directory, book,
                             derived_agent_tokens)

    def operator_token(self) -> str:
        return self._operator.decode()

    def agent_token(self, host_id: str) -> str:
        """The token of `host_id` derived from agent.key (good until the host is issued
        its own, unless `derived_agent_tokens` is off)."""
        if not HOST_ID.matches(host_id):
            raise ValueError(HOST_ID.error(host_id))
        return f"{AGENT_PREFIX}{host_id}:{self._mac(host_id)}"

    def _mac(self, host_id: str) -> str:
        return hmac.new(self._agent_key, b"loris-agent-token\0" + host_id.encode(),
                        hashlib.sha256).hexdigest()

    def _derived_ok(self, token: str) -> str | None:
        """The host whose agent.key token this is, or None."""
        host_id, _, mac = token[len(AGENT_PREFIX):].rpartition(":")
        if HOST_ID.matches(host_id) and hmac.compare_digest(mac.encode(),
                                                            self._mac(host_id).encode()):
            return host_id
        return None

    def issue(self, kind: str, name: str) -> str:
        """A new token for an agent (host) or operator; the previous one stops working.
        Re-issuing `admin` rewrites operator.token too."""
        if self.book is None:
            raise ApiError(404, "not_found", "this controller keeps no credentials")
        token = self.book.issue(kind, name)
        if kind == tokens.OPERATOR and name == ADMIN and self.directory is not None:
            _write_private(self.directory / OPERATOR_FILE, token)
        return token

    def revoke(self, kind: str, name: str) -> None:
        if self.book is None:
            raise ApiError(404, "not_found", "this controller keeps no credentials")
        tokens.check_name(kind, name)
        derived = self.agent_token(name) if kind == AGENT else None
        self.book.revoke(kind, name, derived)
    def metrics_token(self) -> str:
        """The read-only token of GET /metrics (derived: nothing to store or rotate apart
        from agent.key)."""
        return METRICS_PREFIX + self._metrics_mac()

    def _metrics_mac(self) -> str:
        return hmac.new(self._agent_key, b"loris-metrics-token\0", hashlib.sha256).hexdigest()

    def authenticate(self, header: str | None) -> Principal:
        """The principal of an `Authorization` header value, or ApiError 401."""
        if not header:
            raise unauthorized(f"this request needs credentials; {HOW_TO}")
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not _TOKEN_CHARS.match(token):
            raise unauthorized(f"malformed Authorization header; {HOW_TO}")
        if token.startswith(METRICS_PREFIX):
            if hmac.compare_digest(token[len(METRICS_PREFIX):].encode(),
                                   self._metrics_mac().encode()):
                return METRICS
            raise unauthorized(f"invalid token; {HOW_TO}")
        if self.book is None:
            if token.startswith(AGENT_PREFIX):
                host_id = self._derived_ok(token)
                if host_id is not None:
                    return agent(host_id)
            elif hmac.compare_digest(token.encode(), self._operator):
                return OPERATOR
            raise unauthorized(f"invalid token; {HOW_TO}")
        claimed = token[len(AGENT_PREFIX):].rpartition(":")[0] \
            if token.startswith(AGENT_PREFIX) else None
        found = self.book.find(token, AGENT, claimed)
        row = found.credential
        if row is not None:
            if row.revoked:
                e = unauthorized(f"the token of {row.kind} {row.name} was revoked at "
                                 f"{_when(row.revoked_at)}; an operator issues a new one "
                                 f"with `loris token {_issue_args(row.kind, row.name)}`")
                e.credential = f"{row.kind} {row.name}"     # whose it was, for the audit
                raise e
            if row.kind == AGENT:
                return agent(row.name, row.token_sha256)
            return Principal("operator", None, row.name, row.token_sha256)
        if claimed is not None and self._derived_ok(token) is not None:
            if found.has_own:
                raise unauthorized(f"host {claimed} was issued its own agent token; this one, "
                                   "derived from agent.key, no longer works for it")
            if self.derived_agent_tokens:
                return agent(claimed)
            raise unauthorized(f"agent tokens derived from agent.key are turned off "
                               "(derived_agent_tokens); an operator issues host "
                               f"{claimed} its own with `loris token {claimed}`")
        raise unauthorized(f"invalid token; {HOW_TO}")

    def still_valid(self, who: Principal | None) -> bool:
        """Whether `who`'s credential still works (not revoked, not re-issued since)."""
        if who is None or self.book is None:
            return True
        if who.credential == DERIVED:
            return self.derived_agent_tokens and self.book.current(AGENT, who.host) is None
        row = self.book.current(who.role, who.name)
        return row is not None and not row.revoked and row.token_sha256 == who.credential

    @staticmethod
    def authorize_route(who: Principal, method: str, route: str, args: dict) -> None:
        """Route-level check (403): an agent only on its few routes, for its own host."""
        if who.role == "operator":
            return
        if who.role == "metrics":
            if (method, route) not in METRICS_ROUTES:
                raise forbidden(f"{who} may only scrape GET /metrics; {method} {route} needs "
                                "the operator token")
            return
        if (method, route) not in AGENT_ROUTES:
            raise forbidden(f"{who} may not call {method} {route}; that needs the operator "
                            "token")
        if "host_id" in args:
            authorize_host(who, args["host_id"], f"{method} {route}")


def _issue_args(kind: str, name: str) -> str:
    return name if kind == AGENT else f"--operator {name}"


def authorize_host(who: Principal | None, host_id: str, what: str) -> None:
    """403 unless `who` may act for `host_id` (the operator, or that host's agent)."""
    if who is None or who.role == "operator" or who.host == host_id:
        return
    raise forbidden(f"{who} may not act for host {host_id} ({what}); an agent token only "
                    "works for its own host")


# ---- OpenFlow over TLS: which datapath ids a switch certificate may claim ---------------

def switch_may_claim(cert_host: str | None, dpid: int, owner: str | None) -> bool:
    """A switch presenting the certificate of host `cert_host` (its CN) may be datapath
    `dpid` if that host registered it (`owner`), or, before registration, if `dpid` is one
    of the host's fixed datapath ids (design.md: 0x0001/0x0002 << 48 | sha256(id)[:48 bits]).
    So a host's certificate only ever makes it its own host's bridges."""
    if not cert_host:
        return False
    if owner is not None:
        return owner == cert_host
    return dpid in contract.dpids(cert_host).values()


def common_name(peercert: dict | None) -> str | None:
    """The subject CN of a certificate as `SSLSocket.getpeercert()` returns it."""
    for rdn in (peercert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


# ---- credential files -------------------------------------------------------------------

def credentials_dir(db: str, configured: str = "") -> Path:
    """Where the credentials live: the `credentials` setting, else `<db dir>/credentials`."""
    return Path(configured) if configured else Path(os.path.abspath(db)).parent / "credentials"


def load_or_create(directory: str | os.PathLike) -> Authenticator:
    """Read the credentials, creating any that are missing (first start)."""
    d = Path(directory)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_private(d, dir_=True)
    operator = _read_or_create(d / OPERATOR_FILE, lambda: secrets.token_hex(32))
    key = _read_or_create(d / AGENT_KEY_FILE, lambda: secrets.token_hex(32))
    return Authenticator(operator, key.encode(), d)


def _write_temporary(path: Path, value: str) -> Path:
    """`value` in a new 0600 file next to `path`, synced; its name."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
        f.flush()
        os.fsync(f.fileno())
    return tmp


def _write_private(path: Path, value: str) -> None:
    """Replace `path` with `value` at once (0600): a reader sees the old or the new."""
    tmp = _write_temporary(path, value)
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_or_create(path: Path, make: Callable[[], str]) -> str:
    if not path.exists():
        # Written under a temporary name, then linked into place: a reader never sees a
        # half-written file, and of two processes creating it at once one wins, the other
        # reads the winner's.
        tmp = _write_temporary(path, make())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    _check_private(path)
    value = path.read_text().strip()
    if len(value) < 32:
        raise ValueError(f"credentials file {path} is empty or too short; delete it and "
                         "restart the controller to make a new one")
    return value


def _check_private(path: Path, dir_: bool = False) -> None:
    st = path.stat()
    loose = stat.S_IMODE(st.st_mode) & (0o077 if not dir_ else 0o022)
    if loose or st.st_uid != os.geteuid():
        want = "700" if dir_ else "600"
        raise PermissionError(f"credentials {'directory' if dir_ else 'file'} {path} must be "
                              f"owned by uid {os.geteuid()} and not accessible to others (mode "
                              f"{stat.S_IMODE(st.st_mode):o}); chown and chmod {want} it")


# ---- `python -m controller.auth`: credentials on the controller machine -----------------

def main(argv: list[str] | None = None) -> int:
    """`token HOST` issues HOST's agent token (`token operator` prints admin's),
    `operator NAME` issues an operator token, `revoke HOST` / `revoke --operator NAME`
    revokes; all in the controller's store (`--db`, or etcd with LORIS_STORE=etcd and the
    controller's other LORIS_ETCD_* settings), with or without the controller running (a
    running one closes a revoked host's switches within seconds)."""
    from controller import audit, config
    from controller.config import DEFAULT_DB
    from controller.stores import open_store

    p = argparse.ArgumentParser(prog="python -m controller.auth",
                                description="Loris credentials on the controller machine")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("token", help="issue a host's agent token (or print admin's: 'operator'; "
                       "or the metrics token: --metrics)")
    s.add_argument("host", nargs="?", help="host id, or 'operator'")
    s.add_argument("--metrics", action="store_true", help="the read-only metrics token")
    s = sub.add_parser("operator", help="issue (or re-issue) the token of a named operator")
    s.add_argument("name", help="operator name")
    s = sub.add_parser("revoke", help="revoke a host's agent token (or an operator's)")
    s.add_argument("host", nargs="?", help="host id")
    s.add_argument("--operator", metavar="NAME", help="revoke this operator's token instead")
    for s in sub.choices.values():
        s.add_argument("--db", default=os.environ.get("LORIS_DB") or DEFAULT_DB,
                       help="the controller's database (LORIS_DB); credentials are next to it")
        s.add_argument("--credentials", default=os.environ.get("LORIS_CREDENTIALS", ""),
                       help="credentials directory (LORIS_CREDENTIALS)")
    args = p.parse_args(argv)
    try:
        auth = load_or_create(credentials_dir(args.db, args.credentials))
        if args.command == "token" and args.metrics:
            print(auth.metrics_token())
            return 0
        if args.command == "token" and not args.host:
            raise ValueError("name a host, 'operator', or give --metrics")
        if args.command == "token" and args.host == "operator":
            print(auth.operator_token())
            return 0
        if args.command == "revoke" and bool(args.host) == bool(args.operator):
            raise ValueError("name a host, or an operator with --operator NAME")
        kind, name = ((tokens.OPERATOR, args.name) if args.command == "operator" else
                      (tokens.OPERATOR, args.operator) if args.command == "revoke"
                      and args.operator else (AGENT, args.host))
        tokens.check_name(kind, name)
        store = open_store(config.load(db=args.db))     # SQLite, or etcd (LORIS_STORE)
        try:
            bound = auth.with_book(TokenBook(store))
            if args.command == "revoke":
                bound.revoke(kind, name)
            else:
                print(bound.issue(kind, name))
            audit.record_local(store, f"{args.command if args.command == 'revoke' else 'issue'}"
                               f" {kind} token", f"{'host' if kind == AGENT else kind}:{name}")
        finally:
            store.close()
    except ApiError as e:
        print(f"{p.prog} {args.command}: {e.message}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"{p.prog} {args.command}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
