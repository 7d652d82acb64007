"""The state machine at its edges: simultaneous open and close, TIME-WAIT, RFC 5961 resets and
challenge ACKs, PAWS, RTO timing and backoff, and the MPTCP hooks."""

import os

import pytest
from tcp_wire import A_ADDR, B_ADDR, Wire

from mptcp_impl.tcp import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    Closed,
    Connected,
    Reset,
    TcpConfig,
    TcpConnection,
    TcpSegment,
    TcpState,
    Timestamps,
    UnknownOption,
    encode_segment,
)
from mptcp_impl.tcp.options import encoded_length

S = TcpState
M = 0xFFFFFFFF


def established() -> Wire:
    w = Wire()
    w.connect()
    w.run(until=w.now + 0.1)
    return w


def from_b(
    w: Wire, seq: int, flags: int, ack: int | None = None, payload: bytes = b"", opts=None
) -> TcpSegment:
    """A segment as B would send it to A (sequence numbers given unwrapped)."""
    a = w.a
    return TcpSegment(
        B_ADDR[1],
        A_ADDR[1],
        seq & M,
        (a.snd_nxt if ack is None else ack) & M,
        flags,
        1000,
        opts or [],
        payload,
    )


def inject(w: Wire, seg: TcpSegment) -> list[TcpSegment]:
    w.a.receive_segment(seg, w.now)
    return w.a.segments_to_send(w.now)


def events(c: TcpConnection) -> list:
    out = []
    while (e := c.next_event()) is not None:
        out.append(e)
    return out


# ---------------------------------------------------------------- opening and closing


def test_simultaneous_open():
    w = Wire()
    w.b = TcpConnection(w.cfg_b, B_ADDR, A_ADDR)
    w.a.connect(0.0)
    w.b.connect(0.0)
    seen = {"a": [w.a.state], "b": [w.b.state]}
    while w.step():
        for side in "ab":
            st = w.conn(side).state
            if not seen[side] or seen[side][-1] is not st:
                seen[side].append(st)
        if w.a.state is S.ESTABLISHED and w.b.state is S.ESTABLISHED:
            break
    for side in "ab":
        assert seen[side][:3] == [S.SYN_SENT, S.SYN_RECEIVED, S.ESTABLISHED]
        w._app(side)  # collect pending events
        assert w.events[side] == [Connected()]
    data = os.urandom(100_000)
    w.write("a", data)
    w.write("b", data[::-1])
    w.run(cond=lambda: len(w.received["b"]) == len(data) and len(w.received["a"]) == len(data))
    assert bytes(w.received["b"]) == data and bytes(w.received["a"]) == data[::-1]


def test_simultaneous_close_goes_through_closing():
    w = established()
    w.a.close(w.now)
    w.b.close(w.now)
    seen = {"a": [w.a.state], "b": [w.b.state]}
    while w.step():
        for side in "ab":
            st = w.conn(side).state
            if not seen[side] or seen[side][-1] is not st:
                seen[side].append(st)
    for side in "ab":
        assert seen[side] == [S.FIN_WAIT_1, S.CLOSING, S.TIME_WAIT, S.CLOSED]
        assert w.events[side][-1] == Closed()


def test_time_wait_reacks_a_retransmitted_fin_and_restarts():
    w = established()
    w.a.close(w.now)
    w.run(cond=lambda: w.a.state is S.FIN_WAIT_2)
    w.b.close(w.now)
    w.run(cond=lambda: w.a.state is S.TIME_WAIT)
    fin = [s for _, d, s in w.log if d == "ba" and s.flags & FIN][-1]
    assert w.a.get_timer() == pytest.approx(w.now + w.cfg_a.time_wait)
    w.run(until=w.now + 0.5)
    out = inject(w, fin)
    assert len(out) == 1 and out[0].flags == ACK and out[0].ack == (fin.seq + 1) & M
    assert w.a.get_timer() == pytest.approx(w.now + w.cfg_a.time_wait)
    assert w.a.state is S.TIME_WAIT
    w.a.handle_timer(w.now + w.cfg_a.time_wait)
    assert w.a.state is S.CLOSED


