"""A real DHCP client for a container port: busybox udhcpc run inside the container's netns."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).with_name("udhcpc-script.sh")


class DhcpError(RuntimeError):
    pass


def _script() -> str:
    mode = SCRIPT.stat().st_mode
    if not mode & stat.S_IXUSR:  # an install that dropped the executable bit
        SCRIPT.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(SCRIPT)


def obtain_lease(netns_path: str, ifname: str, tries: int = 5, timeout_s: int = 1) -> str:
    """Run one DHCP exchange on `ifname`; the script applies the lease. Returns "A.B.C.D/len"."""
    busybox = shutil.which("busybox")
    if busybox is None:
        raise DhcpError("busybox not found: install busybox-static (it provides udhcpc)")
    argv = [
        "nsenter", f"--net={netns_path}", busybox, "udhcpc",
        "-i", ifname, "-f", "-n", "-q", "-t", str(tries), "-T", str(timeout_s),
        "-s", _script(),
    ]  # fmt: skip
    env = dict(os.environ, LORIS_BUSYBOX=busybox)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env,
                              timeout=tries * (timeout_s + 1) + 10)  # fmt: skip
    except subprocess.TimeoutExpired as e:
        raise DhcpError(f"DHCP client on {ifname} timed out") from e
    leases = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("lease ")]
    if proc.returncode != 0 or not leases:
        detail = (proc.stderr.strip().splitlines() or ["no answer"])[-1]
        raise DhcpError(f"no DHCP lease on {ifname} after {tries} tries ({detail})")
    return leases[-1]
