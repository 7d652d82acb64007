"""The campaign's report.html: what a reader of the published comparisons expects to see, each
figure next to the published claim it checks and whether our data agree, then the capture-level
analysis report (analysis/) below it.

Sections appear when the campaign has the data for them (read from RUN/metrics.json, the
traffic tool's reports under RUN/traffic/ and the analysis' RUN/analysis/metrics.json):

- schedulers: a grid over stack.<stack>.scheduler: CDF of completion time (per request for
  request/response, per transfer for bulk), bars with 95% CIs of completion time, aggregation
  benefit and reordering delay per scheduler, nominal and effective (full-queue) RTT per path,
  the schedulers' decisions from our MIB, and the claims of Paasch et al. 2014, Ferlin et al.
  2016 (BLEST) and Lim et al. 2017 (ECF), each in its paper's regime (our stack's smallest
  swept receive buffer for BLEST/ECF, the largest for Paasch's) under each named condition.
- bottleneck share: runs with background flows: the flow under test's share per variant
  (controller, after the warm-up) with the single-TCP reference line (RFC 6356's goal 2).
- handover: runs with a link going down: gap and goodput per variant (mode), goodput over time
  per subflow for each run (Paasch et al., CellNet 2012).
- robustness: a grid over named conditions ([conditions.*], grid key "condition"): a table
  stack x condition with data intact (k of n runs) and goodput (mean, 95% CI), what each
  condition set, and which stack kept its data intact at what goodput.

Every verdict comes from one rule (analysis/verdict.py, named once in the report): a two-sided
95% Welch t interval of the difference of per-run means, "agrees" / "disagrees" when it lies
wholly on one side of the claim's margin, "inconclusive" when it contains it or a group has
fewer than 2 runs, "not measured" without data; each claim's effect and interval are in a table
beside it. MPTCP runs in which fewer than two subflows carried data are listed and excluded.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analysis.plots import _save  # noqa: E402
from analysis.report import _img, _page, combine_reports, mean_ci  # noqa: E402
from analysis.verdict import (  # noqa: E402
    AGREES,
    DISAGREES,
    INCONCLUSIVE,
    NOT_MEASURED,
    RULE,
    Verdict,
    combine,
    judge,
)
from experiments.metrics import bottleneck_share  # noqa: E402

TOL_SHARE = 0.05  # bottleneck share: "no more than a single TCP" within this (absolute)
# the metric definitions, from the report (RUN/report.html is results/<experiment>/<run-id>/)
DEFINITIONS_URL = "../../../analysis/DEFINITIONS.md"


# ---------------------------------------------------------------------------------------------
# Reading


def _json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def load_runs(run_dir: Path) -> list[dict[str, Any]]:
    """The runner's per-run metrics, each with its receiver's and client's traffic report and
    the capture-level numbers (reordering delay) when the analysis ran."""
    runs = (_json(run_dir / "metrics.json", {}) or {}).get("runs", [])
    analysis = _json(run_dir / "analysis" / "metrics.json", {}) or {}
    by_view: dict[str, dict[str, Any]] = {}
    for row in analysis.get("rows", []):
        by_view.setdefault(str(row.get("run")), row)  # the main connection comes first
    for r in runs:
        r.setdefault("variant", r["stack"])
        tdir = run_dir / "traffic" / r["label"]
        r["client_report"] = _json(tdir / "main-client.json", {}) or {}
        r["server_report"] = _json(tdir / "main-server.json", {}) or {}
        r["capture"] = by_view.get(r["label"].replace("/", "-"), {})
    return runs


def _point(r: dict[str, Any], drop: tuple[str, ...] = ()) -> str:
    """The run's grid point without the stack keys (and `drop`), as short words."""
    items = [
        (k, v) for k, v in r["point_values"].items() if not k.startswith("stack.") and k not in drop
    ]
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in items) or "all"


def _kind(r: dict[str, Any]) -> str:
    return r["point_values"].get("traffic.kind") or (r["client_report"].get("spec") or {}).get(
        "kind", "bulk"
    )


def _receiver(r: dict[str, Any]) -> dict[str, Any]:
    spec = r["client_report"].get("spec") or {}
    return r["server_report"] if spec.get("direction") == "upload" else r["client_report"]


def _ci(values: list[float | None]) -> tuple[float | None, float | None, int]:
    return mean_ci([v for v in values if v is not None])


