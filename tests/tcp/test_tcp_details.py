"""Smaller behaviours: ISN generation, reassembly of overlapping pieces, immediate ACKs, Karn
RTT sampling, window scaling on the wire, send-buffer back-pressure."""

import os

import pytest
from tcp_wire import A_ADDR, B_ADDR, Wire

from mptcp_impl.tcp import (
    ACK,
    DataReceived,
    Sack,
    SendBufferAvailable,
    TcpConfig,
    TcpConnection,
    TcpSegment,
    UnknownOption,
)
from mptcp_impl.tcp.connection import rfc6528_isn

M = 0xFFFFFFFF


def test_isn_is_keyed_per_four_tuple_and_ticks_every_4us():
    a = rfc6528_isn(A_ADDR, B_ADDR, 100.0)
    assert rfc6528_isn(A_ADDR, B_ADDR, 100.0) == a
    assert (rfc6528_isn(A_ADDR, B_ADDR, 100.001) - a) & M == 250  # 1 ms = 250 ticks
    others = {rfc6528_isn(A_ADDR, (B_ADDR[0], p), 100.0) for p in range(6000, 6020)}
    assert len(others) == 20 and a not in others
    c = TcpConnection(TcpConfig(), A_ADDR, B_ADDR)
    c.connect(100.0)
    assert c.iss == a


def established():
    w = Wire()
    w.connect()
    w.run(until=w.now + 0.1)
    return w


def seg_to_b(w, off, payload, flags=ACK):
    b = w.b
    return TcpSegment(
        A_ADDR[1], B_ADDR[1], (b.rcv_nxt + off) & M, b.snd_nxt & M, flags, 0xFFFF, [], payload
    )


def test_out_of_order_overlapping_pieces_reassemble_and_ack_at_once():
    w = established()
    b = w.b
    data = os.urandom(10_000)
    pieces = [(6000, 8000), (1000, 3000), (2500, 6500), (9000, 10_000), (7000, 9500), (0, 1200)]
    acks = []
    for lo, hi in pieces:
        b.receive_segment(seg_to_b(w, lo, data[lo:hi]), w.now)
        out = b.segments_to_send(w.now)
        acks.append(out)
    # every out-of-order arrival is acknowledged at once, with SACK blocks
    for out in acks[:-1]:
        assert len(out) == 1 and any(isinstance(o, Sack) for o in out[0].options)
    sack = next(o for o in acks[0][0].options if isinstance(o, Sack))
    assert sack.blocks == [((b.rcv_nxt - 10_000 + 6000) & M, (b.rcv_nxt - 10_000 + 8000) & M)]
    assert b.read() == data
    assert b._ooo == []
    last = acks[-1][0]
    assert last.ack == b.rcv_nxt & M and not any(isinstance(o, Sack) for o in last.options)


def test_in_order_data_is_queued_as_it_came_and_read_without_copies():
    """The receive queue keeps each payload as it arrived (immutable bytes, or a view of them)
    and hands it over as it is; a read that cuts a piece leaves two views; a buffer that the
    sender of the segment may change is copied once."""
    w = established()
    b = w.b
    window = b._window_field()
    p1, p2 = os.urandom(3000), os.urandom(2000)
    b.receive_segment(seg_to_b(w, 0, p1), w.now)
    b.receive_segment(seg_to_b(w, 0, memoryview(p2)), w.now)  # a view of a packet's bytes
    reused = bytearray(b"x" * 500)
    b.receive_segment(seg_to_b(w, 0, reused), w.now)
    reused[:] = b"y" * 500  # the edge's buffer, reused: what was queued must not change
    assert b.readable == 5500
    pieces = b.read_chunks(4000)  # all of p1, a view of half of p2
    assert pieces[0] is p1 and type(pieces[1]) is memoryview and bytes(pieces[1]) == p2[:1000]
    assert b.readable == 1500
    rest = b.read_chunks()
    assert b"".join(rest) == p2[1000:] + b"x" * 500 and b.readable == 0
    assert b.read_chunks() == [] and b.read() == b""
    assert b._window_field() >= window  # what was read is room again


def test_duplicate_and_old_data_is_not_delivered_twice():
    w = established()
    b = w.b
    b.receive_segment(seg_to_b(w, 0, b"hello"), w.now)
    b.receive_segment(seg_to_b(w, -5, b"hello world"), w.now)  # overlaps the old bytes
    b.receive_segment(seg_to_b(w, -11, b"hello world"), w.now)  # entirely old
    assert b.read() == b"hello world"
    events = []
    while (e := b.next_event()) is not None:
        events.append(e)
    assert sum(e.nbytes for e in events if isinstance(e, DataReceived)) == 11


