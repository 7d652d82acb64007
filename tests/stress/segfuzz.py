"""Whole-segment fuzzing of live MPTCP connections in the sans-I/O simulator (issue 10, stress).

Each run is one MPTCP connection (two subflows, data both ways, DATA_FIN both ways) between the
two hosts of ``tests/mptcp/mptcp_sim.py``; a share of the segments on the wire is mutated as
bytes, after encoding, in one of these ways:

``options``   MPTCP options mutated (``test_proto_fuzz_live.Mutator``: bit flips, other subtypes,
              bad lengths, random bodies, plausible wrong values, duplicates, stripped options),
              TCP checksum recomputed: the receiver must parse and judge them.
``header``    ack, window, flags, urgent pointer, or the sequence number of a segment without
              payload (not a SYN: a SYN/ACK with a forged ISN and the right ack shifts the whole
              stream for any TCP) changed, checksum recomputed.
``corrupt``   1-8 payload bytes (header bytes if there is no payload) changed, inserted or
              removed, the checksum left as it was: the receiver must drop the segment (the
              mutation is redone in the rare case where it leaves the sum intact).
``trim``      payload cut at its tail, or at its head with the sequence number moved on,
              checksum recomputed: genuine bytes at their genuine place, under a mapping that
              covers more than the segment.
``replay``    an earlier segment of the same direction sent again (genuine, stale).

What "no corrupted byte" can mean without DSS checksums: a well-formed mapping that the sender
never sent, riding on a data segment, or a payload changed with its TCP checksum fixed up, is
indistinguishable from the real thing for any receiver (Linux too); so is a DATA_FIN flag
added to a mapping (the stream "ends" there) and an infinite mapping
(DSS with data length 0), after which the subflow's bytes are the data stream from the DSN of
the next byte expected, which puts them in the wrong place if the sender ever sent a byte twice
on the subflow (a reinjection). So the fuzzer never sends
those: an option mutation that would forge a mapping on a segment with payload is refused (and
counted), payload changes keep a wrong checksum, and everything that passes the checksum is
either an option/header lie or genuine bytes. Then every receiver's bytes must be a prefix of
what its peer sent (all of it when the transfer completes), in every run, and no exception may
escape either stack. Segments failing the checksum are dropped as the netio edge does
(``MalformedSegment``, counted).
"""

from __future__ import annotations

import copy
import heapq
import random
import socket
import time
from dataclasses import dataclass, field

from mptcp_impl.mptcp.options import Dss, MptcpOptionError, decode
from mptcp_impl.tcp.errors import MalformedSegment
from mptcp_impl.tcp.options import UnknownOption
from mptcp_impl.tcp.segment import decode_segment, encode_segment
from testkit.mptcp_sim import C1, C2, Net, S, client_cfg
from tests.mptcp.test_proto_fuzz_live import Mutator, _mappings

KINDS = ("options", "header", "corrupt", "trim", "replay")


@dataclass
class Tally:
    runs: int = 0
    completed: int = 0  # both directions delivered in full
    mutated: int = 0  # segments mutated (each counted once)
    by_kind: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    option_blocks: int = 0  # MPTCP option blocks mutated or added
    forge_refused: int = 0  # option mutations refused: they forged a mapping on data
    bad_checksum_dropped: int = 0
    segments: int = 0  # segments put on the wire, mutated or not
    bytes_checked: int = 0  # received bytes compared with what was sent

    def add(self, o: Tally) -> None:
        for k, v in vars(o).items():
            if k == "by_kind":
                for kk, vv in v.items():
                    self.by_kind[kk] += vv
            else:
                setattr(self, k, getattr(self, k) + v)


