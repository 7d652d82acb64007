"""Scheduler rules, one by one, on hand-made subflow views (the numbers and the expected
decision are computed here from the published rules), and the plug-in loader."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import pytest

from mptcp_impl.mptcp import plugins
from mptcp_impl.mptcp.sched import (
    SCHEDULERS,
    BlestScheduler,
    Candidates,
    DefaultScheduler,
    EcfScheduler,
    MinRttScheduler,
    RedundantScheduler,
    RoundRobinScheduler,
    as_list,
    make_scheduler,
)

MSS = 1000


@dataclass(eq=False)
class V:
    """A subflow as a scheduler sees it."""

    name: str
    srtt: float | None = 0.01
    cwnd: int = 10 * MSS
    in_flight: int = 0
    queued: int = 0
    backup: bool = False
    stale: bool = False
    rttvar: float | None = 0.001
    ssthresh: int = 5 * MSS
    mss: int = MSS

    @property
    def space(self) -> int:
        return self.cwnd - self.in_flight - self.queued

    @property
    def pacing_rate(self) -> float:
        return 1.2 * self.cwnd / (self.srtt or 0.1)


def cands(*subs: V, waiting: int = 0, window: int = 1 << 20, now: float = 0.0) -> Candidates:
    return Candidates(
        [s for s in subs if s.space > 0], list(subs), waiting, window, window, False, now
    )


def test_as_list():
    a, b = V("a"), V("b")
    assert as_list(None) == [] and as_list(a) == [a] and as_list([a, None, b]) == [a, b]
    assert as_list((a,)) == [a]


def test_candidates_is_a_list_with_context():
    a, b = V("a"), V("b", cwnd=0)
    c = cands(a, b, waiting=7, window=9)
    assert list(c) == [a] and c.all == [a, b] and c.waiting == 7 and c.window == 9


def test_default_lowest_linger_time_backup_only_when_alone():
    fast_busy = V("f", srtt=0.01, cwnd=10 * MSS, in_flight=8 * MSS)  # 8000/(1e6) = 8 ms
    slow_idle = V("s", srtt=0.05, cwnd=10 * MSS, in_flight=1 * MSS)  # 1000/(2e5) = 5 ms
    assert DefaultScheduler().pick(cands(fast_busy, slow_idle)) is slow_idle
    bk = V("b", backup=True)
    assert DefaultScheduler().pick(cands(fast_busy, bk)) is fast_busy
    assert DefaultScheduler().pick([bk]) is bk


def test_minrtt_lowest_rtt_waits_for_full_cwnd_backup_only_without_active():
    a = V("a", srtt=0.03)
    b = V("b", srtt=0.01, in_flight=4 * MSS)
    assert MinRttScheduler().pick(cands(a, b)) is b
    full = V("full", srtt=0.01, in_flight=10 * MSS)  # no room: not a candidate
    assert MinRttScheduler().pick(cands(a, full)) is a
    bk = V("bk", srtt=0.001, backup=True)
    assert MinRttScheduler().pick(cands(a, bk)) is a
    # a non-backup subflow exists but is full: wait rather than use the backup (v0)
    assert MinRttScheduler().pick(cands(full, bk)) is None
    assert MinRttScheduler().pick(cands(bk, V("bk2", srtt=0.1, backup=True))) is bk
    stale = V("st", srtt=0.001, stale=True)
    assert MinRttScheduler().pick(cands(a, stale)) is a


def test_roundrobin_cycles_and_skips_full():
    a, b, c = V("a"), V("b"), V("c")
    rr = RoundRobinScheduler()
    got = [rr.pick(cands(a, b, c)).name for _ in range(6)]
    assert got == ["a", "b", "c", "a", "b", "c"]
    b.in_flight = b.cwnd  # b full: skipped
    assert [rr.pick(cands(a, b, c)).name for _ in range(3)] == ["a", "c", "a"]


def test_redundant_fastest_with_room_first_then_every_other_active():
    a, b = V("a", srtt=0.05), V("b", srtt=0.01)
    bk = V("bk", backup=True)
    assert RedundantScheduler().pick(cands(a, b, bk)) == [b, a]
    a.in_flight = a.cwnd  # the slow one has no room: its copy waits (the connection's job)
    assert RedundantScheduler().pick(cands(a, b, bk)) == [b, a]
    a.in_flight, b.in_flight = 0, b.cwnd  # the fast one has no room: the slow one leads
    assert RedundantScheduler().pick(cands(a, b, bk)) == [a, b]
    a.in_flight = a.cwnd  # none has room: wait
    assert RedundantScheduler().pick(cands(a, b, bk)) is None
    assert RedundantScheduler().pick(cands(bk)) == [bk]


def blest_x(lam: float, fast: V, slow_rtt: float) -> float:
    """Ferlin et al.: X = lambda * MSS_F * (CWND_F + (n-1)/2) * n, n = RTT_S/RTT_F + 1."""
    n = int(slow_rtt / fast.srtt) + 1
    return (
        lam * fast.mss * (max(fast.cwnd / fast.mss, fast.ssthresh / fast.mss + 1) + (n - 1) / 2) * n
    )


def test_blest_waits_when_fast_flow_would_fill_the_window():
    fast = V("f", srtt=0.01, cwnd=10 * MSS, in_flight=10 * MSS)  # full: min-RTT picks slow
    slow = V("s", srtt=0.1, cwnd=10 * MSS, in_flight=2 * MSS)
    x = blest_x(1.2, fast, 0.1)  # n = 11: 1.2 * 1000 * 20 * 11 = 264 kB
    assert x == pytest.approx(1.2 * 1000 * (10 + 5) * 11)
    need = slow.in_flight + slow.queued + MSS
    # window just too small: wait
    b = BlestScheduler()
    assert b.pick(cands(fast, slow, window=int(x) + need - 1)) is None and b.waits == 1
    # window big enough: send on the slow subflow
    b = BlestScheduler()
    assert b.pick(cands(fast, slow, window=int(x) + need + 1)) is slow
    # the fast subflow has room: BLEST is min-RTT
    fast.in_flight = 0
    assert BlestScheduler().pick(cands(fast, slow, window=0)) is fast


def test_blest_slow_start_estimate_and_lambda_moves():
    fast = V("f", srtt=0.01, cwnd=10 * MSS, in_flight=10 * MSS, ssthresh=1 << 30)
    b = BlestScheduler()
    # initial slow start: cwnd doubles each of n = 3 rounds: 10 * (2^3 - 1) segments
    assert b.fast_bytes(fast, 0.025) == pytest.approx(1.2 * 70 * MSS)
    slow = V("s", srtt=0.1, cwnd=10 * MSS)
    b.pick(cands(fast, slow, now=0.0))
    b.pick(cands(fast, slow, now=0.2))  # one slow RTT later, no retransmission: -0.01
    assert b.lam == pytest.approx(1.19)
    b.on_opportunistic()
    b.pick(cands(fast, slow, now=0.4))  # +0.04
    assert b.lam == pytest.approx(1.23)


def ecf_waits(fast: V, slow: V, k: int, waiting: int) -> bool:
    """Lim et al.'s inequalities, written out."""
    delta = max(fast.rttvar, slow.rttvar)
    first = fast.srtt * (1 + max(k, fast.cwnd) / fast.cwnd) < (1 + waiting * 0.25) * (
        slow.srtt + delta
    )
    second = slow.srtt * max(k, slow.cwnd) / slow.cwnd >= 2 * fast.srtt + delta
    return first and second


