"""Link conditions measured on the wire: a numbered UDP probe stream sent through a link,
captured with tcpdump at both ends, read back with tshark, and what the capture shows
(reordered, duplicated, lost packets, loss bursts, one-way delays) counted.

Why UDP with a sequence number: TCP would react to the very conditions we measure (retransmit
what is lost, slow down), and pings are paced too slowly by ping itself. Each probe's payload
starts with its number (4 bytes, big endian); both captures run in the same kernel clock, so
a probe's one-way delay is its arrival time minus its departure time."""

from __future__ import annotations

import math
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from testbed.host import Host

PROBE_PORT = 47001
# Sends COUNT probes to DST:PORT, BURST back to back every INTERVAL seconds (paced against the
# clock, so a late wakeup sends the missed bursts at once instead of stretching the stream).
SENDER = """
import socket, struct, sys, time
dst, port, count, interval, burst, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
    float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_DGRAM)
if len(sys.argv) > 7:
    s.bind((sys.argv[7], 0))
pad = bytes(size - 4)
t0 = time.monotonic()
i = 0
while i < count:
    for _ in range(min(burst, count - i)):
        s.sendto(struct.pack("!I", i) + pad, (dst, port))
        i += 1
    wait = t0 + (i // burst) * interval - time.monotonic()
    if wait > 0:
        time.sleep(wait)
"""


def send_probes(
    host: Host,
    dst: str,
    count: int,
    *,
    interval: float = 0.001,
    burst: int = 4,
    size: int = 100,
    port: int = PROBE_PORT,
    src: str | None = None,
) -> None:
    """Send `count` numbered UDP probes from host to dst (returns when all are sent); from
    the address src if given (a multi-homed host routes by source address)."""
    host.run(
        [
            sys.executable,
            "-c",
            SENDER,
            dst,
            str(port),
            str(count),
            str(interval),
            str(burst),
            str(size),
            *([src] if src else []),
        ],
        timeout=count / burst * interval + 60,
    )


def read_probes(pcap: Path, port: int = PROBE_PORT) -> list[tuple[float, int]]:
    """(capture time, probe number) of every probe in a capture, in capture order."""
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(pcap),
            "-Y",
            f"udp.dstport == {port}",
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
            "-e",
            "udp.payload",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = []
    for line in out.splitlines():
        t, _, payload = line.partition("\t")
        if len(payload) >= 8:
            rows.append((float(t), int(payload[:8], 16)))
    return rows


@dataclass
class Observed:
    """What a capture at the receiver shows of `sent` probes."""

    sent: int
    received: int  # probes captured, copies included
    distinct: int
    duplicates: int  # captured more than once (each extra copy counts)
    reordered: int  # arrived while a lower-numbered probe was still to come
    lost: int
    bursts: list[int]  # lengths of the runs of consecutive lost probes

    @property
    def loss_fraction(self) -> float:
        return self.lost / self.sent

    @property
    def mean_burst(self) -> float:
        return sum(self.bursts) / len(self.bursts) if self.bursts else 0.0


def observe(arrivals: list[tuple[float, int]], sent: int) -> Observed:
    seqs = [s for _, s in arrivals]
    counts = Counter(seqs)
    # reordered: a probe with a lower number arrives after it (suffix minimum over arrivals);
    # only first copies count, so that a late duplicate does not make others look early
    first = []
    seen: set[int] = set()
    for s in seqs:
        if s not in seen:
            seen.add(s)
            first.append(s)
    reordered, low = 0, math.inf
    for s in reversed(first):
        if s > low:
            reordered += 1
        low = min(low, s)
    bursts, run = [], 0
    for i in range(sent):
        if i in counts:
            if run:
                bursts.append(run)
            run = 0
        else:
            run += 1
    if run:
        bursts.append(run)
    return Observed(
        sent=sent,
        received=len(seqs),
        distinct=len(counts),
        duplicates=len(seqs) - len(counts),
        reordered=reordered,
        lost=sent - len(counts),
        bursts=bursts,
    )


def one_way_delays(sent: list[tuple[float, int]], arrived: list[tuple[float, int]]) -> list[float]:
    """Seconds from each probe's capture at the sender to its first capture at the receiver."""
    left = {}
    for t, s in sent:
        left.setdefault(s, t)
    out, seen = [], set()
    for t, s in arrived:
        if s in left and s not in seen:
            seen.add(s)
            out.append(t - left[s])
    return out


def binomial_band(n: int, p: float, sigmas: float = 5.0) -> tuple[float, float]:
    """Counts a Binomial(n, p) stays within but once in ~2 million draws (5 sigma)."""
    sd = math.sqrt(n * p * (1 - p))
    return n * p - sigmas * sd, n * p + sigmas * sd
