"""`loris`'s parser gives a parser only to the command being run (start-up time,
docs/benchmarks.md), and every command where a list of them is shown."""

from __future__ import annotations

import contextlib
import io

import pytest

from hostagent.cli.parser import build_parser, command_word

EVERY_COMMAND = ["init", "cluster", "connect", "disconnect", "cleanup", "status", "pods",
                 "ports", "pod", "token", "tokens", "events", "trace", "resync",
                 "controllers", "pki"]


def _commands(parser) -> list[str]:
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    return list(sub.choices)


@pytest.mark.parametrize("argv, word", [
    (["pods"], "pods"), (["ports", "--json"], "ports"), (["-h"], None), (["-h", "pods"], None),
    (["--help"], None), ([], None), (["bogus", "x"], "bogus")])
def test_the_command_word_is_the_first_word_unless_it_is_an_option(argv, word):
    assert command_word(argv) == word


@pytest.mark.parametrize("command", EVERY_COMMAND)
def test_a_command_gets_the_only_parser_and_parses_as_with_all_of_them(command):
    argv = {"connect": ["connect", "c1", "10.0.0.5/24", "7"], "disconnect": ["disconnect", "c1"],
            "pod": ["pod", "show", "web"], "trace": ["trace", "c1", "c2"],
            "token": ["token", "issue", "h1"], "pki": ["pki", "host", "/tmp/x", "h1"],
            "cluster": ["cluster", "198.18.0.11"]}.get(command, [command])
    only = build_parser(command)
    assert _commands(only) == [command]
    alone, full = only.parse_args(argv), build_parser(None).parse_args(argv)
    assert {k: v for k, v in vars(alone).items() if k != "func"} == \
        {k: v for k, v in vars(full).items() if k != "func"}
    assert alone.func.__name__ == full.func.__name__


@pytest.mark.parametrize("word", [None, "bogus", "-h"])
def test_help_and_an_unknown_command_list_every_command(word):
    assert _commands(build_parser(word)) == EVERY_COMMAND
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit):
        build_parser("bogus").parse_args(["bogus"])
    assert "invalid choice: 'bogus' (choose from 'init', 'cluster'" in err.getvalue()
    assert "'controllers', 'pki')" in err.getvalue()
