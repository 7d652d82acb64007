"""The one statistical rule every published claim in a campaign report is judged by.

A claim is a statement about one per-run quantity (a run's share of a bottleneck, its p95
reordering delay, its median response time, its handover gap, ...) in two groups of runs, A and
B: "mean(A) - mean(B) is below (or above) a margin m" (m = 0 for a plain ordering, a stated
tolerance for "at least as fast" / "no more than"). Or in one group against a fixed reference:
"mean(A) is below (or above) m".

The rule (``judge``): reduce each run to ONE value first (never pool per-request latencies of
several runs as if they were independent samples), then take the two-sided 95% Welch t interval
of the difference of the means (unequal variances; the one-sample Student t interval when there
is no group B). The claim

- **agrees** when the whole interval lies on the claimed side of m,
- **disagrees** when the whole interval lies on the other side,
- is **inconclusive** when the interval contains m, or when a group has fewer than 2 runs (no
  interval: one run is one sample, whatever its mean says).

The effect size is the estimate (difference of means, or the mean) with its interval, shown in
every report beside the verdict. A compound claim (A < B < C) is the conjunction of its parts
(``combine``): it agrees when every part agrees, disagrees when any part disagrees, and is
inconclusive otherwise.

Why Welch and not a bootstrap: with 5 runs per group a bootstrap interval is too narrow (it
resamples from 5 values) and the t interval is the textbook choice; why not scipy: it is not a
dependency of the project, and a Student t quantile is 40 lines (checked in
tests/analysis/test_verdict.py against tabled values and an independent numerical integral).

Plain Python, no I/O: tested with known inputs and hand-computed intervals.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

LEVEL = 0.95
MIN_RUNS = 2  # fewer in a group: no interval, the claim is inconclusive

AGREES = "agrees"
DISAGREES = "disagrees"
INCONCLUSIVE = "inconclusive"
NOT_MEASURED = "not measured"

RULE_NAME = "Welch's t, two-sided 95% interval of the difference of per-run means"
RULE = (
    "Every verdict below comes from one rule (analysis/verdict.py): each run is reduced to one "
    "value, and each claim compares two groups of runs (or one group against a stated "
    "reference) by the two-sided 95% Welch t interval of the difference of their means. The "
    "claim agrees when the whole interval lies on the claimed side of its margin (0 for a plain "
    "ordering, a stated tolerance for 'at least as fast' or 'no more than'), disagrees when the "
    "whole interval lies on the other side, and is inconclusive when the interval contains the "
    "margin or a group has fewer than 2 runs. A claim with several parts agrees only when every "
    "part agrees. Effect = difference of means [95% interval]. Runs of an MPTCP stack in which "
    "fewer than two subflows carried data are excluded from every claim and listed."
)


# ---- Student t quantile (no scipy) ---------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betai(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
    lbt += b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` (> 0, not necessarily whole) degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    tail = 0.5 * _betai(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p (bisection on ``t_cdf``, to 1e-10)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-10:
            break
    return (lo + hi) / 2.0


# ---- intervals ------------------------------------------------------------------------------


def _clean(values: Iterable[float | None]) -> list[float]:
    return [
        float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))
    ]


def _mean_var(v: Sequence[float]) -> tuple[float, float]:
    m = sum(v) / len(v)
    return m, sum((x - m) ** 2 for x in v) / (len(v) - 1)


@dataclass(frozen=True)
class Interval:
    """An effect and its two-sided interval: mean(A) - mean(B) (two groups) or mean(A) (one).
    ``low``/``high`` are None when a group has fewer than ``MIN_RUNS`` runs."""

    estimate: float | None
    low: float | None
    high: float | None
    n_a: int
    n_b: int | None  # None: one group against a reference
    df: float | None = None

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None

    def words(self, unit: str = "", digits: int = 3) -> str:
        """'-3 [-6.9, 0.89] ms' (the interval in brackets), or the bare estimate."""
        if self.estimate is None:
            return "–"

        def f(x: float) -> str:
            return f"{x:.{digits}g}"

        if not self.has_interval:
            return f"{f(self.estimate)}{unit} (no interval)"
        return f"{f(self.estimate)} [{f(self.low)}, {f(self.high)}]{unit}"  # type: ignore[arg-type]


def welch(
    a: Iterable[float | None], b: Iterable[float | None] | None, level: float = LEVEL
) -> Interval:
    """The two-sided ``level`` Welch t interval of mean(a) - mean(b); with ``b`` None the
    Student t interval of mean(a). None values (a run without that measurement) are dropped.

    Welch-Satterthwaite degrees of freedom; two groups whose variances are both 0 give the
    zero-width interval at the difference (a deterministic difference)."""
    va = _clean(a)
    vb = None if b is None else _clean(b)
    if not va or (vb is not None and not vb):
        return Interval(None, None, None, len(va), None if vb is None else len(vb))
    ma = sum(va) / len(va)
    if vb is None:
        if len(va) < MIN_RUNS:
            return Interval(ma, None, None, len(va), None)
        _, s2 = _mean_var(va)
        df = len(va) - 1.0
        half = t_quantile(0.5 + level / 2, df) * math.sqrt(s2 / len(va))
        return Interval(ma, ma - half, ma + half, len(va), None, df)
    mb = sum(vb) / len(vb)
    est = ma - mb
    if len(va) < MIN_RUNS or len(vb) < MIN_RUNS:
        return Interval(est, None, None, len(va), len(vb))
    _, s2a = _mean_var(va)
    _, s2b = _mean_var(vb)
    qa, qb = s2a / len(va), s2b / len(vb)
    se2 = qa + qb
    if se2 == 0:
        return Interval(est, est, est, len(va), len(vb), math.inf)
    df = se2 * se2 / (qa * qa / (len(va) - 1) + qb * qb / (len(vb) - 1))
    half = t_quantile(0.5 + level / 2, df) * math.sqrt(se2)
    return Interval(est, est - half, est + half, len(va), len(vb), df)


# ---- verdicts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """One claim's outcome under the rule, with what it rests on."""

    outcome: str  # AGREES, DISAGREES, INCONCLUSIVE, NOT_MEASURED
    interval: Interval
    side: str  # "<": the claim is that the effect is below the margin; ">": above it
    margin: float
    reason: str  # in words: where the interval lies

    def words(self) -> str:
        """The verdict as a reader sees it: 'inconclusive: the interval contains the margin'."""
        if self.outcome != INCONCLUSIVE:
            return self.outcome
        return f"{self.outcome}: {self.reason}" if self.reason else self.outcome