def _fmt_ci(values: list[float | None], unit: str = "", scale: float = 1.0) -> str:
    m, h, n = _ci(values)
    if m is None:
        return "–"
    return f"{m * scale:.3g}" + ("" if h is None else f" ± {h * scale:.2g}") + unit + f" (n={n})"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    th = "".join(f"<th class='l'>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td class='l'>{html.escape(str(c))}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


@dataclass
class Checked:
    """One published claim as the report shows it: the paragraph and its row in the claims
    table, both from one ``Verdict`` of the rule (analysis/verdict.py)."""

    text: str  # the published claim, with its source
    short: str  # the claim in a few words (the table's first column)
    compared: str  # what was compared: 'blest vs minrtt, reordering p95 per run (ms)'
    outcome: str  # AGREES / DISAGREES / INCONCLUSIVE / NOT_MEASURED
    verdict: str  # the outcome in words (with why, when inconclusive)
    effect: str  # the effect with its 95% interval
    claimed: str  # what the claim needs of the effect: '< 0', '> 0.05'
    n: str  # runs per group: '5 / 5'
    evidence: str = ""  # more numbers (group means, parts of a compound claim)


def _check(
    text: str,
    short: str,
    compared: str,
    parts: list[tuple[str, Verdict]],
    unit: str = "",
    evidence: str = "",
) -> Checked:
    """A claim from its parts (label, verdict): one part is the common case; several are a
    compound claim (A < B < C), judged by ``combine``."""
    if len(parts) == 1:
        v = parts[0][1]
        outcome, words = v.outcome, v.words()
    else:
        outcome = combine([v for _, v in parts])
        words = outcome
        if outcome == INCONCLUSIVE:
            words += ": " + "; ".join(
                f"{lab} {v.outcome}" for lab, v in parts if v.outcome != AGREES
            )

    def n_of(v: Verdict) -> str:
        iv = v.interval
        return str(iv.n_a) if iv.n_b is None else f"{iv.n_a} / {iv.n_b}"

    def side(lab: str, v: Verdict) -> str:
        return (lab + " " if lab else "") + f"{v.side} {v.margin:.3g}"

    return Checked(
        text=text,
        short=short,
        compared=compared,
        outcome=outcome,
        verdict=words,
        effect="; ".join((lab + ": " if lab else "") + v.interval.words(unit) for lab, v in parts),
        claimed="; ".join(side(lab, v) for lab, v in parts),
        n="; ".join(n_of(v) for _, v in parts),
        evidence=evidence,
    )


COLOURS = {AGREES: "#060", DISAGREES: "#a00", INCONCLUSIVE: "#a60", NOT_MEASURED: "#555"}


def _claim(c: Checked) -> str:
    ev = f"{c.compared}: effect {c.effect}, claimed {c.claimed}, n {c.n}" + (
        f"; {c.evidence}" if c.evidence else ""
    )
    return (
        f"<p class='claim'><b>Published claim</b>: {html.escape(c.text)}<br>"
        f"<b>Ours</b>: <span style='color:{COLOURS.get(c.outcome, '#555')}'>"
        f"{html.escape(c.verdict)}</span> — {html.escape(ev)}</p>"
    )


def _claims_table(checked: list[Checked]) -> str:
    """Every claim of a section in one table: effect and its 95% interval beside the verdict."""
    if not checked:
        return ""
    return _table(
        ["claim", "compared (one value per run)", "n", "effect [95% CI]", "claimed", "verdict"],
        [[c.short, c.compared, c.n, c.effect, c.claimed, c.verdict] for c in checked],
    )


def _claims_html(checked: list[Checked]) -> list[str]:
    return [_claims_table(checked)] + [_claim(c) for c in checked]


# ---------------------------------------------------------------------------------------------
# Figures


def _bars(
    groups: dict[str, dict[str, list[float | None]]],
    path: Path,
    ylabel: str,
    title: str,
    ref: tuple[float, str] | None = None,
) -> Path:
    """Bars (mean) with 95% CI whiskers (Student t): groups[x][hue] = values."""
    xs = list(groups)
    hues = list(dict.fromkeys(h for g in groups.values() for h in g))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(xs) * max(1, len(hues)) / 1.5), 4))
    width = 0.8 / max(1, len(hues))
    for j, h in enumerate(hues):
        means, errs, pos = [], [], []
        for i, x in enumerate(xs):
            m, ci, _ = _ci(groups[x].get(h, []))
            if m is None:
                continue
            means.append(m)
            errs.append(ci or 0.0)
            pos.append(i + (j - (len(hues) - 1) / 2) * width)
        ax.bar(pos, means, width, yerr=errs, capsize=3, label=h if len(hues) > 1 else None)
    if ref is not None:
        ax.axhline(ref[0], color="k", ls="--", lw=1, label=ref[1])
    ax.set_xticks(range(len(xs)), xs, rotation=30, ha="right")
    ax.set(ylabel=ylabel, title=title)
    if len(hues) > 1 or ref is not None:
        ax.legend(fontsize=8)
    return _save(fig, path)


def _cdf(series: dict[str, list[float]], path: Path, xlabel: str, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, vals in series.items():
        v = sorted(x for x in vals if x is not None and not math.isnan(x))
        if not v:
            continue
        ys = [(i + 1) / len(v) for i in range(len(v))]
        ax.step(v, ys, where="post", label=f"{name} (n={len(v)})")
    ax.set(xlabel=xlabel, ylabel="CDF", title=title, ylim=(0, 1.02))
    ax.legend(fontsize=7)
    return _save(fig, path)


def _subflow_goodput(r: dict[str, Any], path: Path, events: list[float]) -> Path | None:
    """Goodput over time per subflow (the receiver's per-subflow counters, 100 ms samples,
    smoothed over 500 ms) and the connection's in-order goodput."""
    rx = _receiver(r)
    subs = rx.get("subflow_samples") or []
    samples = rx.get("samples") or []
    if len(samples) < 2:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.2))

    def rate(ts: list[float], bs: list[float]) -> tuple[list[float], list[float]]:
        out_t, out_r = [], []
        for i in range(5, len(ts)):
            dt = ts[i] - ts[i - 5]
            if dt > 0:
                out_t.append(ts[i])
                out_r.append((bs[i] - bs[i - 5]) * 8 / dt / 1e6)
        return out_t, out_r

    t, b = [s[0] for s in samples], [s[1] for s in samples]
    ax.plot(*rate(t, b), color="k", lw=1.5, label="connection (in order)")
    names = list(dict.fromkeys(k for s in subs for k in s[1]))
    for name in names:
        ts = [s[0] for s in subs]
        bs = [s[1].get(name, 0) for s in subs]
        ax.plot(*rate(ts, bs), lw=1, label=name.split("->")[0])
    for e in events:
        ax.axvline(e, color="r", ls=":", lw=1)
    ax.set(xlabel="seconds", ylabel="Mbit/s", title=f"{r['variant']} {r['label']}")
    ax.legend(fontsize=7)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------
# Sections


def _sched_key(runs: list[dict[str, Any]]) -> str | None:
    return next(
        (k for r in runs for k in r["point_values"] if k.startswith("stack.") and "sched" in k),
        None,
    )


def _by(runs: list[dict[str, Any]], key) -> dict[Any, list[dict[str, Any]]]:
    out: dict[Any, list[dict[str, Any]]] = {}
    for r in runs:
        out.setdefault(key(r), []).append(r)
    return out


def _median(v: list[float]) -> float | None:
    v = sorted(v)
    if not v:
        return None
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def _sched_frame(
    runs: list[dict[str, Any]],
) -> tuple[str, list[dict[str, Any]], dict[str, Any], list[str]] | None:
    """(grid key, the runs at the scheduler runs' points, variant -> scheduler, points), or
    None for a campaign without a scheduler grid."""
    key = _sched_key(runs)
    if key is None:
        return None
    # the scheduler runs' points; other stacks (tcp, kernel MPTCP) at those points (without
    # our stack's swept buffers, which they do not have: their points are listed apart)
    sched = [r for r in runs if key in r["point_values"]]
    points = list(dict.fromkeys(_spoint(r) for r in sched))
    base = {_point(r, ("traffic.kind",)) for r in sched}
    runs = [r for r in runs if _spoint(r) in points or _point(r, ("traffic.kind",)) in base]
    points += [p for p in dict.fromkeys(_spoint(r) for r in runs) if p not in points]
    name = {r["variant"]: r["point_values"].get(key) for r in runs}
    return key, runs, name, points


