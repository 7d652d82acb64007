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
