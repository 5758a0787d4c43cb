"""DHCP responder: real packets built and parsed with os-ken's packet library."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from os_ken.lib import addrconv
from os_ken.lib.packet import dhcp, ethernet, ipv4, packet, udp

from controller import dhcp as responder
from controller.dhcp import Binding, RateLimiter, Responder, TokenBucket

CLIENT = "02:42:0a:07:00:05"
BINDING = Binding(ipaddress.IPv4Interface("198.18.135.5/24"), CLIENT, "198.18.135.1",
                  "0a:4c:00:00:00:08", 3600)


def client_packet(msg_type: int, chaddr: str = CLIENT, eth_src: str | None = None,
                  ciaddr: str = "0.0.0.0", requested: str | None = None,
                  server: str | None = None, xid: int = 0x1234ABCD, sport: int = 68) -> bytes:
    opts = [dhcp.option(dhcp.DHCP_MESSAGE_TYPE_OPT, bytes([msg_type]))]
    if requested:
        opts.append(dhcp.option(dhcp.DHCP_REQUESTED_IP_ADDR_OPT,
                                addrconv.ipv4.text_to_bin(requested)))
    if server:
        opts.append(dhcp.option(dhcp.DHCP_SERVER_IDENTIFIER_OPT,
                                addrconv.ipv4.text_to_bin(server)))
    pkt = packet.Packet()
    pkt.add_protocol(ethernet.ethernet(dst="ff:ff:ff:ff:ff:ff", src=eth_src or chaddr,
                                       ethertype=0x0800))
    pkt.add_protocol(ipv4.ipv4(src=ciaddr, dst="255.255.255.255", proto=17))
    pkt.add_protocol(udp.udp(src_port=sport, dst_port=67))
    pkt.add_protocol(dhcp.dhcp(op=dhcp.DHCP_BOOT_REQUEST, chaddr=chaddr, xid=xid,
                               ciaddr=ciaddr, options=dhcp.options(opts)))
    pkt.serialize()
    return bytes(pkt.data)


def parse_reply(frame: bytes):
    pkt = packet.Packet(frame)
    d = pkt.get_protocol(dhcp.dhcp)
    opts = {o.tag: o.value for o in d.options.option_list}
    return pkt.get_protocol(ethernet.ethernet), pkt.get_protocol(ipv4.ipv4), \
        pkt.get_protocol(udp.udp), d, opts


def answer(data: bytes, binding: Binding = BINDING) -> tuple[int | None, bytes | None]:
    req = responder.parse(data)
    assert req is not None
    kind = responder.decide(req, binding)
    return kind, (responder.build_reply(req, binding, kind) if kind else None)


def test_parse_reads_the_fields_that_matter():
    req = responder.parse(client_packet(dhcp.DHCP_REQUEST, requested="198.18.135.5",
                                        server="198.18.135.1"))
    assert (req.msg_type, req.xid, req.chaddr, req.requested_ip, req.server_id, req.name) == (
        dhcp.DHCP_REQUEST, 0x1234ABCD, CLIENT, "198.18.135.5", "198.18.135.1", "REQUEST")


@pytest.mark.parametrize("data", [b"", b"\x00" * 20, client_packet(1)[:60],
                                  client_packet(1, sport=1234)])
def test_parse_ignores_what_is_not_a_client_request(data):
    assert responder.parse(data) is None


def test_discover_gets_an_offer_with_address_mask_lease_and_server_id():
    kind, frame = answer(client_packet(dhcp.DHCP_DISCOVER))
    assert kind == dhcp.DHCP_OFFER
    eth, ip, u, d, opts = parse_reply(frame)
    assert (eth.src, eth.dst) == (BINDING.server_mac, CLIENT)
    assert (ip.src, ip.dst, u.src_port, u.dst_port) == ("198.18.135.1", "255.255.255.255", 67, 68)
    assert (d.op, d.xid, d.yiaddr, d.chaddr) == (dhcp.DHCP_BOOT_REPLY, 0x1234ABCD, "198.18.135.5",
                                                 CLIENT)
    assert opts[dhcp.DHCP_MESSAGE_TYPE_OPT] == bytes([dhcp.DHCP_OFFER])
    assert addrconv.ipv4.bin_to_text(opts[dhcp.DHCP_SERVER_IDENTIFIER_OPT]) == "198.18.135.1"
    assert addrconv.ipv4.bin_to_text(opts[dhcp.DHCP_SUBNET_MASK_OPT]) == "255.255.255.0"
    assert struct.unpack("!I", opts[dhcp.DHCP_IP_ADDR_LEASE_TIME_OPT])[0] == 3600
    assert struct.unpack("!I", opts[dhcp.DHCP_RENEWAL_TIME_OPT])[0] == 1800


def test_request_for_the_allocated_address_is_acked():
    kind, frame = answer(client_packet(dhcp.DHCP_REQUEST, requested="198.18.135.5",
                                       server="198.18.135.1"))
    assert kind == dhcp.DHCP_ACK
    assert parse_reply(frame)[3].yiaddr == "198.18.135.5"


def test_renewal_is_acked_by_unicast_to_the_client():
    kind, frame = answer(client_packet(dhcp.DHCP_REQUEST, ciaddr="198.18.135.5"))
    assert kind == dhcp.DHCP_ACK
    assert parse_reply(frame)[1].dst == "198.18.135.5"


def test_request_for_another_address_is_naked_by_broadcast():
    kind, frame = answer(client_packet(dhcp.DHCP_REQUEST, requested="198.18.135.99"))
    assert kind == responder.DHCP_NAK
    _, ip, _, d, opts = parse_reply(frame)
    assert (ip.dst, d.yiaddr) == ("255.255.255.255", "0.0.0.0")
    assert opts[dhcp.DHCP_MESSAGE_TYPE_OPT] == bytes([responder.DHCP_NAK])
    assert dhcp.DHCP_IP_ADDR_LEASE_TIME_OPT not in opts


@pytest.mark.parametrize("data", [
    # the client selected another server
    client_packet(dhcp.DHCP_REQUEST, requested="198.18.135.5", server="198.18.200.1"),
    client_packet(dhcp.DHCP_DISCOVER, chaddr="02:42:0a:07:00:06"),   # someone else's MAC
    client_packet(dhcp.DHCP_DISCOVER, eth_src="02:42:0a:07:00:06"),  # spoofed chaddr
    client_packet(7),                                                   # RELEASE
])
def test_silence_where_there_is_nothing_to_answer(data):
    assert answer(data) == (None, None)


def test_responder_only_answers_ports_its_lookup_vouches_for():
    seen = []

    def lookup(dpid, in_port, cookie):
        seen.append((dpid, in_port, cookie))
        return (BINDING, "port 5") if (dpid, in_port, cookie) == (1, 7, 42) else None

    r = Responder(lookup)
    assert r.handle(1, 8, 42, client_packet(dhcp.DHCP_DISCOVER)) is None
    frame = r.handle(1, 7, 42, client_packet(dhcp.DHCP_DISCOVER))
    assert parse_reply(frame)[3].yiaddr == "198.18.135.5"
    assert r.handle(1, 7, 42, b"garbage") is None
    assert seen == [(1, 8, 42), (1, 7, 42)] and r.answered == 1


def test_token_bucket_allows_a_burst_then_the_rate():
    b = TokenBucket(rate=5, burst=10)
    now = b.stamp
    assert sum(b.take(now) for _ in range(50)) == 10
    assert sum(b.take(now + 1.0) for _ in range(50)) == 5


def test_rate_limiter_is_per_port():
    limiter = RateLimiter(rate=1, burst=3)
    assert sum(limiter.allow("flooder", 0.0) for _ in range(100)) == 3
    assert limiter.allow("quiet", 0.0)
    assert limiter.dropped == 97
