"""The acceptance suite's view of its lab (tests/e2e/test_acceptance.py): who is where
(Member, Net), and how it looks at them: many pings at once, neighbour tables, the flows
of a port, ARP-responder hits, captures' filters, long pings, crafted ARP replies."""

from __future__ import annotations

import concurrent.futures
import re
import sys
from dataclasses import dataclass

from helpers import cookie_of, interface, ping_counts

from flows import Kind
from lab import Lab


@dataclass
class Member:
    short: str
    host: str
    pod: int
    ip: str          # bare address
    mac: str = ""
    port_id: int = 0
    name: str = ""   # the Docker container's name


class Net:
    """The lab plus who is where."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.members: dict[str, Member] = {}
        self.pristine_h3: dict = {}

    def __getitem__(self, short: str) -> Member:
        return self.members[short]

    def container(self, m: Member | str):
        return self.lab.container(m if isinstance(m, str) else m.short)

    def alive(self) -> list[Member]:
        return list(self.members.values())

    def eth1(self, m: Member) -> dict | None:
        return interface(self.lab, self.container(m))


def ping_many(net: Net, src: Member, ips: list[str], count: int = 2,
              wait: int = 2) -> dict[str, int]:
    """Ping every address from `src` at once (one `docker exec`); replies per address."""
    if not ips:
        return {}
    script = " ".join(
        f'(r=$(busybox ping -q -c {count} -i 0.2 -W {wait} {ip} 2>&1 | '
        f"busybox grep -o '[0-9]* packets received'); echo \"{ip} ${{r%% *}}\") &"
        for ip in ips) + " wait"
    out = net.container(src).exec(["sh", "-c", script], timeout=30 + 2 * count).stdout
    got = {}
    for line in out.splitlines():
        ip, _, n = line.partition(" ")
        got[ip] = int(n or 0)
    assert set(got) == set(ips), out
    return got


def in_parallel(fn, items):
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return list(pool.map(fn, items))


def neigh(net: Net, m: Member, ip: str) -> str:
    """`m`'s neighbour entry for `ip` ('' if none)."""
    return net.lab.run(net.container(m), ["ip", "neigh", "show", ip, "dev", "eth1"]).stdout.strip()


def flush_neighbours(net: Net, members: list[Member]) -> None:
    for m in members:
        net.lab.run(net.container(m), ["ip", "neigh", "flush", "dev", "eth1", "nud", "all"])


def flows_of_port(lab: Lab, hosts: list[str], port_id: int, mac: str) -> list[str]:
    """Flows whose cookie names the port (kinds PORT and MEMBER) or that mention its MAC,
    as '<host> <bridge>: <flow>'."""
    found = []
    for host in hosts:
        for bridge in ("br-int", "br-tun"):
            for f in lab.ovs(host).dump_flows(bridge, stats=False):
                cookie = cookie_of(f)
                if (cookie and cookie[0] in (Kind.PORT, Kind.MEMBER) and cookie[1] == port_id) \
                        or mac in f:
                    found.append(f"{host} {bridge}: {f}")
    return found


def n_packets(lab: Lab, host: str, bridge: str, predicate) -> int:
    total = 0
    for f in lab.ovs(host).dump_flows(bridge):
        if predicate(f):
            total += int(re.search(r"n_packets=(\d+)", f).group(1))
    return total


def responder_hits(net: Net, asker: Member, target: Member) -> int:
    """Packets matched by the ARP-responder flow for `target` on `asker`'s host."""
    def is_answer(f: str) -> bool:
        cookie = cookie_of(f)
        return cookie is not None and cookie[:2] == (Kind.MEMBER, target.port_id) and \
            f"arp_tpa={target.ip}," in f and "table=10," in f
    return n_packets(net.lab, asker.host, "br-int", is_answer)


def inbound_filter(own_macs: list[str]) -> str:
    """tcpdump filter: frames on a container's eth1 that were not sent by any of these MACs."""
    return "not (" + " or ".join(f"ether src {mac}" for mac in own_macs) + ")"


def start_ping(net: Net, name: str, src: Member, dst: Member, count: int):
    """`ping -i 0.2 -c count` (iputils) from src to dst, as a lab process. It is left to
    finish rather than interrupted: an interrupted ping counts the request still in flight
    as lost."""
    return net.lab.start_process(name, ["ping", "-i", "0.2", "-W", "2", "-c", str(count),
                                        dst.ip], netns=net.container(src))  # fmt: skip


def finish_ping(proc, count: int) -> None:
    """The ping outlived what the test did to it (else make `count` larger), then every
    request got its reply."""
    assert proc.alive, f"the ping ended before the test was done: {proc.log_tail(3)}"
    proc.wait(count * 0.2 + 10)
    sent, received = ping_counts(proc.log_text())
    assert (sent, received) == (count, count), proc.log_tail(5)


def send_arp_reply(net: Net, attacker: Member, eth_dst: str, claimed_ip: str, target: Member,
                   count: int = 3) -> None:
    """A crafted unicast ARP reply from `attacker`'s eth1: '`claimed_ip` is at <attacker's
    MAC>', addressed to `target` (raw socket, from inside the attacker's namespace)."""
    code = (
        "import socket, sys\n"
        "mac = lambda s: bytes.fromhex(s.replace(':', ''))\n"
        "src, dst, spa, tpa, n = sys.argv[1:]\n"
        "f = mac(dst) + mac(src) + b'\\x08\\x06' + bytes.fromhex('0001080006040002')\n"
        "f += mac(src) + socket.inet_aton(spa) + mac(dst) + socket.inet_aton(tpa)\n"
        "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n"
        "s.bind(('eth1', 0))\n"
        "for _ in range(int(n)): s.send(f.ljust(60, b'\\0'))\n")
    net.lab.run(net.container(attacker), [sys.executable, "-c", code, attacker.mac, eth_dst,
                                          claimed_ip, target.ip, str(count)])
