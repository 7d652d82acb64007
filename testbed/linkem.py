"""The link emulator process: holds NFQUEUE verdicts until each packet's release time, and
reorders, duplicates, corrupts and loses packets in bursts as a link's model says (netem's
conditions).

There is no netem on this kernel, so a router's iptables rules (NFQUEUE target; the kernel has no
nft queue expression) send the packets of a delayed link direction to an NFQUEUE (see
testbed/emulation.py) and this process, run inside the router's namespace, gives the verdicts
late. One process serves all queues of a router on one event loop:

    python -m testbed.linkem '{"seed": 1, "queues": {"0": {"delay_ms": 10, "jitter_ms": 0}}}'

It prints {"ready": true, ...} on stdout once every queue is bound, then takes JSON lines on stdin and answers
each with one JSON line on stdout:

    {"op": "update", "queue": 0, "delay_ms": 20, "jitter_ms": 2}  -> {"ok": true}
        (also jitter_dist, jitter_reorders, reorder_pct, reorder_gap, loss_model {p, r, h, k},
        corrupt_pct, corrupt_fix_checksum)
    {"op": "stats"}                                             -> {"ok": true, "stats": {...}}
    {"op": "stop"}                                              -> {"ok": true}, then exits

EOF on stdin, SIGTERM and SIGINT also end it. On the way out it releases what it still holds,
so a stop never turns queued packets into losses.

Why it talks netlink itself instead of using the netfilterqueue bindings: speed. The bindings copy
every packet into userspace, cannot set NFQA_CFG_F_GSO (so the kernel cuts each 64 KB GSO
super-packet into ~45 MTU packets before queueing) and give one verdict per packet. Here the queue
copies metadata only (NFQNL_COPY_META), GSO packets stay whole (F_GSO) and one
NFQNL_MSG_VERDICT_BATCH message accepts every due packet of a queue at once; that works because a
queue's packets are released in arrival order (jitter never reorders: release time =
max(previous release, arrival + delay + jitter)), and the kernel's batch verdict accepts all
packets with an id up to the given one.

A delayed packet's arrival is when we read it: ~0.1 ms after the kernel queued it if we were
asleep, so each emulated traversal adds about that much beyond its delay (timer overshoot is
learnt and compensated, see run()). A trace queue's arrivals are the kernel's instead
(NFQA_TIMESTAMP, see KernelStamps): there a late read does not add a little delay, it loses
the opportunities that passed meanwhile. The kernel only stamps while some socket asks for
receive timestamps, and then every packet, TCP's too (a TCP skb carrying its sender's
departure time, EDT, is stamped with the time it was queued).

Fail-open is off on purpose: if userspace falls behind so far that the kernel queue (maxlen) or
the socket buffer overflows, the kernel drops the packet. Passing it undelayed would reorder the
flow and silently change the link model; a drop shows up in the stats ("kernel_dropped") instead.

The conditions beyond delay, and why each stays cheap (verdicts of a loop turn go out in one
netlink write; per-packet work is a couple of integer countdowns, random numbers are drawn per
event, not per packet):

- reorder_pct/reorder_gap, netem's meaning: after a packet sent ahead, gap - 1 packets are
  delayed, then each is sent at once (its own verdict, ahead of everything held) with the
  reorder chance; the countdown to the next one is drawn geometrically.
- jitter_reorders: each packet keeps its own jittered release time (a heap, one verdict per
  packet) instead of waiting for the one before it (a FIFO, batch verdicts: the default).
- loss_model: Gilbert-Elliott (netem's gemodel) with its state and loss countdowns drawn
  geometrically; a lost packet gets NF_DROP at once.
- delay distributions: uniform in +-jitter, or normal, Pareto, paretonormal with sigma = jitter.
- duplication: the kernel marks a share of packets (nft numgen, testbed/emulation.py) and queues
  them to a copy-packet queue instead; here the copy leaves through a raw socket, marked so
  that the router's OUTPUT rules put it through the delay queues its original meets, and the
  original is held in its direction's FIFO like the rest (see CopyQueue).
- corruption (corrupt_pct, corrupt_fix_checksum): one random bit of the TCP payload of a share
  of the segments that carry payload (headers, SYNs and pure ACKs are never touched: see
  Queue.corrupted_copy), counted down geometrically over those segments. The bytes are needed
  here, so a corrupting direction's queue is the exception to COPY_META/F_GSO: it copies whole
  packets without F_GSO, which makes the kernel cut GSO super-packets into wire-sized segments
  (each gets its own chance, as on a real link) and complete their CHECKSUM_PARTIAL checksums
  before we see them. A corrupted segment is held with its new bytes (Queue.own) and leaves
  with a verdict of its own carrying them (the kernel then takes them as they are,
  CHECKSUM_NONE): checksum left as it was, hence wrong (netem's corrupt), or recomputed
  (testbed/packets.py). An update switches a queue's mode at run time; queues without
  corruption keep the fast path, whose only extra work is one attribute test per packet.
- trace (a queue's config "trace": a Mahimahi trace file, "trace_limit": bytes): a trace-driven
  drop-tail bottleneck in front of the delay (testbed/trace.py TraceQueue). Each packet's
  departure is computed when it arrives, from the opportunities still free (1500 bytes each,
  partial packets carried over as Mahimahi does, unused ones lost on an empty queue), and its
  release time is departure + delay: FIFO order, batch verdicts and the one-wakeup-per-release
  loop are unchanged, and there is no timer per opportunity. "Arrives" is the kernel's stamp
  of it, not our read (KernelStamps): a packet that came while we were asleep or off the CPU
  meets the queue as it was then ("trace_unstamped" counts those timed at their read, for
  want of a stamp). The queue's NFQUEUE copies the first TRACE_HEAD bytes of each packet (copy-packet mode with F_GSO: GSO packets stay whole,
  NFQA_CAP_LEN gives their length, the headers their segment count). A full queue drops the
  packet (NF_DROP; stats "trace_dropped"); "trace_departures", "trace_bytes" count what left or
  is scheduled to, and "trace_epoch" in the stats reply is the wall-clock time of the traces'
  time 0 (when the queues were bound).
"""

