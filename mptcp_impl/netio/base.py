"""What both edges share: the handler protocol, errors, edge counters, GSO header and split.

Kept apart from ``stack.py`` (plain TCP) and ``mptcp_edge.py`` (MPTCP) so that each imports it
at the top and neither imports the other's internals.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

from ..tcp import segment as _segmod
from ..tcp.options import encode_options
from ..tcp.segment import TcpSegment, encode_segment

_HDR = _segmod._HDR  # the core's header layout; reused so that the two encoders cannot drift


class ConnectionHandler(Protocol):
    """What the layer above (streams, CLI) implements to hear from a connection."""

    def on_connected(self) -> None: ...
    def on_data(self) -> None: ...
    def on_send_space(self) -> None: ...
    def on_peer_closed(self) -> None: ...
    def on_closed(self, exc: BaseException | None) -> None: ...


class ConnectionReset(ConnectionResetError):
    """The peer reset an established connection, or the core gave up on it (timeout)."""


class ConnectionRefused(ConnectionRefusedError):
    """The handshake failed: a RST in answer to our SYN, or no answer at all."""


@dataclass
class EdgeStats:
    """Counters of the edge (the core keeps its own in ``conn.stats``)."""

    segments_in: int = 0
    segments_out: int = 0
    packets_out: int = 0
    malformed_dropped: int = 0
    send_dropped: int = 0
    acks_coalesced: int = 0  # pure ACKs a later one of the same batch superseded (not decoded)


class SmallQueue:
    """TCP small queues for one socket of the edge (Linux's tcp_small_queue_check): the
    connection (or subflow) on it sends new data only while the host's queues hold fewer than
    ``limit`` of its bytes, ``limit`` being ``time`` seconds of its pacing rate, at least
    ``floor`` and at most ``cap`` bytes (Linux: 1 ms, two skbs, tcp_limit_output_bytes; ours
    reacts in a loop turn, not a TX completion, and needs more than 1 ms). Without it our
    sender filled a 1000-packet shaping queue: RTT tenfold, tail drops, long recoveries.

    What the queue holds is asked of the kernel (``sender.queued()``, SIOCOUTQ) only when it
    may be past half the limit: the last answer plus the bytes TCP sent since bounds it
    (payload only: the kernel counts headers and buffer overhead too, which the next answer
    brings in). Unshaped, that is one ioctl per half a limit sent, not one per flush."""

    __slots__ = ("sender", "tcp", "time", "floor", "cap", "_base", "_mark", "reads")

    def __init__(self, sender: Any, tcp: Any, time: float, floor: int, cap: int) -> None:
        self.sender = sender
        self.tcp = tcp
        self.time = time
        self.floor = floor
        self.cap = cap
        self._base = 0
        self._mark = 0
        self.reads = 0  # ioctls done (tests, figures)

    def limit(self) -> int:
        n = int(self.tcp.pacing_rate * self.time)
        return self.floor if n < self.floor else self.cap if n > self.cap else n

    def room(self) -> int:
        """Bytes of new data the socket may take now (<= 0: none)."""
        limit = self.limit()
        out = self.tcp.stats.bytes_out
        est = self._base + out - self._mark
        if est * 2 > limit:
            est = self._base = self.sender.queued()
            self._mark = out
            self.reads += 1
        return limit - est


_MASK32 = 0xFFFFFFFF
_HALF32 = 1 << 31
_TS_HEAD = b"\x01\x01\x08\x0a"  # NOP NOP timestamps: Linux's layout on every segment


def plain_ack(tcp: bytes) -> tuple[int, int] | None:
    """(ack, tsval) of a segment that is nothing but a cumulative ACK: flags ACK alone, no
    payload, options NOP NOP timestamps and at most an MPTCP DSS carrying a DATA_ACK alone (no
    mapping, no DATA_FIN, nothing else). None for anything else (SACK blocks, window probes'
    data, FIN, other MPTCP options: those are never coalesced)."""
    n = len(tcp)
    if n < 32 or tcp[13] != 0x10 or n != (tcp[12] >> 4) * 4 or tcp[20:24] != _TS_HEAD:
        return None
    if n > 32:
        # kind 30, length 8 or 12 (DATA_ACK 32 or 64 bits), subtype DSS, flags A (and a) only
        if n - 32 != tcp[33] or tcp[32] != 30 or tcp[33] not in (8, 12) or tcp[34] != 0x20:
            return None
        flags = tcp[35]
        if flags & ~0x03 or not flags & 0x01 or tcp[33] != (12 if flags & 0x02 else 8):
            return None
    return int.from_bytes(tcp[8:12], "big"), int.from_bytes(tcp[24:28], "big")


def coalesce_acks(keys: list[Any], tcps: list[bytes], window: Any) -> list[int]:
    """For a batch of received segments (``keys[i]``: the connection of ``tcps[i]``), how many
    of the peer's ACKs each stands for: 0 for a pure ACK that a later one of the same
    connection in this batch supersedes (it need not be decoded at all), k > 1 for the one that
    takes the place of k, 1 for every other segment.

    A pure ACK (``plain_ack``) is superseded only by the next segment of its connection, when
    that is a pure ACK too with a higher cumulative ACK and a timestamp not older, and only if
    it moves the ACK itself and the later one acknowledges nothing beyond what was sent (it is
    the one processed: were it invalid, the ACKs it replaced would be lost): ``window(key)`` is
    the connection's (snd_una, snd_max) as wire values when it may coalesce (established, not
    in loss recovery), None otherwise. So no duplicate ACK, SACK
    block, window probe or option other than a DATA_ACK is ever dropped; what the dropped
    ones said (a lower ACK and DATA_ACK, an older window and timestamp) the later one says
    again. The TCP core counts the k ACKs for congestion control (``TcpSegment.acks``), as
    Linux's stretch-ACK handling does, so slow start grows as with every ACK processed."""
    n = len(tcps)
    out = [1] * n
    if n < 2:
        return out
    pending: dict[Any, tuple[int, int, int]] = {}  # key -> (index, ack, tsval) of a pure ACK
    windows: dict[Any, Any] = {}  # window(key), asked once per connection and batch
    for i in range(n):
        key = keys[i]
        p = plain_ack(tcps[i])
        prev = pending.get(key)
        if p is None:
            if prev is not None:
                del pending[key]
            continue
        ack, tsval = p
        if prev is not None:
            j, pack, pts = prev
            if (
                0 < (ack - pack) & _MASK32 < _HALF32
                and (tsval - pts) & _MASK32 < _HALF32
                and (w := windows[key] if key in windows else windows.setdefault(key, window(key)))
                is not None
                and 0 < (pack - w[0]) & _MASK32 <= (ack - w[0]) & _MASK32 <= (w[1] - w[0]) & _MASK32
            ):
                out[i] = out[j] + 1
                out[j] = 0
        pending[key] = (i, ack, tsval)
    return out


