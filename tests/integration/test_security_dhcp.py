"""A container flooding DHCP cannot starve the controller (docs/security.md).

DHCP from a DHCP port goes to the controller as packet-ins. Two limits stand in the way of
a flood: OVS's per-bridge `controller_rate_limit` (1000/s, burst 250; OVS queues packet-ins
per port and serves the ports in turn) and the controller's per-port token bucket (5/s,
burst 10; controller/dhcp.py). Here one container sends DHCPDISCOVERs as fast as a raw
socket goes, from its own MAC; meanwhile another container on the same bridge connects by
DHCP, a third on another host connects with a static address, and the REST API answers.
The flooder gets at most its budget of OFFERs.
"""

from __future__ import annotations

import json
import time

import pytest
from helpers import connect

from lab import Lab
from lab.core import venv_bin

pytestmark = [pytest.mark.integration]

POD, SUBNET = 9, "198.18.137.0/24"
FLOOD_S = 8.0
RATE, BURST = 5, 10           # controller/dhcp.py defaults (LORIS_DHCP_RATE, burst 10)

FLOODER = r"""
import json, os, socket, struct, sys, threading, time
ifname, mac, seconds = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", "")), float(sys.argv[3])

def csum(data):
    s = sum(struct.unpack("!10H", data))
    s = (s >> 16) + (s & 0xFFFF)
    return ~(s + (s >> 16)) & 0xFFFF

bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, 0x4c6f7269, 0, 0x8000, bytes(4),
                    bytes(4), bytes(4), bytes(4), mac + bytes(10), bytes(64), bytes(128))
bootp += bytes([99, 130, 83, 99, 53, 1, 1, 255])
bootp += bytes(300 - len(bootp))
udp = struct.pack("!HHHH", 68, 67, 8 + len(bootp), 0) + bootp
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, bytes(4), b"\xff" * 4)
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
frame = b"\xff" * 6 + mac + b"\x08\x00" + ip + udp

sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
sock.bind((ifname, 0))
offers, stop = [0], threading.Event()

def receive():
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            data, addr = sock.recvfrom(2048)
        except TimeoutError:
            continue
        # an incoming IPv4/UDP 67->68 BOOTREPLY whose option 53 is OFFER (2)
        if addr[2] != 4 and data[12:14] == b"\x08\x00" and data[23] == 17 and \
                data[34:38] == b"\x00\x43\x00\x44" and data[42] == 2 and \
                b"\x35\x01\x02" in data[282:]:
            offers[0] += 1

t = threading.Thread(target=receive)
t.start()
sent, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    for _ in range(100):
        try:
            sock.send(frame)
            sent += 1
        except OSError:          # the veth's queue is full: the kernel pushes back
            time.sleep(0.001)
time.sleep(1.0)                  # replies still on their way
stop.set()
t.join()
print(json.dumps({"sent": sent, "offers": offers[0], "seconds": seconds}), flush=True)
"""


@pytest.fixture(scope="module")
def lab(make_cluster):
    # meshed: both agents polling before the first connect
    lab = make_cluster(hosts=2, docker=False, wait="meshed")
    assert lab.api("POST", "/v1/pods", {"id": POD, "subnet": SUBNET})[0] == 201
    return lab


def timed_connect(lab: Lab, name: str, host: str, ip: str) -> tuple[float, dict]:
    """A new netns container `name` on `host`, connected into POD: (seconds, port)."""
    lab.add_container(host, name, kind="netns")
    started = time.monotonic()
    status, port = connect(lab, name, ip, POD)
    took = time.monotonic() - started
    assert status == 201, port
    return took, port


def test_a_dhcp_flood_is_dropped_and_starves_nobody(lab):
    _, flooder = timed_connect(lab, "flooder", "h1", "dhcp")
    baseline, _ = timed_connect(lab, "calm", "h1", "dhcp")  # a DHCP connect, undisturbed

    proc = lab.start_process("flooder", [venv_bin() / "python", "-c", FLOODER, "eth1",
                                         flooder["mac"], str(FLOOD_S)],
                             netns=lab.container("flooder"))
    time.sleep(1.0)                                          # the flood is on
    assert proc.alive, proc.log_text()
    during, victim = timed_connect(lab, "victim", "h1", "dhcp")  # flooder's bridge
    static, _ = timed_connect(lab, "remote", "h2", "198.18.137.200/24")
    latencies = []
    for _ in range(5):
        started = time.monotonic()
        assert lab.api("GET", "/v1/hosts")[0] == 200
        latencies.append(time.monotonic() - started)
    assert proc.alive, "the flood ended before the connects did; make FLOOD_S longer"
    assert proc.wait(FLOOD_S + 20) == 0, proc.log_text()
    result = json.loads(proc.log_text().strip().splitlines()[-1])

    assert victim["lease"] == victim["ip"]
    assert during < baseline + 5, f"DHCP connect took {during:.1f}s under flood ({baseline:.1f}s " \
                                  "without)"
    assert static < 10, f"static connect on the other host took {static:.1f}s under flood"
    assert max(latencies) < 1.0, f"REST latencies under flood: {latencies}"
    # the flooder got at most its token bucket's worth, out of thousands of requests
    budget = BURST + RATE * (FLOOD_S + 1) + 5
    assert result["sent"] > 20 * budget, result
    assert 0 < result["offers"] <= budget, result
    # and the controller is none the worse
    assert lab.processes["controller"].alive
    status, port = lab.api("GET", f"/v1/ports/{victim['id']}")
    assert status == 200 and port["state"] == "active"
    print(f"flood: {result}; DHCP connect {baseline:.2f}s calm, {during:.2f}s under flood; "
          f"static connect {static:.2f}s; REST max {max(latencies) * 1000:.0f} ms")
