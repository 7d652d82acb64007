"""Regression tests for RFC conformance fixes in the core (each fails on the code before its
fix): scripted segment exchanges with the fake clock of the in-test wire."""

import os
import random
import time

import pytest
from tcp_wire import A_ADDR, B_ADDR, Reset, Wire

from mptcp_impl.tcp import ACK, RST, Sack, TcpConfig, TcpConnection, TcpSegment, TcpState
from mptcp_impl.tcp.cc import Cubic

MSS = 1448
M = 0xFFFFFFFF


def established(cfg_a=None, cfg_b=None, delay=0.05):
    w = Wire(cfg_a, cfg_b, delay=delay)
    w.connect()
    w.run(until=w.now + 0.2)
    return w


def pump(w, n):
    """Send n bytes A -> B and wait until B has them all."""
    data = os.urandom(n)
    w.received["b"].clear()
    w.write("a", data)
    w.run(cond=lambda: len(w.received["b"]) >= n)
    assert bytes(w.received["b"]) == data


# ---------------------------------------------------------------- 3. CUBIC and repeated RTOs


def test_cubic_restarts_after_rto_with_k_zero_and_wmax_at_ca_start():
    """RFC 9438 4.8: the first congestion avoidance after a timeout uses K = 0 and W_max =
    W_est = cwnd at the start of that stage, not the curve of the pre-timeout W_max."""
    cc = Cubic(MSS)
    cc.cwnd = 100 * MSS
    cc.on_rto(100 * MSS, 0.0)
    assert cc.cwnd == MSS and cc.ssthresh == 70 * MSS
    t = 0.0
    while cc.cwnd < cc.ssthresh:
        t += 0.01
        cc.on_ack(2 * MSS, 0.1, t)
    start = cc.cwnd / MSS
    cc.on_ack(MSS, 0.1, t + 0.01)
    assert cc.k == 0.0
    assert cc.w_max == pytest.approx(start)
    assert cc.w_est >= start


@pytest.mark.parametrize("cc", ["cubic", "reno"])
def test_back_to_back_rtos_hold_ssthresh(cc):
    """RFC 5681 3.1: repeated timeouts of the same data keep ssthresh; a 3 s outage (several
    backed-off RTOs) must not take it down to 2 SMSS."""
    w = established(TcpConfig(cc=cc))
    pump(w, 300_000)
    a = w.a
    assert a.cwnd > 20 * MSS
    w.filters["ab"] = lambda *_: []  # outage
    w.write("a", os.urandom(200_000))
    w.run(cond=lambda: a.stats.rto_count >= 1)
    after_first = a.stats.ssthresh
    assert after_first > 4 * MSS
    w.run(cond=lambda: a.stats.rto_count >= 3)
    assert a.stats.ssthresh == after_first
    w.filters["ab"] = None
    w.run(cond=lambda: len(w.received["b"]) >= 500_000)
    assert a.stats.ssthresh >= after_first or a.stats.fast_retransmits


# ---------------------------------------------------------------- 6. cwnd validation, idle restart


def test_cwnd_does_not_grow_while_the_application_does_not_fill_it():
    """RFC 7661: two segments per RTT for 60 RTTs must not inflate cwnd (it grew by every
    ACK, to IW + 120 segments)."""
    w = established()
    a = w.a
    iw = a.cwnd
    for _ in range(60):
        pump(w, 2 * a.mss)
        w.run(until=w.now + 0.05)
    assert a.cwnd == iw


def test_restart_window_after_idle():
    """RFC 5681 4.1: after an idle period longer than the RTO, send at most RW = min(IW, cwnd)
    at once; the old cwnd would be a line-rate burst (bad for an MPTCP subflow left idle)."""
    w = established()
    a = w.a
    pump(w, 2_000_000)
    big = a.cwnd
    assert big > 40 * a.mss
    w.run(until=w.now + 1.0)
    assert a.snd_una == a.snd_max and w.a.get_timer() is None
    w.now += 5.0  # idle: nothing in flight, far longer than the RTO
    t0 = w.now
    w.write("a", os.urandom(1_000_000))
    w.step()
    burst = w.segs("ab", lambda s: len(s.payload) > 0)
    burst = [s for t, s in burst if t == t0]
    assert 0 < len(burst) <= 10
    assert a.stats.ssthresh >= big * 3 // 4
    w.run(cond=lambda: len(w.received["b"]) >= 1_000_000)


