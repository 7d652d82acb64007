"""Coupled congestion control: the window increase (and BALIA's decrease) of each controller
against its formula computed here, and the group's bookkeeping."""

from __future__ import annotations

import gc
import textwrap

import pytest

from mptcp_impl.mptcp.coupled import (
    Balia,
    CcGroup,
    Lia,
    Member,
    Olia,
    make_cc,
)
from mptcp_impl.tcp.cc import Reno

MSS = 1000


def group_of(cls, windows_rtts, ssthresh=2 * MSS):
    """A group with one member per (cwnd bytes, rtt s), all in congestion avoidance."""
    g = cls()
    ms = []
    for cwnd, rtt in windows_rtts:
        m = g.factory(MSS)
        m.cwnd, m.ssthresh, m.rtt = cwnd, ssthresh, rtt
        m._cwnd_f = float(cwnd)
        ms.append(m)
    return g, ms


def grow(m, acked):
    before = m._cwnd_f
    m.on_ack(acked, m.rtt, 1.0)
    return m._cwnd_f - before


CASES = [
    [(20 * MSS, 0.02), (10 * MSS, 0.08)],
    [(10 * MSS, 0.05), (40 * MSS, 0.01), (7 * MSS, 0.2)],
    [(30 * MSS, 0.03), (30 * MSS, 0.03)],
]


@pytest.mark.parametrize("wr", CASES)
@pytest.mark.parametrize("i", [0, 1])
def test_lia_increase_is_rfc6356(wr, i):
    g, ms = group_of(Lia, wr)
    total = sum(w for w, _ in wr)
    alpha = total * max(w / r**2 for w, r in wr) / sum(w / r for w, r in wr) ** 2
    w_i = wr[i][0]
    acked = 1448
    expect = min(alpha * acked * MSS / total, acked * MSS / w_i)
    assert grow(ms[i], acked) == pytest.approx(expect, rel=1e-12)


def test_lia_one_subflow_is_reno_and_never_more_than_reno():
    g, (m,) = group_of(Lia, [(10 * MSS, 0.05)])
    assert grow(m, MSS) == pytest.approx(MSS * MSS / (10 * MSS))
    g, ms = group_of(Lia, CASES[1])
    for m in ms:
        w = m.cwnd
        assert grow(m, MSS) <= MSS * MSS / w + 1e-9


def olia_eps(ws, rtts, ls, k):
    """Khalili et al.: B = argmax l/rtt^2, M = argmax w, eps_k from |B\\M|, |M| and n."""
    n = len(ws)
    q = [d / r**2 for d, r in zip(ls, rtts, strict=True)]
    in_m = [j for j in range(n) if ws[j] == max(ws)]
    b_not_m = [j for j in range(n) if q[j] == max(q) and j not in in_m]
    if not b_not_m:
        return 0.0
    if k in b_not_m:
        return 1 / (n * len(b_not_m))
    return -1 / (n * len(in_m)) if k in in_m else 0.0


@pytest.mark.parametrize("wr", CASES)
@pytest.mark.parametrize("history", ["none", "equal", "skewed"])
def test_olia_increase(wr, history):
    """w_r += (w_r/rtt_r^2)/(sum_p w_p/rtt_p)^2 + eps_r/w_r per acked segment, with l_r the
    bytes since the last loss (the ack itself counted, as the v0 kernel does)."""
    n = len(wr)
    ls0 = {
        "none": [0] * n,
        "equal": [10**6] * n,
        "skewed": [10**5 * (j + 1) ** 3 for j in range(n)],
    }[history]
    ws = [w / MSS for w, _ in wr]
    rtts = [r for _, r in wr]
    rate = sum(w / r for w, r in zip(ws, rtts, strict=True))
    acked = 2 * MSS
    for k in range(n):
        g, ms = group_of(Olia, wr)
        for m, d in zip(ms, ls0, strict=True):
            m.acked_total = d
        ls = list(ls0)
        ls[k] += acked
        eps = olia_eps(ws, rtts, ls, k)
        per_seg = (ws[k] / rtts[k] ** 2) / rate**2 + eps / ws[k]
        assert grow(ms[k], acked) == pytest.approx(acked * per_seg, rel=1e-12)


