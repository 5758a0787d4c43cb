"""The DHCP exchange of a container port, made by the agent on one UDP socket that lives in
the container's namespace.

Why not a DHCP client program: busybox `udhcpc` (what the agent ran before) opens and binds
a new AF_PACKET socket for each message, and each bind and close waits for an RCU grace
period in the kernel (11-16 ms here): ~90 ms of a DHCP connect, against ~1 ms for the
controller to answer each message. A UDP socket bound to port 68 on the interface
(SO_BINDTODEVICE) needs no address: Linux sends a limited broadcast from 0.0.0.0 through
it and hands it the server's broadcast replies (controller/dhcp.py broadcasts every reply to
a client without an address). Opening and closing it costs well under a millisecond.

The exchange is RFC 2131's: DISCOVER, OFFER, REQUEST (the offered address and the server
that offered it), ACK; each message is sent again every `timeout_s` up to `tries` times, a
NAK fails the exchange. The lease is then put on the interface. The controller gives a port
one address, for a lease far longer than any container: the agent asks again when the
port is re-made (hostagent/reconcile.py), and does not renew.

The packets are built and read here with `struct` (the agent does not load os-ken for four
messages); tests/unit/test_dhcp_client.py checks them against os-ken's codec and the
controller's responder.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import time
from dataclasses import dataclass

from hostagent import netdev
from hostagent.netns_thread import call_in_netns_fd

CLIENT_PORT, SERVER_PORT = 68, 67
BOOTREQUEST, BOOTREPLY = 1, 2
DISCOVER, OFFER, REQUEST, ACK, NAK = 1, 2, 3, 5, 6
MAGIC = b"\x63\x82\x53\x63"
OPT_PAD, OPT_MASK, OPT_REQUESTED_IP, OPT_MSG_TYPE, OPT_SERVER_ID, OPT_PARAMS, OPT_END = (
    0, 1, 50, 53, 54, 55, 255)
BROADCAST_FLAG = 0x8000
_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")    # BOOTP's fixed 236 bytes


class DhcpError(RuntimeError):
    pass


@dataclass(frozen=True)
class Reply:
    msg_type: int
    xid: int
    yiaddr: str
    server_id: str | None
    netmask: str | None

    def lease(self) -> str:
        """"A.B.C.D/len" (a /24 when the server sent no mask, as udhcpc assumed)."""
        mask = self.netmask or "255.255.255.0"
        return str(ipaddress.IPv4Interface(f"{self.yiaddr}/{mask}"))


def _options(*pairs: tuple[int, bytes]) -> bytes:
    return b"".join(bytes([tag, len(value)]) + value for tag, value in pairs) + bytes([OPT_END])


def message(msg_type: int, xid: int, mac: str, requested: str | None = None,
            server_id: str | None = None) -> bytes:
    """A BOOTREQUEST of `msg_type` (DISCOVER or REQUEST) from `mac`, asking for the reply
    by broadcast (the client has no address yet)."""
    chaddr = bytes.fromhex(mac.replace(":", ""))
    opts = [(OPT_MSG_TYPE, bytes([msg_type]))]
    if requested is not None:
        opts.append((OPT_REQUESTED_IP, socket.inet_aton(requested)))
    if server_id is not None:
        opts.append((OPT_SERVER_ID, socket.inet_aton(server_id)))
    opts.append((OPT_PARAMS, bytes([OPT_MASK])))
    zero = bytes(4)
    return _HEADER.pack(BOOTREQUEST, 1, 6, 0, xid, 0, BROADCAST_FLAG, zero, zero, zero, zero,
                        chaddr, b"", b"") + MAGIC + _options(*opts)


def parse_reply(data: bytes, xid: int, mac: str) -> Reply | None:
    """The server's reply to our `xid` for `mac`, or None for anything else."""
    if len(data) < _HEADER.size + len(MAGIC) or data[_HEADER.size:_HEADER.size + 4] != MAGIC:
        return None
    op, _htype, hlen, _hops, got_xid, _secs, _flags, _ci, yiaddr, _si, _gi, chaddr, *_ = \
        _HEADER.unpack_from(data)
    if op != BOOTREPLY or got_xid != xid or hlen != 6 or \
            chaddr[:6] != bytes.fromhex(mac.replace(":", "")):
        return None
    found: dict[int, bytes] = {}
    i = _HEADER.size + 4
    while i < len(data) and data[i] != OPT_END:
        if data[i] == OPT_PAD:
            i += 1
            continue
        if i + 1 >= len(data) or i + 2 + data[i + 1] > len(data):
            return None                                 # an option cut short
        found.setdefault(data[i], data[i + 2:i + 2 + data[i + 1]])
        i += 2 + data[i + 1]
    kind = found.get(OPT_MSG_TYPE)
    if kind is None or len(kind) != 1:
        return None

    def address(tag: int) -> str | None:
        value = found.get(tag)
        return socket.inet_ntoa(value) if value is not None and len(value) == 4 else None

    return Reply(kind[0], got_xid, socket.inet_ntoa(yiaddr), address(OPT_SERVER_ID),
                 address(OPT_MASK))


def _client_socket(ifname: str) -> socket.socket:
    """Called inside the container's namespace: the socket stays in it."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", CLIENT_PORT))
    except OSError:
        s.close()
        raise
    return s


def _ask(sock: socket.socket, packet: bytes, xid: int, mac: str, wanted: set[int],
         tries: int, timeout_s: float) -> Reply | None:
    """Send `packet` up to `tries` times until a reply of a `wanted` type comes back."""
    for _ in range(tries):
        sock.sendto(packet, ("255.255.255.255", SERVER_PORT))
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data = sock.recv(4096)
            except TimeoutError:
                break
            reply = parse_reply(data, xid, mac)
            if reply is not None and reply.msg_type in wanted:
                return reply
    return None


def obtain_lease(netns_path: str, ifname: str, mac: str, tries: int = 5,
                 timeout_s: float = 1.0) -> str:
    """One DHCP exchange for `ifname` (MAC `mac`) of the namespace `netns_path`; the lease
    is put on the interface. Returns "A.B.C.D/len"."""
    try:
        with netdev.open_netns(netns_path) as fd:
            sock = call_in_netns_fd(fd, lambda: _client_socket(ifname))
    except OSError as e:
        raise DhcpError(f"cannot open a DHCP client socket on {ifname}: {e}") from e
    xid = int.from_bytes(os.urandom(4), "big")
    try:
        offer = _ask(sock, message(DISCOVER, xid, mac), xid, mac, {OFFER}, tries, timeout_s)
        if offer is None or offer.server_id is None:
            raise DhcpError(f"no DHCP lease on {ifname} after {tries} tries (no OFFER)")
        ack = _ask(sock, message(REQUEST, xid, mac, offer.yiaddr, offer.server_id), xid, mac,
                   {ACK, NAK}, tries, timeout_s)
    except OSError as e:
        raise DhcpError(f"DHCP on {ifname}: {e}") from e
    finally:
        sock.close()
    if ack is None:
        raise DhcpError(f"no DHCP lease on {ifname} after {tries} tries (no ACK for "
                        f"{offer.yiaddr} from {offer.server_id})")
    if ack.msg_type == NAK:
        raise DhcpError(f"the DHCP server {offer.server_id} refused {offer.yiaddr} (NAK)")
    lease = ack.lease()
    netdev.add_address(netns_path, ifname, lease)
    return lease
