"""An in-test network for two TcpConnections: fake clock, delay, rate, drops, reordering, dups.

Every segment goes through the real codec (encode -> decode with checksum) unless
``codec=False``, so the codec is exercised by every connection test too.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from mptcp_impl.tcp import (
    SYN,
    Closed,
    Connected,
    DataReceived,
    PeerClosed,
    Reset,
    TcpConfig,
    TcpConnection,
    TcpSegment,
    decode_segment,
    encode_segment,
)

A_ADDR = ("10.0.0.1", 40000)
B_ADDR = ("10.0.0.2", 5001)

# A filter sees (wire, direction "ab"/"ba", segment, index of this segment in that direction)
# and returns a list of extra delays: [] drops, [0.0] delivers once, [0.0, 0.001] duplicates.
Filter = Callable[["Wire", str, TcpSegment, int], list[float]]


@dataclass
class Link:
    delay: float = 0.01
    rate: float | None = None  # bytes/s; None = infinite
    queue_limit: int = 1000  # packets waiting for the serialiser before tail drop
    next_free: float = 0.0
    departures: list[float] = field(default_factory=list)
    drops: int = 0


class Wire:
    def __init__(
        self,
        cfg_a: TcpConfig | None = None,
        cfg_b: TcpConfig | None = None,
        *,
        delay: float = 0.01,
        rate: float | None = None,
        queue_limit: int = 1000,
        codec: bool = True,
        hooks_a=None,
        hooks_b=None,
    ) -> None:
        self.now = 0.0
        self.cfg_a = cfg_a or TcpConfig()
        self.cfg_b = cfg_b or TcpConfig()
        self.a = TcpConnection(self.cfg_a, A_ADDR, B_ADDR, hooks_a)
        self.b: TcpConnection | None = None  # created by accept_syn when A's SYN arrives
        self.hooks_b = hooks_b
        self.links = {"ab": Link(delay, rate, queue_limit), "ba": Link(delay, rate, queue_limit)}
        self.codec = codec
        self.filters: dict[str, Filter | None] = {"ab": None, "ba": None}
        self.counts = {"ab": 0, "ba": 0}
        self.log: list[tuple[float, str, TcpSegment]] = []  # every segment as sent
        self.keep_log = True
        self._q: list = []
        self._seq = itertools.count()
        self.events: dict[str, list] = {"a": [], "b": []}
        self.received: dict[str, bytearray] = {"a": bytearray(), "b": bytearray()}
        self.auto_read = {"a": True, "b": True}
        self.to_send: dict[str, memoryview] = {"a": memoryview(b""), "b": memoryview(b"")}
        self.close_after_send = {"a": False, "b": False}

    def conn(self, side: str) -> TcpConnection | None:
        return self.a if side == "a" else self.b

    # -- application side

    def write(self, side: str, data: bytes, close: bool = False) -> None:
        self.to_send[side] = memoryview(bytes(self.to_send[side]) + data)
        self.close_after_send[side] = close

    def _app(self, side: str) -> None:
        c = self.conn(side)
        if c is None:
            return
        while True:
            ev = c.next_event()
            if ev is None:
                break
            self.events[side].append(ev)
        pending = self.to_send[side]
        if pending and c.state.value in ("ESTABLISHED", "CLOSE-WAIT") and c.send_buffer_free:
            n = c.send(pending)
            self.to_send[side] = pending[n:]
        if (
            self.close_after_send[side]
            and not self.to_send[side]
            and c.state.value in ("ESTABLISHED", "CLOSE-WAIT")
        ):
            c.close(self.now)
            self.close_after_send[side] = False
        if self.auto_read[side] and c.readable:
            self.received[side] += c.read()

    # -- network side

    def _flush(self) -> None:
        for side, direction in (("a", "ab"), ("b", "ba")):
            c = self.conn(side)
            if c is None:
                continue
            self._app(side)
            for seg in c.segments_to_send(self.now):
                self._transmit(direction, seg)

    def _transmit(self, direction: str, seg: TcpSegment) -> None:
        if self.keep_log:
            self.log.append((self.now, direction, seg))
        idx = self.counts[direction]
        self.counts[direction] += 1
        f = self.filters[direction]
        extra = f(self, direction, seg, idx) if f else [0.0]
        src, dst = (A_ADDR, B_ADDR) if direction == "ab" else (B_ADDR, A_ADDR)
        if self.codec:
            raw = encode_segment(seg, src[0], dst[0])
            seg = decode_segment(raw, src[0], dst[0])
        link = self.links[direction]
        size = len(seg.payload) + 52
        for x in extra:
            t = self.now
            if link.rate:
                link.departures = [d for d in link.departures if d > t]
                if len(link.departures) >= link.queue_limit:
                    link.drops += 1
                    continue
                start = max(t, link.next_free)
                link.next_free = start + size / link.rate
                link.departures.append(link.next_free)
                t = link.next_free
            heapq.heappush(self._q, (t + link.delay + x, next(self._seq), direction, seg))

    def _deliver(self, direction: str, seg: TcpSegment) -> None:
        if direction == "ab":
            if self.b is None:
                if seg.flags & SYN:
                    self.b = TcpConnection.accept_syn(
                        self.cfg_b, seg, B_ADDR, A_ADDR, self.now, self.hooks_b
                    )
                return
            self.b.receive_segment(seg, self.now)
        else:
            self.a.receive_segment(seg, self.now)

    def step(self) -> bool:
        """Advance to the next delivery or timer. Returns False when nothing is left to do."""
        self._flush()
        t_net = self._q[0][0] if self._q else None
        timers = [(c.get_timer(), c) for c in (self.a, self.b) if c is not None]
        timers = [(t, c) for t, c in timers if t is not None]
        t_timer = min((t for t, _ in timers), default=None)
        if t_net is None and t_timer is None:
            return False
        if t_timer is None or (t_net is not None and t_net <= t_timer):
            self.now = max(self.now, t_net)
            _, _, direction, seg = heapq.heappop(self._q)
            self._deliver(direction, seg)
        else:
            self.now = max(self.now, t_timer)
            for t, c in timers:
                if t <= self.now:
                    c.handle_timer(self.now)
        self._flush()
        return True

    def run(
        self,
        until: float | None = None,
        cond: Callable[[], bool] | None = None,
        max_steps: int = 2_000_000,
    ) -> None:
        """Run until ``cond()`` holds, time passes ``until``, or nothing is left to do."""
        for _ in range(max_steps):
            if cond is not None and cond():
                return
            if until is not None and self._next_time() is not None and self._next_time() > until:
                self.now = until
                self._flush()
                return
            if not self.step():
                return
        raise AssertionError("wire did not settle")

    def _next_time(self) -> float | None:
        ts = [self._q[0][0]] if self._q else []
        for c in (self.a, self.b):
            if c is not None and c.get_timer() is not None:
                ts.append(c.get_timer())
        return min(ts) if ts else None

    def connect(self) -> None:
        self.a.connect(self.now)
        self.run(
            cond=lambda: (
                self.b is not None
                and self.b.state.value == "ESTABLISHED"
                and self.a.state.value == "ESTABLISHED"
            )
        )

    def has(self, side: str, kind: type) -> bool:
        return any(isinstance(e, kind) for e in self.events[side])

    def segs(self, direction: str, pred: Callable[[TcpSegment], bool] = lambda s: True):
        return [(t, s) for t, d, s in self.log if d == direction and pred(s)]


__all__ = ["Wire", "A_ADDR", "B_ADDR", "Connected", "DataReceived", "PeerClosed", "Reset", "Closed"]