from __future__ import annotations

import ctypes
import heapq
import json
import math
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from testbed.packets import flip_payload_bit, tcp_payload
from testbed.trace import TraceQueue, ip_bytes, read_trace

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_NO_ENOBUFS = 5
SO_RCVBUFFORCE = 33
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLMSG_ERROR = 0x2
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_VERDICT_BATCH = 3
NFQNL_MSG_CONFIG = 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_TIMESTAMP = 4
NFQA_PAYLOAD = 10
NFQA_CAP_LEN = 13
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQNL_COPY_PACKET = 2
NFQA_CFG_F_GSO = 4
NF_DROP = 0
NF_ACCEPT = 1
SO_TIMESTAMP = 29  # <asm-generic/socket.h>; Python's socket module does not name it

MSG_PACKET = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET
EARLY_SLACK = 20e-6  # release packets due within this much of now
OVERSHOOT_MAX = 2e-3  # ignore wakeups later than this when learning the timer overshoot
MAX_DRAIN = 512  # packets pulled per loop turn before releases get a chance again

_NLMSG = struct.Struct("=IHHII")
_ATTR = struct.Struct("=HH")
_VERDICT = struct.Struct("=IHHIIBBHHHII")


def _walk(buf: bytes | bytearray | memoryview, n: int) -> tuple[int, int, int, int, float]:
    """(packet id, start, end, captured length, kernel stamp) of an NFQUEUE packet message of
    ``n`` bytes in ``buf``: the copied packet (from its IP header) is buf[start:end], empty
    when the queue copies metadata only; id -1 when the message has none, length -1 without
    NFQA_CAP_LEN (the copy is the whole packet); the stamp is NFQA_TIMESTAMP (wall-clock
    seconds, see KernelStamps), 0.0 without one."""
    (mlen,) = struct.unpack_from("=I", buf, 0)
    end = min(n, mlen)
    off, pid, start, stop, cap, stamp = 20, -1, 0, 0, -1, 0.0
    while off + 4 <= end:
        alen, atype = _ATTR.unpack_from(buf, off)
        if alen < 4:
            break
        atype &= 0x7FFF
        if atype == NFQA_PACKET_HDR:
            (pid,) = struct.unpack_from("!I", buf, off + 4)
        elif atype == NFQA_PAYLOAD:
            start, stop = off + 4, min(off + alen, end)
        elif atype == NFQA_CAP_LEN:
            (cap,) = struct.unpack_from("!I", buf, off + 4)
        elif atype == NFQA_TIMESTAMP and alen >= 20:
            sec, usec = struct.unpack_from("!QQ", buf, off + 4)
            stamp = sec + usec * 1e-6
        off += (alen + 3) & ~3
    return pid, start, stop, cap, stamp


def packet_span(buf: bytes | bytearray | memoryview, n: int) -> tuple[int, int, int]:
    """(packet id, start, end) of an NFQUEUE packet message (see _walk)."""
    pid, start, stop, _, _ = _walk(buf, n)
    return pid, start, stop


def packet_attrs(buf: bytes | bytearray | memoryview, n: int) -> tuple[int, bytes]:
    """The packet id and the packet (from its IP header) of an NFQUEUE packet message of ``n``
    bytes in ``buf``: (-1, b"") when it has none."""
    pid, start, stop = packet_span(buf, n)
    return pid, bytes(buf[start:stop])


DISTRIBUTIONS = ("uniform", "normal", "pareto", "paretonormal")
NEVER = 1 << 62  # a countdown that does not run out
# Pareto with shape 3 (netem's tables use the same shape): mean 1.5, variance 3/4.
PARETO_A = 3.0
PARETO_MEAN = PARETO_A / (PARETO_A - 1)
PARETO_SD = (PARETO_A / ((PARETO_A - 1) ** 2 * (PARETO_A - 2))) ** 0.5
# netem's paretonormal: a quarter normal, three quarters Pareto; rescaled to a unit sigma.
PN_SD = (0.25**2 + 0.75**2) ** 0.5


TRACE_HEAD = 64  # bytes of each packet a trace queue copies: IP and TCP headers, for GSO sizes


def packet_size(buf: bytes | bytearray | memoryview, n: int) -> tuple[int, float]:
    """The IP bytes of an NFQUEUE packet message of a queue that copies the packet's first
    TRACE_HEAD bytes: its length (NFQA_CAP_LEN when the copy was cut short, else the copy's
    own), a GSO super-packet counted as the segments it will be cut into (trace.ip_bytes);
    and the kernel's stamp of it (0.0 without one, see _walk)."""
    _, start, stop, cap, stamp = _walk(buf, n)
    head = bytes(buf[start:stop])
    return ip_bytes(cap if cap >= 0 else len(head), head), stamp


STAMP_AGE_MAX = 60.0  # seconds: a kernel stamp older than this (or from the future) is not
# an arrival time (a kernel that reported a sender's departure time, a clock stepped meanwhile)


@dataclass
class KernelStamps:
    """Arrival times of queued packets as the kernel saw them, on our monotonic clock.

    Why: a trace queue's schedule depends on when each packet arrived, and the time we read a
    packet is later than that by however long we were asleep or off the CPU (0.1 ms idle,
    milliseconds on a loaded machine). Timed at its read, a packet that came while the queue
    still held another, or while we were descheduled, looks like one meeting an empty queue,
    and the opportunities in between are lost: a burst's second packet one opportunity late,
    and everything behind it (what the trace-departure check of test_conditions.py saw in
    some runs on a loaded machine).

    NFQUEUE puts NFQA_TIMESTAMP in a packet's message (its receive stamp, or the time it was
    queued) only while the kernel stamps packets at all, which it does while some socket
    asks for receive timestamps (net_enable_timestamp): `hold()` opens one such socket for
    the process's life. Stamps are wall-clock microseconds; `arrival()` brings them onto the
    monotonic clock the schedule uses, never later than the read nor earlier than the
    queue's previous arrival (the kernel queues in arrival order), and falls back to the
    read time when a stamp is missing or implausible."""

    sock: socket.socket | None = None
    offset: float = 0.0  # wall clock - monotonic clock, seconds, taken at each loop turn

    def hold(self) -> None:
        if self.sock is None:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def refresh(self) -> None:
        """Take the clocks' offset again (a wall-clock step moves it)."""
        now = time.monotonic()
        self.offset = time.time() - now

    def arrival(self, stamp: float, read: float, previous: float) -> tuple[float, bool]:
        """The monotonic arrival time of a packet stamped `stamp` (0.0: none), read at `read`,
        `previous` being its queue's previous arrival; and whether the stamp gave it (False:
        the read did)."""
        t = stamp - self.offset
        stamped = stamp > 0.0 and read - STAMP_AGE_MAX <= t <= read + 0.001
        if not stamped or t > read:
            t = read
        return (t if t > previous else previous), stamped


