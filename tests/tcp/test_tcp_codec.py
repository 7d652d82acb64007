"""Option and segment codecs: round trips, checksums against a word-by-word reference, and the
malformed inputs a hostile or broken peer can send."""

import ipaddress
import os
import struct

import pytest

from mptcp_impl.tcp import (
    ACK,
    FIN,
    MSS,
    PSH,
    SYN,
    MalformedSegment,
    Sack,
    SackPermitted,
    TcpSegment,
    Timestamps,
    UnknownOption,
    WindowScale,
    decode_options,
    decode_segment,
    encode_options,
    encode_segment,
)
from mptcp_impl.tcp.segment import tcp_checksum


def ref_checksum(src, dst, tcp_bytes):
    """RFC 1071 the slow way, over the pseudo-header and the segment (checksum field zeroed)."""
    s = ipaddress.ip_address(src).packed
    d = ipaddress.ip_address(dst).packed
    if len(s) == 4:
        pseudo = s + d + struct.pack("!BBH", 0, 6, len(tcp_bytes))
    else:
        pseudo = s + d + struct.pack("!I3xB", len(tcp_bytes), 6)
    data = pseudo + tcp_bytes[:16] + b"\0\0" + tcp_bytes[18:]
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


ALL_OPTS = [
    MSS(1460),
    SackPermitted(),
    Timestamps(0xDEADBEEF, 7),
    WindowScale(7),
    UnknownOption(30, b"\x00\x81\x01\x02\x03\x04\x05\x06\x07\x08"),
]


def test_options_round_trip_and_padding():
    for opts in (
        [],
        [Timestamps(1, 2)],
        ALL_OPTS[:4],
        [Sack([(1, 2), (2**32 - 5, 10)])],
        [Timestamps(3, 4), Sack([(100, 200), (300, 400), (500, 600)])],
        ALL_OPTS[3:],
    ):
        raw = encode_options(opts)
        assert len(raw) % 4 == 0 and len(raw) <= 40
        assert decode_options(raw) == opts


def test_unknown_option_passes_through_verbatim():
    mp = UnknownOption(30, bytes(range(18)))
    assert decode_options(encode_options([mp])) == [mp]


def test_options_too_long_refused():
    with pytest.raises(ValueError):
        encode_options([Timestamps(1, 2), Sack([(1, 2)] * 4)])


@pytest.mark.parametrize(
    "raw,why",
    [
        (b"\x02\x00\x00\x00", "length 0"),
        (b"\x1e\x01\x00\x00", "length 1"),
        (b"\x01\x01\x08\x0a\x00\x00\x00\x01\x00\x00\x00", "past"),  # TS needs 10, 9 left
        (b"\x01\x01\x01\x1e", "truncated"),  # kind with no length byte
        (b"\x02\x03\x05\x00", "MSS option length"),
        (b"\x05\x06\x00\x00\x00\x01", "SACK option length"),
        (b"\x08\x06\x00\x00\x00\x01", "timestamps option length"),
        (b"\x03\x04\x07\x00", "window scale option length"),
    ],
)
def test_malformed_options(raw, why):
    with pytest.raises(MalformedSegment) as e:
        decode_options(raw)
    assert why in e.value.reason


def test_eol_stops_parsing():
    assert decode_options(b"\x01\x00\x02\x00") == []  # garbage after EOL is ignored


@pytest.mark.parametrize("src,dst", [("10.0.0.1", "10.0.0.2"), ("2001:db8::1", "fe80::2")])
@pytest.mark.parametrize("plen", [0, 1, 7, 1448])
def test_segment_round_trip_and_checksum(src, dst, plen):
    payload = os.urandom(plen)
    seg = TcpSegment(40000, 5001, 2**32 - 3, 12345, ACK | PSH, 65535, [Timestamps(1, 2)], payload)
    raw = encode_segment(seg, src, dst)
    assert int.from_bytes(raw[16:18], "big") == ref_checksum(src, dst, raw)
    back = decode_segment(raw, src, dst)
    assert back.payload == payload
    assert (back.src_port, back.dst_port, back.seq, back.ack, back.flags, back.window) == (
        40000,
        5001,
        2**32 - 3,
        12345,
        ACK | PSH,
        65535,
    )
    assert back.options == [Timestamps(1, 2)]


def test_checksum_accepts_bytes_addresses_and_matches_reference_for_random_data():
    for _ in range(50):
        hdr = bytearray(os.urandom(20))
        hdr[16:18] = b"\0\0"
        pl = os.urandom(int.from_bytes(os.urandom(1), "big"))
        c = tcp_checksum(b"\x0a\0\0\x01", b"\x0a\0\0\x02", bytes(hdr), pl)
        assert c == ref_checksum("10.0.0.1", "10.0.0.2", bytes(hdr) + pl) or (
            c == 0xFFFF and ref_checksum("10.0.0.1", "10.0.0.2", bytes(hdr) + pl) == 0
        )


def test_bad_checksum_and_wrong_addresses_rejected():
    raw = bytearray(
        encode_segment(TcpSegment(1, 2, 3, 4, SYN, 100, [MSS(1460)]), "10.0.0.1", "10.0.0.2")
    )
    with pytest.raises(MalformedSegment, match="checksum"):
        decode_segment(bytes(raw), "10.0.0.1", "10.0.0.3")
    raw[-1] ^= 0x40
    with pytest.raises(MalformedSegment, match="checksum"):
        decode_segment(bytes(raw), "10.0.0.1", "10.0.0.2")
    seg = decode_segment(bytes(raw), "10.0.0.1", "10.0.0.2", verify_checksum=False)
    assert seg.flags == SYN


def _raw(doff, opts=b"", payload=b""):
    return (
        struct.pack("!HHIIHHHH", 1, 2, 3, 4, (doff << 12) | ACK | FIN, 100, 0, 0) + opts + payload
    )


@pytest.mark.parametrize(
    "data,why",
    [
        (_raw(4), "below 5"),
        (_raw(0), "below 5"),
        (_raw(8, b"\x01" * 8), "past the segment"),
        (_raw(5)[:19], "shorter"),
        (_raw(6, b"\x02\x04\x05"), "past the segment"),  # header claims 24 bytes, 23 present
        (_raw(6, b"\x01\x01\x02\x00"), "length 0"),
        (_raw(6, b"\x01\x01\x01\x08"), "truncated"),
        (_raw(6, b"\x08\x0a\x00\x00"), "past the header"),
    ],
)
def test_malformed_segments(data, why):
    with pytest.raises(MalformedSegment) as e:
        decode_segment(data, "10.0.0.1", "10.0.0.2", verify_checksum=False)
    assert why in e.value.reason


def test_header_over_60_bytes_refused():
    seg = TcpSegment(1, 2, 3, 4, ACK, 0, [UnknownOption(30, b"x" * 38), Timestamps(1, 2)])
    with pytest.raises(ValueError):
        encode_segment(seg, "10.0.0.1", "10.0.0.2")
