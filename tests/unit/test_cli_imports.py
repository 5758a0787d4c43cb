"""The `loris` CLI stays light: importing it, and running a controller command, loads
neither the Docker SDK nor pyroute2 (nor cryptography, which only `loris pki` needs), nor a
third-party HTTP stack (`requests`, `urllib3`), nor `http.client` with the `email` package
it parses headers with, nor `ssl` for an http controller, nor the flow pipeline: a
controller-only command starts in about twice the time of `python -c pass`
(docs/benchmarks.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("docker", "pyroute2", "cryptography", "requests", "urllib3", "http.client", "email",
         "ssl", "typing", "flows.pipeline", "flows.render", "flows.model")
# What only the commands acting on this host need (init, cleanup, trace's ofproto/trace,
# pki), and what no command needs: a command that only talks to the controller loads none.
HOST_SIDE = ("subprocess", "hostagent.ovs", "hostagent.lock", "hostagent.hostprep",
             "hostagent.ofproto_trace", "hostagent.containers", "hostagent.netdev",
             "hostagent.cli.host_commands", "hostagent.cli.pki_commands", "flows.diff",
             "flows.flow", "dataclasses", "inspect", "encodings.idna", "random")
CONTROLLER_COMMANDS = (['pods'], ['status'], ['ports'], ['cluster'], ['connect', 'c1', 'dhcp'],
                       ['connect', 'c1', '10.0.0.5/24', '7'], ['disconnect', 'c1'],
                       ['pod', 'show', 'web'], ['tokens'], ['events'], ['controllers'],
                       ['resync'])


def _loaded_after(code: str, heavy: tuple[str, ...] = HEAVY) -> set[str]:
    """The `heavy` modules (or packages: a name matches its submodules too) loaded by
    `code`."""
    probe = (code + "\nimport sys\n"
             f"heavy = {heavy!r}\n"
             "print(' '.join(sorted({h for h in heavy for m in sys.modules\n"
             "                       if m == h or m.startswith(h + '.')})))")
    env = dict(os.environ, PYTHONPATH=str(REPO), LORIS_TOKEN="t")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env=env, cwd=REPO, timeout=60, check=True).stdout
    return set(out.split())


def test_importing_the_cli_loads_no_docker_nor_netlink():
    assert _loaded_after("import hostagent.cli") == set()


def test_a_controller_command_loads_no_docker_nor_netlink():
    # The controller is unreachable (port 9): the command fails after the full code path.
    code = ("import contextlib, io\nfrom hostagent.cli import main\n"
            "with contextlib.redirect_stderr(io.StringIO()):\n"
            "    for cmd in (['pods'], ['status'], ['ports'], ['connect', 'c1', 'dhcp'],\n"
            "                ['disconnect', 'c1']):\n"
            "        assert main([*cmd, '--controller', 'http://127.0.0.1:9']) == 1")
    assert _loaded_after(code) == set()


def test_a_controller_command_loads_nothing_of_the_host_side():
    """Checked through sys.modules, not timed: the commands that only talk to the
    controller load neither subprocess nor OVS's modules, nor the flows' diff, nor
    `dataclasses` (with `inspect`), nor the `idna` codec for an ASCII controller address."""
    code = ("import contextlib, io\nfrom hostagent.cli import main\n"
            "with contextlib.redirect_stderr(io.StringIO()):\n"
            f"    for cmd in {CONTROLLER_COMMANDS!r}:\n"
            "        assert main([*cmd, '--host', 'h1', '--controller', 'http://127.0.0.1:9']) \\\n"
            "            == 1, cmd")
    assert _loaded_after("import hostagent.cli", HOST_SIDE) == set()
    assert _loaded_after(code, HOST_SIDE) == set()


def test_the_host_side_is_loaded_by_the_commands_that_use_it():
    """The other side of the test above: `loris init` loads OVS's module when it runs (so
    the check above is not vacuous, and OvsError is still reported as a one-line failure)."""
    code = ("import contextlib, io\nfrom hostagent.cli import main\n"
            "err = io.StringIO()\n"
            "with contextlib.redirect_stderr(err):\n"
            "    rc = main(['init', '--host', 'h1', '--ovsdb', 'unix:/nonexistent/db.sock'])\n"
            "assert rc == 1 and err.getvalue().startswith('loris init: '), err.getvalue()")
    assert {"subprocess", "hostagent.ovs"} <= _loaded_after(code, HOST_SIDE)
