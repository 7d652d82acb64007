"""experiments/middleboxes.toml through the real runner, cut down to two middleboxes and two
stacks: each run records the counters that changed, what the middlebox did and the outcome, and
both reports show the outcome per middlebox and stack."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from experiments.config import load_experiment
from experiments.report import write_summary
from experiments.runner import run_experiment

pytestmark = pytest.mark.net


def test_middleboxes_experiment_outcomes(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    exp = load_experiment(
        Path(__file__).resolve().parents[2] / "experiments" / "middleboxes.toml",
        overrides=[
            'grid.links.wifi.middlebox=["strip-mptcp-syn", "seq-rewrite"]',
            'stacks=["kernel-mptcp", "userspace"]',
            "traffic.bytes=1000000",
        ],
    )
    res = run_experiment(exp, results_root=tmp_path, progress=False)
    assert res.complete
    runs = {(r.stack, r.point_values["links.wifi.middlebox"]): r for r in res.runs}
    assert len(runs) == 4
    for stack in ("kernel-mptcp", "userspace"):
        strip, seq = runs[(stack, "strip-mptcp-syn")], runs[(stack, "seq-rewrite")]
        assert strip.outcome.startswith("fallback to TCP (SYN/ACK without MP_CAPABLE)"), strip
        assert strip.mptcp_counters["client"]["MPCapableFallbackSYNACK"] == 1
        assert strip.middlebox["wifi"]["in"]["options_stripped"] == 1
        assert seq.outcome == "MPTCP, 2 subflows; intact", seq
        assert seq.mptcp_counters["server"]["MPJoinAckRx"] == 1
        assert seq.middlebox["wifi"]["in"]["changed"] > 100
    saved = json.loads((res.run_dir / "metrics.json").read_text())["runs"]
    assert {r["outcome"] for r in saved} == {r.outcome for r in res.runs}
    html = res.report.read_text()
    assert "MPTCP outcome per grid point and stack" in html
    assert "handshake 1 fallback; on the way: MPTCP option removed" in html
    assert "on the way: sequence rewritten" in html
    summary = write_summary([res.run_dir], tmp_path / "summary.md").read_text()
    assert "| links.wifi.middlebox=seq-rewrite | userspace | MPTCP, 2 subflows; intact |" in summary
