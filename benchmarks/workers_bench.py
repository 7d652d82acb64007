"""Campaign wall time with 1, 2 and 4 namespace-workers on this machine, and the analysis speedup.

Workers here are network namespaces with their own sshd (testkit.sshmachines), reached with
Fabric as real machines would be; each worker runs its share of the campaign on its own Mininet
testbed and analyses it (experiments.workers). They all share this machine's cores, so the
figures say what the coordinator's overlap buys (one worker's SSH, copying and analysis beside
another's traffic), not what twenty machines would: with 2 cores, 4 workers mostly queue for
the CPU, and a run's own traffic competes with another's analysis. The core count and the load
average before and after are printed beside the times.

Then the same campaign runs locally (no workers, captures kept) and its per-run analysis is
timed serial and on the process pool (benchmarks.analysis_pool_bench).

Needs root (namespaces) and openssh-server; run it under the live lock:
  flock /tmp/mptcp-lab-live.lock .venv/bin/python -m benchmarks.workers_bench [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.analysis_pool_bench import bench as analysis_bench
from experiments.config import load_experiment
from experiments.runner import run_experiment
from experiments.workers import run_on_workers
from testkit.sshmachines import SshMachines

EXPERIMENT = """
name = "workers_bench"
description = "1 s TCP downloads on two_path, repeated: a campaign of short runs"
seed = 11
repetitions = {runs}
stacks = ["tcp"]
[topology]
name = "two_path"
[traffic]
kind = "bulk"
direction = "download"
duration_s = 1
"""


def bench(runs: int, counts: list[int]) -> dict:
    out: dict = {"runs": runs, "cores": os.cpu_count(), "workers": {}}
    with tempfile.TemporaryDirectory(prefix="workers-bench-") as d:
        tmp = Path(d)
        exp_file = tmp / "workers_bench.toml"
        exp_file.write_text(EXPERIMENT.format(runs=runs))
        exp = load_experiment(exp_file)
        names = [f"w{i + 1}" for i in range(max(counts))]
        with SshMachines(tmp / "m", names, linger=30) as ms:
            for n in counts:
                inv = ms.inventory(
                    tmp / f"workers{n}.toml", workers=names[:n], python=sys.executable
                )
                load = os.getloadavg()
                t = time.monotonic()
                rc = run_on_workers(exp, str(inv), results_root=tmp / f"r{n}", progress=False)
                wall = time.monotonic() - t
                (run_dir,) = (tmp / f"r{n}" / exp.name).iterdir()
                meta = json.loads((run_dir / "metadata.json").read_text())
                out["workers"][n] = {
                    "wall_s": round(wall, 1),
                    "exit": rc,
                    "runs_done": meta["runs_done"],
                    "per_worker": {k: len(v["runs"]) for k, v in meta["workers"].items()},
                    "load_before": [round(x, 2) for x in load],
                    "load_after": [round(x, 2) for x in os.getloadavg()],
                }
        t = time.monotonic()
        local = run_experiment(exp, results_root=tmp / "local", progress=False)
        out["local_wall_s"] = round(time.monotonic() - t, 1)
        out["analysis"] = analysis_bench(local.run_dir, None, os.cpu_count() or 1)
    one = out["workers"].get(1, {}).get("wall_s")
    for r in out["workers"].values():
        r["speedup_vs_1"] = round(one / r["wall_s"], 2) if one else None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=8, help="runs in the campaign (default 8)")
    ap.add_argument("--workers", default="1,2,4", help="worker counts (default 1,2,4)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    r = bench(a.runs, [int(x) for x in a.workers.split(",")])
    if a.json:
        print(json.dumps(r))
        return 0
    print(f"campaign of {r['runs']} runs (1 s TCP downloads), {r['cores']} cores on this machine")
    for n, w in r["workers"].items():
        print(
            f"  {n} worker(s): {w['wall_s']:6.1f} s  (x{w['speedup_vs_1']} vs 1; runs per "
            f"worker {w['per_worker']}; exit {w['exit']}; load {w['load_before']} -> "
            f"{w['load_after']})"
        )
    a_ = r["analysis"]
    print(f"  local, no workers: {r['local_wall_s']:.1f} s (run + analysis)")
    print(
        f"analysis of the local campaign ({a_['runs']} runs, {a_['pcap_mb']} MB of captures): "
        f"serial {a_['serial_s']:.1f} s, pool of {a_['jobs']} {a_['pool_s']:.1f} s, "
        f"speedup {a_['speedup']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