def test_time_wait_length_is_configurable():
    w = Wire(TcpConfig(time_wait=0.25))
    w.connect()
    w.a.close(w.now)
    w.b.close(w.now)
    w.run(cond=lambda: w.a.state is S.TIME_WAIT)
    t = w.now
    w.run(cond=lambda: w.a.state is S.CLOSED)
    assert w.now - t == pytest.approx(0.25)


def test_connection_refused_and_bad_rst_in_syn_sent():
    a = TcpConnection(TcpConfig(), A_ADDR, B_ADDR)
    a.connect(0.0)
    syn = a.segments_to_send(0.0)[0]
    assert syn.flags == SYN
    a.receive_segment(TcpSegment(5001, 40000, 0, (syn.seq + 7) & M, RST | ACK, 0), 0.01)
    assert a.state is S.SYN_SENT  # unacceptable ACK: ignored
    a.receive_segment(TcpSegment(5001, 40000, 0, (syn.seq + 1) & M, RST | ACK, 0), 0.01)
    assert a.state is S.CLOSED
    assert events(a) == [Reset("connection refused"), Closed()]


def test_abort_resets_the_peer():
    w = established()
    w.a.abort(w.now)
    assert w.a.state is S.CLOSED
    w.run()
    assert w.b.state is S.CLOSED
    assert Reset("connection reset by peer") in w.events["b"]
    assert w.events["a"][-1] == Closed()


def test_send_after_close_is_refused():
    w = established()
    w.a.close(w.now)
    with pytest.raises(ConnectionError):
        w.a.send(b"late")


# ---------------------------------------------------------------- RFC 5961 and PAWS


def test_rst_exact_sequence_resets():
    w = established()
    out = inject(w, from_b(w, w.a.rcv_nxt, RST))
    assert out == [] and w.a.state is S.CLOSED
    assert events(w.a)[-2:] == [Reset("connection reset by peer"), Closed()]


def test_rst_in_window_gets_a_challenge_ack():
    w = established()
    out = inject(w, from_b(w, w.a.rcv_nxt + 1000, RST))
    assert w.a.state is S.ESTABLISHED
    assert len(out) == 1 and out[0].flags == ACK and out[0].ack == w.a.rcv_nxt & M
    assert w.a.stats.challenge_acks == 1


def test_rst_outside_window_is_ignored():
    w = established()
    for off in (-1, -70_000, 2**30):
        assert inject(w, from_b(w, w.a.rcv_nxt + off, RST)) == []
    assert w.a.state is S.ESTABLISHED and w.a.stats.challenge_acks == 0


def test_syn_in_window_gets_a_challenge_ack():
    w = established()
    out = inject(w, from_b(w, w.a.rcv_nxt + 10, SYN))
    assert w.a.state is S.ESTABLISHED
    assert len(out) == 1 and out[0].flags == ACK and w.a.stats.challenge_acks == 1
    out = inject(w, from_b(w, w.a.rcv_nxt, SYN | ACK))
    assert w.a.state is S.ESTABLISHED and w.a.stats.challenge_acks == 2


def test_challenge_acks_are_rate_limited():
    w = Wire(TcpConfig(challenge_ack_limit=2))
    w.connect()
    n = sum(len(inject(w, from_b(w, w.a.rcv_nxt + 5 + i, RST))) for i in range(5))
    assert n == 2 and w.a.stats.challenge_acks == 2


def test_too_old_ack_gets_a_challenge_ack_and_future_ack_an_ack():
    w = established()
    a = w.a
    out = inject(w, from_b(w, a.rcv_nxt, ACK, ack=a.snd_una - 10_000_000, payload=b"data"))
    assert len(out) == 1 and a.stats.challenge_acks == 1 and a.readable == 0
    out = inject(w, from_b(w, a.rcv_nxt, ACK, ack=a.snd_max + 5000, payload=b"data"))
    assert len(out) == 1 and out[0].flags == ACK and a.readable == 0
    out = inject(w, from_b(w, a.rcv_nxt, ACK | PSH, payload=b"data"))
    assert a.read() == b"data"