# ---------------------------------------------------------------- 1. zero-window probe with data


def test_zero_window_probe_carrying_data_is_acknowledged():
    """RFC 9293 3.8.6.1: a probe of one byte at RCV.NXT while the window is zero (what Linux
    sends) is not accepted but must be answered with an ACK carrying the (zero) window."""
    w = Wire(TcpConfig(), TcpConfig(rcv_buf=60_000, window_scale=False))
    w.connect()
    w.auto_read["b"] = False
    w.write("a", os.urandom(100_000))
    w.run(until=w.now + 0.5)
    b = w.b
    assert b.readable == 60_000 and b._rcv_adv == b.rcv_nxt
    rcv_nxt = b.rcv_nxt
    probe = TcpSegment(A_ADDR[1], B_ADDR[1], rcv_nxt & M, b.snd_nxt & M, ACK, 0xFFFF, [], b"x")
    b.segments_to_send(w.now)
    b.receive_segment(probe, w.now)
    out = b.segments_to_send(w.now)
    assert len(out) == 1 and out[0].flags == ACK
    assert out[0].ack == rcv_nxt & M and out[0].window == 0
    assert b.rcv_nxt == rcv_nxt and b.readable == 60_000  # the byte is not taken


# ---------------------------------------------------------------- 2. Karn's rule without timestamps


@pytest.mark.parametrize("tlp", [False, True])
def test_karn_no_sample_from_retransmitted_data_without_timestamps(tlp):
    """RFC 6298 3 and 5: without timestamps an ACK covering retransmitted data gives no RTT
    sample, and the backed-off RTO stays until a valid sample. The retransmission (RTO or
    TLP) was timed itself, so the late ACK of the original gave a sample far below the RTT."""
    cfg = TcpConfig(timestamps=False, tlp=tlp)
    w = established(cfg, TcpConfig(timestamps=False), delay=0.1)
    a = w.a
    for _ in range(5):
        pump(w, 1000)
    srtt = a.srtt
    assert srtt == pytest.approx(0.2, abs=0.05)
    t0 = w.now

    def stall(wire, *_):  # the ACK of the original arrives 30 ms after A's RTO/probe fired
        if wire.now < t0 + 0.3:
            return [a.get_timer() + 0.03 - wire.now - 0.1]
        return [0.0]

    w.filters["ba"] = stall
    w.write("a", os.urandom(1000))
    kind = "tlp_probes" if tlp else "rto_count"
    w.run(cond=lambda: getattr(a.stats, kind) >= 1)
    rto = a.rto
    w.run(cond=lambda: a.snd_una == a.snd_max)
    assert a.stats.retransmits >= 1
    assert a.srtt == srtt  # no sample from the ambiguous ACK
    assert a.rto >= rto  # the backed-off RTO is kept
    w.filters["ba"] = None
    pump(w, 1000)  # new data: a valid sample again
    w.run(cond=lambda: a.snd_una == a.snd_max)
    assert a.srtt != srtt and a.srtt > 0.15


# ---------------------------------------------------------------- 4. SACK scoreboard across an RTO


def data_sends(w, direction="ab"):
    """{relative seq: number of transmissions} of the data segments sent so far."""
    c = w.a if direction == "ab" else w.b
    counts = {}
    for _, d, s in w.log:
        if d == direction and s.payload:
            k = (s.seq - c.iss - 1) & M
            counts[k] = counts.get(k, 0) + 1
    return counts


