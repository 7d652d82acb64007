"""A campaign spread over two workers (network namespaces with their own sshd, reached with
Fabric): each runs its share on its own Mininet testbed and analyses it, results come back into
one tree and one report (the captures only with fetch_pcaps). One worker's sshd is killed while
it runs: its run goes back to the queue and finishes on the other worker, recorded in
metadata.json and summary.md, and no finished run is lost. Each worker's clock is measured
against the coordinator's before every run (the namespaces share one clock: ~0).
"""

import json
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paramiko
import pytest

from experiments.config import load_experiment
from experiments.journal import finished_labels, read_journal
from experiments.remote import RemoteError
from experiments.workers import _connection, run_on_workers
from testbed.inventory import load_inventory
from testkit.sshmachines import SSHD, SshMachines

REPO = Path(__file__).resolve().parents[2]

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


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return f"{pid} (gone)"


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

    # w1's clock probe adds 5 s (the test hook): a wrong clock, on machines that share one
    rc = run_on_workers(
        exp,
        str(inv),
        results_root=tmp_path / "results",
        on_dispatch=on_dispatch,
        clock_skew={"w1": 5.0},
    )
    assert rc == 0
    (run_dir,) = (tmp_path / "results" / "workers_failover").iterdir()
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert meta["complete"] and meta["runs_done"] == 2 and meta["not_run"] == []
    assert meta["workers"]["w2"]["lost"] and not meta["workers"]["w1"]["lost"]
    (label,) = lost
    outcomes = [(a["label"], a["worker"], a["outcome"]) for a in meta["attempts"]]
    assert (label, "w2", "worker lost") in outcomes
    assert (label, "w1", "done") in outcomes  # retried elsewhere
    # every run once in the merged tree, each with the worker's analysis of it, no captures
    runs = json.loads((run_dir / "metrics.json").read_text())["runs"]
    assert sorted(r["label"] for r in runs) == sorted(f"{s}/rep1" for s in ("tcp", "kernel-mptcp"))
    assert all(r["intact"] for r in runs)
    assert list(run_dir.rglob("*.pcap")) == []
    clocks = meta["clock_offsets"]  # before the first run: w2 has the coordinator's clock
    assert abs(clocks["w2"]["offset_s"]) <= clocks["w2"]["uncertainty_s"] < 0.05
    assert abs(clocks["w1"]["offset_s"] - 5.0) <= clocks["w1"]["uncertainty_s"]
    for r in runs:
        assert (run_dir / "traffic" / r["label"] / "main-client.json").exists()
        view = run_dir / "analysis" / r["label"].replace("/", "-")
        analysed = json.loads((view / "metrics.json").read_text())  # by the worker
        assert analysed["groups"] and analysed["groups"][0]["connections"]
        assert list(view.rglob("*.pcap.parquet")) and list((view / "figures").glob("*.png"))
        (clock,) = meta["machines"][r["label"]]["clock_offsets"].items()
        assert clock[0] == "w1" and abs(clock[1]["offset_s"] - 5.0) <= clock[1]["uncertainty_s"]
        assert "CLOCK OFFSET: w1 +" in (view / "report.html").read_text()
    events = json.loads((run_dir / "events.json").read_text())
    assert sorted(e["label"] for e in events) == sorted(r["label"] for r in runs)
    report = (run_dir / "analysis" / "report.html").read_text()  # read from what came back
    assert len(report) > 10_000 and report.count("CLOCK OFFSET: w1") == 2
    summary = json.loads((run_dir / "analysis" / "metrics.json").read_text())
    assert len(summary["rows"]) >= 2 and all(r["goodput_mbps"] > 0 for r in summary["rows"])
    summary = (run_dir / "summary.md").read_text()
    assert "w2" in summary and "LOST" in summary and f"{label}: finished on w1 instead" in summary


