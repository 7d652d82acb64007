"""Regression tests for RFC conformance fixes in the core (each fails on the code before its
fix): scripted segment exchanges with the fake clock of the in-test wire."""

import os

import pytest
from tcp_wire import Wire

from mptcp_impl.tcp import TcpConfig
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
