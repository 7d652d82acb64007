"""Trace-driven link capacity in the Mahimahi format: reading a trace file, and the departure
schedule a trace gives a drop-tail queue (pure: no I/O beyond reading the file).

A trace file (Mahimahi's `mm-link` format, Netravali et al., USENIX ATC 2015; the shipped ones
in topologies/traces/ were recorded for Winstein et al., NSDI 2013) has one line per delivery
opportunity: a whole number of milliseconds since the start of the trace at which one
1500-byte packet may leave the bottleneck queue. Several opportunities in one millisecond repeat
the timestamp. The file repeats: the period is its last timestamp (Mahimahi's rule), so a file
holding just "1" is a link of one packet per millisecond (12 Mbit/s).

Why the schedule is computed when a packet arrives instead of ticking every millisecond: the
queue is FIFO and the opportunities are known in advance, so a packet's departure depends only
on the packets before it. Each arrival costs O(1) (a bisection when the queue was empty), the
emulator wakes only for releases, and departures stay in arrival order (batch verdicts hold).

Accounting follows Mahimahi's link queue: an opportunity drains up to 1500 bytes; a packet
leaves at the opportunity that carries its last byte (bytes of one packet may span several
opportunities, and one opportunity may carry several small packets); what an opportunity does
not use is lost when the queue is empty. Sizes are IP bytes, as Mahimahi's (it sees IP packets
on its TUN device); a GSO super-packet counts the IP and transport headers of each segment it
will be cut into (`ip_bytes`).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from testbed.errors import FieldError

OPPORTUNITY_BYTES = 1500  # one delivery opportunity: one MTU-sized IP packet
MAX_LINES = 10_000_000  # a sanity bound: the shipped traces have ~100 000 lines


class TraceError(FieldError):
    """A trace file is unreadable or malformed; the message names the file and the line."""


@dataclass(frozen=True)
class Trace:
    """A loaded trace: its file and its delivery opportunities (ms since the trace's start,
    non-decreasing, the last one > 0)."""

    path: str
    times: tuple[int, ...] = field(repr=False, compare=False)

    @property
    def period_ms(self) -> int:
        """The file repeats after this many milliseconds (its last timestamp)."""
        return self.times[-1]

    @property
    def opportunities(self) -> int:
        return len(self.times)

    @property
    def mean_mbit(self) -> float:
        """The capacity averaged over one period, Mbit/s."""
        return len(self.times) * OPPORTUNITY_BYTES * 8 / (self.period_ms * 1000)

    def opportunities_between(self, t0_ms: float, t1_ms: float) -> int:
        """Delivery opportunities in (t0_ms, t1_ms] of trace time (the file repeating)."""
        return _count_upto(self.times, t1_ms) - _count_upto(self.times, t0_ms)

    def mbit_between(self, t0_ms: float, t1_ms: float) -> float:
        """The trace's capacity over (t0_ms, t1_ms], Mbit/s."""
        if t1_ms <= t0_ms:
            return 0.0
        n = self.opportunities_between(t0_ms, t1_ms)
        return n * OPPORTUNITY_BYTES * 8 / ((t1_ms - t0_ms) * 1000)


def _count_upto(times: Sequence[int], t_ms: float) -> int:
    """Opportunities at trace times <= t_ms since time 0, the file repeating (t_ms >= 0)."""
    period = times[-1]
    cycles = math.floor(t_ms / period)
    return cycles * len(times) + bisect_right(times, t_ms - cycles * period)


