"""HyStart++ (RFC 9406) in the initial slow start, and a single congestion response per loss
episode: the controllers alone (rounds driven by hand), then inside a connection on a
20 Mbit/s, 80 ms RTT path with a 100-packet queue (a testbed lte link)."""

import pytest
from tcp_wire import Wire

from mptcp_impl.tcp import TcpConfig
from mptcp_impl.tcp.cc import Cubic, HyStartPP, Reno

MSS = 1448


def expected_thresh(last_round_min_rtt: float) -> float:
    # RFC 9406 4.2: RttThresh = max(MIN_RTT_THRESH, min(lastRoundMinRTT / MIN_RTT_DIVISOR,
    # MAX_RTT_THRESH)), with 4 ms, 16 ms and 8
    return max(0.004, min(last_round_min_rtt / 8, 0.016))


class Rounds:
    """Feeds a controller ACKs round by round: a round ends when SND.NXT as of its start is
    acked; each ACK acks 2 SMSS and SND.NXT follows cwnd."""

    def __init__(self, cc):
        self.cc = cc
        self.una = 0
        self.t = 0.0

    def round(self, rtts):
        cc = self.cc
        end = self.una + cc.cwnd  # what is in flight as the round starts
        for k, rtt in enumerate(rtts):
            ack = end if k == 0 else self.una + 2 * MSS
            self.una = ack
            self.t += 0.001
            cc.hystart_ack(ack, ack + cc.cwnd, rtt)
            cc.on_ack(2 * MSS, rtt, self.t)


def test_rtt_thresh_is_clamped_between_4_and_16_ms():
    for last in (0.001, 0.02, 0.032, 0.08, 0.128, 0.5):
        assert HyStartPP.rtt_thresh(last) == pytest.approx(expected_thresh(last))
    assert HyStartPP.rtt_thresh(0.02) == pytest.approx(0.004)
    assert HyStartPP.rtt_thresh(0.08) == pytest.approx(0.010)
    assert HyStartPP.rtt_thresh(0.5) == pytest.approx(0.016)


@pytest.mark.parametrize("cls", [Reno, Cubic])
@pytest.mark.parametrize("base", [0.02, 0.08, 0.3])
def test_delay_increase_moves_to_css_only_past_the_threshold(cls, base):
    thresh = expected_thresh(base)
    # just below the threshold: standard slow start goes on
    cc = cls(MSS)
    r = Rounds(cc)
    r.round([base] * 10)
    r.round([base + thresh - 0.0005] * 10)
    assert cc.hystart.css_baseline is None
    before = cc.cwnd
    r.round([base + thresh - 0.0005 + expected_thresh(base + thresh) - 0.0005] * 4)
    assert cc.cwnd == before + 4 * 2 * MSS  # slow start: 2 SMSS per ACK (ABC, L = 2)
    # at the threshold, CSS from the N_RTT_SAMPLE-th sample of the round on
    cc = cls(MSS)
    r = Rounds(cc)
    r.round([base] * 10)
    r.round([base + thresh] * (HyStartPP.N_RTT_SAMPLE - 1))
    assert cc.hystart.css_baseline is None
    r.una += 2 * MSS
    cc.hystart_ack(r.una, r.una + cc.cwnd, base + thresh)
    assert cc.hystart.css_baseline == pytest.approx(base + thresh)
    assert cc.ssthresh == 1 << 30  # CSS is still slow start as far as ssthresh goes
    before = cc.cwnd
    cc.on_ack(2 * MSS, base, 1.0)
    assert cc.cwnd == before + 2 * MSS // HyStartPP.CSS_GROWTH_DIVISOR


@pytest.mark.parametrize("cls", [Reno, Cubic])
def test_css_rounds_then_congestion_avoidance(cls):
    cc = cls(MSS)
    r = Rounds(cc)
    r.round([0.08] * 10)
    r.round([0.1] * 10)  # +20 ms > 10 ms: CSS
    assert cc.hystart.css_baseline == pytest.approx(0.1)
    for _ in range(HyStartPP.CSS_ROUNDS - 1):
        r.round([0.1] * 10)
        assert cc.ssthresh == 1 << 30
    before = cc.cwnd
    r.round([0.1])  # the CSS_ROUNDS-th round boundary: ssthresh = cwnd, then avoidance
    assert cc.ssthresh == before and not cc.hystart.active
    assert 0 <= cc.cwnd - cc.ssthresh < MSS


