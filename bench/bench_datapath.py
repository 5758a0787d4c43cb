"""Datapath: TCP throughput and ping RTT between two containers of a pod on different hosts,
and the ARP broadcasts the underlay carries while they resolve each other; against the same
two containers on plain OVS bridges (NORMAL action, MAC learning) over the same tunnel type.

    python -m bench datapath [--size smoke|full]

One lab of 3 hosts runs both networks side by side: Loris (br-int/br-tun, pod 7, key 8) and
the baseline (`lab.plain_mesh`, bridge br-plain, key 1). Containers a (h1) and b (h2) have
both: eth1 from Loris (198.18.135.0/24), eth2 on the plain bridges (198.18.150.0/24), same
inner MTU, TX offload off on both. So every difference is the network's, not the
containers'. Loris and the baseline alternate, in ABBA order (the machine is shared).

- throughput: `iperf3` (the host's binary, run in the containers' namespaces), TCP, one
  stream, receiver's figure, median of the rounds;
- RTT: `ping -i 0.01`, median of every reply of every round;
- ARP: capture the underlay, flush both containers' neighbours, ping once each way; count
  the encapsulated ARP broadcasts (Loris answers ARP on the asking host: none cross).
"""

from __future__ import annotations

import json
import re
import time

from bench.common import Figure, Result, median, percentile
from bench.loris import LorisLab

SIZES = {"full": {"rounds": 6, "seconds": 5, "pings": 200},
         "smoke": {"rounds": 1, "seconds": 1, "pings": 10}}
POD = 7
LORIS_NET, PLAIN_NET = "198.18.135", "198.18.150"
PLAIN_BRIDGE = "br-plain"
TPUT_TARGET = 0.95


def iperf(ll: LorisLab, client, server_ip: str, seconds: int) -> float:
    """Bits per second the receiver saw."""
    out = ll.lab.run(client, ["iperf3", "-c", server_ip, "-t", str(seconds), "-J"],
                     timeout=seconds + 60).stdout
    return float(json.loads(out)["end"]["sum_received"]["bits_per_second"])


def rtts(ll: LorisLab, client, ip: str, count: int) -> list[float]:
    out = ll.lab.run(client, ["ping", "-c", str(count), "-i", "0.01", "-W", "1", ip],
                     timeout=count * 0.05 + 30, check=False).stdout
    found = [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]
    if len(found) < count * 0.9:
        raise RuntimeError(f"ping {ip}: only {len(found)} of {count} replies:\n{out[-500:]}")
    return found


def arp_broadcasts(ll: LorisLab, a, b, ifname: str, ip_a: str, ip_b: str) -> tuple[int, int]:
    """(encapsulated ARP broadcasts, all encapsulated ARP frames) on the underlay while a
    and b, their neighbour caches flushed, ping each other once."""
    lab = ll.lab
    bpf = "udp port 4789" if lab.tunnel == "vxlan" else "proto gre"
    cap = lab.capture("ul", "br0", bpf)
    try:
        for c in (a, b):
            lab.run(c, ["ip", "neigh", "flush", "dev", ifname])
        for c, ip in ((a, ip_b), (b, ip_a)):
            lab.run(c, ["ping", "-c", "1", "-W", "2", ip], check=False)
        time.sleep(0.5)
    finally:
        result = cap.stop()
    arp = [line for line in result.lines if "ARP" in line]
    return sum(1 for line in arp if "ff:ff:ff:ff:ff:ff" in line), len(arp)


def run(size: str = "full", session=None) -> Result:
    cfg = SIZES[size]
    result = Result("datapath", size)
    ll = LorisLab(hosts=3, docker=True).up()
    try:
        lab = ll.lab
        a, b = lab.add_container("h1", "a"), lab.add_container("h2", "b")
        ll.connect(a, f"{LORIS_NET}.1/24", POD)
        ll.connect(b, f"{LORIS_NET}.2/24", POD)
        lab.plain_mesh(PLAIN_BRIDGE)
        lab.attach_plain(a, f"{PLAIN_NET}.1/24", bridge=PLAIN_BRIDGE, ifname="eth2")
        lab.attach_plain(b, f"{PLAIN_NET}.2/24", bridge=PLAIN_BRIDGE, ifname="eth2")
        ll.wait_idle()
        server = lab.start_process("iperf3-server", ["iperf3", "-s"], netns=b)
        try:
            _wait_listening(lab, b)
            tput = {"loris": [], "plain": []}
            rtt = {"loris": [], "plain": []}
            ways = [("loris", LORIS_NET), ("plain", PLAIN_NET)]
            for i in range(cfg["rounds"]):
                # ABBA: neither network always runs right after the other
                for way, net in (ways if i % 2 == 0 else ways[::-1]):
                    tput[way].append(iperf(ll, a, f"{net}.2", cfg["seconds"]))
                    rtt[way].extend(rtts(ll, a, f"{net}.2", cfg["pings"]))
        finally:
            server.stop()
        arp = {"loris": arp_broadcasts(ll, a, b, "eth1", f"{LORIS_NET}.1", f"{LORIS_NET}.2"),
               "plain": arp_broadcasts(ll, a, b, "eth2", f"{PLAIN_NET}.1", f"{PLAIN_NET}.2")}
    finally:
        ll.down()
    result.details.update(throughput_bps=tput, rtt_ms=rtt, arp=arp, tunnel=lab.tunnel)
    mbps = {k: median(v) / 1e6 for k, v in tput.items()}
    result.add(
        Figure(f"TCP throughput a->b ({lab.tunnel}, 1 stream)", mbps["loris"], "Mbit/s",
               mbps["plain"], "plain OVS", (">=", TPUT_TARGET),
               note=f"median of {cfg['rounds']} x {cfg['seconds']} s"),
        Figure("ping RTT a->b, p50", median(rtt["loris"]) * 1e3, "us",
               median(rtt["plain"]) * 1e3, "plain OVS", ("<=", round(1 / TPUT_TARGET, 2)),
               note=f"{len(rtt['loris'])} pings each"),
        Figure("ping RTT a->b, p95", percentile(rtt["loris"], 95) * 1e3, "us",
               percentile(rtt["plain"], 95) * 1e3, "plain OVS",
               ("<=", round(1 / TPUT_TARGET, 2))),
        Figure("encapsulated ARP broadcasts while a and b resolve each other",
               arp["loris"][0], "", arp["plain"][0], "plain OVS floods", ("<=", 0.0),
               note=f"ARP frames on the underlay: {arp['loris'][1]} vs {arp['plain'][1]}"))
    return result


def _wait_listening(lab, container, port: int = 5201, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while "LISTEN" not in lab.run(container, ["ss", "-ltn", f"sport = :{port}"]).stdout:
        if time.monotonic() > deadline:
            raise TimeoutError(f"iperf3 -s did not listen on port {port} in {container.name}")
        time.sleep(0.1)
