"""Link conditions measured on the wire: a numbered UDP probe stream sent through a link,
captured with tcpdump at both ends, read back with tshark, and what the capture shows
(reordered, duplicated, lost packets, loss bursts, one-way delays) counted.

Why UDP with a sequence number: TCP would react to the very conditions we measure (retransmit
what is lost, slow down), and pings are paced too slowly by ping itself. Each probe's payload
starts with its number (4 bytes, big endian); both captures run in the same kernel clock, so
a probe's one-way delay is its arrival time minus its departure time.

Corruption only touches TCP segments that carry payload, so it has TCP probes of its own: TCP
segments of no connection, written whole to a raw socket (`python -m testbed.probe tcp ...`),
numbered in their sequence number (the header is never corrupted, the payload may be) and
carrying a payload known from that number; a capture at the receiver (the receiving kernel
drops a segment whose checksum is wrong, the capture sees it first) tells which arrived
changed, in how many bits, and whether tshark finds their checksums right (tcp.checksum.status
with validation on: an implementation independent of ours)."""

from __future__ import annotations

import math
import os
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from testbed.host import Host
from testbed.packets import csum, set_tcp_checksum

PROBE_PORT = 47001
TCP_PROBE_PORT = 47002  # destination port of the TCP probes (their source port: this + 1)
REPO = Path(__file__).resolve().parents[1]
# Sends COUNT probes to DST:PORT, BURST back to back every INTERVAL seconds (paced against the
# clock, so a late wakeup sends the missed bursts at once instead of stretching the stream),
# from SRC if not empty, the first burst at the wall-clock time START if given.
SENDER = """
import socket, struct, sys, time
dst, port, count, interval, burst, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
    float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_DGRAM)
if len(sys.argv) > 7 and sys.argv[7]:
    s.bind((sys.argv[7], 0))
pad = bytes(size - 4)
if len(sys.argv) > 8:
    while (wait := float(sys.argv[8]) - time.time()) > 0:
        time.sleep(wait)
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
    start_at: float | None = None,
) -> None:
    """Send `count` numbered UDP probes from host to dst (returns when all are sent); from
    the address src if given (a multi-homed host routes by source address); the first burst
    at the wall-clock time start_at (time.time()) if given, so that a measurement can place
    the stream against a schedule (a trace's opportunities) whatever the sender's start-up."""
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
            src or "",
            *([repr(start_at)] if start_at is not None else []),
        ],
        timeout=count / burst * interval + 60 + max(0.0, (start_at or 0.0) - time.time()),
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


# -- TCP probes (corruption) -----------------------------------------------------------------

PSH_ACK, ACK = 0x18, 0x10


def probe_payload(number: int, size: int) -> bytes:
    """What TCP probe `number` carries: its number, then bytes that depend on it (so that a
    misdelivered or shifted payload cannot look right)."""
    head = struct.pack("!I", number)
    return (head + bytes((number * 7 + k) & 0xFF for k in range(size - 4)))[:size]


def has_payload(number: int, empty_every: int) -> bool:
    """Whether probe `number` carries payload: every empty_every-th one does not (0: all do)."""
    return not empty_every or number % empty_every != empty_every - 1


def tcp_probe(src: str, dst: str, number: int, size: int, port: int = TCP_PROBE_PORT) -> bytes:
    """TCP probe `number` as a whole IPv4 or IPv6 packet with right checksums: sequence number
    = probe number, PSH/ACK with `size` bytes of probe_payload, or a bare ACK if size is 0."""
    payload = probe_payload(number, size) if size else b""
    th = struct.pack(
        "!HHIIBBHHH", port + 1, port, number, 0, 5 << 4, PSH_ACK if size else ACK, 65535, 0, 0
    )
    if ":" in dst:
        ip = struct.pack("!IHBB", 6 << 28, len(th) + len(payload), socket.IPPROTO_TCP, 64)
        ip += socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    else:
        ip = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(th) + len(payload),
            number & 0xFFFF,
            0x4000,
            64,
            socket.IPPROTO_TCP,
            0,
            socket.inet_aton(src),
            socket.inet_aton(dst),
        )
        ip = ip[:10] + struct.pack("=H", csum(ip)) + ip[12:]
    pkt = bytearray(ip + th + payload)
    set_tcp_checksum(pkt, len(ip))
    return bytes(pkt)


def _send_tcp_main(argv: list[str]) -> int:
    """`python -m testbed.probe tcp SRC DST COUNT INTERVAL BURST SIZE EMPTY_EVERY`: the TCP
    probes from SRC to DST through a raw socket (IP header included), paced like SENDER."""
    src, dst = argv[0], argv[1]
    count, interval, burst = int(argv[2]), float(argv[3]), int(argv[4])
    size, empty_every = int(argv[5]), int(argv[6])
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    s = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW)
    where = (dst, 0, 0, 0) if family == socket.AF_INET6 else (dst, 0)
    pkts = [
        tcp_probe(src, dst, i, size if has_payload(i, empty_every) else 0) for i in range(count)
    ]
    t0 = time.monotonic()
    i = 0
    while i < count:
        for _ in range(min(burst, count - i)):
            s.sendto(pkts[i], where)
            i += 1
        wait = t0 + (i // burst) * interval - time.monotonic()
        if wait > 0:
            time.sleep(wait)
    return 0


def send_tcp_probes(
    host: Host,
    src: str,
    dst: str,
    count: int,
    *,
    interval: float = 0.001,
    burst: int = 4,
    size: int = 100,
    empty_every: int = 0,
) -> None:
    """Send `count` numbered TCP probes from host (address src) to dst, `size` bytes of payload
    each, every empty_every-th one without payload (0: none); returns when all are sent."""
    # env: this checkout's testbed, whatever the host's working directory
    pythonpath = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
    host.run(
        [
            "env",
            f"PYTHONPATH={pythonpath}",
            sys.executable,
            "-m",
            "testbed.probe",
            "tcp",
            src,
            dst,
            str(count),
            str(interval),
            str(burst),
            str(size),
            str(empty_every),
        ],
        timeout=count / burst * interval + 60,
    )


@dataclass
class TcpArrival:
    """One TCP probe as a capture shows it."""

    time: float
    number: int
    payload: bytes
    checksum_ok: bool


def read_tcp_probes(pcap: Path, port: int = TCP_PROBE_PORT) -> list[TcpArrival]:
    """Every TCP probe in a capture, in capture order, with tshark's checksum verdict (the
    capture's snaplen must hold whole probes: a cut segment cannot be checked)."""
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(pcap),
            "-o",
            "tcp.check_checksum:TRUE",
            "-Y",
            f"tcp.dstport == {port}",
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
            "-e",
            "tcp.seq_raw",
            "-e",
            "tcp.payload",
            "-e",
            "tcp.checksum.status",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = []
    for line in out.splitlines():
        t, seq, payload, status = (line.split("\t") + ["", "", ""])[:4]
        if status not in ("0", "1"):  # 0 bad, 1 good, 2 unverified (e.g. cut by the snaplen)
            raise ValueError(f"{pcap}: probe {seq} has checksum status {status!r}")
        rows.append(TcpArrival(float(t), int(seq), bytes.fromhex(payload), status == "1"))
    return rows


@dataclass
class CorruptionSeen:
    """What a receiver's capture shows of TCP probes sent through corrupting links."""

    sent: int
    received: int  # probes with payload that arrived (first copies)
    corrupted: int  # ... whose payload differs from what was sent
    bits: list[int] = field(default_factory=list)  # bits differing, per corrupted probe
    positions: list[int] = field(default_factory=list)  # the first differing bit, per probe
    bad_checksum_corrupted: int = 0  # corrupted probes whose TCP checksum is wrong
    bad_checksum_intact: int = 0  # unchanged probes whose TCP checksum is wrong
    empty_received: int = 0  # probes without payload that arrived
    empty_changed: int = 0  # ... that carry payload now or have a wrong checksum

    @property
    def one_bit(self) -> bool:
        return all(b == 1 for b in self.bits)


def corruption_seen(
    arrivals: list[TcpArrival], sent: int, size: int = 100, empty_every: int = 0
) -> CorruptionSeen:
    """Compare each probe's first arrival with what was sent (from its number)."""
    seen = CorruptionSeen(sent=sent, received=0, corrupted=0)
    done: set[int] = set()
    for a in arrivals:
        if a.number in done or not 0 <= a.number < sent:
            continue
        done.add(a.number)
        if not has_payload(a.number, empty_every):
            seen.empty_received += 1
            seen.empty_changed += bool(a.payload) or not a.checksum_ok
            continue
        seen.received += 1
        want = probe_payload(a.number, size)
        if a.payload == want:
            seen.bad_checksum_intact += not a.checksum_ok
            continue
        seen.corrupted += 1
        seen.bad_checksum_corrupted += not a.checksum_ok
        if len(a.payload) != len(want):
            seen.bits.append(-1)
            continue
        diff = int.from_bytes(a.payload, "big") ^ int.from_bytes(want, "big")
        seen.bits.append(diff.bit_count())
        seen.positions.append(8 * len(want) - diff.bit_length())
    return seen


if __name__ == "__main__":
    if sys.argv[1:2] != ["tcp"]:
        sys.exit("usage: python -m testbed.probe tcp SRC DST COUNT INTERVAL BURST SIZE EMPTY_EVERY")
    sys.exit(_send_tcp_main(sys.argv[2:]))
