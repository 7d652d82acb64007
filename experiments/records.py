"""Results of record: a small folder per campaign under experiments/records/<campaign>/, checked
into git, from which the README's tables come and against which a rerun is compared.

A record holds what a reader needs to audit a published verdict, and nothing bulky (no pcaps,
no traffic samples):

- ``metadata.json``: what ran and where: the experiment file and its sha256, overrides,
  repetitions, seed, the git commit (and whether the tree was dirty), the kernel, the host and
  its CPUs, start and end, and the machine's load during the run (the 1-minute load average
  before and after each run: a campaign measured at a load of 6 on 2 cores is not one measured
  on a quiet machine);
- ``metrics.json``: one compact row per run (the values the claims use: goodput, benefit,
  share, gap, median response time, reordering p95, subflows that carried data, the
  scheduler's decisions; ``excluded`` for an MPTCP run without two data-carrying subflows) and
  every claim with its verdict, effect and interval (``campaign_report.Checked``);
- ``report.md``: the claims table and the excluded runs, with the rule and the definitions
  linked.

``write_record(run_dir)`` makes one from a finished campaign folder (``./inv record RUN``);
``compare(record, claims)`` says, claim by claim, whether a new run reaches the same verdict;
``reproduce`` (``./inv reproduce CAMPAIGN``) reruns the campaign as recorded and compares.
File logic only, apart from ``rerun``: the tests build a finished-run folder by hand.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from analysis.verdict import RULE, RULE_NAME, t_quantile
from experiments import coupled_claims
from experiments.campaign_report import (
    Checked,
    _json,
    _kind,
    _run_median_ms,
    _share,
    claims,
    data_subflows,
    load_runs,
    sched_decisions,
    split_mptcp_runs,
)

RECORDS = Path(__file__).resolve().parent / "records"
DEFINITIONS_FROM_RECORD = "../../../analysis/DEFINITIONS.md"  # records/<campaign>/report.md


class RecordError(Exception):
    """A folder that is not a finished campaign, or a campaign without a record."""


def _round(x: Any, digits: int = 4) -> Any:
    return round(x, digits) if isinstance(x, float) else x


def run_rows(
    runs: list[dict[str, Any]], claims_spec: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """One compact row per run: the values the claims use (those of a [claims] check too:
    metadata.json "claims"), and whether it was excluded."""
    _, excluded = split_mptcp_runs(runs)
    out_labels = {r["label"] for r in excluded}
    rows = []
    for r in runs:
        row: dict[str, Any] = {
            "label": r["label"],
            "variant": r["variant"],
            "stack": r["stack"],
            "point_values": r["point_values"],
            "rep": r.get("rep"),
            "kind": _kind(r),
            "ok": r.get("ok"),
            "intact": r.get("intact"),
            "goodput_mbit": r.get("goodput_mbit"),
            "goodput_steady_mbit": r.get("goodput_steady_mbit"),
            "aggregation_benefit": r.get("aggregation_benefit"),
            "duration_s": r.get("duration_s"),
            "data_subflows": data_subflows(r),
            "excluded": r["label"] in out_labels,
        }
        if r.get("background"):
            row["share"] = _share(r)
        if r.get("failover"):
            row["gap_s"] = max(f["gap_s"] for f in r["failover"])
        if r["client_report"].get("latencies_ms"):
            row["median_response_ms"] = _run_median_ms(r)
        if r["capture"].get("reorder_p95_ms") is not None:
            row["reorder_p95_ms"] = r["capture"]["reorder_p95_ms"]
        decisions = sched_decisions(r)
        if decisions is not None:
            row["sched_decisions"] = decisions
        row.update(coupled_claims.run_value(claims_spec, r))
        rows.append({k: _round(v) for k, v in row.items()})
    return rows


def _load_during(meta: dict[str, Any]) -> dict[str, Any]:
    """The 1-minute load average before and after each run: min, mean, max over the runs."""
    loads = [
        float(v[0])
        for m in (meta.get("machines") or {}).values()
        for k in ("load_before", "load_after")
        if (v := m.get(k))
    ]
    if not loads:
        return {"n": 0}
    return {
        "what": "1-minute load average before and after each run",
        "n": len(loads),
        "min": round(min(loads), 2),
        "mean": round(statistics.fmean(loads), 2),
        "max": round(max(loads), 2),
    }


def record_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """What ran, on what, at what load: the parts of the campaign's metadata.json to audit by."""
    git = meta.get("git") or {}
    kernel = meta.get("kernel") or {}
    machines = list((meta.get("machines") or {}).values())
    return {
        "experiment": meta.get("experiment"),
        "description": meta.get("description"),
        "source": meta.get("source"),
        "file_sha256": meta.get("file_sha256"),
        "overrides": meta.get("overrides") or [],
        "stacks": meta.get("stacks"),
        "repetitions": meta.get("repetitions"),
        "seed": meta.get("seed"),
        "run_id": meta.get("run_id"),
        "commit": git.get("commit"),
        "dirty": git.get("dirty"),
        "branch": git.get("branch"),
        "kernel": {"release": kernel.get("release"), "version": kernel.get("version")},
        "host": meta.get("host"),
        "cpu_model": machines[0].get("cpu_model") if machines else None,
        "start": meta.get("start"),
        "end": meta.get("end"),
        "runs_total": meta.get("runs_total"),
        "runs_done": meta.get("runs_done"),
        "complete": meta.get("complete"),
        "load_during_run": _load_during(meta),
        "rule": RULE_NAME,
    }


