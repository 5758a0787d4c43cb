"""What the CLI's commands share: the one-line error, the operator's client, argument checks
and JSON output."""

from __future__ import annotations

import argparse
import ipaddress
import json

from flows import contract
from hostagent.client import DEFAULT_OPERATOR_TOKEN_FILE, Client, token_file_from


class CliError(Exception):
    """A failure to report as one line on stderr."""


def operator_client(args: argparse.Namespace) -> Client:
    """A client with the operator's credentials: --token-file, LORIS_TOKEN_FILE, LORIS_TOKEN,
    else the controller's own token file when run on the controller machine."""
    return Client(args.controller, token_file=token_file_from(
        args.token_file, DEFAULT_OPERATOR_TOKEN_FILE), ca_cert=args.ca_cert)


def parse_pod(text: str | None) -> int | str | None:
    """A POD argument: a number is the pod's id, a name (it starts with a letter) its name."""
    if text is None:
        return None
    if text.isascii() and text.isdigit():
        if int(text) > contract.MAX_POD_ID:
            raise CliError(f"pod {text} is not a pod id: use a number 0..{contract.MAX_POD_ID} "
                           "(0 is the global pod) or a pod's name")  # fmt: skip
        return int(text)
    if not contract.POD_NAME.matches(text):
        raise CliError(f"pod {text!r} is not a pod id (a number 0..{contract.MAX_POD_ID}) "
                       f"nor a pod name ({contract.POD_NAME.hint})")  # fmt: skip
    return text


def check_ip_argument(text: str) -> str:
    """Catch the obvious typos before asking the controller (which checks everything)."""
    if text.lower() == "dhcp":
        return "dhcp"
    try:
        ipaddress.IPv4Interface(text)
    except ValueError:
        raise CliError(f"{text!r} is not an address like 198.18.135.5/24, nor 'dhcp'") from None
    if "/" not in text:
        raise CliError(f"{text!r} needs a prefix length, e.g. {text}/24")
    return text


def print_json(value: object) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))