def test_rto_keeps_sack_information_and_resends_only_the_holes():
    """RFC 6675 5.1: after an RTO the scoreboard is still used, so go-back-N resends only what
    the receiver does not hold (it resent everything above snd_una)."""
    w = established()
    a = w.a
    mss = a.mss
    base = a.snd_nxt
    lost = {base & M, (base + 5 * mss) & M}
    seen = {}

    def f(_w, _d, seg, _i):
        if seg.seq in lost and seg.payload:
            seen[seg.seq] = seen.get(seg.seq, 0) + 1
            if seen[seg.seq] <= 2:  # first transmission and fast retransmission lost
                return []
        return [0.0]

    w.filters["ab"] = f
    data = os.urandom(10 * mss)
    w.write("a", data)
    w.run(cond=lambda: len(w.received["b"]) >= len(data))
    assert bytes(w.received["b"]) == data
    assert a.stats.rto_count == 1 and a.stats.sack_recoveries == 1
    counts = data_sends(w)
    assert counts[0] == 3 and counts[5 * mss] == 3
    assert all(n == 1 for k, n in counts.items() if k not in (0, 5 * mss)), counts


# ---------------------------------------------------------------- 7. abort after go-back-N


def test_abort_after_rto_sends_rst_at_the_highest_sequence_sent():
    """After go-back-N snd_nxt is below what the peer expects: an RST there only draws a
    challenge ACK (RFC 5961) and the peer lives on. The RST goes at the highest seq sent."""
    w = established()
    a = w.a
    w.filters["ba"] = lambda *_: []  # the ACKs are lost: B has everything, A times out
    w.write("a", os.urandom(20_000))
    w.run(cond=lambda: a.stats.rto_count >= 1)
    w.run(until=w.now + 0.01)
    assert a.snd_nxt < a.snd_max == w.b.rcv_nxt
    a.abort(w.now)
    w.run(until=w.now + 0.5)
    rst = [s for _, d, s in w.log if d == "ab" and s.flags & 0x04]
    assert rst and rst[-1].seq == a.snd_max & M
    assert w.has("b", Reset)


def test_both_ends_recover_when_their_acks_were_lost_across_an_rto():
    """Both ends send; every pure ACK is lost until both have had an RTO, which rewinds
    snd_nxt. Pure ACKs numbered at snd_nxt then lay below what the other end had received, so
    each end dropped the other's ACKs unread (RFC 9293 3.10.7.4) and neither learnt its data
    had arrived: stuck for good (found by the compound-fault harness, bidir + cut). They go
    at the highest sequence sent (snd_max, Linux's tcp_acceptable_seq) and both recover."""
    w = established()
    a, b = w.a, w.b
    no_acks = lambda _w, _d, seg, _i: [] if not seg.payload else [0.0]  # noqa: E731
    w.filters["ab"] = w.filters["ba"] = no_acks
    w.write("a", os.urandom(20_000))
    w.write("b", os.urandom(20_000))
    w.run(cond=lambda: a.stats.rto_count >= 1 and b.stats.rto_count >= 1)
    assert a.snd_max == b.rcv_nxt and b.snd_max == a.rcv_nxt  # each has the other's data
    w.filters["ab"] = w.filters["ba"] = None
    w.run(until=w.now + 10, cond=lambda: a.snd_una == a.snd_max and b.snd_una == b.snd_max)
    assert a.snd_una == a.snd_max and b.snd_una == b.snd_max


# ---------------------------------------------------------------- 5. loss repaired by a TLP