def _md_cell(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def report_md(meta: dict[str, Any], checked: list[dict[str, Any]], rows: list[dict]) -> str:
    """The record's report.md: what ran, the rule, every claim's verdict with its interval."""
    load = meta["load_during_run"]
    load_words = (
        f"load {load['min']}-{load['max']} (mean {load['mean']}, {load['what']})"
        if load.get("n")
        else "load not recorded"
    )
    out = [
        f"# Record: {meta['experiment']}",
        "",
        str(meta.get("description") or ""),
        "",
        f"`{meta['source']}` (sha256 {str(meta.get('file_sha256') or '')[:12]}), overrides "
        f"{meta['overrides'] or 'none'}, {meta['repetitions']} repetitions, seed {meta['seed']}; "
        f"{meta['runs_done']}/{meta['runs_total']} runs, commit {str(meta['commit'])[:10]}"
        f"{' (dirty)' if meta.get('dirty') else ''}, kernel {meta['kernel']['release']}, "
        f"{(meta.get('host') or {}).get('cpus', '?')} CPUs, {meta['start']} to {meta['end']}, "
        f"{load_words}.",
        "",
        f"**How verdicts are reached**: {RULE} Metric definitions: "
        f"[analysis/DEFINITIONS.md]({DEFINITIONS_FROM_RECORD}).",
        "",
        "## Claims",
        "",
        _md_table(
            ["claim", "compared (one value per run)", "n", "effect [95% CI]", "claimed", "verdict"],
            [
                [c["short"], c["compared"], c["n"], c["effect"], c["claimed"], c["verdict"]]
                for c in checked
            ],
        ),
        "",
    ]
    excluded = [r for r in rows if r["excluded"]]
    if excluded:
        out += [
            "## Runs excluded from the claims",
            "",
            "MPTCP runs in which fewer than two subflows carried data:",
            "",
            _md_table(
                ["run", "variant", "subflows that carried data"],
                [[r["label"], r["variant"], r["data_subflows"]] for r in excluded],
            ),
            "",
        ]
    return "\n".join(out)


def write_record(run_dir: str | Path, records: str | Path | None = None) -> Path:
    """experiments/records/<experiment>/ from a finished campaign folder (replaced if there)."""
    run_dir = Path(run_dir)
    meta = _json(run_dir / "metadata.json")
    if not isinstance(meta, dict) or not (run_dir / "metrics.json").exists():
        raise RecordError(f"{run_dir}: not a campaign folder (no metadata.json / metrics.json)")
    if not meta.get("complete"):
        raise RecordError(
            f"{run_dir}: the campaign did not finish ({meta.get('runs_done')}/"
            f"{meta.get('runs_total')} runs; {meta.get('error') or 'interrupted'}): no record"
        )
    checked, _ = claims(run_dir)
    rows = run_rows(load_runs(run_dir), meta.get("claims"))
    rmeta = record_metadata(meta)
    out = Path(records) if records is not None else RECORDS
    out = out / str(meta["experiment"])
    out.mkdir(parents=True, exist_ok=True)
    cl = [asdict(c) for c in checked]
    (out / "metadata.json").write_text(json.dumps(rmeta, indent=1) + "\n")
    (out / "metrics.json").write_text(json.dumps({"runs": rows, "claims": cl}, indent=1) + "\n")
    (out / "report.md").write_text(report_md(rmeta, cl, rows))
    return out


# ---- the README's tables, generated from the records ----------------------------------------

README = Path(__file__).resolve().parent / "README.md"
BEGIN = "<!-- records:begin (generated from experiments/records/ by ./inv record; do not edit) -->"
END = "<!-- records:end -->"


def _mean_ci(values: list[float]) -> str:
    v = [float(x) for x in values if x is not None]
    if not v:
        return "-"
    m = statistics.fmean(v)
    if len(v) < 2:
        return f"{m:.3g}"
    half = t_quantile(0.975, len(v) - 1) * statistics.stdev(v) / len(v) ** 0.5
    return f"{m:.3g} ± {half:.2g}"


def record_section(rec: Path) -> str:
    """One record as the README shows it: provenance, each variant's runs, each claim."""
    meta = _json(rec / "metadata.json")
    data = _json(rec / "metrics.json")
    load = meta.get("load_during_run") or {}
    out = [
        f"### {meta['experiment']}: {meta.get('description') or ''}",
        "",
        f"{meta['runs_done']}/{meta['runs_total']} runs, {meta['repetitions']} repetitions, "
        f"commit {str(meta['commit'])[:10]}, kernel {meta['kernel']['release']}, "
        f"{(meta.get('host') or {}).get('cpus', '?')} CPUs, {str(meta['start'])[:10]}, load "
        + (f"{load['min']}-{load['max']}" if load.get("n") else "not recorded")
        + f" ([record]({rec.relative_to(rec.parent.parent).as_posix()}/report.md)).",
        "",
    ]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in data["runs"]:
        point = ", ".join(
            f"{k}={v}" for k, v in sorted(r["point_values"].items()) if not k.startswith("stack.")
        )
        groups.setdefault((r["variant"], point), []).append(r)
    has_gap = any(r.get("gap_s") is not None for r in data["runs"])
    header = ["variant", "point", "runs", "intact", "steady goodput Mbit/s"]
    header += ["failover gap s"] if has_gap else []
    header += ["excluded"]
    rows = []
    for (variant, point), rs in groups.items():
        row = [
            variant,
            point or "-",
            len(rs),
            f"{sum(1 for r in rs if r.get('intact'))}/{len(rs)}",
            _mean_ci([r.get("goodput_steady_mbit") for r in rs]),
        ]
        if has_gap:
            row.append(_mean_ci([r.get("gap_s") for r in rs]))
        row.append(sum(1 for r in rs if r.get("excluded")))
        rows.append(row)
    out += [_md_table(header, rows), ""]
    if data["claims"]:
        out += [
            _md_table(
                ["claim", "effect [95% CI]", "verdict"],
                [[c["short"], c["effect"], c["verdict"]] for c in data["claims"]],
            ),
            "",
        ]
    return "\n".join(out)


def readme_section(records: Path | None = None) -> str:
    """Every record, in name order, between the README's markers."""
    root = Path(records) if records is not None else RECORDS
    recs = sorted(p for p in root.iterdir() if (p / "metrics.json").exists())
    body = "\n".join(record_section(p) for p in recs)
    return f"{BEGIN}\n\n{body}\n{END}"


def update_readme(readme: Path = README, records: Path | None = None) -> bool:
    """Put the generated section between the markers; False when the README has none."""
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        return False
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + readme_section(records) + tail)
    return True


