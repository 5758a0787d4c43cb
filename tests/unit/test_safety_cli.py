"""The CLI's credential and audit commands (hostagent/cli/safety_commands.py), pure parts:
their arguments, times, and tables; and the AGENT column of `loris status`."""

from __future__ import annotations

import calendar
import time

import pytest

from hostagent.cli import main
from hostagent.cli.common import CliError
from hostagent.cli.output import agent_state
from hostagent.cli.safety_commands import credentials_table, events_table, parse_when


def test_times_are_epoch_utc_or_an_age():
    now = 1_800_000_000.0
    assert parse_when("1700000000", now) == 1_700_000_000.0
    assert parse_when("90s", now) == now - 90
    assert parse_when("10m", now) == now - 600
    assert parse_when("2h", now) == now - 7200
    assert parse_when("1.5d", now) == now - 1.5 * 86400
    expected = calendar.timegm((2024, 5, 1, 12, 0, 0, 0, 0, 0))
    assert parse_when("2024-05-01T12:00:00Z", now) == parse_when("2024-05-01T12:00:00", now) \
        == expected
    with pytest.raises(CliError, match="not a time"):
        parse_when("yesterday", now)


@pytest.mark.parametrize("argv,needle", [
    (["token"], "name one host"),
    (["token", "a", "b"], "name one host"),
    (["token", "revoke"], "name one host"),
    (["token", "h1", "--operator", "alice"], "either a host or --operator"),
    (["token", "bad host"], "not valid"),
    (["token", "--operator", "bad name"], "not valid"),
    (["events", "--limit", "0"], "--limit 0"),
])
def test_token_and_events_arguments_are_checked_before_asking(argv, needle, capsys):
    assert main([*argv, "--controller", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"loris {argv[0]}: ") and needle in err, err


def test_events_table_is_oldest_first_with_the_refused_count():
    page = {"events": [
        {"id": 2, "time": 1_800_000_060.0, "credential": "operator admin",
         "operation": "connect", "object": "container:h3/web8", "status": 503,
         "outcome": "agent_away", "detail": "web8 on h3 to pod 7 (198.18.135.5/24): ..."},
        {"id": 1, "time": 1_800_000_000.0, "credential": "operator alice",
         "operation": "create pod", "object": "pod:7", "status": 201, "outcome": "ok",
         "detail": None}],
        "next": 1, "refused": {"since": 1_799_999_000.0, "total": 3,
                               "by_status": {"403": 1, "401": 2}}}
    lines = events_table(page).splitlines()
    assert lines[0].split() == ["TIME", "CREDENTIAL", "OPERATION", "OBJECT", "OUTCOME",
                                "DETAIL"]
    assert "operator alice" in lines[1] and "pod:7" in lines[1] and " 201 " in lines[1]
    assert "2027-01-15T08:01:00Z" in lines[2] and "503 agent_away" in lines[2]
    assert lines[3] == ("refused writes since 2027-01-15T07:43:20Z (counted, not stored): 3 "
                        "(401: 2, 403: 1)")
    assert lines[4] == "older events: loris events --before 1"
    assert events_table({"events": [], "next": None, "refused": {"total": 0}}) == "no events"


def test_credentials_table():
    out = credentials_table([
        {"kind": "agent", "name": "h2", "state": "revoked", "issued_at": 1_800_000_000.0,
         "revoked_at": 1_800_000_060.0},
        {"kind": "agent", "name": "h3", "state": "derived", "issued_at": None,
         "revoked_at": None}])
    assert out.splitlines()[1].split() == ["agent", "h2", "revoked", "2027-01-15T08:00:00Z",
                                           "2027-01-15T08:01:00Z"]
    assert out.splitlines()[2].split() == ["agent", "h3", "derived", "-", "-"]


def test_the_agent_column_says_away():
    now = time.time()
    assert agent_state({"last_seen": now - 41, "polling": True, "away": True}, now) == \
        "away (41s ago)"
    assert agent_state({"last_seen": now - 0.5, "polling": True, "away": False}, now) == \
        "polling"
    assert agent_state({"last_seen": None, "polling": False, "away": True}, now) == \
        "away (never)"
    assert agent_state({"last_seen": now - 3, "polling": False}, now) == "3s ago"
