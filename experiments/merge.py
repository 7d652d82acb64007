"""Shards of one campaign run apart, merged into one campaign folder: `python -m experiments
merge DIR...`.

A lab with its own batch system (GNU parallel, a job array, Ansible) runs shards with
`python -m experiments run FILE --runs I,J --results DIR --no-analysis`; each leaves a campaign
folder (DIR/<experiment>/<run-id>/) with those runs only. Merging gives the folder one
campaign would have left: every run's captures, reports and logs, metrics.json and events.json
in run order, one analysis report and summary.md, and a journal that says each run finished
(so `run FILE --resume MERGED` runs whatever no shard ran). Each shard's own metadata and log
are kept under logs/shards/<run-id>/, their logs one after the other in logs/runner.log.

Shards of different experiment files, overrides or commits are refused before anything is
written: their runs would not be the same experiment. Two shards that ran the same run are
refused too (which one is the result?).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.events import read_events, write_events
from experiments.config import ExperimentError, RunSpec, load_experiment, resolve_runs
from experiments.journal import Journal, metrics_from_dict, run_files
from experiments.metrics import RunMetrics, summarize
from experiments.runner import RESULTS_DIR, _analyze, _now, _write_json, new_run_dir

# what must agree between shards, and what a difference means
SAME = {
    "experiment": "experiment names",
    "file_sha256": "experiment files",
    "overrides": "--set overrides",
    "stacks": "stacks",
    "repetitions": "repetitions",
}


class MergeError(RuntimeError):
    """The folders cannot be merged (says which folder and what differs)."""


@dataclass
class Shard:
    path: Path
    meta: dict[str, Any]
    runs: list[dict[str, Any]]  # metrics.json's runs (RunMetrics once merged)
    events: list[dict[str, Any]]


def find_campaign(d: Path) -> Path:
    """The campaign folder in `d`: `d` itself, or the one folder a shard's --results root holds."""
    d = Path(d)
    if (d / "metadata.json").is_file():
        return d
    found = sorted(p.parent for p in d.glob("*/*/metadata.json"))
    if len(found) != 1:
        raise MergeError(
            f"{d}: expected one campaign folder (DIR/metadata.json or "
            f"DIR/<experiment>/<run-id>/metadata.json), found {len(found)}"
        )
    return found[0]


def read_shard(d: Path) -> Shard:
    path = find_campaign(d)
    try:
        meta = json.loads((path / "metadata.json").read_text())
        runs = json.loads((path / "metrics.json").read_text())["runs"]
    except (OSError, ValueError, KeyError) as e:
        raise MergeError(f"{path}: not a campaign folder with results ({e})") from None
    return Shard(path, meta, runs, read_events(path / "events.json"))


def check_shards(shards: list[Shard]) -> None:
    """Refuse shards that are not of one campaign: file, overrides, commit, or a run twice."""
    ref = shards[0]
    for s in shards[1:]:
        for key, what in SAME.items():
            if s.meta.get(key) != ref.meta.get(key):
                raise MergeError(
                    f"{s.path}: {key} is {s.meta.get(key)!r} but {ref.path} has "
                    f"{ref.meta.get(key)!r}: shards of different {what} are not one campaign"
                )
        a, b = (x.meta.get("git", {}) for x in (ref, s))
        if a.get("commit") != b.get("commit"):
            raise MergeError(
                f"{s.path}: ran commit {b.get('commit')} but {ref.path} ran {a.get('commit')}: "
                "shards of different commits are not one campaign"
            )
    seen: dict[str, Path] = {}
    for s in shards:
        for m in s.runs:
            if m["label"] in seen:
                raise MergeError(f"{m['label']} is in both {seen[m['label']]} and {s.path}")
            seen[m["label"]] = s.path


