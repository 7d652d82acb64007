"""The parser's two paths: numpy reads of the common segment layouts for all records at once, and
the per-segment path for everything else. On real captures they must give the same table, and a
broken record must still be reported with its file and frame whichever path would have read it."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from analysis.pcap import CaptureError, _fast_segments, parse_buffer, records

pytestmark = pytest.mark.net

CATEGORICAL = ("src", "dst", "mp_subtypes")


def _pcap(link: int, recs: list[tuple[bytes, bytes, int]]) -> bytes:
    """A little-endian microsecond pcap of (8-byte timestamp, captured bytes, original length)."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, link)]
    out += [ts + struct.pack("<II", len(d), orig) + d for ts, d, orig in recs]
    return b"".join(out)


def _ethernet_records(buf: bytes) -> list[tuple[bytes, bytes, int]]:
    off, out = 24, []
    while off < len(buf):
        incl, orig = struct.unpack_from("<II", buf, off + 8)
        out.append((buf[off : off + 8], buf[off + 16 : off + 16 + incl], orig))
        off += 16 + incl
    return out


def _to_ipv6(frame: bytes, orig: int) -> tuple[bytes, int]:
    """An Ethernet/IPv4 frame (no IP options) as the same segment over IPv6."""
    if frame[12:14] != b"\x08\x00" or frame[14] != 0x45:
        return frame, orig
    total = struct.unpack_from("!H", frame, 16)[0]
    prefix = b"\x20\x01\x0d\xb8" + bytes(8)
    ip6 = struct.pack("!IHBB", 0x6 << 28, total - 20, frame[23], 64)
    ip6 += prefix + frame[26:30] + prefix + frame[30:34]
    return frame[:12] + b"\x86\xdd" + ip6 + frame[34:], orig + 20


def variants(pcap: Path) -> dict[str, bytes]:
    """A real Ethernet capture and the same segments framed as the other layouts the fast path
    reads: raw IP, Linux cooked v1 and v2, IPv6; and behind a VLAN tag (per-segment path only)."""
    buf = pcap.read_bytes()
    recs = _ethernet_records(buf)
    return {
        "ethernet": buf,
        "raw": _pcap(101, [(t, d[14:], o - 14) for t, d, o in recs]),
        "sll": _pcap(113, [(t, bytes(14) + d[12:], o + 2) for t, d, o in recs]),
        "sll2": _pcap(276, [(t, d[12:14] + bytes(18) + d[14:], o + 6) for t, d, o in recs]),
        "ipv6": _pcap(1, [(t, *_to_ipv6(d, o)) for t, d, o in recs]),
        "vlan": _pcap(1, [(t, d[:12] + b"\x81\x00\x00\x05" + d[12:], o + 4) for t, d, o in recs]),
    }


def assert_same_table(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    for c in CATEGORICAL:  # the order of categories too (order of first appearance)
        assert list(a[c].cat.categories) == list(b[c].cat.categories), c


def test_fast_and_per_segment_paths_agree_on_real_captures(all_pcaps, tmp_path):
    taken_total = slow_total = 0
    for pcap in all_pcaps:
        for name, buf in variants(pcap).items():
            where = f"{pcap} as {name}"
            taken, _ = _fast_segments(buf, records(buf, where))
            fast = parse_buffer(buf, where)
            assert_same_table(fast, parse_buffer(buf, where, fast=False))
            if name == "vlan":
                assert not taken.any()
                continue
            # mixed layouts: handshakes (MSS, MP_CAPABLE, MP_JOIN), ADD_ADDR, SACK... take the
            # per-segment path, data and ACKs (TS + DSS) the fast one
            assert 0.5 * len(taken) < taken.sum() < len(taken), where
            taken_total += int(taken.sum())
            slow_total += int((~taken).sum())
    assert taken_total > 10_000 and slow_total > 50
    # pcapng (block walk, per-interface link type and resolution) reads the same way
    ng = tmp_path / "client-eth0.pcapng"
    subprocess.run(["editcap", "-F", "pcapng", str(all_pcaps[0]), str(ng)], check=True)
    buf = ng.read_bytes()
    assert_same_table(parse_buffer(buf, str(ng)), parse_buffer(buf, str(ng), fast=False))


def _raises_in_both_paths(buf: bytes, path: str) -> CaptureError:
    with pytest.raises(CaptureError) as fast:
        parse_buffer(buf, path)
    with pytest.raises(CaptureError) as slow:
        parse_buffer(buf, path, fast=False)
    assert str(fast.value) == str(slow.value)
    return fast.value


def test_broken_records_name_file_and_frame_on_either_path(all_pcaps):
    pcap = next(p for p in all_pcaps if p.name == "client-eth0.pcap")
    buf = pcap.read_bytes()
    recs = records(buf, str(pcap))
    taken, _ = _fast_segments(buf, recs)
    k = int(taken.nonzero()[0][len(taken) // 2])  # a record the fast path reads
    frame, off = k + 1, int(recs.offset[k])
    path = str(pcap)
    # cut inside that record's data, inside its header, and a corrupt captured length
    cases = {
        "truncated or corrupt record": buf[: off + 40],
        "truncated record header": buf[: off + 10],
        "262145 captured bytes": buf[: off + 8] + struct.pack("<I", 262145) + buf[off + 12 :],
    }
    for text, broken in cases.items():
        e = _raises_in_both_paths(broken, path)
        assert text in str(e) and path in str(e) and f"frame {frame}" in str(e), str(e)
        assert e.frame == frame and e.offset == off
    # a malformed last segment the fast path refuses (a DSS whose flags announce more than the
    # option holds, at the end of the file): the per-segment path runs off the buffer
    last = int(recs.offset[-1])
    head = _ethernet_records(buf[:24] + buf[last:])[0]
    frame_ = bytearray(head[1][:66])  # Ethernet + IPv4 + TCP + NOP NOP TS
    frame_[46] = (9 << 4) | (frame_[46] & 0x0F)  # TCP header length 32 + 4
    frame_ += bytes([30, 4, 0x20, 0x0F])
    bad = buf[:last] + head[0] + struct.pack("<II", len(frame_), len(frame_)) + bytes(frame_)
    e = _raises_in_both_paths(bad, path)
    assert "malformed packet" in str(e) and e.frame == len(recs) and path in str(e)
    # pcapng: a block cut short
    ng_cases = [b"\x0a\x0d\x0d\x0a" + struct.pack("<I", 28) + b"\x4d\x3c\x2b\x1a" + bytes(16)]
    ng = ng_cases[0] + struct.pack("<II", 1, 20) + struct.pack("<HHI", 1, 0, 0) + b"\x14\0\0\0"
    ng += struct.pack("<II", 6, 200) + bytes(20)
    e = _raises_in_both_paths(ng, "x.pcapng")
    assert "truncated or corrupt pcapng block" in str(e) and e.frame == 1 and "x.pcapng" in str(e)
