"""What `./inv analyze` and `./inv report` call: print a short summary, exit non-zero on bad input."""

from __future__ import annotations

import sys
from pathlib import Path

from analysis.pcap import CaptureError
from analysis.report import write_report
from analysis.run import analyze_run


def _summary(result: dict) -> list[str]:
    lines = []
    for g in result["groups"]:
        for c in g["connections"]:
            fo = "; ".join(
                f"failover gap {f['gap_s']:.3f}s"
                for f in c["failover"]
                if f.get("gap_s") is not None
            )
            lines.append(
                f"{g['stack']} rep {g['rep']} conn {c['conn']}: "
                f"{c['completion']['bytes']} B in {c['completion']['duration_s']:.2f}s, "
                f"{(c['goodput_bps'] or 0) / 1e6:.2f} Mbit/s, "
                f"{len(c['subflows'])} subflows {fo}".rstrip()
            )
    return lines


def analyze_main(run_dir: str) -> int:
    d = Path(run_dir)
    if not d.is_dir():
        print(f"analyze: {d}: not a directory", file=sys.stderr)
        return 2
    try:
        result = analyze_run(d)
    except CaptureError as e:
        print(f"analyze: {e}", file=sys.stderr)
        return 1
    for line in _summary(result) + [f"error: {e}" for e in result["errors"]]:
        print(line)
    print(f"wrote {d / 'metrics.json'} and {len(result['figures'])} figures in {d / 'figures'}")
    return 0


def report_main(results_dir: str) -> int:
    try:
        out = write_report(results_dir)
    except (FileNotFoundError, CaptureError) as e:
        print(f"report: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0
