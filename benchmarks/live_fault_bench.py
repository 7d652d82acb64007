"""Compound faults against Linux, live: does every transfer finish intact, ours and the kernel's?

    python -m benchmarks.live_fault_bench [--families cut,cut_return,...] [--reps 20]
                                          [--mbytes 8] [--load 2] [--json]
    ./inv bench-live-faults [--families ...] [--reps 20]

The simulator's harness (``benchmarks/fault_bench.py``) plays thousands of seeded scenarios on
our stack alone; this one plays the same families on the testbed against the Linux kernel, with
Linux MPTCP to Linux MPTCP under the same faults as the control. Each family is a set of link
overrides (loss) and timed link events (a path cut, with or without its return, the client's
interface down and up) on ``two_path`` with faster links, run ``--reps`` times for each pair:

- ``ours->linux``: our client sends to a Linux MPTCP server;
- ``linux->ours``: a Linux MPTCP client sends to our server;
- ``linux->linux``: the control.

A run is ``intact`` (both ends exited, the server got the sha256 the client sent), ``corrupt``
(it ended with other bytes), ``stalled`` (the data did not arrive within ``--stall-s`` beyond
the time the transfer needs, or the ends did not exit within ``--stall-s`` after it: the state
dumps of our end and the kernels' view are kept in the work folder) or ``error`` (an end exited
with an error, a reset). Two times: until the receiver had every byte (its "progress" line for
the last megabyte), and until both ends had closed and exited (a Linux client's close returns at
once, the kernel finishing the close; ours waits for the peer's DATA_FIN). ``--load N`` keeps N busy processes
running during the runs (a loaded machine is where the stalls were seen). Prints, per family,
each pair's counts and median time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from testkit.livefaults import FAMILIES, MB, PAIRS, Run, run_family, summary


def _busy(n: int) -> list[subprocess.Popen]:
    """``n`` processes that only burn CPU (killed by pid when the benchmark ends)."""
    code = "while True: pass"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="live_fault_bench")
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--pairs", default=",".join(PAIRS))
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--mbytes", type=float, default=8.0)
    p.add_argument("--stall-s", type=float, default=30.0)
    p.add_argument("--load", type=int, default=2, help="busy processes during the runs")
    p.add_argument("--keep", default=None, help="keep the runs' files in this folder")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    fams = [f for f in a.families.split(",") if f]
    unknown = [f for f in fams if f not in FAMILIES]
    if unknown:
        p.error(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    pairs = [x for x in a.pairs.split(",") if x]
    busy = _busy(a.load)
    runs: list[Run] = []
    try:
        with open("/proc/loadavg") as f:
            load0 = f.read().split()[0]
        t0 = time.monotonic()
        for fam in fams:
            work = Path(a.keep) / fam if a.keep else None
            if work:
                work.mkdir(parents=True, exist_ok=True)
            runs += run_family(fam, a.reps, int(a.mbytes * MB), a.stall_s, pairs, work)
            s = summary([r for r in runs if r.family == fam])[fam]
            cells = "; ".join(
                f"{pair}: {d['intact']}/{a.reps} intact"
                + "".join(f", {d[k]} {k}" for k in ("stalled", "corrupt", "error") if d[k])
                + f" (median: data {d['median_s']} s, exit {d['median_exit_s']} s)"
                for pair, d in s.items()
            )
            print(f"{fam} ({FAMILIES[fam].doc}): {cells}", flush=True)
    finally:
        for b in busy:
            b.kill()
            b.wait()
    with open("/proc/loadavg") as f:
        load1 = f.read().split()[0]
    res = {
        "families": summary(runs),
        "reps": a.reps,
        "mbytes": a.mbytes,
        "busy_processes": a.load,
        "load_before_after": [load0, load1],
        "wall_s": round(time.monotonic() - t0, 1),
        "failures": [asdict(r) for r in runs if r.outcome != "intact"],
    }
    print(
        f"{len(runs)} runs in {res['wall_s']} s, load {load0} -> {load1} ({a.load} busy processes)"
    )
    if a.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
