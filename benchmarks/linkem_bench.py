"""How fast the delay emulator goes: h1 -- r1 -- h2, 20 ms RTT, iperf3 through the router.

With --reorder-pct 1 (issue 19's case; also --duplicate-pct, --loss-model, --corrupt-pct) the
link reorders too; the goal there is at least 1 Gbit/s per direction on one core with GSO.
Corruption costs more: a corrupting direction's queue gets every packet whole, one segment at a
time (the kernel cuts GSO packets for it), since each segment with payload has its own chance.

With --trace FILE (a Mahimahi trace) both directions of the link follow it (trace_down and
trace_up, a drop-tail queue of --queue-pkts) instead of a rate: the figures are then the
trace's rate and what the emulator spends on it (a file of N lines "1" is N x 12 Mbit/s).

The delay sits on ONE link (h1 -- r1), delay_ms each way (default 10 ms, so RTT 20 ms), so every
packet crosses the emulator once. The other link is plain. No rate limit unless --rate is given
(htb on both ends of the h1 -- r1 link). Three phases: h1 -> h2, h2 -> h1 (iperf3 -R) and both
at once (--bidir). For each it prints the receiver-side Mbit/s per direction and the emulator's
CPU use in % of one core (utime + stime from /proc/<pid>/stat over the phase).

    ./inv bench-linkem            or    python -m benchmarks.linkem_bench --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

from mininet.net import Mininet

from testbed.emulation import EmulatedPort, RouterEmulator, shape_interface
from testbed.host import MininetHost
from testbed.topology import LinkModel, LossModel
from testbed.trace import read_trace
from testkit.iperf import iperf3_end

H1_IP, H2_IP = "10.78.1.1", "10.78.2.1"
PORT = 5298


def build(prefix: str = "lb"):
    """h1 -- r1 -- h2 on veth links, no controller, no switches; forwarding on r1."""
    net = Mininet(topo=None, controller=None, build=False, autoSetMacs=False)
    h1, r1, h2 = (net.addHost(f"{prefix}{n}", ip=None) for n in ("h1", "r1", "h2"))
    net.addLink(h1, r1)
    net.addLink(r1, h2)
    net.build()
    h1.cmd(f"ip addr add {H1_IP}/24 dev {h1.name}-eth0; ip route add default via 10.78.1.254")
    h2.cmd(f"ip addr add {H2_IP}/24 dev {h2.name}-eth0; ip route add default via 10.78.2.254")
    r1.cmd(f"ip addr add 10.78.1.254/24 dev {r1.name}-eth0")
    r1.cmd(f"ip addr add 10.78.2.254/24 dev {r1.name}-eth1")
    r1.cmd("sysctl -qw net.ipv4.ip_forward=1")
    # Each phase is a new connection: it must not start from the ssthresh an earlier phase's
    # losses or reordering left in the TCP metrics cache (that measured the cache, not us).
    for h in (h1, h2):
        h.cmd("sysctl -qw net.ipv4.tcp_no_metrics_save=1")
    return net, h1, r1, h2


def cpu_seconds(pid: int | None) -> tuple[float, float]:
    """(utime, stime) of a process, in seconds. stime includes the kernel work its verdicts
    trigger downstream (forwarding, htb, the receiver's softirq), which runs in its context."""
    if pid is None:
        return 0.0, 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tck, int(fields[12]) / tck


def iperf3(client, server, seconds: float, mode: str, parallel: int = 1) -> dict[str, float]:
    """Receiver-side Mbit/s per direction ("h1->h2", "h2->h1") of one TCP iperf3 run (with
    `parallel` streams per direction, summed)."""
    flag = {"forward": "", "reverse": "-R", "bidir": "--bidir"}[mode]
    if parallel > 1:
        flag += f" -P {parallel}"
    end = iperf3_end(client, server, H2_IP, seconds, flag=flag, port=PORT)
    rtts = [
        st["sender"]["mean_rtt"] / 1000
        for st in end.get("streams", [])
        if st.get("sender", {}).get("mean_rtt")
    ]
    result = {"sender_mean_rtt_ms": max(rtts) if rtts else float("nan")}
    if mode in ("forward", "bidir"):
        result["h1->h2"] = end["sum_received"]["bits_per_second"] / 1e6
    if mode == "reverse":
        result["h2->h1"] = end["sum_received"]["bits_per_second"] / 1e6
    if mode == "bidir":
        result["h2->h1"] = end["sum_received_bidir_reverse"]["bits_per_second"] / 1e6
    return result


def ping_rtt(node, count: int = 20) -> float:
    """Median ping RTT to h2 in ms (the median skips the first ping's ARP resolution)."""
    out = node.cmd(f"ping -n -i 0.02 -c {count} {H2_IP}")
    rtts = sorted(float(t) for t in re.findall(r"time=([\d.]+)", out))
    return rtts[len(rtts) // 2] if rtts else float("nan")


def run(
    seconds: float,
    delay_ms: float,
    rate_mbit: float | None,
    modes: list[str],
    log_path: Path | None,
    jitter_ms: float = 0.0,
    no_offload: bool = False,
    conditions: dict | None = None,
    parallel: int = 1,
) -> list[dict]:
    """conditions: more LinkModel fields for the emulated link (reorder_pct, duplicate_pct, ...)."""
    net, h1, r1, h2 = build()
    emu = None
    results = []
    try:
        if no_offload:  # MTU-sized packets only: the emulator's per-packet cost shows
            for node in (h1, h2):
                node.cmd(f"ethtool -K {node.name}-eth0 tso off gso off gro off")
            for intf in ("eth0", "eth1"):
                r1.cmd(f"ethtool -K {r1.name}-{intf} tso off gso off gro off")
        model = LinkModel(
            delay_ms=delay_ms, jitter_ms=jitter_ms, rate_mbit=rate_mbit, **(conditions or {})
        )
        if rate_mbit:
            shape_interface(MininetHost(h1), f"{h1.name}-eth0", model)
            shape_interface(MininetHost(r1), f"{r1.name}-eth0", model)
        emu = RouterEmulator(
            MininetHost(r1),
            [EmulatedPort("left", f"{r1.name}-eth0", model)],
            log_path=log_path,
            seed=1,
        )
        emu.start()
        pid = emu.pids[0] if emu.pids else None  # --delay-ms 0: no emulator, the baseline
        print(
            f"ping RTT through r1: {ping_rtt(h1):.2f} ms (configured {2 * delay_ms:g} ms"
            f" = {delay_ms:g} ms each way on one link)",
            flush=True,
        )

        def counts() -> tuple[int, ...]:
            st = emu.stats().get("left")
            if st is None:
                return 0, 0, 0, 0, 0
            return tuple(
                sum(st[d][k] for d in ("in", "out"))
                for k in ("packets", "kernel_dropped", "reordered", "duplicated", "corrupted")
            ) + (sum(st[d].get("trace_dropped", 0) for d in ("in", "out")),)

        for mode in modes:
            pkts0, drops0, reo0, dup0, cor0, tdrop0 = counts()
            (u0, s0), t0 = cpu_seconds(pid), time.monotonic()
            mbit = iperf3(h1, h2, seconds, mode, parallel)
            elapsed = time.monotonic() - t0
            u1, s1 = cpu_seconds(pid)
            user, system = (u1 - u0) / elapsed * 100, (s1 - s0) / elapsed * 100
            cpu = user + system
            pkts1, drops1, reo1, dup1, cor1, tdrop1 = counts()
            row = {
                "mode": mode,
                **{k: round(v, 1) for k, v in mbit.items()},
                "emulator_cpu_pct": round(cpu, 1),
                "user_pct": round(user, 1),
                "system_pct": round(system, 1),
                "queued_per_s": round((pkts1 - pkts0) / elapsed),
                "kernel_dropped": drops1 - drops0,
                "reordered": reo1 - reo0,
                "duplicated": dup1 - dup0,
                "trace_dropped": tdrop1 - tdrop0,
                "corrupted": cor1 - cor0,
            }
            results.append(row)
            dirs = "  ".join(f"{k}: {v:7.1f} Mbit/s" for k, v in mbit.items() if "->" in k)
            dirs += f"  (sender's mean RTT {mbit['sender_mean_rtt_ms']:.1f} ms)"
            print(
                f"{mode:8s} {dirs}   emulator CPU {cpu:5.1f}% of one core "
                f"(user {user:.1f}%, system {system:.1f}%), "
                f"{row['queued_per_s']} packets/s queued, "
                f"{row['kernel_dropped']} dropped by a full queue"
                + (f", {row['reordered']} reordered" if row["reordered"] else "")
                + (f", {row['duplicated']} duplicated" if row["duplicated"] else "")
                + (
                    f", {row['trace_dropped']} dropped by the trace queue"
                    if row["trace_dropped"]
                    else ""
                )
                + (f", {row['corrupted']} corrupted" if row["corrupted"] else ""),
                flush=True,
            )
    finally:
        if emu is not None:
            emu.stop()
        net.stop()
    return results


def conditions(args: argparse.Namespace) -> dict:
    out: dict = {}
    if args.reorder_pct:
        out["reorder_pct"] = args.reorder_pct
    if args.duplicate_pct:
        out["duplicate_pct"] = args.duplicate_pct
    if args.trace:
        trace = read_trace(args.trace)
        out["trace_down"] = out["trace_up"] = trace
        if args.queue_pkts:
            out["queue_pkts"] = args.queue_pkts
        print(f"trace on h1 -- r1: {trace.path}, mean {trace.mean_mbit:.1f} Mbit/s", flush=True)
    if args.corrupt_pct:
        out["corrupt_pct"] = args.corrupt_pct
        out["corrupt_fix_checksum"] = args.corrupt_fix_checksum
    if args.loss_model:
        nums = [float(x) for x in args.loss_model.split(",")]
        out["loss_model"] = LossModel(*nums) if len(nums) > 1 else LossModel(nums[0], 100 - nums[0])
    if out:
        shown = {k: v for k, v in out.items() if not k.startswith("trace")}
        print(f"conditions on h1 -- r1: {shown}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="iperf3 time per phase")
    ap.add_argument("--delay-ms", type=float, default=10.0, help="one-way delay on h1 -- r1")
    ap.add_argument("--jitter-ms", type=float, default=0.0, help="jitter on h1 -- r1")
    ap.add_argument("--rate", type=float, default=None, help="htb Mbit/s on h1 -- r1 (none)")
    ap.add_argument(
        "--no-offload",
        action="store_true",
        help="TSO/GSO/GRO off on every interface: MTU-sized packets only",
    )
    ap.add_argument("--modes", default="forward,reverse,bidir")
    ap.add_argument(
        "--reorder-pct",
        type=float,
        default=0.0,
        help="netem-style reordering on h1 -- r1, in %% of packets (issue 19's case: 1)",
    )
    ap.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="iperf3 streams per direction: under reordering one TCP stream's window often "
        "collapses (spurious recovery), and then the figure is TCP's, not the emulator's",
    )
    ap.add_argument("--duplicate-pct", type=float, default=0.0, help="duplication, %%")
    ap.add_argument(
        "--corrupt-pct",
        type=float,
        default=0.0,
        help="corruption, %% of the TCP segments with payload (checksum left wrong: TCP "
        "drops them, so also a loss)",
    )
    ap.add_argument(
        "--corrupt-fix-checksum", action="store_true", help="corrupted segments' checksum fixed"
    )
    ap.add_argument(
        "--loss-model", default=None, help="Gilbert-Elliott p,r[,h,k] in %% (e.g. 0.01,30)"
    )
    ap.add_argument("--trace", default=None, help="a Mahimahi trace for both directions")
    ap.add_argument("--queue-pkts", type=int, default=None, help="the trace queue's depth")
    ap.add_argument("--log", type=Path, default=None, help="emulator stderr log")
    ap.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    args = ap.parse_args(argv)
    results = run(
        args.seconds,
        args.delay_ms,
        args.rate,
        args.modes.split(","),
        args.log,
        jitter_ms=args.jitter_ms,
        no_offload=args.no_offload,
        conditions=conditions(args),
        parallel=args.parallel,
    )
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
