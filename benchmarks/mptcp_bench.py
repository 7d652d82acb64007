"""Our userspace MPTCP against Linux MPTCP: the Linux selftest's simult_flows bound, and CPU.

    python -m benchmarks.mptcp_bench [--case simult|rate|cpu|all] [--reps 1] [--json]
    ./inv bench-mptcp

Topology: two_path's shape (a client with two links, each to its own router, both routers to
a core router and the single-homed server), no delay; hosts route by source address.

``simult``: the bandwidth cases of tools/testing/selftests/net/mptcp/simult_flows.sh: the two
links shaped to 10/10 and 15/5 Mbit/s (htb on both ends), a 16 MiB transfer over both paths,
which must finish within the selftest's bound ``size*8*10/((r1+r2)*1024*1024*9) + 0.45`` s
(the selftest's own margin: 10% over the ideal, plus setup). Each case runs for every pair in
which our stack moves the data either way (ours -> Linux, Linux -> ours), and Linux -> Linux
as the reference.

``rate``: the aggregate at higher rates: both links shaped to the same rate (htb, no delay;
``--rates``, default 50 and 200 Mbit/s), a 64 MB transfer over both paths; goodput of each pair
and ours over Linux -> Linux from the same run (the sender's ratio is what issue 22 tracks).
``--rps`` spreads the routers' receive work over the CPUs first (``spread_router_rx``).

``cpu``: unshaped links, 200 MB, one subflow and two, CPU seconds per Gbit of each process
(getrusage: user + system; a Linux peer's figure is its syscalls only, softirq work is not
attributed to a process) and goodput.

Every transfer is checked by sha256 at both ends; subflow counts come from our ``--json`` and
from ``nstat`` in the Linux host.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from testbed.net import Testbed
from testbed.topology import load_topology
from testkit.transfer import client_server, counters_delta, nstat

MIB = 1024 * 1024

TOPO = """description = "bench: a multi-homed client, two disjoint paths to a server"
[nodes]
client = "host"
r1 = "router"
r2 = "router"
core = "router"
server = "host"
[links.p1]
ends = ["client", "r1"]
{m1}
[links.p2]
ends = ["client", "r2"]
{m2}
[links.p1-core]
ends = ["r1", "core"]
[links.p2-core]
ends = ["r2", "core"]
[links.server]
ends = ["core", "server"]
[paths.p1]
from = "client"
link = "p1"
to = "server"
[paths.p2]
from = "client"
link = "p2"
to = "server"
"""

# Linux MPTCP peers (socket protocol 262), standard library only; same stream and report as
# our CLI: a 1 MiB block of random.Random(seed) repeated, sha256, CPU of the process.
KPEER = r"""
import hashlib, json, random, resource, socket, sys, time
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime + r.ru_stime
role, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if role == "server":
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, port)); ls.listen(4)
    print("listening", file=sys.stderr, flush=True)
    c, _ = ls.accept(); t0 = time.monotonic(); h = hashlib.sha256(); n = 0
    while d := c.recv(1 << 18):
        n += len(d); h.update(d)
    c.close()
    print(json.dumps({"bytes_received": n, "sha256": h.hexdigest(), "cpu_s": cpu(),
                      "duration_s": time.monotonic() - t0}), flush=True)
else:
    n = int(sys.argv[4]); blk = memoryview(random.Random(0).randbytes(1 << 20))
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
    t0 = time.monotonic(); s.connect((addr, port)); t1 = time.monotonic()
    h = hashlib.sha256(); left = n
    while left:
        c = blk[: min(left, len(blk))]; s.sendall(c); h.update(c); left -= len(c)
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):
        pass
    s.close()
    print(json.dumps({"bytes_sent": n, "sha256": h.hexdigest(), "cpu_s": cpu(),
                      "duration_s": time.monotonic() - t1}), flush=True)