def test_loss_repaired_by_a_tail_loss_probe_reduces_cwnd():
    """RFC 8985 7.4: when the probe retransmission plugged the hole (no D-SACK, no duplicate
    ACK for a second copy before an ACK beyond TLPHighRxt), the loss gets a congestion
    response like any other."""
    w = established(delay=0.01)
    a = w.a
    pump(w, 100_000)
    w.run(until=w.now + 1.0)
    cwnd = a.cwnd
    last = a.snd_nxt + 4 * a.mss
    dropped = []

    def f(_w, _d, seg, _i):
        if seg.payload and seg.seq == last & M and not dropped:
            dropped.append(seg)
            return []
        return [0.0]

    w.filters["ab"] = f
    pump(w, 5 * a.mss)  # the last segment of this tail is lost; the probe repairs it
    assert dropped and a.stats.tlp_probes == 1 and a.stats.rto_count == 0
    assert a.stats.fast_retransmits == 0
    pump(w, 3 * a.mss)  # the next ACK goes beyond TLPHighRxt: the episode ends
    w.run(until=w.now + 0.5)
    assert a.stats.tlp_repairs == 1
    assert a.stats.ssthresh == pytest.approx(0.7 * cwnd, rel=0.1)
    assert a.cwnd < cwnd


def test_tail_loss_probe_that_was_not_needed_leaves_cwnd_alone():
    """Both the original and the probe arrive (the ACK was only slow): no response."""
    w = established(delay=0.01)
    a = w.a
    pump(w, 100_000)
    w.run(until=w.now + 1.0)
    cwnd = a.cwnd
    t0 = w.now
    w.filters["ba"] = lambda wire, *_: [0.05] if wire.now < t0 + 0.02 else [0.0]
    pump(w, 5 * a.mss)
    w.run(until=w.now + 1.0)
    w.filters["ba"] = None
    assert a.stats.tlp_probes == 1
    pump(w, 3 * a.mss)
    w.run(until=w.now + 0.5)
    assert a.stats.tlp_repairs == 0 and a.cwnd >= cwnd


# ---------------------------------------------------------------- linear-time recovery


def _pair(**kw):
    cfg = TcpConfig(rcv_buf=32 << 20, snd_buf=32 << 20, isn=5000, **kw)
    a = TcpConnection(cfg, A_ADDR, B_ADDR)
    a.connect(0.0)
    b = TcpConnection.accept_syn(cfg, a.segments_to_send(0.0)[0], B_ADDR, A_ADDR, 0.0)
    for s in b.segments_to_send(0.0):
        a.receive_segment(s, 0.0)
    for s in a.segments_to_send(0.0):
        b.receive_segment(s, 0.0)
    b.send_ack()  # the first scaled window
    for s in b.segments_to_send(0.0):
        a.receive_segment(s, 0.0)
    return a, b


def test_two_thousand_holes_cost_linear_time():
    """Thousands of holes in the SACK scoreboard and in the out-of-order queue: both were
    scanned from the front per segment (quadratic: seconds of CPU); the bound is ~10x the
    cost now, measured in process CPU time."""
    a, b = _pair(timestamps=False)
    a.cc.cwnd = 1 << 30
    a.send(os.urandom(4000 * a.mss))
    segs = a.segments_to_send(0.01)
    assert len(segs) == 4000
    t0 = time.process_time()
    # B gets every other segment (2000 holes), SACKing each; A takes every ACK
    for s in segs[1::2]:
        b.receive_segment(s, 0.02)
        for ack in b.segments_to_send(0.02):
            a.receive_segment(ack, 0.03)
            a.segments_to_send(0.03)
    assert len(b._ooo) == 2000 and len(a._sacked) > 1900 and a.in_recovery
    # then the holes, from the top down: each merges two blocks until the last drains all
    for s in reversed(segs[0::2]):
        b.receive_segment(s, 0.04)
        b.segments_to_send(0.04)
    cpu = time.process_time() - t0
    assert b.readable == 4000 * a.mss and not b._ooo
    assert cpu < 1.0, cpu


# ---------------------------------------------------------------- 8. smaller items


