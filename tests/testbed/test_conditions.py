"""The link conditions of issue 19 measured on the wire: numbered UDP probes from h1 to h2
through a router whose emulator reorders, duplicates, loses in bursts or jitters them, captured
with tcpdump at both hosts and read back with tshark (testbed/probe.py); numbered TCP probes
with known payload for corruption.

The bands are statistical, wide enough (5 sigma of the count's own spread, from the model's
variance) that a correct emulator leaves them once in millions of runs, narrow enough that
a wrong model (another rate, independent instead of bursty loss) cannot pass."""

from __future__ import annotations

import hashlib
import math
import os
import signal
import statistics
import subprocess
import sys
import time

import pytest
from mininet.net import Mininet

from testbed.capture import Capture
from testbed.emulation import EmulatedPort, RouterEmulator
from testbed.host import MininetHost
from testbed.probe import (
    TCP_PROBE_PORT,
    binomial_band,
    corruption_seen,
    observe,
    one_way_delays,
    read_probes,
    read_tcp_probes,
    send_probes,
    send_tcp_probes,
)
from testbed.topology import LinkModel, LossModel
from testbed.trace import TraceQueue, read_trace
from testkit.transfer import nstat

pytestmark = pytest.mark.net

H1, H2 = "10.76.1.1", "10.76.2.1"
H1_6, H2_6 = "fd76:1::1", "fd76:2::1"


class Triangle:
    """h1 -- r1 -- h2 on veth links, IPv4 and IPv6, forwarding on r1."""

    def __init__(self, prefix: str = "lc"):
        self.net = Mininet(topo=None, controller=None, build=False, autoSetMacs=False)
        self.h1, self.r1, self.h2 = (
            self.net.addHost(f"{prefix}{n}", ip=None) for n in ("h1", "r1", "h2")
        )
        # no duplicate address detection on the links made below (their link-local addresses
        # would stay tentative for ~2 s, and IPv6 neighbour discovery with them)
        for node in (self.h1, self.r1, self.h2):
            node.cmd("sysctl -qw net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.all.accept_dad=0")
        self.net.addLink(self.h1, self.r1)
        self.net.addLink(self.r1, self.h2)
        self.net.build()
        h1, r1, h2 = self.h1, self.r1, self.h2
        self.h1_if, self.h2_if = f"{h1.name}-eth0", f"{h2.name}-eth0"
        self.r1_h1, self.r1_h2 = f"{r1.name}-eth0", f"{r1.name}-eth1"
        for node, cmds in (
            (
                h1,
                [
                    f"ip addr add {H1}/24 dev {self.h1_if}",
                    "ip route add default via 10.76.1.254",
                    f"ip -6 addr add {H1_6}/64 dev {self.h1_if} nodad",
                    "ip -6 route add default via fd76:1::fe",
                ],
            ),
            (
                h2,
                [
                    f"ip addr add {H2}/24 dev {self.h2_if}",
                    "ip route add default via 10.76.2.254",
                    f"ip -6 addr add {H2_6}/64 dev {self.h2_if} nodad",
                    "ip -6 route add default via fd76:2::fe",
                ],
            ),
            (
                r1,
                [
                    f"ip addr add 10.76.1.254/24 dev {self.r1_h1}",
                    f"ip addr add 10.76.2.254/24 dev {self.r1_h2}",
                    f"ip -6 addr add fd76:1::fe/64 dev {self.r1_h1} nodad",
                    f"ip -6 addr add fd76:2::fe/64 dev {self.r1_h2} nodad",
                    "sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1",
                ],
            ),
        ):
            for cmd in cmds:
                node.cmd(cmd)
        # neighbours resolved before any probe (an unresolved neighbour queues only 3 packets)
        for dst in (H2, H2_6):
            out = h1.cmd(f"ping -c 1 -W 2 {dst}")
            assert " 1 received" in out, out

    def stop(self) -> None:
        self.net.stop()