def test_paws_drops_old_timestamps():
    w = established()
    a = w.a
    old = Timestamps((a.ts_recent - 1000) & M, 0)
    out = inject(w, from_b(w, a.rcv_nxt, ACK, payload=b"stale", opts=[old]))
    assert a.stats.paws_dropped == 1 and a.readable == 0 and len(out) == 1
    fresh = Timestamps((a.ts_recent + 5) & M, 0)
    inject(w, from_b(w, a.rcv_nxt, ACK, payload=b"fresh", opts=[fresh]))
    assert a.read() == b"fresh" and a.ts_recent == fresh.tsval


def test_malformed_segments_are_counted_and_dropped():
    w = established()
    a = w.a
    good = from_b(w, a.rcv_nxt, ACK, payload=b"hello")
    raw = bytearray(encode_segment(good, B_ADDR[0], A_ADDR[0]))
    raw[-1] ^= 1
    a.receive_bytes(bytes(raw), B_ADDR[0], A_ADDR[0], w.now)
    a.receive_bytes(bytes(raw[:19]), B_ADDR[0], A_ADDR[0], w.now)
    a.receive_segment(from_b(w, a.rcv_nxt, SYN | FIN), w.now)
    a.note_malformed()
    assert a.stats.malformed_dropped == 4 and a.readable == 0
    a.receive_bytes(encode_segment(good, B_ADDR[0], A_ADDR[0]), B_ADDR[0], A_ADDR[0], w.now)
    assert a.read() == b"hello"


# ---------------------------------------------------------------- timers


def test_rto_timing_exponential_backoff_and_give_up():
    w = Wire(TcpConfig(max_retries=4, tlp=False))
    w.connect()
    w.run(until=w.now + 0.1)
    assert w.a.rto == pytest.approx(0.2)  # srtt 20 ms + 4 * rttvar < min_rto
    w.filters["ab"] = lambda *_: []  # black hole
    t0 = w.now
    w.a.send(b"z" * 1000)
    w.run()
    times = [t - t0 for t, d, s in w.log if d == "ab" and s.payload]
    assert times == pytest.approx([0.0, 0.2, 0.6, 1.4, 3.0])
    assert w.a.state is S.CLOSED and Reset("timeout") in w.events["a"]
    assert w.now - t0 == pytest.approx(6.2)
    assert w.a.stats.rto_count == 5 and w.a.stats.retransmits == 4


def test_rto_backoff_is_capped_and_collapses_cwnd():
    w = Wire(TcpConfig(max_rto=0.5, max_retries=6, cc="reno", tlp=False))
    w.connect()
    w.run(until=w.now + 0.1)
    w.filters["ab"] = lambda *_: []
    t0 = w.now
    w.a.send(os.urandom(30_000))
    flight = None
    while w.step():
        if w.a.stats.rto_count == 1 and flight is None:
            flight = True
            assert w.a.cwnd == w.a.mss
            assert w.a.stats.ssthresh == 10 * w.a.mss // 2  # half the IW10 flight
    firsts = sorted({t - t0 for t, d, s in w.log if d == "ab" and s.payload})
    gaps = [round(b - a, 6) for a, b in zip(firsts, firsts[1:], strict=False)]
    assert gaps == [0.2, 0.4, 0.5, 0.5, 0.5, 0.5]


def test_rto_recovers_after_an_outage():
    w = established()
    t_end = w.now + 1.0
    w.filters["ab"] = lambda _w, _d, s, _i: [] if _w.now < t_end else [0.0]
    data = os.urandom(200_000)
    w.write("a", data)
    w.run(cond=lambda: len(w.received["b"]) == len(data))
    assert bytes(w.received["b"]) == data
    assert w.a.stats.rto_count >= 3


def test_syn_retransmission_backoff_and_timeout():
    w = Wire(TcpConfig(max_syn_retries=3))
    w.filters["ab"] = lambda *_: []
    w.a.connect(0.0)
    w.run()
    times = [t for t, d, s in w.log if d == "ab" and s.flags & SYN]
    assert times == pytest.approx([0.0, 1.0, 3.0, 7.0])
    assert w.now == pytest.approx(15.0)
    assert w.a.state is S.CLOSED and Reset("timeout") in w.events["a"]


