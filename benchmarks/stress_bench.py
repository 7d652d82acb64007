"""Stress figures of our MPTCP stack (issue 10's conformance suite, its stress part).

    python -m benchmarks.stress_bench --case fuzz|many|loss|all [--json]
    ./inv bench-stress --case fuzz [--segments 1000000]
    ./inv bench-stress --case many [--conns 100 --kbytes 1000]
    ./inv bench-stress --case loss [--mbytes 1000 --loss 2 --jitter 10]

``fuzz``: the whole-segment fuzzer of ``tests/stress/segfuzz.py`` (sans-I/O, in the simulator):
``--segments`` mutated segments (options, header fields, payload with a wrong checksum, trimmed
payload, replays) through live two-subflow connections, no exception, every received byte a
prefix of what was sent. Prints mutated segments per second and the tally.

``many``: ``--conns`` concurrent MPTCP connections (two subflows each) to one server of ours
(the CLI without ``--once``), half from Linux MPTCP clients (one process, a ``subflow``
endpoint) and half from our CLI clients, each ``--kbytes``; sha256 of each; connections per
second, aggregate goodput, CPU of the server.

``loss``: ``--mbytes`` through two paths with ``--loss`` % random loss and ``--jitter`` ms of
delay jitter (reordering) on both, ours -> Linux and Linux -> ours; time, goodput,
retransmissions (TCP and MPTCP level), reinjections, sha256.

The fuzz case needs nothing; the others need root (Mininet namespaces).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def case_fuzz(segments: int) -> dict:
    from tests.stress.segfuzz import fuzz

    def progress(t, dt):
        if t.runs % 2000 == 0:
            print(f"  {t.mutated} mutated, {t.runs} connections, {dt:.0f} s", file=sys.stderr)

    c0, t0 = _cpu(), time.perf_counter()
    t = fuzz(segments, progress=progress)
    dt, cpu = time.perf_counter() - t0, _cpu() - c0
    res = {
        "case": "fuzz",
        "mutated_segments": t.mutated,
        "segments_on_wire": t.segments,
        "connections": t.runs,
        "completed": t.completed,
        "by_kind": t.by_kind,
        "option_blocks": t.option_blocks,
        "forged_mappings_refused": t.forge_refused,
        "bad_checksum_dropped": t.bad_checksum_dropped,
        "bytes_checked": t.bytes_checked,
        "time_s": round(dt, 1),
        "cpu_s": round(cpu, 1),
        "mutated_per_s": round(t.mutated / dt),
    }
    print(
        f"fuzz: {t.mutated} mutated segments ({t.segments} on the wire) in {t.runs} connections"
        f" ({t.completed} completed both ways), {dt:.0f} s, {t.mutated / dt:.0f}/s, CPU {cpu:.0f}"
        f" s; no exception, {t.bytes_checked / 1e6:.0f} MB received all prefixes of what was"
        f" sent; {t.bad_checksum_dropped} dropped on checksum; kinds {t.by_kind}"
    )
    return res


# ---------------------------------------------------------------- many connections


def case_many(conns: int, kbytes: float, rounds: int) -> dict:
    """``rounds`` rounds of ``conns`` concurrent connections, each round to a new server
    process (``run_many``: everything checked, the server left holding nothing)."""
    import tempfile
    from pathlib import Path

    from testbed.net import Testbed
    from testbed.topology import load_topology
    from tests.stress.test_many_connections import FAST, run_many

    topo = load_topology("two_path", overrides=FAST)
    figs = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-stress-") as d,
        Testbed(topo, workdir=Path(d)) as tb,
    ):
        tb.kernel_mptcp("client", endpoints=tb.default_endpoints("client"))
        tb.kernel_mptcp("server", endpoints=[])
        for r in range(rounds):
            f = run_many(tb, Path(d), conns // 2, conns - conns // 2, int(kbytes * 1000), 5600 + r)
            figs.append(f)
            print(
                f"many (round {r + 1}): {f['connections']} connections x {kbytes:g} KB, two"
                f" subflows each, all intact: {f['wall_s']} s, {f['conns_per_s']} conn/s,"
                f" {f['goodput_mbit']} Mbit/s aggregate, server CPU {f['server_cpu_s']} s,"
                f" lte share {f['lte_share']}, clients' CPU {f['client_cpu_s']}"
            )
    return {"case": "many", "rounds": figs}


# ---------------------------------------------------------------- 1 GB through loss


def _lossy(loss: float) -> dict:
    """Overrides that make two_path (topologies/two_path.toml) the loss case's paths: faster
    access links, delay jitter (reordering), ``loss`` % random loss, longer queues."""
    over: dict = {}
    for link, rate, delay, jitter in (("wifi", 100, 3, 1.5), ("lte", 50, 6, 3)):
        model = dict(rate_mbit=rate, delay_ms=delay, jitter_ms=jitter, loss_pct=loss)
        over |= {f"links.{link}.{k}": v for k, v in model.items()}
        over[f"links.{link}.queue_pkts"] = 400
    return over


def _loss_one(tb, work, direction: str, nbytes: int, port: int, timeout: float) -> dict:
    from mptcp_impl.cli import pattern_sha256
    from testkit.transfer import client_server, counters_delta, nstat

    client, server = tb.host("client"), tb.host("server")
    wifi, srv_ip = tb.addr("client", "wifi"), tb.addr("server", "server")
    linux_host = "server" if direction == "ours->linux" else "client"
    before = nstat(tb.host(linux_host))
    if direction == "ours->linux":
        sargs = ["-m", "tests.mptcp_interop.kmptcp", "server", "--listen", f"{srv_ip}:{port}"]
        cargs = ["-m", "mptcp_impl", "client", "--connect", f"{srv_ip}:{port}", "--json"]
        cargs += ["--bytes", str(nbytes), "--bind", wifi]
    else:
        sargs = ["-m", "mptcp_impl", "server", "--listen", f"{srv_ip}:{port}", "--once"]
        sargs += ["--json"]
        cargs = ["-m", "tests.mptcp_interop.kmptcp", "client", "--connect", f"{srv_ip}:{port}"]
        cargs += ["--bytes", str(nbytes), "--bind", wifi]
    stem = work / f"loss-{port}"
    cr, sr, wall = client_server(
        server, sargs, client, cargs, stem, timeout=timeout, server_timeout=60
    )
    delta = counters_delta(before, nstat(tb.host(linux_host)))
    ours = cr if direction == "ours->linux" else sr
    mp = ours.get("mptcp", {})
    subs = mp.get("subflows", [])
    mib = {k.removeprefix("MPTcpExt"): v for k, v in mp.get("mib", {}).items() if v}
    intact = (
        cr.get("sha256") == sr.get("sha256") == pattern_sha256(nbytes)
        and sr.get("bytes_received") == nbytes
    )
    res = {
        "direction": direction,
        "bytes": nbytes,
        "intact_sha256": intact,
        "time_s": round(wall, 1),
        "goodput_mbit": round(nbytes * 8 / wall / 1e6, 2),
        "subflows": len(subs),
        "fallback": mp.get("fallback"),
        "our_cpu_s": ours.get("cpu_s"),
    }
    if direction == "ours->linux":
        res["retransmitted_segments"] = sum(x.get("retransmits", 0) for x in subs)
        res["reinjected_bytes"] = sum(x.get("reinjected", 0) for x in subs)
        res["mptcp_retrans"] = mib.get("MPTCPRetrans", 0)
        res["share"] = [round(x["bytes_sent"] / max(1, nbytes), 3) for x in subs]
        res["linux_rx"] = {k: delta.get(k, 0) for k in ("TcpExtTCPOFOQueue", "MPTcpExtOFOQueue")}
    else:
        res["retransmitted_segments"] = delta.get("TcpRetransSegs", 0)
        res["mptcp_retrans"] = delta.get("MPTcpExtMPTCPRetrans", 0)
        res["share"] = [round(x["bytes_received"] / max(1, nbytes), 3) for x in subs]
        res["our_rx"] = {k: mib.get(k, 0) for k in ("OFOQueue", "DuplicateData")}
    res["errors"] = {k: v for k, v in mib.items() if k in _BAD}
    return res


_BAD = ("DSSNotMatching", "InfiniteMapRx", "OptionMalformed", "DataAckInvalid", "MPRstRx")


def case_loss(mbytes: float, loss: float, directions: list[str]) -> dict:
    import tempfile
    from pathlib import Path

    from testbed.net import Testbed
    from testbed.topology import load_topology

    nbytes = int(mbytes * 1e6)
    out = []
    with tempfile.TemporaryDirectory(prefix="bench-loss-") as d:
        with Testbed(load_topology("two_path", overrides=_lossy(loss)), workdir=Path(d)) as tb:
            tb.kernel_mptcp("client", endpoints=tb.default_endpoints("client"))
            tb.kernel_mptcp("server", endpoints=[])
            for i, direction in enumerate(directions):
                timeout = 120 + nbytes / 1e6 * 3  # at least ~2.7 Mbit/s
                r = _loss_one(tb, Path(d), direction, nbytes, 5700 + i, timeout)
                out.append(r)
                print(
                    f"loss {loss}% + jitter, {direction}: {mbytes:g} MB"
                    f" {'intact' if r['intact_sha256'] else 'NOT INTACT'} in {r['time_s']} s,"
                    f" {r['goodput_mbit']} Mbit/s, {r['subflows']} subflows (shares"
                    f" {r['share']}), retransmitted segments {r['retransmitted_segments']},"
                    f" MPTCP-level retransmissions {r['mptcp_retrans']},"
                    f" reinjected bytes {r.get('reinjected_bytes', '-')}, our CPU"
                    f" {r['our_cpu_s']} s; 1 GB would take"
                    f" ~{1e9 * 8 / (r['goodput_mbit'] * 1e6) / 60:.0f} min",
                    flush=True,
                )
    return {"case": "loss", "loss_pct": loss, "runs": out}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="stress_bench")
    p.add_argument("--case", default="all", choices=("fuzz", "many", "loss", "all"))
    p.add_argument("--segments", type=int, default=1_000_000)
    p.add_argument("--conns", type=int, default=100)
    p.add_argument("--kbytes", type=float, default=1000.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--mbytes", type=float, default=1000.0)
    p.add_argument("--loss", type=float, default=2.0)
    p.add_argument("--direction", default="both", choices=("both", "ours->linux", "linux->ours"))
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    out = []
    if a.case in ("fuzz", "all"):
        out.append(case_fuzz(a.segments))
    if a.case in ("many", "all"):
        out.append(case_many(a.conns, a.kbytes, a.rounds))
    if a.case in ("loss", "all"):
        dirs = ["ours->linux", "linux->ours"] if a.direction == "both" else [a.direction]
        out.append(case_loss(a.mbytes, a.loss, dirs))
    if a.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