@pytest.fixture(scope="module")
def tri():
    t = Triangle()
    try:
        yield t
    finally:
        t.stop()


@pytest.fixture
def through(tri, tmp_path):
    """through(left, right, send, bpf=..., snaplen=...): the two links' models on r1, send()
    run with captures on h1 and h2; returns (the two capture files, emulator stats)."""
    made: list[RouterEmulator] = []

    def run(left: LinkModel, right: LinkModel, send, *, bpf: str = "udp", snaplen: int = 96):
        emu = RouterEmulator(
            MininetHost(tri.r1),
            [EmulatedPort("left", tri.r1_h1, left), EmulatedPort("right", tri.r1_h2, right)],
            seed=19,
            log_path=tmp_path / "linkem.log",
        )
        made.append(emu)
        emu.start()
        cap = Capture(
            [(MininetHost(tri.h1), tri.h1_if), (MininetHost(tri.h2), tri.h2_if)],
            tmp_path / f"cap{len(made)}",
            snaplen=snaplen,
            bpf=bpf,
        )
        cap.start()
        try:
            send()
            stats = drained(emu)
            emu.stop()
        finally:
            files = cap.stop()
        return files, stats

    yield run
    for emu in made:
        emu.stop()


@pytest.fixture
def probe(tri, through):
    """probe(left, right, count, ...): `count` UDP probes h1 -> h2 through the two links'
    models on r1, captured on h1 and h2; returns (sent captures, arrived captures, stats)."""

    def run(left: LinkModel, right: LinkModel, count: int, *, ipv6: bool = False, **kw):
        files, stats = through(
            left, right, lambda: send_probes(MininetHost(tri.h1), H2_6 if ipv6 else H2, count, **kw)
        )
        sent, arrived = (read_probes(f) for f in files)
        assert len({s for _, s in sent}) == count, "h1's capture misses probes it sent"
        return sent, arrived, stats

    return run


def drained(emu: RouterEmulator, timeout: float = 10.0) -> dict:
    """The emulator's stats once it holds nothing more (every probe released at its time,
    not early by a stop); polled, the emulator's own count being the condition."""
    deadline = time.monotonic() + timeout
    while True:
        stats = emu.stats()
        held = sum(d["held"] for link in stats.values() for d in link.values())
        if held == 0:
            return stats
        assert time.monotonic() < deadline, f"the emulator still holds {held} packets"
        time.sleep(0.01)


def renewal_band(n: int, p: float, gap: int, sigmas: float = 5.0) -> tuple[float, float]:
    """Reordered packets among n under netem's rule (gap - 1 delayed after each reordered one,
    then each sent ahead with chance p): a renewal process with cycle T = gap - 1 + Geometric(p),
    count ~ n / E[T] with variance n Var(T) / E[T]^3."""
    mean_t = gap - 1 + 1 / p
    var_t = (1 - p) / p**2
    sd = math.sqrt(n * var_t / mean_t**3)
    return n / mean_t - sigmas * sd, n / mean_t + sigmas * sd


@pytest.mark.parametrize(("pct", "gap"), [(5, 1), (50, 5)])
def test_reordering_on_the_wire(probe, pct, gap):
    """netem's reorder: with 10 ms delay and probes every 0.25 ms, a packet sent ahead
    overtakes ~40 held ones, so each shows in the capture as arriving before lower numbers."""
    n = 20000
    model = LinkModel(delay_ms=10, reorder_pct=pct, reorder_gap=gap)
    _, arrived, stats = probe(model, LinkModel(), n)
    seen = observe(arrived, n)
    lo, hi = renewal_band(n, pct / 100, gap)
    assert lo <= seen.reordered <= hi, (
        f"{seen.reordered} reordered of {n}, want [{lo:.0f}, {hi:.0f}]"
    )
    assert seen.lost == seen.duplicates == 0
    # the emulator's own count: the wire can only show fewer (one sent ahead of nothing)
    assert seen.reordered <= stats["left"]["in"]["reordered"] <= seen.reordered + 5


