"""The middlebox process: rewrites the TCP segments a router forwards, through NFQUEUE.

A link's `middlebox` (testbed/topology.py MIDDLEBOXES) is carried out on the link's router end
(testbed/middlebox.py sets up the queue rules); everything but `nat` (an nft rule) needs a
program that changes packets, which this is. One process per router serves the queues of all
its middlebox ports, two per port (what arrives on the port's interface, what leaves by it):

    python -m testbed.mangle '{"seed": 1, "queues": {"100": {"kind": "split", "port": 0}}}'

Like testbed/linkem.py (whose raw-netlink NFQUEUE socket it uses, in copy-packet mode, and whose
process life, serve(), it shares) it prints {"ready": true, ...} once its queues are bound,
answers {"op": "stats"} and {"op": "stop"} on stdin with one JSON line each, and ends on EOF,
SIGTERM or SIGINT, printing its counters on stderr. A packet it fails to understand goes on unchanged (counted as "errors"), never lost.

What each kind does (IPv4 TCP only; the testbed has no IPv6):

- strip-mptcp / strip-mptcp-syn / strip-mptcp-after-syn: every TCP option of kind 30 becomes
  NOPs (length kept), on every segment, on SYNs only, or on all but SYNs; TCP checksum
  recomputed.
- seq-rewrite: per flow, each direction's sequence numbers are shifted by a random 32-bit offset;
  the other direction's ACK number and SACK blocks are shifted back, so both ends stay
  consistent (what some firewalls do to randomise ISNs). MPTCP's mappings use relative
  subflow sequence numbers, so they survive it.
- payload-rewrite: once per flow and direction, after `after_bytes` of payload, one byte in the
  middle of a data segment is changed and the TCP checksum fixed up: TCP accepts the segment,
  only an MPTCP DSS checksum can notice.
- coalesce: SYNs' MSS option is clamped to `mss_clamp` (so that two segments fit one MTU), and
  two consecutive in-order segments of a flow (flags ACK/PSH only) are merged into one: the
  first is held up to `hold_ms`; if the next one continues it, the first is dropped and the
  second leaves carrying both payloads under the first one's header and options (its ACK and
  window taken from the second), as a naive LRO box would.
- split: every data segment with more than 64 bytes of payload leaves as two: the first half is
  the queued packet, shortened; the second half (same options, sequence number advanced, FIN
  and PSH kept for it) is sent right after it through a raw socket from the router, as TSO
  would cut it.
"""

from __future__ import annotations

import json
import random
import select
import socket
import struct
import sys
import time
from dataclasses import dataclass, field

from testbed.linkem import NF_ACCEPT, NF_DROP, NfQueueSocket, QueueWorker, serve
from testbed.packets import csum, set_tcp_checksum

FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
KIND_MPTCP, KIND_MSS, KIND_SACK = 30, 2, 5
MTU = 1500
SPLIT_MIN = 64
MAX_DRAIN = 256
KINDS = (
    "strip-mptcp",
    "strip-mptcp-syn",
    "strip-mptcp-after-syn",
    "seq-rewrite",
    "payload-rewrite",
    "coalesce",
    "split",
)
_LITTLE = sys.byteorder == "little"


def fix_checksums(pkt: bytearray) -> None:
    """IP header and TCP checksums of an IPv4 TCP packet, its total length set from its size."""
    ihl = (pkt[0] & 0x0F) * 4
    struct.pack_into("!H", pkt, 2, len(pkt))
    pkt[10:12] = b"\0\0"
    struct.pack_into("=H", pkt, 10, csum(pkt[:ihl]))
    set_tcp_checksum(pkt, ihl)


