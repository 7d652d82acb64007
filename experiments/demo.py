"""./inv demo: the flagship experiments, shortened to a few minutes, and their report.

The shipped files are run as they are, with overrides recorded in metadata.json like any
--set: failover with one repetition, aggregation with one repetition on two grid points (lte at
10 Mbit/s with 10 ms and 40 ms one-way delay) and 8 s of traffic.
"""

from __future__ import annotations

import sys
from pathlib import Path

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
        "<p>The flagship experiments on two_path, tcp against kernel MPTCP: a silent cut "
        "of the primary path (failover) and bandwidth aggregation. The runner's own "
        "figures (from its traffic tool, per 100 ms) are in <a href='report.md'>"
        "report.md</a>; below, what the captures say.</p>"
    )
    return combine_reports(
        out_dir / "report.html", sections, "mptcp-lab demo: failover and aggregation", intro
    )
