"""DHCP responder logic: parse a client's packet, decide, build the reply frame.

Pure functions over os-ken's packet library, so they are tested without a switch. The app
feeds them packet-ins from DHCP ports (the port is known from the flow cookie and in_port)
and sends the reply back out of that port with a packet-out. A port only ever gets the one
address the controller allocated for it; the server identity is the pod's DHCP server
address and MAC (docs/design.md), which the ARP responder also answers for, so unicast
renewals reach us too.
"""

from __future__ import annotations

import ipaddress
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from os_ken.lib import addrconv
from os_ken.lib.packet import dhcp, ethernet, ipv4, packet, udp
from os_ken.ofproto import ether, inet

from controller.concurrency import OneThread

LOG = logging.getLogger("loris.dhcp")
CLIENT_PORT, SERVER_PORT = 68, 67
BROADCAST = "255.255.255.255"
DHCP_NAK = 6
MESSAGE_NAMES = {1: "DISCOVER", 2: "OFFER", 3: "REQUEST", 4: "DECLINE", 5: "ACK", 6: "NAK",
                 7: "RELEASE", 8: "INFORM"}


@dataclass(frozen=True)
class Request:
    """What matters of a client's DHCP packet."""
    msg_type: int
    xid: int
    chaddr: str
    eth_src: str
    ciaddr: str
    flags: int
    requested_ip: str | None     # option 50
    server_id: str | None        # option 54

    @property
    def name(self) -> str:
        return MESSAGE_NAMES.get(self.msg_type, str(self.msg_type))


@dataclass(frozen=True)
class Binding:
    """The one lease a port may have."""
    ip: ipaddress.IPv4Interface
    mac: str
    server_ip: str
    server_mac: str
    lease_time: int


def _option(opts: dhcp.options | None, tag: int) -> bytes | None:
    for opt in (opts.option_list if opts else ()):
        if isinstance(opt, dhcp.option) and opt.tag == tag:
            return opt.value
    return None


def _ip_option(opts: dhcp.options | None, tag: int) -> str | None:
    value = _option(opts, tag)
    return addrconv.ipv4.bin_to_text(value) if value and len(value) == 4 else None


def parse(data: bytes) -> Request | None:
    """A BOOTREQUEST from a client (UDP 68 -> 67 over IPv4 over Ethernet), or None."""
    try:
        pkt = packet.Packet(bytes(data))
    except Exception:      # os-ken raises assorted errors on truncated frames
        return None
    eth = pkt.get_protocol(ethernet.ethernet)
    udp_ = pkt.get_protocol(udp.udp)
    req = pkt.get_protocol(dhcp.dhcp)
    if eth is None or udp_ is None or req is None or pkt.get_protocol(ipv4.ipv4) is None:
        return None
    if udp_.src_port != CLIENT_PORT or udp_.dst_port != SERVER_PORT:
        return None
    if req.op != dhcp.DHCP_BOOT_REQUEST or req.hlen != 6 or not isinstance(req.chaddr, str):
        return None
    kind = _option(req.options, dhcp.DHCP_MESSAGE_TYPE_OPT)
    if not kind or len(kind) != 1:
        return None
    return Request(kind[0], req.xid, req.chaddr.lower(), eth.src.lower(), req.ciaddr,
                   req.flags, _ip_option(req.options, dhcp.DHCP_REQUESTED_IP_ADDR_OPT),
                   _ip_option(req.options, dhcp.DHCP_SERVER_IDENTIFIER_OPT))


def decide(req: Request, binding: Binding) -> int | None:
    """The reply type for `req` (OFFER, ACK, NAK) or None to stay silent."""
    if req.chaddr != binding.mac or req.eth_src != binding.mac:
        return None                     # not the port's own MAC: never lease to it
    if req.msg_type == dhcp.DHCP_DISCOVER:
        return dhcp.DHCP_OFFER
    if req.msg_type != dhcp.DHCP_REQUEST:
        return None                     # DECLINE/RELEASE/INFORM: nothing to hand out
    if req.server_id is not None and req.server_id != binding.server_ip:
        return None                     # the client selected another server (RFC 2131 4.3.2)
    wanted = req.requested_ip or (req.ciaddr if req.ciaddr != "0.0.0.0" else None)
    if wanted == str(binding.ip.ip):
        return dhcp.DHCP_ACK
    return DHCP_NAK


