"""Experiment files: validation names the file and the field; resolution is reproducible.

No network needed: these run as any user, in well under a second.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from experiments import stacks
from experiments.config import (
    ExperimentError,
    list_experiments,
    load_experiment,
    resolve_runs,
)
from testbed.topology import TopologyError, load_topology

GOOD = """
name = "tiny"
description = "a valid file the tests break one field at a time"
seed = 7
repetitions = 2
stacks = ["tcp", "kernel-mptcp"]

[topology]
name = "two_path"

[traffic]
kind = "bulk"
duration_s = 3

[[events]]
at = 1.0
link = "wifi"
action = "down"

[grid]
"links.lte.delay_ms" = [10, 50, 100]
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "exp.toml"
    p.write_text(text)
    return p


def test_good_file_loads(tmp_path):
    exp = load_experiment(write(tmp_path, GOOD))
    assert exp.name == "tiny" and exp.stacks == ["tcp", "kernel-mptcp"]
    assert exp.grid == {"links.lte.delay_ms": [10, 50, 100]}
    assert len(resolve_runs(exp)) == 3 * 2 * 2


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("seed = 7", "seed = 7\nrepetition = 3", "repetition"),  # typo: unknown top-level key
        ('kind = "bulk"', 'kind = "bulk"\nduraton_s = 3', "traffic.duraton_s"),
        ('kind = "bulk"', 'kind = "bulky"', "traffic.kind"),
        ("duration_s = 3", 'duration_s = "3"', "traffic.duration_s"),
        ("duration_s = 3", "duration_s = -1", "traffic.duration_s"),
        ("repetitions = 2", "repetitions = 0", "repetitions"),
        ("repetitions = 2", "repetitions = true", "repetitions"),
        ('stacks = ["tcp", "kernel-mptcp"]', 'stacks = ["tcp", "quic"]', "stacks[1]"),
        ('link = "wifi"', 'link = "wlan"', "events[0].link"),
        ('action = "down"', 'action = "off"', "events[0].action"),
        ('action = "down"', 'action = "down"\nmode = "cable"', "events[0].mode"),
        ('action = "down"', 'action = "set"\nreorder_pct = 200', "events[0].reorder_pct"),
        ('action = "down"', 'action = "set"\nloss_model = { p = -1 }', "events[0].loss_model.p"),
        ('action = "down"', 'action = "down"\nduplicate_pct = 1', "events[0].duplicate_pct"),
        ('action = "down"', 'action = "set"\ncorrupt_pct = 101', "events[0].corrupt_pct"),
        (
            'action = "down"',
            'action = "set"\ncorrupt_fix_checksum = "yes"',
            "events[0].corrupt_fix_checksum",
        ),
        ("[10, 50, 100]", "[10, -5]", "grid.links.lte.delay_ms"),
        ("[10, 50, 100]", "10", "grid.links.lte.delay_ms"),
        ('name = "two_path"', 'name = "three_path"', "topology.name"),
        ("[traffic]", '[traffic]\nclient = "nobody"', "traffic.client"),
        (
            "[grid]",
            '[stack.kernel-mptcp]\nendpoints = [{host = "client", link = "lte", '
            'flags = ["sometimes"]}]\n[grid]',
            "stack.kernel-mptcp.endpoints[0].flags",
        ),
        (
            "[grid]",
            '[stack.kernel-mptcp]\nscheduler = "nonexistent"\n[grid]',
            "stack.kernel-mptcp.scheduler",
        ),
        ("[grid]", '[stack.tcp]\nendpoints = "default"\n[grid]', "stack.tcp.endpoints"),
    ],
)
def test_invalid_file_names_file_and_field(tmp_path, old, new, field):
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ExperimentError) as info:
        load_experiment(path)
    assert info.value.field == field
    assert str(path) in str(info.value) and field in str(info.value)


