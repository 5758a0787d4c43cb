"""Running commands for the lab: one place that captures output and explains failures."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path


class LabError(RuntimeError):
    """Something about the lab is wrong; the message names the object and the fix."""


class CommandError(LabError):
    """A command run by the lab failed (non-zero exit or timeout)."""

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int | None,
        stdout: str,
        stderr: str,
        timeout: float | None = None,
    ) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.timeout = timeout
        cmd = shlex.join(self.argv)
        if timeout is not None:
            head = f"`{cmd}` did not finish within {timeout:g}s"
        else:
            head = f"`{cmd}` exited with status {returncode}"
        detail = (stderr.strip() or stdout.strip())[-2000:]
        super().__init__(f"{head}: {detail}" if detail else head)


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, str):
        return data
    return data.decode(errors="replace")


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float | None = 30,
    input: bytes | str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv`, capture its output as text, raise CommandError on failure if `check`.

    Input may be bytes (e.g. a 10 MB payload); output is always decoded text, so
    callers never juggle both modes.
    """
    data = input.encode() if isinstance(input, str) else input
    argv = [str(a) for a in argv]
    try:
        proc = subprocess.run(
            argv,
            input=data,
            stdin=subprocess.DEVNULL if data is None else None,
            capture_output=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandError(argv, None, _text(exc.stdout), _text(exc.stderr), timeout) from None
    except FileNotFoundError:
        raise LabError(
            f"command {argv[0]!r} not found; install it (./dev setup installs what the lab needs)"
        ) from None
    result = subprocess.CompletedProcess(argv, proc.returncode, _text(proc.stdout),
                                         _text(proc.stderr))
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, result.stdout, result.stderr)
    return result


def environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The current environment plus `extra` (values converted to str)."""
    env = dict(os.environ)
    if extra:
        env.update({k: str(v) for k, v in extra.items()})
    return env