def all_runs(shard: Shard) -> list[RunSpec]:
    """The whole campaign's runs, from the experiment file as the shards ran it (the file where
    it was, if unchanged: relative plug-in paths resolve there; else the shard's copy)."""
    meta = shard.meta
    src = Path(meta.get("source", ""))
    path = src if src.is_file() and src.read_text() == meta["file_text"] else None
    path = path or shard.path / "experiment.toml"
    try:
        # the recorded overrides hold --stack and --reps too (as stacks=[...], repetitions=N)
        exp = load_experiment(path, meta.get("overrides", []))
    except ExperimentError as e:
        raise MergeError(f"{path}: cannot be read again to list the campaign's runs: {e}") from None
    return resolve_runs(exp)


def merge_shards(
    dirs: list[Path], *, results_root: Path | None = None, analyze: bool = True
) -> tuple[Path, dict[str, Any]]:
    """One campaign folder from the shards; returns it and its metadata."""
    if not dirs:
        raise MergeError("no shard folders given")
    shards = [read_shard(Path(d)) for d in dirs]
    check_shards(shards)
    runs = all_runs(shards[0])
    index = {r.label: r.index for r in runs}
    stray = [m["label"] for s in shards for m in s.runs if m["label"] not in index]
    if stray:
        raise MergeError(f"runs {stray} are not runs of {shards[0].meta['experiment']}")
    ref = shards[0].meta
    run_id, out = new_run_dir(results_root or RESULTS_DIR, ref["experiment"])
    (out / "logs").mkdir()
    shutil.copyfile(shards[0].path / "experiment.toml", out / "experiment.toml")
    finished: dict[int, tuple[RunMetrics, Shard]] = {}
    events: dict[int, list[dict[str, Any]]] = {}
    for s in shards:
        for d in s.runs:
            m = metrics_from_dict(d)
            finished[index[m.label]] = (m, s)
            for src, dst in zip(run_files(s.path, m.label), run_files(out, m.label), strict=True):
                if src.is_dir():
                    shutil.copytree(src, dst, dirs_exist_ok=True)
        for e in s.events:
            events.setdefault(index[e["label"]], []).append(e)
        keep = out / "logs" / "shards" / s.meta.get("run_id", s.path.name)
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(s.path / "metadata.json", keep / "metadata.json")
        log = s.path / "logs" / "runner.log"
        if log.is_file():  # one runner.log, the shards' one after the other
            with (out / "logs" / "runner.log").open("a") as f:
                f.write(f"=== shard {s.path} ({s.meta.get('run_id')})\n{log.read_text()}")
    merged = [finished[i][0] for i in sorted(finished)]
    meta = {
        **ref,
        "run_id": run_id,
        "resolved_runs": [r.as_dict() for r in runs],
        "runs_total": len(runs),
        "runs_done": len(merged),
        "start": min(s.meta.get("start") or "" for s in shards),
        "end": max(s.meta.get("end") or "" for s in shards),
        "complete": len(merged) == len(runs),
        "interrupted": False,
        "error": None,
        "merged": {"time": _now(), "into": str(out)},
        "shards": [
            {
                "path": str(s.path),
                "run_id": s.meta.get("run_id"),
                "host": (s.meta.get("host") or {}).get("hostname"),
                "kernel": (s.meta.get("kernel") or {}).get("release"),
                "runs": [m["label"] for m in s.runs],
                "complete": s.meta.get("complete"),
            }
            for s in shards
        ],
        "machines": {k: v for s in shards for k, v in s.meta.get("machines", {}).items()},
        "not_run": [
            {"run": r.index, "label": r.label, "reason": "in no shard"}
            for r in runs
            if r.index not in finished
        ],
    }
    _write_json(out / "metadata.json", meta)
    _write_json(
        out / "metrics.json", {"runs": [m.as_dict() for m in merged], "summary": summarize(merged)}
    )
    entries = [e for i in sorted(events) for e in events[i]]
    write_events(out / "events.json", entries)
    with Journal(out) as journal:  # so that `run FILE --resume OUT` runs what no shard ran
        journal.write("campaign", action="merged", shards=[str(s.path) for s in shards])
        for i in sorted(finished):
            where = (finished[i][1].meta.get("host") or {}).get("hostname", "?")
            journal.write("finished", run=i, label=finished[i][0].label, where=where)
    if analyze and merged:
        _analyze(out, meta, entries)
    return out, meta