@pytest.mark.parametrize("cls", [Reno, Cubic])
def test_spurious_exit_resumes_slow_start(cls):
    cc = cls(MSS)
    r = Rounds(cc)
    r.round([0.08] * 10)
    r.round([0.1] * 10)
    assert cc.hystart.css_baseline == pytest.approx(0.1)
    r.round([0.095] * 10)  # below the baseline after N_RTT_SAMPLE samples: back to slow start
    assert cc.hystart.css_baseline is None and cc.hystart.active
    before = cc.cwnd
    cc.on_ack(2 * MSS, 0.095, 1.0)
    assert cc.cwnd == before + 2 * MSS


@pytest.mark.parametrize("cls", [Reno, Cubic])
def test_a_loss_ends_hystart(cls):
    cc = cls(MSS)
    r = Rounds(cc)
    r.round([0.08] * 10)
    r.round([0.1] * 10)
    cc.enter_recovery(cc.cwnd, 1.0)
    cc.exit_recovery(cc.cwnd, 1.0)
    assert not cc.hystart.active and cc.hystart.css_baseline is None
    cc = cls(MSS)
    cc.cwnd = 1000 * MSS
    cc.on_rto(cc.cwnd, 1.0)  # slow start after a timeout is standard slow start (4.3)
    before = cc.cwnd
    r = Rounds(cc)
    r.round([0.08] * 10)
    r.round([0.2] * 10)
    assert cc.hystart.css_baseline is None and cc.cwnd == before + 20 * 2 * MSS


def lte_path(cc="cubic", drop=None):
    """20 Mbit/s, 40 ms each way, 100-packet queue; 8 MB to send."""
    red = []

    class Traced(Cubic if cc == "cubic" else Reno):
        def enter_recovery(self, flight, now):
            cwnd = self.cwnd
            super().enter_recovery(flight, now)
            red.append((now, flight, cwnd, self.ssthresh))

        def on_rto(self, flight, now):
            red.append((now, flight, self.cwnd, None))
            super().on_rto(flight, now)

    big = dict(rcv_buf=16 << 20, snd_buf=16 << 20)
    rate = None if drop else 2.5e6
    w = Wire(TcpConfig(cc=Traced, isn=1000, **big), TcpConfig(**big), delay=0.04, rate=rate)
    w.links["ab"].queue_limit = 100
    w.keep_log = False
    if drop:
        w.filters["ab"] = drop
    w.connect()
    w.write("a", b"x" * (8 << 20))
    return w, red


def test_burst_loss_out_of_a_large_window_is_one_reduction():
    """90 segments in a row lost out of a window of about 850: one recovery, one reduction,
    ssthresh = 0.7 x cwnd at the loss (= the flight then, give or take the segment ABC added)."""
    lost = set()

    def drop(wire, direction, seg, idx):
        n = ((seg.seq - 1001) & 0xFFFFFFFF) // MSS
        if seg.payload and 2000 <= n < 2090 and n not in lost:
            lost.add(n)
            return []
        return [0.0]

    w, red = lte_path(drop=drop)
    w.run(until=4.0)
    assert len(lost) == 90
    st = w.a.stats
    assert st.fast_retransmits == 1 and st.rto_count == 0 and st.tlp_repairs == 0
    assert st.retransmits == 90
    assert len(red) == 1
    _, flight, cwnd, ssthresh = red[0]
    assert ssthresh == int(0.7 * cwnd)
    assert abs(flight - cwnd) <= 2 * MSS
    assert w.a.cc.ssthresh == ssthresh  # no second reduction once recovery ended


@pytest.mark.parametrize("cc", ["cubic", "reno"])
def test_hystart_leaves_slow_start_before_the_queue_overflows_hard(cc):
    """Without HyStart++ the slow start on this path ended with about 500 drops and four
    reductions in a row (cwnd 467 -> 112 segments for CUBIC); with it, CSS starts about one
    round after the queue begins to build: at most one reduction in the first second, at
    most ~110 drops, and the link near its rate from 0.7 s on."""
    w, red = lte_path(cc)
    t0 = w.now
    w.run(until=t0 + 0.7)
    got = len(w.received["b"])
    w.run(until=t0 + 1.7)
    assert (len(w.received["b"]) - got) > 0.9 * 2.5e6 * 1448 / 1500
    assert w.links["ab"].drops <= 120
    assert len([r for r in red if r[0] < t0 + 1.0]) <= 1
    assert w.a.stats.rto_count == 0