# ---- comparing a rerun with the record ------------------------------------------------------


@dataclass(frozen=True)
class Reproduction:
    """One claim: the record's verdict and today's, and whether they are the same."""

    claim: str
    recorded: str  # outcome in the record, or "absent"
    now: str  # outcome today, or "absent"
    recorded_effect: str
    now_effect: str

    @property
    def same(self) -> bool:
        return self.recorded == self.now


def compare(record_dir: str | Path, now: list[Checked]) -> list[Reproduction]:
    """Claim by claim (by its short name), the record's outcome against today's; claims only
    one side has are listed with "absent" on the other (a changed campaign file)."""
    rec = _json(Path(record_dir) / "metrics.json")
    if not isinstance(rec, dict):
        raise RecordError(f"{record_dir}: no record (metrics.json)")
    old = {c["short"]: c for c in rec.get("claims", [])}
    new = {c.short: c for c in now}
    out = []
    for name in list(old) + [n for n in new if n not in old]:
        o, n = old.get(name), new.get(name)
        out.append(
            Reproduction(
                name,
                o["outcome"] if o else "absent",
                n.outcome if n else "absent",
                o["effect"] if o else "–",
                n.effect if n else "–",
            )
        )
    return out


def comparison_lines(rows: list[Reproduction]) -> list[str]:
    """What ``./inv reproduce`` prints: one line per claim, then the count."""
    lines = [
        f"{'same' if r.same else 'DIFFERENT':9} {r.claim}: recorded {r.recorded} "
        f"({r.recorded_effect}), now {r.now} ({r.now_effect})"
        for r in rows
    ]
    k = sum(r.same for r in rows)
    lines.append(f"{k} of {len(rows)} claims reproduce the record's verdict")
    return lines


