"""A fake network and clock for the sans-I/O MPTCP stack: hosts, paths with delay and loss,
optionally through a shared rate-limited drop-tail ``Link`` (a bottleneck) in one direction.
Tests and benchmarks share it (the compound-fault harness drives it with seeded scenarios).

Segments travel as encoded bytes (``encode_segment``/``decode_segment``), so every option goes
through the real codecs. A path is chosen by the (source address, destination address) pair;
the server's listener routes SYNs like the edge does: MP_JOIN by token, others to ``accept``.
"""

from __future__ import annotations

import heapq
import random
import socket
from dataclasses import dataclass, field
from typing import Any

from mptcp_impl.mptcp.connection import MptcpConnection, OpenSubflow, SubflowClosed
from mptcp_impl.mptcp.ctrl import Endpoint, MptcpConfig
from mptcp_impl.mptcp.listener import route_syn
from mptcp_impl.mptcp.token import TokenRegistry
from mptcp_impl.tcp.connection import (
    Closed,
    Connected,
    DataReceived,
    PeerClosed,
    Reset,
    SendBufferAvailable,
    TcpConfig,
)
from mptcp_impl.tcp.segment import TcpSegment, decode_segment, encode_segment


@dataclass
class Link:
    """A bottleneck: ``rate`` bit/s, a FIFO of ``queue`` bytes, drop-tail. Paths that name it
    share it (in their forward direction)."""

    rate: float
    queue: int
    busy_until: float = 0.0
    drops: int = 0
    sent: int = 0

    def admit(self, now: float, size: int) -> float | None:
        """When a packet of ``size`` bytes arriving now leaves the link, or None (dropped)."""
        backlog = max(0.0, self.busy_until - now) * self.rate / 8
        if backlog + size > self.queue:
            self.drops += 1
            return None
        self.busy_until = max(now, self.busy_until) + size * 8 / self.rate
        self.sent += size
        return self.busy_until


@dataclass
class Path:
    delay: float = 0.01  # one way
    loss: float = 0.0
    up: bool = True
    drop: Any = None  # callable(seg) -> bool: drop this segment
    link: Link | None = None  # a bottleneck on the way from ``fwd[0]`` to ``fwd[1]``
    fwd: tuple[str, str] | None = None
    mutate: Any = None  # callable(seg) -> None: edit the segment (its options) on the way


@dataclass(eq=False)
class Host:
    name: str
    registry: TokenRegistry
    conns: dict[tuple, tuple[MptcpConnection, Any]] = field(default_factory=dict)
    accepted: list[MptcpConnection] = field(default_factory=list)
    # connections this host opened: their timers run even when no subflow is left (the close
    # timeout of a connection that lost its last subflow)
    opened: list[MptcpConnection] = field(default_factory=list)
    events: dict[int, list] = field(default_factory=dict)
    rx: dict[int, bytearray] = field(default_factory=dict)
    listen_port: int | None = None
    config: MptcpConfig | None = None
    tcp_config: TcpConfig | None = None
    next_port: int = 40000
    auto_read: bool = True  # False: the test reads (a slow reader)


