"""IP/TCP packet helpers shared by the NFQUEUE processes (testbed/linkem.py corrupts segments,
testbed/mangle.py rewrites them) and by the TCP probes of testbed/probe.py: the Internet
checksum, where a packet's TCP header and payload are, and its TCP checksum, for IPv4 and IPv6.

Pure functions on bytes, no sockets: the packet given is what NFQUEUE hands over, from the IP
header on."""

from __future__ import annotations

import socket
import struct
from array import array

IPPROTO_TCP = socket.IPPROTO_TCP


def csum(data: bytes | bytearray | memoryview) -> int:
    """The Internet checksum (RFC 1071) of data, as the 16-bit value to store in native byte
    order (the one's complement sum does not care which order the words are summed in)."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    s = sum(array("H", bytes(data)))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def tcp_offset(pkt: bytes | bytearray | memoryview) -> int | None:
    """Where the TCP header of an IPv4 or IPv6 packet starts; None if the packet is not TCP
    (or an IPv4 fragment after the first, or IPv6 with extension headers before TCP, or too
    short to hold a TCP header)."""
    if len(pkt) < 40:
        return None
    version = pkt[0] >> 4
    if version == 4:
        ihl = (pkt[0] & 0x0F) * 4
        if pkt[9] != IPPROTO_TCP or struct.unpack_from("!H", pkt, 6)[0] & 0x1FFF:
            return None
        off = ihl
    elif version == 6:
        if pkt[6] != IPPROTO_TCP:
            return None
        off = 40
    else:
        return None
    return off if len(pkt) >= off + 20 else None


def tcp_payload(pkt: bytes | bytearray | memoryview) -> tuple[int, int, int] | None:
    """(TCP header offset, payload offset, payload length) of an IPv4/IPv6 TCP packet, the
    length from the IP header (a frame's padding is not payload); None if it is not TCP."""
    off = tcp_offset(pkt)
    if off is None:
        return None
    if pkt[0] >> 4 == 4:
        end = struct.unpack_from("!H", pkt, 2)[0]
    else:
        end = 40 + struct.unpack_from("!H", pkt, 4)[0]
    end = min(end, len(pkt))
    start = off + (pkt[off + 12] >> 4) * 4
    if start > end:
        return None
    return off, start, end - start


def tcp_checksum(pkt: bytes | bytearray | memoryview, off: int, end: int | None = None) -> int:
    """The TCP checksum a segment should carry (its checksum field counted as zero): pseudo
    header of the packet's IP version, then the TCP header at `off` and its payload up to
    `end` (default: the packet's end)."""
    end = len(pkt) if end is None else end
    tcp = bytearray(pkt[off:end])
    tcp[16:18] = b"\0\0"
    if pkt[0] >> 4 == 4:
        pseudo = bytes(pkt[12:20]) + struct.pack("!BBH", 0, IPPROTO_TCP, len(tcp))
    else:
        pseudo = bytes(pkt[8:40]) + struct.pack("!I3xB", len(tcp), IPPROTO_TCP)
    return csum(pseudo + bytes(tcp))


def tcp_checksum_ok(pkt: bytes | bytearray | memoryview) -> bool:
    """Whether a TCP segment's checksum is right (False also for a packet that is not TCP)."""
    span = tcp_payload(pkt)
    if span is None:
        return False
    off, start, n = span
    (have,) = struct.unpack_from("=H", pkt, off + 16)
    return have == tcp_checksum(pkt, off, start + n)


def set_tcp_checksum(pkt: bytearray, off: int, end: int | None = None) -> None:
    """Store the right TCP checksum in a segment whose TCP header is at `off`."""
    struct.pack_into("=H", pkt, off + 16, tcp_checksum(pkt, off, end))


def flip_payload_bit(pkt: bytearray, bit: int, fix_checksum: bool) -> tuple[int, int] | None:
    """Flip bit number `bit` (0 = the first payload byte's most significant bit) of a TCP
    segment's payload, in place; with fix_checksum the TCP checksum is recomputed, else it is
    left as it was (and is now wrong: one flipped bit always changes the one's complement sum,
    since no word changes by a multiple of 0xFFFF). Returns (byte offset in the packet, bit
    mask), None if the packet has no TCP payload or `bit` is beyond it."""
    span = tcp_payload(pkt)
    if span is None:
        return None
    off, start, n = span
    if not 0 <= bit < 8 * n:
        return None
    at, mask = start + bit // 8, 0x80 >> (bit % 8)
    pkt[at] ^= mask
    if fix_checksum:
        set_tcp_checksum(pkt, off, start + n)
    return at, mask
