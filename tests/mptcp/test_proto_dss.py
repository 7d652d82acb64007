"""DSS against a scripted peer (packetdrill dss/): 64-bit DSNs out, 32- and 64-bit DSNs and
DATA_ACKs in, where mappings go, identical mappings on retransmission, one mapping per segment
(GSO too), contradicting mappings counted (and a protocol error)."""

from __future__ import annotations

from mptcp_impl.mptcp import crypto
from mptcp_impl.mptcp.ctrl import MptcpConfig
from mptcp_impl.mptcp.options import Dss
from mptcp_impl.tcp.connection import TcpConfig

from .peer import (
    ACK,
    MASK64,
    PSH,
    Flow,
    data_ack,
    dss_of,
    established_server,
    mapping,
    wire,
)


def payload_segments(out):
    return [s for s in out if s.payload]


def check_one_mapping_per_segment(f: Flow, segs) -> dict[int, tuple[int, int]]:
    """Every payload segment lies inside the mapping it carries; mappings never contradict.
    Returns {subflow seq: (dsn, length)} of the mappings seen."""
    maps: dict[int, tuple[int, int]] = {}
    for s in segs:
        d = dss_of(s)
        assert d is not None and d.dsn is not None, f"data without a mapping: {s}"
        assert d.dsn64 and d.data_ack is not None
        start = f.rel_seq(s)
        assert d.subflow_seq <= start
        assert start + len(s.payload) <= d.subflow_seq + d.data_len, (
            f"segment [{start}, {start + len(s.payload)}) spans beyond its mapping "
            f"[{d.subflow_seq}, {d.subflow_seq + d.data_len})"
        )
        old = maps.setdefault(d.subflow_seq, (d.dsn, d.data_len))
        assert old == (d.dsn, d.data_len), "two different mappings for one subflow range"
    return maps


def test_we_send_64bit_dsns_mapping_on_first_byte_segment():
    box, f = established_server(config=MptcpConfig(max_mapping=5000))
    conn = box.conn
    data = bytes(i % 251 for i in range(40_000))
    conn.send(data)
    segs = []
    acked = 1
    out = payload_segments(box.out())
    while out:
        segs += out
        acked = max(f.rel_seq(s) + len(s.payload) for s in out)
        out = payload_segments(box.feed(f, f.seg(ACK, data_ack(conn, acked), ack=acked)))
    maps = check_one_mapping_per_segment(f, segs)
    starts = {f.rel_seq(s) for s in segs}
    for ssn in maps:
        assert ssn in starts, f"mapping at {ssn} not on the segment carrying its first byte"
    # reassemble by DSN from the mappings: the bytes are ours, in order
    got = bytearray(len(data))
    for s in segs:
        d = dss_of(s)
        off = d.dsn - (conn.local_idsn + 1) + f.rel_seq(s) - d.subflow_seq
        got[off : off + len(s.payload)] = s.payload
    assert bytes(got) == data
    assert max(ln for _, ln in maps.values()) <= 5000
    assert acked == 40_001


def test_gso_super_packets_never_mix_mappings():
    box, f = established_server(
        config=MptcpConfig(max_mapping=3000),
        tcp_config=TcpConfig(isn=0x20000000, max_segment_payload=60_000),
    )
    conn = box.conn
    conn.send(b"g" * 30_000)
    out = payload_segments(box.out())
    assert any(s.gso_size for s in out) or any(len(s.payload) > 1460 for s in out)
    # the edge cuts a super-packet into gso_size pieces, each with the same options
    pieces = []
    for s in out:
        step = s.gso_size or len(s.payload)
        for i in range(0, len(s.payload), step):
            p = wire(s, f.remote[0], f.local[0])
            p.seq = (s.seq + i) & 0xFFFFFFFF
            p.payload = s.payload[i : i + step]
            pieces.append(p)
    check_one_mapping_per_segment(f, out)
    check_one_mapping_per_segment(f, pieces)


def test_retransmission_reuses_identical_mapping():
    box, f = established_server(config=MptcpConfig(max_mapping=2000))
    conn = box.conn
    conn.send(bytes(range(256)) * 20)
    first = {f.rel_seq(s): dss_of(s) for s in payload_segments(box.out())}
    assert first
    again = payload_segments(box.advance(1.5))  # RTO: go back N
    assert again, "nothing retransmitted"
    matched = 0
    for s in again:
        d = dss_of(s)
        orig = first.get(f.rel_seq(s))
        if orig is not None:
            matched += 1
            assert (d.dsn, d.subflow_seq, d.data_len) == (
                orig.dsn,
                orig.subflow_seq,
                orig.data_len,
            )
    assert matched, "no retransmission of a segment sent before"
    check_one_mapping_per_segment(f, payload_segments([s for _, s in box.sent]))


