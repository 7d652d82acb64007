"""mptcp-lab tasks. Run them through ./inv (it bootstraps the machine first): ./inv --list.

Each task is a thin shell over a function in a package, so that the logic is importable and
tested; the task only parses options and prints.
"""

from __future__ import annotations

import sys

from invoke import task

JSON_HELP = "print a JSON summary as the last line"


def _bench(module: str, args: list[str], json: bool) -> None:
    """Run benchmarks.<module>'s main with ``args`` (and --json) and exit with its status."""
    from importlib import import_module

    bench_main = import_module(f"benchmarks.{module}").main
    sys.exit(bench_main(args + (["--json"] if json else [])))


@task(
    help={
        "k": "pytest -k expression",
        "x": "stop at the first failure",
        "args": "more pytest arguments",
        "serial": "one process, no pytest-xdist workers",
    }
)
def test(c, k="", x=False, args="", serial=False):
    """Run the test suite (real namespaces, real kernel peers, real captures).

    Two pytest-xdist workers: one runs the timing-bound live tests, one at a time in collection
    order, the other the sans-I/O modules and the live tests that check orchestration only
    (campaigns over SSH and workers, merge, resume) beside it, at nice 10 (tests/conftest.py
    decides which is which). More workers would not help: the timing-bound live tests cannot
    overlap, and the machines have 2 cores."""
    cmd = [sys.executable, "-m", "pytest"]
    if not serial:
        cmd += ["-n", "2"]
    if k:
        cmd += ["-k", repr(k)]
    if x:
        cmd.append("-x")
    if args:
        cmd.append(args)
    c.run(" ".join(cmd), pty=False)


@task
def lint(c):
    """ruff check and ruff format --check over the tree (the venv's ruff; CI runs it first)."""
    c.run(f"{sys.executable} -m ruff check .", pty=False)
    c.run(f"{sys.executable} -m ruff format --check .", pty=False)


@task
def clean(c):
    """Remove what a crashed or interrupted run of this project left behind (and nothing else)."""
    from mptcp_impl.netio.firewall import remove_stale_tables
    from testbed.registry import clean_leftovers

    for line in clean_leftovers():
        print(line)
    # The userspace stack fences its ports with an nft table named after its pid; in a test
    # namespace the table goes with the namespace, in the root namespace it is removed here.
    for table in remove_stale_tables():
        print(f"removed nft table {table} of a process that is gone")


@task(
    help={
        "topology": "topology name or file",
        "json": JSON_HELP,
        "set_": "override a topology parameter, e.g. links.wifi.delay_ms=20 (repeatable)",
        "out": "where trace figures go (default results/testbed-check/<topology>/)",
    },
    iterable=["set_"],
)
def testbed_check(c, topology="two_path", json=False, set_=None, out=None):
    """Build a topology, measure each path's RTT and throughput against what it should be."""
    from testbed.check import main as check_main

    sys.exit(check_main(topology, overrides=set_ or [], as_json=json, out=out))


@task(
    help={
        "topology": "topology name or file",
        "rates": "comma-separated Mbit/s",
        "rtts": "comma-separated RTTs in ms",
    }
)
def testbed_sweep(c, topology="two_path", rates="1,10,100", rtts="2,20,200"):
    """testbed-check over a grid of rates and RTTs (minutes): the emulator's accuracy campaign."""
    from testbed.check import sweep

    sys.exit(
        sweep(topology, [float(r) for r in rates.split(",")], [float(r) for r in rtts.split(",")])
    )


