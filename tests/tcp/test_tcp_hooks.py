"""The hooks the MPTCP layer uses, exercised with plain recording hooks (no MPTCP): which
segments' options reach the layer above, refusing a handshake, metadata that lives until it
is acknowledged and never shares a segment, the window from above, forced ACKs."""

from __future__ import annotations

from tcp_wire import A_ADDR, B_ADDR, Wire

from mptcp_impl.tcp import TcpConfig, TcpConnection, TcpSegment
from mptcp_impl.tcp.connection import Connected, Reset, TcpState
from mptcp_impl.tcp.options import UnknownOption
from mptcp_impl.tcp.segment import ACK, RST, SYN

M = 0xFFFFFFFF
MARK = UnknownOption(253, b"hk")  # an experimental option as our "hook option"


class Recorder:
    """Hooks that record what they see and can refuse; every segment gets MARK."""

    def __init__(self, refuse_on: int | None = None, window: int | None = None) -> None:
        self.seen: list[TcpSegment] = []
        self.refuse_on = refuse_on  # refuse the handshake on a segment with these flags
        self.window = window
        self.dropped: list = []
        self.extra: list = []

    def outgoing_options(self, conn, seg, space):
        return [MARK, *self.extra]

    def incoming_options(self, conn, seg):
        self.seen.append(seg)
        if self.refuse_on is not None and seg.flags & (SYN | ACK) == self.refuse_on:
            return False
        return None

    def sent_range(self, conn, start, length, meta):
        pass

    def received_range(self, conn, start, length, seg):
        pass

    def options_dropped(self, conn, seg, dropped):
        self.dropped.append(dropped)


def events(c: TcpConnection) -> list:
    out = []
    while (e := c.next_event()) is not None:
        out.append(e)
    return out


def established_pair(**kw) -> tuple[Wire, Recorder, Recorder]:
    ha, hb = Recorder(), Recorder()
    w = Wire(hooks_a=ha, hooks_b=hb, **kw)
    w.connect()
    return w, ha, hb


def test_options_of_unacceptable_segments_never_reach_the_hook():
    w, ha, hb = established_pair()
    b = w.b
    n = len(hb.seen)
    # out of window, and an ACK of data never sent (RFC 5961 / 9293 drop these)
    for seq, ack in (
        ((b.rcv_nxt + 10_000_000) & M, b.snd_nxt & M),
        (b.rcv_nxt & M, (b.snd_max + 5000) & M),
    ):
        b.receive_segment(TcpSegment(A_ADDR[1], B_ADDR[1], seq, ack, ACK, 100, [MARK]), w.now)
    assert len(hb.seen) == n
    # an in-window segment is seen
    b.receive_segment(
        TcpSegment(A_ADDR[1], B_ADDR[1], b.rcv_nxt & M, b.snd_nxt & M, ACK, 100, [MARK]), w.now
    )
    assert len(hb.seen) == n + 1


def test_rst_options_reach_the_hook_and_the_reset_event():
    w, ha, hb = established_pair()
    b = w.b
    events(b)
    rst = TcpSegment(A_ADDR[1], B_ADDR[1], b.rcv_nxt & M, 0, RST, 0, [MARK])
    b.receive_segment(rst, w.now)
    assert hb.seen[-1] is rst
    ev = [e for e in events(b) if isinstance(e, Reset)]
    assert ev and ev[0].options == [MARK]


def test_refused_third_ack_answers_rst_with_hook_options_and_never_connects():
    ha, hb = Recorder(), Recorder(refuse_on=ACK)
    w = Wire(hooks_a=ha, hooks_b=hb)
    w.a.connect(w.now)
    w.run(until=1.0)
    b = w.b
    assert b is not None and b.state is TcpState.CLOSED
    sent_b = [seg for _, d, seg in w.log if d == "ba"]
    assert sent_b[-1].flags & RST and MARK in sent_b[-1].options
    assert not any(isinstance(e, Connected) for e in w.events["b"])
    # the client saw the RST: reset, with the hook's options handed over
    assert w.a.state is TcpState.CLOSED


def test_refused_synack_answers_rst_from_syn_sent():
    ha, hb = Recorder(refuse_on=SYN | ACK), Recorder()
    w = Wire(hooks_a=ha, hooks_b=hb)
    w.a.connect(w.now)
    w.run(until=1.0)
    sent_a = [seg for _, d, seg in w.log if d == "ab"]
    rst = sent_a[-1]
    assert rst.flags & RST and MARK in rst.options
    assert rst.seq == w.b.rcv_nxt & M  # at the ACK of the SYN/ACK: the peer accepts it
    assert not any(isinstance(e, Connected) for e in w.events["a"])
    assert w.b.state is TcpState.CLOSED


