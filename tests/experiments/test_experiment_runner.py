"""The runner on real namespaces and real kernel MPTCP: short runs, real results on disk.

Each test writes a small experiment file (a few seconds of traffic) into tmp_path and runs it
through the same code as ./inv run, with results under tmp_path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import runner
from experiments.config import load_experiment
from experiments.runner import new_run_dir, run_experiment
from testbed.net import Testbed

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.net

TINY = """
name = "{name}"
description = "test run"
seed = 3
repetitions = 1
stacks = {stacks}

[topology]
name = "two_path"

[traffic]
client = "client"
server = "server"
kind = "bulk"
direction = "download"
duration_s = {duration}

[stack.kernel-mptcp]
endpoints = [{{ host = "client", link = "lte", flags = ["subflow"] }}]

[stack.userspace]
endpoints = [{{ host = "client", link = "lte", flags = ["subflow"] }}]
limits = {{ subflows = 2, add_addr_accepted = 2 }}

[metrics]
warmup_s = 1.0
"""


def tiny(
    tmp_path: Path, name: str = "tiny", stacks: str = '["kernel-mptcp"]', duration: float = 3
) -> Path:
    p = tmp_path / f"{name}.toml"
    p.write_text(TINY.format(name=name, stacks=stacks, duration=duration))
    return p


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_kernel_mptcp_two_subflows_on_two_path(tmp_path):
    exp = load_experiment(tiny(tmp_path))
    built: list[str] = []

    def network(topo, *, workdir, seed):  # the seam: the runner builds nothing itself
        built.append(topo.name)
        return Testbed(topo, workdir=workdir, seed=seed)

    res = run_experiment(
        exp, results_root=tmp_path / "results", progress=False, analyze=False, network=network
    )
    assert res.complete and built == ["two_path"]
    (m,) = res.runs
    assert m.ok and m.intact, m.errors
    assert m.max_subflows == 2 and m.mptcp_fallback is False
    # Both subflows (wifi 10.0.1.1 and lte 10.0.2.1) carried data.
    by_addr = {k.split("->")[0].rsplit(":", 1)[0]: v for k, v in m.subflow_bytes.items()}
    assert set(by_addr) == {"10.0.1.1", "10.0.2.1"}
    assert all(v > 100_000 for v in by_addr.values()), by_addr
    # More than the best single path (20 Mbit/s): aggregation happened.
    assert m.goodput_steady_mbit > 21, m.goodput_steady_mbit

    d = res.run_dir
    meta = json.loads((d / "metadata.json").read_text())
    assert meta["complete"] is True and meta["runs_done"] == 1
    assert len(meta["git"]["commit"]) == 40 and meta["kernel"]["release"] == os.uname().release
    assert meta["file_text"] == exp.text and meta["resolved_runs"][0]["stack"] == "kernel-mptcp"
    pcaps = sorted(p.name for p in (d / "pcap" / "kernel-mptcp" / "rep1").glob("*.pcap"))
    assert pcaps == ["client-eth0.pcap", "client-eth1.pcap", "server-eth0.pcap"]
    client = json.loads((d / "traffic/kernel-mptcp/rep1/main-client.json").read_text())
    server = json.loads((d / "traffic/kernel-mptcp/rep1/main-server.json").read_text())
    assert client["received_sha256"] == server["sent_sha256"]
    metrics = json.loads((d / "metrics.json").read_text())
    assert metrics["summary"][0]["stack"] == "kernel-mptcp"
    (entry,) = json.loads((d / "events.json").read_text())
    assert entry["label"] == "kernel-mptcp/rep1"
    check_pm_timeline(entry["pm_events"])


def check_pm_timeline(events: list[dict]) -> None:
    """Both hosts' path-manager events on the run's timeline, in our vocabulary: the client's
    and the server's connection created and established, the lte subflow established on
    both, in time order, within the run."""
    assert [e["t"] for e in events] == sorted(e["t"] for e in events)
    assert all(-5 < e["t"] < 60 for e in events), events
    for host in ("client", "server"):
        kinds = [e["type"] for e in events if e["host"] == host]
        assert "created" in kinds and "established" in kinds, (host, kinds)
        assert kinds.index("created") < kinds.index("established"), kinds
        joins = [e for e in events if e["host"] == host and e["type"] == "sub_established"]
        assert any("10.0.2.1" in (e.get("saddr"), e.get("daddr")) for e in joins), joins


def test_results_are_never_overwritten(tmp_path, monkeypatch):
    root = tmp_path / "results"
    # A run directory that already exists is skipped, not reused, even on a suffix collision.
    suffixes = iter(["aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr(runner.secrets, "token_hex", lambda n: next(suffixes))
    _, first = new_run_dir(root, "exp")
    (first / "marker").write_text("first")
    _, second = new_run_dir(root, "exp")
    assert second != first and second.name.endswith("bbbbbb")
    assert (first / "marker").read_text() == "first"
    monkeypatch.undo()
    # Two real runs of the same file: two directories, the first one untouched by the second.
    path = tiny(tmp_path, stacks='["tcp"]', duration=1)
    a = run_experiment(load_experiment(path), results_root=root, progress=False, analyze=False)
    meta_a = (a.run_dir / "metadata.json").read_text()
    b = run_experiment(load_experiment(path), results_root=root, progress=False, analyze=False)
    assert a.run_dir != b.run_dir and a.run_dir.parent == b.run_dir.parent
    assert (a.run_dir / "metadata.json").read_text() == meta_a
    assert a.runs[0].intact and b.runs[0].intact


def test_interrupted_run_is_marked_and_cleaned(tmp_path):
    path = tiny(tmp_path, name="interrupted", duration=30)
    root = tmp_path / "results"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "experiments",
            "run",
            str(path),
            "--results",
            str(root),
            "--no-analysis",
        ],
        cwd=REPO,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        seen = []
        for line in proc.stderr:  # the runner says when the traffic runs: that is our event
            seen.append(line)
            if "traffic running" in line:
                break
        else:
            pytest.fail(f"runner never started traffic: {''.join(seen)}")
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc != 0
    (run_dir,) = (root / "interrupted").iterdir()
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert meta["complete"] is False and meta["interrupted"] is True, rest
    assert "Interrupted" in meta["error"] and meta["end"]
    logs = run_dir / "logs" / "kernel-mptcp" / "rep1"
    nodes = json.loads((logs / "nodes.json").read_text())
    procs = json.loads((logs / "processes.json").read_text())["pids"]
    # the traffic tool's two ends and, kernel MPTCP, the path-manager monitor on each host
    assert set(nodes) == {"client", "r1", "r2", "core", "server"} and len(procs) == 4
    # The testbed is gone: no node shell (namespace holder), no traffic tool, no tcpdump, no
    # ip mptcp monitor left.
    assert [p for p in [*nodes.values(), *procs] if alive(p)] == []
    leftovers = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(run_dir) in cmd or run_dir.name in cmd:
                leftovers.append(cmd)
    assert leftovers == []
    # Nothing left in the testbed's crash registry under the runner's pid either.
    state = Path(os.environ.get("MPTCP_LAB_STATE", "/run/mptcp-lab"))
    assert not list(state.glob(f"{proc.pid}-*.json"))


def test_failover_cut_path_stops_other_carries_on(tmp_path):
    text = (
        TINY.format(name="fo", stacks='["kernel-mptcp"]', duration=5)
        + """
