"""Who may call the REST API: bearer tokens, two roles, least privilege (docs/security.md).

- The **operator** token (random, `<credentials>/operator.token`) may do everything.
- An **agent** token is bound to one host: `agent:<host id>:<HMAC-SHA256(agent.key, host id)>`.
  It is derived from a secret (`<credentials>/agent.key`), so the controller keeps no table of
  them, and the operator hands one out with one command (`loris token h3`, or
  `python -m controller.auth token h3` on the controller machine). An agent may only
  register itself, long-poll its own desired state, report its own actual state and delete
  ports of its own host (Docker removal events).
- `GET /v1/health` and `GET /v1/openapi.json` are public (liveness; the document is the
  source code's own description and holds no state).
- The **metrics** token (`metrics:<HMAC-SHA256(agent.key, "metrics")>`, derived like an
  agent's: `loris token --metrics`) may only scrape `GET /metrics`. The controller can
  also serve /metrics without credentials on a listen address of its own
  (`metrics_listen`), for a Prometheus on a trusted network.

Both files are created on first start, mode 0600 in a 0700 directory (default: next to the
database, `<db dir>/credentials/`); a file others can read stops the controller (like ssh).
Tokens are compared in constant time. Rotating: delete a file and restart the controller
(agent.key: every agent token changes; operator.token: only the operator's).
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from controller.errors import ApiError
from flows import contract
from flows.contract import HOST_ID

OPERATOR_FILE = "operator.token"
AGENT_KEY_FILE = "agent.key"
AGENT_PREFIX = "agent:"
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
})
HOW_TO = ("send 'Authorization: Bearer <token>': the operator token is in the controller's "
          f"credentials directory ({OPERATOR_FILE}); an agent's comes from `loris token HOST`")


@dataclass(frozen=True)
class Principal:
    role: str                 # "operator" | "agent" | "metrics"
    host: str | None = None   # the agent's host

    def __str__(self) -> str:
        if self.role == "metrics":
            return "the metrics token"
        return "operator" if self.role == "operator" else f"agent of host {self.host}"


OPERATOR = Principal("operator")
METRICS = Principal("metrics")


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message)


def forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message)


class Authenticator:
    """Checks bearer tokens against the operator token and the agent key."""

    def __init__(self, operator_token: str, agent_key: bytes) -> None:
        if len(operator_token) < 32 or len(agent_key) < 32:
            raise ValueError("operator token and agent key must be at least 32 characters")
        self._operator = operator_token.encode()
        self._agent_key = agent_key

    def operator_token(self) -> str:
        return self._operator.decode()

    def agent_token(self, host_id: str) -> str:
        if not HOST_ID.matches(host_id):
            raise ValueError(HOST_ID.error(host_id))
        return f"{AGENT_PREFIX}{host_id}:{self._mac(host_id)}"

    def _mac(self, host_id: str) -> str:
        return hmac.new(self._agent_key, b"loris-agent-token\0" + host_id.encode(),
                        hashlib.sha256).hexdigest()

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
        elif token.startswith(AGENT_PREFIX):
            host_id, _, mac = token[len(AGENT_PREFIX):].rpartition(":")
            if HOST_ID.matches(host_id) and hmac.compare_digest(
                    mac.encode(), self._mac(host_id).encode()):
                return Principal("agent", host_id)
        elif hmac.compare_digest(token.encode(), self._operator):
            return OPERATOR
        raise unauthorized(f"invalid token; {HOW_TO}")

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
    return Authenticator(operator, key.encode())


def _read_or_create(path: Path, make: Callable[[], str]) -> str:
    if not path.exists():
        # Written under a temporary name, then linked into place: a reader never sees a
        # half-written file, and of two processes creating it at once one wins, the other
        # reads the winner's.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(make() + "\n")
                f.flush()
                os.fsync(f.fileno())
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


# ---- `python -m controller.auth token HOST` --------------------------------------------

def main(argv: list[str] | None = None) -> int:
    from controller.config import DEFAULT_DB

    p = argparse.ArgumentParser(prog="python -m controller.auth",
                                description="Loris credentials on the controller machine")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("token", help="print the agent token of a host (or the operator's, or "
                       "the metrics token)")
    s.add_argument("host", nargs="?", help="host id, or 'operator'")
    s.add_argument("--metrics", action="store_true", help="the read-only metrics token")
    for s in sub.choices.values():
        s.add_argument("--db", default=os.environ.get("LORIS_DB") or DEFAULT_DB,
                       help="the controller's database (LORIS_DB); credentials are next to it")
        s.add_argument("--credentials", default=os.environ.get("LORIS_CREDENTIALS", ""),
                       help="credentials directory (LORIS_CREDENTIALS)")
    args = p.parse_args(argv)
    try:
        auth = load_or_create(credentials_dir(args.db, args.credentials))
        if args.metrics:
            print(auth.metrics_token())
        elif not args.host:
            raise ValueError("name a host, 'operator', or give --metrics")
        elif args.host == "operator":
            print(auth.operator_token())
        else:
            print(auth.agent_token(args.host))
    except (OSError, ValueError) as e:
        print(f"{p.prog} {args.command}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
