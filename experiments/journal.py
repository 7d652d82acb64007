"""A campaign's journal (RUN/journal.jsonl) and what `--resume RUN_DIR` reads from it.

metadata.json and metrics.json are rewritten as a campaign goes; the journal is only ever
appended to, one JSON object a line, each written whole with one write() on an O_APPEND file,
so it survives a coordinator killed at any point and says, for every run: queued, started
where (attempt k), finished, failed and why; and for the campaign: started, resumed,
interrupted, a worker quarantined. A run counts as finished for a resume only when the journal
says so *and* its metrics are in metrics.json (the journal line is written after them).

The running campaign holds an exclusive flock on the journal: a second coordinator resuming the
same folder is refused instead of writing into it at the same time.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from analysis.events import read_events
from experiments.config import Experiment, RunSpec
from experiments.metrics import FailoverMetrics, RunMetrics

JOURNAL = "journal.jsonl"
# where a run leaves files under RUN/, by label (what a rerun must find empty)
RUN_SUBDIRS = ("pcap", "traffic", "logs", "logs/testbed")


class ResumeError(RuntimeError):
    """The folder cannot be resumed with this experiment (says which file or field differs)."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Journal:
    """RUN/journal.jsonl opened for appending and locked for this process."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / JOURNAL
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()  # the workers' threads write too; none after close()
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise ResumeError(
                f"{self.path}: another coordinator holds this campaign (its journal is locked)"
            ) from None

    def write(self, event: str, **fields: Any) -> None:
        line = json.dumps({"time": _now(), "event": event, **fields}, default=str) + "\n"
        with self._lock:
            if self._fd < 0:
                raise ResumeError(f"{self.path}: written to after the campaign ended")
            os.write(self._fd, line.encode())

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)  # releases the flock
                self._fd = -1

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def campaign_line(resumed: bool) -> dict[str, Any]:
    """The journal's "campaign" entry: who started or resumed it, where."""
    return {
        "action": "resumed" if resumed else "started",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "command": sys.argv,
    }


def read_journal(path: Path) -> list[dict[str, Any]]:
    """Every entry; a torn last line (a kill in the middle of a write) is skipped."""
    out = []
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def finished_labels(entries: list[dict[str, Any]]) -> set[str]:
    """Labels whose last run event is "finished" (a later "failed" or "started" undoes it)."""
    last: dict[str, str] = {}
    for e in entries:
        if e.get("event") in ("queued", "started", "finished", "failed") and "label" in e:
            last[e["label"]] = e["event"]
    return {label for label, ev in last.items() if ev == "finished"}


def metrics_from_dict(d: dict[str, Any]) -> RunMetrics:
    return RunMetrics(**{**d, "failover": [FailoverMetrics(**f) for f in d.get("failover", [])]})


def file_sha256(exp: Experiment) -> str:
    return hashlib.sha256(exp.text.encode()).hexdigest()


@dataclass
class Resumed:
    """What a resumed campaign starts from: its metadata and the runs already finished."""

    meta: dict[str, Any]
    finished: dict[int, RunMetrics] = field(default_factory=dict)  # by run index
    events: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    cleaned: list[str] = field(default_factory=list)  # labels whose partial files went


def run_files(run_dir: Path, label: str) -> list[Path]:
    """Where one run keeps its files in a campaign folder."""
    paths = [Path(run_dir) / sub / label for sub in RUN_SUBDIRS]
    return paths + [Path(run_dir) / "logs" / "workers" / label.replace("/", "-")]


def load_resume(run_dir: Path, exp: Experiment, runs: list[RunSpec]) -> Resumed:
    """Check that `run_dir` is a campaign of this very experiment (same file text, overrides and
    runs), keep its finished runs, and remove what unfinished runs left (a run interrupted
    half-way leaves captures and logs; its rerun must start from nothing, so the folder ends
    as an uninterrupted campaign's would)."""
    run_dir = Path(run_dir)
    meta_path = run_dir / "metadata.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise ResumeError(f"{meta_path}: not found: {run_dir} is not a campaign folder") from None
    except ValueError as e:
        raise ResumeError(f"{meta_path}: not JSON ({e})") from None
    for key, want in (
        ("experiment", exp.name),
        ("file_sha256", file_sha256(exp)),
        ("overrides", exp.overrides),
    ):
        if meta.get(key) != want:
            raise ResumeError(
                f"{meta_path}: {key} is {meta.get(key)!r}, this experiment's is {want!r}: "
                "resume with the same file and --set options"
            )
    had = [r.get("label") for r in meta.get("resolved_runs", [])]
    if had != [r.label for r in runs]:
        raise ResumeError(
            f"{meta_path}: resolved_runs are {had}, this command's are "
            f"{[r.label for r in runs]} (same --stack, --reps, --runs?)"
        )
    done = finished_labels(read_journal(run_dir / JOURNAL))
    try:
        measured = json.loads((run_dir / "metrics.json").read_text())["runs"]
    except (OSError, ValueError, KeyError):
        measured = []
    index = {r.label: r.index for r in runs}
    out = Resumed(meta)
    for m in measured:
        if m["label"] in done and m["label"] in index:
            out.finished[index[m["label"]]] = metrics_from_dict(m)
    for e in read_events(run_dir / "events.json"):
        if e["label"] in index and index[e["label"]] in out.finished:
            out.events.setdefault(index[e["label"]], []).append(e)
    for r in runs:
        if r.index in out.finished:
            continue
        for p in run_files(run_dir, r.label):
            if p.exists():
                shutil.rmtree(p)
                out.cleaned.append(r.label)
    return out


def open_for_resume(run_dir: Path, exp: Experiment, runs: list[RunSpec]) -> tuple[Journal, Resumed]:
    """The journal (locked) and the finished runs of a campaign folder to resume; nothing is
    written into a folder that is not a campaign's."""
    if not (Path(run_dir) / "metadata.json").is_file():
        raise ResumeError(f"{run_dir}: no metadata.json: not a campaign folder")
    journal = Journal(run_dir)  # refuses a folder another coordinator holds
    try:
        return journal, load_resume(run_dir, exp, runs)
    except BaseException:
        journal.close()
        raise