@task(
    help={
        "experiment": "an experiment file (experiments/*.toml) or its name",
        "stack": "only these stacks, comma-separated (e.g. kernel-mptcp)",
        "set_": "override, e.g. links.lte.delay_ms=50 or traffic.duration_s=5 (repeatable)",
        "reps": "repetitions (overrides the file)",
        "results": "results root (default: results/)",
        "inventory": "run on the real machines of this TOML file, over SSH (README: scaling out)",
        "workers": "spread the runs over the workers of this TOML file (Fabric, over SSH)",
        "accept_new_host_keys": "accept host keys not in known_hosts yet (and record them)",
        "resume": "finish this campaign folder: keep its finished runs, rerun the rest",
        "quarantine_after": "--workers: a worker failing this many runs in a row takes no more",
        "allow_mixed": "--workers: run even when the workers' kernels differ",
        "fetch_pcaps": "--workers: bring the captures back too (default: the workers' analysis)",
    },
    iterable=["set_"],
)
def run(
    c,
    experiment,
    stack=None,
    set_=None,
    reps=None,
    results=None,
    inventory=None,
    workers=None,
    accept_new_host_keys=False,
    resume=None,
    quarantine_after=3,
    allow_mixed=False,
    fetch_pcaps=False,
):
    """Run an experiment file; results/<experiment>/<run-id>/ gets data, metadata and metrics."""
    from experiments.__main__ import run_cli

    sys.exit(
        run_cli(
            experiment,
            stack=stack,
            sets=set_ or [],
            reps=int(reps) if reps is not None else None,
            results=results,
            inventory=inventory,
            workers=workers,
            accept_new_host_keys=accept_new_host_keys,
            resume=resume,
            quarantine_after=int(quarantine_after),
            allow_mixed=allow_mixed,
            fetch_pcaps=fetch_pcaps,
        )
    )


@task(help={"run_dir": "a finished campaign folder (results/<experiment>/<run-id>/)"})
def record(c, run_dir):
    """Write experiments/records/<experiment>/ (metrics, metadata, report.md) from a campaign."""
    from experiments.records import README, RecordError, update_readme, write_record

    try:
        out = write_record(run_dir)
    except RecordError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"record: {out}")
    if update_readme():
        print(f"tables of record regenerated in {README}")


@task(
    help={
        "campaign": "a campaign with a record under experiments/records/ (e.g. schedulers)",
        "run_dir": "compare this finished rerun instead of running the campaign again",
    }
)
def reproduce(c, campaign, run_dir=None):
    """Rerun a recorded campaign with today's code; say claim by claim whether its verdict is
    the record's. Live (namespaces, traffic): wrap it in the live lock."""
    from experiments.records import RecordError, comparison_lines, reproduce

    try:
        new_dir, rows = reproduce(campaign, run_dir)
    except RecordError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"rerun: {new_dir}")
    for line in comparison_lines(rows):
        print(line)
    sys.exit(0 if rows and all(r.same for r in rows) else 1)


@task(name="list")
def list_(c):
    """List experiment files, topologies and stacks with their descriptions."""
    from experiments.__main__ import print_listing

    print_listing()


@task(help={"results": "results root (default: results/)"})
def demo(c, results=None):
    """The flagship: two_path failover and aggregation, tcp, kernel MPTCP and our userspace stack side by side, and their report."""
    from experiments.demo import run_demo

    sys.exit(run_demo(results_root=results))


@task(
    help={
        "seconds": "iperf3 time per phase",
        "delay_ms": "one-way delay on the emulated link",
        "rate": "htb Mbit/s on the emulated link (default: none)",
        "reorder_pct": "netem-style reordering in % (issue 19's speed case: 1; default 0)",
        "duplicate_pct": "duplication in %",
        "corrupt_pct": "corruption in % of the TCP segments with payload (checksum left wrong)",
        "corrupt_fix_checksum": "corrupted segments get a right checksum",
        "parallel": "iperf3 streams per direction (default 1)",
        "trace": "a Mahimahi trace file for both directions of the link (instead of --rate)",
        "queue_pkts": "the trace queue's depth in 1500-byte packets (default 1000)",
        "json": JSON_HELP,
    }
)
def bench_linkem(
    c,
    seconds=10.0,
    delay_ms=10.0,
    rate=None,
    reorder_pct=0.0,
    duplicate_pct=0.0,
    corrupt_pct=0.0,
    corrupt_fix_checksum=False,
    parallel=1,
    trace=None,
    queue_pkts=None,
    json=False,
):
    """How fast the delay emulator goes: h1 -- r1 -- h2 at 20 ms RTT, Mbit/s and its CPU use."""
    args = ["--seconds", str(seconds), "--delay-ms", str(delay_ms)]
    if rate is not None:
        args += ["--rate", str(rate)]
    args += ["--reorder-pct", str(reorder_pct), "--duplicate-pct", str(duplicate_pct)]
    args += ["--corrupt-pct", str(corrupt_pct)]
    if corrupt_fix_checksum:
        args.append("--corrupt-fix-checksum")
    args += ["--parallel", str(parallel)]
    if trace:
        args += ["--trace", trace]
    if queue_pkts:
        args += ["--queue-pkts", str(queue_pkts)]
    _bench("linkem_bench", args, json)