def build_reply(req: Request, binding: Binding, reply_type: int) -> bytes:
    """The Ethernet frame answering `req` with OFFER, ACK or NAK."""
    server = binding.server_ip
    opts = [dhcp.option(dhcp.DHCP_MESSAGE_TYPE_OPT, bytes([reply_type])),
            dhcp.option(dhcp.DHCP_SERVER_IDENTIFIER_OPT, addrconv.ipv4.text_to_bin(server))]
    yiaddr = "0.0.0.0"
    if reply_type != DHCP_NAK:
        yiaddr = str(binding.ip.ip)
        lease = binding.lease_time
        opts += [
            dhcp.option(dhcp.DHCP_IP_ADDR_LEASE_TIME_OPT, struct.pack("!I", lease)),
            dhcp.option(dhcp.DHCP_RENEWAL_TIME_OPT, struct.pack("!I", lease // 2)),
            dhcp.option(dhcp.DHCP_REBINDING_TIME_OPT, struct.pack("!I", lease * 7 // 8)),
            dhcp.option(dhcp.DHCP_SUBNET_MASK_OPT,
                        addrconv.ipv4.text_to_bin(str(binding.ip.netmask))),
        ]
    # A renewing client (ciaddr set) has its address configured and gets unicast; anyone
    # else, and every NAK, gets the limited broadcast (RFC 2131 4.1).
    ip_dst = req.ciaddr if req.ciaddr != "0.0.0.0" and reply_type != DHCP_NAK else BROADCAST
    frame = packet.Packet()
    frame.add_protocol(ethernet.ethernet(dst=req.chaddr, src=binding.server_mac,
                                         ethertype=ether.ETH_TYPE_IP))
    frame.add_protocol(ipv4.ipv4(src=server, dst=ip_dst, proto=inet.IPPROTO_UDP, ttl=64))
    frame.add_protocol(udp.udp(src_port=SERVER_PORT, dst_port=CLIENT_PORT))
    frame.add_protocol(dhcp.dhcp(op=dhcp.DHCP_BOOT_REPLY, chaddr=req.chaddr, xid=req.xid,
                                 flags=req.flags, ciaddr=req.ciaddr, yiaddr=yiaddr,
                                 siaddr=server, options=dhcp.options(opts)))
    frame.serialize()
    return bytes(frame.data)


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = burst, time.monotonic()

    def take(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if now > self.stamp:               # a clock read before the last one adds nothing
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class RateLimiter:
    """One token bucket per key (a port id); a flooding container only exhausts its own.
    Unlocked: used by one thread, the os-ken app's event loop (checked)."""

    def __init__(self, rate: float, burst: float, max_keys: int = 65536) -> None:
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._buckets: dict[object, TokenBucket] = {}
        self.dropped = 0
        self._thread = OneThread("the DHCP rate limiter")

    def allow(self, key: object, now: float | None = None) -> bool:
        self._thread.check()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._buckets.clear()        # bounded memory; worst case a fresh burst
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst)
        if bucket.take(now):
            return True
        self.dropped += 1
        return False


class Responder:
    """Packet-in to reply: `handle(dpid, in_port, cookie, data) -> frame | None`.

    `lookup(dpid, in_port, cookie)` returns the port's Binding (and something printable
    naming the port) only if the cookie names a DHCP port on exactly that datapath and
    ofport, so a container can neither ask for another port's address nor reach the
    responder through a forged cookie. Unlocked: used by one thread, the DHCP worker
    (checked).
    """

    def __init__(self, lookup: Callable[[int, int, int], tuple[Binding, object] | None]) -> None:
        self.lookup = lookup
        self.answered = 0
        self.replies: dict[str, int] = {"offer": 0, "ack": 0, "nak": 0}   # for /metrics
        self._thread = OneThread("the DHCP responder")

    def handle(self, dpid: int, in_port: int, cookie: int, data: bytes) -> bytes | None:
        self._thread.check()
        req = parse(data)
        if req is None:
            return None
        found = self.lookup(dpid, in_port, cookie)
        if found is None:
            LOG.info("DHCP %s from %s on %#x port %d: no DHCP port there, ignored",
                     req.name, req.chaddr, dpid, in_port)
            return None
        binding, who = found
        reply = decide(req, binding)
        if reply is None:
            LOG.info("DHCP %s from %s (%s): not answered", req.name, req.chaddr, who)
            return None
        LOG.info("DHCP %s from %s (%s) -> %s %s", req.name, req.chaddr, who,
                 MESSAGE_NAMES[reply], binding.ip if reply != DHCP_NAK else
                 f"(wanted {req.requested_ip or req.ciaddr})")
        self.answered += 1
        kind = MESSAGE_NAMES[reply].lower()
        self.replies[kind] = self.replies.get(kind, 0) + 1
        return build_reply(req, binding, reply)