QUEUE_PKT_BYTES = 1514  # the rate limiter's queue: queue_pkts x 1514 bytes (testbed/emulation)
DEFAULT_QUEUE_PKTS = 1000  # a link without queue_pkts: the kernel's txqueuelen


def _number(x: Any) -> float | None:
    """10 from "10 ms" / "20 Mbit/s" / "100 packets" / 10 (link_conditions' words)."""
    if isinstance(x, (int, float)):
        return float(x)
    try:
        return float(str(x).split()[0])
    except (ValueError, IndexError):
        return None


def effective_rtts(conditions: dict[str, dict[str, Any]]) -> list[dict[str, float]]:
    """Per rate-limited link: its nominal RTT (twice the one-way delay), the queueing a full
    rate-limiter queue adds (queue_pkts x 1514 B at the link's rate) and the sum, the RTT a
    bulk flow that fills the queue sees. A path's queue fills under load: what the schedulers
    compare is the effective RTT, not the nominal one (analysis/DEFINITIONS.md)."""
    out = []
    for link, c in conditions.items():
        rate = _number(c.get("rate_mbit"))
        if not rate:
            continue
        delay = _number(c.get("delay_ms")) or 0.0
        queue = _number(c.get("queue_pkts")) or DEFAULT_QUEUE_PKTS
        q_ms = queue * QUEUE_PKT_BYTES * 8 / (rate * 1e6) * 1e3
        out.append(
            {
                "link": link,
                "nominal_ms": 2 * delay,
                "queueing_ms": round(q_ms, 1),
                "effective_ms": round(2 * delay + q_ms, 1),
            }
        )
    return out


def _rtt_html(runs: list[dict[str, Any]]) -> list[str]:
    """Nominal and effective RTT per point and link, with the slow:fast ratios."""
    rows = []
    seen = set()
    for r in runs:
        pt = _point(r, ("traffic.kind",))
        if pt in seen or not r.get("link_conditions"):
            continue
        seen.add(pt)
        links = effective_rtts(r["link_conditions"])
        for x in links:
            rows.append([pt, x["link"], x["nominal_ms"], x["queueing_ms"], x["effective_ms"], ""])
        if len(links) == 2 and all(x["nominal_ms"] > 0 for x in links):
            fast, slow = sorted(links, key=lambda x: x["nominal_ms"])
            rows[-1][-1] = (
                f"{slow['nominal_ms'] / fast['nominal_ms']:.2f} nominal, "
                f"{slow['effective_ms'] / fast['effective_ms']:.2f} effective"
            )
    if not rows:
        return []
    return [
        "<h3>Nominal and effective RTT</h3>",
        "<p>Nominal: twice the link's one-way delay. Effective: with the rate limiter's queue "
        "full (queue_pkts x 1514 B at the link's rate), as a bulk transfer that fills it sees; "
        "request/response exchanges see something in between.</p>",
        _table(
            ["point", "link", "nominal RTT ms", "full queue adds ms", "effective RTT ms", "ratio"],
            rows,
        ),
    ]


def _spoint(r: dict[str, Any]) -> str:
    """A run's point in the schedulers section: the grid point without the traffic kind and
    without which scheduler, but with our stack's other swept options (its buffers)."""
    items = [
        (k, v)
        for k, v in r["point_values"].items()
        if k != "traffic.kind" and not (k.startswith("stack.") and "sched" in k)
    ]
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in items) or "all"


