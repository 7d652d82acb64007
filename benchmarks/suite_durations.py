"""Where the test suite's time goes, by module: pytest's ``--durations=0`` output summed per
module into testbed/fixture setup, test bodies and teardown (issue 22's table).

Measure (under the live lock, as every live run):
  flock /tmp/mptcp-lab-live.lock ./inv test --args "--durations=0" > after.txt
Then:
  .venv/bin/python -m benchmarks.suite_durations after.txt             # one run, by module
  .venv/bin/python -m benchmarks.suite_durations before.txt after.txt  # before and after

(Sums of test times: with ``./inv test``'s two workers the wall time is less than the sum, since
the sans-I/O modules run beside the live ones; pytest's last line gives the wall time.)
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

LINE = re.compile(r"^\s*([\d.]+)s (setup|call|teardown)\s+(\S+?)::")
WALL = re.compile(r"\b(\d+) passed.* in ([\d.]+)s")


@dataclass
class ModuleTime:
    """Seconds of one module's tests by phase (setup includes module and session fixtures)."""

    setup: float = 0.0
    call: float = 0.0
    teardown: float = 0.0

    @property
    def total(self) -> float:
        return self.setup + self.call + self.teardown


@dataclass
class SuiteTimes:
    modules: dict[str, ModuleTime] = field(default_factory=dict)
    wall_s: float | None = None  # pytest's own "in N s"
    passed: int | None = None


def parse(text: str) -> SuiteTimes:
    """Sum the ``--durations`` lines of a pytest run by module and phase."""
    out = SuiteTimes()
    mods: dict[str, ModuleTime] = defaultdict(ModuleTime)
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            mt = mods[m[3]]
            setattr(mt, m[2], getattr(mt, m[2]) + float(m[1]))
        w = WALL.search(line)
        if w:
            out.passed, out.wall_s = int(w[1]), float(w[2])
    out.modules = dict(mods)
    return out


def table(runs: list[SuiteTimes], names: list[str]) -> str:
    """Markdown: one row per module (largest first in the last run), total seconds per run;
    for one run, its setup, call and teardown too."""
    mods = sorted(
        {m for r in runs for m in r.modules},
        key=lambda m: -max(r.modules.get(m, ModuleTime()).total for r in runs),
    )
    if len(runs) == 1:
        rows = ["| module | setup s | call s | teardown s | total s |", "|---|--:|--:|--:|--:|"]
        for m in mods:
            t = runs[0].modules[m]
            rows.append(
                f"| {m} | {t.setup:.1f} | {t.call:.1f} | {t.teardown:.1f} | {t.total:.1f} |"
            )
    else:
        rows = ["| module | " + " | ".join(f"{n} s" for n in names) + " |"]
        rows.append("|---|" + "--:|" * len(runs))
        for m in mods:
            cells = [f"{r.modules[m].total:.1f}" if m in r.modules else "-" for r in runs]
            rows.append(f"| {m} | " + " | ".join(cells) + " |")
    sums = [sum(t.total for t in r.modules.values()) for r in runs]
    rows.append("| **sum of test times** | " + " | ".join(f"{s:.1f}" for s in sums) + " |")
    walls = [f"{r.wall_s:.1f}" if r.wall_s is not None else "?" for r in runs]
    rows.append("| **wall time (pytest)** | " + " | ".join(walls) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outputs", nargs="+", type=Path, help="pytest --durations=0 outputs")
    args = ap.parse_args(argv)
    runs = [parse(p.read_text()) for p in args.outputs]
    print(table(runs, [p.stem for p in args.outputs]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