@pytest.mark.parametrize(
    "k, slow_rtt",
    [(5_000, 0.1), (50_000, 0.1), (500_000, 0.1), (5_000, 0.012), (200_000, 0.03)],
)
def test_ecf_decision_matches_the_inequalities(k, slow_rtt):
    fast = V("f", srtt=0.01, cwnd=20 * MSS, in_flight=20 * MSS, rttvar=0.002)
    slow = V("s", srtt=slow_rtt, cwnd=10 * MSS, rttvar=0.005)
    e = EcfScheduler()
    got = e.pick(cands(fast, slow, waiting=k))
    assert (got is None) == ecf_waits(fast, slow, k, 0)
    if got is None:
        assert e.waiting == 1
    else:
        assert got is slow and e.waiting == 0


def test_ecf_hysteresis_after_waiting():
    fast = V("f", srtt=0.01, cwnd=10 * MSS, in_flight=10 * MSS, rttvar=0.0)
    # k such that the first inequality fails with waiting = 0 but holds with waiting = 1
    slow = V("s", srtt=0.035, cwnd=10 * MSS, rttvar=0.0)
    k = 25_000  # 0.01 * (1 + 2.5) = 0.035: not < 0.035; with beta: < 0.04375
    assert not ecf_waits(fast, slow, k, 0) and ecf_waits(fast, slow, k, 1)
    e = EcfScheduler()
    assert e.pick(cands(fast, slow, waiting=k)) is slow
    e.waiting = 1
    assert e.pick(cands(fast, slow, waiting=k)) is None


def test_registry_and_loader(tmp_path):
    assert set(SCHEDULERS) == {"default", "minrtt", "roundrobin", "redundant", "blest", "ecf"}
    for name in SCHEDULERS:
        assert hasattr(make_scheduler(name), "pick")
    assert make_scheduler("roundrobin") is not make_scheduler("roundrobin")  # per connection
    f = tmp_path / "mine.py"
    f.write_text(
        textwrap.dedent(
            """
            class Slowest:
                def pick(self, candidates):
                    return max(candidates, key=lambda s: s.srtt or 0.0, default=None)
            """
        )
    )
    s = make_scheduler(f"{f}:Slowest")
    a, b = V("a", srtt=0.01), V("b", srtt=0.2)
    assert s.pick(cands(a, b)) is b
    with pytest.raises(ValueError, match="unknown scheduler 'nope'"):
        make_scheduler("nope")
    with pytest.raises(ValueError, match="has no 'Missing'"):
        make_scheduler(f"{f}:Missing")
    with pytest.raises(ValueError, match="no such file"):
        make_scheduler(f"{tmp_path}/absent.py:X")
    bad = tmp_path / "bad.py"
    bad.write_text("class NoPick:\n    pass\n")
    with pytest.raises(ValueError, match="lacks the scheduler interface"):
        make_scheduler(f"{bad}:NoPick")
    with pytest.raises(ValueError, match="unknown scheduler"):
        plugins.check("x", SCHEDULERS, "scheduler")