def scheduler_section(runs: list[dict[str, Any]], fig_dir: Path) -> list[str]:
    frame = _sched_frame(runs)
    if frame is None:
        return []
    key, runs, name, points = frame
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    parts = [
        "<h2>Schedulers on heterogeneous paths</h2>",
        "<p>One variant per scheduler of our stack (grid over "
        f"<code>{html.escape(key)}</code>), with kernel MPTCP (Linux's default scheduler) and "
        "single-path TCP on the first path. Completion time: the receiver's transfer time "
        "(bulk of a byte count; a timed bulk has none) or each exchange's time at the client "
        "(request/response). Reordering delay: "
        "per segment at the receiver, the wait until every lower data sequence number had "
        "arrived (the captures; analysis/metrics.reordering_delay), p95 per run. Points: "
        f"{html.escape('; '.join(points))}.</p>",
    ]
    parts += _rtt_html(runs)
    bulk = [r for r in runs if _kind(r) == "bulk"]
    rr = [r for r in runs if _kind(r) == "reqresp"]
    # a timed bulk transfer has no completion time of its own: goodput instead
    timed = bool(bulk) and all(
        not (r["client_report"].get("spec") or {}).get("bytes") for r in bulk
    )

    # completion time CDFs
    for kind, sel in (("reqresp", rr), ("bulk", [] if timed else bulk)):
        for pt in points:
            here = [r for r in sel if _spoint(r) == pt]
            if not here:
                continue
            series = {
                v: [
                    x / 1e3 if kind == "reqresp" else x
                    for r in here
                    if r["variant"] == v
                    for x in (
                        r["client_report"].get("latencies_ms") or []
                        if kind == "reqresp"
                        else [r["duration_s"]]
                    )
                ]
                for v in variants
            }
            what = "per request (response time)" if kind == "reqresp" else "per transfer"
            p = _cdf(
                series,
                fig_dir / f"sched-cdf-{kind}-{pt}.png".replace(" ", "").replace(",", "_"),
                "completion time [s]",
                f"{kind}: completion time {what}, {pt}",
            )
            parts.append(_img(p, f"CDF of completion time per scheduler: {kind}, {pt}"))

    # bars with CIs: completion time per scheduler and point
    def bar_groups(sel, value) -> dict[str, dict[str, list[float | None]]]:
        return {
            v: {
                pt: [value(r) for r in sel if r["variant"] == v and _spoint(r) == pt]
                for pt in points
            }
            for v in variants
            if any(r["variant"] == v for r in sel)
        }

    def mean_latency(r):
        lat = r["client_report"].get("latencies_ms") or []
        return sum(lat) / len(lat) / 1e3 if lat else None

    if bulk and timed:
        parts.append(
            _img(
                _bars(
                    bar_groups(bulk, lambda r: r["goodput_steady_mbit"]),
                    fig_dir / "sched-bulk-goodput.png",
                    "Mbit/s",
                    "bulk steady goodput (mean, 95% CI)",
                ),
                "bulk (timed) steady goodput per scheduler and point (mean ± 95% CI)",
            )
        )
    elif bulk:
        parts.append(
            _img(
                _bars(
                    bar_groups(bulk, lambda r: r["duration_s"] or None),
                    fig_dir / "sched-bulk-completion.png",
                    "seconds",
                    "bulk completion time (mean, 95% CI)",
                ),
                "bulk completion time per scheduler and point (mean ± 95% CI over repetitions)",
            )
        )
    if bulk:
        parts.append(
            _img(
                _bars(
                    bar_groups(bulk, lambda r: r.get("aggregation_benefit")),
                    fig_dir / "sched-benefit.png",
                    "aggregation benefit",
                    "aggregation benefit (Kaspar; 1 = sum of paths, 0 = best path)",
                ),
                "aggregation benefit per scheduler and point (bulk, mean ± 95% CI)",
            )
        )
    if rr:
        parts.append(
            _img(
                _bars(
                    bar_groups(rr, mean_latency),
                    fig_dir / "sched-rr-completion.png",
                    "seconds",
                    "request/response: mean response time per run (95% CI)",
                ),
                "request/response completion time per scheduler and point (mean ± 95% CI)",
            )
        )
    reorder = bar_groups(bulk or runs, lambda r: r["capture"].get("reorder_p95_ms"))
    if any(v is not None for g in reorder.values() for vs in g.values() for v in vs):
        parts.append(
            _img(
                _bars(
                    reorder,
                    fig_dir / "sched-reorder.png",
                    "ms",
                    "receive-side reordering delay p95 (bulk, 95% CI)",
                ),
                "reordering delay (p95 per run) per scheduler and point, bulk transfers",
            )
        )

    # headline table
    rows = []
    for v in variants:
        for pt in points:
            b = [r for r in bulk if r["variant"] == v and _spoint(r) == pt]
            q = [r for r in rr if r["variant"] == v and _spoint(r) == pt]
            if not b and not q:
                continue
            rows.append(
                [
                    v,
                    pt,
                    "timed" if timed else _fmt_ci([r["duration_s"] for r in b], " s"),
                    _fmt_ci([r["goodput_steady_mbit"] for r in b], " Mbit/s"),
                    _fmt_ci([r.get("aggregation_benefit") for r in b]),
                    _fmt_ci([r["capture"].get("reorder_p95_ms") for r in b], " ms"),
                    _fmt_ci([_run_median_ms(r) for r in q], " ms"),
                    _fmt_ci([mean_latency(r) for r in q], " s"),
                    "yes" if all(r["intact"] for r in b + q) else "NO",
                ]
            )
    parts.append(
        _table(
            [
                "variant",
                "point",
                "bulk completion",
                "bulk steady goodput",
                "benefit",
                "reorder p95 (bulk)",
                "req/resp median per run",
                "req/resp mean per run",
                "intact",
            ],
            rows,
        )
        + "<p>mean ± half-width of the 95% confidence interval (Student t) over repetitions;"
        " n = runs</p>"
    )
    parts += _decisions_html(runs, points)
    parts.append("<h3>Published claims checked</h3>")
    parts += _claims_html(scheduler_claims(runs, name, points))
    return parts


SCHED_COUNTERS = ("SchedWait", "SchedPickMinRtt", "SchedPickOther")


def sched_decisions(r: dict[str, Any]) -> dict[str, int] | None:
    """A run's scheduler decisions from our stack's MIB (both ends summed: each end schedules
    what it sends), or None for a stack that does not count them (kernel MPTCP, TCP)."""
    counters = r.get("mptcp_counters") or {}
    if not str(r.get("stack", "")).startswith("userspace"):
        return None
    return {k: sum(int(c.get(k, 0)) for c in counters.values()) for k in SCHED_COUNTERS}


def _decisions_html(runs: list[dict[str, Any]], points: list[str]) -> list[str]:
    """Per variant, point and traffic kind, each run's decisions: did BLEST/ECF ever wait, how
    often did a chunk go to the slower path."""
    rows = []
    for r in runs:
        d = sched_decisions(r)
        if d is None:
            continue
        picks = d["SchedPickMinRtt"] + d["SchedPickOther"]
        rows.append(
            [
                r["variant"],
                _spoint(r),
                _kind(r),
                r["label"],
                d["SchedWait"],
                d["SchedPickMinRtt"],
                d["SchedPickOther"],
                "–" if not picks else f"{d['SchedPickOther'] / picks:.1%}",
            ]
        )
    if not rows:
        return []
    rows.sort(key=lambda x: (x[0], x[1], x[2], x[3]))
    return [
        "<h3>Scheduler decisions (our stack's MIB)</h3>",
        "<p>Per run, both ends summed: <code>MPTcpExtSchedWait</code> (data held back although "
        "a subflow had room: BLEST's and ECF's waits for the fast subflow), "
        "<code>MPTcpExtSchedPickMinRtt</code> (a chunk to the lowest-RTT subflow, the minRTT "
        "choice) and <code>MPTcpExtSchedPickOther</code> (a chunk to a slower subflow), the "
        "last two counted only when more than one subflow was usable "
        "(analysis/DEFINITIONS.md).</p>",
        _table(
            [
                "variant",
                "point",
                "traffic",
                "run",
                "waits",
                "min-RTT picks",
                "other picks",
                "to slower path",
            ],
            rows,
        ),
    ]


def _pv(r: dict[str, Any], suffix: str) -> Any:
    """The value of the run's first grid key ending in ``suffix`` ("delay_ms", "tcp_rmem")."""
    return next((v for k, v in r["point_values"].items() if k.endswith(suffix)), None)


def _run_median_ms(r: dict[str, Any]) -> float | None:
    """A request/response run's one value: the median of its own response times (ms). Runs,
    not requests, are the independent samples the rule compares."""
    lat = r["client_report"].get("latencies_ms") or []
    return _median([float(x) for x in lat]) if lat else None


REL_MARGIN = 0.05  # "at least as fast": no more than 5% of the reference's mean slower


