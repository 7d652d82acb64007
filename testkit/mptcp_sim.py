"""A fake network and clock for the sans-I/O MPTCP stack: hosts, paths with delay and loss,
optionally through a shared rate-limited drop-tail ``Link`` (a bottleneck) in one direction.
Tests and benchmarks share it (the compound-fault harness, ``testkit/faults.py``, drives it with
seeded scenarios).

Faults a path can have (all off by default, so the scripted tests see the plain network): random
loss, bursty loss (``GilbertElliott``, netem's ``gemodel``), reordering (a share of packets
delayed extra), duplication, a rate-limited queue in each direction (``link``/``rev_link``) and
a silent cut (``up = False``). Faults at the hosts go through ``Net``: ``interface_down/up``
(packets to and from the address are lost and the stacks hear it), ``remove_address``
(REMOVE_ADDR), ``set_backup`` (MP_PRIO), ``reset_subflow`` and ``slow_reader`` (an application
that reads at a set rate: the window closes). ``Net.at`` runs a callback at a simulated time, in
order with packets and timers, so a scenario can be played as a timeline.

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
class GilbertElliott:
    """Bursty loss as netem's ``loss gemodel p r 1-h 1-k``: a Good and a Bad state; each
    packet first moves Good->Bad with probability ``p`` (Bad->Good with ``r``), then is lost
    with probability ``1 - k`` in Good and ``1 - h`` in Bad (``h`` and ``k``: the chances a
    packet gets through, as in the classic model; Gilbert's: ``h = 0``, ``k = 1``). One state
    per direction of a path, as one netem qdisc per interface would keep.

    netem's state moves only per packet, so a sparse flow (one retransmission per backed-off
    RTO) can stay in Bad for many seconds: a cut, not a burst. ``max_bad`` (s), when set, ends
    a Bad state at the first packet after it has lasted that long."""

    p: float
    r: float
    h: float = 0.0
    k: float = 1.0
    max_bad: float | None = None
    bad: dict[tuple[str, str], bool] = field(default_factory=dict)
    bad_since: dict[tuple[str, str], float] = field(default_factory=dict)

    def lost(self, rng: random.Random, direction: tuple[str, str], now: float = 0.0) -> bool:
        """Advance the state of ``direction`` by one packet; whether that packet is lost."""
        bad = self.bad.get(direction, False)
        if bad:
            if rng.random() < self.r or (
                self.max_bad is not None and now - self.bad_since[direction] >= self.max_bad
            ):
                bad = False
        elif rng.random() < self.p:
            bad = True
            self.bad_since[direction] = now
        self.bad[direction] = bad
        return rng.random() >= (self.h if bad else self.k)


@dataclass
class Path:
    delay: float = 0.01  # one way
    loss: float = 0.0
    up: bool = True  # False: a silent cut (every packet lost, nobody told)
    drop: Any = None  # callable(seg) -> bool: drop this segment
    link: Link | None = None  # a bottleneck on the way from ``fwd[0]`` to ``fwd[1]``
    fwd: tuple[str, str] | None = None
    mutate: Any = None  # callable(seg) -> None: edit the segment (its options) on the way
    rev_link: Link | None = None  # a bottleneck on the way back (``fwd[1]`` to ``fwd[0]``)
    ge: GilbertElliott | None = None  # bursty loss, on top of ``loss``
    reorder: float = 0.0  # share of packets held back ``reorder_delay`` more (overtaken)
    reorder_delay: float = 0.0
    dup: float = 0.0  # share of packets delivered twice
    lost: int = 0  # packets this path lost (cut, loss, bursts, queue drops)


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
    auto_read: bool = True  # False: the test reads (a slow reader, ``Net.slow_reader``)
    # True: rounds as the packet edge does them (netio's Endpoint): a segment that arrives
    # while others of the same instant wait is followed by the core's steady-state
    # ``data_round`` for its subflow; the whole round runs once the instant's last one is in
    batch_rounds: bool = False
    data_rounds: int = 0  # steady-state rounds taken (batch_rounds)


class Net:
    def __init__(self, seed: int = 1, trace: bool = True, rst_unknown: bool = False) -> None:
        self.now = 0.0
        self.rng = random.Random(seed)
        self.paths: dict[tuple[str, str], Path] = {}
        self.hosts: dict[str, Host] = {}  # by address
        self._q: list = []
        self._n = 0
        # every segment sent (lost ones too); ``trace=False`` keeps none (long seeded runs)
        self.trace: list[tuple[float, str, str, TcpSegment]] = []
        self.keep_trace = trace
        self.down_addrs: set[str] = set()  # interfaces that are down (nothing in or out)
        self._actions: list = []  # (time, n, callback): Net.at
        # a segment for no connection is answered with an RST, as a real stack does (False:
        # dropped silently, as the scripted tests expect)
        self.rst_unknown = rst_unknown
        self._batch: list[tuple[Host, MptcpConnection]] = []  # (batch_rounds) to round off

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
        if self.keep_trace:
            self.trace.append((self.now, src, dst, seg))
        if src in self.down_addrs or dst in self.down_addrs:
            p.lost += 1
            return
        rng = self.rng
        if (
            not p.up
            or (p.loss and rng.random() < p.loss)
            or (p.ge is not None and p.ge.lost(rng, (src, dst), self.now))
            or (p.drop and p.drop(seg))
        ):
            p.lost += 1
            return
        t = self.now
        link = p.link if (src, dst) == p.fwd else p.rev_link
        if link is not None:
            left = link.admit(t, len(raw) + 20)  # with the IP header
            if left is None:
                p.lost += 1
                return
            t = left
        t += p.delay
        if p.reorder and rng.random() < p.reorder:
            t += p.reorder_delay
        self._n += 1
        heapq.heappush(self._q, (t, self._n, src, dst, raw))
        if p.dup and rng.random() < p.dup:
            self._n += 1
            heapq.heappush(self._q, (t, self._n, src, dst, raw))

    def _deliver(self, src: str, dst: str, raw: bytes) -> None:
        if dst in self.down_addrs:
            return  # it reached an interface that has gone down meanwhile
        h = self.hosts[dst]
        seg = decode_segment(raw, socket.inet_aton(src), socket.inet_aton(dst))
        key = ((dst, seg.dst_port), (src, seg.src_port))
        owner = h.conns.get(key)
        if owner is None:
            if h.listen_port != seg.dst_port or not seg.flags & 0x02 or seg.flags & 0x14:
                if self.rst_unknown and not seg.flags & 0x04:
                    self._send(dst, src, _rst_for(seg))
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
        if h.batch_rounds and self._q and self._q[0][0] <= self.now:
            segs = conn.data_round(sub, self.now)  # more of this instant's batch to come
            if segs is not None:
                h.data_rounds += 1
                for out in segs:
                    self._send(sub.local[0], sub.remote[0], out)
                self._events(h, conn)
                self._batch.append((h, conn))
                return
        self.flush(h, conn)

    def _end_batch(self) -> None:
        """The whole round for each connection that had only steady-state rounds so far."""
        batch, self._batch = self._batch, []
        for h, conn in {id(c): (h, c) for h, c in batch}.values():
            self.flush(h, conn)

    def at(self, t: float, callback: Any) -> None:
        """Run ``callback()`` at simulated time ``t`` (in order with packets and timers: at a
        tie, packets first, then timers, then callbacks in the order they were set). A pending
        callback keeps ``run`` going until ``until``, even when the network is idle."""
        self._n += 1
        heapq.heappush(self._actions, (t, self._n, callback))

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
            t_act = self._actions[0][0] if self._actions else None
            if t_act is not None and (t_pkt is None or t_act < t_pkt):
                if t_timer is None or t_act < t_timer:
                    if t_act > until and exact:
                        self.now = until
                        return
                    if t_act > until:
                        return
                    _t, _n, callback = heapq.heappop(self._actions)
                    self.now = max(self.now, t_act)
                    callback()
                    continue
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
                if self._batch and not (self._q and self._q[0][0] <= self.now):
                    self._end_batch()
            else:
                self.now = max(self.now, t_timer)
                h, conn = timer_conn
                conn.handle_timer(self.now)
                self.flush(h, conn)

    # ----------------------------------------------------------------- faults at the hosts
    def _flush_all(self, h: Host) -> None:
        for conn in self.all_conns(h):
            self.flush(h, conn)

    def interface_down(self, addr: str) -> None:
        """The interface holding ``addr`` goes down: nothing leaves or reaches it (packets on
        the wire to it are lost on arrival) and its host's connections hear it (the kernel path
        manager closes their subflows from it)."""
        h = self.hosts[addr]
        self.down_addrs.add(addr)
        for conn in self.all_conns(h):
            conn.interface_down(addr, self.now)
        self._flush_all(h)

    def interface_up(self, addr: str) -> None:
        """The interface holding ``addr`` is back; its host's connections hear it (the kernel
        path manager joins from it again)."""
        h = self.hosts[addr]
        self.down_addrs.discard(addr)
        for conn in self.all_conns(h):
            conn.interface_up(addr, self.now)
        self._flush_all(h)

    def remove_address(self, addr: str) -> bool:
        """``ip mptcp endpoint del`` of ``addr`` on its host: REMOVE_ADDR to the peer, our
        subflows from it reset. Whether any connection sent it."""
        h = self.hosts[addr]
        done = False
        for conn in self.all_conns(h):
            done |= conn.remove_address(addr, self.now)
            self.flush(h, conn)
        return done

    def set_backup(self, addr: str, backup: bool) -> int:
        """MP_PRIO: the subflows from ``addr`` become backup (or not) on its host; how many."""
        h = self.hosts[addr]
        n = 0
        for conn in self.all_conns(h):
            n += conn.set_endpoint_backup(addr, backup, self.now)
            self.flush(h, conn)
        return n

    def reset_subflow(self, local: str, remote: str) -> int:
        """Abort the subflows between ``local`` and ``remote`` on ``local``'s host (an RST,
        as a middlebox or the peer's TCP might cause): how many were open."""
        h = self.hosts[local]
        n = 0
        for conn in self.all_conns(h):
            for s in list(conn.subflows):
                if s.local[0] == local and s.remote[0] == remote and not s.closed:
                    s.tcp.abort(self.now)
                    n += 1
            self.flush(h, conn)
        return n

    def slow_reader(self, h: Host, conn: MptcpConnection, rate: float, every: float = 0.01) -> None:
        """The application on ``h`` reads ``conn`` at ``rate`` bytes/s, in reads every
        ``every`` seconds (its receive window fills and closes). Stops once everything is read
        and the connection is closed or the peer's DATA_FIN has come."""
        h.auto_read = False
        rx = h.rx.setdefault(id(conn), bytearray())
        per_read = max(1, int(rate * every))

        def tick() -> None:
            if conn.readable:
                rx.extend(conn.read(per_read))
                self.flush(h, conn)
            if conn.readable or not (conn.state == "CLOSED" or conn._eof):
                self.at(self.now + every, tick)

        self.at(self.now + every, tick)

    def all_conns(self, h: Host) -> list[MptcpConnection]:
        seen: dict[int, MptcpConnection] = {}
        for conn, _ in h.conns.values():
            seen[id(conn)] = conn
        for c in h.accepted + h.opened:
            seen[id(c)] = c
        return list(seen.values())


def _rst_for(seg: TcpSegment) -> TcpSegment:
    """The RST a TCP without a connection answers ``seg`` with (RFC 9293 3.10.7.1)."""
    if seg.flags & 0x10:  # ACK: the RST takes its sequence number from it
        return TcpSegment(seg.dst_port, seg.src_port, seg.ack, 0, 0x04, 0)
    n = len(seg.payload) + (1 if seg.flags & 0x02 else 0) + (1 if seg.flags & 0x01 else 0)
    return TcpSegment(seg.dst_port, seg.src_port, 0, (seg.seq + n) & 0xFFFFFFFF, 0x14, 0)


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
    "GilbertElliott",
    "Path",
    "Host",
    "kinds",
    "Closed",
    "Connected",
    "PeerClosed",
    "Reset",
    "SendBufferAvailable",
]
