"""Campaigns that resume: a real campaign (three short TCP runs on real namespaces) interrupted
with SIGINT after its first run and resumed with --resume gives the same results folder as an
uninterrupted one: the same runs, the same files, and the journal says what happened. A folder
of another experiment, or one another coordinator holds, is refused.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.config import load_experiment
from experiments.journal import Journal, ResumeError, finished_labels, read_journal
from experiments.runner import run_experiment

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.net

EXPERIMENT = """
name = "resume"
description = "three short TCP runs"
seed = 3
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


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "experiments", "run", *args, "--no-analysis"]


def files(run_dir: Path) -> set[str]:
    """Every file of a campaign folder, relative to it."""
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}


def interrupt_after(cmd: list[str], line: str, sig: int) -> str:
    """Start the campaign, send `sig` when stderr shows `line`, return its stderr."""
    # Ctrl-C as in a terminal: a suite started in the background by a shell inherits SIGINT
    # ignored, and a Python started with it ignored never raises KeyboardInterrupt
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        seen = []
        for out in proc.stderr:  # the runner's own progress lines are the events
            seen.append(out)
            if line in out:
                proc.send_signal(sig)
                break
        else:
            pytest.fail(f"never saw {line!r}: {''.join(seen)}")
        seen.append(proc.stderr.read())
        assert proc.wait(timeout=60) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return "".join(seen)


def test_an_interrupted_campaign_resumed_equals_an_uninterrupted_one(tmp_path):
    exp_file = tmp_path / "resume.toml"
    exp_file.write_text(EXPERIMENT)
    whole = run_experiment(
        load_experiment(exp_file), results_root=tmp_path / "whole", progress=False, analyze=False
    )
    root = tmp_path / "cut"
    # SIGINT (Ctrl-C) while the second run's traffic flows: run 1 finished, run 2 half done
    err = interrupt_after(
        cli(str(exp_file), "--results", str(root)), "traffic running (tcp/rep2)", signal.SIGINT
    )
    (run_dir,) = (root / "resume").iterdir()
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert meta["interrupted"] and not meta["complete"] and meta["runs_done"] == 1, err
    assert (run_dir / "pcap" / "tcp" / "rep2").is_dir()  # what the cut run left
    assert finished_labels(read_journal(run_dir / "journal.jsonl")) == {"tcp/rep1"}
    first = (run_dir / "pcap/tcp/rep1/client-eth0.pcap").stat()

    res = subprocess.run(
        cli(str(exp_file), "--resume", str(run_dir)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "2 runs (1 finished before, kept)" in res.stderr
    assert list((root / "resume").iterdir()) == [run_dir]  # no new folder
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert meta["complete"] and not meta["interrupted"] and meta["runs_done"] == 3
    assert meta["resumed"][0]["after_error"].startswith("KeyboardInterrupt")
    runs = json.loads((run_dir / "metrics.json").read_text())["runs"]
    assert [r["label"] for r in runs] == LABELS and all(r["intact"] for r in runs)
    events = json.loads((run_dir / "events.json").read_text())
    assert [e["label"] for e in events] == LABELS
    # rep1 was not run again: its capture is the same file, and it started once
    assert (run_dir / "pcap/tcp/rep1/client-eth0.pcap").stat().st_mtime_ns == first.st_mtime_ns
    journal = read_journal(run_dir / "journal.jsonl")
    started = [e["label"] for e in journal if e["event"] == "started"]
    assert started == ["tcp/rep1", "tcp/rep2", "tcp/rep2", "tcp/rep3"]
    assert [e["action"] for e in journal if e["event"] == "campaign"] == ["started", "resumed"]
    assert [e["event"] for e in journal if e.get("label") == "tcp/rep2"][:3] == [
        "queued",
        "started",
        "failed",
    ]
    # each run records its machine: kernel, CPU, load before and after, the sysctls
    for label in LABELS:
        m = meta["machines"][label]
        assert m["kernel"] == platform.release() and m["cpus"] == os.cpu_count()
        assert m["cpu_model"] and len(m["load_before"]) == len(m["load_after"]) == 3
        full = json.loads((run_dir / "logs" / label / "machine.json").read_text())
        assert full["mptcp_sysctls"]["enabled"] in ("0", "1")
        assert full["tcp_sysctls"]["tcp_congestion_control"]
    # the same folder as the campaign that was never interrupted (summary.md: the CLI's)
    assert files(run_dir) - {"summary.md"} == files(whole.run_dir)


def test_resume_refuses_another_experiment_and_a_held_folder(tmp_path):
    exp_file = tmp_path / "resume.toml"
    exp_file.write_text(EXPERIMENT)
    exp = load_experiment(exp_file, ["repetitions=1", "traffic.duration_s=0.5"])
    res = run_experiment(exp, results_root=tmp_path / "r", progress=False, analyze=False)
    other = load_experiment(exp_file, ["repetitions=1"])  # other overrides: another campaign
    with pytest.raises(ResumeError, match="overrides is .*resume with the same file"):
        run_experiment(other, resume=res.run_dir, progress=False, analyze=False)
    with pytest.raises(ResumeError, match="not a campaign folder"):
        run_experiment(exp, resume=tmp_path, progress=False, analyze=False)
    with Journal(res.run_dir):  # another coordinator at work in it
        with pytest.raises(ResumeError, match="another coordinator holds this campaign"):
            run_experiment(exp, resume=res.run_dir, progress=False, analyze=False)
    # and a finished campaign resumed runs nothing again
    again = run_experiment(exp, resume=res.run_dir, progress=False, analyze=False)
    assert again.complete and [r.label for r in again.runs] == ["tcp/rep1"]
    started = [e for e in read_journal(res.run_dir / "journal.jsonl") if e["event"] == "started"]
    assert len(started) == 1