def test_duplicate_segments_do_not_start_a_recovery():
    """Segments the network duplicates late make the receiver send duplicate ACKs without
    SACK blocks (we send no D-SACK): on a SACK connection they are not the duplicate ACKs of
    RFC 6675 (no new data SACKed) and must not trigger a retransmission and a reduction."""

    def dup(wire, direction, seg, idx):
        return [0.0, 0.03] if seg.payload and 30 <= idx < 34 else [0.0]

    w = Wire(delay=0.01)
    w.filters["ab"] = dup
    w.connect()
    data = bytes(range(256)) * 4000
    w.write("a", data)
    w.run(until=3.0)
    assert bytes(w.received["b"]) == data
    st = w.a.stats
    assert st.dupacks >= 3
    assert st.fast_retransmits == 0 and st.retransmits == 0 and st.tlp_repairs == 0


def test_back_to_back_recoveries_do_not_resend_what_is_in_flight():
    """The slow start overshoot of the lte path without HyStart++: losses continue through the
    first recovery (ssthresh = 0.7 x 467 segments is above the 238 the path holds), so a second
    recovery follows at once. Its holes were already retransmitted by the first one: resending
    them produced duplicates, their duplicate ACKs a third and fourth (spurious) recovery, and
    cwnd fell 467 -> 327 -> 229 -> 160 -> 112 segments in under a second."""
    w, red = lte_path()
    w.a.cc.hystart.stop()
    t0 = w.now
    w.run(until=t0 + 1.5)
    st = w.a.stats
    drops = w.links["ab"].drops
    assert len(red) == 2  # the overshoot, then the losses of what was sent in its recovery
    assert red[1][3] >= 0.7 * 0.7 * red[0][2] - MSS
    assert st.retransmits <= drops + 2  # no spurious retransmissions (616 for 538 before)


@pytest.mark.parametrize("cc", [Cubic, Reno])
def test_a_timeout_during_recovery_does_not_reduce_again(cc):
    """A hole near the tail whose retransmission is lost too (no later SACK reveals it): the
    RTO fires during the recovery. ssthresh keeps the recovery's value (cwnd restarts from one
    segment); before, on_rto cut it to 0.7 (0.5) of the cwnd PRR had lowered to the pipe."""
    red = []

    class Traced(cc):
        def enter_recovery(self, flight, now):
            super().enter_recovery(flight, now)
            red.append(("recovery", self.ssthresh))

        def on_rto(self, flight, now):
            super().on_rto(flight, now)
            red.append(("rto", self.ssthresh))

    n, k = 300, 294
    seen = []

    def drop(wire, direction, seg, idx):
        if seg.payload and ((seg.seq - 1001) & 0xFFFFFFFF) // MSS == k and len(seen) < 2:
            seen.append(idx)
            return []
        return [0.0]

    w = Wire(TcpConfig(cc=Traced, isn=1000), delay=0.02)
    w.filters["ab"] = drop
    w.connect()
    w.write("a", b"y" * (n * MSS))
    w.run(until=5.0)
    assert len(w.received["b"]) == n * MSS
    st = w.a.stats
    assert st.fast_retransmits == 1 and st.rto_count == 1 and len(seen) == 2
    assert [r[0] for r in red] == ["recovery"]
    assert w.a.cc.ssthresh == red[0][1]


@pytest.mark.parametrize("cls", [Reno, Cubic])
def test_a_coalesced_ack_counts_for_the_acks_it_stands_for(cls):
    """The edge hands one ACK for a batch of the peer's pure ACKs (``TcpSegment.acks``): each
    was an RTT sample of the round. Counted as one, a round of two such ACKs (a hundred ACKs
    of a 200 Mbit/s subflow) stayed under N_RTT_SAMPLE and slow start never ended on delay
    (live: cwnd 8 MB, srtt 50-66 ms through the whole 64 MB transfer, the queue's tail drops)."""

    def two_rounds(acks):
        cc = cls(MSS)
        una, nxt = 0, 100 * MSS
        for rtt in (0.001, 0.001 + HyStartPP.MIN_RTT_THRESH):
            # a round: SND.NXT as of its start acked first, then one more ACK within it
            for una in (nxt, nxt + 10 * MSS):
                if acks > 1:
                    cc.hystart_ack(una, nxt + 100 * MSS, rtt, acks)
                else:
                    cc.hystart_ack(una, nxt + 100 * MSS, rtt)
            nxt += 100 * MSS
        return cc.hystart

    hs = two_rounds(20)  # two ACKs a round, each standing for 20: CSS
    assert hs.css_baseline == pytest.approx(0.001 + HyStartPP.MIN_RTT_THRESH)
    assert two_rounds(1).css_baseline is None  # two samples a round: too few to judge