@dataclass
class Seg:
    """A parsed IPv4 TCP packet (offsets into it)."""

    pkt: bytearray
    ihl: int
    doff: int  # TCP header length with options
    flags: int
    seq: int
    ack: int

    @property
    def payload_off(self) -> int:
        return self.ihl + self.doff

    @property
    def payload_len(self) -> int:
        return len(self.pkt) - self.ihl - self.doff

    @property
    def key(self) -> tuple[bytes, bytes, int, int]:
        """(src, dst, sport, dport): one direction of a flow."""
        sport, dport = struct.unpack_from("!HH", self.pkt, self.ihl)
        return bytes(self.pkt[12:16]), bytes(self.pkt[16:20]), sport, dport

    def options(self):
        """(offset, kind, length) of every option (NOPs and EOL left out)."""
        i, end = self.ihl + 20, self.ihl + self.doff
        pkt = self.pkt
        while i < end:
            kind = pkt[i]
            if kind == 0:
                return
            if kind == 1:
                i += 1
                continue
            if i + 1 >= end:
                return
            ln = pkt[i + 1]
            if ln < 2 or i + ln > end:
                return
            yield i, kind, ln
            i += ln

    def set_seq_ack(self, seq: int, ack: int) -> None:
        struct.pack_into("!II", self.pkt, self.ihl + 4, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF)
        self.seq, self.ack = seq & 0xFFFFFFFF, ack & 0xFFFFFFFF


def parse(pkt: bytes) -> Seg | None:
    if len(pkt) < 40 or pkt[0] >> 4 != 4 or pkt[9] != socket.IPPROTO_TCP:
        return None
    ihl = (pkt[0] & 0x0F) * 4
    frag = struct.unpack_from("!H", pkt, 6)[0] & 0x3FFF
    if frag or len(pkt) < ihl + 20:
        return None
    doff = (pkt[ihl + 12] >> 4) * 4
    if doff < 20 or len(pkt) < ihl + doff:
        return None
    seq, ack = struct.unpack_from("!II", pkt, ihl + 4)
    return Seg(bytearray(pkt), ihl, doff, pkt[ihl + 13], seq, ack)


@dataclass
class Held:
    """A segment coalesce keeps back, waiting for the one that continues it."""

    pid: int
    seg: Seg
    deadline: float


@dataclass
class QueueState:
    num: int
    kind: str
    port: int
    stats: dict = field(default_factory=lambda: {"packets": 0, "changed": 0, "errors": 0})
    held: Held | None = None

    def count(self, what: str, n: int = 1) -> None:
        self.stats[what] = self.stats.get(what, 0) + n