def test_a_run_that_fails_on_a_worker_is_retried_on_another(workers, tmp_path):
    """Not a lost connection this time: the run itself fails on w2 (its copy of the experiment
    file vanishes just before); it is run again on w1, and w2 is not handed it again. Two of
    SHORT's 1 s runs (the failover experiment's 3 s and link events played no part in it)."""
    exp_file = tmp_path / "short.toml"
    exp_file.write_text(SHORT)
    exp = load_experiment(exp_file, ["repetitions=2"])  # tcp/rep1 and tcp/rep2: two runs
    inv = workers.inventory(tmp_path / "workers.toml", workers=["w1", "w2"], python=sys.executable)
    broken: list[str] = []

    def on_dispatch(worker, spec):
        if worker == "w2":
            for f in (workers.tmp / "remote").glob("project-*-w2/campaign/*.toml"):
                f.unlink()
                broken.append(spec.label)

    rc = run_on_workers(
        exp, str(inv), results_root=tmp_path / "results", on_dispatch=on_dispatch, fetch_pcaps=True
    )
    assert rc == 0 and broken
    (run_dir,) = (tmp_path / "results" / "short").iterdir()
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert meta["complete"] and meta["runs_done"] == 2 and not meta["workers"]["w2"]["lost"]
    failed = [a for a in meta["attempts"] if a["outcome"] == "failed"]
    assert failed and all(a["worker"] == "w2" and "exit 2" in a["error"] for a in failed)
    done = {a["label"]: a["worker"] for a in meta["attempts"] if a["outcome"] == "done"}
    assert all(done[a["label"]] == "w1" for a in failed)
    assert f"{broken[0]}: finished on w1 instead" in (run_dir / "summary.md").read_text()
    # fetch_pcaps: the captures came back beside the worker's analysis; no clock is off
    for label, machine in meta["machines"].items():
        assert len(list((run_dir / "pcap" / label).glob("client-eth*.pcap"))) == 2
        ((worker, clock),) = machine["clock_offsets"].items()
        assert worker == "w1" and abs(clock["offset_s"]) <= clock["uncertainty_s"] < 0.05
    assert "CLOCK OFFSET" not in (run_dir / "analysis" / "report.html").read_text()


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


SHORT = """
name = "short"
description = "three 1 s TCP downloads on two_path"
seed = 5
repetitions = 3
stacks = ["tcp"]
[topology]
name = "two_path"
[traffic]
kind = "bulk"
direction = "download"
duration_s = 1
"""
SHORT_LABELS = ["tcp/rep1", "tcp/rep2", "tcp/rep3"]


def test_a_worker_that_fails_runs_in_a_row_is_quarantined(workers, tmp_path):
    """w2's setup is broken (its python starts no run: a misconfigured worker that still
    passes the checks); after 2 failures in a row it is quarantined, the runs it failed get
    their attempts back (max_attempts=1: without that they would be given up) and w1 finishes
    everything."""
    exp_file = tmp_path / "short.toml"
    exp_file.write_text(SHORT)
    broken = tmp_path / "broken-python"
    broken.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do [ "$a" = run ] && { echo "broken setup: no testbed here" >&2; '
        "exit 3; }; done\n"
        f'exec {sys.executable} "$@"\n'
    )
    broken.chmod(0o755)
    inv = workers.inventory(tmp_path / "workers.toml", workers=["w1", "w2"], python=sys.executable)
    inv.write_text(inv.read_text() + f'python = "{broken}"\n')  # into [workers.w2], the last
    rc = run_on_workers(
        load_experiment(exp_file),
        str(inv),
        results_root=tmp_path / "results",
        analyze=False,
        max_attempts=1,
        quarantine_after=2,
        progress=False,
    )
    (run_dir,) = (tmp_path / "results" / "short").iterdir()
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert rc == 0, meta.get("not_run")
    assert meta["complete"] and meta["runs_done"] == 3 and meta["not_run"] == []
    w2 = meta["workers"]["w2"]
    assert w2["quarantined"].startswith("failed 2 runs in a row") and not w2["lost"]
    assert "broken setup: no testbed here" in w2["quarantined"]
    assert sorted(meta["workers"]["w1"]["runs"]) == SHORT_LABELS and w2["runs"] == []
    failed = [a["label"] for a in meta["attempts"] if a["outcome"] == "failed"]
    assert len(failed) == 2 and all(
        a["worker"] == "w1" for a in meta["attempts"] if a["outcome"] == "done"
    )
    journal = read_journal(run_dir / "journal.jsonl")
    assert [e["worker"] for e in journal if e["event"] == "quarantined"] == ["w2"]
    assert finished_labels(journal) == set(SHORT_LABELS)
    assert "w2" in (summary := (run_dir / "summary.md").read_text()) and "QUARANTINED" in summary