DISTRIBUTIONS = ("uniform", "normal", "pareto", "paretonormal")
NEVER = 1 << 62  # a countdown that does not run out
# Pareto with shape 3 (netem's tables use the same shape): mean 1.5, variance 3/4.
PARETO_A = 3.0
PARETO_MEAN = PARETO_A / (PARETO_A - 1)
PARETO_SD = (PARETO_A / ((PARETO_A - 1) ** 2 * (PARETO_A - 2))) ** 0.5
# netem's paretonormal: a quarter normal, three quarters Pareto; rescaled to a unit sigma.
PN_SD = (0.25**2 + 0.75**2) ** 0.5


def geometric(rng: random.Random, p: float) -> int:
    """Trials up to and including the first success, each with probability p (>= 1).

    Why: a per-packet chance drawn per packet costs a random number per packet; the gap to the
    next event, drawn once per event, costs one per event (1% reordering: one draw per 100
    packets) and is the same process (Bernoulli trials)."""
    if p >= 1.0:
        return 1
    if p <= 0.0:
        return NEVER
    return 1 + int(math.log(1.0 - rng.random()) / math.log(1.0 - p))


@dataclass
class GilbertElliott:
    """netem's gemodel, probabilities in [0, 1]: p good->bad, r bad->good, h = chance a packet
    survives in the bad state, k = in the good state. As in netem, each packet first moves
    the chain, then is lost or not in the state it is now in. Drawn as countdowns: packets
    left in this state (geometric with the chance of leaving it) and packets to the next loss
    in it (geometric with the state's loss chance; memoryless, so redrawn on every entry)."""

    p: float
    r: float
    h: float = 0.0
    k: float = 1.0
    bad: bool = False
    left: int = 0  # packets still to spend in this state, this one included
    to_loss: int = 0
    losses: int = 0
    bursts: int = 0  # bad states entered

    def start(self, rng: random.Random) -> None:
        self.bad = False
        self.left = geometric(rng, self.p) - 1
        self.to_loss = geometric(rng, 1.0 - self.k)

    def lost(self, rng: random.Random) -> bool:
        self.left -= 1
        if self.left < 0:
            self.bad = not self.bad
            self.bursts += self.bad
            self.left = geometric(rng, self.r if self.bad else self.p) - 1
            self.to_loss = geometric(rng, 1.0 - (self.h if self.bad else self.k))
        self.to_loss -= 1
        if self.to_loss > 0:
            return False
        self.to_loss = geometric(rng, 1.0 - (self.h if self.bad else self.k))
        self.losses += 1
        return True


