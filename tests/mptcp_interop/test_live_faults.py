"""Compound faults against Linux, live: loss on both paths and a path cut in the middle, our
client to a Linux server and a Linux client to our server (``benchmarks/live_fault_bench.py``
runs every family 20 times, with Linux to Linux as the control)."""

from __future__ import annotations

import pytest

from testkit.livefaults import run_family

pytestmark = pytest.mark.net


def test_loss_and_a_cut_both_directions_intact(tmp_path):
    runs = run_family("loss_cut", 1, 4_000_000, 30.0, ("ours->linux", "linux->ours"), tmp_path)
    assert [r.outcome for r in runs] == ["intact", "intact"], runs
