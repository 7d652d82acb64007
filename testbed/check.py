"""`./inv testbed-check`: does each path behave as its topology says?

For every path: RTT with ping from the path's source address, throughput with iperf3 bound to
it, against the RTT (twice the one-way delays on the route) and rate (slowest link) the topology
asks for. A path passes when throughput (as a wire rate: iperf3's goodput plus the per-segment
header overhead) is within 10% of the rate, and RTT within max(2 ms, 10%) of the wanted RTT.

A path with a trace-driven link (`trace_down`/`trace_up`) gets no iperf3 rate verdict: each
traced direction is saturated with paced UDP instead and its rate, mean and over time, set
against the trace's over the same span (testbed/tracecheck.py; a figure of both beside the
check's output).

A path whose links reorder, duplicate or lose in bursts (Gilbert-Elliott) also gets a stream
of numbered UDP probes from its source to its destination, captured at both ends
(testbed/probe.py): the reordered share, the duplicated share, the loss rate and the mean
loss burst against what the links state. The tolerance of each is statistical: 5 standard
deviations of the count under the stated model for the number of probes sent (so a correct
link fails once in millions of checks, and 20000 probes tell 1% from 1.2%).

A path whose links corrupt gets TCP probes with known payload instead (corruption only touches
TCP segments that carry payload), captured at the destination before its kernel drops a bad
checksum: the share that arrives changed against corrupt_pct (5 sigma, binomial), and the share
of those whose TCP checksum is wrong, which must be exactly 100% (checksum left wrong, netem's
way) or 0% (corrupt_fix_checksum); each corrupted probe must differ in one bit.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from testbed.capture import Capture
from testbed.net import Testbed
from testbed.probe import (
    TCP_PROBE_PORT,
    CorruptionSeen,
    Observed,
    corruption_seen,
    observe,
    read_probes,
    read_tcp_probes,
    send_probes,
    send_tcp_probes,
)
from testbed.routing import ResolvedPath
from testbed.topology import LinkModel, TopologyError, load_topology
from testbed.tracecheck import TraceCheck, check_trace, trace_rtt_ms, traced_directions

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


def measure_rtt(
    tb: Testbed,
    path: ResolvedPath,
    count: int = 20,
    samples: list[tuple[float, float]] | None = None,
) -> tuple[float, float]:
    """Median RTT (ms) and loss (%) of `count` pings from the path's source address; each
    ping's (wall-clock send time, RTT in ms) appended to `samples` if given.

    The median, not the mean: one ping delayed by a busy CPU (two cores run the whole testbed)
    must not make a good path look off.
    """
    interval = 0.05 if path.want_rtt_ms < 100 else 0.2
    res = tb.host(path.src).run(
        [
            "ping",
            "-n",
            "-D",
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
    if samples is not None:  # -D: each reply's wall-clock arrival, so sent = arrival - rtt
        for stamp, rtt in re.findall(r"^\[([\d.]+)\].*time=([\d.]+) ms", res.stdout, re.M):
            samples.append((float(stamp) - float(rtt) / 1000, float(rtt)))
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


SIGMAS = 5.0
PROBES = 20000
PROBE_BYTES = 100  # UDP payload; 142 bytes on the wire


@dataclass
class ConditionCheck:
    """One stated link condition measured on a path: a share of packets (or a length), the
    model's value, the band it must fall in, what the capture showed."""

    path: str
    # reorder_pct, duplicate_pct, ge_loss_pct, ge_burst, corrupt_pct, corrupt_bad_csum_pct
    condition: str
    want: float
    lo: float
    hi: float
    got: float | None
    ok: bool
    why: str = ""


def _renewal(n: int, p: float, gap: int) -> tuple[float, float]:
    """Mean and sd of the reordered count among n (netem: gap - 1 delayed after each, then
    each with chance p): a renewal process of cycle gap - 1 + Geometric(p)."""
    mean_t, var_t = gap - 1 + 1 / p, (1 - p) / p**2
    return n / mean_t, math.sqrt(n * var_t / mean_t**3)


