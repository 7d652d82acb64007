"""testbed-check for trace-driven links: does a link carry what its trace says, on average and
over time?

For each traced direction of a path's links, a saturating stream of full-size numbered UDP
probes (IP 1500 bytes: one delivery opportunity each) crosses the link, from the path's
destination for the link's direction toward it and from its source for the other; the receiver's
capture (tcpdump, tshark) dates each packet's departure from the trace queue (its arrival minus
the path's one-way delay), on the trace's own clock (the emulator reports the wall-clock time of
its traces' time 0). The measured rate over the span, and per bin of one second, is set against
the trace's capacity over the same span and bins. The verdict is on the mean, within the rate
tolerance of testbed-check (10%); the bins go to the JSON and to a figure beside the check's
output (measured and trace rate over time).

Why UDP and not TCP: TCP's congestion control leaves capacity unused after each loss, so its
rate is TCP's, not the link's; a paced UDP stream above the trace's peak keeps the trace queue
backlogged, and a backlogged queue uses every opportunity (what the check measures).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from testbed.capture import Capture
from testbed.net import Testbed
from testbed.probe import read_probes, send_probes
from testbed.routing import ResolvedPath
from testbed.trace import OPPORTUNITY_BYTES, Trace, TraceQueue

RATE_TOLERANCE = 0.10
BIN_S = 1.0
SETTLE_S = 0.5  # the queue fills first: the measured span starts this long after the stream
MAX_SEND_MBIT = 60.0  # the Python sender's comfortable pace
TRACE_PROBE_PORT = 47002


@dataclass
class TraceCheck:
    path: str
    link: str
    direction: str  # "down" or "up": the link's direction (down = ends[1] -> ends[0])
    trace: str
    want_mbit: float  # the trace's capacity over the measured span
    got_mbit: float | None  # what crossed (IP bytes of the packets that departed in the span)
    lo: float
    hi: float
    ok: bool
    send_mbit: float = 0.0
    seconds: float = 0.0
    bins: list[tuple[float, float, float]] = field(default_factory=list)  # (t, want, got)
    figure: str | None = None
    why: str = ""


def traced_directions(tb: Testbed, path: ResolvedPath) -> list[tuple[str, bool, Trace]]:
    """(link, up, trace) for every trace on the path's links."""
    out = []
    for link in path.links:
        m = tb.models[link]
        for up, trace in ((False, m.trace_down), (True, m.trace_up)):
            if trace is not None:
                out.append((link, up, trace))
    return out


def _send_rate(trace: Trace, seconds: float) -> float:
    """A pace above the trace's busiest second (so the queue stays backlogged), capped."""
    period_s = trace.period_ms / 1000
    starts = [i * 0.25 for i in range(int(period_s / 0.25))]
    peak = max((trace.mbit_between(s * 1000, (s + 1) * 1000) for s in starts), default=0.0)
    return min(MAX_SEND_MBIT, max(1.3 * peak, 1.5 * trace.mean_mbit, 1.0))


@dataclass
class TraceRun:
    """What crossed one traced direction of a path (measure_trace): each probe's departure
    from the trace queue, the span measured, and the trace clock's time 0 (None: the emulator
    gave none)."""

    path: str
    link: str
    up: bool
    departures: list[float]
    t0: float  # the span: from when the queue is surely backlogged ...
    t1: float  # ... to when the stream stopped
    epoch: float | None
    send_mbit: float
    lossy: bool  # the link also loses packets


def check_trace(
    tb: Testbed,
    path: ResolvedPath,
    link: str,
    up: bool,
    trace: Trace,
    *,
    seconds: float = 8.0,
    outdir: Path | None = None,
) -> TraceCheck:
    """Saturate one traced direction of the path for `seconds` and compare with the trace."""
    return judge_trace(measure_trace(tb, path, link, up, trace, seconds=seconds), trace, outdir)


