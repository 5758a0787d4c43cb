"""`loris`: prepare a host and manage container networking through the Loris controller.

Every command prints a one-line reason on stderr and exits non-zero when it fails.

The package, by concern: `parser` (arguments), `common` (the operator's client, argument
checks, JSON output), `commands` (commands that only talk to the controller), `host_commands`
(init and cleanup: OVS and netlink on this host), `pki_commands` (local certificate files),
`output` (tables). Importing it loads neither the Docker SDK nor pyroute2, nor OVS's
modules and `subprocess`: the commands that need them import them when they run
(parser.py; tests/unit/test_cli_imports.py).
"""

from __future__ import annotations

import os
import sys

from flows import contract
from hostagent.cli.common import CliError
from hostagent.cli.parser import build_parser, command_word
from hostagent.client import ApiError, ControllerUnreachable, controller_url
from hostagent.local import default_host_id


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(command_word(argv)).parse_args(argv)
    if args.command != "pki":       # pki: local files only, no controller, no host id
        args.controller_given = bool(args.controller or os.environ.get("LORIS_CONTROLLER"))
        args.controller = controller_url(args.controller)
        args.host = args.host or default_host_id()
    try:
        if args.command != "pki" and not contract.HOST_ID.matches(args.host):
            raise CliError(f"invalid host id {args.host!r}: use 1-63 letters, digits, '_', '.', "
                           "'-' (--host or LORIS_HOST)")  # fmt: skip
        return args.func(args)
    except (CliError, ControllerUnreachable) as e:
        _fail(args.command, str(e))
    except ApiError as e:
        hint = ""
        if e.status in (401, 403):
            hint = (" (the CLI needs the operator token: --token-file, LORIS_TOKEN_FILE or "
                    "LORIS_TOKEN)")
        _fail(args.command, e.message + hint)
    except KeyboardInterrupt:
        _fail(args.command, "interrupted")
    except Exception as e:
        if not _ovs_failed(e):
            raise
        _fail(args.command, str(e))
    return 1


def _ovs_failed(error: Exception) -> bool:
    """An OvsError (ovs-vsctl failed), without importing hostagent.ovs: only the commands
    that use OVS load it, so no other command can raise it."""
    ovs = sys.modules.get("hostagent.ovs")
    return ovs is not None and isinstance(error, ovs.OvsError)


def _fail(command: str, reason: str) -> None:
    print(f"loris {command}: " + " ".join(reason.split()), file=sys.stderr)


__all__ = ["main", "CliError"]
