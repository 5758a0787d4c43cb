"""The test image `loris-test:busybox`, built locally (images cannot be pulled here).

A rootfs holding /bin/busybox with a symlink per applet, plus a udhcpc event script so
that `udhcpc -i eth1` configures the interface from its lease.
"""

from __future__ import annotations

import fcntl
import io
import shutil
import tarfile
import time
from pathlib import Path

from lab.command import LabError, run
from lab.naming import IMAGE, RUN_ROOT

UDHCPC_SCRIPT = """#!/bin/sh
# udhcpc event script: apply the lease to $interface (busybox exports ip, mask, router).
case "$1" in
    deconfig)
        ip -4 addr flush dev "$interface"
        ip link set "$interface" up
        ;;
    bound|renew)
        ip -4 addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        if [ -n "$router" ]; then
            ip route del default 2>/dev/null
            for r in $router; do ip route add default via "$r" dev "$interface" && break; done
        fi
        ;;
esac
exit 0
"""

# Applets the tests rely on; checked so a busybox without them fails loudly here.
REQUIRED_APPLETS = ("sh", "sleep", "ip", "ifconfig", "udhcpc", "ping", "nc", "arping", "cat",
                    "dd", "md5sum", "netstat")


def find_busybox() -> Path:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if Path(candidate).exists():
            return Path(candidate)
    found = shutil.which("busybox")
    if not found:
        raise LabError("busybox not found; install busybox-static (./dev setup does)")
    return Path(found)


def _rootfs_tar(busybox: Path) -> bytes:
    applets = run([busybox, "--list-full"]).stdout.split()
    names = {Path(a).name for a in applets}
    missing = [a for a in REQUIRED_APPLETS if a not in names]
    if missing:
        raise LabError(f"{busybox} lacks applets {missing}; install busybox-static")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add_dir(path: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(path)
            info.type = tarfile.DIRTYPE
            info.mode = mode
            tar.addfile(info)

        def add_file(path: str, data: bytes, mode: int) -> None:
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))

        for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "usr/share",
                  "usr/share/udhcpc", "etc", "proc", "sys", "dev", "root", "var", "var/run",
                  "run"):
            add_dir(d)
        add_dir("tmp", 0o1777)
        add_file("bin/busybox", busybox.read_bytes(), 0o755)
        for applet in applets:
            if applet == "bin/busybox":
                continue
            info = tarfile.TarInfo(applet)
            info.type = tarfile.SYMTYPE
            info.linkname = "/bin/busybox"
            tar.addfile(info)
        add_file("usr/share/udhcpc/default.script", UDHCPC_SCRIPT.encode(), 0o755)
        add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
        add_file("etc/group", b"root:x:0:\n", 0o644)
    return buf.getvalue()


def ensure_image(client) -> None:
    """Build `loris-test:busybox` once if it is missing (a lock keeps parallel labs from
    building it twice)."""
    import docker.errors

    try:
        client.images.get(IMAGE)
        return
    except docker.errors.ImageNotFound:
        pass
    RUN_ROOT.mkdir(parents=True, exist_ok=True)
    with open(RUN_ROOT / ".image.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client.images.get(IMAGE)
            return
        except docker.errors.ImageNotFound:
            pass
        started = time.monotonic()
        tar = _rootfs_tar(find_busybox())
        run(["docker", "import", "--change", 'CMD ["/bin/sh"]', "-", IMAGE], input=tar,
            timeout=120)
        client.images.get(IMAGE)
        print(f"loris-lab: built {IMAGE} in {time.monotonic() - started:.1f}s")