def test_data_beyond_the_window_is_trimmed():
    w = Wire(TcpConfig(), TcpConfig(rcv_buf=4000, window_scale=False))
    w.connect()
    b = w.b
    b.receive_segment(seg_to_b(w, 0, os.urandom(6000)), w.now)
    assert b.readable == 4000


def test_rtt_without_timestamps_uses_karn_timing():
    w = Wire(TcpConfig(timestamps=False), TcpConfig(timestamps=False), delay=0.05)
    w.connect()
    assert w.a.stats.srtt == pytest.approx(0.1)  # the SYN was timed
    data = os.urandom(300_000)
    w.write("a", data)
    w.run(cond=lambda: len(w.received["b"]) == len(data))
    assert w.a.srtt == pytest.approx(0.1, abs=0.045)  # delayed ACKs add up to 40 ms
    assert w.a.rto >= 0.2


def test_window_scale_applied_on_the_wire():
    w = Wire(TcpConfig(rcv_buf=3 << 20), TcpConfig(rcv_buf=3 << 20))
    w.connect()
    w.run(until=w.now + 0.1)
    assert w.a.rcv_wscale == 6
    acks = [s for _, d, s in w.log if d == "ab" and not s.flags & 0x02]
    assert acks[-1].window == (3 << 20) >> 6
    assert w.b.snd_wnd == 3 << 20


def test_send_buffer_back_pressure_and_available_event():
    w = Wire(TcpConfig(snd_buf=50_000))
    w.connect()
    assert w.a.send(os.urandom(80_000)) == 50_000
    assert w.a.send_buffer_free == 0
    assert w.a.send(b"more") == 0
    w.run(cond=lambda: any(isinstance(e, SendBufferAvailable) for e in w.events["a"]))
    assert w.a.send_buffer_free > 0
    assert w.a.bytes_in_flight <= 50_000


def test_gso_with_hook_options_never_exceeds_the_limit():
    class Hook:
        def outgoing_options(self, conn, seg, space):
            return [UnknownOption(30, bytes(18))] if space >= 20 else []

        def incoming_options(self, conn, seg):
            pass

        def sent_range(self, conn, seq_start, length, meta):
            pass

        def received_range(self, conn, seq_start, data_len, seg):
            pass

    w = Wire(TcpConfig(max_segment_payload=30_000), hooks_a=Hook())
    w.connect()
    data = os.urandom(1_000_000)
    w.write("a", data)
    w.run(cond=lambda: len(w.received["b"]) == len(data))
    assert bytes(w.received["b"]) == data
    for _, d, s in w.log:
        if d == "ab" and s.payload:
            assert len(s.payload) <= 30_000
            if len(s.payload) > s.gso_size > 0:
                assert s.gso_size == 1460 - 12 - 20


def test_segments_without_timestamps_on_a_timestamp_connection_are_accepted():
    """RFC 7323 3.2 lets a receiver drop a non-RST segment without TSopt once timestamps are
    on; Linux accepts it (PAWS needs a timestamp to reject anything), and MPTCP relies on that:
    an ADD_ADDR of an IPv6 address with port and HMAC (30 bytes) fits only without them."""
    import dataclasses

    from mptcp_impl.tcp import Timestamps

    w = established()
    assert w.a.ts_ok and w.b.ts_ok

    def strip(_w, _d, seg, i):
        if i % 2:
            seg.options = [o for o in seg.options if not isinstance(o, Timestamps)]
        return [0.0]

    w.filters["ab"] = strip
    w.filters["ba"] = strip
    data = os.urandom(40 * w.a.mss)
    w.write("a", data)
    w.run(cond=lambda: len(w.received["b"]) >= len(data))
    assert bytes(w.received["b"]) == data
    w.run(until=w.now + 1.0)
    assert w.a.stats.paws_dropped == w.b.stats.paws_dropped == 0
    assert w.a.snd_una == w.a.snd_nxt  # the ACKs without timestamps counted too
    assert dataclasses.asdict(w.b.stats)["malformed_dropped"] == 0


def test_mss_over_ipv6_is_20_bytes_less():
    from mptcp_impl.tcp import MSS

    c = TcpConnection(TcpConfig(mss=1460), ("fd00::1", 40000), ("fd00::2", 5001))
    c.connect(1.0)
    (syn,) = c.segments_to_send(1.0)
    assert [o.value for o in syn.options if isinstance(o, MSS)] == [1440]
    c4 = TcpConnection(TcpConfig(mss=1460), A_ADDR, B_ADDR)
    assert c4.config.mss == 1460 and c.config.mss == 1440