def test_rst_in_time_wait_is_ignored():
    """RFC 1337 (TIME-WAIT assassination): an RST, even at RCV.NXT, does not end TIME-WAIT."""
    w = established()
    a = w.a
    a.close(w.now)
    w.run(cond=lambda: a.state is TcpState.FIN_WAIT_2)
    w.b.close(w.now)
    w.run(cond=lambda: a.state is TcpState.TIME_WAIT)
    deadline = a.get_timer()
    rst = TcpSegment(B_ADDR[1], A_ADDR[1], a.rcv_nxt & M, a.snd_nxt & M, RST | ACK, 0)
    a.receive_segment(rst, w.now + 0.1)
    assert a.state is TcpState.TIME_WAIT and a.get_timer() == deadline
    assert a.segments_to_send(w.now + 0.1) == []
    assert not w.has("a", Reset) and a.next_event() is None


def test_acks_for_out_of_window_segments_are_rate_limited():
    """Pure ACKs out of window (an ACK loop, a blind attack) draw at most one ACK per 0.5 s,
    as Linux's tcp_invalid_ratelimit; out-of-window data (an old retransmission) always gets
    its duplicate ACK, the sender needs it."""
    w = established()
    b = w.b
    now = w.now

    def bad(off, payload=b""):
        return TcpSegment(
            A_ADDR[1], B_ADDR[1], (b.rcv_nxt + off) & M, b.snd_nxt & M, ACK, 0xFFFF, [], payload
        )

    b.segments_to_send(now)
    acks = 0
    for i in range(10):
        b.receive_segment(bad(1 << 28), now + i * 0.01)
        acks += len(b.segments_to_send(now + i * 0.01))
    assert acks == 1
    b.receive_segment(bad(1 << 28), now + 0.6)
    assert len(b.segments_to_send(now + 0.6)) == 1
    for _ in range(3):  # old data, below RCV.NXT
        b.receive_segment(bad(-2000, b"x" * 1000), now + 0.61)
        assert len(b.segments_to_send(now + 0.61)) == 1


