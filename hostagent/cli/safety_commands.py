"""The CLI's credential and audit commands (docs/security.md), operator token needed:

    loris token HOST                  issue (or re-issue) HOST's agent token, print it
    loris token revoke HOST           revoke it
    loris token --operator NAME       issue (or re-issue) an operator's token, print it
    loris token revoke --operator NAME
    loris token --metrics             print the read-only token of GET /metrics
    loris tokens                      the credentials and their state
    loris events [--object KIND:ID] [--since WHEN] [--until WHEN] [--limit N] [--before ID]
"""

from __future__ import annotations

import argparse
import re
import time

from flows import contract
from hostagent.cli.common import CliError, operator_client, print_json
from hostagent.tables import table

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hostagent.cli.parser import Commands

TOKEN_USAGE = ("loris token HOST | loris token revoke HOST | loris token --operator NAME | "
               "loris token revoke --operator NAME | loris token --metrics")
_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_parsers(cmds: Commands, common: argparse.ArgumentParser) -> None:
    cmds.add("token", "issue or revoke a host's agent token or an operator's token (needs "
             "the operator token)", _token, parents=[common], usage=TOKEN_USAGE)
    cmds.add("tokens", "list the credentials (never a token)",
             lambda s: s.set_defaults(func=cmd_tokens), parents=[common])
    cmds.add("events", "the audit trail: who changed what, when (oldest first)", _events,
             parents=[common])


def _token(s: argparse.ArgumentParser) -> None:
    s.add_argument("words", nargs="*", metavar="[revoke] HOST",
                   help="HOST: issue its agent token (its previous one stops working); "
                        "revoke HOST: revoke it")
    s.add_argument("--operator", metavar="NAME", help="an operator's token instead")
    s.add_argument("--metrics", action="store_true",
                   help="print the read-only token of GET /metrics instead (docs/metrics.md)")
    s.set_defaults(func=cmd_token)


def _events(s: argparse.ArgumentParser) -> None:
    s.add_argument("--object", help="one object (port:12, host:h2, pod:7, operator:alice) "
                                    "or a kind (port)")
    s.add_argument("--since", help="from WHEN: seconds since the epoch, "
                                   "YYYY-MM-DDTHH:MM:SS (UTC), or an age like 30s, 10m, 2h, 1d")
    s.add_argument("--until", help="up to WHEN (as --since)")
    s.add_argument("--limit", type=int, default=50, help="events at most (default 50)")
    s.add_argument("--before", type=int, metavar="ID", help="events older than this id")
    s.set_defaults(func=cmd_events)


def parse_when(text: str, now: float) -> float:
    """Epoch seconds from '1700000000', '2024-05-01T12:00:00' (UTC, 'Z' optional) or an
    age ('90s', '10m', '2h', '1d' before `now`)."""
    text = text.strip()
    relative = _RELATIVE.fullmatch(text)
    if relative:
        return now - float(relative.group(1)) * _UNITS[relative.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        import calendar  # here: it loads datetime and locale, for one option of one command

        return float(calendar.timegm(time.strptime(text.rstrip("Z"), "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        raise CliError(f"{text!r} is not a time: give seconds since the epoch, "
                       "YYYY-MM-DDTHH:MM:SS (UTC) or an age like 10m") from None


def utc(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def cmd_token(args: argparse.Namespace) -> int:
    if args.metrics:
        return _metrics_token(args)
    words = list(args.words)
    revoke = bool(words) and words[0] == "revoke"    # (a host named "revoke": use the API)
    if revoke:
        words = words[1:]
    if args.operator is not None:
        kind, name, rule = "operator", args.operator, contract.OPERATOR_NAME
        if words:
            raise CliError(f"give either a host or --operator NAME; usage: {TOKEN_USAGE}")
    elif len(words) == 1:
        kind, name, rule = "agent", words[0], contract.HOST_ID
    else:
        raise CliError(f"name one host (or --operator NAME); usage: {TOKEN_USAGE}")
    if not rule.matches(name):
        raise CliError(rule.error(name))
    client = operator_client(args)
    if revoke:
        if kind == "agent":
            client.revoke_agent_token(name)
            message = (f"agent token of host {name} revoked: its agent and its switches are "
                       f"refused from now on; `loris token {name}` issues a new one")
        else:
            client.revoke_operator_token(name)
            message = f"token of operator {name} revoked"
        if args.json:
            print_json({"revoked": {"kind": kind, "name": name}})
        else:
            print(message)
        return 0
    reply = client.agent_token(name) if kind == "agent" else client.operator_token(name)
    if args.json:
        print_json(reply)
    else:
        print(reply["token"])
    return 0


def _metrics_token(args: argparse.Namespace) -> int:
    if args.words or args.operator is not None:
        raise CliError("--metrics takes no host and no operator: the metrics token is one for "
                       f"the cluster; usage: {TOKEN_USAGE}")
    reply = operator_client(args).request("POST", "/v1/metrics/token")
    if args.json:
        print_json(reply)
    else:
        print(reply["token"])
    return 0


def credentials_table(rows: list[dict]) -> str:
    return table(["KIND", "NAME", "STATE", "ISSUED", "REVOKED"],
                 [[c.get("kind"), c.get("name"), c.get("state"), utc(c.get("issued_at")),
                   utc(c.get("revoked_at"))] for c in rows])


def cmd_tokens(args: argparse.Namespace) -> int:
    rows = operator_client(args).credentials()
    if args.json:
        print_json(rows)
    else:
        print(credentials_table(rows))
    return 0


def events_table(page: dict) -> str:
    """Oldest first, then what was refused (counted, not stored) and how to page on."""
    rows = [[utc(e.get("time")), e.get("credential"), e.get("operation"), e.get("object"),
             e.get("status") if e.get("outcome") == "ok" else
             f"{e.get('status')} {e.get('outcome')}", e.get("detail")]
            for e in reversed(page.get("events") or [])]
    out = [table(["TIME", "CREDENTIAL", "OPERATION", "OBJECT", "OUTCOME", "DETAIL"], rows)
           if rows else "no events"]
    refused = page.get("refused") or {}
    if refused.get("total"):
        by = ", ".join(f"{k}: {v}" for k, v in sorted((refused.get("by_status") or {}).items()))
        out.append(f"refused writes since {utc(refused.get('since'))} (counted, not stored): "
                   f"{refused['total']} ({by})")
    if page.get("next") is not None:
        out.append(f"older events: loris events --before {page['next']}")
    return "\n".join(out)


def cmd_events(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 1000:
        raise CliError(f"--limit {args.limit} must be 1..1000")
    now = time.time()
    page = operator_client(args).events(
        object=args.object, limit=args.limit, before=args.before,
        since=parse_when(args.since, now) if args.since else None,
        until=parse_when(args.until, now) if args.until else None)
    if args.json:
        print_json(page)
    else:
        print(events_table(page))
    return 0
