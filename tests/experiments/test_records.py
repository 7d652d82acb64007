"""Results of record (experiments/records.py): the writer and the comparer on a finished
campaign folder built by hand (file logic: no network, no runner)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.campaign_report import claims
from experiments.records import (
    RecordError,
    compare,
    comparison_lines,
    reproduce,
    write_record,
)

SHARES = {
    "tcp": [0.50, 0.51, 0.49],
    "userspace-lia": [0.48, 0.49, 0.47],  # -0.02 [-0.043, 0.003] < 0.05: agrees
    "userspace-olia": [0.70, 0.71, 0.69],  # 0.2 [...]: disagrees
}


def _finished_campaign(root: Path, shares: dict[str, list[float]], idle: str = "") -> Path:
    """A coupled_cc-like campaign folder as the runner leaves it: metadata.json (complete,
    machines with loads), metrics.json, traffic reports, a pcap that must not reach a record.
    `idle`: a run label whose second subflow carried nothing."""
    d = root / "results" / "coupled_cc" / "20261207T120000Z-abcdef"
    runs, machines = [], {}
    loads = iter(round(0.1 * i, 1) for i in range(1, 19))  # 0.1 .. 1.8, before/after each run
    for v, values in shares.items():
        for rep, s in enumerate(values, 1):
            label = f"{v}/rep{rep}"
            sub = {} if v == "tcp" else {"a->b": 9000, "c->b": 0 if label == idle else 4000}
            runs.append(
                {
                    "label": label,
                    "stack": v.split("-")[0],
                    "variant": v,
                    "point": 0,
                    "point_values": {"stack.userspace.cc": v.split("-")[-1]} if "-" in v else {},
                    "rep": rep,
                    "ok": True,
                    "intact": True,
                    "duration_s": 12.0,
                    "goodput_mbit": 20 * s,
                    "goodput_steady_mbit": 20 * s,
                    "aggregation_benefit": None,
                    "max_subflows": 0 if v == "tcp" else 2,
                    "subflow_bytes": sub,
                    "failover": [],
                    "background": [{"flow": "competitor", "goodput_mbit": 20 * (1 - s)}],
                    "mptcp_counters": {},
                }
            )
            machines[label] = {
                "hostname": "vm",
                "kernel": "6.18.44",
                "cpu_model": "AMD EPYC",
                "cpus": 2,
                "load_before": [next(loads), 0.5, 0.5],
                "load_after": [next(loads), 0.5, 0.5],
            }
            tdir = d / "traffic" / label
            tdir.mkdir(parents=True)
            (tdir / "main-client.json").write_text(json.dumps({"spec": {"kind": "bulk"}}))
            pdir = d / "pcap" / label
            pdir.mkdir(parents=True)
            (pdir / "client-eth0.pcap").write_bytes(b"\xd4\xc3\xb2\xa1")
    (d / "metrics.json").write_text(json.dumps({"runs": runs, "summary": []}))
    meta = {
        "experiment": "coupled_cc",
        "description": "shared_bottleneck: coupled controllers vs one TCP flow",
        "run_id": d.name,
        "source": "experiments/coupled_cc.toml",
        "file_sha256": "ab" * 32,
        "overrides": ["grid.stack.userspace.cc=['lia','olia']"],
        "seed": 1,
        "repetitions": 3,
        "stacks": ["tcp", "userspace"],
        "git": {"commit": "0123456789abcdef" * 2 + "01234567", "dirty": False, "branch": "main"},
        "kernel": {"release": "6.18.44-fc-v1300", "version": "#1 SMP", "sysctls": {"x": 1}},
        "host": {"hostname": "vm", "cpus": 2},
        "start": "2026-12-07T12:00:00+00:00",
        "end": "2026-12-07T12:10:00+00:00",
        "complete": True,
        "runs_total": len(runs),
        "runs_done": len(runs),
        "machines": machines,
    }
    (d / "metadata.json").write_text(json.dumps(meta))
    return d


def test_record_from_a_finished_campaign(tmp_path):
    run = _finished_campaign(tmp_path, SHARES, idle="userspace-lia/rep3")
    out = write_record(run, tmp_path / "records")
    assert out == tmp_path / "records" / "coupled_cc"
    assert sorted(p.name for p in out.iterdir()) == ["metadata.json", "metrics.json", "report.md"]
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["commit"].startswith("0123456789") and meta["dirty"] is False
    assert meta["kernel"] == {"release": "6.18.44-fc-v1300", "version": "#1 SMP"}
    assert meta["overrides"] == ["grid.stack.userspace.cc=['lia','olia']"]
    # 18 load readings (before/after x 9 runs): 0.1 .. 1.8, mean 17.1 / 18 = 0.95
    load = meta["load_during_run"]
    assert (load["n"], load["min"], load["max"], load["mean"]) == (18, 0.1, 1.8, 0.95)
    m = json.loads((out / "metrics.json").read_text())
    rows = {r["label"]: r for r in m["runs"]}
    assert len(rows) == 9 and rows["userspace-lia/rep3"]["excluded"] is True
    assert rows["userspace-lia/rep3"]["data_subflows"] == 1
    assert rows["tcp/rep1"]["excluded"] is False and rows["tcp/rep1"]["share"] == 0.5
    verdicts = {c["short"]: c["outcome"] for c in m["claims"]}
    # LIA keeps two runs (0.48, 0.49): -0.015 [-0.049, 0.019] < 0.05 still agrees
    assert verdicts == {
        "userspace-lia no more than one TCP": "agrees",
        "userspace-olia no more than one TCP": "disagrees",
    }
    report = (out / "report.md").read_text()
    assert "Welch t interval" in report and "../../../analysis/DEFINITIONS.md" in report
    assert "| userspace-olia no more than one TCP |" in report
    assert "| userspace-lia/rep3 | userspace-lia | 1 |" in report
    assert "load 0.1-1.8 (mean 0.95" in report and "commit 0123456789" in report
    # no captures in a record, nothing of the traffic folders
    assert not list(out.rglob("*.pcap")) and not (out / "traffic").exists()


def test_a_record_needs_a_finished_campaign(tmp_path):
    run = _finished_campaign(tmp_path, SHARES)
    meta = json.loads((run / "metadata.json").read_text())
    meta.update(complete=False, runs_done=4, error="interrupted by SIGTERM")
    (run / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(RecordError, match="did not finish .4/9 runs; interrupted by SIGTERM"):
        write_record(run, tmp_path / "records")
    with pytest.raises(RecordError, match="not a campaign folder"):
        write_record(tmp_path, tmp_path / "records")


def test_the_comparer_says_claim_by_claim_whether_the_verdict_is_reproduced(tmp_path):
    records = tmp_path / "records"
    write_record(_finished_campaign(tmp_path / "a", SHARES), records)
    # the same data: every verdict reproduced
    same, rows = reproduce("coupled_cc", _finished_campaign(tmp_path / "b", SHARES), records)
    assert [r.same for r in rows] == [True, True]
    assert comparison_lines(rows)[-1] == "2 of 2 claims reproduce the record's verdict"
    # OLIA now takes no more than one TCP: that claim's verdict changed, LIA's did not
    changed = dict(SHARES, **{"userspace-olia": [0.49, 0.50, 0.48]})
    _, rows = reproduce("coupled_cc", _finished_campaign(tmp_path / "c", changed), records)
    lines = comparison_lines(rows)
    assert lines[0].startswith("same      userspace-lia no more than one TCP: recorded agrees")
    assert lines[1].startswith(
        "DIFFERENT userspace-olia no more than one TCP: recorded disagrees (0.2 ["
    )
    assert ", now agrees (-0.01 [" in lines[1]
    assert lines[-1] == "1 of 2 claims reproduce the record's verdict"


def test_a_claim_only_one_side_has_is_absent_on_the_other(tmp_path):
    records = tmp_path / "records"
    write_record(_finished_campaign(tmp_path / "a", SHARES), records)
    fewer = {k: v for k, v in SHARES.items() if k != "userspace-olia"}
    now, _ = claims(_finished_campaign(tmp_path / "b", fewer))
    rows = compare(records / "coupled_cc", now)
    olia = next(r for r in rows if "olia" in r.claim)
    assert (olia.recorded, olia.now, olia.same) == ("disagrees", "absent", False)


def test_reproduce_without_a_record_names_what_there_is(tmp_path):
    write_record(_finished_campaign(tmp_path, SHARES), tmp_path / "records")
    with pytest.raises(RecordError, match=r"no record of 'schedulers' .*\['coupled_cc'\]"):
        reproduce("schedulers", tmp_path, tmp_path / "records")


def test_the_readme_tables_are_the_records():
    """experiments/README.md shows the records' tables as generated from them (./inv record
    rewrites the section), so a table there can never drift from its record."""
    from experiments.records import BEGIN, END, README, RECORDS, readme_section

    text = README.read_text()
    shown = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert shown == readme_section()
    for rec in (p for p in RECORDS.iterdir() if (p / "metrics.json").exists()):
        assert f"### {rec.name}:" in shown