class Net:
    def __init__(self, seed: int = 1) -> None:
        self.now = 0.0
        self.rng = random.Random(seed)
        self.paths: dict[tuple[str, str], Path] = {}
        self.hosts: dict[str, Host] = {}  # by address
        self._q: list = []
        self._n = 0
        self.trace: list[tuple[float, str, str, TcpSegment]] = []

    def host(self, name: str, addrs: list[str], seed: int, **kw: Any) -> Host:
        h = Host(name, TokenRegistry(random.Random(seed)), **kw)
        for a in addrs:
            self.hosts[a] = h
        return h

    def path(self, a: str, b: str, **kw: Any) -> Path:
        p = Path(**kw)
        if p.fwd is None:
            p.fwd = (a, b)
        self.paths[(a, b)] = p
        self.paths[(b, a)] = p
        return p

    # ----------------------------------------------------------------- driving
    def connect(
        self, h: Host, local: str, remote: tuple[str, int], config: MptcpConfig | None = None
    ) -> MptcpConnection:
        conn = MptcpConnection(config or MptcpConfig(), h.tcp_config or TcpConfig(), h.registry)
        port = h.next_port
        h.next_port += 1
        sub = conn.connect((local, port), remote, self.now)
        h.opened.append(conn)
        self._own(h, conn, sub)
        self.flush(h, conn)
        return conn

    def _own(self, h: Host, conn: MptcpConnection, sub: Any) -> None:
        h.conns[(sub.local, sub.remote)] = (conn, sub)
        h.events.setdefault(id(conn), [])
        h.rx.setdefault(id(conn), bytearray())

    def flush(self, h: Host, conn: MptcpConnection) -> None:
        for sub, seg in conn.segments_to_send(self.now):
            self._send(sub.local[0], sub.remote[0], seg)
        self._events(h, conn)

    def _events(self, h: Host, conn: MptcpConnection) -> None:
        while (ev := conn.next_event()) is not None:
            h.events[id(conn)].append(ev)
            if isinstance(ev, OpenSubflow):
                port = h.next_port
                h.next_port += 1
                sub = conn.add_subflow(ev, (ev.local_addr, port), self.now)
                self._own(h, conn, sub)
            elif isinstance(ev, SubflowClosed):
                h.conns.pop((ev.subflow.local, ev.subflow.remote), None)
            elif isinstance(ev, DataReceived) and h.auto_read:
                h.rx[id(conn)] += conn.read()
        if conn.readable and h.auto_read:
            h.rx[id(conn)] += conn.read()

    def _send(self, src: str, dst: str, seg: TcpSegment) -> None:
        sb, db = socket.inet_aton(src), socket.inet_aton(dst)
        p = self.paths[(src, dst)]
        if p.mutate is not None:
            p.mutate(seg)
        raw = encode_segment(seg, sb, db)
        self.trace.append((self.now, src, dst, seg))
        if not p.up or (p.loss and self.rng.random() < p.loss) or (p.drop and p.drop(seg)):
            return
        t = self.now
        if p.link is not None and (src, dst) == p.fwd:
            left = p.link.admit(t, len(raw) + 20)  # with the IP header
            if left is None:
                return
            t = left
        self._n += 1
        heapq.heappush(self._q, (t + p.delay, self._n, src, dst, raw))

    def _deliver(self, src: str, dst: str, raw: bytes) -> None:
        h = self.hosts[dst]
        seg = decode_segment(raw, socket.inet_aton(src), socket.inet_aton(dst))
        key = ((dst, seg.dst_port), (src, seg.src_port))
        owner = h.conns.get(key)
        if owner is None:
            if h.listen_port != seg.dst_port or not seg.flags & 0x02 or seg.flags & 0x14:
                return
            res = route_syn(
                seg,
                key[0],
                key[1],
                self.now,
                h.registry,
                h.config or MptcpConfig(),
                h.tcp_config or TcpConfig(),
            )
            if res.conn is None:  # refused: send the RST
                for s in res.refusal.segments_to_send(self.now):
                    self._send(dst, src, s)
                return
            conn, sub = res.conn, res.subflow
            if res.new:
                h.accepted.append(conn)
            self._own(h, conn, sub)
            self.flush(h, conn)
            return
        conn, sub = owner
        sub.tcp.receive_segment(seg, self.now)
        self.flush(h, conn)

    def run(self, until: float, stop: Any = None, exact: bool = False) -> None:
        """Deliver segments and fire timers in time order until ``until`` or ``stop()``.
        ``exact``: nothing after ``until`` happens, and the clock ends at ``until`` (idle time
        passes); otherwise the event that crosses ``until`` is processed and an idle network
        stops the clock."""
        while self.now < until:
            if stop is not None and stop():
                return
            t_timer, timer_conn = None, None
            for h in {id(x): x for x in self.hosts.values()}.values():
                for conn in self.all_conns(h):
                    t = conn.get_timer()
                    if t is not None and (t_timer is None or t < t_timer):
                        t_timer, timer_conn = t, (h, conn)
            t_pkt = self._q[0][0] if self._q else None
            if exact:
                nxt = min(t for t in (t_pkt, t_timer, float("inf")) if t is not None)
                if nxt > until:
                    self.now = until
                    return
            if t_pkt is None and t_timer is None:
                return
            if t_pkt is not None and (t_timer is None or t_pkt <= t_timer):
                t, _, src, dst, raw = heapq.heappop(self._q)
                self.now = max(self.now, t)
                self._deliver(src, dst, raw)
            else:
                self.now = max(self.now, t_timer)
                h, conn = timer_conn
                conn.handle_timer(self.now)
                self.flush(h, conn)

    def all_conns(self, h: Host) -> list[MptcpConnection]:
        seen: dict[int, MptcpConnection] = {}
        for conn, _ in h.conns.values():
            seen[id(conn)] = conn
        for c in h.accepted + h.opened:
            seen[id(c)] = c
        return list(seen.values())


C1, C2, S = "10.0.1.1", "10.0.2.1", "10.0.5.2"  # two_path_net's addresses


def two_path_net(seed: int = 1, **path_kw: Any) -> tuple[Net, Host, Host, Path, Path]:
    """A client with two addresses, a single-homed server listening on 5001, 10 and 20 ms."""
    net = Net(seed)
    client = net.host("client", [C1, C2], seed=seed + 10)
    server = net.host("server", [S], seed=seed + 20, listen_port=5001)
    p1 = net.path(C1, S, delay=0.01, **path_kw)
    p2 = net.path(C2, S, delay=0.02, **path_kw)
    return net, client, server, p1, p2


def client_cfg() -> MptcpConfig:
    """The client's config: its second address is a subflow endpoint (id 1)."""
    return MptcpConfig(endpoints=[Endpoint(C2, frozenset({"subflow"}), 1)])


def kinds(events: list) -> list[str]:
    return [type(e).__name__ for e in events]


__all__ = [
    "C1",
    "C2",
    "S",
    "two_path_net",
    "client_cfg",
    "Net",
    "Link",
    "Path",
    "Host",
    "kinds",
    "Closed",
    "Connected",
    "PeerClosed",
    "Reset",
    "SendBufferAvailable",
]
