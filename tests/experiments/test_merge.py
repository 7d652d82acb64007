"""Shards of a campaign run by GNU parallel (`run FILE --runs I --results DIR`, the README's
recipe) and merged with `python -m experiments merge` give the folder and report of the same
campaign run at once. Shards of different files or commits, or a run in two shards, are refused
(those checks need no network: shard folders written here).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.journal import finished_labels, read_journal
from experiments.merge import MergeError, merge_shards

REPO = Path(__file__).resolve().parents[2]
PARALLEL = shutil.which("parallel")

EXPERIMENT = """
name = "sharded"
description = "three 1 s TCP downloads, run as shards"
seed = 7
repetitions = 3
stacks = ["tcp"]
[topology]
name = "two_path"
[traffic]
client = "client"
server = "server"
kind = "bulk"
direction = "download"
duration_s = 1
"""
LABELS = ["tcp/rep1", "tcp/rep2", "tcp/rep3"]


def files(run_dir: Path) -> set[str]:
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}


@pytest.mark.net
@pytest.mark.skipif(PARALLEL is None, reason="GNU parallel (./inv installs it)")
def test_shards_run_by_gnu_parallel_merge_into_the_single_campaign(tmp_path):
    exp_file = tmp_path / "sharded.toml"
    exp_file.write_text(EXPERIMENT)
    py = [sys.executable, "-m", "experiments"]
    # the README's recipe: one shard a run, two at a time
    shards = tmp_path / "shards"
    res = subprocess.run(
        [PARALLEL, "-j2", "--halt", "now,fail=1", *py, "run", str(exp_file), "--runs", "{}"]
        + ["--results", f"{shards}/{{}}", "--no-analysis", "--quiet", ":::", "0", "1", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 0, res.stderr
    res = subprocess.run(
        [*py, "merge", *sorted(map(str, shards.iterdir())), "--results", str(tmp_path / "m")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 0, res.stderr
    assert "merged 3 shards, 3/3 runs" in res.stdout
    (merged,) = (tmp_path / "m" / "sharded").iterdir()
    single = subprocess.run(
        [*py, "run", str(exp_file), "--results", str(tmp_path / "one"), "--quiet"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert single.returncode == 0, single.stderr
    (one,) = (tmp_path / "one" / "sharded").iterdir()
    # the same folder: every run's files, the analysis and its report; plus the shards' own
    shard_logs = {f for f in files(merged) if f.startswith("logs/shards/")}
    assert len(shard_logs) == 3  # their metadata.json
    assert files(merged) - shard_logs - {"journal.jsonl"} == files(one) - {"journal.jsonl"}
    meta = json.loads((merged / "metadata.json").read_text())
    assert meta["complete"] and meta["runs_done"] == 3 and meta["not_run"] == []
    assert [r["label"] for r in meta["resolved_runs"]] == LABELS
    assert sorted(r for s in meta["shards"] for r in s["runs"]) == LABELS
    for m in (merged, one):
        runs = json.loads((m / "metrics.json").read_text())["runs"]
        assert [r["label"] for r in runs] == LABELS and all(r["intact"] for r in runs)
        assert [e["label"] for e in json.loads((m / "events.json").read_text())] == LABELS
    # the report covers the three runs as the single campaign's does
    html = (merged / "report.html").read_text()
    assert all(label in html for label in ("tcp",)) and len(html) > 10_000
    view_runs = {p.name for p in (merged / "analysis").iterdir() if p.is_dir()}
    assert view_runs == {p.name for p in (one / "analysis").iterdir() if p.is_dir()}
    # the merged folder is a campaign like any other: its journal has every run finished
    assert finished_labels(read_journal(merged / "journal.jsonl")) == set(LABELS)


def shard(tmp_path: Path, name: str, labels: list[str], **meta) -> Path:
    d = tmp_path / name / "sharded" / f"2026-{name}"
    d.mkdir(parents=True)
    base = {
        "experiment": "sharded",
        "run_id": name,
        "file_sha256": "aa",
        "overrides": [],
        "stacks": ["tcp"],
        "repetitions": 3,
        "git": {"commit": "c1", "dirty": False},
    }
    (d / "metadata.json").write_text(json.dumps({**base, **meta}))
    runs = [{"label": label} for label in labels]
    (d / "metrics.json").write_text(json.dumps({"runs": runs}))
    return tmp_path / name


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"file_sha256": "bb"}, "file_sha256 is 'bb' but .* shards of different experiment files"),
        ({"overrides": ["seed=2"]}, "shards of different --set overrides"),
        ({"git": {"commit": "c2"}}, "ran commit c2 but .* ran c1: shards of different commits"),
    ],
)
def test_shards_of_different_files_or_commits_are_refused(tmp_path, meta, message):
    a = shard(tmp_path, "a", ["tcp/rep1"])
    b = shard(tmp_path, "b", ["tcp/rep2"], **meta)
    with pytest.raises(MergeError, match=message):
        merge_shards([a, b], results_root=tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_run_in_two_shards_and_a_folder_without_a_campaign_are_refused(tmp_path):
    a = shard(tmp_path, "a", ["tcp/rep1"])
    b = shard(tmp_path, "b", ["tcp/rep1", "tcp/rep2"])
    with pytest.raises(MergeError, match=r"tcp/rep1 is in both .*a/.* and .*b/"):
        merge_shards([a, b], results_root=tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MergeError, match="empty: expected one campaign folder"):
        merge_shards([tmp_path / "empty"], results_root=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_analysis_views_carry_each_runs_machine_and_mixed_kernels_as_a_factor(tmp_path):
    """The per-run views analysis/ reads name the kernel and host the run had (a worker's or a
    shard's, from metadata.json's machines), and with mixed kernels the kernel is a parameter."""
    from experiments.runner import _analysis_views

    meta = {
        "experiment": "x",
        "run_id": "r",
        "seed": 1,
        "git": {"commit": "c", "dirty": False},
        "kernel": {"release": "coordinator-kernel"},
        "host": {"hostname": "coordinator"},
        "packages": {},
        "machines": {"tcp/rep1": {"kernel": "6.1-a", "hostname": "w1"}},
    }
    runs = [
        {
            "label": label,
            "stack": "tcp",
            "rep": label.split("/")[1],
            "t0_wall": 1.0e9,
            "events": [],
            "point_values": {},
            "capacities_mbit": [],
        }
        for label in ("tcp/rep1", "tcp/rep2")
    ]
    views = _analysis_views(tmp_path, meta, runs)
    one = json.loads((views / "tcp-rep1" / "metadata.json").read_text())
    two = json.loads((views / "tcp-rep2" / "metadata.json").read_text())
    assert (one["kernel"], one["host"]) == ("6.1-a", "w1")
    assert (two["kernel"], two["host"]) == ("coordinator-kernel", "coordinator")  # none recorded
    assert "kernel" not in one["parameters"]
    _analysis_views(tmp_path, {**meta, "mixed_kernels": True}, runs)
    one = json.loads((views / "tcp-rep1" / "metadata.json").read_text())
    assert one["parameters"]["kernel"] == "6.1-a"
