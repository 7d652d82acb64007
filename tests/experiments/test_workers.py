"""A campaign spread over two workers (network namespaces with their own sshd, reached with
Fabric): each runs its share on its own Mininet testbed, results come back into one tree and one
report. One worker's sshd is killed while it runs: its run goes back to the queue and finishes
on the other worker, recorded in metadata.json and summary.md, and no finished run is lost.
"""

import json
import sys
import threading

import pytest

from experiments.config import load_experiment
from experiments.remote import RemoteError
from experiments.workers import run_on_workers
from testkit.sshmachines import SSHD, SshMachines

pytestmark = [
    pytest.mark.net,
    pytest.mark.slow,
    pytest.mark.skipif(not SSHD.exists(), reason="openssh-server (./inv installs it)"),
]
EXPERIMENT = """
name = "workers_failover"
description = "two_path, wifi interface down at 1.5 s and up at 3 s, on workers"
seed = 3
repetitions = 2
stacks = ["tcp", "kernel-mptcp"]
[topology]
name = "two_path"
[traffic]
kind = "bulk"
direction = "download"
duration_s = 3
timeout_s = 10
[[events]]
at = 1.5
link = "wifi"
action = "down"
mode = "interface"
[[events]]
at = 3.0
link = "wifi"
action = "up"
mode = "interface"
"""


@pytest.fixture
def workers(tmp_path):
    # linger: the run on the worker whose sshd is killed ends by itself (its output pipe is
    # gone) and tears its testbed down; give it the time
    with SshMachines(tmp_path / "m", ["w1", "w2"], linger=90) as ms:
        yield ms


def test_a_campaign_on_two_workers_survives_losing_one(workers, tmp_path):
    exp_file = tmp_path / "workers_failover.toml"
    exp_file.write_text(EXPERIMENT)
    # tcp and kernel-mptcp once: a run each for w1 and w2, then w2's lost one again on w1
    # (two repetitions made w1 run four in a row, 14 s more, for the same checks)
    exp = load_experiment(exp_file, ["repetitions=1"])
    inv = workers.inventory(tmp_path / "workers.toml", workers=["w1", "w2"], python=sys.executable)
    lost: list[str] = []

    def on_dispatch(worker, spec):
        if worker == "w2" and not lost:  # w2's first run: its sshd dies 4 s into it
            lost.append(spec.label)
            threading.Timer(4.0, workers.machines["w2"].kill_sshd).start()

    rc = run_on_workers(exp, str(inv), results_root=tmp_path / "results", on_dispatch=on_dispatch)
    assert rc == 0
    (run_dir,) = (tmp_path / "results" / "workers_failover").iterdir()
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert meta["complete"] and meta["runs_done"] == 2 and meta["not_run"] == []
    assert meta["workers"]["w2"]["lost"] and not meta["workers"]["w1"]["lost"]
    (label,) = lost
    outcomes = [(a["label"], a["worker"], a["outcome"]) for a in meta["attempts"]]
    assert (label, "w2", "worker lost") in outcomes
    assert (label, "w1", "done") in outcomes  # retried elsewhere
    # every run once in the merged tree, each with its captures and reports
    runs = json.loads((run_dir / "metrics.json").read_text())["runs"]
    assert sorted(r["label"] for r in runs) == sorted(f"{s}/rep1" for s in ("tcp", "kernel-mptcp"))
    assert all(r["intact"] for r in runs)
    for r in runs:
        assert len(list((run_dir / "pcap" / r["label"]).glob("client-eth*.pcap"))) == 2
        assert (run_dir / "traffic" / r["label"] / "main-client.json").exists()
    events = json.loads((run_dir / "events.json").read_text())
    assert sorted(e["label"] for e in events) == sorted(r["label"] for r in runs)
    assert (run_dir / "analysis" / "report.html").stat().st_size > 10_000
    summary = (run_dir / "summary.md").read_text()
    assert "w2" in summary and "LOST" in summary and f"{label}: finished on w1 instead" in summary


def test_a_run_that_fails_on_a_worker_is_retried_on_another(workers, tmp_path):
    """Not a lost connection this time: the run itself fails on w2 (its copy of the experiment
    file vanishes just before); it is run again on w1, and w2 is not handed it again."""
    exp_file = tmp_path / "workers_failover.toml"
    exp_file.write_text(EXPERIMENT)
    exp = load_experiment(exp_file, ["repetitions=1"])  # tcp and kernel-mptcp: two runs
    inv = workers.inventory(tmp_path / "workers.toml", workers=["w1", "w2"], python=sys.executable)
    broken: list[str] = []

    def on_dispatch(worker, spec):
        if worker == "w2":
            for f in (workers.tmp / "remote").glob("project-*-w2/campaign/*.toml"):
                f.unlink()
                broken.append(spec.label)

    rc = run_on_workers(
        exp, str(inv), results_root=tmp_path / "results", on_dispatch=on_dispatch, analyze=False
    )
    assert rc == 0 and broken
    (run_dir,) = (tmp_path / "results" / "workers_failover").iterdir()
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert meta["complete"] and meta["runs_done"] == 2 and not meta["workers"]["w2"]["lost"]
    failed = [a for a in meta["attempts"] if a["outcome"] == "failed"]
    assert failed and all(a["worker"] == "w2" and "exit 2" in a["error"] for a in failed)
    done = {a["label"]: a["worker"] for a in meta["attempts"] if a["outcome"] == "done"}
    assert all(done[a["label"]] == "w1" for a in failed)
    assert f"{broken[0]}: finished on w1 instead" in (run_dir / "summary.md").read_text()


def test_a_worker_without_the_packages_is_named_before_anything_runs(workers, tmp_path):
    exp_file = tmp_path / "workers_failover.toml"
    exp_file.write_text(EXPERIMENT)
    inv = workers.inventory(
        tmp_path / "workers.toml", workers=["w1", "w2"], python="/usr/bin/python3"
    )
    with pytest.raises(RemoteError) as e:
        run_on_workers(load_experiment(exp_file), str(inv), results_root=tmp_path / "results")
    for w in ("w1", "w2"):
        assert (
            f"worker {w} (root@{workers.machines[w].mgmt}:22): python /usr/bin/python3 lacks the packages"
            in str(e.value)
        )
    assert "pandas" in str(e.value)
    assert not (tmp_path / "results").exists()
