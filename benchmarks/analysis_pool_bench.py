"""A campaign's per-run analysis, serial and on the process pool, on the same folder.

The analysis of a campaign (analysis.report.write_campaign_report: every run's captures parsed,
its metrics, figures and report.html, then the campaign's tables) is done twice on fresh copies
of one finished campaign's analysis views: once with one process (the serial path), once with
every core (analysis.report.analyse_runs). Each copy starts without parquet caches, so both
parse every capture (copying is not timed).

Usage: .venv/bin/python -m benchmarks.analysis_pool_bench RUN_DIR [--runs N] [--jobs J] [--json]
RUN_DIR: a campaign folder (results/<experiment>/<run-id>/, its analysis/ views are used) or a
directory of runs in the analysis layout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from analysis.report import analysis_jobs, find_runs, write_report


def fresh_copy(runs: list[Path], src_root: Path, dst: Path) -> None:
    """The runs' inputs only (metadata, events, captures), copied."""
    for run in runs:
        for f in run.rglob("*"):
            if not f.is_file():
                continue
            rel = f.relative_to(src_root)
            if f.suffix == ".pcap" or (
                f.parent == run and f.name in ("metadata.json", "events.json")
            ):
                (dst / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, dst / rel)  # (not linked: the source is left as it is)


def bench(run_dir: Path, n_runs: int | None, jobs: int) -> dict:
    root = run_dir / "analysis" if (run_dir / "analysis").is_dir() else run_dir
    runs = [r for r in find_runs(root) if r != root and list(r.rglob("*.pcap"))]
    runs = runs[:n_runs] if n_runs else runs
    if not runs:
        raise SystemExit(f"{root}: no runs with captures")
    out: dict = {
        "campaign": str(run_dir),
        "runs": len(runs),
        "pcap_mb": round(sum(p.stat().st_size for r in runs for p in r.rglob("*.pcap")) / 1e6, 1),
        "cores": os.cpu_count(),
        "usable_cores": analysis_jobs(),
        "jobs": jobs,
        "load_before": list(os.getloadavg()),
    }
    with tempfile.TemporaryDirectory(prefix="analysis-pool-bench-") as d:
        for mode, j in (("serial", 1), ("pool", jobs)):
            dst = Path(d) / mode
            fresh_copy(runs, root, dst)
            t = time.monotonic()
            write_report(dst, jobs=j)
            out[f"{mode}_s"] = round(time.monotonic() - t, 2)
    out["speedup"] = round(out["serial_s"] / out["pool_s"], 2)
    out["load_after"] = list(os.getloadavg())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--runs", type=int, default=None, help="the first N runs only")
    ap.add_argument("--jobs", type=int, default=analysis_jobs(), help="pool size (default: cores)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    r = bench(a.run_dir, a.runs, a.jobs)
    if a.json:
        print(json.dumps(r))
        return 0
    print(
        f"{r['runs']} runs ({r['pcap_mb']} MB of captures) of {r['campaign']}\n"
        f"cores: {r['cores']} (usable {r['usable_cores']}), pool of {r['jobs']} processes\n"
        f"analysis wall time: serial {r['serial_s']:.1f} s, pool {r['pool_s']:.1f} s, "
        f"speedup {r['speedup']:.2f}x\n"
        f"load average before {r['load_before']}, after {r['load_after']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
