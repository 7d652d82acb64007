"""The asyncio driver: feeds packets to sans-I/O TcpConnections and their segments to the wire.

One ``Endpoint`` per local (address, port) owns a filtered packet socket (``loop.add_reader``),
a reserved kernel port and a fence rule; it demultiplexes segments to connections by (remote
address, remote port) and hands SYNs to a listener. Each connection has one asyncio timer handle,
rescheduled to ``conn.get_timer()`` after every interaction, and a "dirty" mark: whatever touches
a connection (segments, timers, the application) marks it, and one flush per loop iteration
drains its events and sends its segments. No thread, no per-packet task. Pure ACKs that a later
ACK of the same connection in the same batch supersedes are counted, not processed
(``base.coalesce_acks``): at a few hundred Mbit/s they were most of a sender's CPU.

Time is ``loop.time()`` (monotonic) everywhere, so the core's timers and asyncio's agree.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..mptcp.connection import MptcpConnection
from ..mptcp.ctrl import Endpoint as MpEndpoint
from ..mptcp.ctrl import MptcpConfig
from ..mptcp.token import TokenRegistry
from ..tcp.connection import TcpConfig, TcpConnection, TcpState
from ..tcp.errors import MalformedSegment
from ..tcp.reassembly import joined
from ..tcp.segment import ACK, RST, SYN, TcpSegment, decode_segment, encode_segment
from .addr import ANY4, ANY6, local_address_for, normalize, packed, unpacked
from .base import (
    AppEvents,
    ConnectionHandler,
    EdgeStats,
    EdgeTimer,
    SmallQueue,
    coalesce_acks,
    send_segments,
)
from .firewall import KernelFence, process_fence, reserve_port
from .mptcp_edge import MptcpConn, on_listener_syn
from .packet import (
    GsoPacketSender,
    PacketReceiver,
    RawIp6Sender,
    RawIpSender,
    raw_sender,
    resolve_next_hop,
)

log = logging.getLogger(__name__)


def local_addresses() -> list[str]:
    """This namespace's global-scope addresses, in interface order (``ip -j addr``), IPv4 ones
    then IPv6 ones (no link-local, no tentative or deprecated ones): the default MPTCP endpoints
    of a client (an endpoint joins only an address of its own family)."""
    try:
        out = subprocess.run(
            ["ip", "-j", "addr", "show", "scope", "global"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("cannot list local addresses: %s", e)
        return []
    v4: list[str] = []
    v6: list[str] = []
    for link in json.loads(out or "[]"):
        for a in link.get("addr_info", ()):
            if not a.get("local") or a.get("tentative") or a.get("deprecated"):
                continue
            if a.get("family") == "inet":
                v4.append(a["local"])
            elif a.get("family") == "inet6":
                v6.append(normalize(a["local"]))
    return v4 + v6


def _covers(wildcard: str, addr: str) -> bool:
    """Whether an endpoint on ``wildcard`` receives what is sent to ``addr`` (same port)."""
    return wildcard == ANY6 or (wildcard == ANY4 and ":" not in addr)


@dataclass
class StackConfig:
    """Edge settings.

    ``sender``: "gso" hands the kernel up to 64 KiB super-packets with checksum offload
    (AF_PACKET + vnet header); "packet" is the same socket with one MSS per send (checksum still
    offloaded); "raw" is an IPPROTO_RAW socket, one MSS per send, checksum computed in Python,
    through the kernel's IP output path (netfilter OUTPUT included). ``gso=False`` means "raw".
    """

    tcp: TcpConfig = field(default_factory=TcpConfig)
    gso: bool = True
    sender: str = ""  # "", "gso", "packet" or "raw"; "" follows ``gso``
    gso_max_payload: int = 62 * 1024
    batch: int = 128  # packets read per wake-up before the loop runs other callbacks
    flush_bytes: int = 128 * 1024  # received payload after which a connection flushes mid-batch
    # TCP small queues (base.SmallQueue, Linux's tcp_small_queue_check): a connection (each
    # subflow) sends new data only while the host's queue for its socket (SIOCOUTQ) holds less
    # than tx_queue_time of its pacing rate, at least tx_queue_min and at most tx_queue_bytes
    # bytes (tx_queue_bytes 0: no limit). The time covers our reaction (a loop turn, not
    # Linux's TX completion) without filling a deep shaping queue; the floor is two GSO
    # batches; the cap is Linux's tcp_limit_output_bytes here (4 MB).
    tx_queue_time: float = 0.004
    tx_queue_min: int = 2 * 62 * 1024
    tx_queue_bytes: int = 4 * 1024 * 1024
    # MPTCP settings of new connections (the default: MPTCP, a client joins from each of the
    # host's other addresses); None: plain TCP (a listener then serves TCP only)
    mptcp: MptcpConfig | None = field(default_factory=MptcpConfig)
    seed: int | None = None  # keys and nonces from random.Random(seed) instead of the OS
    # called with each MPTCP path-manager event (mptcp.connection.PmEvent) of every connection
    on_pm_event: Any = None


class Conn(AppEvents, EdgeTimer):
    """The edge's handle on one TcpConnection."""

    def __init__(
        self,
        stack: TcpStack,
        endpoint: Endpoint,
        tcp: TcpConnection,
        local: tuple[str, int],
        remote: tuple[str, int],
    ) -> None:
        self.stack = stack
        self.endpoint = endpoint
        self.tcp = self.core = tcp
        self.local = local
        self.remote = remote
        self.handler: ConnectionHandler | None = None
        self.edge = EdgeStats()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._src_b = packed(local[0])
        self._dst_b = packed(remote[0])
        self.sender = stack._make_sender(local[0], remote[0])
        self.tsq = stack._small_queue(self.sender, tcp)
        self.closed = False
        self.close_exc: BaseException | None = None
        self.connected = False
        self._dirty_in_batch = False
        self._rx_unflushed = 0
        self._app_done = False

    # The application side -------------------------------------------------------------------
    def send(self, data: bytes | memoryview) -> int:
        n = self.tcp.send(data)
        self.stack._mark(self)
        return n

    def read(self, max_bytes: int = -1) -> bytes | bytearray:
        return joined(self.read_chunks(max_bytes))

    def read_chunks(self, max_bytes: int = -1) -> list:
        """In-order data as the pieces it arrived in (``TcpConnection.read_chunks``)."""
        data = self.tcp.read_chunks(max_bytes)
        if data:
            self.stack._mark(self)  # the window may have opened: an update may be due
        return data

    @property
    def readable(self) -> int:
        return self.tcp.readable

    def close(self) -> None:
        if not self.closed:
            self.tcp.close(self.stack.now())
            self.stack._mark(self)

    def abort(self) -> None:
        if not self.closed:
            self.tcp.abort(self.stack.now())
            self.stack._mark(self)

    def stats(self) -> dict[str, Any]:
        core = self.tcp.stats
        if dataclasses.is_dataclass(core):
            d = dataclasses.asdict(core)
        elif isinstance(core, dict):
            d = dict(core)
        else:
            d = {k: v for k, v in vars(core).items() if not k.startswith("_")}
        d["edge"] = dataclasses.asdict(self.edge)
        ep = self.endpoint
        # Endpoint-wide (a listener's endpoint is shared by its connections): every packet the
        # BPF filter let through, and those that matched no connection.
        d["edge"]["endpoint_rx_packets"] = ep.rx.packets
        d["edge"]["endpoint_unknown_dropped"] = ep.unknown_dropped
        d["edge"]["endpoint_syns"] = ep.syns
        d["edge"]["endpoint_rx_queue_drops"] = ep.rx.kernel_drops()
        d["sender"] = self.stack.sender_kind() if self.sender.gso else "raw"
        return d

    # The wire side ----------------------------------------------------------------------------
    def _flush(self, now: float) -> None:
        tcp = self.tcp
        while True:
            ev = tcp.next_event()
            if ev is None:
                break
            self._dispatch(ev)
        tsq = self.tsq
        if tsq is not None and tcp.unsent:
            tcp.tx_room = tsq.room()
        segs = tcp.segments_to_send(now)
        if segs:
            send_segments(segs, self.sender, self.edge, self._src_b, self._dst_b)
        # Sending may itself have produced events (e.g. send buffer space after a retransmit).
        while True:
            ev = tcp.next_event()
            if ev is None:
                break
            self._dispatch(ev)
        if tcp.state is TcpState.TIME_WAIT and not self._app_done:
            # Both FINs are through: for the application the connection is over. The edge keeps
            # the TIME-WAIT state (and its port) until the core's timer ends it.
            self._app_done = True
            if self.handler:
                self.handler.on_closed(None)
        self._reschedule_timer()

    _flush_data = _flush  # (a plain connection's mid-batch flush is the whole one)

    def _finish(self, exc: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_exc = exc
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.handler and not self._app_done:
            self._app_done = True
            self.handler.on_closed(exc)
        self.endpoint._remove(self)

    def _reschedule_timer(self) -> None:
        if not self.closed:
            self._set_timer(self.tcp.get_timer())


class Endpoint:
    """One local (address, port): packet socket, reserved kernel port, fence rule, demux."""

    def __init__(self, stack: TcpStack, addr: str, port: int) -> None:
        self.stack = stack
        self._reservation, self.port = reserve_port(addr, port)
        self.addr = addr
        self.fence: KernelFence = stack.fence
        try:
            self.fence.block(addr, self.port)
            self.rx = PacketReceiver(addr, self.port)
        except BaseException:
            self.fence.unblock(addr, self.port)
            self._reservation.close()
            raise
        self.conns: dict[tuple[bytes, int, bytes], Conn] = {}
        self.on_syn: Callable[[TcpSegment, bytes, bytes], None] | None = None
        self.malformed_dropped = 0
        self.unknown_dropped = 0
        self.syns = 0
        self._closed = False
        stack.loop.add_reader(self.rx.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        stack = self.stack
        batch = self.rx.recv_batch(stack.config.batch)
        if not batch:
            return
        now = stack.now()
        conns = self.conns
        ack_bytes = stack.config.flush_bytes
        touched: list[Conn] = []
        keys = [
            (r.src, (r.tcp[0] << 8) | r.tcp[1] if len(r.tcp) >= 2 else -1, r.dst) for r in batch
        ]
        # pure ACKs that a later one in this batch supersedes are counted, not processed: at a
        # few hundred Mbit/s the peer's ACKs (one per two segments) are most of our CPU
        counts = coalesce_acks(keys, [r.tcp for r in batch], self._coalescible)
        for i, r in enumerate(batch):
            tcp = r.tcp
            conn = conns.get(keys[i])
            k = counts[i]
            if k == 0 and conn is not None:
                conn.edge.segments_in += 1
                conn.edge.acks_coalesced += 1
                continue
            try:
                seg = decode_segment(tcp, r.src, r.dst, verify_checksum=not r.csum_ok)
            except MalformedSegment as e:
                self.malformed_dropped += 1
                if conn is not None:
                    conn.edge.malformed_dropped += 1
                    conn.tcp.note_malformed()
                log.debug("malformed segment from %s dropped: %s", unpacked(r.src), e)
                continue
            if conn is None:
                self._unknown(seg, r.src, r.dst, now)
                continue
            conn.edge.segments_in += 1
            if k > 1:
                seg.acks = k
            conn.tcp.receive_segment(seg, now)
            if not conn._dirty_in_batch:
                conn._dirty_in_batch = True
                touched.append(conn)
            # A batch can hold a hundred segments; flushing only at its end would send one ACK
            # per batch and starve the peer's ACK clock while we work through it. Flush (ACK,
            # window update, more data) once ack_bytes of payload have come in (two 64 KB GRO
            # packets; the batch's end flushes whatever came after). Each ACK costs a sendmsg
            # and, on a veth, the peer's whole reaction to it in our context: acking every two
            # packets (~75 KB at 2 subflows) cost the 2-subflow receiver ~10% of its CPU per
            # Gbit. A batch this large only comes at Gbit rates, where the peer's GRO/GSO
            # packets each stand for many segments (stretch ACKs, as Linux's GRO receivers
            # send); at testbed rates a batch holds a few packets, each batch end acks them.
            plen = len(seg.payload)
            if plen:
                conn._rx_unflushed += plen
                if conn._rx_unflushed >= ack_bytes and not conn.closed:
                    conn._rx_unflushed = 0
                    conn._flush_data(now)
        for conn in touched:
            conn._rx_unflushed = 0
            conn._dirty_in_batch = False
            if not conn.closed:
                conn._flush(now)

    def _coalescible(self, key: tuple[bytes, int, bytes]) -> tuple[int, int] | None:
        """The connection's (snd_una, snd_max) as wire values when its pure ACKs may be
        coalesced: it exists, is established and not in loss recovery (where each ACK has a
        meaning of its own: partial ACKs, window inflation)."""
        conn = self.conns.get(key)
        if conn is None or conn.closed:
            return None
        t = conn.tcp
        if t.state is not TcpState.ESTABLISHED or t.in_recovery:
            return None
        return t.snd_una & 0xFFFFFFFF, t.snd_max & 0xFFFFFFFF

    def _unknown(self, seg: TcpSegment, src: bytes, dst: bytes, now: float) -> None:
        if seg.flags & SYN and not seg.flags & (ACK | RST) and self.on_syn is not None:
            self.syns += 1
            self.on_syn(seg, src, dst)
            return
        self.unknown_dropped += 1
        if seg.flags & RST:
            return
        # No connection: answer with a RST as the kernel would (RFC 9293 3.10.7.1).
        if seg.flags & ACK:
            rst = TcpSegment(seg.dst_port, seg.src_port, seg.ack, 0, RST, 0)
        else:
            seglen = len(seg.payload) + (1 if seg.flags & SYN else 0) + (1 if seg.flags & 1 else 0)
            rst = TcpSegment(
                seg.dst_port, seg.src_port, 0, (seg.seq + seglen) & 0xFFFFFFFF, RST | ACK, 0
            )
        try:
            s = raw_sender(unpacked(dst), unpacked(src))
            s.send(encode_segment(rst, dst, src), b"")
            s.close()
        except OSError as e:
            log.debug("could not send RST: %s", e)

    def add(self, conn: Conn) -> None:
        self.conns[(packed(conn.remote[0]), conn.remote[1], packed(conn.local[0]))] = conn

    def _remove(self, conn: Conn) -> None:
        key = (packed(conn.remote[0]), conn.remote[1], packed(conn.local[0]))
        if self.conns.get(key) is conn:
            del self.conns[key]
        conn.sender.close()
        if not self.conns and self.on_syn is None:
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.stack.loop.remove_reader(self.rx.fileno())
        except Exception:  # noqa: BLE001 - the loop may already be closed at exit
            pass
        self.rx.close()
        self.fence.unblock(self.addr, self.port)
        self._reservation.close()
        self.stack._endpoints.discard(self)


class Listener:
    """Passive opens on one endpoint: each SYN for an unknown 4-tuple becomes a Conn."""

    def __init__(
        self, stack: TcpStack, endpoint: Endpoint, on_accept: Callable[[Conn], ConnectionHandler]
    ) -> None:
        self.stack = stack
        self.endpoint = endpoint
        self.on_accept = on_accept
        self.extra: list[Endpoint] = []  # more addresses of an MPTCP listener (signal)
        endpoint.on_syn = self._on_syn

    @property
    def port(self) -> int:
        return self.endpoint.port

    def _on_syn(self, syn: TcpSegment, src: bytes, dst: bytes) -> None:
        now = self.stack.now()
        local = (unpacked(dst), syn.dst_port)
        remote = (unpacked(src), syn.src_port)
        tcp = TcpConnection.accept_syn(self.stack.tcp_config(), syn, local, remote, now)
        conn = Conn(self.stack, self.endpoint, tcp, local, remote)
        self.endpoint.add(conn)
        conn.handler = self.on_accept(conn)
        conn._flush(now)

    def close(self) -> None:
        for ep in [self.endpoint, *self.extra]:
            ep.on_syn = None
            if not ep.conns:
                ep.close()


class TcpStack:
    """All endpoints of one event loop. Create with ``TcpStack(config)`` inside the loop."""

    def __init__(
        self, config: StackConfig | None = None, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        self.config = config or StackConfig()
        self.loop = loop or asyncio.get_running_loop()
        self.fence = process_fence()
        self._endpoints: set[Endpoint] = set()
        self._dirty: list[Conn] = []
        self._flush_scheduled = False
        self._hops: dict[tuple[str, str], Any] = {}
        rng = random.Random(self.config.seed) if self.config.seed is not None else None
        self.registry = TokenRegistry(rng)  # MPTCP tokens, MIB and key source of this stack
        self._mptcp_conns: dict[int, Any] = {}

    @property
    def mptcp(self) -> MptcpConfig | None:
        m = self.config.mptcp
        return m if m is not None and m.enabled else None

    def now(self) -> float:
        return self.loop.time()

    def sender_kind(self) -> str:
        kind = self.config.sender or ("gso" if self.config.gso else "raw")
        if kind not in ("gso", "packet", "raw"):
            raise ValueError(f"unknown sender {kind!r}")
        return kind

    def tcp_config(self) -> TcpConfig:
        cfg = self.config.tcp
        if self.sender_kind() == "gso" and getattr(cfg, "max_segment_payload", None) is None:
            cfg = dataclasses.replace(cfg, max_segment_payload=self.config.gso_max_payload)
        return cfg

    def subflow_tcp_config(self) -> TcpConfig:
        """``tcp_config`` for MPTCP subflows: segment payloads are views into the send buffer
        (``payload_views``; the MPTCP edge sends a round's segments before anything grows or
        cuts a subflow's send buffer: the application writes into the connection's)."""
        return dataclasses.replace(self.tcp_config(), payload_views=True)

    def _make_sender(self, src: str, dst: str) -> RawIpSender | RawIp6Sender | GsoPacketSender:
        if self.sender_kind() in ("gso", "packet"):
            try:
                key = (src, dst)
                hop = self._hops.get(key)
                if hop is None:
                    hop = self._hops[key] = resolve_next_hop(src, dst)
                if hop.dev != "lo":
                    return GsoPacketSender(src, dst, hop)
            except OSError as e:
                log.warning("no GSO sender for %s -> %s (%s); using a raw IP socket", src, dst, e)
        return raw_sender(src, dst)

    def _small_queue(self, sender: Any, tcp: TcpConnection) -> SmallQueue | None:
        """TCP small queues for a connection's or subflow's socket (None: no limit)."""
        c = self.config
        if not c.tx_queue_bytes:
            return None
        return SmallQueue(sender, tcp, c.tx_queue_time, c.tx_queue_min, c.tx_queue_bytes)

    def _mark(self, conn: Conn) -> None:
        if conn._dirty_in_batch or conn in self._dirty:
            return
        self._dirty.append(conn)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush_dirty)

    def _flush_dirty(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        now = self.now()
        for conn in dirty:
            if not conn.closed:
                conn._flush(now)

    async def connect(
        self,
        host: str,
        port: int,
        handler: ConnectionHandler,
        local_addr: tuple[str, int] | str | None = None,
    ) -> Conn:
        """Active open; returns once the SYN is out (the handler hears ``on_connected``).
        IPv4 or IPv6; a v4-mapped address (``::ffff:a.b.c.d``) is the IPv4 one."""
        if isinstance(local_addr, str):
            local_addr = (local_addr, 0)
        host = normalize(host)
        if local_addr:
            laddr, lport = normalize(local_addr[0]), local_addr[1]
        else:
            laddr, lport = local_address_for(host), 0
        if (":" in laddr) != (":" in host):
            raise ValueError(f"local address {laddr} and {host} are of different families")
        ep = Endpoint(self, laddr, lport)
        self._endpoints.add(ep)
        if self.mptcp is not None:
            return self._connect_mptcp(ep, laddr, host, port, handler)
        try:
            tcp = TcpConnection(self.tcp_config(), local=(laddr, ep.port), remote=(host, port))
            conn = Conn(self, ep, tcp, (laddr, ep.port), (host, port))
        except BaseException:
            ep.close()
            raise
        ep.add(conn)
        conn.handler = handler
        now = self.now()
        tcp.connect(now)
        conn._flush(now)
        return conn

    def _connect_mptcp(
        self, ep: Endpoint, laddr: str, host: str, port: int, handler: ConnectionHandler
    ) -> Any:
        cfg = self._normalized(self.mptcp)
        assert cfg is not None
        if cfg.endpoints is None:
            # The default: a subflow from each of the host's other addresses.
            others = [a for a in local_addresses() if a != laddr]
            cfg = dataclasses.replace(
                cfg,
                endpoints=[
                    MpEndpoint(a, frozenset({"subflow"}), i + 1) for i, a in enumerate(others)
                ],
            )
        try:
            mconn = MptcpConnection(cfg, self.subflow_tcp_config(), self.registry)
            sub = mconn.connect((laddr, ep.port), (host, port), self.now())
            mp = MptcpConn(self, mconn)
        except BaseException:
            ep.close()
            raise
        mp.add_link(sub, ep)
        mp.handler = handler
        mp._flush(self.now())
        return mp

    @staticmethod
    def _normalized(cfg: MptcpConfig | None) -> MptcpConfig | None:
        """Endpoint addresses in the edge's canonical text (v4-mapped ones as IPv4)."""
        if cfg is None or not cfg.endpoints:
            return cfg
        eps = [dataclasses.replace(e, address=normalize(e.address)) for e in cfg.endpoints]
        return dataclasses.replace(cfg, endpoints=eps)

    def new_endpoint(self, addr: str, port: int = 0) -> Endpoint:
        """A packet endpoint on (addr, port), owned by this stack (port 0: ephemeral)."""
        ep = Endpoint(self, addr, port)
        self._endpoints.add(ep)
        return ep

    def listen(
        self, host: str, port: int, on_accept: Callable[[Conn], ConnectionHandler]
    ) -> Listener:
        """Passive opens on (host, port): an IPv4 or IPv6 address, 0.0.0.0 (any IPv4 one) or
        ``::`` (any address of either family, as a dual-stack kernel socket)."""
        host = normalize(host) if host else ANY4
        ep = Endpoint(self, host, port)
        self._endpoints.add(ep)
        listener = Listener(self, ep, on_accept)
        cfg = self._normalized(self.mptcp)
        if cfg is not None:
            # MPTCP listener: SYNs go through the token table (joins) or start connections;
            # addresses it announces (signal endpoints) listen on the same port.
            def on_syn(syn: TcpSegment, src: bytes, dst: bytes, _ep: Endpoint = ep) -> None:
                on_listener_syn(self, _ep, listener, syn, src, dst, cfg)

            ep.on_syn = on_syn
            for e in cfg.endpoints or ():
                if "signal" in e.flags and e.address != ep.addr:
                    if (e.port or ep.port) == ep.port and _covers(ep.addr, e.address):
                        continue  # the wildcard endpoint already takes its segments
                    extra = Endpoint(self, e.address, e.port or ep.port)
                    self._endpoints.add(extra)

                    def on_syn2(syn: TcpSegment, src: bytes, dst: bytes, _ep=extra) -> None:
                        on_listener_syn(self, _ep, listener, syn, src, dst, cfg)

                    extra.on_syn = on_syn2
                    listener.extra.append(extra)
        return listener

    def debug_state(self) -> list[dict[str, Any]]:
        """What each connection looks like right now (for a SIGUSR1 dump when a run stalls)."""
        out = []
        for ep in self._endpoints:
            for conn in ep.conns.values():
                t = conn.tcp
                d: dict[str, Any] = {
                    "local": conn.local,
                    "remote": conn.remote,
                    "state": getattr(t.state, "value", str(t.state)),
                    "timer_in": (
                        None if t.get_timer() is None else round(t.get_timer() - self.now(), 4)
                    ),
                    "handler_paused": getattr(getattr(conn, "handler", None), "paused", None),
                }
                for k in ("snd_una", "snd_nxt", "snd_max", "snd_wnd", "rcv_nxt", "_rcv_adv"):
                    if hasattr(t, k):
                        d[k] = getattr(t, k)
                for k in ("readable", "bytes_in_flight", "send_buffer_free", "cwnd"):
                    v = getattr(t, k, None)
                    d[k] = v() if callable(v) else v
                d["stats"] = conn.stats()
                mp = getattr(conn, "mp", None)  # a subflow: its MPTCP connection's data level
                if mp is not None:
                    d["data_level"] = mp.mconn.debug_state()
                out.append(d)
        return out

    def close(self) -> None:
        """Drop every endpoint (sockets, port reservations, fence rules). Connections vanish."""
        watch = getattr(self, "_ifwatch", None)
        if watch:
            watch.close()
            self._ifwatch = None
        for mp in list(self._mptcp_conns.values()):
            if mp._timer is not None:
                mp._timer.cancel()
                mp._timer = None
            mp.closed = True
            mp.mconn._unregister()
        self._mptcp_conns.clear()
        for ep in list(self._endpoints):
            for conn in list(ep.conns.values()):
                if getattr(conn, "_timer", None) is not None:
                    conn._timer.cancel()
                conn.closed = True
                conn.sender.close()
            ep.conns.clear()
            ep.on_syn = None
            ep.close()
