"""A scripted MPTCP peer (packetdrill style) against our sans-I/O MptcpConnection, fake clock.

The test plays the remote host: it builds each segment by hand (``Flow.seg``) with MPTCP
options from the codec, feeds it to our stack (``Box.syn`` for a listener, ``Box.feed`` for an
existing subflow) and looks at what we answer. Every segment crosses the real TCP codec in both
directions (encode with checksum, decode), so what is asserted is what would be on the wire.
Sequence numbers in scripts are relative, as in packetdrill: ``seq=1`` is the first byte after
the SYN. Data sequence numbers are absolute (use ``Flow.idsn``/``Box.conn.local_idsn``).
"""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass, field
from typing import Any

from mptcp_impl.mptcp import crypto
from mptcp_impl.mptcp.connection import MptcpConnection
from mptcp_impl.mptcp.ctrl import MptcpConfig
from mptcp_impl.mptcp.listener import Routed, route_syn
from mptcp_impl.mptcp.options import (
    Dss,
    MpCapable,
    MptcpOptionError,
    find_mptcp,
    to_tcp_option,
)
from mptcp_impl.mptcp.token import TokenRegistry
from mptcp_impl.tcp.connection import TcpConfig
from mptcp_impl.tcp.options import MSS, UnknownOption, WindowScale
from mptcp_impl.tcp.segment import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    TcpSegment,
    decode_segment,
    encode_segment,
)

__all__ = ["ACK", "FIN", "PSH", "RST", "SYN"]

US = "10.0.0.1"  # our stack
THEM = "10.0.0.2"  # the scripted peer
THEM2 = "10.0.0.3"  # the peer's second address
PORT = 5001
MASK32 = 0xFFFFFFFF
MASK64 = (1 << 64) - 1


def wire(seg: TcpSegment, src: str, dst: str) -> TcpSegment:
    """Through the real codec: what the receiver would decode."""
    sb, db = socket.inet_aton(src), socket.inet_aton(dst)
    return decode_segment(encode_segment(seg, sb, db), sb, db)


def mp(seg: TcpSegment) -> list:
    """The MPTCP options of a segment we sent (all must decode)."""
    out = find_mptcp(seg.options)
    bad = [o for o in out if isinstance(o, MptcpOptionError)]
    assert not bad, f"we sent a malformed MPTCP option: {bad} in {seg}"
    return out


def one(seg: TcpSegment, cls: type) -> Any:
    """The option of type ``cls`` in ``seg`` (exactly one), or None."""
    found = [o for o in mp(seg) if isinstance(o, cls)]
    assert len(found) <= 1, f"{len(found)} {cls.__name__} options in {seg}"
    return found[0] if found else None


def raw_lengths(seg: TcpSegment) -> list[int]:
    """Length bytes of the MPTCP options as encoded."""
    return [len(o.data) + 2 for o in seg.options if isinstance(o, UnknownOption) and o.kind == 30]


@dataclass
class Flow:
    """The peer's end of one subflow: its own ISN and what it learnt of ours."""

    local: tuple[str, int]  # the peer's address
    remote: tuple[str, int]  # ours
    key: int
    isn: int = 0x10000000
    irs: int = 0  # our ISN, learnt from our SYN or SYN/ACK
    wscale: int | None = None  # offered in the peer's SYN
    win: int = 65535  # the window field of its segments unless a script says otherwise

    @property
    def token(self) -> int:
        return crypto.token(self.key)

    @property
    def idsn(self) -> int:
        return crypto.idsn(self.key)

    def seg(
        self,
        flags: int,
        *mptcp: Any,
        seq: int = 1,
        ack: int = 1,
        payload: bytes = b"",
        win: int | None = None,
        raw: list | None = None,
    ) -> TcpSegment:
        """A segment from the peer; ``seq``/``ack`` relative to the peer's and our ISN;
        ``raw`` adds options verbatim (UnknownOption) after the encoded ``mptcp`` ones."""
        opts: list = []
        if flags & SYN:
            opts.append(MSS(1460))
            if self.wscale is not None:
                opts.append(WindowScale(self.wscale))
        opts += [to_tcp_option(o) for o in mptcp]
        opts += raw or []
        return TcpSegment(
            self.local[1],
            self.remote[1],
            (self.isn + (seq if not flags & SYN else 0)) & MASK32,
            ((self.irs + ack) & MASK32) if flags & ACK else 0,
            flags,
            self.win if win is None else win,
            opts,
            payload,
        )

    def rel_seq(self, seg: TcpSegment) -> int:
        """Our segment's sequence number relative to our ISN."""
        return (seg.seq - self.irs) & MASK32

    def rel_ack(self, seg: TcpSegment) -> int:
        return (seg.ack - self.isn) & MASK32