def _find_wrapping_key() -> int:
    """A key whose IDSN+1 lies within 64 KiB below a multiple of 2**32."""
    k = 1
    while True:
        lo = (crypto.idsn(k) + 1) & 0xFFFFFFFF
        if lo > 0xFFFFFFFF - 60_000:
            return k
        k += 1


def test_we_accept_32bit_dsns_across_a_32bit_wrap():
    key = _find_wrapping_key()
    box, f = established_server(key=key)
    conn = box.conn
    data = bytes(i % 253 for i in range(100_000))
    ssn = 1
    seq = 1
    while seq <= len(data):
        n = min(1400, len(data) - seq + 1)
        d = mapping(f, seq, ssn, n, dsn64=False, data_ack=(conn.local_idsn + 1) & 0xFFFFFFFF)
        box.feed(f, f.seg(ACK | PSH, d, seq=seq, payload=data[seq - 1 : seq - 1 + n]))
        seq += n
        ssn += n
        if seq % 20 == 0:
            box.advance(0.05)
    box.advance(0.1)
    assert conn.read() == data
    assert conn.rcv_nxt == f.idsn + 1 + len(data)
    assert (f.idsn + 1) >> 32 != (f.idsn + 1 + len(data)) >> 32  # it did wrap
    assert conn.mib["DSSNotMatching"] == 0


def test_we_accept_32bit_and_64bit_data_acks():
    box, f = established_server()
    conn = box.conn
    conn.send(b"k" * 3000)
    box.out()
    box.feed(f, f.seg(ACK, Dss(data_ack=(conn.local_idsn + 1001) & 0xFFFFFFFF), ack=1001))
    assert conn.snd_una == conn.local_idsn + 1001
    box.feed(f, f.seg(ACK, data_ack(conn, 3001), ack=3001))
    assert conn.snd_una == conn.local_idsn + 3001


def test_mapping_contradicting_an_earlier_one_is_counted_and_ends_mptcp_on_the_only_subflow():
    """Linux's get_mapping_status: a mapping may be replaced only by an identical one
    (DSSNotMatching); on the only subflow ever that is a fallback to plain TCP (DssFallback),
    the byte stream intact (with two subflows the subflow is reset: test_proto_mapping.py)."""
    box, f = established_server()
    conn = box.conn
    a, b = b"A" * 1000, b"B" * 1000
    # bytes 1001..2000 of the subflow arrive first (out of order), mapped to DSN +1001
    box.feed(f, f.seg(ACK, mapping(f, 1001, 1001, 1000), seq=1001, payload=b))
    # a retransmission of the same bytes claims another DSN
    box.feed(f, f.seg(ACK, mapping(f, 5001, 1001, 1000), seq=1001, payload=b))
    assert conn.mib["DSSNotMatching"] == 1
    assert conn.mib["DssFallback"] == 1 and conn.fallback
    box.feed(f, f.seg(ACK, seq=1, payload=a))
    box.advance(0.1)
    assert conn.read() == a + b
    assert "Reset" not in box.kinds()


def test_mapping_on_empty_segment_maps_nothing():
    """Linux ignores a mapping on a segment without data (except a lone DATA_FIN)."""
    box, f = established_server()
    conn = box.conn
    box.feed(f, f.seg(ACK, mapping(f, 777, 1, 100)))
    box.feed(f, f.seg(ACK, mapping(f, 1, 1, 100), seq=1, payload=b"p" * 100))
    box.advance(0.1)
    assert conn.read() == b"p" * 100
    assert conn.rcv_nxt == f.idsn + 101


def test_data_before_its_mapping_waits_for_it():
    """A mapping may come on a later segment (it covers bytes that arrived without one)."""
    box, f = established_server()
    conn = box.conn
    box.feed(f, f.seg(ACK, data_ack(conn, 1), seq=1, payload=b"1" * 500))
    assert conn.readable == 0
    box.feed(f, f.seg(ACK, mapping(f, 1, 1, 1000), seq=501, payload=b"2" * 500))
    box.advance(0.1)
    assert conn.read() == b"1" * 500 + b"2" * 500


def test_duplicate_data_on_two_subflows_delivered_once():
    box, f = established_server()
    conn = box.conn
    seg = f.seg(ACK, mapping(f, 1, 1, 300), seq=1, payload=b"d" * 300)
    box.feed(f, seg)
    box.feed(f, seg)
    box.advance(0.1)
    assert conn.read() == b"d" * 300
    assert conn.readable == 0 and conn.rcv_nxt == f.idsn + 301
    assert (conn.rcv_nxt & MASK64) == (f.idsn + 301) & MASK64
