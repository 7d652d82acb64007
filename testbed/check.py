"""`./inv testbed-check`: does each path behave as its topology says?

For every path: RTT with ping from the path's source address, throughput with iperf3 bound to
it, against the RTT (twice the one-way delays on the route) and rate (slowest link) the topology
asks for. A path passes when throughput (as a wire rate: iperf3's goodput plus the per-segment
header overhead) is within 10% of the rate, and RTT within max(2 ms, 10%) of the wanted RTT.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from testbed.net import Testbed
from testbed.routing import ResolvedPath
from testbed.topology import TopologyError, load_topology

RATE_TOLERANCE = 0.10
RTT_TOLERANCE_MS = 2.0
# A link's rate counts whole frames; iperf3 reports TCP payload. With timestamps a full segment
# carries 1448 payload bytes in a 1514-byte frame, so wire rate = goodput * 1514 / 1448.
WIRE_PER_PAYLOAD = 1514 / 1448


@dataclass
class PathCheck:
    name: str
    want_rtt_ms: float
    rtt_ms: float | None
    want_mbit: float | None
    mbit: float | None  # wire rate, from goodput and the per-segment overhead
    goodput_mbit: float | None = None
    loss_pct: float | None = None
    ok: bool = False
    why: str = ""


def rtt_ok(want: float, got: float) -> bool:
    return abs(got - want) <= max(RTT_TOLERANCE_MS, RATE_TOLERANCE * want)


def rate_ok(want: float | None, got: float) -> bool:
    return want is None or abs(got - want) <= RATE_TOLERANCE * want


def measure_rtt(tb: Testbed, path: ResolvedPath, count: int = 20) -> tuple[float, float]:
    """Median RTT (ms) and loss (%) of `count` pings from the path's source address.

    The median, not the mean: one ping delayed by a busy CPU (two cores run the whole testbed)
    must not make a good path look off.
    """
    interval = 0.05 if path.want_rtt_ms < 100 else 0.2
    res = tb.host(path.src).run(
        [
            "ping",
            "-n",
            "-c",
            str(count),
            "-i",
            str(interval),
            "-W",
            "2",
            "-I",
            path.src_addr,
            path.dst_addr,
        ],
        check=False,
        timeout=count * (interval + 2) + 10,
    )
    loss = re.search(r"([\d.]+)% packet loss", res.stdout)
    rtts = [float(t) for t in re.findall(r"time=([\d.]+) ms", res.stdout)]
    if not rtts:
        raise RuntimeError(f"ping on path {path.name} got no reply: {res.stdout}{res.stderr}")
    return statistics.median(rtts), float(loss.group(1)) if loss else 0.0


def measure_mbit(tb: Testbed, path: ResolvedPath, seconds: float = 6.0, port: int = 5201) -> float:
    """Receiver-side iperf3 goodput (Mbit/s) client -> server on the path's addresses, leaving
    out the first 2 s (slow start) so the figure is the link's rate, not the ramp."""
    server = tb.host(path.dst).start(
        ["iperf3", "-s", "-1", "--forceflush", "-B", path.dst_addr, "-p", str(port)],
        stdout=subprocess.PIPE,
    )
    try:
        server.wait_for_line(r"Server listening", stream="stdout", timeout=10)
        res = tb.host(path.src).run(
            [
                "iperf3",
                "-c",
                path.dst_addr,
                "-B",
                path.src_addr,
                "-p",
                str(port),
                "-t",
                str(seconds),
                "-O",
                "2",
                "-J",
            ],
            timeout=seconds + 30,
        )
        data = json.loads(res.stdout)
        return data["end"]["sum_received"]["bits_per_second"] / 1e6
    finally:
        server.stop()


def check_paths(tb: Testbed, *, seconds: float = 6.0) -> list[PathCheck]:
    out = []
    for path in tb.paths:
        rtt, loss = measure_rtt(tb, path)
        goodput = measure_mbit(tb, path, seconds=seconds)
        mbit = goodput * WIRE_PER_PAYLOAD
        why = []
        if not rtt_ok(path.want_rtt_ms, rtt):
            why.append(f"rtt {rtt:.1f} ms, want {path.want_rtt_ms:.1f}")
        if not rate_ok(path.want_mbit, mbit):
            why.append(f"rate {mbit:.1f} Mbit/s, want {path.want_mbit}")
        out.append(
            PathCheck(
                name=path.name,
                want_rtt_ms=path.want_rtt_ms,
                rtt_ms=round(rtt, 3),
                want_mbit=path.want_mbit,
                mbit=round(mbit, 2),
                goodput_mbit=round(goodput, 2),
                loss_pct=loss,
                ok=not why,
                why="; ".join(why),
            )
        )
    return out


def main(
    topology: str,
    overrides: list[str] | None = None,
    as_json: bool = False,
    seconds: float = 6.0,
    workdir: Path | None = None,
) -> int:
    try:
        topo = load_topology(topology, overrides or [])
    except TopologyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with Testbed(topo, workdir=workdir) as tb:
        results = check_paths(tb, seconds=seconds)
    print(
        f"{'path':<12}{'want rtt':>10}{'rtt':>10}{'want Mbit/s':>13}{'Mbit/s':>10}"
        f"{'goodput':>10}  verdict"
    )
    for r in results:
        want_rate = "-" if r.want_mbit is None else f"{r.want_mbit:g}"
        print(
            f"{r.name:<12}{r.want_rtt_ms:>10.1f}{r.rtt_ms:>10.2f}{want_rate:>13}"
            f"{r.mbit:>10.2f}{r.goodput_mbit:>10.2f}  {'ok' if r.ok else 'OFF: ' + r.why}"
        )
    if as_json:
        print(
            json.dumps(
                {
                    "topology": topo.name,
                    "paths": [
                        {
                            k: v
                            for k, v in asdict(r).items()
                            if k
                            in (
                                "name",
                                "want_rtt_ms",
                                "rtt_ms",
                                "want_mbit",
                                "mbit",
                                "goodput_mbit",
                                "ok",
                            )
                        }
                        for r in results
                    ],
                }
            )
        )
    return 0 if all(r.ok for r in results) else 1


def sweep(topology: str, rates: list[float], rtts: list[float], seconds: float = 6.0) -> int:
    """testbed-check over a grid: every path's first link set to each rate and RTT in turn.

    This is the accuracy campaign behind the issue's figures (1-100 Mbit/s, 2-200 ms); it is a
    task, not a test, because it takes minutes.
    """
    topo = load_topology(topology)
    first_links = [topo.paths[p].link for p in topo.paths]
    rows, failures = [], 0
    for rate in rates:
        for rtt in rtts:
            overrides = {}
            for link in first_links:
                overrides[f"links.{link}.rate_mbit"] = rate
                overrides[f"links.{link}.delay_ms"] = rtt / 2
            with Testbed(load_topology(topology, overrides)) as tb:
                for r in check_paths(tb, seconds=seconds):
                    failures += not r.ok
                    rows.append(r)
                    print(
                        f"{topology:<18}{r.name:<6}{rate:>7g} Mbit/s {rtt:>6g} ms -> "
                        f"{r.mbit:>7.2f} Mbit/s {r.rtt_ms:>8.2f} ms  "
                        f"{'ok' if r.ok else 'OFF: ' + r.why}",
                        flush=True,
                    )
    print(f"{len(rows) - failures}/{len(rows)} path checks within tolerance")
    return 0 if failures == 0 else 1
