"""``[stack.userspace]``: the research plug-ins of the userspace stack in an experiment file are
checked when the file is read and become its CLI's flags."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from experiments import stacks
from experiments.config import ExperimentError, FlowSpec, load_experiment

EXP = """
name = "plug"
description = "the userspace stack with plug-ins"
seed = 1
repetitions = 1
stacks = ["userspace"]

[topology]
name = "two_path"

[traffic]
kind = "bulk"
direction = "upload"
bytes = 1000000

[stack.userspace]
{opts}
"""

SCHED = """
class Mine:
    def pick(self, candidates):
        return candidates[0] if candidates else None
"""


def load(tmp_path: Path, opts: str):
    p = tmp_path / "exp.toml"
    p.write_text(EXP.format(opts=opts))
    return load_experiment(p)


def test_options_become_cli_flags_and_files_resolve_beside_the_experiment(tmp_path):
    (tmp_path / "plug").mkdir()
    (tmp_path / "plug" / "mine.py").write_text(SCHED)
    exp = load(
        tmp_path,
        'scheduler = "plug/mine.py:Mine"\ncc = "lia"\npm = "kernel"\nopportunistic = "penalise"',
    )
    opts = exp.stack_options["userspace"]
    assert opts["scheduler"] == f"{tmp_path / 'plug' / 'mine.py'}:Mine"
    st = stacks.STACKS["userspace"]
    tool = Path(stacks.__file__).parent / "traffic.py"
    try:
        st.setup(None, opts, [])  # type: ignore[arg-type]
        flow = FlowSpec(name="main", kind="bulk", direction="upload", bytes=1000)
        cli = st.client(sys.executable, tool, "10.0.0.1:5000", flow, 1, Path("x"))
        srv = st.server(sys.executable, tool, "10.0.0.1", 5000, Path("y"))
    finally:
        st.setup(None, {}, [])  # type: ignore[arg-type]
    for cmd in (cli, srv):
        a = cmd.argv
        assert a[a.index("--scheduler") + 1] == opts["scheduler"]
        assert a[a.index("--cc") + 1] == "lia" and a[a.index("--opportunistic") + 1] == "penalise"
    # the traffic tool, which runs our stack, accepts exactly these flags
    argv = [*cli.argv, "--help"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "opts, field, words",
    [
        ('scheduler = "fastest"', "stack.userspace.scheduler", "unknown scheduler"),
        ('cc = "vegas"', "stack.userspace.cc", "unknown congestion control"),
        ('pm = "absent.py:X"', "stack.userspace.pm", "no such file"),
        ('opportunistic = "always"', "stack.userspace.opportunistic", "expected one of"),
        ("scheduler = 3", "stack.userspace.scheduler", "expected a string"),
        ('sched = "blest"', "stack.userspace.sched", "unknown key"),
    ],
)
def test_mistakes_name_the_key(tmp_path, opts, field, words):
    with pytest.raises(ExperimentError) as info:
        load(tmp_path, opts)
    assert info.value.field == field and words in str(info.value)