def scheduler_claims(
    runs: list[dict[str, Any]], name: dict[str, Any], points: list[str]
) -> list[Checked]:
    """The scheduler claims, each in the regime its paper measured it in: BLEST's and ECF's
    where the window is the limit (our stack's smallest swept receive buffer) and the RTTs
    differ most; Paasch et al.'s and redundant's with the largest buffer. With a grid over
    named conditions (queue lengths) every claim is checked under each."""
    sruns = [r for r in runs if name.get(r["variant"]) is not None]
    delays = sorted({float(d) for r in sruns if (d := _pv(r, "delay_ms")) is not None})
    het = delays[-1] if delays else None  # the largest RTT difference
    homo = delays[0] if len(delays) > 1 else None  # the smallest
    bufs = sorted({int(b) for r in sruns if (b := _pv(r, "tcp_rmem")) is not None})
    small = bufs[0] if bufs else None
    large = bufs[-1] if bufs else None
    conds = list(dict.fromkeys(r["point_values"].get("condition") for r in sruns)) or [None]
    out: list[Checked] = []
    for cond in conds:
        out += _scheduler_claims_at(sruns, name, cond, len(conds) > 1, het, homo, small, large)
    return out


def _scheduler_claims_at(
    runs: list[dict[str, Any]],
    name: dict[str, Any],
    cond: Any,
    tagged: bool,
    het: float | None,
    homo: float | None,
    small: int | None,
    large: int | None,
) -> list[Checked]:
    tag = f" [{cond}]" if tagged else ""

    def at(sched: str, kind: str, delay: float | None, buf: int | None) -> list[dict[str, Any]]:
        return [
            r
            for r in runs
            if name.get(r["variant"]) == sched
            and _kind(r) == kind
            and r["point_values"].get("condition") == cond
            and (delay is None or float(_pv(r, "delay_ms") or 0) == delay)
            and (buf is None or int(_pv(r, "tcp_rmem") or 0) == buf)
        ]

    def where(delay: float | None, buf: int | None) -> str:
        w = [f"{cond}"] if tagged else []
        w += [] if delay is None else [f"lte delay {delay:g} ms"]
        w += [] if buf is None or small == large else [f"receive buffer {buf} B"]
        return ", ".join(w) or "every point"

    def vals(sel, f) -> list[float]:
        return [x for x in (f(r) for r in sel) if x is not None]

    has_minrtt = any(name.get(r["variant"]) == "minrtt" for r in runs)

    def base(kind: str, delay: float | None, buf: int | None) -> str:
        # the campaign's minRTT, even where its runs were all excluded (single-path): the
        # claim is then "not measured", not compared with a scheduler the campaign lacks
        return "minrtt" if has_minrtt or at("minrtt", kind, delay, buf) else "default"

    reord = lambda r: r["capture"].get("reorder_p95_ms")  # noqa: E731
    out: list[Checked] = []

    # 1. ECF and BLEST lower the reordering delay vs minRTT when RTTs differ (window-limited)
    b1 = base("bulk", het, small)
    ref = vals(at(b1, "bulk", het, small), reord)
    for s, paper in (("blest", "Ferlin et al. 2016 (BLEST)"), ("ecf", "Lim et al. 2017 (ECF)")):
        mine = vals(at(s, "bulk", het, small), reord)
        out.append(
            _check(
                f"{paper}: on paths with different RTTs, {s.upper()} lowers the receive-side "
                "reordering (head-of-line) delay compared with minRTT (where the window is "
                "the limit).",
                f"{s.upper()} lowers reordering delay{tag}",
                f"{s} - {b1} at {where(het, small)}, reordering p95 per bulk run",
                [("", judge(mine, ref, "<"))],
                " ms",
            )
        )
    # 2. ECF/BLEST complete web-like transfers no later than minRTT when RTTs differ
    b2 = base("reqresp", het, small)
    ref_l = vals(at(b2, "reqresp", het, small), _run_median_ms)
    margin = REL_MARGIN * (sum(ref_l) / len(ref_l)) if ref_l else 0.0
    for s in ("blest", "ecf"):
        mine = vals(at(s, "reqresp", het, small), _run_median_ms)
        out.append(
            _check(
                f"Lim et al. 2017 / Ferlin et al. 2016: with heterogeneous RTTs {s.upper()} "
                "completes short (web-like) transfers at least as fast as minRTT (here: its "
                f"mean per-run median response time no more than {REL_MARGIN:.0%} of minRTT's "
                "above it).",
                f"{s.upper()} at least as fast as minRTT{tag}",
                f"{s} - {b2} at {where(het, small)}, median response time per run",
                [("", judge(mine, ref_l, "<", margin))],
                " ms",
            )
        )
    # 3. Paasch 2014: round-robin is worse than minRTT for application-limited/web-like flows
    b3 = base("reqresp", het, large)
    rr_l = vals(at("roundrobin", "reqresp", het, large), _run_median_ms)
    out.append(
        _check(
            "Paasch et al. 2014: round-robin gives longer completion times than the lowest-RTT "
            "scheduler for request/response traffic when the paths' RTTs differ.",
            f"round-robin slower than minRTT{tag}",
            f"roundrobin - {b3} at {where(het, large)}, median response time per run",
            [("", judge(rr_l, vals(at(b3, "reqresp", het, large), _run_median_ms), ">"))],
            " ms",
        )
    )
    # 4. aggregation: minRTT aggregates with similar RTTs; less so with very different ones
    ben = lambda r: r.get("aggregation_benefit")  # noqa: E731
    s0 = base("bulk", None, large)
    b_hom = vals(at(s0, "bulk", homo, large), ben) if homo is not None else []
    b_het = vals(at(s0, "bulk", het, large), ben)
    out.append(
        _check(
            "Paasch et al. 2014 (aggregation benefit, Kaspar): the lowest-RTT scheduler "
            "aggregates the paths (benefit > 0) when their RTTs are similar, and the benefit "
            "drops as the RTT ratio grows (strictly: equal benefits do not agree).",
            f"minRTT aggregates; benefit drops with RTT ratio{tag}",
            f"{s0}: benefit at {where(homo, large)}; benefit there - at lte delay "
            f"{het if het is None else f'{het:g}'} ms",
            [
                ("benefit at similar RTTs", judge(b_hom, None, ">", 0.0)),
                ("drop", judge(b_hom, b_het, ">", 0.0)),
            ],
        )
    )
    # 5. redundant does not aggregate
    red = vals(at("redundant", "bulk", None, large), ben)
    out.append(
        _check(
            "Redundant scheduling (Frommgen et al. 2016; Linux v0 mptcp_redundant) trades "
            "throughput for latency: every byte on every path, so no aggregation (benefit < 0: "
            "below the best single path).",
            f"redundant does not aggregate{tag}",
            f"redundant: aggregation benefit per bulk run ({where(None, large)}, every delay)",
            [("", judge(red, None, "<", 0.0))],
        )
    )
    return out


