"""Goodput and CPU cost of our userspace TCP against Linux TCP on the same path.

    python -m benchmarks.tcp_goodput_bench [--mbytes 200] [--loss PCT] [--rtt MS] [--jitter MS]
                                           [--rate MBIT] [--reps 3] [--json]
    ./inv bench-tcp --loss 1 --rtt 200 --mbytes 100      # the issue's long "Done when" run

Without --loss/--rtt the path is a bare veth pair between two testbed hosts (no router, no
shaping): the clean path on which the stack's own cost shows. With them, a router in the middle
emulates the delay and loss (the testbed's emulator) and TSO/GSO are off on the hosts, so that
the loss hits single segments and not 64 KiB super-packets. Linux peers use cubic (the testbed
pins it per route; the machine's default here is bbr).

Each combination (sender -> receiver) runs ``--reps`` times; printed figures are medians:
goodput in Mbit/s (bytes over the sender's time from connected to fully closed; the receiver's
own figure is shown too), and CPU seconds per Gbit moved, from getrusage of each process (user
+ system; for Linux peers this is the application's syscalls only, the kernel's softirq work is
not attributable to a process). Every transfer is checked by sha256 on both ends.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from testbed.net import Testbed
from testbed.topology import load_topology
from testkit.transfer import client_server

CLEAN_TOPO = """description = "bench: client and server on one bare veth pair"
[nodes]
client = "host"
server = "host"
[links.direct]
ends = ["client", "server"]
[paths.direct]
from = "client"
link = "direct"
to = "server"
"""

EMULATED_TOPO = """description = "bench: client, emulating router, server"
[nodes]
client = "host"
r1 = "router"
server = "host"
[links.access]
ends = ["client", "r1"]
{model}
[links.core]
ends = ["r1", "server"]
[paths.access]
from = "client"
link = "access"
to = "server"
"""

# --tcp-only: this benchmark measures our TCP (the CLI speaks MPTCP by default).
SENDERS = {
    "ours": ["-m", "mptcp_impl", "client", "--json", "--tcp-only"],
    "ours-packet": ["-m", "mptcp_impl", "client", "--json", "--tcp-only", "--sender", "packet"],
    "ours-raw": ["-m", "mptcp_impl", "client", "--json", "--tcp-only", "--sender", "raw"],
    "linux": ["-m", "testkit.kpeer", "client"],
}
RECEIVERS = {
    "ours": ["-m", "mptcp_impl", "server", "--once", "--json", "--tcp-only"],
    "linux": ["-m", "testkit.kpeer", "server"],
}
DEFAULT_PAIRS = [
    ("linux", "linux"),
    ("ours", "linux"),
    ("ours-packet", "linux"),
    ("ours-raw", "linux"),
    ("linux", "ours"),
    ("ours", "ours"),
]


def run_pair(
    tb, work: Path, sender: str, receiver: str, nbytes: int, port: int, timeout: float
) -> dict:
    c, s = tb.host("client"), tb.host("server")
    path = tb.paths[0]
    dst, src = path.dst_addr, path.src_addr
    tag = f"{sender}-{receiver}-{port}"
    sargs = [*RECEIVERS[receiver], "--listen", f"{dst}:{port}"]
    cargs = [*SENDERS[sender], "--connect", f"{dst}:{port}", "--bytes", str(nbytes)]
    if sender.startswith("ours"):
        cargs += ["--bind", src]
    cr, sr, wall = client_server(s, sargs, c, cargs, work / tag, timeout=timeout, server_timeout=30)
    ok = cr.get("sha256") == sr.get("sha256") and sr.get("bytes_received") == nbytes
    gbit = nbytes * 8 / 1e9
    return {
        "sender": sender,
        "receiver": receiver,
        "bytes": nbytes,
        "ok": ok,
        "wall_s": wall,
        "goodput_mbit": nbytes * 8 / cr["duration_s"] / 1e6,
        "receiver_goodput_mbit": nbytes * 8 / sr["duration_s"] / 1e6
        if sr.get("duration_s")
        else None,
        "sender_cpu_s_per_gbit": cr.get("cpu_s", float("nan")) / gbit,
        "receiver_cpu_s_per_gbit": sr.get("cpu_s", float("nan")) / gbit,
        "sender_retransmits": cr.get("stats", {}).get("retransmits"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mbytes", type=float, default=200)
    ap.add_argument("--loss", type=float, default=0.0, help="loss in percent on the access link")
    ap.add_argument("--rtt", type=float, default=0.0, help="added round-trip time in ms")
    ap.add_argument("--jitter", type=float, default=0.0, help="jitter in ms (one-way)")
    ap.add_argument("--rate", type=float, default=0.0, help="shaping in Mbit/s (0: none)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--pairs", default="", help="e.g. ours:linux,linux:ours (default: all)")
    ap.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    a = ap.parse_args(argv)

    emulated = a.loss > 0 or a.rtt > 0 or a.jitter > 0 or a.rate > 0
    work = Path(tempfile.mkdtemp(prefix="bench-tcp-"))
    topo_file = work / "bench.toml"
    if emulated:
        model = []
        if a.rtt:
            model.append(f"delay_ms = {a.rtt / 2}")
        if a.jitter:
            model.append(f"jitter_ms = {a.jitter}")
        if a.loss:
            model.append(f"loss_pct = {a.loss}")
        if a.rate:
            model += [f"rate_mbit = {a.rate}", "queue_pkts = 1000"]
        topo_file.write_text(EMULATED_TOPO.format(model="\n".join(model)))
    else:
        topo_file.write_text(CLEAN_TOPO)
    pairs = [tuple(p.split(":")) for p in a.pairs.split(",")] if a.pairs else DEFAULT_PAIRS
    nbytes = int(a.mbytes * 1e6)
    # Generous: 100 MB at 1% loss and 200 ms RTT is a matter of many minutes.
    timeout = max(120.0, nbytes * 8 / 0.5e6)
    results: list[dict] = []
    print(
        f"path: {'emulated ' if emulated else 'clean veth'} loss={a.loss}% rtt={a.rtt}ms "
        f"jitter={a.jitter}ms rate={a.rate or 'unshaped'}; {a.mbytes} MB x {a.reps}; "
        f"work dir {work}",
        flush=True,
    )
    # Clean: offload on (raw speed, 64 KiB super-packets both ways). Emulated: off, so that a
    # loss rate counts segments. Linux TCP is pinned to cubic by the testbed either way.
    with Testbed(load_topology(str(topo_file)), workdir=work, offload=not emulated) as tb:
        port = 6000
        for snd, rcv in pairs:
            runs = []
            for _ in range(a.reps):
                port += 1
                runs.append(run_pair(tb, work, snd, rcv, nbytes, port, timeout))
            med = {
                k: statistics.median(r[k] for r in runs if r[k] is not None)
                for k in ("goodput_mbit", "sender_cpu_s_per_gbit", "receiver_cpu_s_per_gbit")
                if any(r[k] is not None for r in runs)
            }
            row = {
                "sender": snd,
                "receiver": rcv,
                "reps": len(runs),
                "all_ok": all(r["ok"] for r in runs),
                **{k: round(v, 3) for k, v in med.items()},
                "runs": runs,
            }
            results.append(row)
            print(
                f"{snd:>10} -> {rcv:<6} goodput {med['goodput_mbit']:9.1f} Mbit/s   "
                f"cpu/Gbit sender {med['sender_cpu_s_per_gbit']:6.2f} s  receiver "
                f"{med['receiver_cpu_s_per_gbit']:6.2f} s   sha256 "
                f"{'ok' if row['all_ok'] else 'MISMATCH'}",
                flush=True,
            )
    if a.json:
        print(
            json.dumps(
                {"loss_pct": a.loss, "rtt_ms": a.rtt, "mbytes": a.mbytes, "results": results}
            )
        )
    return 0 if all(r["all_ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
