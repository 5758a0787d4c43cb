"""The agent's DHCP messages (hostagent/dhcp.py) read by os-ken's codec as the controller's
responder reads them, and the responder's replies read by the agent: the two sides agree
without a switch. The exchange over a real socket is in tests/integration and e2e (DHCP
connects)."""

from __future__ import annotations

import ipaddress

from os_ken.lib.packet import ethernet, ipv4, packet, udp

from controller import dhcp as responder
from hostagent import dhcp

MAC = "02:00:00:00:07:09"
SERVER_MAC = "0a:4c:00:00:00:08"
BINDING = responder.Binding(ipaddress.IPv4Interface("198.18.135.9/24"), MAC, "198.18.135.1",
                            SERVER_MAC, 86400)


def _as_frame(payload: bytes) -> bytes:
    """What the kernel sends for our UDP socket: broadcast from 0.0.0.0, port 68 -> 67."""
    frame = packet.Packet()
    frame.add_protocol(ethernet.ethernet(dst="ff:ff:ff:ff:ff:ff", src=MAC))
    frame.add_protocol(ipv4.ipv4(src="0.0.0.0", dst="255.255.255.255", proto=17))
    frame.add_protocol(udp.udp(src_port=68, dst_port=67))
    frame.add_protocol(payload)
    frame.serialize()
    return bytes(frame.data)


def _reply_payload(frame: bytes) -> bytes:
    return frame[14 + 20 + 8:]       # Ethernet, IPv4 without options, UDP


def test_a_discover_gets_an_offer_the_agent_reads():
    req = responder.parse(_as_frame(dhcp.message(dhcp.DISCOVER, 0x1234, MAC)))
    assert req is not None and req.msg_type == dhcp.DISCOVER and req.xid == 0x1234
    assert req.chaddr == MAC and req.flags == dhcp.BROADCAST_FLAG
    assert responder.decide(req, BINDING) == dhcp.OFFER
    offer = dhcp.parse_reply(_reply_payload(responder.build_reply(req, BINDING, dhcp.OFFER)),
                             0x1234, MAC)
    assert offer == dhcp.Reply(dhcp.OFFER, 0x1234, "198.18.135.9", "198.18.135.1",
                               "255.255.255.0")


def test_a_request_for_the_offer_gets_the_lease():
    msg = dhcp.message(dhcp.REQUEST, 7, MAC, "198.18.135.9", "198.18.135.1")
    req = responder.parse(_as_frame(msg))
    assert (req.requested_ip, req.server_id) == ("198.18.135.9", "198.18.135.1")
    assert responder.decide(req, BINDING) == dhcp.ACK
    ack = dhcp.parse_reply(_reply_payload(responder.build_reply(req, BINDING, dhcp.ACK)), 7, MAC)
    assert ack.msg_type == dhcp.ACK and ack.lease() == "198.18.135.9/24"


def test_a_request_for_another_address_is_refused():
    req = responder.parse(_as_frame(dhcp.message(dhcp.REQUEST, 7, MAC, "198.18.135.10",
                                                 "198.18.135.1")))
    assert responder.decide(req, BINDING) == dhcp.NAK
    nak = dhcp.parse_reply(_reply_payload(responder.build_reply(req, BINDING, dhcp.NAK)), 7, MAC)
    assert nak.msg_type == dhcp.NAK


def test_replies_to_others_or_broken_ones_are_ignored():
    req = responder.parse(_as_frame(dhcp.message(dhcp.DISCOVER, 5, MAC)))
    good = _reply_payload(responder.build_reply(req, BINDING, dhcp.OFFER))
    assert dhcp.parse_reply(good, 6, MAC) is None                     # another exchange
    assert dhcp.parse_reply(good, 5, "02:00:00:00:07:0a") is None     # another client
    assert dhcp.parse_reply(good[:200], 5, MAC) is None               # cut short
    cut = good[:dhcp._HEADER.size + 4] + bytes([dhcp.OPT_MSG_TYPE, 5, 2])
    assert dhcp.parse_reply(cut, 5, MAC) is None                      # option overruns
    request = dhcp.message(dhcp.DISCOVER, 5, MAC)                      # a BOOTREQUEST
    assert dhcp.parse_reply(request, 5, MAC) is None


def test_a_lease_without_a_mask_is_a_24():
    assert dhcp.Reply(dhcp.ACK, 1, "10.1.2.3", "10.1.2.1", None).lease() == "10.1.2.3/24"