class SegmentMutator:
    def __init__(self, rng: random.Random, rate: float, tally: Tally) -> None:
        self.rng = rng
        self.rate = rate
        self.t = tally
        self.opt = Mutator(rng, rate=1.0)
        self.history: dict[tuple[str, str], list[bytes]] = {}

    def __call__(self, seg, raw: bytes, src: str, dst: str) -> list[bytes]:
        """What goes on the wire instead of ``raw`` (none, one or two segments)."""
        r = self.rng
        hist = self.history.setdefault((src, dst), [])
        if len(hist) < 64:
            hist.append(raw)
        else:
            hist[r.randrange(64)] = raw
        if r.random() >= self.rate:
            return [raw]
        sb, db = socket.inet_aton(src), socket.inet_aton(dst)
        kind = r.choice(KINDS)
        out = None
        if kind == "options":
            out = self._options(seg, sb, db)
        elif kind == "header":
            out = self._header(seg, sb, db)
        elif kind == "corrupt":
            out = self._corrupt(raw, sb, db, len(seg.payload))
        elif kind == "trim":
            out = self._trim(seg, sb, db)
        else:
            out = [raw, r.choice(hist)]
        if out is None:
            return [raw]
        self.t.mutated += 1
        self.t.by_kind[kind] += 1
        return out

    def _options(self, seg, sb, db):
        s = copy.copy(seg)
        s.options = list(seg.options)
        before = self.opt.count
        self.opt(s)
        if self.opt.count == before:
            return None
        if seg.payload and _forged(s.options, seg.options):
            self.t.forge_refused += 1  # undetectable without DSS checksums: not sent
            self.opt.count = before
            return None
        self.t.option_blocks += self.opt.count - before
        return [encode_segment(s, sb, db)]

    def _header(self, seg, sb, db):
        r = self.rng
        s = copy.copy(seg)
        f = r.randrange(5)
        if f == 0:
            s.ack = (
                s.ack + r.choice((1, -1, 1000, -1000, 1 << 20, r.getrandbits(32)))
            ) & 0xFFFFFFFF
        elif f == 1:
            s.window = r.choice((0, 1, r.getrandbits(16)))
        elif f == 2:
            s.flags ^= r.choice((0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80))
        elif f == 3:
            s.flags |= 0x20
            s.urgent = r.getrandbits(16)
        elif not seg.payload and not seg.flags & 0x02:
            # (not a SYN's: its sequence number is the ISN, which no TCP can check)
            s.seq = (s.seq + r.choice((1, -1, 1 << 16, r.getrandbits(32)))) & 0xFFFFFFFF
        else:
            return None
        return [encode_segment(s, sb, db)]

    def _corrupt(self, raw: bytes, sb, db, plen: int):
        r = self.rng
        hlen = len(raw) - plen
        while True:
            b = bytearray(raw)
            lo, hi = (hlen, len(b)) if plen else (0, hlen)
            for _ in range(r.randint(1, 8)):
                c = r.randrange(4)
                i = r.randrange(lo, max(lo + 1, hi))
                if c == 0 and i < len(b):
                    b[i] ^= 1 << r.randrange(8)
                elif c == 1 and i < len(b):
                    b[i] = r.getrandbits(8)
                elif c == 2:
                    b.insert(i, r.getrandbits(8))
                    hi += 1
                elif i < len(b) and len(b) > 20:
                    del b[i]
                    hi -= 1
            b = bytes(b)
            if b == raw:
                continue
            try:
                decode_segment(b, sb, db)
            except MalformedSegment:
                return [b]
            # the sum survived the change (about 1 in 65535): another try

    def _trim(self, seg, sb, db):
        n = len(seg.payload)
        if n < 2:
            return None
        r = self.rng
        k = r.randrange(1, n)
        s = copy.copy(seg)
        if r.random() < 0.5:
            s.payload = seg.payload[:k]
            s.flags &= ~0x01  # the FIN belongs after the last byte
        else:
            s.payload = seg.payload[k:]
            s.seq = (seg.seq + k) & 0xFFFFFFFF
        return [encode_segment(s, sb, db)]


def _infinite(opts) -> set:
    out = set()
    for o in opts:
        if isinstance(o, UnknownOption) and o.kind == 30:
            try:
                d = decode(o.data)
            except MptcpOptionError:
                continue
            if isinstance(d, Dss) and d.dsn is not None and not d.data_len:
                out.add((d.dsn, d.dsn64, d.subflow_seq))
    return out


def _data_fins(opts) -> set:
    out = set()
    for o in opts:
        if isinstance(o, UnknownOption) and o.kind == 30:
            try:
                d = decode(o.data)
            except MptcpOptionError:
                continue
            if isinstance(d, Dss) and d.data_fin:
                out.add((d.dsn, d.data_len))
    return out


def _forged(new, old) -> bool:
    """A mapping the sender did not send: a new one, an infinite one (data_len 0: "from
    here the subflow's bytes are the data stream", RFC 8684 3.7), which moves the bytes
    just as well, or a DATA_FIN flag on a mapping (its last byte becomes the end of the
    stream: the receiver drops what it pulls beyond, and an infinite-mapping fallback
    later takes the subflow's next bytes for the byte after the DATA_FIN)."""
    return bool(
        _mappings(new) - _mappings(old)
        or _infinite(new) - _infinite(old)
        or _data_fins(new) - _data_fins(old)
    )