def test_set_events_take_the_link_conditions(tmp_path):
    text = GOOD.replace(
        'action = "down"',
        'action = "set"\nreorder_pct = 2\nduplicate_pct = 1\nloss_model = { p = 1, r = 30 }\n'
        "corrupt_pct = 0.5\ncorrupt_fix_checksum = true",
    )
    (ev,) = load_experiment(write(tmp_path, text)).events
    assert ev.params == {
        "reorder_pct": 2,
        "duplicate_pct": 1,
        "loss_model": {"p": 1, "r": 30},
        "corrupt_pct": 0.5,
        "corrupt_fix_checksum": True,
    }


def test_syntax_error_and_missing_file(tmp_path):
    with pytest.raises(ExperimentError) as info:
        load_experiment(write(tmp_path, GOOD + "\n[traffic\n"))
    assert info.value.field == "(syntax)"
    with pytest.raises(ExperimentError) as info:
        load_experiment(tmp_path / "nope.toml")
    assert info.value.field == "(file)"


def test_bad_override_names_the_key(tmp_path):
    path = write(tmp_path, GOOD)
    with pytest.raises(ExperimentError) as info:
        load_experiment(path, ["traffic.duration_s=oops"])
    assert info.value.field == "traffic.duration_s"
    with pytest.raises(ExperimentError) as info:
        load_experiment(path, ["links.lte.rate_mbit=-3"])
    assert info.value.field == "topology.set.links.lte.rate_mbit"


@pytest.mark.parametrize("item", ["links.lte.delay_ms", "=50", " = 50"])
def test_a_malformed_override_is_refused_by_topology_and_experiment_alike(item):
    """One parser reads --set for both: an empty key used to pass the topology's (and fail
    later as an unknown field "") while experiments refused it."""
    with pytest.raises(TopologyError, match="key=value") as topo_err:
        load_topology("two_path", [item])
    with pytest.raises(ExperimentError, match="key=value") as exp_err:
        load_experiment("failover", [item])
    assert topo_err.value.field == exp_err.value.field == item


def test_overrides_pin_grid_keys_and_edit_sections(tmp_path):
    exp = load_experiment(
        write(tmp_path, GOOD),
        ["links.lte.delay_ms=20", "traffic.duration_s=2", "grid.traffic.count=[1]"],
        stack="kernel-mptcp",
        reps=1,
    )
    assert exp.topology_set == {"links.lte.delay_ms": 20}
    assert "links.lte.delay_ms" not in exp.grid
    assert exp.traffic.duration_s == 2.0 and exp.stacks == ["kernel-mptcp"]
    runs = resolve_runs(exp)
    assert len(runs) == 1 and runs[0].topology_set == {"links.lte.delay_ms": 20}
    assert "repetitions=1" in exp.overrides


def test_same_file_same_seed_resolves_identically(tmp_path):
    path = write(tmp_path, GOOD.replace("seed = 7", "seed = 7\nshuffle = true"))
    a = [r.as_dict() for r in resolve_runs(load_experiment(path))]
    b = [r.as_dict() for r in resolve_runs(load_experiment(path))]
    assert a == b
    other = [r.as_dict() for r in resolve_runs(load_experiment(path, ["seed=8"]))]
    assert [r["seed"] for r in other] != [r["seed"] for r in a]
    # Stacks of the same point and repetition get the same payload seed.
    by_key: dict[tuple[int, int], set[int]] = {}
    for r in a:
        by_key.setdefault((r["point"], r["rep"]), set()).add(r["seed"])
    assert all(len(s) == 1 for s in by_key.values())
    assert len({r["label"] for r in a}) == len(a)


def test_shipped_experiment_files_are_valid():
    names = [n for n, _ in list_experiments()]
    assert {"aggregation", "failover", "failover_interface", "handover", "fairness"} <= set(names)
    for n in names:
        exp = load_experiment(n)
        assert exp.description and resolve_runs(exp)