def judge(
    a: Iterable[float | None],
    b: Iterable[float | None] | None,
    side: str,
    margin: float = 0.0,
    level: float = LEVEL,
) -> Verdict:
    """The rule: the claim "mean(a) - mean(b) ``side`` ``margin``" (or "mean(a) ``side``
    ``margin``" with ``b`` None) judged by the two-sided ``level`` Welch interval."""
    if side not in ("<", ">"):
        raise ValueError(f"side must be '<' or '>', got {side!r}")
    iv = welch(a, b, level)
    if iv.estimate is None:
        return Verdict(NOT_MEASURED, iv, side, margin, "no runs with this measurement")
    if not iv.has_interval:
        n = min(iv.n_a, iv.n_b if iv.n_b is not None else iv.n_a)
        return Verdict(
            INCONCLUSIVE,
            iv,
            side,
            margin,
            f"{n} run{'s' if n != 1 else ''} in a group, no interval (needs {MIN_RUNS})",
        )
    below = iv.high < margin  # type: ignore[operator]
    above = iv.low > margin  # type: ignore[operator]
    if (side == "<" and below) or (side == ">" and above):
        return Verdict(AGREES, iv, side, margin, "")
    if (side == "<" and above) or (side == ">" and below):
        return Verdict(DISAGREES, iv, side, margin, "")
    pointing = "the claimed" if (iv.estimate < margin) == (side == "<") else "the other"
    return Verdict(
        INCONCLUSIVE,
        iv,
        side,
        margin,
        f"the 95% interval contains {margin:g} (estimate on {pointing} side)",
    )


def combine(verdicts: Sequence[Verdict]) -> str:
    """A claim with several parts: agrees when every part agrees, disagrees when any part
    disagrees, not measured when a part is not measured, inconclusive otherwise."""
    outs = [v.outcome for v in verdicts]
    if not outs:
        return NOT_MEASURED
    if DISAGREES in outs:
        return DISAGREES
    if NOT_MEASURED in outs:
        return NOT_MEASURED
    if all(o == AGREES for o in outs):
        return AGREES
    return INCONCLUSIVE
