"""Command line of the experiment runner: python -m experiments run FILE | list | merge DIR...

./inv run and ./inv list are thin shells over this; the tests drive it as a subprocess too
(e.g. to interrupt a real run with SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from experiments.config import ExperimentError, list_experiments, load_experiment
from experiments.report import write_summary
from experiments.stacks import STACKS, StackUnavailable
from testbed.topology import list_topologies


def print_listing() -> None:
    print("Experiments (experiments/*.toml):")
    for name, desc in list_experiments():
        print(f"  {name:<22} {desc}")
    print("Topologies (topologies/*.toml):")
    for name, desc in list_topologies():
        print(f"  {name:<22} {desc}")
    print("Stacks:")
    for name, stack in STACKS.items():
        try:
            stack.check_available()
            note = ""
        except StackUnavailable as e:
            note = f"  [{e}]"
        print(f"  {name:<22} {stack.description}{note}")


def run_cli(
    file: str,
    *,
    stack: str | None = None,
    sets: list[str] | None = None,
    reps: int | None = None,
    results: str | None = None,
    quiet: bool = False,
    analyze: bool = True,
    inventory: str | None = None,
    workers: str | None = None,
    accept_new_host_keys: bool = False,
    only_runs: list[int] | None = None,
    resume: str | None = None,
    quarantine_after: int = 3,
    allow_mixed: bool = False,
    fetch_pcaps: bool = False,
) -> int:
    """Validate, run, print where the results are and the summary; exit status says it all.

    inventory: run on the real machines of that file (testbed.sshnet); workers: spread the
    campaign's runs over the workers of that file (experiments.workers); resume: a campaign
    folder of this experiment to finish (its finished runs kept, the rest run again);
    quarantine_after: a worker that fails this many runs in a row takes no more; fetch_pcaps:
    the workers' captures come back too (by default only what their analysis made of them)."""
    # Imported here, not at the top: the runner brings Mininet and the analysis package
    # (0.6-2 s measured on this machine), which `./inv list` and a file's validation errors
    # do not need.
    from experiments.journal import ResumeError
    from experiments.remote import RemoteError, open_network
    from experiments.runner import run_experiment

    try:
        exp = load_experiment(file, sets or [], stack=stack, reps=reps)
        if workers and inventory:
            raise RemoteError(
                "--inventory (the experiment's hosts are real machines) and --workers (each "
                "run on a worker's own Mininet) are two different things: give one"
            )
        if workers:
            from experiments.workers import run_on_workers

            return run_on_workers(
                exp,
                workers,
                results_root=Path(results) if results else None,
                accept_new_host_keys=accept_new_host_keys,
                progress=not quiet,
                analyze=analyze,
                resume=Path(resume) if resume else None,
                quarantine_after=quarantine_after,
                allow_mixed=allow_mixed,
                fetch_pcaps=fetch_pcaps,
            )
        with open_network(exp, inventory, accept_new_host_keys) as network:
            res = run_experiment(
                exp,
                results_root=Path(results) if results else None,
                progress=not quiet,
                analyze=analyze,
                network=network,
                only_runs=only_runs,
                resume=Path(resume) if resume else None,
            )
    except (ExperimentError, StackUnavailable, RemoteError, ResumeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = write_summary([res.run_dir], res.run_dir / "summary.md", title=exp.name)
    print(f"results: {res.run_dir}  (summary: {summary.name})")
    for row in res.summary:
        g, w = row["goodput_steady_mbit"], row["goodput_mbit"]
        line = (
            f"  {row.get('variant') or row['stack']:<13} {json.dumps(row['point_values'])} "
            f"goodput steady {g['mean']} ± {g['std']}, whole transfer {w['mean']} ± {w['std']} "
            f"Mbit/s (n={g['n']})"
        )
        if "goodput_vs_sum_of_rates" in row:
            line += f", {row['goodput_vs_sum_of_rates']['mean']:.0%} of the sum of path rates"
        if "main_share" in row:
            line += f", share against background flows {row['main_share']['mean']:.0%}"
        if "failover_gap_s" in row:
            line += (
                f", failover gap {row['failover_gap_s']['mean']} ± {row['failover_gap_s']['std']} s"
            )
        apps = [(k.removeprefix("app_"), v) for k, v in row.items() if k.startswith("app_")]
        if apps:  # a real program's figures (kind = "app"), as its parser read them
            line += ", " + ", ".join(f"{k} {v['mean']} ± {v['std']}" for k, v in apps)
        line += "" if row["all_intact"] else ", DATA NOT INTACT"
        print(line)
    if res.report:
        print(f"report: {res.report}")
    return 0 if all(r.intact and r.ok for r in res.runs) else 1


def merge_cli(dirs: list[str], *, results: str | None = None, analyze: bool = True) -> int:
    """Merge shards, print where and what; 0 when every run is there and intact, 1 when not,
    2 when the shards cannot be merged (different files or commits, a run twice)."""
    from experiments.merge import MergeError, merge_shards

    try:
        out, meta = merge_shards(
            [Path(d) for d in dirs],
            results_root=Path(results) if results else None,
            analyze=analyze,
        )
    except MergeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = write_summary([out], out / "summary.md", title=meta["experiment"])
    print(f"merged {len(dirs)} shards, {meta['runs_done']}/{meta['runs_total']} runs: {out}")
    for r in meta["not_run"]:
        print(f"  NOT RUN: {r['label']} ({r['reason']})")
    print(f"summary: {summary}")
    if (out / "report.html").exists():
        print(f"report: {out / 'report.html'}")
    runs = json.loads((out / "metrics.json").read_text())["runs"]
    return 0 if meta["complete"] and all(r["ok"] and r["intact"] for r in runs) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run an experiment file")
    r.add_argument("file")
    r.add_argument("--stack", help="only these stacks (comma-separated)")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    r.add_argument("--reps", type=int)
    r.add_argument("--results", help="results root (default: results/)")
    r.add_argument("--quiet", action="store_true", help="no progress on stderr")
    r.add_argument("--no-analysis", action="store_true")
    r.add_argument("--inventory", help="run on the real machines of this TOML file (over SSH)")
    r.add_argument("--workers", help="spread the runs over the workers of this TOML file")
    r.add_argument(
        "--accept-new-host-keys",
        action="store_true",
        help="accept (and record in known_hosts) host keys not seen before",
    )
    r.add_argument("--runs", help="only these run indices (comma-separated; a worker's share)")
    r.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="finish this campaign folder: keep its finished runs (journal.jsonl), rerun the rest",
    )
    r.add_argument(
        "--quarantine-after",
        type=int,
        default=3,
        metavar="K",
        help="--workers: a worker that fails K runs in a row takes no more (default 3)",
    )
    r.add_argument(
        "--allow-mixed",
        action="store_true",
        help="--workers: run even when the workers' kernels differ (each run's is recorded)",
    )
    r.add_argument(
        "--fetch-pcaps",
        action="store_true",
        help="--workers: bring the captures back too (by default each worker analyses its "
        "runs and sends back metrics, parquet and figures, not the pcaps)",
    )
    sub.add_parser("list", help="experiments, topologies and stacks")
    g = sub.add_parser(
        "merge",
        help="merge shards (run FILE --runs I,J --results DIR) into one campaign folder",
    )
    g.add_argument(
        "dirs", nargs="+", metavar="DIR", help="a shard's campaign folder or results root"
    )
    g.add_argument("--results", help="results root of the merged campaign (default: results/)")
    g.add_argument("--no-analysis", action="store_true")
    a = ap.parse_args(argv)
    if a.cmd == "list":
        print_listing()
        return 0
    if a.cmd == "merge":
        return merge_cli(a.dirs, results=a.results, analyze=not a.no_analysis)
    return run_cli(
        a.file,
        stack=a.stack,
        sets=a.sets,
        reps=a.reps,
        results=a.results,
        quiet=a.quiet,
        analyze=not a.no_analysis,
        inventory=a.inventory,
        workers=a.workers,
        accept_new_host_keys=a.accept_new_host_keys,
        only_runs=[int(x) for x in a.runs.split(",")] if a.runs else None,
        resume=a.resume,
        quarantine_after=a.quarantine_after,
        allow_mixed=a.allow_mixed,
        fetch_pcaps=a.fetch_pcaps,
    )


if __name__ == "__main__":
    sys.exit(main())