def read_trace(path: str | Path) -> Trace:
    """Read and check a trace file. TraceError names the file and the line: unreadable,
    empty, a line that is not a whole number of milliseconds, a timestamp going backwards,
    or a trace that lasts no time (last timestamp 0, as Mahimahi refuses)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise TraceError(p, "(file)", f"cannot read the trace: {e.strerror or e}") from None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise TraceError(p, f"line {line}", "not a text file of millisecond timestamps") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    if not lines:
        raise TraceError(p, "line 1", "the trace is empty: no delivery opportunity")
    if len(lines) > MAX_LINES:
        raise TraceError(p, f"line {MAX_LINES + 1}", f"more than {MAX_LINES} lines")
    times: list[int] = []
    prev = 0
    for i, line in enumerate(lines, start=1):
        token = line.strip()
        if not token.isdigit() or not token.isascii():
            what = "an empty line" if not token else repr(token[:40])
            raise TraceError(p, f"line {i}", f"expected a whole number of milliseconds, got {what}")
        t = int(token)
        if t < prev:
            raise TraceError(
                p, f"line {i}", f"timestamps go backwards: {t} ms after {prev} ms (line {i - 1})"
            )
        times.append(t)
        prev = t
    if times[-1] == 0:
        raise TraceError(
            p, f"line {len(times)}", "the trace lasts no time: its last timestamp must be > 0"
        )
    return Trace(str(p), tuple(times))


def ip_bytes(length: int, head: bytes, mtu: int = OPPORTUNITY_BYTES) -> int:
    """The IP bytes a packet of `length` takes on the link: itself, or, for a GSO super-packet
    (longer than the MTU), the segments it will be cut into, each with its own copy of the IP
    and transport headers read from `head` (its first bytes). Unknown headers count once."""
    if length <= mtu or len(head) < 20:
        return length
    version = head[0] >> 4
    if version == 4:
        ip_len, proto = (head[0] & 0x0F) * 4, head[9]
    elif version == 6 and len(head) >= 40:
        ip_len, proto = 40, head[6]
    else:
        return length
    if proto == 6 and len(head) >= ip_len + 13:
        hdr = ip_len + (head[ip_len + 12] >> 4) * 4
    elif proto == 17:
        hdr = ip_len + 8
    else:
        return length
    if hdr >= mtu:
        return length
    segments = -(-(length - hdr) // (mtu - hdr))
    return length + (segments - 1) * hdr


@dataclass
class TraceQueue:
    """One link direction's trace-driven bottleneck: a drop-tail FIFO of `limit` bytes drained
    by the trace's delivery opportunities, the trace's time 0 at `start` (seconds, on the
    caller's clock). admit() gives each arriving packet its departure time, or None when the
    queue has no room for it (a drop-tail drop)."""

    times: Sequence[int]
    start: float
    limit: int
    k: int = -1  # the opportunity (counted from the start, repeats included) last used
    left: int = 0  # its bytes not used yet
    last_departure: float = -math.inf
    waiting: deque = field(default_factory=deque)  # (departure, bytes) of packets not gone
    backlog: int = 0  # bytes of packets that have not left (the queue's occupancy)
    departures: int = 0
    dropped: int = 0
    departed_bytes: int = 0

    def opportunity_time(self, k: int) -> float:
        n = len(self.times)
        cycles, i = divmod(k, n)
        return self.start + (cycles * self.times[-1] + self.times[i]) / 1000.0

    def first_after(self, t: float) -> int:
        """The first opportunity strictly after time t (those at t or before are gone, as in
        Mahimahi, which spends every opportunity up to now before it queues a packet)."""
        # (+1 ns: an arrival at an opportunity's very time comes after it, whatever the
        # rounding of seconds to milliseconds)
        rel = max(0.0, (t - self.start) * 1000.0 + 1e-6)
        period = self.times[-1]
        cycles = math.floor(rel / period)
        i = bisect_right(self.times, rel - cycles * period)
        if i == len(self.times):  # (float rounding at the very end of a period)
            cycles, i = cycles + 1, 0
        return cycles * len(self.times) + i

    def settle(self, now: float) -> int:
        """Forget the packets gone by `now`; the bytes still queued."""
        waiting = self.waiting
        while waiting and waiting[0][0] <= now:
            self.backlog -= waiting.popleft()[1]
        return self.backlog

    def admit(self, now: float, size: int) -> float | None:
        """Queue a packet of `size` IP bytes that arrives at `now`: its departure time, or None
        if the queue's `limit` bytes cannot take it. Departures never go backwards."""
        self.settle(now)
        if self.backlog + size > self.limit:
            self.dropped += 1
            return None
        if self.last_departure <= now:  # the queue is empty: what was left is lost
            self.k = self.first_after(now)
            self.left = OPPORTUNITY_BYTES
        need = size
        if need <= self.left:
            self.left -= need
        else:
            need -= self.left
            more = -(-need // OPPORTUNITY_BYTES)
            self.k += more
            self.left = more * OPPORTUNITY_BYTES - need
        departure = self.opportunity_time(self.k)
        self.last_departure = departure
        self.waiting.append((departure, size))
        self.backlog += size
        self.departures += 1
        self.departed_bytes += size
        return departure
