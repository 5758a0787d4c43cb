"""Packet captures with tcpdump, written to a pcap in the lab's run directory."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import NamedTuple

from lab.command import LabError, run
from lab.containers import Container
from lab.naming import Host
from lab.procs import LabProcess

TIMESTAMP = re.compile(r"^\d{2}:\d{2}:\d{2}\.\d+ ")


class CaptureResult(NamedTuple):
    count: int
    lines: list[str]   # `tcpdump -r <pcap> -nn -e`, one line per packet (inner frames
                       # of tunnel packets joined on with ' | ')


class Capture:
    def __init__(self, process: LabProcess, pcap: Path, description: str) -> None:
        self.process = process
        self.pcap = pcap
        self.description = description
        self.result: CaptureResult | None = None

    def wait_ready(self, timeout: float = 10) -> None:
        """tcpdump prints 'listening on' once the socket is open; packets before that are
        not seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "listening on" in self.process.log_text():
                return
            if not self.process.alive:
                raise LabError(f"tcpdump for {self.description} exited: "
                               f"{self.process.log_tail(10)}")
            time.sleep(0.02)
        raise LabError(f"tcpdump for {self.description} not listening after {timeout:g}s")

    def stop(self) -> CaptureResult:
        """End the capture and read it back. Calling it again returns the same result."""
        if self.result is None:
            # With --immediate-mode and -U every packet is on disk as soon as seen.
            self.process.stop(timeout=5)
            lines = self.read()
            self.result = CaptureResult(len(lines), lines)
        return self.result

    def read(self) -> list[str]:
        if not self.pcap.exists() or self.pcap.stat().st_size == 0:
            return []
        out = run(["tcpdump", "-r", self.pcap, "-nn", "-e"], check=False).stdout
        # tcpdump prints a decapsulated inner frame (VXLAN, GRE) on a line of its own,
        # without a timestamp: join it to its packet so that there is one line per packet.
        packets: list[str] = []
        for line in out.splitlines():
            if not line.strip():
                continue
            if packets and not TIMESTAMP.match(line):
                packets[-1] += " | " + line.strip()
            else:
                packets.append(line)
        return packets

    def __repr__(self) -> str:
        return f"<Capture {self.description} -> {self.pcap}>"


class Captures:
    """The lab's part that starts captures (see lab/core.py)."""

    dir: Path

    def capture(self, target: Host | Container | str, iface: str,
                bpf_filter: str = "") -> Capture:
        """Start tcpdump on `iface` inside `target`; returns once tcpdump is listening."""
        self._require_up()
        n = self._next_number()
        where = target.short if isinstance(target, Container) else (
            target.name if isinstance(target, Host) else str(target).strip("/").replace("/", "_"))
        pcap = self.dir / "captures" / f"{n:03d}-{where}-{iface}.pcap"
        pcap.parent.mkdir(parents=True, exist_ok=True)
        # --immediate-mode: otherwise packets wait in the capture ring for up to a second and
        # are lost when the capture is stopped right after the traffic.
        argv = ["tcpdump", "-i", iface, "-nn", "-U", "--immediate-mode", "-Z", "root",
                "-w", str(pcap)]
        if bpf_filter:
            argv.append(bpf_filter)
        proc = self.start_process(f"capture-{n:03d}", argv, netns=target)
        cap = Capture(proc, pcap, f"{where}:{iface}")
        cap.wait_ready()
        return cap