[[events]]
at = 2.0
link = "wifi"
action = "down"
mode = "interface"
"""
    )
    path = tmp_path / "fo.toml"
    path.write_text(text)
    res = run_experiment(
        load_experiment(path), results_root=tmp_path / "results", progress=False, analyze=False
    )
    (m,) = res.runs
    assert m.ok and m.intact, m.errors
    (f,) = m.failover
    # The event is planned 2 s after the traffic starts; on the receiver's clock it is earlier
    # by the receiver's own start-up and later by the time `ip` takes in the namespace, both
    # longer on two cores loaded by other tests (widened from 1.5-2.1 s for that).
    assert f.link == "wifi" and 1.0 < f.event_t < 3.0
    # After the cut, the wifi subflow carries nothing and lte carries on (10 Mbit/s for ~2 s).
    assert f.cut_path_bytes_after == 0
    assert f.other_paths_bytes_after > 1_000_000, f.subflow_bytes_after
    # progress resumed within this run (the gap ended before the 5 s flow did), and once it
    # had, lte carried at least half its 10 Mbit/s. (Not the goodput over the whole time after
    # the cut: the kernel's own failover gap, 0.2-1 s, is not this test's subject, and a 1.03 s
    # gap with lte's window still opening left 3.5 Mbit/s there in one CI-like run.)
    assert 0 < f.gap_s < 5.0 - f.event_t
    resumed_s = 5.0 - f.event_t - f.gap_s
    assert f.other_paths_bytes_after * 8 / 1e6 / resumed_s > 5, (f.gap_s, f.goodput_after_mbit)
    events = json.loads((res.run_dir / "events.json").read_text())
    assert events[0]["events"][0]["action"] == "down"


def test_flow_that_never_finishes_is_stopped_and_reported(tmp_path):
    # Plain TCP on wifi, whose interface goes down for good: the flow cannot complete. The run
    # must end (stopped after duration + timeout_s), keep the partial report, and say so.
    text = (
        TINY.format(name="stuck", stacks='["tcp"]', duration=2)
        + """