def measure_trace(
    tb: Testbed, path: ResolvedPath, link: str, up: bool, trace: Trace, *, seconds: float = 8.0
) -> TraceRun:
    """Saturate one traced direction of the path for `seconds` (paced above `trace`'s
    busiest second) and date what departed from its trace queue."""
    spec = tb.topo.links[link]
    # the path goes from src to dst; this direction of the link is crossed from src to dst if
    # the path enters the link at the end that direction starts from
    forward = _crosses_up(tb, path, link) == up
    src, dst = (path.src, path.dst) if forward else (path.dst, path.src)
    src_addr, dst_addr = (
        (path.src_addr, path.dst_addr) if forward else (path.dst_addr, path.src_addr)
    )
    recv_intf = tb.intf(dst, path.links[-1] if forward else path.links[0])
    router = tb.link_router[link]
    epoch = tb.emulators[router].trace_epoch()
    send_mbit = _send_rate(trace, seconds)
    pps = send_mbit * 1e6 / (OPPORTUNITY_BYTES * 8)
    burst = max(1, int(pps // 500))  # a burst every 2 ms or so
    interval = burst / pps
    count = int(pps * seconds)
    cap = Capture(
        [(tb.host(dst), recv_intf)],
        tb.workdir / "check" / f"trace-{link}-{'up' if up else 'down'}",
        snaplen=64,
        bpf=f"udp dst port {TRACE_PROBE_PORT}",
    )
    cap.start()
    try:
        sent_at = time.time()  # the captures' clock (every node of this machine shares it)
        send_probes(
            tb.host(src),
            dst_addr,
            count,
            interval=interval,
            burst=burst,
            size=OPPORTUNITY_BYTES - 28,
            port=TRACE_PROBE_PORT,
            src=src_addr,
        )
        ended_at = time.time()
        _wait_idle(tb, router)
    finally:
        files = cap.stop()
    arrived = read_probes(files[0], port=TRACE_PROBE_PORT)
    one_way = path.want_rtt_ms / 2000
    return TraceRun(
        path=path.name,
        link=link,
        up=up,
        departures=[t - one_way for t, _ in arrived],
        t0=sent_at + SETTLE_S,
        t1=ended_at,
        epoch=epoch,
        send_mbit=send_mbit,
        lossy=bool(spec.model.loss_model or spec.model.loss_pct),
    )


def judge_trace(run: TraceRun, trace: Trace, outdir: Path | None = None) -> TraceCheck:
    """A measurement (measure_trace) against what `trace` says the link carries over the same
    span: pure but for the figure, so one measurement can be judged against several claims."""
    direction = "up" if run.up else "down"
    name = dict(path=run.path, link=run.link, direction=direction, trace=trace.path)
    epoch, departures = run.epoch, run.departures
    if epoch is None or not departures:
        why = "no trace clock from the emulator" if epoch is None else "nothing arrived"
        return TraceCheck(**name, want_mbit=trace.mean_mbit, got_mbit=None, lo=0, hi=0, ok=False,
                          why=why)  # fmt: skip
    t0, t1 = run.t0, run.t1
    got = _mbit(departures, t0, t1)
    want = trace.mbit_between((t0 - epoch) * 1000, (t1 - epoch) * 1000)
    lo, hi = want * (1 - RATE_TOLERANCE), want * (1 + RATE_TOLERANCE)
    bins = []
    t = t0
    while t + BIN_S <= t1 + 1e-9:
        w = trace.mbit_between((t - epoch) * 1000, (t + BIN_S - epoch) * 1000)
        bins.append((round(t - t0, 3), round(w, 3), round(_mbit(departures, t, t + BIN_S), 3)))
        t += BIN_S
    result = TraceCheck(
        **name,
        want_mbit=round(want, 3),
        got_mbit=round(got, 3),
        lo=round(lo, 3),
        hi=round(hi, 3),
        ok=lo <= got <= hi,
        send_mbit=round(run.send_mbit, 2),
        seconds=round(t1 - t0, 3),
        bins=bins,
    )
    if outdir is not None:
        result.figure = str(plot_trace_check(result, outdir))
    if not result.ok:
        result.why = f"{got:.2f} Mbit/s crossed, the trace gives {want:.2f}"
    if run.lossy:
        result.why = (result.why + "; " if result.why else "") + "the link also loses packets"
    return result


def trace_rtt_ms(tb: Testbed, path: ResolvedPath, sent: float) -> float:
    """The RTT (ms) of a small packet sent at wall-clock time `sent` along the path and back,
    on idle links: each link's delay, and on a traced direction the wait for its next delivery
    opportunity (the traces' clocks from their routers' emulators)."""
    queues: dict[tuple[str, bool], TraceQueue] = {}

    def cross(t: float, link: str, up: bool) -> float:
        m = tb.models[link]
        trace = m.trace_up if up else m.trace_down
        if trace is not None:
            key = (link, up)
            if key not in queues:
                epoch = tb.emulators[tb.link_router[link]].trace_epoch() or 0.0
                queues[key] = TraceQueue(trace.times, start=epoch, limit=0)
            q = queues[key]
            t = q.opportunity_time(q.first_after(t))
        return t + m.delay_ms / 1000

    t, node, hops = sent, path.src, []
    for name in path.links:
        spec = tb.topo.links[name]
        hops.append((name, spec.a == node))
        t = cross(t, name, spec.a == node)
        node = spec.other(node)
    for name, up in reversed(hops):
        t = cross(t, name, not up)
    return (t - sent) * 1000


def _crosses_up(tb: Testbed, path: ResolvedPath, link: str) -> bool:
    """Whether the path (src -> dst) crosses `link` from its ends[0] to its ends[1]."""
    node = path.src
    for name in path.links:
        spec = tb.topo.links[name]
        if name == link:
            return spec.a == node
        node = spec.other(node)
    raise ValueError(f"link {link} is not on path {path.name}")


def _wait_idle(tb: Testbed, router: str, timeout: float = 30.0) -> None:
    """Until the router's emulator holds nothing (the trace queue drained)."""
    emu = tb.emulators[router]
    deadline = time.monotonic() + timeout
    while emu.running and time.monotonic() < deadline:
        held = sum(d["held"] for st in emu.stats().values() for d in st.values())
        if not held:
            return
        time.sleep(0.05)


def _mbit(departures: list[float], t0: float, t1: float) -> float:
    if t1 <= t0:
        return 0.0
    n = sum(t0 < t <= t1 for t in departures)
    return n * OPPORTUNITY_BYTES * 8 / ((t1 - t0) * 1e6)


def plot_trace_check(c: TraceCheck, outdir: Path) -> Path:
    """Measured and trace rate over time, one figure per traced direction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    outdir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    bins = c.bins + c.bins[-1:]  # the last bin drawn to its end
    ts = [b[0] for b in c.bins] + [c.bins[-1][0] + BIN_S] if c.bins else []
    ax.step(ts, [b[1] for b in bins], where="post", label=f"trace ({Path(c.trace).name})")
    ax.step(ts, [b[2] for b in bins], where="post", label="measured", linestyle="--")
    ax.set_xlabel(f"seconds (bins of {BIN_S:g} s)")
    ax.set_ylabel("Mbit/s")
    verdict = "ok" if c.ok else "OFF"
    ax.set_title(
        f"{c.path}: link {c.link} {c.direction}: {c.got_mbit} Mbit/s measured, "
        f"{c.want_mbit} from the trace ({verdict})",
        fontsize=10,
    )
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    out = outdir / f"trace-{c.link}-{c.direction}.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