def test_sack_blocks_after_the_first_repeat_the_most_recently_reported():
    """RFC 2018 4: the first block holds the segment that triggered the ACK, the following
    ones repeat the most recently reported blocks (not simply the highest ones), so that each
    block is reported in several ACKs even when more than three holes are open."""
    w = established()
    b = w.b
    b.segments_to_send(w.now)
    base = b.rcv_nxt
    mss = 1000
    reports = []
    for k in (10, 2, 6, 4, 8):
        seg = TcpSegment(
            A_ADDR[1], B_ADDR[1], (base + k * mss) & M, b.snd_nxt & M, ACK, 0xFFFF, [], b"x" * mss
        )
        b.receive_segment(seg, w.now)
        (ack,) = b.segments_to_send(w.now)
        (sack,) = [o for o in ack.options if isinstance(o, Sack)]
        reports.append([((left - base) & M) // mss for left, _ in sack.blocks])
    assert reports[-1] == [8, 4, 6]
    assert reports[-2] == [4, 6, 2]


def test_rfc6675_loss_rule_counts_more_than_dupthresh_minus_one_segments():
    """RFC 6675 IsLost: a hole is lost once more than (DupThresh - 1) * SMSS bytes are SACKed
    above it (or DupThresh discontiguous blocks). The rule used DupThresh * SMSS, so a hole
    with 2.5 segments SACKed above waited while new data went out."""
    a, b = _pair(timestamps=False)
    mss = a.mss
    a.cc.cwnd = 20 * mss
    a.send(os.urandom(12 * mss + mss // 2))
    segs = a.segments_to_send(0.01)
    assert len(segs) == 13 and len(segs[12].payload) == mss // 2
    a.send(os.urandom(20 * mss))  # new data is waiting too
    out = []
    for s in segs[1:9] + segs[10:]:  # 0 and 9 are lost
        b.receive_segment(s, 0.02)
        for ack in b.segments_to_send(0.02):
            a.receive_segment(ack, 0.03)
            out += a.segments_to_send(0.03)
    assert a.in_recovery
    rxt = [s.seq for s in out if s.seq in (segs[0].seq, segs[9].seq)]
    assert rxt == [segs[0].seq, segs[9].seq]


def test_cubic_reno_friendly_alpha_becomes_one_past_the_prior_cwnd():
    """RFC 9438 4.3: once W_est reaches the cwnd before the last reduction, alpha_cubic = 1,
    so the Reno-friendly region grows as fast as Reno (1 SMSS per RTT), not 0.53."""
    cc = Cubic(MSS)
    cc.cwnd = 20 * MSS
    cc.enter_recovery(20 * MSS, 0.0)
    cc.exit_recovery(0, 0.0)
    t, rtt = 0.0, 0.001
    for _ in range(200):
        t = one_rtt(cc, t, rtt)
        if cc.w_est >= 20:
            break
    assert 19 <= cc.cwnd / MSS <= 21.5
    start = cc.cwnd / MSS
    for _ in range(20):
        t = one_rtt(cc, t, rtt)
    assert cc.cwnd / MSS - start == pytest.approx(20, abs=3)


def one_rtt(cc, now, rtt):
    window = cc.cwnd
    n = -(-window // (2 * MSS))
    for i in range(n):
        cc.on_ack(min(2 * MSS, window - 2 * MSS * i), rtt, now + rtt * (i + 1) / n)
    return now + rtt


def test_tlp_allows_200ms_for_a_delayed_ack_of_a_lone_segment():
    """RFC 8985 7.2: with one segment in flight the PTO adds WCDelAckT = 200 ms (the peer
    may be waiting for a second segment to ACK), not our own delayed-ACK time (40 ms)."""
    w = established(TcpConfig(min_rto=1.0), delay=0.01)
    a = w.a
    pump(w, 1000)
    w.run(until=w.now + 0.5)
    srtt = a.srtt
    w.filters["ab"] = lambda *_: []
    t0 = w.now
    a.send(b"z" * 100)
    w.run(cond=lambda: a.stats.tlp_probes >= 1)
    assert w.now - t0 == pytest.approx(2 * srtt + 0.2, abs=0.002)
    assert a.stats.rto_count == 0


def test_isn_and_timestamp_offset_come_from_an_injectable_random_source():
    """TcpConfig.rng: a seeded run is reproducible (ISS, timestamp offset, every segment)."""

    def run(seed):
        w = Wire(TcpConfig(rng=random.Random(seed)), TcpConfig(rng=random.Random(seed + 100)))
        w.connect()
        pump(w, 50_000)
        return [(t, d, s.seq, s.ack, s.options) for t, d, s in w.log], w.a.iss, w.b.iss

    r1, r2, r3 = run(1), run(1), run(2)
    assert r1 == r2
    assert r1[1] != r3[1] and r1[2] != r3[2] and r1[0] != r3[0]


@pytest.mark.parametrize("cc", ["cubic", "reno"])
def test_timeout_during_rto_recovery_holds_ssthresh(cc):
    """A second timeout before the first one's recovery point is acked (a retransmission lost
    again) is the same congestion episode: ssthresh holds (as Linux does in its Loss state);
    CUBIC's 0.7 * cwnd of a 2-segment cwnd fell to 2 SMSS."""
    w = established(TcpConfig(cc=cc, tlp=False))
    a = w.a
    pump(w, 300_000)
    w.run(until=w.now + 0.5)
    base = a.snd_nxt
    mss = a.mss
    sends = {}

    def f(_w, _d, seg, _i):
        if not seg.payload:
            return [0.0]
        k = ((seg.seq - base) & M) // mss
        sends[k] = sends.get(k, 0) + 1
        if sends[k] == 1 or (k == 1 and sends[k] == 2):
            return []  # the whole flight is lost, and segment 1 once more after the RTO
        return [0.0]

    w.filters["ab"] = f
    w.write("a", os.urandom(20 * mss))
    w.run(cond=lambda: a.stats.rto_count >= 1)
    after_first = a.stats.ssthresh
    w.run(cond=lambda: a.stats.rto_count >= 2)
    assert a.snd_una > base  # progress between the two timeouts
    assert a.stats.ssthresh == after_first
    w.run(cond=lambda: len(w.received["b"]) >= 20 * mss)