def _share(r: dict[str, Any]) -> float | None:
    """The flow under test's share (experiments.metrics.bottleneck_share: after the warm-up
    when the run recorded the competitors' steady goodput, else over the whole transfers)."""
    return bottleneck_share(r.get("goodput_steady_mbit"), r["goodput_mbit"], r["background"])


def _shares(runs: list[dict[str, Any]]) -> dict[str, list[float | None]]:
    """variant -> each run's share (runs with background flows only), in file order."""
    with_bg = [r for r in runs if r.get("background")]
    variants = list(dict.fromkeys(r["variant"] for r in with_bg))
    return {v: [_share(r) for r in with_bg if r["variant"] == v] for v in variants}


def share_section(runs: list[dict[str, Any]], fig_dir: Path) -> list[str]:
    with_bg = [r for r in runs if r.get("background")]
    if not with_bg:
        return []
    shares = _shares(runs)
    variants = list(shares)
    tcp_ref = _ci(shares.get("tcp", []))[0]
    ref = (tcp_ref, f"single TCP (measured) {tcp_ref:.2f}") if tcp_ref is not None else (0.5, "0.5")
    p = _bars(
        {v: {"share": s} for v, s in shares.items()},
        fig_dir / "bottleneck-share.png",
        "share of the bottleneck",
        "flow under test's share against one TCP flow (mean, 95% CI)",
        ref=ref,
    )
    rows = [
        [
            v,
            _fmt_ci(shares[v]),
            _fmt_ci([r["goodput_mbit"] for r in with_bg if r["variant"] == v], " Mbit/s"),
            _fmt_ci(
                [
                    sum(b.get("goodput_mbit") or 0 for b in r["background"])
                    for r in with_bg
                    if r["variant"] == v
                ],
                " Mbit/s",
            ),
            max((r["max_subflows"] for r in with_bg if r["variant"] == v), default=0),
        ]
        for v in variants
    ]
    parts = [
        "<h2>Bottleneck share per congestion controller</h2>",
        "<p>The flow under test (two subflows through the one bottleneck for the MPTCP stacks) "
        "beside one kernel TCP flow; share = its goodput / (its + the TCP flow's), both after "
        "the warm-up (<code>metrics.warmup_s</code>: every flow past slow start). The dashed "
        "line is what a single TCP flow took in the same place (the <code>tcp</code> stack as "
        "the flow under test).</p>",
        _img(p, "bottleneck share per controller with the single-TCP reference"),
        _table(["variant", "share", "goodput", "competing TCP", "subflows"], rows),
        "<h3>Published claims checked</h3>",
    ]
    parts += _claims_html(share_claims(shares))
    return parts


def share_claims(shares: dict[str, list[float | None]]) -> list[Checked]:
    tcp = shares.get("tcp", [])
    ref_words = "single TCP (measured)" if tcp else "0.5 (no single-TCP run: the even split)"
    checked: list[Checked] = []
    for v in shares:
        if v == "tcp":
            continue
        coupled = any(c in v for c in ("lia", "olia", "balia"))
        if coupled:
            text = (
                f"RFC 6356 (LIA) / Khalili et al. 2013 (OLIA) / Peng et al. 2016 (BALIA): a "
                f"coupled multipath flow ({v}) takes no more of a shared bottleneck than a "
                f"single TCP flow would (here: within {TOL_SHARE} of its share)."
            )
            side, margin = "<", TOL_SHARE
        else:
            text = (
                f"Uncoupled per-subflow congestion control ({v}) is unfair at a shared "
                "bottleneck: with two subflows it takes more than a single TCP (about 2/3 "
                "against one TCP flow; the motivation of RFC 6356)."
            )
            side, margin = ">", 0.0
        verdict = (
            judge(shares[v], tcp, side, margin)
            if tcp
            else judge(shares[v], None, side, 0.5 + margin)
        )
        checked.append(
            _check(
                text,
                f"{v} {'no more than' if coupled else 'more than'} one TCP",
                f"{v} share - {ref_words} share" if tcp else f"{v} share against {ref_words}",
                [("", verdict)],
                evidence=f"share {_fmt_ci(shares[v])} vs single TCP {_fmt_ci(tcp)}",
            )
        )
    return checked


def handover_section(runs: list[dict[str, Any]], fig_dir: Path) -> list[str]:
    with_fo = [r for r in runs if r.get("failover")]
    if not with_fo:
        return []
    gaps = _gaps(runs)
    variants = list(gaps)
    after = {
        v: [r["failover"][0]["goodput_after_mbit"] for r in with_fo if r["variant"] == v]
        for v in variants
    }
    before = {
        v: [r["failover"][0]["goodput_before_mbit"] for r in with_fo if r["variant"] == v]
        for v in variants
    }
    parts = [
        "<h2>Handover: gap and goodput per mode</h2>",
        "<p>gap: the longest pause in in-order delivery at the receiver around the link-down "
        "event; goodput before (3 s before the event) and after (from 1 s after it to the next "
        "event on that link).</p>",
        _img(
            _bars(
                {v: {"gap": g} for v, g in gaps.items()},
                fig_dir / "handover-gap.png",
                "seconds",
                "handover gap per mode (mean, 95% CI)",
            ),
            "handover gap per mode",
        ),
        _img(
            _bars(
                {v: {"before": before[v], "after": after[v]} for v in variants},
                fig_dir / "handover-goodput.png",
                "Mbit/s",
                "goodput before / after the link goes down",
            ),
            "goodput before and after per mode",
        ),
        _table(
            ["variant", "gap", "goodput before", "goodput after", "recovery", "cut path after"],
            [
                [
                    v,
                    _fmt_ci(gaps[v], " s"),
                    _fmt_ci(before[v], " Mbit/s"),
                    _fmt_ci(after[v], " Mbit/s"),
                    _fmt_ci(
                        [r["failover"][0].get("recovery_s") for r in with_fo if r["variant"] == v],
                        " s",
                    ),
                    ", ".join(
                        str(r["failover"][0].get("cut_path_bytes_after"))
                        for r in with_fo
                        if r["variant"] == v
                    )
                    + " B",
                ]
                for v in variants
            ],
        ),
    ]
    parts.append("<h3>Published claims checked</h3>")
    parts += _claims_html(handover_claims(gaps))
    parts.append("<h3>Goodput over time per subflow</h3>")
    for r in with_fo:
        evs = [f["event_t"] for f in r["failover"]]
        p = _subflow_goodput(r, fig_dir / f"subflows-{r['label'].replace('/', '-')}.png", evs)
        if p is not None:
            parts.append(_img(p, f"{r['variant']} ({r['label']}): goodput per subflow"))
    return parts