@dataclass
class Box:
    """Our stack: one host's registry, settings and clock."""

    config: MptcpConfig = field(default_factory=MptcpConfig)
    tcp_config: TcpConfig = field(default_factory=lambda: TcpConfig(isn=0x20000000))
    seed: int = 7
    now: float = 0.0
    registry: TokenRegistry = None  # type: ignore[assignment]
    conn: MptcpConnection | None = None
    events: list = field(default_factory=list)
    sent: list = field(default_factory=list)  # (sub, seg) as sent, in order

    def __post_init__(self) -> None:
        if self.registry is None:
            self.registry = TokenRegistry(random.Random(self.seed))

    # ---------------------------------------------------------------- our stack as a server
    def syn(self, flow: Flow, seg: TcpSegment) -> list[TcpSegment]:
        """A SYN from the peer to our listener: what we answer (SYN/ACK or RST)."""
        seg = wire(seg, flow.local[0], flow.remote[0])
        self.routed: Routed = route_syn(
            seg, flow.remote, flow.local, self.now, self.registry, self.config, self.tcp_config
        )
        if self.routed.conn is None:
            return [
                wire(s, flow.remote[0], flow.local[0])
                for s in self.routed.refusal.segments_to_send(self.now)
            ]
        if self.routed.new:
            self.conn = self.routed.conn
        out = self.out()
        for s in out:
            if s.flags & SYN:
                flow.irs = s.seq
        return out

    # ---------------------------------------------------------------- our stack as a client
    def connect(self, flow: Flow) -> TcpSegment:
        self.conn = MptcpConnection(self.config, self.tcp_config, self.registry)
        self.conn.connect(flow.remote, flow.local, self.now)
        (syn,) = self.out()
        flow.irs = syn.seq
        return syn

    # ---------------------------------------------------------------- driving
    def sub_for(self, flow: Flow) -> Any:
        for s in self.conn.all_subflows():
            if s.local == flow.remote and s.remote == flow.local:
                return s
        raise KeyError(flow)

    def feed(self, flow: Flow, seg: TcpSegment) -> list[TcpSegment]:
        """Deliver a peer segment on ``flow``'s subflow; return what we send now (all
        subflows, see ``out_pairs`` for which)."""
        sub = self.sub_for(flow)
        sub.tcp.receive_segment(wire(seg, flow.local[0], flow.remote[0]), self.now)
        return self.out()

    def out_pairs(self) -> list[tuple[Any, TcpSegment]]:
        pairs = [
            (sub, wire(seg, sub.local[0], sub.remote[0]))
            for sub, seg in self.conn.segments_to_send(self.now)
        ]
        self.sent += pairs
        while (ev := self.conn.next_event()) is not None:
            self.events.append(ev)
        return pairs

    def out(self) -> list[TcpSegment]:
        return [seg for _sub, seg in self.out_pairs()]

    def advance(self, dt: float) -> list[TcpSegment]:
        """Let ``dt`` seconds pass, firing our timers; return everything sent meanwhile."""
        end = self.now + dt
        got = self.out()
        while True:
            t = self.conn.get_timer()
            if t is None or t > end:
                break
            self.now = max(self.now, t)
            self.conn.handle_timer(self.now)
            got += self.out()
        self.now = end
        return got + self.out()

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self.events]


def dss_of(seg: TcpSegment) -> Dss | None:
    return one(seg, Dss)


def established_server(
    key: int = 0x0102030405060708,
    config: MptcpConfig | None = None,
    tcp_config: TcpConfig | None = None,
    wscale: int | None = None,
    win: int = 65535,
) -> tuple[Box, Flow]:
    """Our listener after a complete MP_CAPABLE handshake with the scripted client."""
    box = Box(config=config or MptcpConfig())
    if tcp_config is not None:
        box.tcp_config = tcp_config
    f = Flow((THEM, 40000), (US, PORT), key, wscale=wscale, win=win)
    (synack,) = box.syn(f, f.seg(SYN, MpCapable()))
    lk = one(synack, MpCapable).sender_key
    box.feed(f, f.seg(ACK, MpCapable(sender_key=key, receiver_key=lk)))
    assert box.conn.fully_established and not box.conn.fallback
    return box, f


def data_ack(conn: MptcpConnection, rel: int, **kw: Any) -> Dss:
    """A 64-bit DATA_ACK of our data, ``rel`` bytes after our IDSN (1 = nothing acked)."""
    return Dss(data_ack=(conn.local_idsn + rel) & MASK64, data_ack64=True, **kw)


def mapping(flow: Flow, dsn_rel: int, ssn: int, n: int, dsn64: bool = True, **kw: Any) -> Dss:
    """The peer's mapping: data-level offset ``dsn_rel`` after its IDSN (1 = first byte)."""
    dsn = (flow.idsn + dsn_rel) & MASK64
    if not dsn64:
        dsn &= MASK32
    return Dss(dsn=dsn, dsn64=dsn64, subflow_seq=ssn, data_len=n, **kw)
