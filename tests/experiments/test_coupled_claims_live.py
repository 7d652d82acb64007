"""The two_bottlenecks topology live (experiments/coupled_cc_congested.toml, shortened): the
MPTCP client's two paths cross two different 10 Mbit/s bottlenecks, and the competing TCP
flows meet only the first. A few seconds of traffic; run under the live lock."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.campaign_report import load_runs
from experiments.config import load_experiment
from experiments.coupled_claims import path_share
from experiments.runner import run_experiment

pytestmark = pytest.mark.net
SHIPPED = Path(__file__).resolve().parents[2] / "experiments"


def test_two_disjoint_bottlenecks_with_the_competitors_on_one(tmp_path):
    path = tmp_path / "coupled_cc_congested.toml"  # every flow 4 s instead of 15
    text = (SHIPPED / path.name).read_text()
    path.write_text(text.replace("duration_s = 15", "duration_s = 4"))
    exp = load_experiment(
        path, ["repetitions=1", 'grid.stack.userspace.cc=["reno"]', "metrics.warmup_s=1.5"]
    )
    res = run_experiment(exp, results_root=tmp_path / "results", progress=False, analyze=False)
    (m,) = res.runs
    assert m.ok and m.intact, m.errors
    assert all(b["intact"] and b["goodput_steady_mbit"] > 1 for b in m.background), m.background
    # more than one 10 Mbit/s bottleneck could carry: the paths do not share one
    assert m.goodput_steady_mbit > 11, m.goodput_steady_mbit
    (run,) = load_runs(res.run_dir)
    share = path_share(run, exp.claims["addr"], exp.claims["warmup_s"])
    # uncoupled Reno beside two Reno flows on mp1 gets about a third of it: well under half
    assert share is not None and 0.05 < share < 0.5, share