def rerun(record_dir: str | Path, results: str | Path | None = None) -> Path:
    """Run the recorded campaign again (same file, overrides, stacks, repetitions, seed) with
    today's code; the new campaign folder. Live: namespaces and traffic (take the lock)."""
    from experiments.config import load_experiment
    from experiments.remote import open_network
    from experiments.runner import run_experiment

    meta = _json(Path(record_dir) / "metadata.json")
    if not isinstance(meta, dict):
        raise RecordError(f"{record_dir}: no record (metadata.json)")
    exp = load_experiment(
        meta["source"],
        list(meta.get("overrides") or []),
        stack=",".join(meta["stacks"]) if meta.get("stacks") else None,
        reps=meta.get("repetitions"),
    )
    with open_network(exp, None, False) as network:
        res = run_experiment(
            exp, results_root=Path(results) if results else None, network=network, progress=True
        )
    return res.run_dir


def reproduce(
    campaign: str,
    run_dir: str | Path | None = None,
    records: str | Path | None = None,
) -> tuple[Path, list[Reproduction]]:
    """Rerun ``campaign``'s record (or take ``run_dir``, a campaign already rerun) and compare
    its claims with the record's."""
    record_dir = (Path(records) if records is not None else RECORDS) / campaign
    if not (record_dir / "metrics.json").exists():
        have = sorted(p.parent.name for p in record_dir.parent.glob("*/metrics.json"))
        raise RecordError(f"no record of {campaign!r} in {record_dir.parent} (have: {have})")
    new_dir = Path(run_dir) if run_dir is not None else rerun(record_dir)
    now, _ = claims(new_dir)
    return new_dir, compare(record_dir, now)