def test_lost_syn_ack_and_final_ack():
    w = Wire()
    dropped = []

    def f(_w, _d, seg, i):
        if i == 0:
            dropped.append(seg)
            return []
        return [0.0]

    w.filters["ba"] = f  # the first SYN-ACK is lost
    w.connect()
    assert dropped and dropped[0].flags == SYN | ACK
    assert w.now == pytest.approx(1.0 + 0.03, abs=0.001)  # client SYN RTO, then handshake
    w2 = Wire()
    w2.filters["ab"] = lambda _w, _d, s, i: [] if i == 1 else [0.0]  # the final ACK is lost
    w2.a.connect(0.0)
    w2.write("a", b"first bytes")
    w2.run(cond=lambda: bytes(w2.received["b"]) == b"first bytes")
    assert w2.b.state is S.ESTABLISHED


# ---------------------------------------------------------------- hooks


class FakeMptcp:
    """Adds a kind-30 option to every segment, like MP_CAPABLE on SYNs and DSS on the rest."""

    def __init__(self):
        self.sent = []
        self.received = []
        self.incoming = 0
        self.seen_kind30 = 0

    def outgoing_options(self, conn, seg, space):
        size = 12 if seg.flags & SYN else 20 if space >= 20 else 8  # DSS with/without mapping
        assert space >= size
        return [UnknownOption(30, bytes(size - 2))]

    def incoming_options(self, conn, seg):
        self.incoming += 1
        self.seen_kind30 += any(getattr(o, "kind", None) == 30 for o in seg.options)

    def sent_range(self, conn, seq_start, length, meta):
        self.sent.append(((seq_start - conn.iss - 1) & M, length, meta))

    def received_range(self, conn, seq_start, data_len, seg):
        self.received.append(((seq_start - conn.irs - 1) & M, data_len))


def test_hooks_options_shrink_the_payload_and_ranges_are_reported_once():
    ha, hb = FakeMptcp(), FakeMptcp()
    w = Wire(hooks_a=ha, hooks_b=hb)
    w.connect()
    chunks = [os.urandom(n) for n in (5000, 70_000, 1, 30_000)]
    drop = {12}
    w.filters["ab"] = lambda _w, _d, s, i: [] if i in drop and s.payload else [0.0]
    for k, c in enumerate(chunks):
        assert w.a.send(c, meta=k) == len(c)
    total = sum(map(len, chunks))
    w.run(cond=lambda: len(w.received["b"]) == total)
    assert bytes(w.received["b"]) == b"".join(chunks)
    # every byte reported exactly once, in order, with the meta of its chunk
    pos = 0
    for off, ln, meta in ha.sent:
        assert off == pos
        start = sum(map(len, chunks[:meta]))
        assert start <= off and off + ln <= start + len(chunks[meta])
        pos += ln
    assert pos == total
    # header never above 60 bytes, payload + options within the MSS
    for _, _d, s in w.log:
        olen = encoded_length(s.options)
        assert 20 + olen <= 60
        if s.payload:
            assert len(s.payload) + olen <= 1460
            assert any(getattr(o, "kind", None) == 30 for o in s.options)
    assert w.a.mss == 1460 - 12 - 20
    assert sum(n for _, n in hb.received) >= total
    assert hb.seen_kind30 == hb.incoming > 0


def test_fin_after_a_hole_waits_for_the_data():
    w = established()
    b = w.b
    a_seq = b.rcv_nxt
    mk = lambda off, payload, flags: TcpSegment(  # noqa: E731
        A_ADDR[1], B_ADDR[1], (a_seq + off) & M, b.snd_nxt & M, flags, 1000, [], payload
    )
    b.receive_segment(mk(5, b"world", ACK | FIN), w.now)
    assert b.state is S.ESTABLISHED and b.readable == 0
    b.receive_segment(mk(0, b"hello", ACK), w.now)
    assert b.state is S.CLOSE_WAIT and b.read() == b"helloworld"
    out = b.segments_to_send(w.now)
    assert out[-1].ack == (a_seq + 11) & M