[[events]]
at = 1.0
link = "wifi"
action = "down"
mode = "interface"
"""
    )
    path = tmp_path / "stuck.toml"
    path.write_text(text.replace("duration_s = 2", "duration_s = 2\ntimeout_s = 2"))
    res = run_experiment(
        load_experiment(path), results_root=tmp_path / "results", progress=False, analyze=False
    )
    assert res.complete
    (m,) = res.runs
    assert not m.ok and not m.intact
    assert any("stopped" in e for e in m.errors), m.errors
    assert m.bytes > 0  # what arrived before the cut is in the partial report
    (f,) = m.failover
    assert f.gap_s > 2.0 and f.goodput_after_mbit == 0.0


def test_background_flow_runs_beside_the_main_one(tmp_path):
    text = (REPO / "experiments" / "fairness.toml").read_text()
    path = tmp_path / "fairness.toml"
    path.write_text(text.replace("duration_s = 15", "duration_s = 2"))
    exp = load_experiment(path, stack="tcp", reps=1)
    res = run_experiment(exp, results_root=tmp_path / "results", progress=False, analyze=False)
    (m,) = res.runs
    assert m.ok and m.intact, m.errors
    (bg,) = m.background
    assert bg["flow"] == "competitor" and bg["stack"] == "tcp" and bg["intact"]
    assert bg["goodput_mbit"] > 0
    d = res.run_dir / "traffic" / "tcp" / "rep1"
    assert sorted(p.name for p in d.glob("*.json")) == [
        "competitor-client.json",
        "competitor-server.json",
        "main-client.json",
        "main-server.json",
    ]


def test_userspace_aggregates_over_both_paths(tmp_path):
    # Our stack, 5 s of bulk download through the runner exactly as kernel-mptcp's run above.
    exp = load_experiment(tiny(tmp_path, name="us", stacks='["userspace"]', duration=5))
    res = run_experiment(exp, results_root=tmp_path / "results", progress=False, analyze=False)
    (m,) = res.runs
    assert m.ok and m.intact, m.errors
    assert m.max_subflows == 2 and m.mptcp_fallback is False
    by_addr = {k.split("->")[0].rsplit(":", 1)[0]: v for k, v in m.subflow_bytes.items()}
    assert set(by_addr) == {"10.0.1.1", "10.0.2.1"}
    assert all(v > 1_000_000 for v in by_addr.values()), by_addr
    assert m.goodput_steady_mbit > 21, m.goodput_steady_mbit
    d = res.run_dir / "traffic" / "userspace" / "rep1"
    client = json.loads((d / "main-client.json").read_text())
    server = json.loads((d / "main-server.json").read_text())
    assert client["proto"] == server["proto"] == "userspace"
    assert client["received_sha256"] == server["sent_sha256"]
    assert client["bytes_received"] == server["bytes_sent"] > 10_000_000
    # our stack's path-manager events, in the kernel's vocabulary, on the run's timeline
    (entry,) = json.loads((res.run_dir / "events.json").read_text())
    check_pm_timeline(entry["pm_events"])


def test_userspace_failover_carries_on_over_lte(tmp_path):
    # wifi silently blackholed at 3 s of 8: our stack must move the data to lte.
    text = (
        TINY.format(name="usfo", stacks='["userspace"]', duration=8)
        + """
[[events]]
at = 3.0
link = "wifi"
action = "down"
mode = "blackhole"
"""
    )
    path = tmp_path / "usfo.toml"
    path.write_text(text)
    res = run_experiment(
        load_experiment(path), results_root=tmp_path / "results", progress=False, analyze=False
    )
    (m,) = res.runs
    assert m.ok and m.intact, m.errors
    by_addr = {k.split("->")[0].rsplit(":", 1)[0]: v for k, v in m.subflow_bytes.items()}
    assert all(v > 1_000_000 for v in by_addr.values()), by_addr
    (f,) = m.failover
    assert f.cut_path_bytes_after == 0, f.subflow_bytes_after
    assert f.other_paths_bytes_after > 2_000_000, f.subflow_bytes_after
    assert 0 < f.gap_s < 2.0 and f.goodput_after_mbit > 5, f