@dataclass
class Queue:
    """One NFQUEUE: a link direction's conditions and the packets it holds.

    `held` is a FIFO of (release_time, packet_id) with non-decreasing release times (clean
    jitter: one batch verdict releases a run of them), or, when jitter may reorder, a heap
    ordered by release time (verdicts one by one, all sent in one message)."""

    num: int
    delay: float = 0.0  # seconds
    jitter: float = 0.0  # seconds
    dist: str = "uniform"
    jitter_reorders: bool = False
    reorder: float = 0.0  # chance that a packet (outside the gap) is sent at once
    gap: int = 1  # netem's gap: after a reordered packet, gap - 1 packets are delayed
    ge: GilbertElliott | None = None
    rng: random.Random = field(default_factory=random.Random)
    held: deque | list = field(default_factory=deque)
    last_release: float = 0.0
    to_reorder: int = NEVER  # packets until the next one sent at once, this one included
    corrupt: float = 0.0  # chance that a segment with TCP payload gets one bit flipped
    corrupt_fix: bool = False  # recompute the TCP checksum of a corrupted segment
    to_corrupt: int = NEVER  # segments with payload until the next corrupted one, this one in
    copying: bool = False  # the kernel hands us whole packets, one segment each (corruption)
    # Held entries with a negative id are packets with a verdict of their own: key ->
    # (queue, packet id, the packet to hand back or None): a duplicated original (its copy
    # queue's) or a corrupted segment (its bytes changed).
    own: dict[int, tuple[int, int, bytes | None]] = field(default_factory=dict)
    own_next: int = 0
    trace: TraceQueue | None = None  # a trace-driven bottleneck in front of the delay
    trace_arrival: float = 0.0  # the arrival time (monotonic) of its last packet
    trace_unstamped: int = 0  # its packets timed at their read, for want of a kernel stamp
    packets: int = 0
    verdicts: int = 0
    reordered: int = 0
    late_sum: float = 0.0  # sum over verdicts of (verdict time - release time of its oldest)
    corrupted: int = 0

    def configure(
        self,
        delay_ms: float | None = None,
        jitter_ms: float | None = None,
        jitter_dist: str | None = None,
        *,
        jitter_reorders: bool | None = None,
        reorder_pct: float | None = None,
        reorder_gap: int | None = None,
        loss_model: dict | None | bool = False,
        corrupt_pct: float | None = None,
        corrupt_fix_checksum: bool | None = None,
        trace_limit: int | None = None,
    ) -> None:
        """Change what is given (None: keep); loss_model None removes it, False keeps it.
        The trace itself is fixed for the process's life; its queue's byte limit is not."""
        if trace_limit is not None and self.trace is not None:
            self.trace.limit = int(trace_limit)
        if delay_ms is not None:
            self.delay = float(delay_ms) / 1000.0
        if jitter_ms is not None:
            self.jitter = float(jitter_ms) / 1000.0
        if jitter_dist is not None:
            if jitter_dist not in DISTRIBUTIONS:
                raise ValueError(f"unknown jitter_dist {jitter_dist!r}")
            self.dist = jitter_dist
        if jitter_reorders is not None and bool(jitter_reorders) != self.jitter_reorders:
            self.jitter_reorders = bool(jitter_reorders)
            items = sorted(self.held)
            if self.jitter_reorders:
                self.held = items  # sorted: already a heap
            else:  # back to FIFO order: nothing leaves before what is ahead of it
                self.held = deque(items)
        if reorder_pct is not None or reorder_gap is not None:
            if reorder_pct is not None:
                self.reorder = float(reorder_pct) / 100.0
            if reorder_gap is not None:
                self.gap = max(1, int(reorder_gap))
            self.to_reorder = self.next_reorder() if self.reorder > 0 else NEVER
        if loss_model is not False:
            if loss_model:
                self.ge = GilbertElliott(
                    **{key: float(loss_model[key]) / 100.0 for key in ("p", "r", "h", "k")}
                )
                self.ge.start(self.rng)
            else:
                self.ge = None
        if corrupt_pct is not None:
            self.corrupt = float(corrupt_pct) / 100.0
            self.to_corrupt = geometric(self.rng, self.corrupt)
        if corrupt_fix_checksum is not None:
            self.corrupt_fix = bool(corrupt_fix_checksum)

    def hold_own(self, now: float, queue: int, packet_id: int, packet: bytes | None) -> int:
        """Hold a packet that needs a verdict of its own (see `own`); returns its key, the
        negative id its held entry carries."""
        key = -1 - self.own_next
        self.own_next += 1
        self.own[key] = (queue, packet_id, packet)
        entry = (self.release_time(now), key)
        if self.jitter_reorders:
            heapq.heappush(self.held, entry)
        else:
            self.held.append(entry)
        return key

    def corrupted_copy(self, pkt: bytes | bytearray | memoryview) -> bytes | None:
        """The segment with one bit of its TCP payload flipped if its turn has come, else None.
        Only segments that carry TCP payload count (and only they are ever changed): a
        corrupted header would be a different fault (a wrong port or sequence number is
        another connection's segment, not a damaged one), and segments without payload, SYNs
        and pure ACKs, have no payload bit to flip."""
        span = tcp_payload(pkt)
        if span is None or span[2] == 0:
            return None
        self.to_corrupt -= 1
        if self.to_corrupt > 0:
            return None
        self.to_corrupt = geometric(self.rng, self.corrupt)
        out = bytearray(pkt)
        flip_payload_bit(out, self.rng.randrange(8 * span[2]), self.corrupt_fix)
        self.corrupted += 1
        return bytes(out)

    def next_reorder(self) -> int:
        """Packets up to the next one sent ahead: netem delays gap - 1 after each, then sends
        each at once with the reorder chance."""
        return self.gap - 1 + geometric(self.rng, self.reorder)

    def jitter_sample(self) -> float:
        """One deviation from the delay, seconds: uniform in [-jitter, +jitter] (netem without
        a table), else mean 0 and standard deviation `jitter` (normal, Pareto shape 3 shifted
        to mean 0, or netem's paretonormal mix), all scaled to that sigma."""
        j, dist, rng = self.jitter, self.dist, self.rng
        if dist == "uniform":
            return rng.uniform(-j, j)
        if dist == "normal":
            return rng.gauss(0.0, j)
        par = ((1.0 - rng.random()) ** (-1.0 / PARETO_A) - PARETO_MEAN) / PARETO_SD
        if dist == "pareto":
            return j * par
        return j * (0.25 * rng.gauss(0.0, 1.0) + 0.75 * par) / PN_SD

    def release_time(self, now: float) -> float:
        """When a packet that arrived now (or left the trace queue now) leaves. Clean jitter:
        never before the previous one (no reordering); with jitter_reorders each packet keeps
        its own draw."""
        d = self.delay
        if self.jitter:
            d += self.jitter_sample()
            if d < 0.0:
                d = 0.0
        t = now + d
        if self.jitter_reorders:
            return t
        if t < self.last_release:
            t = self.last_release
        self.last_release = t
        return t