def _gaps(runs: list[dict[str, Any]]) -> dict[str, list[float]]:
    """variant -> each run's handover gap (the longest of its link-down events)."""
    with_fo = [r for r in runs if r.get("failover")]
    variants = list(dict.fromkeys(r["variant"] for r in with_fo))
    return {
        v: [max(f["gap_s"] for f in r["failover"]) for r in with_fo if r["variant"] == v]
        for v in variants
    }


_MODE_WORDS = (("full", "full"), ("single", "single"), ("break", "single"), ("backup", "backup"))


def handover_modes(variants: list[str]) -> dict[str, dict[str, str]]:
    """family -> mode -> variant: a variant's mode from its name (full, backup, single or
    break), its family the name before that word ("userspace-FullMptcp" is userspace's full,
    "kernel-mptcp-userspace-backup" kernel-mptcp-userspace's backup), so each stack's modes
    are compared among themselves."""
    out: dict[str, dict[str, str]] = {}
    for v in variants:
        low = v.lower()
        for word, mode in _MODE_WORDS:
            i = low.find(word)
            if i >= 0:
                out.setdefault(v[:i].rstrip("-") or v, {})[mode] = v
                break
    return out


def handover_claims(gaps: dict[str, list[float]]) -> list[Checked]:
    """The mode ordering per stack family (one claim; several families: one each, named)."""
    variants = list(gaps)
    text = (
        "Paasch et al., CellNet 2012: full-MPTCP mode hands over with the shortest "
        "interruption, backup mode next (its subflow is already established), "
        "single-path mode the longest (a subflow must be set up after the loss)."
    )
    families = {
        f: m for f, m in handover_modes(variants).items() if {"full", "backup", "single"} <= set(m)
    }
    out = []
    for fam, mode in families.items():
        name = "handover gap full < backup < single-path"
        name += f" ({fam})" if len(families) > 1 else ""
        full, backup, single = (gaps[mode[k]] for k in ("full", "backup", "single"))
        out.append(
            _check(
                text,
                name,
                "gap per run: full - backup; backup - single-path",
                [
                    ("full - backup", judge(full, backup, "<")),
                    ("backup - single", judge(backup, single, "<")),
                ],
                " s",
                evidence=f"gap full {_fmt_ci(full, ' s')}, backup {_fmt_ci(backup, ' s')}, "
                f"single-path {_fmt_ci(single, ' s')}",
            )
        )
    if not out:
        out.append(
            Checked(
                text,
                "handover gap full < backup < single-path",
                "gap per run",
                NOT_MEASURED,
                NOT_MEASURED,
                "–",
                "< 0",
                "–",
                f"modes found: {', '.join(variants)}",
            )
        )
    return out


def _bundle_words(bundle: dict[str, Any]) -> str:
    """What a named condition sets, briefly: "wifi.reorder_pct=2, lte.reorder_pct=2"."""
    return (
        ", ".join(
            f"{k.removeprefix('links.')}={json.dumps(v) if isinstance(v, dict) else v}"
            for k, v in bundle.items()
        )
        or "nothing (the topology as written)"
    )