class FuzzNet(Net):
    """The simulator with a hook on the encoded bytes, and checksum failures dropped as the
    edge drops them."""

    mutator: SegmentMutator | None = None
    tally: Tally | None = None

    def _send(self, src: str, dst: str, seg) -> None:
        sb, db = socket.inet_aton(src), socket.inet_aton(dst)
        p = self.paths[(src, dst)]
        raw = encode_segment(seg, sb, db)
        self.tally.segments += 1
        if not p.up or (p.loss and self.rng.random() < p.loss):
            return
        for i, out in enumerate(self.mutator(seg, raw, src, dst)):
            self._n += 1
            jitter = self.rng.random() * 0.004 if i else 0.0  # a copy arrives a little later
            heapq.heappush(self._q, (self.now + p.delay + jitter, self._n, src, dst, out))

    def _deliver(self, src: str, dst: str, raw: bytes) -> None:
        try:
            decode_segment(raw, socket.inet_aton(src), socket.inet_aton(dst))
        except MalformedSegment:
            self.tally.bad_checksum_dropped += 1
            return
        super()._deliver(src, dst, raw)


def run_seed(seed: int) -> Tally:
    """One connection, reproducible from its seed alone."""
    rng = random.Random(seed)
    t = Tally(runs=1)
    net = FuzzNet(seed)
    net.tally = t
    net.mutator = SegmentMutator(rng, rng.choice((0.05, 0.2, 0.5, 1.0)), t)
    client = net.host("client", [C1, C2], seed=seed + 10)
    server = net.host("server", [S], seed=seed + 20, listen_port=5001)
    loss = rng.choice((0.0, 0.0, 0.01, 0.05))
    net.path(C1, S, delay=0.01, loss=loss)
    net.path(C2, S, delay=0.02, loss=loss)
    size = rng.choice((20_000, 60_000, 150_000))
    pattern = rng.randbytes(size + size // 4)
    data, back = pattern[:size], pattern[size:]
    conn = net.connect(client, C1, (S, 5001), client_cfg())
    net.run(2.0, stop=lambda: conn._connected or conn.state == "CLOSED")
    try:
        conn.send(data)
        conn.close(net.now)
    except ConnectionError:
        conn = None
    if conn is not None:
        net.flush(client, conn)
    srv = None
    sent_back = False

    def done() -> bool:
        return (
            conn is not None
            and bool(server.accepted)
            and len(server.rx[id(server.accepted[0])]) >= len(data)
            and len(client.rx[id(conn)]) >= len(back)
        )

    t_end = net.now + 15.0
    while conn is not None and net.now < t_end:
        net.run(min(t_end, net.now + 0.5), stop=done)
        if server.accepted and not sent_back:
            srv = server.accepted[0]
            if srv.state != "CLOSED":
                try:
                    srv.send(back)
                    srv.close(net.now)
                except ConnectionError:
                    pass
                net.flush(server, srv)
            sent_back = True
        if done() or (not net._q and (conn.get_timer() is None or conn.subflows == [])):
            break
    for h, c, want in ((server, srv, data), (client, conn, back)):
        if c is None:
            continue
        got = bytes(h.rx[id(c)])
        assert want.startswith(got), f"seed {seed}: corrupted bytes ({len(got)} received)"
        t.bytes_checked += len(got)
    for c in server.accepted[1:]:  # a replayed SYN may open another connection: still clean
        got = bytes(server.rx[id(c)])
        assert data.startswith(got), f"seed {seed}: corrupted bytes on a second connection"
    t.completed += int(
        srv is not None and bytes(server.rx[id(srv)]) == data and bytes(client.rx[id(conn)]) == back
    )
    return t


def fuzz(target: int, first_seed: int = 0, budget_s: float | None = None, progress=None) -> Tally:
    """Runs seeds until ``target`` mutated segments (or ``budget_s`` seconds of this process's
    CPU: wall time says little on a loaded machine)."""
    t0, c0 = time.perf_counter(), time.process_time()
    total = Tally()
    seed = first_seed
    while total.mutated < target:
        total.add(run_seed(seed))
        seed += 1
        if progress and total.runs % 200 == 0:
            progress(total, time.perf_counter() - t0)
        if budget_s is not None and time.process_time() - c0 > budget_s:
            break
    return total