def test_a_worker_campaign_interrupted_and_resumed(workers, tmp_path):
    """The coordinator gets SIGTERM once a run is back; --resume finishes the campaign in the
    same folder without running the finished runs again."""
    exp_file = tmp_path / "short.toml"
    exp_file.write_text(SHORT)
    inv = workers.inventory(tmp_path / "workers.toml", workers=["w1", "w2"], python=sys.executable)
    root = tmp_path / "results"
    cmd = [sys.executable, "-m", "experiments", "run", str(exp_file), "--workers", str(inv)]
    cmd += ["--no-analysis"]
    proc = subprocess.Popen(
        [*cmd, "--results", str(root)],
        cwd=REPO,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        seen = []
        for line in proc.stderr:  # the coordinator says when a run is back: our event
            seen.append(line)
            if " done: goodput" in line:
                proc.send_signal(signal.SIGTERM)
                break
        else:
            pytest.fail("no run finished: " + "".join(seen))
        seen.append(proc.stderr.read())
        assert proc.wait(timeout=60) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (run_dir,) = (root / "short").iterdir()
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert meta["interrupted"] and not meta["complete"], "".join(seen)
    before = finished_labels(read_journal(run_dir / "journal.jsonl"))
    assert 1 <= len(before) < 3

    res = subprocess.run(
        [*cmd, "--resume", str(run_dir)], cwd=REPO, capture_output=True, text=True, timeout=180
    )
    assert res.returncode == 0, res.stderr
    assert f"({len(before)} finished before, kept)" in res.stderr
    assert list((root / "short").iterdir()) == [run_dir]
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert meta["complete"] and meta["runs_done"] == 3 and meta["not_run"] == []
    runs = json.loads((run_dir / "metrics.json").read_text())["runs"]
    assert [r["label"] for r in runs] == SHORT_LABELS and all(r["intact"] for r in runs)
    journal = read_journal(run_dir / "journal.jsonl")
    for label in before:  # kept, not run again
        assert [e["event"] for e in journal if e.get("label") == label].count("started") == 1
    for label in SHORT_LABELS:  # each run's files once, complete
        assert sorted(p.name for p in (run_dir / "pcap" / label).iterdir()) == [
            "client-eth0.pcap",
            "client-eth1.pcap",
            "server-eth0.pcap",
        ]
        assert (run_dir / "traffic" / label / "main-client.json").exists()
    assert [e["label"] for e in json.loads((run_dir / "events.json").read_text())] == SHORT_LABELS


def test_workers_whose_kernels_differ_are_refused_unless_allowed(workers, tmp_path):
    """w2 reports another kernel release (its python says so: the stand-in for a machine booted
    on another kernel, as every namespace here shares this one): the campaign is refused before
    anything runs, naming both; with --allow-mixed the check lets it through."""
    exp_file = tmp_path / "short.toml"
    exp_file.write_text(SHORT)
    other = tmp_path / "other-kernel-python"
    other.write_text(
        "#!/bin/sh\n"
        'case "$*" in *"the worker\'s kernel"*) echo 9.9.9-other; exit 0;; esac\n'
        f'exec {sys.executable} "$@"\n'
    )
    other.chmod(0o755)
    inv = workers.inventory(tmp_path / "workers.toml", workers=["w1", "w2"], python=sys.executable)
    inv.write_text(inv.read_text() + f'python = "{other}"\n')  # into [workers.w2], the last
    exp = load_experiment(exp_file, ["repetitions=1"])
    with pytest.raises(RemoteError) as e:
        run_on_workers(exp, str(inv), results_root=tmp_path / "results", progress=False)
    assert "the workers run different kernels" in str(e.value)
    assert f"worker w1: {platform.release()}, worker w2: 9.9.9-other" in str(e.value)
    assert "--allow-mixed" in str(e.value) and not (tmp_path / "results").exists()
    rc = run_on_workers(
        exp,
        str(inv),
        results_root=tmp_path / "results",
        progress=False,
        analyze=False,
        allow_mixed=True,
    )
    assert rc == 0
    (run_dir,) = (tmp_path / "results" / "short").iterdir()
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert meta["mixed_kernels"] and meta["worker_kernels"]["w2"] == "9.9.9-other"
    assert "MIXED KERNELS" in (run_dir / "summary.md").read_text()
    machine = meta["machines"]["tcp/rep1"]  # the run's own record, from the worker that ran it
    assert machine["kernel"] == platform.release() and len(machine["load_after"]) == 3


def test_the_workers_fabric_connection_judges_host_keys_by_the_one_policy(workers, tmp_path):
    """Fabric's connection goes through testbed.ssh.HostKeyPolicy, as SshHost does: a known key
    connects, an unknown one is refused, a missing known_hosts file is an error."""
    inv = workers.inventory(tmp_path / "workers.toml", workers=["w1"], python=sys.executable)
    m = load_inventory(str(inv)).workers["w1"]
    c = _connection(m, str(workers.known_hosts))
    try:
        assert c.run("echo ok", hide=True, in_stream=False).stdout == "ok\n"
    finally:
        c.close()
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        _connection(m, str(empty))
    # and the refused connection is closed: no unauthenticated session is left on the worker
    # (its sshd's pre-auth child for it ends as soon as our side closes; unclosed, it waited
    # out sshd's LoginGraceTime and the fixture's 90 s linger on every suite run)
    w1 = workers.machines["w1"]
    deadline = time.monotonic() + 10
    while w1.pids() != [w1.sshd.pid] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert w1.pids() == [w1.sshd.pid], [_cmdline(p) for p in w1.pids()]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _connection(m, str(tmp_path / "nowhere"))