def test_userspace_stack_takes_kernel_mptcps_options(tmp_path):
    # Any traffic, as the other stacks: bulk download by duration, with the failover event.
    text = GOOD.replace('["tcp", "kernel-mptcp"]', '["userspace"]')
    exp = load_experiment(write(tmp_path, text))
    assert {r.stack for r in resolve_runs(exp)} == {"userspace"}
    opts = """
[stack.userspace]
endpoints = [{ host = "client", link = "lte", flags = ["subflow", "backup"] }]
limits = { subflows = 2, add_addr_accepted = 0 }
scheduler = "default"
"""
    exp = load_experiment(write(tmp_path, text + opts))
    assert exp.stack_options["userspace"]["endpoints"][0]["flags"] == ["subflow", "backup"]
    assert exp.stack_options["userspace"]["limits"] == {"subflows": 2, "add_addr_accepted": 0}
    for old, new, field in [
        ('"backup"]', '"bakup"]', "stack.userspace.endpoints[0].flags"),
        ('scheduler = "default"', 'scheduler = "nosuch"', "stack.userspace.scheduler"),
        ('host = "client"', 'host = "nobody"', "stack.userspace.endpoints[0].host"),
    ]:
        with pytest.raises(ExperimentError) as info:
            load_experiment(write(tmp_path, text + opts.replace(old, new)))
        assert info.value.field == field, info.value
    # It runs the same traffic tool as the other stacks, with our stack's protocol.
    stacks.STACKS["userspace"].check_available()
    cmd = stacks.STACKS["userspace"].server(sys.executable, Path("t.py"), "10.0.5.2", 1, None)
    assert cmd.argv[1:3] == ["t.py", "server"] and "userspace" in cmd.argv
    assert cmd.argv[cmd.argv.index("--listen") + 1] == "10.0.5.2:1"


SKIPPING = (
    GOOD.replace('stacks = ["tcp", "kernel-mptcp"]', 'stacks = ["tcp", "userspace"]')
    + """"stack.userspace.scheduler" = ["minrtt", "blest"]

[[skip]]
"stack.userspace.scheduler" = "blest"
"links.lte.delay_ms" = [10, 100]

[[skip]]
"links.lte.delay_ms" = 100
"""
)


def _runs(exp) -> set[tuple[str, float | None]]:
    return {(r.variant, r.point_values.get("links.lte.delay_ms")) for r in resolve_runs(exp)}


def test_skip_leaves_out_the_points_it_names(tmp_path):
    exp = load_experiment(write(tmp_path, SKIPPING), reps=1)
    # blest only at 50 ms; nothing at 100 ms; a stack option's skip spares the other stacks
    assert _runs(exp) == {
        ("userspace-minrtt", 10),
        ("userspace-minrtt", 50),
        ("userspace-blest", 50),
        ("tcp", 10),
        ("tcp", 50),
    }


def test_skip_follows_overrides(tmp_path):
    path = write(tmp_path, SKIPPING)
    # pinned at 10 ms: "blest at 10 or 100" becomes "blest"; the 100 ms table can match nothing
    exp = load_experiment(path, ["links.lte.delay_ms=10"], reps=1)
    assert exp.skip == [{"stack.userspace.scheduler": ["blest"]}]
    assert {v for v, _ in _runs(exp)} == {"userspace-minrtt", "tcp"}
    # narrowed to [50, 100]: the first table keeps only 100
    exp = load_experiment(path, ["grid.links.lte.delay_ms=[50, 100]"], reps=1)
    assert exp.skip[0]["links.lte.delay_ms"] == [100]
    assert _runs(exp) == {("userspace-minrtt", 50), ("userspace-blest", 50), ("tcp", 50)}
    with pytest.raises(ExperimentError) as info:  # a table that would skip every run
        load_experiment(path, ["links.lte.delay_ms=100"])
    assert info.value.field == "skip[1]"


@pytest.mark.parametrize(
    ("table", "field", "words"),
    [
        ('"links.lte.rate_mbit" = 5', "skip[2].links.lte.rate_mbit", "not a grid key"),
        ('"links.lte.delay_ms" = 20', "skip[2].links.lte.delay_ms", "not one of the grid"),
        ('"stack.userspace.scheduler" = ["ecf"]', "skip[2].stack.userspace.scheduler", "ecf"),
    ],
)
def test_a_bad_skip_names_its_field(tmp_path, table, field, words):
    path = write(tmp_path, SKIPPING + f"\n[[skip]]\n{table}\n")
    with pytest.raises(ExperimentError) as info:
        load_experiment(path)
    assert info.value.field == field and words in str(info.value)
