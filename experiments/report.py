"""A plain-markdown summary of one or more campaigns, from their metrics.json and metadata.json.

The full report (figures, pcap-level metrics) belongs to analysis/; this one only needs what the
runner wrote, so `./inv demo` always ends with a readable answer: goodput per stack, the
aggregation benefit, the failover gap, with mean and spread, and where every number came from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _ms(stat: dict[str, Any] | None, unit: str = "", pct: bool = False) -> str:
    if not stat or stat.get("mean") is None:
        return "-"
    if pct:
        return f"{stat['mean']:.0%} ± {stat['std']:.0%}"
    return f"{stat['mean']:.2f} ± {stat['std']:.2f}{unit}"


def campaign_section(run_dir: Path) -> list[str]:
    meta = json.loads((run_dir / "metadata.json").read_text())
    metrics_file = run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {"summary": []}
    git = meta.get("git", {})
    analysis = run_dir / "analysis" / "report.html"
    lines = [
        f"## {meta['experiment']}: {meta.get('description', '')}",
        "",
        f"- results: `{run_dir}`  (complete: {meta.get('complete')})",
        f"- file: `{meta['source']}` sha256 {meta['file_sha256'][:12]}…, overrides "
        f"{meta.get('overrides') or 'none'}, seed {meta['seed']}",
        f"- git {str(git.get('commit'))[:10]}{' (dirty)' if git.get('dirty') else ''}, "
        f"kernel {meta['kernel']['release']}, {meta['runs_done']}/{meta['runs_total']} runs",
        f"- pcap-level report (analysis/): `{analysis}`"
        if analysis.exists()
        else "- pcap-level report: not made (analysis/ missing or failed; see logs/runner.log)",
        "",
        "| point | stack | n | goodput Mbit/s (steady) | of sum of rates | benefit | "
        "failover gap s | goodput after failure | intact |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in metrics.get("summary", []):
        point = (
            ", ".join(
                f"{k.split('.')[-2]}.{k.split('.')[-1]}={v}" if "." in k else f"{k}={v}"
                for k, v in row["point_values"].items()
            )
            or "-"
        )
        lines.append(
            f"| {point} | {row.get('variant') or row['stack']} | {row['repetitions']} | "
            f"{_ms(row['goodput_steady_mbit'])} | {_ms(row.get('goodput_vs_sum_of_rates'), pct=True)} | "
            f"{_ms(row.get('aggregation_benefit'))} | {_ms(row.get('failover_gap_s'))} | "
            f"{_ms(row.get('goodput_after_failure_mbit'))} | "
            f"{'yes' if row['all_intact'] else 'NO'} |"
        )
    lines += _app_lines(metrics.get("summary", []))
    lines += _conditions_lines(metrics.get("runs", []))
    met = [r for r in metrics.get("runs", []) if r.get("middlebox") or r.get("mptcp_counters")]
    if any(r.get("middlebox") for r in met):
        lines += [
            "",
            "What happened per run (analysis.middlebox.outcome: both ends' MPTCP counters and "
            "the sha256 of what arrived):",
            "",
            "| point | stack | outcome |",
            "|---|---|---|",
        ]
        for r in sorted(met, key=lambda r: (r["point"], r["stack"])):
            point = ", ".join(f"{k}={v}" for k, v in r["point_values"].items()) or "-"
            lines.append(f"| {point} | {r['stack']} | {r.get('outcome') or '-'} |")
    fails = [r for r in metrics.get("runs", []) if r.get("failover")]
    if fails:
        lines += ["", "Per run, around each link-down event (subflow bytes from 1 s after it):", ""]
        for r in fails:
            for f in r["failover"]:
                if f["cut_path_bytes_after"] is None:
                    carried = "no per-subflow counters (single-path TCP)"
                else:
                    carried = (
                        f"afterwards the cut path's subflows carried {f['cut_path_bytes_after']} B, "
                        f"the others {f['other_paths_bytes_after']} B"
                    )
                cap = f.get("surviving_capacity_mbit")
                rec = f.get("recovery_s")
                eff = f.get("efficiency")
                against = (
                    ""
                    if cap is None
                    else f"; against the surviving paths' {cap:g} Mbit/s: recovery "
                    f"{'not within the run' if rec is None else f'{rec:.2f} s'}, efficiency "
                    f"{'-' if eff is None else f'{eff:.0%}'} in the 3 s after"
                )
                lines.append(
                    f"- {r['label']}: {f['link']} down at {f['event_t']:.2f} s, gap "
                    f"{f['gap_s']:.2f} s, in-order data resumed {f['resume_after_s']} s after"
                    f"{against}; {carried}"
                )
    return lines + [""]


def _app_lines(summary: list[dict[str, Any]]) -> list[str]:
    """A real program's figures per point and stack (kind = "app": page load time, iperf3's
    goodput, the video's startup and rebuffering), mean ± std over the repetitions."""
    keys = sorted({k for row in summary for k in row if k.startswith("app_")})
    if not keys:
        return []
    names = [k.removeprefix("app_") for k in keys]
    lines = [
        "",
        "The programs' own figures (kind = app; mean ± std over the repetitions):",
        "",
        "| point | stack | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for row in summary:
        point = ", ".join(f"{k}={v}" for k, v in row["point_values"].items()) or "-"
        cells = " | ".join(_ms(row.get(k)) for k in keys)
        lines.append(f"| {point} | {row.get('variant') or row['stack']} | {cells} |")
    return lines


def _conditions_lines(runs: list[dict[str, Any]]) -> list[str]:
    """Each grid point's link conditions (non-default fields with units), once per point, and
    what the link emulators counted in its first run."""
    seen: dict[int, dict[str, Any]] = {}
    for r in runs:
        if r.get("link_conditions") or r.get("emulator"):
            seen.setdefault(r["point"], r)
    if not seen:
        return []
    lines = ["", "Link conditions per point (and what the emulators counted in its first run):", ""]
    for r in seen.values():
        point = ", ".join(f"{k}={v}" for k, v in r["point_values"].items()) or "-"
        lines.append(f"- {point} ({r.get('topology') or 'topology'}, {r['label']}):")
        for link, cond in (r.get("link_conditions") or {}).items():
            words = ", ".join(f"{k} {v}" for k, v in cond.items())
            counts = "; ".join(
                f"{d}: "
                + ", ".join(
                    f"{k} {v}"
                    for k, v in c.items()
                    if k not in _INTERNAL and isinstance(v, int | float) and v
                )
                for d, c in ((r.get("emulator") or {}).get(link) or {}).items()
            )
            lines.append(f"  - {link}: {words}" + (f" — {counts}" if counts else ""))
    return lines


# the emulator's own bookkeeping, not something it did to packets
_INTERNAL = {"held", "verdicts", "mean_late_us", "delay_ms", "jitter_ms"}


def write_summary(run_dirs: list[Path], out: Path, title: str = "mptcp-lab report") -> Path:
    lines = [f"# {title}", ""]
    for d in run_dirs:
        lines += campaign_section(Path(d))
    out.write_text("\n".join(lines) + "\n")
    return out