@pytest.mark.parametrize("tlp", [True, False])
def test_lost_fin_is_retransmitted(tlp):
    w = Wire(TcpConfig(tlp=tlp))
    w.connect()
    w.run(until=w.now + 0.1)
    assert w.a.rto == pytest.approx(0.2) and w.a.srtt == pytest.approx(0.02)
    dropped = []

    def f(_w, _d, seg, _i):
        if seg.flags & FIN and not dropped:
            dropped.append(seg)
            return []
        return [0.0]

    w.filters["ab"] = f
    w.a.close(w.now)
    t0 = w.now
    w.run(cond=lambda: w.b.state is S.CLOSE_WAIT)
    st = w.a.stats
    if tlp:  # 2*SRTT + 200 ms allowance (a single segment is out) is past the RTO (RFC 8985
        # 7.2): the probe goes at the RTO expiration instead of the RTO
        assert w.now - t0 == pytest.approx(0.2 + 0.01)
        assert st.tlp_probes == 1 and st.rto_count == 0
    else:  # one RTO, then the one-way delay
        assert w.now - t0 == pytest.approx(0.2 + 0.01)
        assert st.rto_count == 1 and st.tlp_probes == 0
    assert dropped and len([1 for _, d, s in w.log if d == "ab" and s.flags & FIN]) == 2


def test_tail_loss_probe_then_rto_backoff_in_a_black_hole():
    w = Wire(TcpConfig(max_retries=2))
    w.connect()
    w.run(until=w.now + 0.1)
    w.filters["ab"] = lambda *_: []
    t0 = w.now
    w.a.send(b"z" * 1000)
    w.run()
    times = [t - t0 for t, d, s in w.log if d == "ab" and s.payload]
    # one probe at min(2*SRTT + 200 ms, RTO), then the RTO re-armed from the probe and
    # backed off
    assert times == pytest.approx([0.0, 0.2, 0.4, 0.8])
    assert w.now - t0 == pytest.approx(1.6)
    assert w.a.stats.tlp_probes == 1 and w.a.stats.rto_count == 3
    assert Reset("timeout") in w.events["a"]


def test_tail_loss_probe_repairs_the_last_segments_without_rto():
    w = Wire()
    w.connect()
    w.run(until=w.now + 0.1)
    n = 8 * w.a.mss
    drop_last = {(w.a.snd_nxt + 7 * w.a.mss) & M}  # the last of eight segments
    dropped = []

    def f(_w, _d, seg, _i):
        if seg.seq in drop_last and seg.payload and not dropped:
            dropped.append(seg)
            return []
        return [0.0]

    w.filters["ab"] = f
    data = os.urandom(n)
    w.write("a", data)
    t0 = w.now
    w.run(cond=lambda: len(w.received["b"]) == n)
    assert bytes(w.received["b"]) == data and dropped
    st = w.a.stats
    assert st.tlp_probes == 1 and st.rto_count == 0
    # one lone segment left: PTO = 2*SRTT + 200 ms (RFC 8985 7.2) is cut to the RTO
    # expiration, where the probe goes instead of the RTO (no cwnd collapse)
    assert w.now - t0 < 0.2 + 0.05


def test_send_ack_emits_one_pure_ack_carrying_hook_options():
    ha = FakeMptcp()
    w = Wire(hooks_a=ha)
    w.connect()
    w.run(until=w.now + 1.0)
    assert w.a.segments_to_send(w.now) == []
    w.a.send_ack()
    out = w.a.segments_to_send(w.now)
    assert len(out) == 1 and out[0].flags == ACK and not out[0].payload
    assert any(getattr(o, "kind", None) == 30 for o in out[0].options)
    assert w.a.segments_to_send(w.now) == []


def test_bare_fin_accepted_with_a_zero_window_data_is_not():
    w = Wire(TcpConfig(), TcpConfig(rcv_buf=20_000, window_scale=False))
    w.connect()
    w.auto_read["b"] = False
    w.write("a", os.urandom(50_000))
    w.run(until=w.now + 1.0)
    b = w.b
    assert b.readable == 20_000 and b._rcv_adv == b.rcv_nxt  # window closed
    mk = lambda payload, flags: TcpSegment(  # noqa: E731
        A_ADDR[1], B_ADDR[1], b.rcv_nxt & M, b.snd_nxt & M, flags, 1000, [], payload
    )
    b.receive_segment(mk(b"more", ACK), w.now)
    assert b.readable == 20_000
    b.receive_segment(mk(b"", ACK | FIN), w.now)
    assert b.state is S.CLOSE_WAIT