def robustness_rows(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """condition -> variant -> {intact: k, n, goodput: [Mbit/s per run]} (file order)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in runs:
        cond = r["point_values"].get("condition")
        if cond is None:
            continue
        cell = out.setdefault(cond, {}).setdefault(r["variant"], {"intact": 0, "n": 0, "g": []})
        cell["n"] += 1
        cell["intact"] += bool(r.get("intact"))
        cell["g"].append(r.get("goodput_mbit"))
    return out


def robustness_verdict(table: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Per stack, in words: intact everywhere or where not, and its goodput across conditions."""
    variants = list(dict.fromkeys(v for row in table.values() for v in row))
    lines = []
    for v in variants:
        cells = {c: row[v] for c, row in table.items() if v in row}
        k = sum(c["intact"] for c in cells.values())
        n = sum(c["n"] for c in cells.values())
        means = {c: _ci(cell["g"])[0] for c, cell in cells.items()}
        means = {c: m for c, m in means.items() if m is not None}
        span = ""
        if means:
            lo, hi = min(means, key=means.get), max(means, key=means.get)
            span = f", goodput from {means[lo]:.3g} Mbit/s ({lo}) to {means[hi]:.3g} Mbit/s ({hi})"
        if k == n:
            lines.append(f"{v} kept its data intact in all {n} runs{span}.")
        else:
            bad = ", ".join(
                f"{c} ({cell['n'] - cell['intact']} of {cell['n']})"
                for c, cell in cells.items()
                if cell["intact"] < cell["n"]
            )
            lines.append(f"{v}: data NOT intact in {n - k} of {n} runs: {bad}{span}.")
    return lines


def robustness_section(runs: list[dict[str, Any]], conditions: dict[str, Any]) -> list[str]:
    table = robustness_rows(runs)
    if not table:
        return []
    variants = list(dict.fromkeys(v for row in table.values() for v in row))
    rows = []
    for cond, row in table.items():
        cells = []
        for v in variants:
            c = row.get(v)
            cells.append(
                "–" if c is None else f"{c['intact']}/{c['n']} intact, {_fmt_ci(c['g'], ' Mbit/s')}"
            )
        rows.append([cond, _bundle_words(conditions.get(cond) or {}), *cells])
    return [
        "<h2>Robustness: data intact and goodput per stack and condition</h2>",
        "<p>Each cell: runs whose received bytes hashed to what was sent (sha256 at both "
        "ends) out of the runs, and goodput over the whole transfer (mean ± 95% CI, n runs). "
        "The conditions column is what the condition sets on top of the topology; the "
        "analysis report below lists each link's conditions and what the emulators counted, "
        "and its MPTCP outcome table says per run what happened (fallback, MP_FAIL, ...).</p>",
        _table(["condition", "sets", *variants], rows),
        "<p class='verdict'>" + " ".join(html.escape(x) for x in robustness_verdict(table)),
        "</p>",
    ]


MIN_DATA_BYTES = 1  # a subflow "carried data" when the receiver counted at least this on it


def data_subflows(r: dict[str, Any]) -> int:
    """How many subflows carried data in a run: the receiver's per-subflow byte counts over the
    whole run (a subflow closed before the end, e.g. the lost path of a handover, counts), or
    the run's final counts (metrics.json ``subflow_bytes``) without the traffic report."""
    peak: dict[str, float] = {}
    for _, counts in _receiver(r).get("subflow_samples") or []:
        for k, v in counts.items():
            peak[k] = max(peak.get(k, 0), v or 0)
    for k, v in (r.get("subflow_bytes") or {}).items():
        peak[k] = max(peak.get(k, 0), v or 0)
    return sum(1 for v in peak.values() if v >= MIN_DATA_BYTES)


def split_mptcp_runs(
    runs: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(runs a claim may use, MPTCP runs it may not): a claim about MPTCP needs two subflows
    that carried data; an MPTCP stack's run with fewer (the join refused, the second subflow
    idle, a fallback to TCP) measured single-path TCP, and is excluded and listed."""
    kept, out = [], []
    for r in runs:
        (out if r["stack"] != "tcp" and data_subflows(r) < 2 else kept).append(r)
    return kept, out


def _excluded_html(excluded: list[dict[str, Any]]) -> list[str]:
    if not excluded:
        return []
    return [
        "<h3>Runs excluded from the claims</h3>",
        "<p>MPTCP runs in which fewer than two subflows carried data (they measured one "
        "path): left out of every figure, table and claim below.</p>",
        "<p>A scheduler that chose never to use the slower path (BLEST or ECF waiting for the "
        "fast one, see its waits) is excluded too: its run says nothing about multipath "
        "scheduling beyond that choice.</p>",
        _table(
            ["run", "variant", "subflows that carried data", "scheduler decisions", "outcome"],
            [
                [
                    r["label"],
                    r["variant"],
                    data_subflows(r),
                    _decision_words(sched_decisions(r)),
                    r.get("outcome", ""),
                ]
                for r in excluded
            ],
        ),
    ]


def _decision_words(d: dict[str, int] | None) -> str:
    if d is None:
        return "–"
    return (
        f"{d['SchedWait']} waits, {d['SchedPickMinRtt']} min-RTT / "
        f"{d['SchedPickOther']} slower-path picks"
    )


def _claims_spec(run_dir: Path) -> dict[str, Any] | None:
    """The campaign's [claims] table (metadata.json), when it names a check other than the
    shared bottleneck's share (experiments/coupled_claims.py judges those)."""
    spec = (_json(run_dir / "metadata.json", {}) or {}).get("claims")
    return spec if isinstance(spec, dict) and spec.get("check") not in (None, "share") else None


def claims(run_dir: Path) -> tuple[list[Checked], list[dict[str, Any]]]:
    """Every claim a campaign's report states, judged by the rule, and the MPTCP runs excluded
    from them: what a record keeps and a rerun is compared on (no figures drawn)."""
    kept, excluded = split_mptcp_runs(load_runs(run_dir))
    out: list[Checked] = []
    frame = _sched_frame(kept)
    if frame is not None:
        _, sruns, name, points = frame
        out += scheduler_claims(sruns, name, points)
    spec = _claims_spec(run_dir)
    shares = _shares(kept)
    if spec is not None:  # [claims] names them: not a shared bottleneck's share
        from experiments import coupled_claims  # it imports this module

        out += coupled_claims.claims_for(spec, kept)
    elif shares:
        out += share_claims(shares)
    gaps = _gaps(kept)
    if gaps:
        out += handover_claims(gaps)
    return out, excluded


def sections(run_dir: Path) -> list[str]:
    runs = load_runs(run_dir)
    fig_dir = run_dir / "figures"
    meta = _json(run_dir / "metadata.json", {}) or {}
    # robustness states no claim about MPTCP: whether data stayed intact matters for every run
    kept, excluded = split_mptcp_runs(runs)
    spec = _claims_spec(run_dir)
    if spec is not None:
        from experiments import coupled_claims  # it imports this module

        shared = coupled_claims.section(spec, kept, fig_dir)
    else:
        shared = share_section(kept, fig_dir)
    claims = scheduler_section(kept, fig_dir) + shared + handover_section(kept, fig_dir)
    head = []
    if claims:  # a campaign without claims (robustness) excludes nothing
        head = [
            f"<p class='rule'><b>How verdicts are reached</b>: {html.escape(RULE)}</p>",
            *_excluded_html(excluded),
        ]
    return robustness_section(runs, meta.get("conditions") or {}) + head + claims


def write_campaign_report(run_dir: str | Path) -> Path:
    """RUN/report.html: the sections above, then the analysis report (when it was made)."""
    run_dir = Path(run_dir)
    meta = _json(run_dir / "metadata.json", {}) or {}
    intro = [
        f"<p>{html.escape(meta.get('description', ''))}</p>",
        f"<p>experiment file <code>{html.escape(str(meta.get('source', '')))}</code>, "
        f"overrides {html.escape(str(meta.get('overrides') or 'none'))}, seed "
        f"{meta.get('seed')}, {meta.get('runs_done')}/{meta.get('runs_total')} runs, git "
        f"{html.escape(str((meta.get('git') or {}).get('commit', ''))[:10])}</p>",
        f"<p>Metric definitions, with the publication each comes from: <a "
        f"href='{DEFINITIONS_URL}'>analysis/DEFINITIONS.md</a> (in the project).</p>",
        *sections(run_dir),
    ]
    title = f"MPTCP campaign: {meta.get('experiment', run_dir.name)}"
    out = run_dir / "report.html"
    analysis = run_dir / "analysis" / "report.html"
    if analysis.exists():
        return combine_reports(
            out, [("Capture-level analysis (analysis/)", analysis)], title, "".join(intro)
        )
    out.write_text(_page(title, intro))
    return out
