"""The compound-fault harness at scale (issue 18): N seeded scenarios in the simulator, each
checked against the data level's invariants (``testkit/faults.py``), on a process pool.

Prints how many scenarios of each fault family ran and failed, the failures by invariant and by
diagnosis (each with its simplest seed), then every failing seed with its replay command. A
replay (``--replay SEED``) plays one seed again with a timeline of its faults and both ends'
``debug_state()`` at the end. Figures are CPU seconds of the workers (time.process_time), so
other load on a shared machine distorts them less. Exit status 1 when a scenario failed.

    .venv/bin/python -m benchmarks.fault_bench [--seeds 10000] [--start 0] [--jobs 2]
        [--families cut,reset,...] [--json]
    .venv/bin/python -m benchmarks.fault_bench --replay SEED [--families ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from typing import Any

from testkit.faults import FAMILIES, INVARIANTS, STALL_BOUND, Result, Scenario, run, run_seed


def _batch(args: tuple[list[int], tuple[str, ...]]) -> list[dict[str, Any]]:
    """Run a batch of seeds in a worker; results as dicts (cheap to send back)."""
    seeds, families = args
    return [run_seed(s, families).as_dict() for s in seeds]


def run_seeds(
    seeds: list[int], families: tuple[str, ...], jobs: int, batch: int = 25
) -> list[dict[str, Any]]:
    """Every seed's result, in seed order; ``jobs`` worker processes (1: in this process)."""
    chunks = [(seeds[i : i + batch], families) for i in range(0, len(seeds), batch)]
    if jobs <= 1:
        out = [r for c in chunks for r in _batch(c)]
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            out = [r for part in pool.map(_batch, chunks) for r in part]
    return sorted(out, key=lambda r: r["seed"])


