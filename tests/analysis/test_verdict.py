"""The one rule the campaign reports judge claims by (analysis/verdict.py): known inputs, known
intervals and verdicts, computed by hand beside each case."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.verdict import (
    AGREES,
    DISAGREES,
    INCONCLUSIVE,
    NOT_MEASURED,
    combine,
    judge,
    t_cdf,
    t_quantile,
    welch,
)


@pytest.mark.parametrize(
    "df, q",  # tabled two-sided 95% quantiles t(0.975, df)
    [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (10, 2.2281), (30, 2.0423)],
)
def test_t_quantile_matches_the_table(df, q):
    assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-4)
    assert t_quantile(0.025, df) == pytest.approx(-q, abs=1e-4)


def test_t_quantile_at_fractional_df_against_an_integral_of_the_density():
    """Welch's degrees of freedom are fractional: check the quantile by integrating the t
    density numerically (independent of the incomplete beta used by t_cdf)."""
    df = 5.882352941176471
    q = t_quantile(0.975, df)
    x = np.linspace(0.0, q, 400_001)
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    pdf = c * (1 + x * x / df) ** (-(df + 1) / 2)
    assert np.trapezoid(pdf, x) == pytest.approx(0.475, abs=1e-9)
    assert t_cdf(q, df) == pytest.approx(0.975, abs=1e-12)


def test_welch_interval_by_hand():
    """a = 1..5 (mean 3, var 2.5), b = 2,4,..,10 (mean 6, var 10): se^2 = 2.5/5 + 10/5 = 2.5,
    df = 2.5^2 / (0.5^2/4 + 2^2/4) = 5.8824, t(0.975, 5.8824) = 2.4588, half-width
    2.4588 * sqrt(2.5) = 3.8877: -3 [-6.888, 0.888] (R's t.test gives the same)."""
    iv = welch([1, 2, 3, 4, 5], [2, 4, 6, 8, 10])
    assert iv.estimate == -3
    assert iv.df == pytest.approx(5.882353, abs=1e-6)
    assert iv.low == pytest.approx(-6.887742, abs=1e-5)
    assert iv.high == pytest.approx(0.887742, abs=1e-5)
    assert iv.words(" ms") == "-3 [-6.89, 0.888] ms"


def test_one_sample_interval_by_hand():
    """0.1, 0.2, 0.3: mean 0.2, sd 0.1, half-width t(0.975, 2) * 0.1 / sqrt(3) = 0.24841."""
    iv = welch([0.1, 0.2, 0.3], None)
    assert iv.estimate == pytest.approx(0.2)
    assert (iv.low, iv.high) == (
        pytest.approx(-0.04841, abs=1e-5),
        pytest.approx(0.44841, abs=1e-5),
    )
    assert iv.n_b is None


@pytest.mark.parametrize(
    "a, b, side, margin, outcome",
    [
        ([1, 1.1, 0.9], [2, 2.1, 1.9], "<", 0.0, AGREES),  # -1 [-1.23, -0.77]
        ([1, 1.1, 0.9], [2, 2.1, 1.9], ">", 0.0, DISAGREES),
        ([1, 2, 3, 4, 5], [2, 4, 6, 8, 10], "<", 0.0, INCONCLUSIVE),  # contains 0
        # equality is not "drops": identical groups are inconclusive for a strict ordering
        ([0.5, 0.6, 0.7], [0.5, 0.6, 0.7], ">", 0.0, INCONCLUSIVE),
        # a margin: "no more than the reference + 0.05", interval -0.02 [-0.0448, 0.0048]
        ([0.48, 0.49, 0.47], [0.50, 0.51, 0.49], "<", 0.05, AGREES),
        ([0.70, 0.71, 0.69], [0.50, 0.51, 0.49], "<", 0.05, DISAGREES),
        # one group against a reference (redundant's benefit <= 0): -0.08 [-0.105, -0.055]
        ([-0.08, -0.07, -0.09], None, "<", 0.0, AGREES),
        ([0.3], None, "<", 0.0, INCONCLUSIVE),  # one run: one sample, no interval
        ([0.3], [0.1], ">", 0.0, INCONCLUSIVE),
        ([], [0.1, 0.2], ">", 0.0, NOT_MEASURED),
        ([None, None], [0.1, 0.2], ">", 0.0, NOT_MEASURED),
    ],
)
def test_judge_outcomes(a, b, side, margin, outcome):
    assert judge(a, b, side, margin).outcome == outcome


def test_inconclusive_says_why():
    v = judge([0.3], [0.1, 0.2], ">")
    assert v.words() == "inconclusive: 1 run in a group, no interval (needs 2)"
    v = judge([1, 2, 3, 4, 5], [2, 4, 6, 8, 10], "<")
    assert v.words() == "inconclusive: the 95% interval contains 0 (estimate on the claimed side)"
    assert judge([1, 1.1, 0.9], [2, 2.1, 1.9], "<").words() == "agrees"


def test_deterministic_difference_has_a_zero_width_interval():
    v = judge([2.0, 2.0], [1.0, 1.0], ">")
    assert (v.interval.low, v.interval.high, v.outcome) == (1.0, 1.0, AGREES)


def test_compound_claims():
    ok = judge([1, 1.1, 0.9], [2, 2.1, 1.9], "<")
    bad = judge([1, 1.1, 0.9], [2, 2.1, 1.9], ">")
    open_ = judge([1, 2, 3, 4, 5], [2, 4, 6, 8, 10], "<")
    none = judge([], [1.0], "<")
    assert combine([ok, ok]) == AGREES
    assert combine([ok, open_]) == INCONCLUSIVE
    assert combine([ok, open_, bad]) == DISAGREES
    assert combine([ok, none]) == NOT_MEASURED
    assert combine([]) == NOT_MEASURED


def test_bad_side_is_refused():
    with pytest.raises(ValueError, match="side"):
        judge([1.0, 2.0], [1.0, 2.0], "<=")
