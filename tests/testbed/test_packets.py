"""testbed.packets and the emulator's corruption without a network: crafted IPv4 and IPv6 TCP
segments (testbed.probe.tcp_probe), checksums checked against an independent implementation
(struct-unpacked big-endian words, not the array sum packets.csum uses)."""

from __future__ import annotations

import random
import struct

import pytest

from testbed.linkem import Queue
from testbed.packets import flip_payload_bit, tcp_checksum_ok, tcp_payload
from testbed.probe import probe_payload, tcp_probe

V4 = ("10.0.1.1", "10.0.5.2")
V6 = ("fd00:0:1::1", "fd00:0:5::2")


def ones_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def tcp_sum_ok(pkt: bytes) -> bool:
    """RFC 793/8200: the one's complement sum over pseudo header and segment is 0xFFFF."""
    if pkt[0] >> 4 == 4:
        ihl = (pkt[0] & 15) * 4
        seg = pkt[ihl:]
        pseudo = pkt[12:20] + struct.pack("!BBH", 0, 6, len(seg))
    else:
        seg = pkt[40:]
        pseudo = pkt[8:40] + struct.pack("!IxxxB", len(seg), 6)
    return ones_sum(pseudo + seg) == 0xFFFF


@pytest.mark.parametrize("addrs", [V4, V6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("fix", [False, True])
def test_one_payload_bit_flipped(addrs, fix):
    pkt = tcp_probe(*addrs, 7, 100)
    assert tcp_sum_ok(pkt) and tcp_checksum_ok(pkt)
    _, start, n = tcp_payload(pkt)
    assert (n, pkt[start:]) == (100, probe_payload(7, 100))
    for bit in (0, 1, 433, 799):
        out = bytearray(pkt)
        at, mask = flip_payload_bit(out, bit, fix)
        assert (at, mask) == (start + bit // 8, 0x80 >> bit % 8)
        diff = [i for i, (a, b) in enumerate(zip(pkt, out, strict=True)) if a != b]
        if fix:  # the payload byte and the checksum field, nothing else
            assert at in diff and set(diff) - {at} <= {start - 20 + 16, start - 20 + 17}
        else:
            assert diff == [at]
        assert bin(pkt[at] ^ out[at]).count("1") == 1
        assert tcp_sum_ok(bytes(out)) is fix and tcp_checksum_ok(out) is fix


def test_no_payload_no_flip():
    bare = bytearray(tcp_probe(*V4, 3, 0))
    assert tcp_payload(bare)[2] == 0
    assert flip_payload_bit(bare, 0, True) is None
    assert bytes(bare) == tcp_probe(*V4, 3, 0)
    # Ethernet padding after the IP packet is not payload
    padded = bytearray(tcp_probe(*V4, 3, 0) + bytes(6))
    assert tcp_payload(padded)[2] == 0
    # not TCP, or a later fragment: nothing to corrupt
    udp = bytearray(tcp_probe(*V4, 3, 10))
    udp[9] = 17
    assert tcp_payload(udp) is None
    frag = bytearray(tcp_probe(*V4, 3, 10))
    frag[6:8] = struct.pack("!H", 0x2001)
    assert tcp_payload(frag) is None


def test_queue_corrupts_a_share_of_payload_segments_only():
    """Half the segments carry no payload: 10% of the payload ones are corrupted (not 20%, as
    a countdown over every segment would give), and a bare one never changes."""
    q = Queue(num=0, rng=random.Random(5))
    q.configure(corrupt_pct=10, corrupt_fix_checksum=True)
    changed = 0
    for i in range(20000):
        pkt = tcp_probe(*V4, i, 60 if i % 2 else 0)
        out = q.corrupted_copy(memoryview(pkt))
        if not i % 2:
            assert out is None
        elif out is not None:
            changed += 1
            assert len(out) == len(pkt) and tcp_sum_ok(out)
    # 10000 payload segments at 10%: mean 1000, sd 30
    assert 850 <= changed <= 1150 and q.corrupted == changed
    q.configure(corrupt_pct=0)
    assert all(q.corrupted_copy(tcp_probe(*V4, i, 60)) is None for i in range(1000))