def _simplest(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The failing scenario easiest to read: fewest families, then the earliest seed."""
    return min(results, key=lambda r: (len(r["families"]), r["seed"]))


def summarize(results: list[dict[str, Any]], families: tuple[str, ...]) -> dict[str, Any]:
    """Counts per family, per invariant and per diagnosis, the simplest seed of each."""
    fam_runs: Counter[str] = Counter()
    fam_fail: Counter[str] = Counter()
    by_inv: dict[str, list[dict[str, Any]]] = defaultdict(list)
    by_diag: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        for f in r["families"]:
            fam_runs[f] += 1
            if not r["ok"]:
                fam_fail[f] += 1
        for inv in r["failed"]:
            by_inv[inv].append(r)
        if not r["ok"]:
            labels = [d.split(": ", 1)[1] for d in r["diagnosis"]] or [
                "(none: " + r["failed"][0] + ")"
            ]
            for lab in dict.fromkeys(labels):
                by_diag[lab].append(r)
    failed = [r for r in results if not r["ok"]]
    stalls = sorted(r["longest_stall"] for r in results if r["ok"])

    def pct(q: float) -> float:
        return stalls[min(len(stalls) - 1, int(q * len(stalls)))] if stalls else 0.0

    fallbacks = Counter(reason for r in results for reason in dict.fromkeys(r["fallback"]))
    return {
        "seeds": len(results),
        "failed": len(failed),
        "cpu_s": round(sum(r["cpu"] for r in results), 1),
        "sim_s": round(sum(r["sim_time"] for r in results), 1),
        "fallbacks": dict(fallbacks),
        # the longest stall of each scenario that passed: how close to the bound they come
        "stall_s": {"p50": pct(0.5), "p99": pct(0.99), "max": stalls[-1] if stalls else 0.0},
        "families": {
            f: {"runs": fam_runs[f], "failed": fam_fail[f]} for f in FAMILIES if f in families
        },
        "invariants": {
            inv: {"failed": len(by_inv[inv]), "simplest": _simplest(by_inv[inv])["seed"]}
            for inv in INVARIANTS
            if by_inv[inv]
        },
        "diagnoses": {
            lab: {
                "failed": len(rs),
                "simplest": _simplest(rs)["seed"],
                "simplest_families": list(_simplest(rs)["families"]),
            }
            for lab, rs in sorted(by_diag.items(), key=lambda kv: -len(kv[1]))
        },
        "failures": [
            {
                "seed": r["seed"],
                "families": list(r["families"]),
                "failed": r["failed"],
                "diagnosis": r["diagnosis"],
                "replay": r["replay"],
            }
            for r in failed
        ],
    }


def print_summary(s: dict[str, Any]) -> None:
    print(
        f"{s['seeds']} scenarios, {s['failed']} failed; {s['cpu_s']} s CPU in the workers, "
        f"{s['sim_s']} s simulated"
    )
    st = s["stall_s"]
    print(
        f"longest stall of the scenarios that passed: p50 {st['p50']} s, p99 {st['p99']} s, "
        f"max {st['max']} s (bound {STALL_BOUND} s)"
    )
    print("\nper family (scenarios holding it):")
    for f, c in s["families"].items():
        print(f"  {f:9s} {c['runs']:6d} run {c['failed']:6d} failed")
    print("\nper invariant:")
    for inv, c in s["invariants"].items():
        print(f"  {inv:11s} {c['failed']:6d} failed  simplest seed {c['simplest']}")
    for reason, n in s["fallbacks"].items():
        print(f"  ({n} scenario(s) fell back to TCP, allowed: {reason})")
    print("\nper diagnosis:")
    for lab, c in s["diagnoses"].items():
        fams = ",".join(c["simplest_families"])
        print(f"  {c['failed']:6d}  {lab}  (simplest: seed {c['simplest']}, {fams})")
    if s["failures"]:
        print("\nfailures:")
    for r in s["failures"]:
        print(
            f"  seed {r['seed']} [{','.join(r['families'])}] {','.join(r['failed'])}: "
            f"{'; '.join(r['diagnosis'])}\n    {r['replay']}"
        )


def replay(seed: int, families: tuple[str, ...]) -> Result:
    """Play one seed with a timeline and both ends' state, and print them."""
    sc = Scenario.from_seed(seed, families)
    r = run(sc, verbose=True, families=families)
    print(json.dumps({"scenario": asdict(sc)}, indent=1))
    st = r.state or {}
    print("\ntimeline:")
    for line in st.get("timeline", []):
        print(" ", line)
    print(
        f"\nresult: {'ok' if r.ok else 'FAILED ' + ','.join(r.failed)} at {r.sim_time} s "
        f"simulated, {r.cpu} s CPU; longest stall {r.longest_stall} s; delivered up "
        f"{r.delivered_up}/{sc.up_bytes} down {r.delivered_down}/{sc.down_bytes}; "
        f"peak memory rcv {r.peak_rcv_mem} snd {r.peak_snd_mem}"
    )
    for d in r.details:
        print("  ", d)
    for d in r.diagnosis:
        print("   diagnosis:", d)
    print("\nMIB (nonzero, c. client, s. server):", json.dumps(r.mib, sort_keys=True))
    print("packets lost per path:", st.get("paths_lost"))
    for side in ("client", "server"):
        print(f"\n{side} debug_state():")
        print(json.dumps(st.get(side), indent=1, default=str))
    return r


def _families(text: str) -> tuple[str, ...]:
    fams = tuple(f.strip() for f in text.split(",") if f.strip())
    bad = [f for f in fams if f not in FAMILIES]
    if bad or not fams:
        raise argparse.ArgumentTypeError(f"unknown family {bad} (have {', '.join(FAMILIES)})")
    return tuple(f for f in FAMILIES if f in fams)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fault_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=10_000, help="how many seeds")
    p.add_argument("--start", type=int, default=0, help="the first seed")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument(
        "--families",
        type=_families,
        default=FAMILIES,
        help=f"comma-separated subset of {','.join(FAMILIES)}: scenarios draw only from these",
    )
    p.add_argument("--replay", type=int, default=None, help="play one seed with a state dump")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if a.replay is not None:
        return 0 if replay(a.replay, a.families).ok else 1
    t0 = time.monotonic()
    results = run_seeds(list(range(a.start, a.start + a.seeds)), a.families, a.jobs)
    s = summarize(results, a.families)
    s["wall_s"] = round(time.monotonic() - t0, 1)
    s["jobs"] = a.jobs
    if a.json:
        print(json.dumps(s))
    else:
        print_summary(s)
        print(f"\n{s['wall_s']} s wall with {a.jobs} worker(s)")
    return 1 if s["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
