"""analysis.definitions: the metric definitions the runner and the analysis share, on series
whose answers are known in advance."""

from __future__ import annotations

import pytest

from analysis import definitions as D


def test_aggregation_benefit_follows_reference():
    assert D.aggregation_benefit(30, [20, 10]) == 1.0
    assert D.aggregation_benefit(25, [20, 10]) == 0.5
    assert D.aggregation_benefit(20, [20, 10]) == 0.0
    assert D.aggregation_benefit(10, [20, 10]) == -0.5
    assert D.aggregation_benefit(15, [10, 10]) == 0.5  # equal paths


def test_aggregation_benefit_edge_cases():
    # not clamped: more than the stated capacities says they are understated
    assert D.aggregation_benefit(33, [20, 10]) == pytest.approx(1.3)
    assert D.aggregation_benefit(0, [20, 10]) == -1.0  # nothing delivered: the worst
    assert D.aggregation_benefit(0.0, [20, 10]) == -1.0
    # undefined: one path (nothing to aggregate), paths without a capacity, unknown goodput
    assert D.aggregation_benefit(20, [20]) is None
    assert D.aggregation_benefit(25, [20, 0]) is None
    assert D.aggregation_benefit(25, [20, None]) is None
    assert D.aggregation_benefit(25, []) is None
    assert D.aggregation_benefit(None, [20, 10]) is None
    assert D.aggregation_benefit(float("nan"), [20, 10]) is None
    assert D.aggregation_benefit(25, [20, 0, 10]) == 0.5
    with pytest.raises(ValueError):
        D.aggregation_benefit(-1, [20, 10])


def _progress(pieces, step=0.01):
    """Cumulative bytes every 10 ms from (until_t, rate_bps) pieces starting at 0; a rate of
    ("jump", n) adds n bytes at once (a backlog released after a stall)."""
    times, levels, t, lvl = [], [], 0.0, 0.0
    for until, rate in pieces:
        if isinstance(rate, tuple):
            lvl += rate[1]
            continue
        while t < until - 1e-9:
            t = round(t + step, 6)
            lvl += rate / 8 * step
            times.append(t)
            levels.append(lvl)
    return times, levels


def test_recovery_efficiency_on_a_known_outage():
    # 30 Mbit/s, the 20 Mbit/s path cut at 5 s: nothing until 6 s, then a 1 MB backlog at
    # once and 10 Mbit/s (all of the surviving path) until 20 s
    times, levels = _progress([(5, 30e6), (6, 0), (6, ("jump", 1_000_000)), (20, 10e6)])
    assert D.recovery_time(times, levels, 5.0, 10e6) == pytest.approx(1.0, abs=0.011)
    got, eff = D.failover_efficiency(times, levels, 5.0, 10e6)
    # 1 MB backlog + 2 s at 10 Mbit/s, against 3 s at 10 Mbit/s
    assert got == pytest.approx(1_000_000 + 2_500_000, abs=1300)
    assert eff == pytest.approx(3.5e6 / 3.75e6, abs=0.001)
    # 8 Mbit/s afterwards is below 90% of 10: never recovered; 9.5 is above
    times, levels = _progress([(5, 30e6), (6, 0), (20, 8e6)])
    assert D.recovery_time(times, levels, 5.0, 10e6) is None
    times, levels = _progress([(5, 30e6), (6.5, 0), (20, 9.5e6)])
    assert D.recovery_time(times, levels, 5.0, 10e6) == pytest.approx(1.5, abs=0.011)
    # bursts with stalls between (0.3 s of each) do not hold the rate; steady from 7.7 s does
    bursty = [(5, 30e6)] + [
        (5 + 0.6 * k + d, r) for k in range(5) for d, r in ((0.3, 0), (0.6, 10e6))
    ]
    times, levels = _progress(bursty + [(20, 10e6)])
    assert D.recovery_time(times, levels, 5.0, 10e6) == pytest.approx(2.7, abs=0.011)
    assert D.recovery_time(times, levels, 5.0, None) is None  # capacity unknown
    assert D.failover_efficiency(times, levels, 5.0, None)[1] is None


def test_path_return():
    # sf0 cut at 5 s (in flight until 5.1), sf1 carries on; the path is back at 15 s
    arr = [(t / 10, 0, 1000) for t in range(0, 52)] + [(t / 10, 1, 500) for t in range(0, 300)]
    assert D.path_return(arr, 5.0, 15.0) == (None, [1], 0)  # never used again
    back = arr + [(16.25, 0, 1000), (16.5, 0, 1000), (17.0, 2, 700)]
    assert D.path_return(back, 5.0, 15.0) == (1.25, [1], 2700)
    # plain TCP: the only path was cut, its one subflow is the one coming back
    tcp = [(t / 10, 0, 1000) for t in range(0, 51)] + [(18.0, 0, 1000)]
    assert D.path_return(tcp, 5.0, 15.0) == (3.0, [], 1000)


def test_surviving_capacity():
    paths = [
        {"name": "wifi", "links": ["wifi", "wifi-core", "server"], "rate_mbit": 20},
        {"name": "lte", "links": ["lte", "lte-core", "server"], "rate_mbit": 10},
    ]
    assert D.surviving_capacity_mbit(paths, "wifi") == 10
    assert D.surviving_capacity_mbit(paths, "lte") == 20
    assert D.surviving_capacity_mbit(paths, "server") == 0
    assert D.surviving_capacity_mbit([], "wifi") is None


def test_recovery_not_before_progress_resumed():
    # what was in flight at the cut (5 s) arrives at 30 Mbit/s until 5.8 s, then nothing until
    # 7.4 s, then 10 Mbit/s: the burst alone fills every window from the cut (recovery 0 by the
    # event alone, as a CI-like run measured); from the pause's end it is 2.4 s
    times, levels = _progress([(5, 30e6), (5.8, 30e6), (7.4, 0), (20, 10e6)])
    assert D.recovery_time(times, levels, 5.0, 10e6) == 0.0
    assert D.recovery_time(times, levels, 5.0, 10e6, resumed_t=7.4) == pytest.approx(2.4, abs=0.011)
    assert D.recovery_time(times, levels, 5.0, 10e6, resumed_t=4.0) == 0.0
