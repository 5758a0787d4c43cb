"""`loris pki init` and `loris pki host`: certificate files in a local directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from hostagent import pki
from hostagent.cli.common import CliError, print_json


def cmd_pki_init(args: argparse.Namespace) -> int:
    try:
        made = pki.init(args.dir, args.controller_ip, args.controller_name, args.hosts,
                        args.days)
    except pki.PkiError as e:
        raise CliError(str(e)) from None
    return _print_made(args, made)


def cmd_pki_host(args: argparse.Namespace) -> int:
    try:
        made = pki.add_hosts(args.dir, args.hosts, args.days)
    except pki.PkiError as e:
        raise CliError(str(e)) from None
    return _print_made(args, made)


def _print_made(args: argparse.Namespace, made: list[Path]) -> int:
    if args.json:
        print_json([str(p) for p in made])
    else:
        for p in made:
            print(p)
    return 0