"""


def transfer(
    tb,
    work: Path,
    sender: str,
    receiver: str,
    nbytes: int,
    port: int,
    subflows: int,
    timeout: float,
) -> dict:
    """One transfer client -> server; ``sender``/``receiver`` are "ours" or "linux"; with
    ``PROFILE_DIR`` set, our side(s) run under cProfile (a stats file per side and transfer)."""
    c, s = tb.host("client"), tb.host("server")
    p1, p2 = tb.path("p1"), tb.path("p2")
    dst = p1.dst_addr
    tag = f"{sender}-{receiver}-{port}"
    extra = [p2.src_addr] if subflows > 1 else []
    # Linux: the client's second address as a subflow endpoint, limits for it on both ends.
    tb.kernel_mptcp(
        "client",
        limits={"subflows": subflows - 1, "add_addr_accepted": 0},
        endpoints=[(a, tb.intf("client", "p2"), "subflow") for a in extra],
    )
    tb.kernel_mptcp("server", limits={"subflows": subflows - 1, "add_addr_accepted": 0})
    before = {h: nstat(tb.host(h), "MPTcpExt") for h in ("client", "server")}
    if receiver == "ours":
        sargs = [
            "-m",
            "mptcp_impl",
            "server",
            "--once",
            "--json",
            "--listen",
            f"{dst}:{port}",
            "--limits",
            f"subflows={subflows - 1},add_addr_accepted=0",
        ]
        if PROFILE_DIR is not None:
            sargs = ["-m", "cProfile", "-o", str(PROFILE_DIR / f"{tag}-receiver.prof"), *sargs]
    else:
        sargs = ["-c", KPEER, "server", dst, str(port)]
    if sender == "ours":
        cargs = [
            "-m",
            "mptcp_impl",
            "client",
            "--json",
            "--connect",
            f"{dst}:{port}",
            "--bytes",
            str(nbytes),
            "--bind",
            p1.src_addr,
            "--limits",
            f"subflows={subflows - 1},add_addr_accepted=0",
        ]
        for a in extra:
            cargs += ["--endpoint", f"{a},subflow"]
        if not extra:
            cargs += ["--endpoint", f"{p1.src_addr},subflow"]  # no other endpoint: 1 subflow
        cargs += OURS_ARGS
        if PROFILE_DIR is not None:
            cargs = ["-m", "cProfile", "-o", str(PROFILE_DIR / f"{tag}-sender.prof"), *cargs]
    else:
        cargs = ["-c", KPEER, "client", dst, str(port), str(nbytes)]
    cr, sr, wall = client_server(s, sargs, c, cargs, work / tag, timeout=timeout, server_timeout=60)
    after = {h: nstat(tb.host(h), "MPTcpExt") for h in ("client", "server")}
    kdiff = {h: counters_delta(before[h], after[h]) for h in after}
    ours = cr if sender == "ours" else sr if receiver == "ours" else None
    n_sub = None
    if ours is not None and "mptcp" in ours:
        n_sub = sum(
            1 for sf in ours["mptcp"]["subflows"] if sf["bytes_sent"] or sf["bytes_received"]
        )
    elif sender == receiver == "linux":
        n_sub = 1 + kdiff["server"].get("MPTcpExtMPJoinAckRx", 0)
    ok = cr.get("sha256") == sr.get("sha256") and sr.get("bytes_received") == nbytes
    gbit = nbytes * 8 / 1e9
    return {
        "sender": sender,
        "receiver": receiver,
        "ok": ok,
        "subflows_used": n_sub,
        "fallback": (ours or {}).get("mptcp", {}).get("fallback"),
        "time_s": cr["duration_s"],
        "wall_s": wall,
        "goodput_mbit": nbytes * 8 / cr["duration_s"] / 1e6,
        "sender_cpu_s_per_gbit": cr.get("cpu_s", float("nan")) / gbit,
        "receiver_cpu_s_per_gbit": sr.get("cpu_s", float("nan")) / gbit,
        # ours only: the kernel's share (syscalls, software GSO/checksums without offload)
        "sender_sys_s_per_gbit": cr.get("cpu_sys_s", float("nan")) / gbit,
        # (the kernel work our receiver's ACKs set off runs in its context: the peer's
        # reaction to each ACK, forwarded hop by hop, is charged here)
        "receiver_sys_s_per_gbit": sr.get("cpu_sys_s", float("nan")) / gbit,
        "linux_counters": kdiff,
    }


PAIRS = [("linux", "linux"), ("ours", "linux"), ("linux", "ours")]
PROFILE_DIR: Path | None = None  # --profile: our side(s) under cProfile, stats written here
OURS_ARGS: list[str] = []  # --ours-args: more options of our sender's CLI


def each_pair(tb, work: Path, ports, reps: int, nbytes: int, subflows: int, timeout: float):
    """(sender, receiver, its ``reps`` transfers) for every pair of PAIRS, each transfer on the
    next port of ``ports``."""
    for snd, rcv in PAIRS:
        runs = [
            transfer(tb, work, snd, rcv, nbytes, next(ports), subflows, timeout)
            for _ in range(reps)
        ]
        yield snd, rcv, runs


def simult(work: Path, reps: int) -> list[dict]:
    rows = []
    size = 16 * MIB
    for r1, r2 in ((10, 10), (15, 5)):
        bound = size * 8 * 10 / ((r1 + r2) * MIB * 9) + 0.45
        topo = work / f"simult-{r1}-{r2}.toml"
        topo.write_text(
            TOPO.format(
                m1=f"rate_mbit = {r1}\nqueue_pkts = 100", m2=f"rate_mbit = {r2}\nqueue_pkts = 100"
            )
        )
        with Testbed(load_topology(str(topo)), workdir=work) as tb:
            for snd, rcv, runs in each_pair(tb, work, itertools.count(7001), reps, size, 2, 120):
                t = statistics.median(x["time_s"] for x in runs)
                row = {
                    "case": f"{r1}/{r2} Mbit/s",
                    "sender": snd,
                    "receiver": rcv,
                    "time_s": round(t, 3),
                    "bound_s": round(bound, 3),
                    "within": t <= bound,
                    "all_ok": all(x["ok"] for x in runs),
                    "subflows_used": runs[-1]["subflows_used"],
                    "runs": runs,
                }
                rows.append(row)
                print(
                    f"simult {row['case']:>12}  {snd:>5} -> {rcv:<5}  {t:6.2f} s  "
                    f"(bound {bound:.2f} s: {'within' if row['within'] else 'OVER'})  "
                    f"subflows {row['subflows_used']}  "
                    f"sha256 {'ok' if row['all_ok'] else 'MISMATCH'}",
                    flush=True,
                )
    return rows


def spread_router_rx(tb) -> None:
    """RPS on the routers' interfaces facing the client: their receive processing (forwarding,
    htb, and what it triggers downstream) goes to any CPU instead of running in the softirq of
    the CPU that sent the packet, i.e. in the sending process's context. Our sender sends from
    its own process (a Linux sender mostly from softirq), so without it the testbed's
    per-packet work is charged to, and competes with, our sender's core."""
    mask = format((1 << (os.cpu_count() or 1)) - 1, "x")
    for router, link in (("r1", "p1"), ("r2", "p2")):
        dev = tb.intf(router, link)
        tb.host(router).run(
            ["sh", "-c", f"echo {mask} > /sys/class/net/{dev}/queues/rx-0/rps_cpus"], check=True
        )


