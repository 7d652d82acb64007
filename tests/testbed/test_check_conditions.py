"""testbed-check's condition measurement (testbed/check.py check_conditions) on a real
two_path testbed: what the links do passes, and a file that claims other values than the
links carry is caught (the bands are narrow enough to tell). One measurement of each path,
judged against the true claims and against the false ones (judge_conditions is pure)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from testbed.check import (
    check_conditions,
    judge_conditions,
    judge_corruption,
    measure_conditions,
    measure_corruption,
)
from testbed.net import Testbed
from testbed.topology import LossModel, load_topology
from testbed.trace import Trace
from testbed.tracecheck import judge_trace, measure_trace

pytestmark = pytest.mark.net
OFF_PROBES = 5000  # corruption switched off, against a claim of 1% (see its test)


def test_conditions_measured_and_a_false_claim_caught(tmp_path):
    topo = load_topology(
        "two_path",
        [
            "links.wifi.reorder_pct=2",
            "links.wifi.duplicate_pct=1",
            "links.lte.loss_model={p = 1, r = 25}",
        ],
    )
    with Testbed(topo, workdir=tmp_path) as tb:
        wifi, lte = tb.paths
        runs = {p.name: measure_conditions(tb, p) for p in (wifi, lte)}

        def judged(models: dict) -> dict:
            return {
                c.condition: c
                for p in (wifi, lte)
                for c in judge_conditions(p, [models[k] for k in p.links], runs[p.name])
            }

        got = judged(tb.models)
        assert set(got) == {"reorder_pct", "duplicate_pct", "ge_loss_pct", "ge_burst"}
        assert all(c.ok for c in got.values()), got
        # Claims the links do not carry (the emulators keep the real ones): 1.2% reordering
        # and 2% duplication instead of 2% and 1%; bursts of 2 at the same mean loss (each claim
        # lies over 4 sigma of the measurement from the truth).
        claims = dict(tb.models)
        claims["wifi"] = replace(claims["wifi"], reorder_pct=1.2, duplicate_pct=2.0)
        claims["lte"] = replace(claims["lte"], loss_model=LossModel(p=2, r=50))
        false = judged(claims)
        assert not false["reorder_pct"].ok, false["reorder_pct"]
        assert not false["duplicate_pct"].ok, false["duplicate_pct"]
        assert false["ge_loss_pct"].ok, false["ge_loss_pct"]  # same mean loss: 1/26 vs 2/52
        assert not false["ge_burst"].ok, false["ge_burst"]


def test_a_trace_link_is_measured_and_a_false_trace_caught(tmp_path):
    """cellular_wifi's lte link follows the recorded Verizon trace: saturated, the downlink
    carries the trace's rate over the span (and the figure is written); told it carries twice
    the opportunities (a claim made up here, judged against the same measurement), the check
    sees the difference."""
    topo = load_topology("cellular_wifi", ["links.wifi.loss_model=false"])
    with Testbed(topo, workdir=tmp_path) as tb:
        lte = next(p for p in tb.paths if p.name == "lte")
        real = tb.models["lte"].trace_down
        seen = measure_trace(tb, lte, "lte", False, real, seconds=3)
        down = judge_trace(seen, real, outdir=tmp_path / "fig")
        assert down.ok, down
        assert len(down.bins) >= 2 and Path(down.figure).stat().st_size > 10_000
        # the same measurement against the false trace (judge_trace is pure but for the figure)
        doubled = Trace("doubled", tuple(sorted(real.times * 2)))
        false = judge_trace(seen, doubled)
        assert not false.ok, false
        assert false.got_mbit == down.got_mbit and false.want_mbit > 1.8 * down.want_mbit, false


def test_corruption_measured_switched_at_run_time_and_false_claims_caught(tmp_path):
    """wifi corrupts 2% with checksums left wrong: measured as stated. A file claiming 1% with
    checksums fixed up is caught on both counts (the same measurement judged against that
    claim: judge_corruption is pure, as judge_conditions). tb.set_link then makes that claim
    true while the link runs (the emulator's queue switches modes under traffic), and
    corruption switched off shows as no corruption at all against a claim of 1%."""
    topo = load_topology("two_path", ["links.wifi.corrupt_pct=2"])
    with Testbed(topo, workdir=tmp_path) as tb:
        wifi = next(p for p in tb.paths if p.links[0] == "wifi")

        def check() -> dict:
            return {c.condition: c for c in check_conditions(tb, wifi)}

        seen = measure_corruption(tb, wifi)
        got = {c.condition: c for c in judge_corruption(wifi, [tb.models["wifi"]], seen)}
        assert set(got) == {"corrupt_pct", "corrupt_bad_csum_pct"}
        assert all(c.ok for c in got.values()), got
        assert got["corrupt_bad_csum_pct"].got == 100.0
        claim = {"corrupt_pct": 1.0, "corrupt_fix_checksum": True}
        false_models = [replace(tb.models["wifi"], **claim)]
        false = {c.condition: c for c in judge_corruption(wifi, false_models, seen)}
        assert not false["corrupt_pct"].ok and not false["corrupt_bad_csum_pct"].ok, false
        tb.set_link("wifi", **claim)
        got = check()  # (check_conditions: corruption only, no UDP probes for it)
        assert set(got) == {"corrupt_pct", "corrupt_bad_csum_pct"}
        assert all(c.ok for c in got.values()), got
        assert got["corrupt_bad_csum_pct"].got == 0.0
        tb.set_link("wifi", corrupt_pct=0)
        tb.models["wifi"] = replace(tb.models["wifi"], corrupt_pct=1.0)
        # 5000 probes, not 20000 (1.25 s of them instead of 5): that none arrives corrupted
        # where 1% were claimed is as sure (a link still at 1% would spare all 5000 with a
        # chance of e^-50), and the claim's band still excludes 0 (1% - 5 sigma = 0.30% at
        # 5000 probes; 0.65% at 20000), so the claim is judged false as before
        off = {c.condition: c for c in check_conditions(tb, wifi, probes=OFF_PROBES)}
        assert off["corrupt_pct"].lo > 0, off
        assert off["corrupt_pct"].got == 0.0 and not off["corrupt_pct"].ok, off
