"""Congestion controllers alone (driven with ACKs and a fake clock) and inside a connection."""

import os

import pytest
from tcp_wire import Wire

from mptcp_impl.tcp import TcpConfig
from mptcp_impl.tcp.cc import Cubic, Reno, make_cc

MSS = 1448


def one_rtt(cc, now, rtt):
    """Ack a full cwnd in 2-segment ACKs spread over one RTT; returns the new time."""
    window = cc.cwnd
    n = -(-window // (2 * MSS))
    for i in range(n):
        cc.on_ack(min(2 * MSS, window - 2 * MSS * i), rtt, now + rtt * (i + 1) / n)
    return now + rtt


def test_factory():
    assert isinstance(make_cc("reno", MSS), Reno) and isinstance(make_cc("cubic", MSS), Cubic)
    with pytest.raises(ValueError):
        make_cc("bbr", MSS)


@pytest.mark.parametrize("name", ["reno", "cubic"])
def test_slow_start_doubles_per_rtt_and_abc_caps_each_ack(name):
    cc = make_cc(name, MSS)
    assert cc.cwnd == 10 * MSS
    cc.on_ack(10 * MSS, 0.1, 0.0)  # one stretch ACK: at most 2 SMSS of growth (RFC 3465)
    assert cc.cwnd == 12 * MSS
    cc = make_cc(name, MSS)
    t = 0.0
    for _ in range(4):
        before = cc.cwnd
        t = one_rtt(cc, t, 0.1)
        assert cc.cwnd == 2 * before


def test_reno_congestion_avoidance_adds_one_mss_per_rtt_and_halves():
    cc = Reno(MSS)
    cc.ssthresh = cc.cwnd = 40 * MSS
    t = 0.0
    for k in range(1, 6):
        t = one_rtt(cc, t, 0.1)
        assert cc.cwnd == (40 + k) * MSS
    cc.enter_recovery(45 * MSS, t)
    assert cc.ssthresh == cc.cwnd == 45 * MSS // 2
    cc.on_rto(4 * MSS, t)
    assert cc.cwnd == MSS and cc.ssthresh == 2 * MSS  # floor of 2 SMSS


def test_cubic_reduction_and_cubic_curve():
    cc = Cubic(MSS)
    cc.cwnd = 100 * MSS
    cc.ssthresh = 50 * MSS
    cc.enter_recovery(100 * MSS, 0.0)
    assert cc.cwnd == cc.ssthresh == int(100 * MSS * 0.7)
    cc.exit_recovery(0, 0.0)
    k = (100 * 0.3 / 0.4) ** (1 / 3)  # ~4.2 s
    rtt = 0.1
    t = 0.0
    samples = {}
    while t < 2 * k:
        t = one_rtt(cc, t, rtt)
        samples[round(t, 1)] = cc.cwnd / MSS
    at = lambda x: samples[min(samples, key=lambda s: abs(s - x))]  # noqa: E731
    assert at(k) == pytest.approx(100, rel=0.06)  # back to W_max at t = K
    # concave then convex: fast early growth, a plateau around W_max, then acceleration
    assert at(k / 2) - at(0.2) > at(k) - at(k / 2)
    assert at(2 * k) - at(1.5 * k) > at(1.5 * k) - at(k)
    assert at(2 * k) > 110


def test_cubic_fast_convergence_and_rto():
    cc = Cubic(MSS)
    cc.cwnd = 100 * MSS
    cc.enter_recovery(0, 0.0)
    cc.exit_recovery(0, 0.0)
    assert cc.w_max == pytest.approx(100)
    cc.cwnd = 80 * MSS  # a loss below the previous maximum: release bandwidth
    cc.enter_recovery(0, 1.0)
    assert cc.w_max == pytest.approx(80 * 1.7 / 2)
    cc.on_rto(0, 2.0)
    assert cc.cwnd == MSS


def test_cubic_is_at_least_reno_friendly_on_short_rtts():
    cubic, reno = Cubic(MSS), Reno(MSS)
    for cc in (cubic, reno):
        cc.cwnd = 20 * MSS
        cc.enter_recovery(20 * MSS, 0.0)
        cc.exit_recovery(0, 0.0)
    t1 = t2 = 0.0
    for _ in range(30):
        t1 = one_rtt(cubic, t1, 0.001)
        t2 = one_rtt(reno, t2, 0.001)
    # over 30 RTTs of 1 ms CUBIC's cubic term barely moves: the Reno-friendly estimate rules,
    # growing cwnd by about 3*(1-b)/(1+b) = 0.53 SMSS per RTT from 14 SMSS back to the prior
    # 20 SMSS (about 11 RTTs), then by 1 SMSS per RTT (RFC 9438 4.3)
    assert cubic.cwnd / MSS == pytest.approx(20 + (30 - 6 / 0.53), abs=2.5)
    assert reno.cwnd / MSS == pytest.approx(10 + 30, abs=1)


@pytest.mark.parametrize("name,beta", [("reno", 0.5), ("cubic", 0.7)])
def test_connection_through_a_bottleneck(name, beta):
    """A 50 Mbit/s, 20 ms RTT bottleneck with a 40-packet queue: slow start overshoots, tail
    drops trigger SACK recovery (lost retransmissions included) without any RTO, and the first
    reduction follows the controller's beta."""
    w = Wire(TcpConfig(cc=name), delay=0.01, rate=6.25e6, queue_limit=40)
    w.connect()
    w.keep_log = False
    data = os.urandom(6_000_000)
    w.write("a", data)
    first = None
    prev_cwnd = w.a.cwnd
    while len(w.received["b"]) < len(data):
        if first is None and w.a.stats.fast_retransmits:
            first = (prev_cwnd, w.a.stats.ssthresh)
        prev_cwnd = w.a.cwnd
        assert w.step()
    assert bytes(w.received["b"]) == data
    st = w.a.stats
    assert st.fast_retransmits >= 1 and st.rto_count == 0
    assert st.retransmits >= w.links["ab"].drops  # every drop repaired
    assert w.now < 6_000_000 / 6.25e6 * 1.3  # the bottleneck stays busy
    cwnd_at_loss, ssthresh = first
    assert ssthresh == pytest.approx(beta * cwnd_at_loss, rel=0.1)


def _acks_for_one_flight(acks_field: bool):
    """A's first flight reaches B; B's ACKs come back one by one, or (``acks_field``) only the
    last one, standing for all of them (``TcpSegment.acks``, as the edge coalesces a batch)."""
    from mptcp_impl.tcp import TcpConnection

    a_addr, b_addr = ("10.0.0.1", 40000), ("10.0.0.2", 5001)
    cfg = TcpConfig()
    a = TcpConnection(cfg, a_addr, b_addr)
    a.connect(0.0)
    b = TcpConnection.accept_syn(cfg, a.segments_to_send(0.0)[0], b_addr, a_addr, 0.0)
    for s in b.segments_to_send(0.001):
        a.receive_segment(s, 0.001)
    for s in a.segments_to_send(0.001):
        b.receive_segment(s, 0.001)
    a.send(os.urandom(200_000))
    acks = []
    for s in a.segments_to_send(0.002):
        b.receive_segment(s, 0.003)
        acks += b.segments_to_send(0.003)  # B acks every second segment
    assert len(acks) >= 4
    cwnd0 = a.cwnd
    if acks_field:
        acks[-1].acks = len(acks)
        acks = acks[-1:]
    for s in acks:
        a.receive_segment(s, 0.004)
    return cwnd0, a.cwnd, a.snd_una


def test_an_ack_standing_for_k_grows_slow_start_as_k_acks():
    c0, each, una_each = _acks_for_one_flight(False)
    c0b, last, una_last = _acks_for_one_flight(True)
    assert c0 == c0b and una_each == una_last
    assert last == each > c0 + 2 * 1448  # more than one ACK's cap of growth