def rate(work: Path, reps: int, rates: list[float], mbytes: float, rps: bool = False) -> list[dict]:
    """2 x ``r`` Mbit/s for each r in ``rates``: goodput of every pair, and its ratio to Linux
    -> Linux measured on the same testbed just before (``rps``: ``spread_router_rx`` first)."""
    rows = []
    nbytes = int(mbytes * 1e6)
    for r in rates:
        topo = work / f"rate-{r:g}.toml"
        topo.write_text(TOPO.format(m1=f"rate_mbit = {r}", m2=f"rate_mbit = {r}"))
        with Testbed(load_topology(str(topo)), workdir=work) as tb:
            if rps:
                spread_router_rx(tb)
            ref = None
            for snd, rcv, runs in each_pair(tb, work, itertools.count(9001), reps, nbytes, 2, 120):
                g = statistics.median(x["goodput_mbit"] for x in runs)
                if snd == rcv == "linux":
                    ref = g
                row = {
                    "case": f"2 x {r:g} Mbit/s" + (" rps" if rps else ""),
                    "sender": snd,
                    "receiver": rcv,
                    "goodput_mbit": round(g, 1),
                    "ratio_to_linux": round(g / ref, 3) if ref else None,
                    "sender_cpu_s_per_gbit": round(
                        statistics.median(x["sender_cpu_s_per_gbit"] for x in runs), 3
                    ),
                    "sender_sys_s_per_gbit": round(
                        statistics.median(x["sender_sys_s_per_gbit"] for x in runs), 3
                    ),
                    "all_ok": all(x["ok"] for x in runs),
                    "subflows_used": runs[-1]["subflows_used"],
                    "runs": runs,
                }
                rows.append(row)
                print(
                    f"rate {row['case']:>16}  {snd:>5} -> {rcv:<5}  {g:7.1f} Mbit/s  "
                    f"ratio {row['ratio_to_linux'] or float('nan'):5.3f}  "
                    f"sender cpu/Gbit {row['sender_cpu_s_per_gbit']:5.2f} s "
                    f"(sys {row['sender_sys_s_per_gbit']:4.2f})  "
                    f"subflows {row['subflows_used']}  "
                    f"sha256 {'ok' if row['all_ok'] else 'MISMATCH'}",
                    flush=True,
                )
    return rows