@task(
    help={
        "mbytes": "MB per transfer",
        "loss": "loss in percent on the path",
        "rtt": "added round-trip time in ms",
        "jitter": "one-way jitter in ms",
        "rate": "shaping in Mbit/s (default: none)",
        "reps": "repetitions per pair",
        "pairs": "sender:receiver list, e.g. ours:linux,linux:ours (default: all)",
        "json": JSON_HELP,
    }
)
def bench_tcp(
    c, mbytes=200.0, loss=0.0, rtt=0.0, jitter=0.0, rate=0.0, reps=3, pairs="", json=False
):
    """Goodput and CPU s/Gbit of our userspace TCP vs Linux TCP (clean veth, or loss and RTT)."""
    args = [
        "--mbytes",
        str(mbytes),
        "--loss",
        str(loss),
        "--rtt",
        str(rtt),
        "--jitter",
        str(jitter),
        "--rate",
        str(rate),
        "--reps",
        str(reps),
    ]
    if pairs:
        args += ["--pairs", pairs]
    _bench("tcp_goodput_bench", args, json)


@task(
    help={
        "case": "simult (the Linux selftest's simult_flows bandwidth cases), rate (2 x N Mbit/s "
        "aggregate, ours / Linux), cpu, or all",
        "reps": "repetitions per pair",
        "mbytes": "MB per CPU-case transfer",
        "rates": "rate case: Mbit/s of each link, comma-separated",
        "pairs": "only these sender-receiver pairs besides linux-linux, e.g. ours-linux",
        "rps": "rate case: RPS on the routers' client-facing interfaces",
        "json": JSON_HELP,
    }
)
def bench_mptcp(
    c, case="all", reps=1, mbytes=200.0, rates="50,200", pairs="", rps=False, json=False
):
    """Our userspace MPTCP vs Linux MPTCP: simult_flows transfer times, the 2 x N Mbit/s
    aggregate, CPU s/Gbit (1-2 subflows)."""
    args = ["--case", case, "--reps", str(reps), "--mbytes", str(mbytes), "--rates", rates]
    if pairs:
        args += ["--pairs", pairs]
    if rps:
        args.append("--rps")
    _bench("mptcp_bench", args, json)


@task(
    help={
        "case": "fuzz (1M mutated segments, sans-I/O), many (concurrent connections), loss "
        "(a big transfer through loss and jitter, both ways), or all",
        "segments": "fuzz: mutated segments",
        "conns": "many: concurrent connections per round (half Linux, half ours)",
        "kbytes": "many: KB per connection",
        "rounds": "many: rounds (a new server each)",
        "mbytes": "loss: MB per transfer",
        "loss": "loss: % random loss on both paths, each direction",
        "direction": "loss: both, ours->linux or linux->ours",
        "json": JSON_HELP,
    }
)
def bench_stress(
    c,
    case="all",
    segments=1_000_000,
    conns=100,
    kbytes=1000.0,
    rounds=3,
    mbytes=1000.0,
    loss=2.0,
    direction="both",
    json=False,
):
    """Stress: 1M-segment fuzz, 100+ concurrent MPTCP connections, 1 GB through 2% loss + jitter."""
    args = ["--case", case, "--segments", str(segments), "--conns", str(conns)]
    args += ["--kbytes", str(kbytes), "--rounds", str(rounds), "--mbytes", str(mbytes)]
    args += ["--loss", str(loss), "--direction", direction]
    _bench("stress_bench", args, json)


