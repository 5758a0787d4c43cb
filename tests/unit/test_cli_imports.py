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


def _loaded_after(code: str) -> set[str]:
    """The HEAVY modules (or packages: a name matches its submodules too) loaded by `code`."""
    probe = (code + "\nimport sys\n"
             f"heavy = {HEAVY!r}\n"
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