class NfQueueSocket:
    """A netlink socket bound to several NFQUEUEs: in COPY_META mode with F_GSO (the delay
    emulator: verdicts only), or copying whole packets, GSO packets cut into segments and
    checksums completed by the kernel first (testbed/mangle.py: verdicts with a new packet)."""

    def __init__(self, rcvbuf: int = 32 << 20, bufsize: int = 4096):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        # A full socket buffer is counted by the kernel; we do not want ENOBUFS errors on recv.
        self.sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
        self.seq = 0
        self.buf = bytearray(bufsize)
        self.view = memoryview(self.buf)

    def fileno(self) -> int:
        return self.sock.fileno()

    def _config(self, queue: int, attrs: list[tuple[int, bytes]], ack: bool = True) -> None:
        """Send one NFQNL_MSG_CONFIG; with ack, wait for the kernel's answer and raise on a
        netlink error. Without: for a queue that may already have packets on this socket
        (waiting for the answer would swallow them, and a packet read and dropped here never
        gets a verdict); an error then arrives later among the packets (see Emulator.drain)."""
        body = b""
        for atype, payload in attrs:
            alen = 4 + len(payload)
            body += _ATTR.pack(alen, atype) + payload + b"\0" * ((-alen) % 4)
        self.seq += 1
        msg_type = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_CONFIG
        flags = NLM_F_REQUEST | (NLM_F_ACK if ack else 0)
        hdr = _NLMSG.pack(16 + 4 + len(body), msg_type, flags, self.seq, 0)
        self.sock.send(
            hdr + struct.pack("=BB", socket.AF_UNSPEC, 0) + struct.pack("!H", queue) + body
        )
        if not ack:
            return
        while True:
            data = self.sock.recv(65536)
            _, mtype, _, seq, _ = _NLMSG.unpack_from(data, 0)
            if mtype == NLMSG_ERROR and seq == self.seq:
                (err,) = struct.unpack_from("=i", data, 16)
                if err:
                    raise OSError(-err, f"NFQUEUE config of queue {queue}: {os.strerror(-err)}")
                return

    def bind(self, queue: int, maxlen: int, copy_packet: bool = False, head: int = 0) -> None:
        """copy_packet: userspace gets every packet whole (up to 64 KB), one segment at a time
        (no F_GSO: the kernel segments GSO packets and completes partial checksums before
        queueing them), so that it can hand back a changed packet with verdict().
        head: GSO packets stay whole, and userspace gets their first `head` bytes and their
        length (NFQA_CAP_LEN; metadata alone carries no length): a trace queue's sizes."""
        self._config(queue, [(NFQA_CFG_CMD, struct.pack("!BBH", NFQNL_CFG_CMD_BIND, 0, 0))])
        self.set_mode(queue, maxlen, copy_packet, head=head)

    def set_mode(
        self, queue: int, maxlen: int, copy_packet: bool, ack: bool = True, head: int = 0
    ) -> None:
        """Metadata only (or the first `head` bytes) with GSO packets whole, or whole packets
        one segment at a time (see bind); a bound queue can switch at any time (ack=False then:
        see _config)."""
        mode = NFQNL_COPY_PACKET if copy_packet or head else NFQNL_COPY_META
        rng = 0xFFFF if copy_packet else head
        self._config(
            queue,
            [
                (NFQA_CFG_PARAMS, struct.pack("!IB", rng, mode)),
                (NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", maxlen)),
                (NFQA_CFG_MASK, struct.pack("!I", NFQA_CFG_F_GSO)),
                (NFQA_CFG_FLAGS, struct.pack("!I", 0 if copy_packet else NFQA_CFG_F_GSO)),
            ],
            ack,
        )

    def verdict(
        self, queue: int, packet_id: int, verdict: int = NF_ACCEPT, payload: bytes | None = None
    ) -> None:
        """NFQNL_MSG_VERDICT for one packet; with payload, the packet leaves as these bytes
        (the kernel takes them as they are: every checksum is the caller's)."""
        body = _ATTR.pack(12, NFQA_VERDICT_HDR) + struct.pack("!II", verdict, packet_id)
        if payload is not None:
            alen = 4 + len(payload)
            body += _ATTR.pack(alen, NFQA_PAYLOAD) + payload + b"\0" * ((-alen) % 4)
        msg_type = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT
        hdr = _NLMSG.pack(20 + len(body), msg_type, NLM_F_REQUEST, 0, 0)
        self.sock.send(hdr + struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + body)

    def read_packet(self) -> tuple[int, int, bytes] | None:
        """One queued packet (non-blocking): (queue, packet id, the packet from its IP header),
        None when nothing is waiting; messages that are not packets give (queue, -1, b"")."""
        try:
            n = self.sock.recv_into(self.buf, 0, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
        buf = self.buf
        if n < 28:
            return (-1, -1, b"")
        mtype, queue_be = struct.unpack_from("=4xH12xH", buf, 0)
        if mtype != MSG_PACKET:
            return (-1, -1, b"")
        queue = socket.ntohs(queue_be)
        pid, payload = packet_attrs(buf, n)
        return (queue, pid, payload)

    def accept_upto(self, queue: int, packet_id: int) -> None:
        """NFQNL_MSG_VERDICT_BATCH: accept every packet of the queue with an id <= packet_id."""
        msg_type = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT_BATCH
        self.sock.send(
            _VERDICT.pack(
                32,
                msg_type,
                NLM_F_REQUEST,
                0,
                0,
                socket.AF_UNSPEC,
                0,
                socket.htons(queue),
                12,
                NFQA_VERDICT_HDR,
                socket.htonl(NF_ACCEPT),
                socket.htonl(packet_id),
            )
        )


def kernel_drops() -> dict[int, int]:
    """Packets the kernel dropped per queue (queue full or socket buffer full), from this
    namespace's /proc/net/netfilter/nfnetlink_queue: fields queue, portid, waiting, copy mode,
    copy range, queue_dropped, user_dropped, id sequence, 1."""
    drops = {}
    try:
        with open("/proc/net/netfilter/nfnetlink_queue") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 7:
                    drops[int(fields[0])] = int(fields[5]) + int(fields[6])
    except OSError:
        pass
    return drops


class QueueWorker:
    """What the NFQUEUE processes (this one, testbed/mangle.py) share besides the socket: JSON
    command lines on a non-blocking stdin, each answered with one JSON line on stdout; EOF or
    {"op": "stop"} sets `stopping`. A subclass has `queues` and bind(), run(), release_all(),
    stats() and handle_command(line); serve() runs it."""

    queues: dict

    def __init__(self) -> None:
        self.stdin_buf = b""
        self.stopping = False

    def reply(self, obj: dict) -> None:
        os.write(1, (json.dumps(obj) + "\n").encode())

    def read_stdin(self) -> None:
        data = os.read(0, 65536)
        if not data:
            self.stopping = True
            return
        self.stdin_buf += data
        while b"\n" in self.stdin_buf:
            line, self.stdin_buf = self.stdin_buf.split(b"\n", 1)
            if line.strip():
                self.handle_command(line)


@dataclass
class CopyQueue:
    """A copy-packet queue for duplication: the kernel marks a share of a direction's packets
    (nft numgen in testbed/emulation.py) and queues them here instead of to the delay queue.
    The copy leaves at once through a raw socket with `mark` (so that the router's OUTPUT
    rules put it through the delay queues its original meets). The original is held here, but
    in its delay queue's FIFO (or heap), in arrival order among that queue's packets, and gets
    its own verdict on this queue when due: so duplication reorders nothing by itself (handing
    it back to the delay queue would put it behind the packets that came meanwhile)."""

    num: int
    of: int  # the delay queue whose direction this duplicates
    mark: int
    copies: int = 0


QUEUE_KEYS = (
    "delay_ms",
    "jitter_ms",
    "jitter_dist",
    "jitter_reorders",
    "reorder_pct",
    "reorder_gap",
    "corrupt_pct",
    "corrupt_fix_checksum",
    "trace_limit",
)
VBUF_MSGS = 256  # verdicts gathered before one send


class Emulator(QueueWorker):
    """The event loop: pull packets, stamp their release times, accept what is due.

    Verdicts are gathered in one buffer and sent as one netlink write per loop turn (the kernel
    handles every message of a write in order): the batch verdicts of in-order releases, and the
    one-by-one verdicts of what reordering, Gilbert-Elliott loss and reordering jitter need."""

    def __init__(self, config: dict):
        super().__init__()
        seed = config.get("seed")
        self.maxlen = int(config.get("maxlen", 100000))
        self.queues: dict[int, Queue] = {}
        for key, qc in config.get("queues", {}).items():
            num = int(key)
            q = Queue(num=num, rng=random.Random(None if seed is None else f"{seed}/{num}"))
            q.configure(
                qc.get("delay_ms", 0.0),
                qc.get("jitter_ms", 0.0),
                qc.get("jitter_dist", "uniform"),
                jitter_reorders=qc.get("jitter_reorders", False),
                reorder_pct=qc.get("reorder_pct", 0.0),
                reorder_gap=qc.get("reorder_gap", 1),
                loss_model=qc.get("loss_model"),
                corrupt_pct=qc.get("corrupt_pct", 0.0),
                corrupt_fix_checksum=qc.get("corrupt_fix_checksum", False),
            )
            if qc.get("trace"):  # checked when the topology was read; read again here
                q.trace = TraceQueue(
                    read_trace(qc["trace"]).times, start=0.0, limit=int(qc["trace_limit"])
                )
            self.queues[num] = q
        self.copies: dict[int, CopyQueue] = {
            int(key): CopyQueue(int(key), int(c["of"]), int(c["mark"]))
            for key, c in config.get("copies", {}).items()
        }
        self.nfq = NfQueueSocket(bufsize=1 << 17)
        self.raw: dict[tuple[int, int], socket.socket] = {}  # (family, mark) -> raw IP socket
        self.vbuf = bytearray(_VERDICT.size * VBUF_MSGS)
        self.vlen = 0
        self.overshoot = 50e-6  # learnt timer overshoot, seconds
        self.trace_epoch: float | None = None  # wall-clock time of the traces' time 0
        self.stamps = KernelStamps()  # trace queues time packets by their kernel arrival

    def bind(self) -> None:
        for num, q in self.queues.items():
            q.copying = q.corrupt > 0
            self.nfq.bind(
                num, self.maxlen, copy_packet=q.copying, head=TRACE_HEAD if q.trace else 0
            )
        for num in self.copies:
            self.nfq.bind(num, self.maxlen, copy_packet=True)
        # every trace of this router starts now, together (the wall-clock time is in stats()
        # so that a capture's timestamps can be set against the trace)
        start, self.trace_epoch = time.monotonic(), time.time()
        for q in self.queues.values():
            if q.trace is not None:
                q.trace.start = q.trace_arrival = start
                self.stamps.hold()
        self.stamps.refresh()

    def handle_command(self, line: bytes) -> None:
        try:
            cmd = json.loads(line)
            op = cmd.get("op")
            if op == "update":
                q = self.queues[int(cmd["queue"])]
                q.configure(
                    cmd.get("delay_ms"),
                    cmd.get("jitter_ms"),
                    cmd.get("jitter_dist"),
                    jitter_reorders=cmd.get("jitter_reorders"),
                    reorder_pct=cmd.get("reorder_pct"),
                    reorder_gap=cmd.get("reorder_gap"),
                    loss_model=cmd["loss_model"] if "loss_model" in cmd else False,
                    corrupt_pct=cmd.get("corrupt_pct"),
                    corrupt_fix_checksum=cmd.get("corrupt_fix_checksum"),
                    trace_limit=cmd.get("trace_limit"),
                )
                if (q.corrupt > 0) != q.copying:  # corruption needs the packets' bytes
                    q.copying = q.corrupt > 0
                    head = TRACE_HEAD if q.trace else 0
                    self.nfq.set_mode(q.num, self.maxlen, q.copying, ack=False, head=head)
                self.reply({"ok": True})
            elif op == "stats":
                self.reply(
                    {
                        "ok": True,
                        "stats": self.stats(),
                        "overshoot_us": round(self.overshoot * 1e6, 1),
                        "trace_epoch": self.trace_epoch,
                    }
                )
            elif op == "stop":
                self.stopping = True
                self.reply({"ok": True})
            else:
                self.reply({"ok": False, "error": f"unknown op {op!r}"})
        except (ValueError, KeyError, TypeError) as exc:
            self.reply({"ok": False, "error": repr(exc)})

    def stats(self) -> dict:
        dropped = kernel_drops()
        copies = {q: 0 for q in self.queues}
        for c in self.copies.values():
            copies[c.of] = copies.get(c.of, 0) + c.copies
        return {
            str(q.num): {
                "packets": q.packets,
                "held": len(q.held),
                "verdicts": q.verdicts,
                "mean_late_us": round(q.late_sum / max(1, q.verdicts) * 1e6, 1),
                "kernel_dropped": dropped.get(q.num, 0),
                "delay_ms": q.delay * 1000,
                "jitter_ms": q.jitter * 1000,
                "reordered": q.reordered,
                "ge_lost": q.ge.losses if q.ge else 0,
                "ge_bursts": q.ge.bursts if q.ge else 0,
                "duplicated": copies.get(q.num, 0),
                "corrupted": q.corrupted,
                **(
                    {
                        "trace_departures": q.trace.departures,
                        "trace_dropped": q.trace.dropped,
                        "trace_bytes": q.trace.departed_bytes,
                        "trace_backlog_bytes": q.trace.settle(time.monotonic()),
                        "trace_unstamped": q.trace_unstamped,
                    }
                    if q.trace is not None
                    else {}
                ),
            }
            for q in self.queues.values()
        }

    # -- verdicts ------------------------------------------------------------------------------

    def _verdict(self, msg: int, queue: int, packet_id: int, verdict: int) -> None:
        """Add one verdict (msg: NFQNL_MSG_VERDICT, or _BATCH for every id up to packet_id)."""
        _VERDICT.pack_into(
            self.vbuf,
            self.vlen,
            32,
            (NFNL_SUBSYS_QUEUE << 8) | msg,
            NLM_F_REQUEST,
            0,
            0,
            socket.AF_UNSPEC,
            0,
            socket.htons(queue),
            12,
            NFQA_VERDICT_HDR,
            socket.htonl(verdict),
            socket.htonl(packet_id),
        )
        self.vlen += 32
        if self.vlen == len(self.vbuf):
            self.flush()

    def flush(self) -> None:
        if self.vlen:
            self.nfq.sock.send(memoryview(self.vbuf)[: self.vlen])
            self.vlen = 0

    def _own_verdict(self, queue: int, packet_id: int, packet: bytes | None) -> None:
        """Accept one packet, as it came or (packet given) as these bytes; a changed packet
        goes in a message of its own, after everything gathered so far (order kept)."""
        if packet is None:
            self._verdict(NFQNL_MSG_VERDICT, queue, packet_id, NF_ACCEPT)
        else:
            self.flush()
            self.nfq.verdict(queue, packet_id, NF_ACCEPT, packet)

    def _release_own(self, q: Queue, key: int) -> None:
        self._own_verdict(*q.own.pop(key))

    def trace_admit(self, q: Queue, stamp: float, size: int) -> float | None:
        """A packet of `size` IP bytes, stamped `stamp` by the kernel (0.0: none), into q's
        trace queue as of its arrival: its departure (monotonic), None if the queue is full."""
        assert q.trace is not None
        at, stamped = self.stamps.arrival(stamp, time.monotonic(), q.trace_arrival)
        q.trace_arrival = at
        q.trace_unstamped += not stamped
        return q.trace.admit(at, size)

    def hold_or_send(
        self,
        q: Queue,
        queue: int,
        packet_id: int,
        packet: bytes | None,
        size: int,
        stamp: float = 0.0,
    ) -> None:
        """What happens to a packet that needs a verdict of its own once it survived loss:
        sent ahead now if reordering says so, else held for its delay (behind the trace's
        bottleneck, for `size` IP bytes as of its kernel `stamp`, on a trace-driven link)."""
        q.to_reorder -= 1
        if q.to_reorder <= 0:
            q.to_reorder = q.next_reorder()
            q.reordered += 1
            self._own_verdict(queue, packet_id, packet)
            return
        now = time.monotonic()
        if q.trace is not None:  # the trace's bottleneck first: the delay runs from the departure
            left = self.trace_admit(q, stamp, size)
            if left is None:  # the trace queue is full: drop-tail
                self._verdict(NFQNL_MSG_VERDICT, queue, packet_id, NF_DROP)
                return
            now = left
        q.hold_own(now, queue, packet_id, packet)

    def duplicate(self, c: CopyQueue, n: int) -> None:
        """A packet of a copy queue (in self.nfq.buf): send its copy now, then hold the
        original like any packet of its direction (flagged as this queue's). The copy meets
        this direction's queue itself (and its chance of corruption); the original gets its
        chance here, as netem corrupts the original and lets the copy take its own chances."""
        pid, start, stop, _, stamp = _walk(self.nfq.buf, n)
        if pid < 0:
            return
        payload = bytes(self.nfq.buf[start:stop])
        q = self.queues.get(c.of)
        if q is None:  # nothing to hold it for: let it go
            self._verdict(NFQNL_MSG_VERDICT, c.num, pid, NF_ACCEPT)
            return
        if len(payload) >= 20:
            self._send_copy(c, payload)
        q.packets += 1
        if q.ge is not None and q.ge.lost(q.rng):
            self._verdict(NFQNL_MSG_VERDICT, c.num, pid, NF_DROP)
            return
        changed = q.corrupted_copy(payload) if q.corrupt else None
        self.hold_or_send(q, c.num, pid, changed, len(payload), stamp)

    def _send_copy(self, c: CopyQueue, payload: bytes) -> None:
        v6 = payload[0] >> 4 == 6
        key = (6 if v6 else 4, c.mark)
        raw = self.raw.get(key)
        if raw is None:
            raw = socket.socket(
                socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW
            )
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, c.mark)
            self.raw[key] = raw
        if v6:
            dst = (socket.inet_ntop(socket.AF_INET6, payload[24:40]), 0, 0, 0)
        else:
            dst = (socket.inet_ntop(socket.AF_INET, payload[16:20]), 0)
        try:
            raw.sendto(payload, dst)
            c.copies += 1
        except OSError:
            pass  # no route for the copy: as if it had not been made

    # -- the loop ------------------------------------------------------------------------------

    def drain(self) -> None:
        """Pull queued packets (non-blocking) and stamp each with its release time; what is
        lost (Gilbert-Elliott) or sent ahead (reordering) gets its verdict at once."""
        recv_into = self.nfq.sock.recv_into
        buf = self.nfq.buf
        queues = self.queues
        unpack_from = struct.unpack_from
        now_fn = time.monotonic
        heappush = heapq.heappush
        if self.stamps.sock is not None:
            self.stamps.refresh()
        for _ in range(MAX_DRAIN):
            try:
                n = recv_into(buf, 0, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            if n < 28:
                continue
            mtype, queue_be = unpack_from("=4xH12xH", buf, 0)
            if mtype != MSG_PACKET:
                if mtype == NLMSG_ERROR:  # a config sent without waiting (see set_mode)
                    (err,) = unpack_from("=i", buf, 16)
                    if err:
                        print(f"netlink error: {os.strerror(-err)}", file=sys.stderr, flush=True)
                continue
            num = socket.ntohs(queue_be)
            q = queues.get(num)
            if q is None:
                c = self.copies.get(num)
                if c is not None:
                    self.duplicate(c, n)
                continue
            alen, atype = unpack_from("=HH", buf, 20)
            if atype != NFQA_PACKET_HDR:  # the kernel puts the packet header first
                continue
            (pid,) = unpack_from("!I", buf, 24)
            q.packets += 1
            if q.ge is not None and q.ge.lost(q.rng):
                self._verdict(NFQNL_MSG_VERDICT, num, pid, NF_DROP)
                continue
            if q.corrupt:  # as in netem: after loss, before the delay (and reordering)
                _, start, stop, _, stamp = _walk(buf, n)
                changed = q.corrupted_copy(memoryview(buf)[start:stop])
                if changed is not None:
                    self.hold_or_send(q, num, pid, changed, len(changed), stamp)
                    continue
            q.to_reorder -= 1
            if q.to_reorder <= 0:  # netem's reordering: this one leaves now, ahead of the rest
                q.to_reorder = q.next_reorder()
                q.reordered += 1
                self._verdict(NFQNL_MSG_VERDICT, num, pid, NF_ACCEPT)
                continue
            if q.trace is None:
                now = now_fn()
            else:  # the trace's bottleneck first: the delay runs from the departure
                size, stamp = packet_size(buf, n)
                now = self.trace_admit(q, stamp, size)
                if now is None:  # the trace queue is full: drop-tail
                    self._verdict(NFQNL_MSG_VERDICT, num, pid, NF_DROP)
                    continue
            if q.jitter_reorders:
                heappush(q.held, (q.release_time(now), pid))
            else:
                q.held.append((q.release_time(now), pid))
        self.flush()

    def release(self, now: float) -> float | None:
        """Accept every due packet (one batch verdict per in-order queue); return the next
        release time."""
        nxt = None
        heappop = heapq.heappop
        for q in self.queues.values():
            held = q.held
            if not held:
                continue
            if held[0][0] <= now:
                q.late_sum += now - held[0][0]
                q.verdicts += 1
                if q.jitter_reorders:
                    while held and held[0][0] <= now:
                        pid = heappop(held)[1]
                        if pid < 0:
                            self._release_own(q, pid)
                        else:
                            self._verdict(NFQNL_MSG_VERDICT, q.num, pid, NF_ACCEPT)
                else:
                    # a batch verdict for this queue's run (ids only grow along the FIFO),
                    # one verdict each for the packets with their own (duplicated originals
                    # held in the copy queue, corrupted segments)
                    last = -1
                    while held and held[0][0] <= now:
                        pid = held.popleft()[1]
                        if pid < 0:  # what came before it leaves before it
                            if last >= 0:
                                self._verdict(NFQNL_MSG_VERDICT_BATCH, q.num, last, NF_ACCEPT)
                                last = -1
                            self._release_own(q, pid)
                        else:
                            last = pid
                    if last >= 0:
                        self._verdict(NFQNL_MSG_VERDICT_BATCH, q.num, last, NF_ACCEPT)
            if held and (nxt is None or held[0][0] < nxt):
                nxt = held[0][0]
        self.flush()
        return nxt

    def release_all(self) -> None:
        for q in self.queues.values():
            if q.held:
                for _, pid in sorted(q.held):
                    if pid < 0:
                        self._release_own(q, pid)
                    else:
                        self._verdict(NFQNL_MSG_VERDICT, q.num, pid, NF_ACCEPT)
                q.held.clear()
        self.flush()

    def run(self) -> None:
        """Sleep until a packet, a command or the next release. The kernel wakes us ~100 us
        after the timeout asked for (measured here), so we ask early by a running estimate of
        that overshoot (EWMA of timeout-driven wakeups), and release what is due within
        EARLY_SLACK of now instead of spinning on a few microseconds."""
        fds = [self.nfq.sock.fileno(), 0]
        nfq_fd = fds[0]
        nxt = None
        monotonic = time.monotonic
        while not self.stopping:
            if nxt is None:
                timeout = wake_at = None
            else:
                wake_at = nxt - self.overshoot
                timeout = max(0.0, wake_at - monotonic())
            readable, _, _ = select.select(fds, [], [], timeout)
            if not readable and timeout:
                late = monotonic() - wake_at
                if 0.0 <= late < OVERSHOOT_MAX:
                    self.overshoot += (late - self.overshoot) * 0.1
            for fd in readable:
                if fd == nfq_fd:
                    self.drain()
                else:
                    self.read_stdin()
            nxt = self.release(monotonic() + EARLY_SLACK)
        self.release_all()


class _Stop(Exception):
    pass


def _on_signal(signum, frame):
    raise _Stop()


def _set_timer_slack(ns: int) -> None:
    """Tighter wakeups than the default 50 us slack: the delay is what we emulate."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(29, ctypes.c_ulong(ns), 0, 0, 0)  # PR_SET_TIMERSLACK
    except OSError:
        pass


def serve(make: Callable[[dict], QueueWorker], argv: list[str] | None = None) -> int:
    """A queue process's life: its config (JSON) from argv or stdin's first line, queues bound,
    {"ready": ...} on stdout, run() until told to stop; on SIGTERM or SIGINT it releases what
    it holds, and its last stats go to stderr whatever ended it."""
    argv = sys.argv[1:] if argv is None else argv
    config = json.loads(argv[0] if argv else sys.stdin.readline())
    worker = make(config)
    worker.bind()
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    os.set_blocking(0, False)
    worker.reply({"ready": True, "pid": os.getpid(), "queues": sorted(worker.queues)})
    try:
        worker.run()
    except _Stop:
        worker.release_all()
    finally:
        print(json.dumps({"exit_stats": worker.stats()}), file=sys.stderr, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    _set_timer_slack(1000)
    return serve(Emulator, argv)


if __name__ == "__main__":
    sys.exit(main())
