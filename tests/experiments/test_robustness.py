"""Issue 19's robustness campaign: named conditions in experiment files (each alone and all
together, maybe on another topology), the link conditions and emulator counts in the results
and reports, and the reordering split (network vs scheduling) on real captures.

The first tests read files only (milliseconds). The live one runs two short runs on real
namespaces through the runner: TCP over a link that reorders (network reordering, no
scheduling reordering) and kernel MPTCP over two clean paths of different RTTs (the opposite),
then reads the numbers back from the analysis and the reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.metrics import reordering_split, reordering_summary
from experiments.campaign_report import write_campaign_report
from experiments.config import ExperimentError, load_experiment, resolve_runs
from experiments.report import write_summary

SHIPPED = Path(__file__).resolve().parents[2] / "experiments"


def test_robustness_file_loads_and_its_grid_validates():
    exp = load_experiment(SHIPPED / "robustness.toml")
    runs = resolve_runs(exp)
    conds = exp.grid["condition"]
    assert conds == [
        "clean",
        "reordering",
        "duplication",
        "bursty_loss",
        "corruption",
        "corruption_fixed",
        "all",
        "cellular_wifi",
    ]
    assert {r.stack for r in runs} == {"kernel-mptcp", "userspace", "tcp"}
    assert len(runs) == len(conds) * 3 * exp.repetitions and exp.repetitions >= 3
    by = {r.point_values["condition"]: r.topology_set for r in runs}
    topo = {r.point_values["condition"]: r.topology for r in runs}
    assert topo["cellular_wifi"] == "cellular_wifi" and by["cellular_wifi"] == {}
    assert {topo[c] for c in conds if c != "cellular_wifi"} <= {"", "two_path"}
    assert by["clean"] == {}
    assert by["all"]["links.lte.loss_model"] == {"p": 0.5, "r": 30}
    assert set(by["all"]) == (
        set(by["reordering"]) | set(by["duplication"]) | set(by["bursty_loss"])
    ) | set(by["corruption"])
    assert by["corruption_fixed"]["links.wifi.corrupt_fix_checksum"] is True
    # a --set pin wins over every condition
    pinned = load_experiment(SHIPPED / "robustness.toml", ["links.wifi.reorder_pct=0"])
    assert all(r.topology_set["links.wifi.reorder_pct"] == 0 for r in resolve_runs(pinned))


BASE = """
name = "c"
stacks = ["tcp"]
[topology]
name = "two_path"
[traffic]
duration_s = 1
[grid]
condition = ["clean", "x"]
[conditions.clean]
"""


@pytest.mark.parametrize(
    "bundle, field",
    [
        ('[conditions.y]\n"links.wifi.reorder_pct" = 2', "grid.condition[1]"),
        ('[conditions.x]\n"links.wifi.reorder_pct" = 200', "conditions.x.links.wifi.reorder_pct"),
        ('[conditions.x]\n"traffic.bytes" = 2', "conditions.x.traffic.bytes"),
        ('[conditions.x]\ntopology = "nosuch"', "conditions.x.topology"),
        ("[conditions.x]\ntopology = 3", "conditions.x.topology"),
    ],
)
def test_bad_conditions_name_the_field(tmp_path, bundle, field):
    p = tmp_path / "c.toml"
    p.write_text(BASE + bundle + "\n")
    with pytest.raises(ExperimentError) as e:
        load_experiment(p)
    assert e.value.field == field and str(p) in str(e.value)


def test_a_condition_may_name_its_own_topology(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(BASE + '[conditions.x]\ntopology = "n_path"\n')
    runs = resolve_runs(load_experiment(p))
    assert [r.topology for r in runs] == ["", "n_path"]


def test_robustness_report_table_and_verdict(tmp_path):
    d = tmp_path / "camp"
    d.mkdir()
    runs = []
    for cond, cells in {
        "clean": {"tcp": [(True, 19.0)] * 2, "kernel-mptcp": [(True, 27.0), (True, 28.0)]},
        "all": {"tcp": [(True, 9.0), (False, 5.0)], "kernel-mptcp": [(True, 20.0)] * 2},
    }.items():
        for v, rs in cells.items():
            for i, (intact, g) in enumerate(rs, 1):
                runs.append(
                    {
                        "label": f"{v}/p{cond}-rep{i}",
                        "stack": v,
                        "variant": v,
                        "point": 0,
                        "point_values": {"condition": cond},
                        "rep": i,
                        "intact": intact,
                        "goodput_mbit": g,
                        "link_conditions": {"wifi": {"reorder_pct": "2 %"}},
                        "emulator": {"wifi": {"r1->client": {"packets": 100, "reordered": 2}}},
                    }
                )
    (d / "metrics.json").write_text(json.dumps({"runs": runs, "summary": []}))
    meta = {
        "experiment": "robustness",
        "conditions": {"clean": {}, "all": {"links.wifi.reorder_pct": 2}},
        "source": "x",
        "file_sha256": "0" * 64,
        "seed": 1,
        "kernel": {"release": "k"},
        "runs_done": 8,
        "runs_total": 8,
    }
    (d / "metadata.json").write_text(json.dumps(meta))
    page = write_campaign_report(d).read_text()
    assert "Robustness: data intact and goodput" in page
    assert "<td class='l'>1/2 intact, 7 ± 25 Mbit/s (n=2)</td>" in page
    assert "<td class='l'>wifi.reorder_pct=2</td>" in page
    assert "kernel-mptcp kept its data intact in all 4 runs, goodput from 20 Mbit/s (all) to " in (
        page
    )
    assert "tcp: data NOT intact in 1 of 4 runs: all (1 of 2)" in page
    md = write_summary([d], d / "summary.md").read_text()
    assert "- wifi: reorder_pct 2 % — r1->client: packets 100, reordered 2" in md


def _rx(rows: list[tuple[float, int, int, int, int]]) -> pd.DataFrame:
    """Receiver segments (time, subflow, subflow seq, dsn, length)."""
    t, sf, seq, dsn, ln = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "time": t,
            "subflow": sf,
            "seq": seq,
            "dsn": np.array(dsn, np.uint64),
            "payload_len": ln,
        }
    )


def test_reordering_split_by_hand():
    # sf0 carries dsn 0, 100, 300 (its seq 1000, 1100, 1200); sf1 carries dsn 200 (seq 5000).
    # sf0's seq 1100 arrives after 1200 (the link reordered it); dsn 200 on the slow sf1 arrives
    # last although in order on its subflow (the scheduler's doing).
    rx = _rx(
        [
            (0.0, 0, 1000, 0, 100),
            (0.1, 0, 1200, 300, 100),
            (0.3, 0, 1100, 100, 100),
            (0.5, 1, 5000, 200, 100),
        ]
    )
    s = reordering_split(rx)
    assert s["network_reordered"].tolist() == [False, False, True, False]
    assert s["scheduling_reordered"].tolist() == [False, False, False, True]
    # dsn 300 waits 0.4 s in all: 0.2 s for its subflow's 1100, then 0.2 s for dsn 200
    # (dsn 100 itself waits for nothing: everything below it was there)
    assert s["total_s"].round(6).tolist() == [0.0, 0.4, 0.0, 0.0]
    assert s["network_s"].round(6).tolist() == [0.0, 0.2, 0.0, 0.0]
    assert s["scheduling_s"].round(6).tolist() == [0.0, 0.2, 0.0, 0.0]
    r = reordering_summary(s)
    assert (r["network_reordered"], r["scheduling_reordered"], r["loss_repairs"]) == (1, 1, 0)
    assert r["max_ms"] == pytest.approx(200)


LIVE = """
name = "reorder_split"
seed = 2
stacks = ["tcp", "kernel-mptcp"]
[topology]
name = "two_path"
[traffic]
kind = "bulk"
direction = "download"
duration_s = 2
[grid]
condition = ["clean", "reordering"]
[conditions.clean]
[conditions.reordering]   # on wifi only: the path TCP takes
"links.wifi.reorder_pct" = 2
[stack.kernel-mptcp]
endpoints = [{ host = "client", link = "lte", flags = ["subflow"] }]
[metrics]
warmup_s = 0.5
"""


@pytest.mark.net
def test_reordering_split_and_conditions_on_real_runs(tmp_path):
    """TCP over a reordering wifi link: network reordering, no scheduling reordering; kernel
    MPTCP over the clean paths (RTT 20 vs 80 ms): the opposite. The runs' links and what the
    emulators counted are in metrics.json, summary.md and the reports."""
    from experiments.runner import run_experiment

    p = tmp_path / "e.toml"
    p.write_text(LIVE)
    exp = load_experiment(p)
    # runs: 0 tcp clean, 1 kernel-mptcp clean, 2 tcp reordering, 3 kernel-mptcp reordering
    res = run_experiment(exp, results_root=tmp_path / "r", progress=False, only_runs=[1, 2])
    runs = {r["label"]: r for r in json.loads((res.run_dir / "metrics.json").read_text())["runs"]}
    tcp, mp = runs["tcp/p1-rep1"], runs["kernel-mptcp/p0-rep1"]
    assert tcp["intact"] and mp["intact"]
    assert tcp["link_conditions"]["wifi"]["reorder_pct"] == "2 %"
    assert "reorder_pct" not in mp["link_conditions"]["wifi"]
    assert tcp["link_conditions"]["lte"]["delay_ms"] == "40 ms"
    down = tcp["emulator"]["wifi"]["r1->client"]
    assert down["packets"] > 100 and 0 < down["reordered"] < 0.1 * down["packets"]
    assert mp["emulator"]["wifi"]["r1->client"]["reordered"] == 0

    rows = {
        r["run"]: r
        for r in json.loads((res.run_dir / "analysis" / "metrics.json").read_text())["rows"]
    }
    t, m = rows["tcp-p1-rep1"], rows["kernel-mptcp-p0-rep1"]
    assert t["network_reordered_pct"] > 0.5, t
    assert t["sched_reordered_pct"] == 0 and t["reorder_p95_ms"] == 0, t
    assert m["sched_reordered_pct"] > 5 and m["reorder_p95_ms"] > 10, m
    assert m["network_reordered_pct"] < 0.1, m
    # TCP's waits are all the network's: the reordering delay (scheduling) is 0 throughout,
    # while segments did wait in its subflow's queue (the whole head-of-line wait did too)
    view = json.loads((res.run_dir / "analysis" / "tcp-p1-rep1" / "metrics.json").read_text())
    ro = view["groups"][0]["connections"][0]["reordering"]
    assert ro["max_ms"] == 0 and ro["network_max_ms"] > 1, ro
    assert ro["network_reordered"] >= 0.5 * down["reordered"] > 0, ro

    page = (res.run_dir / "analysis" / "report.html").read_text()
    assert "Link conditions per grid point" in page and "reorder_pct 2 %" in page
    run_page = (res.run_dir / "analysis" / "tcp-p1-rep1" / "report.html").read_text()
    assert "<h3>Link conditions</h3>" in run_page
    assert f"packets {down['packets']}, reordered {down['reordered']} (" in run_page
    md = write_summary([res.run_dir], res.run_dir / "summary.md").read_text()
    assert "  - wifi: rate_mbit 20 Mbit/s, delay_ms 10 ms, queue_pkts 100 packets, " in md