@task(
    help={
        "families": "comma-separated: cut, cut_return, loss, loss_cut, loss_cut_return, "
        "ifdown_return (default all)",
        "pairs": "comma-separated: ours->linux, linux->ours, linux->linux (the control)",
        "reps": "transfers per family and pair",
        "mbytes": "MB per transfer",
        "load": "busy processes running meanwhile",
        "keep": "keep every run's files (and stall dumps) in this folder",
        "json": JSON_HELP,
    }
)
def bench_live_faults(c, families="", pairs="", reps=20, mbytes=8.0, load=2, keep=None, json=False):
    """Compound faults live against Linux: completions and stalls per family, ours and Linux's."""
    args = ["--reps", str(reps), "--mbytes", str(mbytes), "--load", str(load)]
    args += ["--families", families] if families else []
    args += ["--pairs", pairs] if pairs else []
    args += ["--keep", keep] if keep else []
    _bench("live_fault_bench", args, json)


@task(
    help={
        "seeds": "how many seeded scenarios",
        "start": "the first seed",
        "jobs": "worker processes (default: 2, both cores)",
        "families": "comma-separated fault families to draw from (default: all)",
        "replay": "play this one seed again with its timeline and state dump",
        "json": JSON_HELP,
    }
)
def bench_faults(c, seeds=10_000, start=0, jobs=2, families="", replay=None, json=False):
    """Compound-fault harness: N seeded simulator scenarios, invariants checked, failures replayable."""
    args = ["--seeds", str(seeds), "--start", str(start), "--jobs", str(jobs)]
    if families:
        args += ["--families", families]
    if replay is not None:
        args += ["--replay", str(replay)]
    _bench("fault_bench", args, json)


@task(
    help={
        "mbytes": "MB per transfer",
        "reps": "transfers per case",
        "iperf_seconds": "iperf3's -t through the proxies",
        "json": JSON_HELP,
    }
)
def bench_proxy(c, mbytes=40.0, reps=2, iperf_seconds=15.0, json=False):
    """Unmodified TCP programs through the proxy vs our CLI on two_path, both ways; iperf3."""
    args = ["--mbytes", str(mbytes), "--reps", str(reps), "--iperf-seconds", str(iperf_seconds)]
    _bench("proxy_bench", args, json)


@task(
    help={"run_dir": "a run directory (RUN/pcap/<stack>/<rep>/<host>-<intf>.pcap, metadata.json)"}
)
def analyze(c, run_dir):
    """Parse a run's captures (cached as parquet), compute metrics: RUN/metrics.json + figures."""
    from analysis.cli import analyze_main

    sys.exit(analyze_main(run_dir))


@task(help={"results_dir": "a run directory, or a directory of runs (a campaign)"})
def report(c, results_dir):
    """Self-contained report.html (+ metrics.json) for a run or a campaign of runs."""
    from analysis.cli import report_main

    sys.exit(report_main(results_dir))


@task(
    help={
        "runs": "runs in the campaign (1 s TCP downloads)",
        "workers": "namespace-worker counts, comma-separated",
        "json": JSON_HELP,
    }
)
def bench_workers(c, runs=8, workers="1,2,4", json=False):
    """Campaign wall time on 1, 2, 4 namespace-workers, and the analysis pool's speedup."""
    _bench("workers_bench", ["--runs", str(runs), "--workers", workers], json)


@task(
    help={
        "run_dir": "a campaign folder (its analysis/ views) or a directory of runs",
        "runs": "the first N runs only (0: all)",
        "json": JSON_HELP,
    }
)
def bench_analysis(c, run_dir, runs=0, json=False):
    """A campaign's per-run analysis, serial vs on the process pool (every core)."""
    _bench("analysis_pool_bench", [run_dir] + (["--runs", str(runs)] if int(runs) else []), json)


@task(help={"segments": "TCP segments in the generated capture", "json": JSON_HELP})
def bench_parse(c, segments=1_000_000, json=False):
    """Our pcap parser vs tshark -T fields on a ~1M-segment real MPTCP capture."""
    _bench("analysis_parse_bench", ["--segments", str(segments)], json)
