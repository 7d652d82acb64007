"""The metric definitions on small hand-made tables: the numbers are known in advance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.metrics import (
    aggregation_benefit,
    connection_goodput,
    failover,
    new_bytes,
    reordering_delay,
    steady_goodput,
)


def test_one_aggregation_benefit_for_runner_and_analysis():
    """Both compute it with analysis.definitions (its edge cases: test_analysis_definitions)."""
    import experiments.metrics
    from analysis import definitions

    assert aggregation_benefit is definitions.aggregation_benefit
    assert experiments.metrics.aggregation_benefit is definitions.aggregation_benefit
    assert aggregation_benefit(25, [20, 10]) == 0.5


def test_new_bytes_is_byte_exact_across_different_cuts():
    s = np.array([0, 10, 5, 30, 20, 0, 25, 100])
    e = np.array([10, 20, 15, 40, 30, 50, 35, 110])
    assert new_bytes(s, e).tolist() == [10, 10, 0, 10, 10, 10, 0, 10]


def _acks(rate_bps: float, t: np.ndarray, stall: tuple[float, float]) -> pd.DataFrame:
    """A receiver acking at a constant rate, nothing acked inside the stall."""
    keep = (t < stall[0]) | (t >= stall[1])
    level = np.cumsum(np.where(keep, rate_bps / 8 * 0.01, 0)).astype(np.uint64)
    return pd.DataFrame({"time": t[keep], "data_ack": level[keep] + np.uint64(1000)})


def test_failover_gap_and_regain():
    t = np.arange(0, 10, 0.01)
    acks = _acks(8e6, t, (5.0, 6.0))
    rx = pd.DataFrame(
        {
            "time": t[t >= 6.0],
            "subflow": 1,
            "dsn": (np.arange((t >= 6.0).sum()) * 10_000 + 10**9).astype(np.uint64),
            "payload_len": 10_000,
        }
    )
    g = connection_goodput(acks, 0.0, 10.0)
    assert g["goodput_bps"].iloc[10:40].round().eq(8e6).all()
    fo = failover(rx, acks, event_time=5.0)
    assert fo.gap_s == pytest.approx(1.01, abs=0.011) and fo.resumed
    assert fo.pre_goodput_bps == pytest.approx(8e6, rel=0.01)
    # back at full rate at 6.0: the 5-bin (0.5 s) window is full of it at 6.5
    assert fo.regain90_s == pytest.approx(1.5, abs=0.11)
    assert fo.first_new_data_s == pytest.approx(1.0, abs=0.011) and fo.surviving_subflows == [1]


def test_a_backlog_released_at_once_is_not_a_regain():
    """8 Mbit/s, a cut at 5 s; from 6 s one path carries 3 Mbit/s, and at 6.0 the data held
    out of order behind the hole (2 MB) is acknowledged at once: that 100 ms bin alone lifts a
    0.5 s window's mean over 90% of 8 Mbit/s, but the rate is not back."""
    t = np.arange(0, 10, 0.01)
    keep = (t < 5.0) | (t >= 6.0)
    step = np.where(t < 5.0, 8e6 / 8 * 0.01, np.where(t >= 6.0, 3e6 / 8 * 0.01, 0.0))
    step[np.searchsorted(t, 6.0)] += 2_000_000
    level = np.cumsum(step).astype(np.uint64) + np.uint64(1000)
    acks = pd.DataFrame({"time": t[keep], "data_ack": level[keep]})
    g = connection_goodput(acks, 0.0, 10.0)
    window = g["goodput_bps"].rolling(5).mean()[g["t"] > 5.0]
    assert window.max() > 0.9 * 8e6  # what a mean alone would call a regain
    rx = pd.DataFrame(
        {"time": [6.0], "subflow": [1], "dsn": np.array([10**9], np.uint64), "payload_len": [1]}
    )
    fo = failover(rx, acks, event_time=5.0)
    assert fo.resumed and fo.regain90_s is None, fo


def test_failover_that_never_resumes():
    t = np.arange(0, 10, 0.01)
    acks = _acks(8e6, t, (5.0, 99.0))
    rx = pd.DataFrame(
        {"time": [9.9], "subflow": [0], "dsn": np.array([1], np.uint64), "payload_len": [1]}
    )
    fo = failover(rx, acks, event_time=5.0)
    assert not fo.resumed and fo.regain90_s is None and fo.gap_s == pytest.approx(4.9, abs=0.02)


def test_reordering_delay_waits_for_lower_dsns():
    rx = pd.DataFrame(
        {
            "time": [0.0, 0.1, 0.2, 0.5],
            "subflow": [0, 1, 1, 0],
            "dsn": np.array([0, 200, 300, 100], np.uint64),
            "payload_len": [100, 100, 100, 100],
        }
    )
    d = reordering_delay(rx).set_index("time")["delay_s"]
    assert d.round(6).tolist() == [0.0, 0.4, 0.3, 0.0]


def test_reinjected_bytes_are_ranges_sent_on_two_subflows():
    from analysis.metrics import Vantage, reinjections

    df = pd.DataFrame(
        {
            "conn": 0,
            "role": "client",
            "host": "client",
            "time": [0.0, 0.1, 0.2, 0.3, 0.4],
            "subflow": [0, 0, 1, 1, 0],
            "dsn": pd.array([1000, 1100, 1050, 1200, 1000], dtype="UInt64"),
            "payload_len": [100, 100, 100, 100, 100],  # the last one: a retransmission on sf0
        }
    )
    r = reinjections(df, Vantage(0, "client", "client", "server"))
    # sf1's [1050, 1150) repeats 100 bytes sf0 carried; sf0's own retransmission is not one
    assert (r.bytes, r.total_data_bytes, r.by_subflow) == (100, 300, {0: 0, 1: 100})


def test_steady_goodput_between_two_times():
    t = np.arange(0, 10, 0.01)
    acks = _acks(8e6, t, (5.0, 6.0))
    assert steady_goodput(acks, 1.0, 4.0) == pytest.approx(8e6, rel=0.01)
    assert steady_goodput(acks, 4.5, 6.5) == pytest.approx(4e6, rel=0.02)  # half of it stalled
    assert steady_goodput(acks, 3.0, 3.0) is None