def _ge(p: float, r: float, n: int) -> tuple[float, float]:
    """Simple Gilbert (h = 0, k = 100): mean and sd of the lost fraction of n packets, as a
    ratio over cycles of a good run (Geometric(p)) and a bad run (Geometric(r), all lost)."""
    mean_g, mean_b = 1 / p, 1 / r
    cycle = mean_g + mean_b
    frac = mean_b / cycle
    var = (1 - frac) ** 2 * (1 - r) / r**2 + frac**2 * (1 - p) / p**2
    return frac, math.sqrt(var / (n / cycle)) / cycle


def wanted_conditions(models: list[LinkModel]) -> list[str]:
    """The conditions a path's links state that probes can check."""
    out = []
    if any(m.reorder_pct for m in models):
        out.append("reorder_pct")
    if any(m.duplicate_pct for m in models):
        out.append("duplicate_pct")
    if any(m.loss_model for m in models):
        out += ["ge_loss_pct", "ge_burst"]
    if any(m.corrupt_pct for m in models):
        out += ["corrupt_pct", "corrupt_bad_csum_pct"]
    return out


def _pacing(path: ResolvedPath, probes: int, frame_bytes: int) -> tuple[float, int, int]:
    """(interval, burst, probes): probes must not meet the rate limiter's queue, so at most a
    quarter of the path's rate (and at most 10 s of them)."""
    interval, burst = 0.001, 4
    if path.want_mbit:
        pps = min(4000.0, path.want_mbit * 1e6 / 4 / (frame_bytes * 8))
        burst = max(1, int(pps // 1000))
        interval = burst / pps
        probes = min(probes, int(pps * 10))
    return interval, burst, probes


@dataclass
class ProbeRun:
    """What the probes of one path did (``observe``'s view), and how they were sent: the
    measurement that ``judge_conditions`` compares with the links' models."""

    seen: Observed
    probes: int
    interval: float
    burst: int


def measure_conditions(tb: Testbed, path: ResolvedPath, probes: int = PROBES) -> ProbeRun | None:
    """Send numbered probes along the path and capture what arrives (None: the links claim
    no condition that probes could measure)."""
    wanted = wanted_conditions([tb.models[link] for link in path.links])
    if not set(wanted) - {"corrupt_pct", "corrupt_bad_csum_pct"}:  # (check_corruption's)
        return None
    interval, burst, probes = _pacing(path, probes, PROBE_BYTES + 42)
    src_host, dst_host = tb.host(path.src), tb.host(path.dst)
    cap = Capture(
        [
            (src_host, tb.intf(path.src, path.links[0])),
            (dst_host, tb.intf(path.dst, path.links[-1])),
        ],
        tb.workdir / "check" / path.name,
        snaplen=96,
        bpf="udp",
    )
    cap.start()
    try:
        send_probes(
            src_host, path.dst_addr, probes, interval=interval, burst=burst, src=path.src_addr
        )
        _wait_released(tb, path)
    finally:
        files = cap.stop()
    return ProbeRun(observe(read_probes(files[1]), probes), probes, interval, burst)


def check_conditions(tb: Testbed, path: ResolvedPath, probes: int = PROBES) -> list[ConditionCheck]:
    """Send numbered probes along the path and compare what arrives with the links' models."""
    models = [tb.models[link] for link in path.links]
    out = check_corruption(tb, path, probes) if any(m.corrupt_pct for m in models) else []
    run = measure_conditions(tb, path, probes)
    return out if run is None else out + judge_conditions(path, models, run)


def judge_conditions(
    path: ResolvedPath, models: list[LinkModel], run: ProbeRun
) -> list[ConditionCheck]:
    """Each condition the models claim against what the probes saw: within SIGMAS standard
    deviations of the claim, or not (a pure function: one measurement can be judged against
    several claims)."""
    wanted = wanted_conditions(models)
    seen, interval, burst = run.seen, run.interval, run.burst
    out = []

    def add(cond: str, want: float, sd: float, got: float | None, why: str = "") -> None:
        lo, hi = want - SIGMAS * sd, want + SIGMAS * sd
        ok = got is not None and lo <= got <= hi and not why
        out.append(ConditionCheck(path.name, cond, want, lo, hi, got, ok, why))

    n = run.probes
    if "reorder_pct" in wanted:
        reo = [m for m in models if m.reorder_pct]
        m = reo[0]
        mean, sd = _renewal(n, m.reorder_pct / 100, m.reorder_gap)
        why = "several links reorder: no single model to compare" if len(reo) > 1 else ""
        if m.delay_ms / 1000 < 2 * interval / burst:
            why = "probes too sparse to be overtaken: delay_ms below two probe gaps"
        add("reorder_pct", 100 * mean / n, 100 * sd / n, 100 * seen.reordered / n, why)
    if "duplicate_pct" in wanted:
        copies = math.prod(1 + m.duplicate_pct / 100 for m in models) - 1
        sd = math.sqrt(n * min(copies, 1) * (1 - min(copies, 1)))
        add("duplicate_pct", 100 * copies, 100 * sd / n, 100 * seen.duplicates / seen.distinct)
    if "ge_loss_pct" in wanted:
        ges = [m.loss_model for m in models if m.loss_model]
        ge = ges[0]
        other = any(m.loss_pct for m in models)
        simple = ge.h == 0 and ge.k == 100 and 0 < ge.p and 0 < ge.r
        why = ""
        if len(ges) > 1 or other:
            why = "more than one loss process on the path: no single model to compare"
        if simple:
            frac, sd = _ge(ge.p / 100, ge.r / 100, n)
            add("ge_loss_pct", 100 * frac, 100 * sd, 100 * seen.loss_fraction, why)
            bursts = len(seen.bursts)
            sd_b = math.sqrt((1 - ge.r / 100) / (ge.r / 100) ** 2 / max(1, bursts))
            add("ge_burst", ge.mean_burst, sd_b, seen.mean_burst if bursts else None, why)
        else:  # no closed-form spread: a quarter of the mean either way
            want = ge.mean_loss_pct
            add("ge_loss_pct", want, want / 4 / SIGMAS, 100 * seen.loss_fraction, why)
    return out


def check_corruption(tb: Testbed, path: ResolvedPath, probes: int = PROBES) -> list[ConditionCheck]:
    """TCP probes along the path, captured at the destination: the corrupted share against the
    links' corrupt_pct (one bit each), and their checksums against the checksum mode."""
    models = [tb.models[link] for link in path.links]
    return judge_corruption(path, models, measure_corruption(tb, path, probes))


def measure_corruption(tb: Testbed, path: ResolvedPath, probes: int = PROBES) -> CorruptionSeen:
    """Send numbered TCP probes of known payload along the path and compare what arrives at
    the destination with what was sent (the measurement ``judge_corruption`` judges)."""
    size = PROBE_BYTES
    interval, burst, probes = _pacing(path, probes, size + 54)
    dst_host = tb.host(path.dst)
    cap = Capture(
        [(dst_host, tb.intf(path.dst, path.links[-1]))],
        tb.workdir / "check" / f"{path.name}-corrupt",
        snaplen=size + 128,  # whole probes: tshark checks their checksums
        bpf=f"tcp dst port {TCP_PROBE_PORT}",
    )
    cap.start()
    try:
        send_tcp_probes(
            tb.host(path.src),
            path.src_addr,
            path.dst_addr,
            probes,
            interval=interval,
            burst=burst,
            size=size,
        )
        _wait_released(tb, path)
    finally:
        files = cap.stop()
    return corruption_seen(read_tcp_probes(files[0]), probes, size)


def judge_corruption(
    path: ResolvedPath, models: list[LinkModel], seen: CorruptionSeen
) -> list[ConditionCheck]:
    """The corrupted share and the checksum mode the path's links claim against what the
    probes showed (a pure function, as judge_conditions: one measurement, several claims)."""
    models = [m for m in models if m.corrupt_pct]
    n = seen.received
    p = 1 - math.prod(1 - m.corrupt_pct / 100 for m in models)
    sd = math.sqrt(n * p * (1 - p)) / n if n else 0.0
    got = 100 * seen.corrupted / n if n else None
    lo, hi = 100 * (p - SIGMAS * sd), 100 * (p + SIGMAS * sd)
    why = "" if n else "no probe arrived"
    if not seen.one_bit:
        why = f"{sum(b != 1 for b in seen.bits)} corrupted probes differ in more than one bit"
        if len(models) > 1:  # two links may hit one probe: then two bits are right
            why = ""
    ok = got is not None and lo <= got <= hi and not why
    out = [ConditionCheck(path.name, "corrupt_pct", 100 * p, lo, hi, got, ok, why)]
    modes = {m.corrupt_fix_checksum for m in models}
    want = 0.0 if modes == {True} else 100.0
    got = 100 * seen.bad_checksum_corrupted / seen.corrupted if seen.corrupted else None
    why = "" if seen.corrupted else "no probe arrived corrupted"
    if len(modes) > 1:
        why = "links mix the checksum modes: no single expectation"
    elif seen.bad_checksum_intact:
        why = f"{seen.bad_checksum_intact} unchanged probes arrived with a wrong checksum"
    ok = got == want and not why
    out.append(ConditionCheck(path.name, "corrupt_bad_csum_pct", want, want, want, got, ok, why))
    return out


def _wait_released(tb: Testbed, path: ResolvedPath, timeout: float = 30.0) -> None:
    """Until the emulators on the path hold no packet (every probe released at its time)."""
    routers = {tb.link_router[link] for link in path.links if link in tb.link_router}
    deadline = time.monotonic() + timeout
    for router in routers:
        emu = tb.emulators.get(router)
        while emu is not None and emu.running:
            held = sum(d["held"] for st in emu.stats().values() for d in st.values())
            if not held or time.monotonic() > deadline:
                break
            time.sleep(0.01)


def check_paths(tb: Testbed, *, seconds: float = 6.0) -> list[PathCheck]:
    out = []
    for path in tb.paths:
        samples: list[tuple[float, float]] = []
        rtt, loss = measure_rtt(tb, path, samples=samples)
        want_rtt = path.want_rtt_ms
        traced = any(tb.models[link].traced for link in path.links)
        if traced and samples:
            # an idle trace link holds each packet until its next delivery opportunity: the
            # RTT wanted is the median of what the traces give each ping at its send time
            want_rtt = statistics.median(trace_rtt_ms(tb, path, t) for t, _ in samples)
        # Through a lossy path TCP's goodput is TCP's business, not the link's rate (and
        # bursty loss can stall iperf3's own setup for seconds): no rate verdict there. A
        # segment corrupted with its checksum left wrong is a loss to TCP.
        lossy = any(
            m.loss_pct or m.loss_model or (m.corrupt_pct and not m.corrupt_fix_checksum)
            for m in (tb.models[link] for link in path.links)
        )
        goodput = mbit = None
        why = []
        if not rtt_ok(want_rtt, rtt):
            why.append(f"rtt {rtt:.1f} ms, want {want_rtt:.1f}")
        note = ""
        if traced:
            note = "rate: see the trace check"
        elif lossy:
            note = "rate not checked: the path loses packets"
        else:
            goodput = measure_mbit(tb, path, seconds=seconds)
            mbit = goodput * WIRE_PER_PAYLOAD
            if not rate_ok(path.want_mbit, mbit):
                why.append(f"rate {mbit:.1f} Mbit/s, want {path.want_mbit}")
        out.append(
            PathCheck(
                name=path.name,
                want_rtt_ms=round(want_rtt, 3),
                rtt_ms=round(rtt, 3),
                want_mbit=path.want_mbit,
                mbit=None if mbit is None else round(mbit, 2),
                goodput_mbit=None if goodput is None else round(goodput, 2),
                loss_pct=loss,
                ok=not why,
                why="; ".join(why) or note,
            )
        )
    return out


def check_traces(tb: Testbed, outdir: Path | None, seconds: float = 8.0) -> list[TraceCheck]:
    """Each traced link direction once (on the first path that crosses it)."""
    out, done = [], set()
    for path in tb.paths:
        for link, up, trace in traced_directions(tb, path):
            if (link, up) not in done:
                done.add((link, up))
                out.append(check_trace(tb, path, link, up, trace, seconds=seconds, outdir=outdir))
    return out


def main(
    topology: str,
    overrides: list[str] | None = None,
    as_json: bool = False,
    seconds: float = 6.0,
    workdir: Path | None = None,
    out: Path | None = None,
) -> int:
    """out: where the trace figures go (default results/testbed-check/<topology>/)."""
    try:
        topo = load_topology(topology, overrides or [])
    except TopologyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    outdir = Path(out) if out else Path("results") / "testbed-check" / topo.name
    with Testbed(topo, workdir=workdir) as tb:
        results = check_paths(tb, seconds=seconds)
        conditions = [c for p in tb.paths for c in check_conditions(tb, p)]
        traces = check_traces(tb, outdir)
    print(
        f"{'path':<12}{'want rtt':>10}{'rtt':>10}{'want Mbit/s':>13}{'Mbit/s':>10}"
        f"{'goodput':>10}  verdict"
    )
    for r in results:
        want_rate = "-" if r.want_mbit is None else f"{r.want_mbit:g}"
        print(
            f"{r.name:<12}{r.want_rtt_ms:>10.1f}{r.rtt_ms:>10.2f}{want_rate:>13}"
            + ("         -         -  " if r.mbit is None else "")
            + ("" if r.mbit is None else f"{r.mbit:>10.2f}{r.goodput_mbit:>10.2f}  ")
            + ("ok" + (f" ({r.why})" if r.why else "") if r.ok else "OFF: " + r.why)
        )
    if conditions:
        print(f"{'path':<12}{'condition':<22}{'want':>9}{'band':>20}{'got':>9}  verdict")
        for c in conditions:
            got = "-" if c.got is None else f"{c.got:.3f}"
            band = f"[{c.lo:.3f}, {c.hi:.3f}]"
            verdict = "ok" if c.ok else "OFF" + (f": {c.why}" if c.why else "")
            print(f"{c.path:<12}{c.condition:<22}{c.want:>9.3f}{band:>20}{got:>9}  {verdict}")
    if traces:
        print(f"{'path':<12}{'trace':<18}{'want Mbit/s':>12}{'band':>18}{'Mbit/s':>9}  verdict")
        for t in traces:
            got = "-" if t.got_mbit is None else f"{t.got_mbit:.2f}"
            band = f"[{t.lo:.2f}, {t.hi:.2f}]"
            verdict = ("ok" if t.ok else "OFF") + (f": {t.why}" if t.why else "")
            print(
                f"{t.path:<12}{t.link + ' ' + t.direction:<18}{t.want_mbit:>12.2f}{band:>18}"
                f"{got:>9}  {verdict}"
            )
            print(
                f"{'':<12}over time ({len(t.bins)} s, sent at {t.send_mbit} Mbit/s): "
                + " ".join(f"{g:.1f}/{w:.1f}" for _, w, g in t.bins)
                + (f"  figure: {t.figure}" if t.figure else "")
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
                    "conditions": [asdict(c) for c in conditions],
                    "traces": [asdict(t) for t in traces],
                }
            )
        )
    ok = all(r.ok for r in results) and all(c.ok for c in conditions)
    return 0 if ok and all(t.ok for t in traces) else 1


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
                        f"{r.mbit if r.mbit is not None else float('nan'):>7.2f} Mbit/s {r.rtt_ms:>8.2f} ms  "
                        f"{'ok' if r.ok else 'OFF: ' + r.why}",
                        flush=True,
                    )
    print(f"{len(rows) - failures}/{len(rows)} path checks within tolerance")
    return 0 if failures == 0 else 1