def _sys(snd: str, rcv: str, med: dict) -> str:
    """Our side's kernel share of its CPU, where it is ours (Linux's peers report none)."""
    parts = [
        f"{side} sys {med[f'{side}_sys_s_per_gbit']:.2f}"
        for side, who in (("sender", snd), ("receiver", rcv))
        if who == "ours"
    ]
    return f" ({', '.join(parts)})" if parts else ""


def cpu(work: Path, reps: int, mbytes: float) -> list[dict]:
    rows = []
    nbytes = int(mbytes * 1e6)
    topo = work / "cpu.toml"
    topo.write_text(TOPO.format(m1="", m2=""))
    with Testbed(load_topology(str(topo)), workdir=work, offload=True) as tb:
        ports = itertools.count(8001)
        for subflows in (1, 2):
            for snd, rcv, runs in each_pair(tb, work, ports, reps, nbytes, subflows, 300):
                med = {
                    k: statistics.median(x[k] for x in runs)
                    for k in (
                        "goodput_mbit",
                        "sender_cpu_s_per_gbit",
                        "receiver_cpu_s_per_gbit",
                        "sender_sys_s_per_gbit",
                        "receiver_sys_s_per_gbit",
                    )
                }
                row = {
                    "subflows": subflows,
                    "sender": snd,
                    "receiver": rcv,
                    "all_ok": all(x["ok"] for x in runs),
                    "subflows_used": runs[-1]["subflows_used"],
                    **{k: round(v, 3) for k, v in med.items()},
                    "runs": runs,
                }
                rows.append(row)
                print(
                    f"cpu {subflows} subflow(s)  {snd:>5} -> {rcv:<5}  "
                    f"{med['goodput_mbit']:8.1f} Mbit/s  cpu/Gbit sender "
                    f"{med['sender_cpu_s_per_gbit']:5.2f} s receiver "
                    f"{med['receiver_cpu_s_per_gbit']:5.2f} s{_sys(snd, rcv, med)}  "
                    f"used {row['subflows_used']}  "
                    f"sha256 {'ok' if row['all_ok'] else 'MISMATCH'}",
                    flush=True,
                )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", choices=("simult", "rate", "cpu", "all"), default="all")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--mbytes", type=float, default=200, help="MB per CPU-case transfer")
    ap.add_argument(
        "--rates", default="50,200", help="rate case: Mbit/s of each of the two links, a list"
    )
    ap.add_argument("--rate-mbytes", type=float, default=64, help="MB per rate-case transfer")
    ap.add_argument(
        "--rps",
        action="store_true",
        help="rate case: RPS on the routers' client-facing interfaces (spread_router_rx)",
    )
    ap.add_argument("--pairs", default="", help="only these sender-receiver pairs, e.g. ours-linux")
    ap.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    ap.add_argument(
        "--profile",
        type=Path,
        help="run our sender and receiver under cProfile, a stats file per side and transfer in "
        "this folder (figures then include the profiler's own cost)",
    )
    ap.add_argument(
        "--ours-args",
        default="",
        help="more options for our sender's CLI, e.g. '--tx-queue-ms 2'",
    )
    a = ap.parse_args(argv)
    global PROFILE_DIR
    OURS_ARGS[:] = a.ours_args.split()
    if a.profile is not None:
        a.profile.mkdir(parents=True, exist_ok=True)
        PROFILE_DIR = a.profile.resolve()
    work = Path(tempfile.mkdtemp(prefix="bench-mptcp-"))
    print(f"work dir {work}", flush=True)
    out: dict = {}
    if a.case in ("simult", "all"):
        out["simult"] = simult(work, a.reps)
    if a.pairs:
        want = {tuple(p.split("-")) for p in a.pairs.split(",")}
        PAIRS[:] = [p for p in PAIRS if p in want or p == ("linux", "linux")]
    if a.case in ("rate", "all"):
        rates = [float(x) for x in a.rates.split(",")]
        out["rate"] = rate(work, a.reps, rates, a.rate_mbytes, a.rps)
    if a.case in ("cpu", "all"):
        out["cpu"] = cpu(work, a.reps, a.mbytes)
    if a.json:
        print(json.dumps(out, default=str))
    rows = [r for v in out.values() for r in v]
    return 0 if all(r["all_ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