def test_jitter_reorders_only_when_asked(probe):
    """Clean jitter (the default) keeps order; jitter_reorders lets each probe keep its own
    delay, so probes 0.25 ms apart with +-20 ms of jitter overtake each other, and their delays are
    uniform in delay +- jitter."""
    n = 6000
    clean = LinkModel(delay_ms=50, jitter_ms=20)
    _, arrived, _ = probe(clean, LinkModel(), n)
    assert observe(arrived, n).reordered == 0
    sent, arrived, _ = probe(
        LinkModel(delay_ms=50, jitter_ms=20, jitter_reorders=True), LinkModel(), n
    )
    seen = observe(arrived, n)
    assert seen.lost == 0
    # two probes 0.25 ms apart swap when their uniform draws differ by more than that: most do
    assert seen.reordered > 0.5 * n, f"only {seen.reordered} of {n} reordered"
    delays = one_way_delays(sent, arrived)
    assert min(delays) >= 0.030 - EARLY_S, min(delays)
    for got, want in zip(quantiles(delays), QUANTILES["uniform"], strict=True):
        assert 0.050 + want * 0.020 - EARLY_S <= got <= 0.050 + want * 0.020 + LATE_S, got


@pytest.mark.parametrize("side", ["left", "right"])
def test_duplication_on_the_wire(probe, side):
    """2% duplicated: on the left link (h1 -> h2 arrives at r1 there: the copy goes through the
    arriving direction's queue, then out) over IPv4, on the right one (the leaving direction)
    over IPv6. Both links delay, so a copy must meet both delays like its original."""
    n = 20000
    dup = LinkModel(delay_ms=5, duplicate_pct=2)
    plain = LinkModel(delay_ms=5)
    left, right = (dup, plain) if side == "left" else (plain, dup)
    sent, arrived, stats = probe(left, right, n, ipv6=side == "right")
    seen = observe(arrived, n)
    lo, hi = binomial_band(n, 0.02)
    assert lo <= seen.duplicates <= hi, (
        f"{seen.duplicates} copies of {n}, want [{lo:.0f}, {hi:.0f}]"
    )
    assert seen.lost == 0
    assert seen.reordered == 0, "duplication alone must not reorder the originals"
    direction = "in" if side == "left" else "out"
    assert stats[side][direction]["duplicated"] == seen.duplicates
    # every copy took both links' delays: none arrives sooner than 10 ms after its original left
    first_sent = {}
    for t, s in sent:
        first_sent.setdefault(s, t)
    assert min(t - first_sent[s] for t, s in arrived) >= 0.010 - 2e-4


def test_gilbert_elliott_bursts(probe):
    """Simple Gilbert (h = 0, k = 100): p = 2%, r = 25% gives 2/27 = 7.4% loss in bursts of
    mean 4; independent loss at that rate would give bursts of mean 1.08."""
    n = 40000
    ge = LossModel(p=2, r=25)
    _, arrived, stats = probe(LinkModel(loss_model=ge), LinkModel(), n, burst=8)
    seen = observe(arrived, n)
    p, r = 0.02, 0.25
    # a cycle is a good run G (mean 1/p) and a bad run B (mean 1/r, all lost); the loss
    # fraction is a ratio estimator over n / E[cycle] cycles
    mean_g, mean_b = 1 / p, 1 / r
    var_g, var_b = (1 - p) / p**2, (1 - r) / r**2
    cycle = mean_g + mean_b
    frac = mean_b / cycle
    cycles = n / cycle
    sd_frac = math.sqrt(((1 - frac) ** 2 * var_b + frac**2 * var_g) / cycles) / cycle
    assert abs(seen.loss_fraction - frac) <= 5 * sd_frac, (seen.loss_fraction, frac, sd_frac)
    sd_burst = math.sqrt(var_b / len(seen.bursts))
    assert abs(seen.mean_burst - mean_b) <= 5 * sd_burst, (seen.mean_burst, len(seen.bursts))
    assert ge.mean_loss_pct == pytest.approx(100 * frac) and ge.mean_burst == mean_b
    assert stats["left"]["in"]["ge_lost"] == seen.lost
    assert seen.duplicates == seen.reordered == 0