def test_olia_best_path_by_inter_loss_distance():
    # path 0: small window but a long distance between losses on a short RTT: the best path,
    # not in M -> eps = +1/(2*1); path 1 has the largest window -> eps = -1/(2*1)
    g, (a, b) = group_of(Olia, [(10 * MSS, 0.02), (30 * MSS, 0.04)])
    a.loss1, a.loss2, a.acked_total = 0, 500_000, 900_000  # l = max(400k, 500k) = 500k
    b.loss1, b.loss2, b.acked_total = 0, 100_000, 150_000  # l = 100k
    assert 500_000 / 0.02**2 > 100_000 / 0.04**2
    assert a.epsilon() == pytest.approx(0.5) and b.epsilon() == pytest.approx(-0.5)
    # the best path is the largest window: B\M empty, no epsilon
    g, (a, b) = group_of(Olia, [(10 * MSS, 0.02), (30 * MSS, 0.04)])
    b.loss1, b.loss2, b.acked_total = 0, 900_000, 1_000_000
    assert a.epsilon() == 0.0 and b.epsilon() == 0.0


def test_olia_loss_moves_the_history_and_halves():
    g, (m,) = group_of(Olia, [(20 * MSS, 0.05)])
    m.acked_total = 300_000
    m.enter_recovery(20 * MSS, 1.0)
    assert (m.loss1, m.loss2) == (0, 300_000) and m.cwnd == 10 * MSS
    m.acked_total = 350_000
    assert m.inter_loss == 300_000
    m.on_rto(10 * MSS, 2.0)
    assert (m.loss1, m.loss2) == (300_000, 350_000) and m.cwnd == MSS


@pytest.mark.parametrize("wr", CASES)
def test_balia_increase_and_decrease(wr):
    xs = [(w / MSS) / r for w, r in wr]
    for k in range(len(wr)):
        g, ms = group_of(Balia, wr)
        m = ms[k]
        w, r = wr[k]
        x_r = xs[k]
        a = max(xs) / x_r
        per_seg = (x_r / r) / sum(xs) ** 2 * (1 + a) / 2 * (4 + a) / 5
        assert grow(m, MSS) == pytest.approx(MSS * per_seg, rel=1e-12)
    for k in range(len(wr)):
        g, ms = group_of(Balia, wr)
        m = ms[k]
        w = wr[k][0]
        a = max(xs) / xs[k]
        m.enter_recovery(w, 1.0)
        assert m.ssthresh == max(int(w - w / 2 * min(a, 1.5)), 2 * MSS)
        assert m.cwnd == m.ssthresh


def test_one_subflow_every_coupled_controller_is_reno():
    for cls in (Lia, Olia, Balia):
        g, (m,) = group_of(cls, [(16 * MSS, 0.03)])
        r = Reno(MSS)
        r.cwnd, r.ssthresh = 16 * MSS, 2 * MSS
        m.enter_recovery(16 * MSS, 1.0)
        r.enter_recovery(16 * MSS, 1.0)
        assert m.cwnd == r.cwnd == 8 * MSS
        assert grow(m, MSS) == pytest.approx(MSS * MSS / (8 * MSS))


def test_slow_start_is_reno_abc():
    g, (m,) = group_of(Lia, [(10 * MSS, 0.03)], ssthresh=1 << 30)
    m.on_ack(5 * MSS, 0.03, 1.0)
    assert m.cwnd == 12 * MSS


def test_group_members_come_and_go():
    g = Lia()
    a = g.factory(536)  # the TCP core's first guess, replaced once the MSS is known
    del a
    gc.collect()
    b, c = g.factory(MSS), g.factory(MSS)
    assert list(g) == [b, c]
    g.discard(b)
    assert list(g) == [c]
    # a member without an RTT sample yet is not among the peers
    c.rtt = 0.05
    d = g.factory(MSS)
    assert d.peers() == [c, d] and c.peers() == [c]


def test_make_cc_names_and_files(tmp_path):
    assert make_cc("uncoupled") == (None, None)
    assert make_cc("reno") == (None, "reno")
    g, f = make_cc("lia")
    assert isinstance(g, Lia) and f == g.factory
    assert make_cc("lia")[0] is not g  # one group per connection
    p = tmp_path / "half.py"
    p.write_text(
        textwrap.dedent(
            """
            from mptcp_impl.mptcp.coupled import CcGroup, Member

            class Half(CcGroup):
                class member(Member):
                    def increase(self, acked):
                        return 0.5 * acked * self.mss / self.cwnd

            class Plain:
                def __init__(self, mss):
                    self.cwnd, self.ssthresh = 10 * mss, 1 << 30
            """
        )
    )
    g, f = make_cc(f"{p}:Half")
    assert isinstance(g, CcGroup)
    m = f(MSS)
    assert isinstance(m, Member)
    m.cwnd, m.ssthresh, m._cwnd_f = 10 * MSS, MSS, 10.0 * MSS
    m.on_ack(MSS, 0.01, 0.0)
    assert m._cwnd_f == pytest.approx(10 * MSS + 50)
    g, f = make_cc(f"{p}:Plain")
    assert g is None and f(MSS).cwnd == 10 * MSS
    with pytest.raises(ValueError, match="unknown congestion control"):
        make_cc("vegas")