class Mangler(QueueWorker):
    def __init__(self, config: dict):
        super().__init__()
        self.seed = config.get("seed")
        self.maxlen = int(config.get("maxlen", 10000))
        self.after_bytes = int(config.get("after_bytes", 200_000))
        self.mss_clamp = int(config.get("mss_clamp", 700))
        self.hold = float(config.get("hold_ms", 2.0)) / 1000
        self.queues: dict[int, QueueState] = {}
        for key, qc in config.get("queues", {}).items():
            if qc["kind"] not in KINDS:
                raise ValueError(f"queue {key}: unknown kind {qc['kind']!r}")
            self.queues[int(key)] = QueueState(int(key), qc["kind"], int(qc.get("port", 0)))
        self.rng = random.Random(None if self.seed is None else f"mangle/{self.seed}")
        self.nfq = NfQueueSocket(bufsize=1 << 17)
        self.raw: socket.socket | None = None
        if any(q.kind == "split" for q in self.queues.values()):
            self.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        # seq-rewrite: (port, frozenset of the two endpoints) -> {endpoint: offset}
        self.offsets: dict[tuple, dict[tuple[bytes, int], int]] = {}
        # payload-rewrite: (port, direction key) -> payload bytes seen, or -1 once rewritten
        self.seen: dict[tuple, int] = {}

    def bind(self) -> None:
        for num in self.queues:
            self.nfq.bind(num, self.maxlen, copy_packet=True)

    # -- the kinds ------------------------------------------------------------------------------

    def strip(self, q: QueueState, seg: Seg) -> bool:
        if q.kind == "strip-mptcp-syn" and not seg.flags & SYN:
            return False
        if q.kind == "strip-mptcp-after-syn" and seg.flags & SYN:
            return False
        n = 0
        for off, kind, ln in list(seg.options()):
            if kind == KIND_MPTCP:
                seg.pkt[off : off + ln] = b"\x01" * ln
                n += 1
        q.count("options_stripped", n)
        return n > 0

    def seq_rewrite(self, q: QueueState, seg: Seg) -> bool:
        src, dst, sport, dport = seg.key
        a, b = (src, sport), (dst, dport)
        fkey = (q.port, frozenset((a, b)))
        offs = self.offsets.get(fkey)
        if offs is None or (seg.flags & (SYN | ACK) == SYN):  # a new flow (or the tuple reused)
            offs = {a: self.rng.getrandbits(32), b: self.rng.getrandbits(32)}
            self.offsets[fkey] = offs
            q.count("flows")
        da, db = offs[a], offs[b]
        ack = seg.ack - db if seg.flags & ACK else seg.ack
        seg.set_seq_ack(seg.seq + da, ack)
        if seg.flags & ACK:
            for off, kind, ln in list(seg.options()):
                if kind == KIND_SACK:
                    for e in range(off + 2, off + ln - 3, 4):
                        (v,) = struct.unpack_from("!I", seg.pkt, e)
                        struct.pack_into("!I", seg.pkt, e, (v - db) & 0xFFFFFFFF)
        return True

    def payload_rewrite(self, q: QueueState, seg: Seg) -> bool:
        n = seg.payload_len
        if n < 2:
            return False
        dkey = (q.port, seg.key)
        seen = self.seen.get(dkey, 0)
        if seen < 0:
            return False
        seen += n
        if seen < self.after_bytes:
            self.seen[dkey] = seen
            return False
        self.seen[dkey] = -1
        at = seg.payload_off + n // 2
        seg.pkt[at] ^= 0xFF
        q.count("bytes_rewritten")
        return True

    def clamp_mss(self, q: QueueState, seg: Seg) -> bool:
        for off, kind, ln in seg.options():
            if kind == KIND_MSS and ln == 4:
                (mss,) = struct.unpack_from("!H", seg.pkt, off + 2)
                if mss > self.mss_clamp:
                    struct.pack_into("!H", seg.pkt, off + 2, self.mss_clamp)
                    q.count("mss_clamped")
                    return True
        return False

    @staticmethod
    def _mergeable(seg: Seg) -> bool:
        return seg.payload_len > 0 and not seg.flags & ~(ACK | PSH) and seg.flags & ACK

    def coalesce(self, q: QueueState, pid: int, seg: Seg, now: float) -> None:
        """Verdicts for a new segment on a coalescing queue (and for the one held back)."""
        held = q.held
        if held is not None:
            h = held.seg
            if (
                self._mergeable(seg)
                and seg.key == h.key
                and seg.seq == (h.seq + h.payload_len) & 0xFFFFFFFF
                and len(h.pkt) + seg.payload_len <= MTU
            ):
                merged = Seg(h.pkt + seg.pkt[seg.payload_off :], h.ihl, h.doff, 0, h.seq, 0)
                merged.set_seq_ack(h.seq, seg.ack)
                merged.pkt[h.ihl + 13] = h.flags | (seg.flags & PSH)
                merged.pkt[h.ihl + 14 : h.ihl + 16] = seg.pkt[seg.ihl + 14 : seg.ihl + 16]
                fix_checksums(merged.pkt)
                q.held = None
                self.nfq.verdict(q.num, held.pid, NF_DROP)
                self.nfq.verdict(q.num, pid, NF_ACCEPT, bytes(merged.pkt))
                q.count("merged")
                q.count("changed")
                return
            self.release(q)
        if seg.flags & SYN:
            if self.clamp_mss(q, seg):
                fix_checksums(seg.pkt)
                q.count("changed")
                self.nfq.verdict(q.num, pid, NF_ACCEPT, bytes(seg.pkt))
                return
        if self._mergeable(seg) and 2 * len(seg.pkt) - seg.payload_off <= MTU:
            q.held = Held(pid, seg, now + self.hold)
            return
        self.nfq.verdict(q.num, pid, NF_ACCEPT)

    def release(self, q: QueueState) -> None:
        if q.held is not None:
            self.nfq.verdict(q.num, q.held.pid, NF_ACCEPT)
            q.held = None

    def split(self, q: QueueState, pid: int, seg: Seg) -> None:
        n = seg.payload_len
        if n <= SPLIT_MIN or seg.flags & (SYN | RST):
            self.nfq.verdict(q.num, pid, NF_ACCEPT)
            return
        half = n // 2
        po = seg.payload_off
        first = bytearray(seg.pkt[: po + half])
        first[seg.ihl + 13] = seg.flags & ~(FIN | PSH)
        fix_checksums(first)
        second = Seg(seg.pkt[:po] + seg.pkt[po + half :], seg.ihl, seg.doff, seg.flags, 0, 0)
        second.set_seq_ack(seg.seq + half, seg.ack)
        (ip_id,) = struct.unpack_from("!H", seg.pkt, 4)
        struct.pack_into("!H", second.pkt, 4, (ip_id + 1) & 0xFFFF)
        fix_checksums(second.pkt)
        # The verdict runs the first half through the rest of the router (to its qdisc) before
        # the call returns, so the second, sent next, follows it in order.
        self.nfq.verdict(q.num, pid, NF_ACCEPT, bytes(first))
        assert self.raw is not None
        self.raw.sendto(bytes(second.pkt), (socket.inet_ntoa(bytes(seg.pkt[16:20])), 0))
        q.count("split")
        q.count("changed")

    # -- the loop ---------------------------------------------------------------------------------

    def handle(self, num: int, pid: int, pkt: bytes, now: float) -> None:
        q = self.queues.get(num)
        if q is None or pid < 0:
            return
        q.stats["packets"] += 1
        try:
            seg = parse(pkt)
            if seg is None:
                if q.kind == "coalesce":
                    self.release(q)
                self.nfq.verdict(num, pid, NF_ACCEPT)
                return
            if q.kind == "coalesce":
                self.coalesce(q, pid, seg, now)
                return
            if q.kind == "split":
                self.split(q, pid, seg)
                return
            if q.kind.startswith("strip-mptcp"):
                changed = self.strip(q, seg)
            elif q.kind == "seq-rewrite":
                changed = self.seq_rewrite(q, seg)
            else:
                changed = self.payload_rewrite(q, seg)
        except Exception as exc:  # noqa: BLE001 (a packet we cannot handle goes on unchanged)
            q.count("errors")
            print(f"queue {num}: {exc!r}", file=sys.stderr, flush=True)
            self.nfq.verdict(num, pid, NF_ACCEPT)
            return
        if changed:
            fix_checksums(seg.pkt)
            q.stats["changed"] += 1
            self.nfq.verdict(num, pid, NF_ACCEPT, bytes(seg.pkt))
        else:
            self.nfq.verdict(num, pid, NF_ACCEPT)

    def flush_due(self, now: float) -> float | None:
        nxt = None
        for q in self.queues.values():
            if q.held is not None:
                if q.held.deadline <= now:
                    self.release(q)
                elif nxt is None or q.held.deadline < nxt:
                    nxt = q.held.deadline
        return nxt

    def stats(self) -> dict:
        return {
            str(q.num): {"kind": q.kind, "port": q.port, **q.stats} for q in self.queues.values()
        }

    def handle_command(self, line: bytes) -> None:
        try:
            op = json.loads(line).get("op")
        except (ValueError, AttributeError) as exc:
            self.reply({"ok": False, "error": repr(exc)})
            return
        if op == "stats":
            self.reply({"ok": True, "stats": self.stats()})
        elif op == "stop":
            self.stopping = True
            self.reply({"ok": True})
        else:
            self.reply({"ok": False, "error": f"unknown op {op!r}"})

    def run(self) -> None:
        nfq_fd = self.nfq.fileno()
        fds = [nfq_fd, 0]
        nxt = None
        while not self.stopping:
            timeout = None if nxt is None else max(0.0, nxt - time.monotonic())
            readable, _, _ = select.select(fds, [], [], timeout)
            if nfq_fd in readable:
                for _ in range(MAX_DRAIN):
                    got = self.nfq.read_packet()
                    if got is None:
                        break
                    self.handle(*got, time.monotonic())
            if 0 in readable:
                self.read_stdin()
            nxt = self.flush_due(time.monotonic())
        self.release_all()

    def release_all(self) -> None:
        for q in self.queues.values():
            self.release(q)


def main(argv: list[str] | None = None) -> int:
    return serve(Mangler, argv)


if __name__ == "__main__":
    sys.exit(main())