def test_metadata_kept_until_acked_and_segments_never_span_two_ranges():
    w, ha, hb = established_pair()
    a = w.a
    # three ranges of odd sizes; with GSO a super-packet could otherwise cover all three
    a.config.max_segment_payload = 60_000
    sizes = [3000, 5000, 2500]
    for i, n in enumerate(sizes):
        a.send(bytes([i]) * n, meta=i)
    segs = a.segments_to_send(w.now)
    edges = []
    start = a.iss + 1
    for n in sizes:
        edges.append((start, start + n))
        start += n
    for seg in segs:
        if not seg.payload:
            continue
        s = (seg.seq - a.iss) + a.iss
        e = s + len(seg.payload)
        assert any(lo <= s and e <= hi for lo, hi in edges), (s, e, edges)
        m = a.meta_at(seg.seq)
        assert m is not None and m[2] == seg.payload[0]
    # before any ACK the metadata is there for a retransmission
    assert a.meta_at((a.iss + 1) & M)[2] == 0
    w.run(until=w.now + 1.0)
    assert a.meta_at((a.iss + 1) & M) is None  # acknowledged: gone


def test_receive_window_comes_from_the_hook():
    hb = Recorder(window=20_000)
    hb.receive_window = lambda conn: 20_000  # type: ignore[attr-defined]
    w = Wire(hooks_a=Recorder(), hooks_b=hb)
    w.connect()
    w.b.send_ack()
    acks = w.b.segments_to_send(w.now)
    assert acks and acks[-1].window << w.b.rcv_wscale <= 20_000 + (1 << w.b.rcv_wscale)


def test_send_ack_in_syn_received_goes_out_after_the_handshake():
    hb = Recorder()
    w = Wire(hooks_a=Recorder(), hooks_b=hb)
    w.a.connect(w.now)
    syn = w.a.segments_to_send(w.now)[0]
    b = TcpConnection.accept_syn(TcpConfig(), syn, B_ADDR, A_ADDR, w.now, hb)
    b.segments_to_send(w.now)  # SYN/ACK
    b.send_ack()
    ack = TcpSegment(A_ADDR[1], B_ADDR[1], (syn.seq + 1) & M, (b.iss + 1) & M, ACK, 1000, [])
    b.receive_segment(ack, w.now)
    out = b.segments_to_send(w.now)
    assert b.state is TcpState.ESTABLISHED
    assert [s for s in out if s.flags == ACK and not s.payload], "the forced ACK (MP_JOIN's 4th)"


def test_options_that_do_not_fit_are_reported_to_the_hook():
    w, ha, hb = established_pair()
    big = UnknownOption(254, b"x" * 36)
    ha.extra = [big]
    w.a.send_ack()
    w.a.segments_to_send(w.now)
    assert ha.dropped and big in ha.dropped[-1]


def test_take_unsent_takes_only_whole_ranges_never_sent():
    # A range any byte of which went out is frozen (its segments declared its length, as an
    # MPTCP mapping): it stays whole, unsent tail included; only later ranges are taken back.
    w, ha, hb = established_pair()
    a = w.a
    a.send(b"a" * 100_000, meta="m0")
    a.send(b"b" * 30_000, meta="m1")
    a.send(b"c" * 20_000, meta="m2")
    sent = a.segments_to_send(w.now)
    flight = a.snd_max - a.iss - 1
    assert sent and 0 < flight < 100_000
    assert a.take_unsent() == 50_000  # m1 and m2, whole
    assert a.unsent == 100_000 - flight  # m0's tail stays
    assert a.meta_at((a.snd_max - 1) & M)[1:] == (100_000, "m0")
    assert a.meta_at((a.iss + 100_000) & M)[1:] == (100_000, "m0")  # its last byte
    assert a.meta_at((a.iss + 100_001) & M) is None
    assert a.take_unsent() == 0


def test_take_unsent_without_metadata_cuts_at_snd_max():
    w, ha, hb = established_pair()
    a = w.a
    a.send(b"a" * 100_000)
    a.segments_to_send(w.now)
    flight = a.snd_max - a.iss - 1
    assert 0 < flight < 100_000
    assert a.take_unsent() == 100_000 - flight
    assert a.unsent == 0
