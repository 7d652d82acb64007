"""Randomised end-to-end runs: random configs on both sides, loss, reordering and duplication
both ways, bidirectional data, then both close. Every run must deliver exactly the bytes sent
and end with both sides CLOSED. Seeds are fixed so a failure is reproducible."""

import os
import random

import pytest
from tcp_wire import Wire

from mptcp_impl.tcp import Closed, Reset, TcpConfig, TcpState

S = TcpState


def random_config(rnd: random.Random) -> TcpConfig:
    return TcpConfig(
        sack=rnd.random() < 0.7,
        timestamps=rnd.random() < 0.7,
        window_scale=rnd.random() < 0.8,
        cc=rnd.choice(["reno", "cubic"]),
        rcv_buf=rnd.choice([8000, 65535, 300_000, 4 << 20]),
        snd_buf=rnd.choice([20_000, 1 << 20]),
        mss=rnd.choice([536, 1000, 1460]),
        max_segment_payload=rnd.choice([None, None, 20_000]),
        isn=rnd.choice([None, 2**32 - rnd.randrange(1, 100_000)]),
        # longer than a few backed-off RTOs: with 15% loss the peer's FIN retransmission may
        # otherwise arrive after TIME-WAIT ended and draw an RST (correct, but not a clean close)
        time_wait=5.0,
    )


@pytest.mark.parametrize("seed", range(12))
def test_random_network_and_configs(seed):
    rnd = random.Random(seed)
    w = Wire(
        random_config(rnd),
        random_config(rnd),
        delay=rnd.choice([0.001, 0.01, 0.05]),
        rate=rnd.choice([None, 1e6, 12.5e6]),
        queue_limit=rnd.choice([10, 50, 1000]),
    )
    loss = rnd.choice([0, 0.01, 0.05, 0.15])
    reorder = rnd.choice([0, 0.05, 0.2])
    dup = rnd.choice([0, 0.02])

    def f(_w, _d, seg, i):
        if rnd.random() < loss:
            return []
        extra = [rnd.random() * 0.02 if rnd.random() < reorder else 0.0]
        if rnd.random() < dup:
            extra.append(0.003)
        return extra

    w.filters["ab"] = w.filters["ba"] = f
    w.keep_log = False
    w.connect()
    da = os.urandom(rnd.choice([0, 1, 5000, 200_000, 400_000]))
    db = os.urandom(rnd.choice([0, 1, 5000, 100_000]))
    w.write("a", da, close=True)
    w.write("b", db, close=True)
    w.run(cond=lambda: w.a.state is S.CLOSED and w.b.state is S.CLOSED)
    assert bytes(w.received["b"]) == da and bytes(w.received["a"]) == db
    for side in "ab":
        assert w.events[side][-1] == Closed()
        assert not any(isinstance(e, Reset) for e in w.events[side])
