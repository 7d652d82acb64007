"""The campaigns of issue 11 (schedulers, coupled_cc, handover_modes): a grid over a stack's
option makes variants of that stack, bad keys name the file and the field, tiny versions of the
shipped files parse, and the campaign report's sections render from a fixture campaign
(metrics.json and traffic reports as the runner writes them). No network; a few seconds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from experiments.campaign_report import write_campaign_report
from experiments.config import ExperimentError, load_experiment, resolve_runs

SHIPPED = Path(__file__).resolve().parents[2] / "experiments"

TINY = """
name = "tiny_sched"
stacks = ["tcp", "userspace"]
[topology]
name = "two_path"
[traffic]
kind = "bulk"
bytes = 100000
[grid]
"links.lte.delay_ms" = [10, 50]
"stack.userspace.scheduler" = ["minrtt", "blest"]
"""


def _file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "e.toml"
    p.write_text(text)
    return p


def test_stack_grid_makes_variants_and_other_stacks_run_once_per_point(tmp_path):
    runs = resolve_runs(load_experiment(_file(tmp_path, TINY)))
    # 2 delays x (tcp once + userspace per scheduler)
    assert len(runs) == 6
    assert sorted({r.variant for r in runs}) == ["tcp", "userspace-blest", "userspace-minrtt"]
    blest = [r for r in runs if r.variant == "userspace-blest"]
    assert all(r.stack_options["scheduler"] == "blest" for r in blest)
    tcp = [r for r in runs if r.stack == "tcp"]
    assert all("stack.userspace.scheduler" not in r.point_values for r in tcp)
    assert len({r.label for r in runs}) == len(runs)


def test_stack_option_grid_without_that_stack_runs_the_others_once_per_point(tmp_path):
    runs = resolve_runs(load_experiment(_file(tmp_path, TINY), stack="tcp"))
    assert [(r.variant, r.point_values) for r in runs] == [
        ("tcp", {"links.lte.delay_ms": 10}),
        ("tcp", {"links.lte.delay_ms": 50}),
    ]


@pytest.mark.parametrize(
    "grid, field",
    [
        ('"stack.userspace.scheduler" = ["minrtt", "nosuch"]', "grid.stack.userspace.scheduler[1]"),
        ('"stack.userspace.colour" = ["red"]', "grid.stack.userspace.colour[0]"),
        ('"stack.kernel-mptcp.limits" = [1]', "grid.stack.kernel-mptcp.limits[0]"),
        ('"stack.nosuch.cc" = ["lia"]', "grid.stack.nosuch.cc"),
    ],
)
def test_bad_stack_grid_keys_name_file_and_field(tmp_path, grid, field):
    text = TINY.replace('"stack.userspace.scheduler" = ["minrtt", "blest"]', grid)
    with pytest.raises(ExperimentError) as e:
        load_experiment(_file(tmp_path, text))
    assert e.value.field == field and str(tmp_path) in str(e.value)


@pytest.mark.parametrize("name", ["schedulers", "coupled_cc", "handover_modes"])
def test_tiny_campaign_files_parse(name):
    exp = load_experiment(SHIPPED / f"{name}.toml", ["repetitions=1"])
    variants = {r.variant for r in resolve_runs(exp)}
    assert len(variants) >= 4
    grid_key = next(k for k in exp.grid if k.startswith("stack."))
    tiny = load_experiment(
        SHIPPED / f"{name}.toml", [f"grid.{grid_key}={json.dumps(exp.grid[grid_key][:2])}"]
    )
    assert len(resolve_runs(tiny)) < len(resolve_runs(exp))


def _run(label, variant, point, **kw):
    base = {
        "label": label,
        "stack": variant.split("-")[0],
        "variant": variant,
        "point": 0,
        "point_values": point,
        "rep": 1,
        "ok": True,
        "intact": True,
        "bytes": 1,
        "duration_s": 1.0,
        "goodput_mbit": 10.0,
        "goodput_steady_mbit": 10.0,
        "max_subflows": 2,
        "aggregation_benefit": 0.3,
        "failover": [],
        "background": [],
    }
    return {**base, **kw}


def _campaign(tmp_path: Path) -> Path:
    d = tmp_path / "camp"
    runs = []
    k = 0
    for delay in (10, 50):
        for kind in ("bulk", "reqresp"):
            for s, dur, lat in (
                ("minrtt", 1.4, 60),
                ("blest", 1.2, 50),
                ("ecf", 1.1, 45),
                ("roundrobin", 1.6, 80),
                ("redundant", 2.5, 40),
            ):
                for rep in (1, 2):
                    k += 1
                    label = f"userspace/p{k}-rep{rep}"
                    pv = {
                        "links.lte.delay_ms": delay,
                        "traffic.kind": kind,
                        "stack.userspace.scheduler": s,
                    }
                    runs.append(
                        _run(
                            label,
                            f"userspace-{s}",
                            pv,
                            duration_s=dur + 0.1 * rep,
                            aggregation_benefit=-0.2 if s == "redundant" else 0.4 - delay / 200,
                        )
                    )
                    tdir = d / "traffic" / label
                    tdir.mkdir(parents=True)
                    (tdir / "main-client.json").write_text(
                        json.dumps(
                            {
                                "spec": {"kind": kind, "direction": "download"},
                                "latencies_ms": [lat + i for i in range(10)]
                                if kind == "reqresp"
                                else [],
                                "samples": [[i / 10, i * 1e5] for i in range(30)],
                                "subflow_samples": [
                                    [i / 10, {"a->b": i * 6e4, "c->b": i * 4e4}] for i in range(30)
                                ],
                            }
                        )
                    )
    for v, share in (("tcp", 0.5), ("kernel-mptcp", 0.66), ("userspace-lia", 0.48)):
        runs.append(
            _run(
                f"{v}/rep1",
                v,
                {},
                goodput_mbit=20 * share,
                background=[{"flow": "competitor", "goodput_mbit": 20 * (1 - share)}],
            )
        )
    for v, gap in (
        ("userspace-FullMptcp", 0.1),
        ("userspace-Backup", 0.3),
        ("userspace-SinglePathThenJoin", 0.8),
    ):
        label = f"{v}/rep1"
        runs.append(
            _run(
                label,
                v,
                {},
                failover=[
                    {
                        "link": "wifi",
                        "event_t": 1.5,
                        "gap_s": gap,
                        "goodput_before_mbit": 25.0,
                        "goodput_after_mbit": 9.0,
                        "recovery_s": 1.0,
                        "cut_path_bytes_after": 0,
                    }
                ],
            )
        )
        tdir = d / "traffic" / label
        tdir.mkdir(parents=True)
        (tdir / "main-client.json").write_text(
            json.dumps(
                {
                    "spec": {"kind": "bulk", "direction": "download"},
                    "samples": [[i / 10, i * 1e5] for i in range(30)],
                    "subflow_samples": [[i / 10, {"a->b": i * 6e4}] for i in range(30)],
                }
            )
        )
    (d / "metrics.json").write_text(json.dumps({"runs": runs, "summary": []}))
    (d / "metadata.json").write_text(json.dumps({"experiment": "fixture", "description": "x"}))
    return d


def test_campaign_report_sections_render(tmp_path):
    out = write_campaign_report(_campaign(tmp_path))
    page = out.read_text()
    for heading in (
        "Schedulers on heterogeneous paths",
        "Bottleneck share per congestion",
        "Handover: gap and goodput per mode",
        "Goodput over time per subflow",
    ):
        assert heading in page
    assert page.count("Published claim") >= 8
    # the fixture is built to agree with the handover ordering and LIA's fairness
    assert re.search(r"CellNet 2012.*?agrees", page, re.S)
    assert re.search(r"coupled multipath flow \(userspace-lia\).*?agrees", page, re.S)
    assert re.search(r"redundant.*?agrees", page, re.S)
    assert "aggregation benefit per scheduler" in page
    imgs = re.findall(r'src="data:image/png;base64,', page)
    assert len(imgs) >= 10
