"""The NTP-style offset arithmetic (sans-I/O): offset, its bound, the best of several."""

import pytest

from testbed.clock import ClockSample, best_offset, exceeds_rtt


def test_a_symmetric_exchange_gives_the_offset_within_its_bound():
    s = ClockSample(t0=100.0, remote=105.010, t1=100.020)  # remote 5 s ahead, 20 ms round trip
    assert s.offset_s == pytest.approx(5.0)
    assert s.uncertainty_s == pytest.approx(0.010)


def test_the_shortest_round_trip_wins_even_when_others_look_closer_to_zero():
    slow = ClockSample(t0=0.0, remote=0.050, t1=0.200)  # asymmetric: offset -0.05 +- 0.1
    fast = ClockSample(t0=1.0, remote=1.0035, t1=1.002)  # 2 ms round trip: +0.0025 +- 0.001
    o = best_offset([slow, fast])
    assert o.offset_s == pytest.approx(0.0025) and o.uncertainty_s == pytest.approx(0.001)
    assert o.samples == 2 and o.measured_at == 1.0
    with pytest.raises(ValueError):
        best_offset([])


def test_an_offset_beyond_the_smallest_rtt_is_flagged():
    assert exceeds_rtt({"offset_s": -0.030}, 0.020)
    assert not exceeds_rtt({"offset_s": 0.010}, 0.020)
    assert not exceeds_rtt(None, 0.020) and not exceeds_rtt({"offset_s": 1.0}, None)