def gso_header(seg: TcpSegment, sender: Any) -> bytes:
    """TCP header and options for a GSO send (the checksum field is the sender's seed)."""
    opts = encode_options(seg.options) if seg.options else b""
    hlen = 20 + len(opts)
    tcp_len = hlen + len(seg.payload)
    return (
        _HDR.pack(
            seg.src_port,
            seg.dst_port,
            seg.seq & 0xFFFFFFFF,
            seg.ack & 0xFFFFFFFF,
            ((hlen >> 2) << 12) | (seg.flags & 0x1FF),
            seg.window & 0xFFFF,
            sender.tcp_checksum_field(tcp_len),
            seg.urgent,
        )
        + opts
    )


def _split(seg: TcpSegment) -> list[TcpSegment]:
    """Cut a GSO segment into MSS pieces for a sender without offload."""
    size = seg.gso_size
    payload = memoryview(seg.payload)
    n = len(payload)
    out = []
    for off in range(0, n, size):
        last = off + size >= n
        flags = seg.flags if last else seg.flags & ~0x09  # FIN and PSH only on the last piece
        out.append(
            dataclasses.replace(
                seg,
                seq=(seg.seq + off) & 0xFFFFFFFF,
                flags=flags,
                payload=bytes(payload[off : off + size]),
                gso_size=0,
            )
        )
    return out


def send_segments(
    segs: list[TcpSegment], sender: Any, edge: EdgeStats, src_b: bytes, dst_b: bytes
) -> None:
    """Put a core's segments on the wire for either edge: whole GSO segments where the sender
    offloads segmentation, MSS pieces where it does not."""
    edge.segments_out += len(segs)
    send = sender.send
    if sender.gso:
        for seg in segs:
            send(gso_header(seg, sender), seg.payload, seg.gso_size)
    else:
        for seg in segs:
            if seg.gso_size and len(seg.payload) > seg.gso_size:
                for piece in _split(seg):
                    send(encode_segment(piece, src_b, dst_b), b"")
            else:
                send(encode_segment(seg, src_b, dst_b), b"")
    edge.packets_out = sender.packets
    edge.send_dropped = sender.dropped


class AppEvents:
    """The application side of both edges (``stack.Conn`` and ``MptcpConn``): a core event to
    the handler's callback. The class using it has ``handler``, ``connected``, ``remote`` and
    ``_finish(exc)``."""

    handler: ConnectionHandler | None
    connected: bool
    remote: tuple[str, int]

    def _finish(self, exc: BaseException | None) -> None:
        raise NotImplementedError

    def _dispatch(self, ev: object) -> None:
        name = type(ev).__name__
        h = self.handler
        if name == "Connected":
            self.connected = True
            if h:
                h.on_connected()
        elif name == "DataReceived":
            if h:
                h.on_data()
        elif name == "SendBufferAvailable":
            if h:
                h.on_send_space()
        elif name == "PeerClosed":
            if h:
                h.on_peer_closed()
        elif name == "Reset":
            reason = getattr(ev, "reason", "")
            peer = f"{self.remote[0]}:{self.remote[1]}"
            if self.connected:
                self._finish(ConnectionReset(f"connection to {peer} reset ({reason})"))
            else:
                self._finish(ConnectionRefused(f"connection to {peer} failed ({reason})"))
        elif name == "Closed":
            self._finish(None)


class EdgeTimer:
    """One asyncio timer per connection at its core's next deadline (``core.get_timer()``).
    A deadline that only moved later (the RTO after every ACK) keeps the earlier timer: it
    fires, the core finds nothing due, and the timer moves on, instead of a cancel and a new
    timer per ACK. The class using it has ``stack``, ``core``, ``closed`` and ``_flush(now)``."""

    stack: Any
    core: Any
    closed: bool
    _timer: Any = None
    _timer_at: float | None = None

    def _flush(self, now: float) -> None:
        raise NotImplementedError

    def _set_timer(self, at: float | None) -> None:
        if at == self._timer_at or (
            at is not None
            and self._timer is not None
            and self._timer_at is not None
            and self._timer_at < at
        ):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = at
        if at is not None:
            self._timer = self.stack.loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self.stack.now()
        self.core.handle_timer(now)
        self._flush(now)