# Quantiles (10%, 50%, 90%) of each shape in units of sigma = jitter_ms: uniform in [-1, 1];
# normal; Pareto of shape 3 shifted to mean 0 and scaled to sigma 1, whose floor is -0.577.
QUANTILES = {
    "uniform": (-0.8, 0.0, 0.8),
    "normal": (-1.2816, 0.0, 1.2816),
    "pareto": tuple(((1 - q) ** (-1 / 3) - 1.5) / math.sqrt(0.75) for q in (0.1, 0.5, 0.9)),
}
# A capture's delay quantile is the model's plus the emulator's wakeup lateness: never below
# (nothing leaves early), up to this much above on two cores shared with other work (measured:
# up to 2 ms at the median with a load average of 4.6; ~0.1 ms idle). Hence sigmas of 20 ms,
# against which that is small; the quantiles' own sampling error at n = 5000 is ~0.5 ms.
EARLY_S, LATE_S = 0.0005, 0.0030


def quantiles(delays: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(delays, n=10)
    return q[0], statistics.median(delays), q[-1]


@pytest.mark.parametrize("dist", ["normal", "pareto"])
def test_delay_distribution(probe, dist):
    """Jitter drawn from netem's shapes with sigma = jitter_ms (reordering on, so that no
    packet waits for another and each delay is its own draw): the capture's 10/50/90%
    delay quantiles are the shape's (Pareto's lean far right of normal's: -10.7 ms, -5.5 ms,
    +15.1 ms against -25.6, 0, +25.6 for sigma = 20 ms)."""
    n = 5000
    delay, jitter = 0.100, 0.020
    model = LinkModel(delay_ms=100, jitter_ms=20, delay_distribution=dist, jitter_reorders=True)
    sent, arrived, _ = probe(model, LinkModel(), n)
    delays = one_way_delays(sent, arrived)
    assert len(delays) == n
    for got, want in zip(quantiles(delays), QUANTILES[dist], strict=True):
        want_s = delay + want * jitter
        assert want_s - EARLY_S <= got <= want_s + LATE_S, (dist, quantiles(delays))
    if dist == "pareto":
        assert min(delays) >= delay - 0.578 * jitter - EARLY_S


# -- trace-driven links ------------------------------------------------------------------------

# A synthetic trace, made here (never a recording): a 60 ms period of a 10 ms burst of two
# opportunities per millisecond (24 Mbit/s), 16 ms of nothing, 10 ms of one per millisecond,
# then nothing up to the period's end but the period mark itself (Mahimahi's rule: the last
# timestamp is the period, and an opportunity).
BURSTS = [t for t in range(5, 15) for _ in (0, 1)] + list(range(31, 41)) + [60]
# Where in BURSTS' period the first probe leaves: 8 ms after an opportunity, 9 ms before the
# next, so that which one it meets does not hang on the microseconds (milliseconds, loaded)
# of its way from h1's capture to the router's queue.
GAP_PHASE_MS = 22.0
# The median of the departures' lateness: the emulator's release wake-ups, 8-25 us idle (its
# timer overshoot is learnt), 9-22 us with a busy loop beside it; the bound is half the 1 ms
# between the file's timestamps, since one opportunity too late for every packet (a lost one)
# makes the median 1 ms.
MEDIAN_LATE_S = 0.0005
# The share of departures allowed later than LATE_S: the emulator off a loaded CPU for a few
# ms delays everything that falls due meanwhile, two packets per ms in the bursts (4 of 389
# with other helpers' load ~1.3 on 2 cores; 15 of 389, 3.9%, in one of 6 runs with a busy
# loop beside, load 1.5, both medians on time); a lost opportunity is caught by the medians,
# which it shifts to the end, not by this count.
LATE_SHARE = 0.05
SENDER_START_S = 1.0  # more than a loaded machine takes to start the probe sender
PORT_STOPPED, PORT_AFTER = 47011, 47012  # the two probe streams of the stopped-emulator test


def at_phase(epoch: float, period_ms: float, phase_ms: float, after: float) -> float:
    """The first wall-clock time after `after` at `phase_ms` of a trace's period (the trace's
    time 0 at `epoch`)."""
    periods = math.ceil(((after - epoch) * 1000.0 - phase_ms) / period_ms)
    return epoch + (periods * period_ms + phase_ms) / 1000.0


def trace_run(
    tri,
    tmp_path,
    model: LinkModel,
    count: int,
    *,
    size: int = 1472,
    phase_ms: float | None = None,
):
    """`count` full-size probes h1 -> h2 (IP 1500 bytes: one opportunity each) through r1 with
    `model` on the h1 -- r1 link, the first at `phase_ms` of trace_up's period if given:
    (captures at h1 and h2, emulator stats, trace epoch)."""
    emu = RouterEmulator(
        MininetHost(tri.r1),
        [EmulatedPort("left", tri.r1_h1, model), EmulatedPort("right", tri.r1_h2, LinkModel())],
        seed=19,
        log_path=tmp_path / "linkem.log",
    )
    emu.start()
    try:
        epoch = emu.trace_epoch()
        cap = Capture(
            [(MininetHost(tri.h1), tri.h1_if), (MininetHost(tri.h2), tri.h2_if)],
            tmp_path / "cap",
            snaplen=96,
            bpf="udp",
        )
        cap.start()
        try:
            start_at = None
            if phase_ms is not None:
                after = time.time() + SENDER_START_S
                start_at = at_phase(epoch, model.trace_up.period_ms, phase_ms, after)
            # bursts of 8 every 3 ms: 2667 packets/s, above the trace's peak (2000/s), so the
            # trace queue never empties once the first probe is in
            send_probes(
                MininetHost(tri.h1),
                H2,
                count,
                interval=0.003,
                burst=8,
                size=size,
                start_at=start_at,
            )
            stats = drained(emu)
        finally:
            files = cap.stop()
    finally:
        emu.stop()
    sent, arrived = (read_probes(f) for f in files)
    return sent, arrived, stats, epoch


def test_trace_departures_follow_the_file(tri, tmp_path):
    """Saturated, a trace-driven direction sends one 1500-byte packet per opportunity of the
    file, at its time (plus the link's delay, which runs after the departure), drops what
    its drop-tail queue cannot hold, and leaves the other direction alone."""
    f = tmp_path / "bursts.up"
    f.write_text("".join(f"{t}\n" for t in BURSTS))
    trace = read_trace(f)
    delay = 0.005
    model = LinkModel(delay_ms=delay * 1000, trace_up=trace, queue_pkts=100)
    n = 1500
    sent, arrived, stats, epoch = trace_run(tri, tmp_path, model, n, phase_ms=GAP_PHASE_MS)
    first = ((sent[0][0] - epoch) * 1000) % trace.period_ms
    assert 15 < first < 30, f"the sender started late: first probe at phase {first:.1f} ms"
    st = stats["left"]["in"]
    assert st["direction"] == "up" and "trace_departures" not in stats["left"]["out"]
    seqs = [s for _, s in arrived]
    assert seqs == sorted(seqs), "a trace queue is FIFO"
    assert len(seqs) == st["trace_departures"] and n - len(seqs) == st["trace_dropped"] > 0
    q = TraceQueue(trace.times, start=epoch, limit=0)
    k0 = q.first_after(sent[0][0])  # the first probe meets an empty queue
    errors = [t - delay - q.opportunity_time(k0 + i) for i, (t, _) in enumerate(arrived)]
    # every packet at its opportunity (+ the delay): never early, late by the emulator's
    # wake-up only; a lost opportunity (one packet's arrival timed at its late read, the
    # defect these checks caught) or a wrong count shifts every later packet by one
    # opportunity, to the end: a median of 0.5-1 ms and a tenth of them 5-20 ms late. A late
    # wake-up delays only what was due while the emulator was off the CPU, hence the median
    # of the last two periods: on time whatever came before, unless an opportunity was lost
    assert min(errors) > -EARLY_S, min(errors)
    assert statistics.median(errors) < MEDIAN_LATE_S, statistics.median(errors)
    assert statistics.median(errors[-62:]) < MEDIAN_LATE_S, errors[-62:]
    assert sum(e > LATE_S for e in errors) <= len(errors) * LATE_SHARE, sorted(errors)[-10:]
    # per window of the file: the 24 Mbit/s bursts carry 20 packets, the slow ones 10, and
    # nothing crosses during the gaps (phases of trace time, the delay taken off; a window
    # ends LATE_S after its last opportunity, the wake-up grain allowed above)
    late = LATE_S * 1000
    phase = [((t - delay - epoch) * 1000) % 60 for t, _ in arrived]
    burst_a = sum(4 < p <= 14 + late for p in phase)
    burst_b = sum(30 < p <= 40 + late for p in phase)
    mark = sum(59 < p <= 60 or p <= late for p in phase)
    periods = len(arrived) / 31
    assert abs(burst_a - 20 * periods) <= LATE_SHARE * len(arrived), (burst_a, periods)
    assert abs(burst_b - 10 * periods) <= LATE_SHARE * len(arrived), (burst_b, periods)
    assert burst_a + burst_b + mark >= (1 - LATE_SHARE) * len(arrived), (burst_a, burst_b, mark)

    # trace_down only: h1 -> h2 goes up, untouched (every probe through, at the sender's pace)
    sent, arrived, stats, _ = trace_run(tri, tmp_path, LinkModel(trace_down=trace), 600)
    assert len(arrived) == 600 and "trace_departures" not in stats["left"]["in"]
    assert arrived[-1][0] - arrived[0][0] < sent[-1][0] - sent[0][0] + 0.02


def test_trace_keeps_its_opportunities_while_the_emulator_is_off_the_cpu(tri, tmp_path):
    """A trace's opportunities belong to the link, not to the emulator's wake-ups: packets
    that reach the router while its emulator does not run (stopped here, as a loaded machine
    deschedules it for milliseconds) meet the queue as it was when they arrived. Spread out
    at half the trace's rate, each found it empty and its opportunity passed while the
    emulator was stopped: they all leave as soon as it runs again (late, it could not help
    that), not one opportunity at a time from then on (200 ms for 200 packets, the queue
    timing each at its late read), and the packets sent after them are on time again."""
    f = tmp_path / "ms.up"
    f.write_text("1\n")  # one 1500-byte opportunity per millisecond (12 Mbit/s)
    trace = read_trace(f)
    delay, n = 0.005, 200
    model = LinkModel(delay_ms=delay * 1000, trace_up=trace, queue_pkts=1000)
    emu = RouterEmulator(
        MininetHost(tri.r1),
        [EmulatedPort("left", tri.r1_h1, model), EmulatedPort("right", tri.r1_h2, LinkModel())],
        seed=19,
        log_path=tmp_path / "linkem.log",
    )
    h1 = MininetHost(tri.h1)
    emu.start()
    try:
        epoch = emu.trace_epoch()
        cap = Capture(
            [(h1, tri.h1_if), (MininetHost(tri.h2), tri.h2_if)],
            tmp_path / "cap",
            snaplen=96,
            bpf="udp",
        )
        cap.start()
        try:
            assert emu.proc is not None
            os.kill(emu.proc.pid, signal.SIGSTOP)
            try:  # one probe per 2 ms: half the trace's rate, the queue empty at each arrival
                send_probes(h1, H2, n, interval=0.002, burst=1, size=1472, port=PORT_STOPPED)
            finally:
                resumed = time.time()  # (before: it may release at once, on the other core)
                os.kill(emu.proc.pid, signal.SIGCONT)
            send_probes(h1, H2, n, interval=0.002, burst=1, size=1472, port=PORT_AFTER)
            stats = drained(emu)
        finally:
            files = cap.stop()
    finally:
        emu.stop()
    st = stats["left"]["in"]
    arrived_s = read_probes(files[1], PORT_STOPPED)
    sent_a, arrived_a = (read_probes(f, PORT_AFTER) for f in files)
    assert len(arrived_s) == len(arrived_a) == n and st["trace_dropped"] == 0
    assert arrived_s[0][0] > resumed, "the emulator held nothing while stopped"
    # all of the first stream out within the time the emulator takes to read and release
    # 200 packets (a few ms; 20 allowed for a loaded machine) after it resumed, where timing
    # them at their read spreads them over 200 ms
    assert arrived_s[-1][0] - delay - resumed < 0.020, arrived_s[-1][0] - delay - resumed
    # the second stream: each probe at the first opportunity after it was sent (the queue
    # empty), never early, late by the emulator's wake-up (an opportunity, 1 ms, when one
    # falls within the microseconds between h1's capture and the router's queue)
    q = TraceQueue(trace.times, start=epoch, limit=1 << 30)
    want = {seq: q.admit(t, 1500) for t, seq in sent_a}
    errors = [t - delay - want[seq] for t, seq in arrived_a]
    assert min(errors) > -EARLY_S, min(errors)
    assert statistics.median(errors) < MEDIAN_LATE_S, statistics.median(errors)
    assert sum(e > LATE_S for e in errors) <= len(errors) * LATE_SHARE, sorted(errors)[-10:]
    # every packet timed by the kernel's stamp of its arrival, none by its read
    assert st.get("trace_unstamped") == 0, st


@pytest.mark.parametrize(
    ("fix", "ipv6"), [(False, False), (True, True)], ids=["checksum-left-wrong", "checksum-fixed"]
)
def test_corruption_on_the_wire(tri, through, fix, ipv6):
    """3% of the TCP segments with payload get one bit of it flipped on r1; every second probe
    carries no payload and must pass untouched (and the 3% is of payload segments, not of all
    segments: 6% would show). The sender's capture shows every probe intact (the damage is
    done in the network), the receiver's shows the share in a 5-sigma band, one bit each,
    anywhere in the payload, and tshark's own checksum check: wrong on every corrupted probe
    (netem's corrupt), or right on every one (fixed up: TCP accepts the damage)."""
    n, size, every = 12000, 100, 2
    src, dst = (H1_6, H2_6) if ipv6 else (H1, H2)
    model = LinkModel(delay_ms=2, corrupt_pct=3, corrupt_fix_checksum=fix)
    files, stats = through(
        model,
        LinkModel(),
        lambda: send_tcp_probes(
            MininetHost(tri.h1), src, dst, n, interval=0.001, burst=4, empty_every=every
        ),
        bpf=f"tcp dst port {TCP_PROBE_PORT}",
        snaplen=256,
    )
    sent, arrived = (corruption_seen(read_tcp_probes(f), n, size, every) for f in files)
    with_payload, bare = n - n // every, n // every
    assert (sent.received, sent.corrupted, sent.bad_checksum_intact) == (with_payload, 0, 0)
    assert (arrived.empty_received, arrived.empty_changed) == (bare, 0)
    assert arrived.received == with_payload
    lo, hi = binomial_band(with_payload, 0.03)
    assert lo <= arrived.corrupted <= hi, f"{arrived.corrupted} of {with_payload}: [{lo}, {hi}]"
    assert arrived.one_bit, arrived.bits
    # anywhere in the payload: the flipped bits reach both its first and its last eighth
    assert min(arrived.positions) < size and max(arrived.positions) >= 7 * size
    want_bad = 0 if fix else arrived.corrupted
    assert arrived.bad_checksum_corrupted == want_bad
    assert arrived.bad_checksum_intact == 0
    assert stats["left"]["in"]["corrupted"] == arrived.corrupted


# A Linux TCP transfer h1 -> h2 for test_corruption_of_kernel_tcp: the receiver prints
# "listening" on stderr, then writes the sha256 of what it got and its length on stdout.
RECEIVER = """
import hashlib, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
print("listening", file=sys.stderr, flush=True)
c, _ = s.accept()
h, n = hashlib.sha256(), 0
while chunk := c.recv(1 << 16):
    h.update(chunk)
    n += len(chunk)
print(h.hexdigest(), n, flush=True)
"""
SENDER_TCP = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
c.setsockopt(socket.SOL_SOCKET, 47, 12_500_000)  # SO_MAX_PACING_RATE: 100 Mbit/s (see below)
c.sendall(bytes(range(256)) * (int(sys.argv[3]) // 256))
c.close()
"""


@pytest.mark.parametrize("fix", [False, True], ids=["checksum-left-wrong", "checksum-fixed"])
def test_corruption_of_kernel_tcp(tri, through, tmp_path, fix):
    """Linux TCP h1 -> h2 (TSO/GSO on: the router gets 64 KB super-packets with partial
    checksums, which the kernel segments and completes before we see them) through 2%
    corruption. Left wrong: h2's kernel counts each corrupted segment as a checksum error
    (TcpInCsumErrors), drops it, TCP retransmits, the data arrive intact. Fixed: no checksum
    error, h2's TCP takes the damaged segments and the data arrive changed. Either way the
    capture on h2 (whole frames, tshark validating every TCP checksum) shows exactly as many bad
    checksums as the receiving kernel counted. The sender is paced at 100 Mbit/s: unpaced, the
    whole-frame capture on h2 missed a few of the segments (30 bad checksums seen of 32)."""
    nbytes, port = 256 * 8000, 47100 + fix
    model = LinkModel(delay_ms=1, corrupt_pct=2, corrupt_fix_checksum=fix)
    h1, h2 = MininetHost(tri.h1), MininetHost(tri.h2)
    before = nstat(h2, "TcpInCsumErrors").get("TcpInCsumErrors", 0)
    out = tmp_path / f"received-{fix}.txt"

    def transfer() -> None:
        rx = h2.start(
            [sys.executable, "-c", RECEIVER, H2, str(port)], stdout=out, stderr=subprocess.PIPE
        )
        rx.wait_for_line("listening", timeout=10)
        h1.run([sys.executable, "-c", SENDER_TCP, H2, str(port), str(nbytes)], timeout=60)
        assert rx.wait(30) == 0

    files, stats = through(model, LinkModel(), transfer, bpf=f"tcp dst port {port}", snaplen=65535)
    csum_errors = nstat(h2, "TcpInCsumErrors").get("TcpInCsumErrors", 0) - before
    digest, got = out.read_text().split()
    want = hashlib.sha256(bytes(range(256)) * (nbytes // 256)).hexdigest()
    corrupted = stats["left"]["in"]["corrupted"]
    assert int(got) == nbytes
    assert corrupted >= 5, stats["left"]["in"]  # ~1400 segments with payload at 2%
    bad = subprocess.run(
        ["tshark", "-r", str(files[1]), "-o", "tcp.check_checksum:TRUE"]
        + ["-Y", "tcp.checksum.status == 0 && tcp.len > 0", "-T", "fields", "-e", "frame.number"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    unverified = subprocess.run(
        ["tshark", "-r", str(files[1]), "-o", "tcp.check_checksum:TRUE"]
        + ["-Y", "tcp.checksum.status == 2 && tcp.len > 0", "-T", "fields", "-e", "frame.number"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert not unverified, f"{len(unverified)} segments tshark could not check"
    if fix:
        assert csum_errors == 0 and not bad
        assert digest != want, "the damaged segments were accepted: the data must differ"
    else:
        assert csum_errors == len(bad) == corrupted
        assert digest == want, "TCP retransmits what it dropped: the data arrive intact"
