"""[sample]: an experiment sampled over continuous ranges instead of fully gridded (random or
Latin hypercube, seeded), crossed with any grid; bad input names its field."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.config import ExperimentError, grid_points, load_experiment, resolve_runs

BASE = """
name = "sampled"
seed = 3
stacks = ["tcp", "kernel-mptcp"]

[topology]
name = "two_path"

[traffic]
kind = "bulk"
duration_s = 2
"""


def load(tmp_path: Path, sample: str, extra: str = "", overrides=None):
    p = tmp_path / "exp.toml"
    p.write_text(BASE + extra + "\n[sample]\n" + sample)
    return load_experiment(p, overrides)


LHS = """n = 10
ranges = { "links.lte.delay_ms" = [5, 104], "links.wifi.rate_mbit" = [2.0, 22.0] }
"""


def test_a_latin_hypercube_puts_one_point_in_each_stratum_of_every_range(tmp_path):
    exp = load(tmp_path, LHS)
    pts = grid_points(exp)
    assert len(pts) == 10 and len(resolve_runs(exp)) == 20  # two stacks
    delays = sorted(p["links.lte.delay_ms"] for p in pts)
    rates = sorted(p["links.wifi.rate_mbit"] for p in pts)
    # 100 integers in 10 strata of 10; 20 Mbit/s in 10 strata of 2
    assert [(d - 5) // 10 for d in delays] == list(range(10))
    assert all(isinstance(d, int) for d in delays)
    assert [int((r - 2.0) // 2.0) for r in rates] == list(range(10))
    # the two keys are paired at random, not stratum with stratum
    by_delay = [
        p["links.wifi.rate_mbit"] for p in sorted(pts, key=lambda p: p["links.lte.delay_ms"])
    ]
    assert by_delay != sorted(by_delay)


def test_the_same_seed_gives_the_same_points_and_another_seed_others(tmp_path):
    a = grid_points(load(tmp_path, LHS))
    assert a == grid_points(load(tmp_path, LHS))
    b = grid_points(load(tmp_path, LHS + "seed = 11\n"))
    assert a != b
    c = grid_points(load(tmp_path, LHS, overrides=["sample.seed=11"]))
    assert b == c


def test_random_sampling_stays_in_range_and_crosses_the_grid(tmp_path):
    exp = load(
        tmp_path,
        'method = "random"\nn = 5\nranges = { "links.lte.rate_mbit" = [1.5, 3.5] }\n',
        extra='[grid]\n"traffic.duration_s" = [2, 3]\n',
    )
    pts = grid_points(exp)
    assert len(pts) == 10
    assert {p["traffic.duration_s"] for p in pts} == {2, 3}
    assert all(1.5 <= p["links.lte.rate_mbit"] <= 3.5 for p in pts)
    # each grid value meets the same five points
    first = [p["links.lte.rate_mbit"] for p in pts if p["traffic.duration_s"] == 2]
    second = [p["links.lte.rate_mbit"] for p in pts if p["traffic.duration_s"] == 3]
    assert first == second and len(set(first)) == 5


@pytest.mark.parametrize(
    "sample, extra, field",
    [
        (
            'method = "sobol"\nn = 3\nranges = { "links.lte.delay_ms" = [1, 9] }\n',
            "",
            "sample.method",
        ),
        ('ranges = { "links.lte.delay_ms" = [1, 9] }\n', "", "sample.n"),
        ('n = 0\nranges = { "links.lte.delay_ms" = [1, 9] }\n', "", "sample.n"),
        ("n = 3\n", "", "sample.ranges"),
        (
            'n = 3\nranges = { "links.lte.delay_ms" = [9, 1] }\n',
            "",
            "sample.ranges.links.lte.delay_ms",
        ),
        (
            'n = 3\nranges = { "links.lte.delay_ms" = [1] }\n',
            "",
            "sample.ranges.links.lte.delay_ms",
        ),
        (
            'n = 3\nranges = { "links.lte.delay_ms" = ["a", 2] }\n',
            "",
            "sample.ranges.links.lte.delay_ms",
        ),
        (
            'n = 3\nranges = { "links.lte.delay_ms" = [1, 9] }\n',
            '[grid]\n"links.lte.delay_ms" = [5]\n',
            "sample.ranges.links.lte.delay_ms",
        ),
        (
            'n = 3\nranges = { "links.nope.delay_ms" = [1, 9] }\n',
            "",
            "sample.ranges.links.nope.delay_ms",
        ),
        ('n = 3\nranges = { "links.lte.delay_ms" = [1, 9] }\nstrata = 2\n', "", "sample.strata"),
    ],
)
def test_bad_sample_tables_name_the_field(tmp_path, sample, extra, field):
    with pytest.raises(ExperimentError) as e:
        load(tmp_path, sample, extra)
    assert e.value.field == field, str(e.value)
