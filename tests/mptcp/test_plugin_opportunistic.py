"""Opportunistic retransmission and penalisation (Raiciu et al., NSDI 2012; v0's rule) on a
stand-in connection: who sends the bytes at the DATA_ACK again, and whose cwnd is halved."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from mptcp_impl.mptcp.mib import Mib
from mptcp_impl.mptcp.opportunistic import opportunistic_retransmit
from mptcp_impl.tcp.cc import Reno

MSS = 1000


@dataclass(eq=False)
class Sub:
    name: str
    srtt: float
    cwnd_segs: int = 20
    in_flight: int = 0
    stale: bool = False
    in_recovery: bool = False
    pushed: list = field(default_factory=list)
    reinjected: int = 0

    def __post_init__(self) -> None:
        cc = Reno(MSS)
        cc.cwnd, cc.ssthresh = self.cwnd_segs * MSS, 10 * MSS
        self.tcp = SimpleNamespace(cc=cc, mss=MSS, in_recovery=self.in_recovery)
        self.mss = MSS

    @property
    def cwnd(self) -> int:
        return self.tcp.cc.cwnd

    @property
    def space(self) -> int:
        return self.cwnd - self.in_flight

    def push(self, dsn: int, data: bytes) -> int:
        self.pushed.append((dsn, len(data)))
        return len(data)


def conn(chunks, mode="penalise"):
    c = SimpleNamespace(
        snd_una=1000,
        _chunks=deque(chunks),
        _sbuf=bytearray(200_000),
        config=SimpleNamespace(opportunistic=mode, max_mapping=64_000),
        mib=Mib(),
        sched=SimpleNamespace(),
    )
    c._add_chunk = lambda dsn, n, s: c._chunks.append([dsn, n, s, False])
    return c


def test_fast_subflow_resends_what_a_4x_slower_one_holds_and_penalises_it():
    fast, slow = Sub("fast", 0.01), Sub("slow", 0.2, in_flight=20 * MSS)
    c = conn([[1000, 30_000, slow, False], [31_000, 10_000, fast, False]])
    n = opportunistic_retransmit(c, [fast, slow], now=5.0)
    assert n == 20 * MSS  # the fast one's room
    assert fast.pushed == [(1000, 20_000)] and c._chunks[-1] == [1000, 20_000, fast, False]
    assert c.mib["MPTCPRetrans"] == 1 and c.ortx_bytes == n
    # penalised: cwnd halved, ssthresh to it (it was in congestion avoidance)
    assert slow.cwnd == 10 * MSS and slow.tcp.cc.ssthresh == 10 * MSS
    assert c.ortx_penalties == 1
    # again within the fast subflow's RTT: no second penalty (and the fast one holds it now)
    fast.in_flight = 0
    slow.tcp.cc.cwnd = 20 * MSS
    opportunistic_retransmit(c, [fast, slow], now=5.005)
    assert slow.cwnd == 20 * MSS


@pytest.mark.parametrize(
    "slow_rtt, slow_cwnd, expect",
    [
        (0.05, 20, True),  # RTT_slow > 4 * RTT_fast: resend
        (0.04, 20, False),  # 4 * RTT_fast >= RTT_slow: not worth it
        (0.03, 4, True),  # a tiny cwnd (<= 4 segments) on the holder: always
    ],
)
def test_v0_rule_when_to_resend(slow_rtt, slow_cwnd, expect):
    fast, slow = Sub("fast", 0.01), Sub("slow", slow_rtt, cwnd_segs=slow_cwnd)
    c = conn([[1000, 5_000, slow, False]], mode="retransmit")
    assert (opportunistic_retransmit(c, [fast, slow], now=1.0) > 0) == expect
    assert slow.cwnd == slow_cwnd * MSS  # "retransmit": never penalised


def test_nothing_when_the_fast_one_already_holds_it_or_has_no_room():
    fast, slow = Sub("fast", 0.01), Sub("slow", 0.2)
    c = conn([[1000, 5_000, fast, False], [1000, 5_000, slow, True]])
    assert opportunistic_retransmit(c, [fast, slow], now=1.0) == 0
    full = Sub("full", 0.01, in_flight=20 * MSS)
    c = conn([[1000, 5_000, slow, False]])
    assert opportunistic_retransmit(c, [full, slow], now=1.0) == 0
    # a holder in loss recovery is not penalised
    fast, slow = Sub("fast", 0.01), Sub("slow", 0.2, in_recovery=True)
    c = conn([[1000, 5_000, slow, False]])
    assert opportunistic_retransmit(c, [fast, slow], now=1.0) == 5_000
    assert slow.cwnd == 20 * MSS
