"""./inv demo: the flagship experiments, shortened to a few minutes, and their report.

The shipped files are run as they are, with overrides recorded in metadata.json like any
--set: failover with one repetition, aggregation with one repetition on two grid points (lte at
10 Mbit/s with 10 ms and 40 ms one-way delay) and 8 s of traffic. Every stack the files name runs
(tcp, kernel-mptcp, userspace), each through the same traffic tool, side by side in the report.
"""

from __future__ import annotations

import html
import json
import math
import sys
from pathlib import Path
from typing import Any

from experiments.config import ExperimentError, load_experiment
from experiments.report import write_summary
from experiments.runner import RESULTS_DIR, new_run_dir, run_experiment
from experiments.stacks import StackUnavailable

DEMO = [
    ("failover", ["repetitions=1"]),
    ("aggregation", ["repetitions=1", "links.lte.rate_mbit=10", "traffic.duration_s=8"]),
]


def run_demo(results_root: str | Path | None = None) -> int:
    root = Path(results_root) if results_root else RESULTS_DIR
    dirs = []
    ok = True
    try:
        for name, sets in DEMO:
            exp = load_experiment(name, sets)
            res = run_experiment(exp, results_root=root)
            dirs.append(res.run_dir)
            ok = ok and all(r.intact and r.ok for r in res.runs)
    except (ExperimentError, StackUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _, out_dir = new_run_dir(root, "demo")
    report = write_summary(
        dirs, out_dir / "report.md", title="mptcp-lab demo: failover and aggregation"
    )
    print(report.read_text())
    html_report = _html_report(dirs, out_dir)
    print(f"report: {html_report}" if html_report else "report (html): not made, see above")
    print(f"summary: {report}")
    return 0 if ok else 1


def _html_report(dirs: list[Path], out_dir: Path) -> Path | None:
    """One self-contained report.html: each experiment's capture-level report, one after the
    other, opened by a pointer to the runner's own summary."""
    sections = [
        (d.parent.name, d / "analysis" / "report.html")
        for d in dirs
        if (d / "analysis" / "report.html").exists()
    ]
    if not sections:
        return None
    from analysis.report import combine_reports

    intro = (
        "<p>The flagship experiments on two_path (wifi 20 Mbit/s, 10 ms; lte 10 Mbit/s, "
        "40 ms), every stack that ran side by side: a silent cut of the primary path "
        "(failover) and bandwidth aggregation. The runner's own figures (from its traffic "
        "tool, per 100 ms) are in <a href='report.md'>report.md</a>; below, what the "
        "captures say.</p>" + "".join(what_this_shows(d) for d in dirs)
    )
    return combine_reports(
        out_dir / "report.html", sections, "mptcp-lab demo: failover and aggregation", intro
    )


# ---- "what this shows": one paragraph and one column per stack, for each experiment -----------

STACK_ORDER = ["tcp", "kernel-mptcp", "userspace"]  # others follow in name order


def _rows(d: Path) -> list[dict[str, Any]]:
    """The capture-level rows (one per stack, repetition, connection) of a campaign."""
    try:
        return json.loads((d / "analysis" / "metrics.json").read_text()).get("rows") or []
    except (OSError, ValueError):
        return []


def _stacks(rows: list[dict[str, Any]]) -> list[str]:
    present = {r["stack"] for r in rows}
    return [s for s in STACK_ORDER if s in present] + sorted(present - set(STACK_ORDER))


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    v = [r.get(key) for r in rows]
    v = [x for x in v if isinstance(x, (int, float)) and not math.isnan(x)]
    return sum(v) / len(v) if v else None


def _f(v: float | None, fmt: str = "{:.2f}", none: str = "–") -> str:
    return none if v is None else fmt.format(v)


def _side_by_side(stacks: list[str], lines: list[tuple[str, dict[str, str]]]) -> str:
    head = "".join(f"<th>{html.escape(s)}</th>" for s in stacks)
    body = "".join(
        f"<tr><th class='l'>{html.escape(label)}</th>"
        + "".join(f"<td>{html.escape(cells.get(s, '–'))}</td>" for s in stacks)
        + "</tr>"
        for label, cells in lines
    )
    return f"<table><tr><th class='l'></th>{head}</tr>{body}</table>"


def _missing_note(stacks: list[str]) -> str:
    if "userspace" in stacks:
        return ""
    return (
        " Our userspace MPTCP stack has no runs here yet; its column appears beside these once "
        'it runs in the experiment (<code>stacks = [..., "userspace"]</code>).'
    )


def _failover_text(rows: list[dict[str, Any]]) -> str:
    stacks = _stacks(rows)
    by = {s: [r for r in rows if r["stack"] == s] for s in stacks}

    def ret(s: str) -> str:
        rs = by[s]
        if rs and all(r.get("return_never") for r in rs):
            return "never"
        return _f(_mean(rs, "return_s"), "{:.2f} s")

    lines = [
        (
            "failover gap (longest in-order stall)",
            {s: _f(_mean(by[s], "gap_s"), "{:.2f} s") for s in stacks},
        ),
        (
            "recovery: ≥ 90% of lte's rate for 1 s",
            {s: _f(_mean(by[s], "recovery_s"), "{:.2f} s", "not within the run") for s in stacks},
        ),
        (
            "failover efficiency (3 s after the cut)",
            {s: _f(_mean(by[s], "efficiency"), "{:.0%}") for s in stacks},
        ),
        ("wifi used again after its return", {s: ret(s) for s in stacks}),
        (
            "goodput over the run",
            {s: _f(_mean(by[s], "goodput_mbps"), "{:.1f} Mbit/s") for s in stacks},
        ),
    ]
    return (
        "<h3>What the failover experiment shows</h3><p>wifi, the path a single-path flow "
        "uses, is blackholed silently at 5 s and restored at 15 s while lte stays up. The "
        "question for each stack: how long the application sees no data, how soon it gets "
        "what lte alone can carry, how much of that it got in the first 3 s, and whether "
        "it goes back to wifi once wifi returns. Plain TCP has no second path and waits for "
        "wifi; an MPTCP stack should carry on over lte and use wifi again. Means over "
        f"repetitions; definitions under the failover table below.{_missing_note(stacks)}</p>"
        + _side_by_side(stacks, lines)
    )


def _aggregation_text(rows: list[dict[str, Any]]) -> str:
    stacks = _stacks(rows)
    points = sorted({r.get("point") or "all" for r in rows})
    lines = []
    for p in points:
        at = [r for r in rows if (r.get("point") or "all") == p]
        by = {s: [r for r in at if r["stack"] == s] for s in stacks}
        lines.append(
            (
                f"{p}: steady goodput",
                {s: _f(_mean(by[s], "steady_mbps"), "{:.1f} Mbit/s") for s in stacks},
            )
        )
        lines.append(
            (f"{p}: aggregation benefit", {s: _f(_mean(by[s], "benefit")) for s in stacks})
        )
    return (
        "<h3>What the aggregation experiment shows</h3><p>A bulk download over both paths "
        "(wifi 20 Mbit/s, lte 10 Mbit/s; lte's delay varied): does a stack get more than the "
        "best path alone? The aggregation benefit (Kaspar) is 1 when the goodput reaches the "
        "sum of the paths' rates, 0 when it is what the best path alone gives, negative below "
        "that. Plain TCP uses one path, so about 0 is its best; an MPTCP stack should approach "
        f"1.{_missing_note(stacks)}</p>" + _side_by_side(stacks, lines)
    )


def what_this_shows(d: Path) -> str:
    """A short paragraph per experiment with the stacks side by side (a column per stack that
    has runs: tcp, kernel-mptcp, and the userspace stack once it runs)."""
    rows = _rows(d)
    if not rows:
        return ""
    name = d.parent.name
    if name.startswith("failover"):
        return _failover_text(rows)
    if name.startswith("aggregation"):
        return _aggregation_text(rows)
    return ""
