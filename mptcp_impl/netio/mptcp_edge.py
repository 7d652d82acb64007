"""The asyncio edge of an MPTCP connection: one sans-I/O ``MptcpConnection``, one packet
endpoint and sender per subflow.

An ``Endpoint`` (stack.py) demultiplexes by 4-tuple to a ``SubflowLink``, which feeds the
segment to that subflow's TcpConnection (its MPTCP hooks run inside) and asks the owning
``MptcpConn`` to flush: drain the connection's events, open the subflows its path manager asks
for, and send every subflow's segments through that subflow's own sender (its source address
picks the route, as multipath needs). ``MptcpConn`` offers the application side of ``Conn``,
so the streams in ``api.py`` drive either.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from ..mptcp.connection import MptcpConnection, OpenSubflow, SubflowClosed
from ..mptcp.ctrl import MptcpConfig
from ..mptcp.listener import route_syn
from ..mptcp.subflow import Subflow
from ..tcp.connection import TcpState
from ..tcp.reassembly import joined
from ..tcp.segment import TcpSegment, encode_segment
from .addr import local_address_for, packed, unpacked
from .base import (
    AppEvents,
    ConnectionHandler,
    EdgeStats,
    EdgeTimer,
    send_segments,
)
from .ifwatch import InterfaceWatch
from .packet import raw_sender

if TYPE_CHECKING:
    from .stack import Endpoint, TcpStack

log = logging.getLogger(__name__)


def _watch_interfaces(stack: Any) -> None:
    """With a stack's first MPTCP connection, watch local addresses (rtnetlink): each change
    reaches every connection's path manager (``interface_up`` / ``interface_down``)."""
    if getattr(stack, "_ifwatch", None) is not None:
        return

    def changed(addr: str, up: bool) -> None:
        now = stack.now()
        for mp in list(stack._mptcp_conns.values()):
            if not mp.closed:
                (mp.mconn.interface_up if up else mp.mconn.interface_down)(addr, now)
                mp._flush(now)

    try:
        stack._ifwatch = InterfaceWatch(stack.loop, changed)
    except OSError as e:
        log.warning("no interface events: %s", e)
        stack._ifwatch = False


class SubflowLink:
    """What an endpoint's demux holds for one subflow (the interface of ``stack.Conn`` that
    ``Endpoint`` uses)."""

    def __init__(self, mp: MptcpConn, sub: Subflow, endpoint: Endpoint) -> None:
        self.mp = mp
        self.sub = sub
        self.tcp = sub.tcp
        self.endpoint = endpoint
        self.local = sub.local
        self.remote = sub.remote
        self.edge = EdgeStats()
        self.closed = False
        self._dirty_in_batch = False
        self._rx_unflushed = 0
        self._src_b = packed(sub.local[0])
        self._dst_b = packed(sub.remote[0])
        self.sender = mp.stack._make_sender(sub.local[0], sub.remote[0])
        self.tsq = mp.stack._small_queue(self.sender, sub.tcp)

    @property
    def handler(self) -> Any:
        return self.mp.handler

    def stats(self) -> dict[str, Any]:
        d = dataclasses.asdict(self.tcp.stats)
        d["edge"] = dataclasses.asdict(self.edge)
        d["mptcp"] = self.sub.info()
        return d

    def _flush(self, now: float) -> None:
        self.mp._flush(now)

    def _flush_data(self, now: float) -> None:
        self.mp._flush_data(self, now)

    def send_segments(self, segs: list[TcpSegment]) -> None:
        send_segments(segs, self.sender, self.edge, self._src_b, self._dst_b)


class MptcpConn(AppEvents, EdgeTimer):
    """The edge's handle on one MPTCP connection (same application side as ``stack.Conn``)."""

    def __init__(self, stack: TcpStack, mconn: MptcpConnection) -> None:
        self.stack = stack
        self.mconn = self.core = mconn
        self.links: dict[int, SubflowLink] = {}
        self.handler: ConnectionHandler | None = None
        self.closed = False
        self.close_exc: BaseException | None = None
        self.connected = False
        self._dirty_in_batch = False
        self._app_done = False
        self._timer: Any = None
        self._timer_at: float | None = None
        init = mconn.initial
        assert init is not None
        self.local = init.local
        self.remote = init.remote
        stack._mptcp_conns[id(mconn)] = self
        self._on_pm_event = stack.config.on_pm_event
        mconn.pm_events_enabled = self._on_pm_event is not None
        _watch_interfaces(stack)

    # The application side -------------------------------------------------------------------
    def send(self, data: bytes | memoryview) -> int:
        n = self.mconn.send(data)
        self.stack._mark(self)
        return n

    def read(self, max_bytes: int = -1) -> bytes | bytearray:
        return joined(self.read_chunks(max_bytes))

    def read_chunks(self, max_bytes: int = -1) -> list:
        """In-order data as the pieces it arrived in (``MptcpConnection.read_chunks``)."""
        data = self.mconn.read_chunks(max_bytes)
        if data:
            self.stack._mark(self)
        return data

    @property
    def readable(self) -> int:
        return self.mconn.readable

    def close(self) -> None:
        if not self.closed:
            self.mconn.close(self.stack.now())
            self.stack._mark(self)

    def abort(self, on_ack: bool = False) -> None:
        """Reset the connection (MP_FASTCLOSE on RSTs; ``on_ack``: on an ACK, RFC 8684 3.5)."""
        if not self.closed:
            self.mconn.abort(self.stack.now(), on_ack=on_ack)
            self.stack._mark(self)

    # The path manager's actions (``ip mptcp endpoint change/del`` on one connection) ----------
    def set_backup(self, address: str, backup: bool) -> int:
        """MP_PRIO on every subflow from ``address``; how many."""
        n = self.mconn.set_endpoint_backup(address, backup, self.stack.now())
        self.stack._mark(self)
        return n

    def remove_address(self, address: str) -> bool:
        """REMOVE_ADDR for a local address (id 0: the initial subflow's); its subflows go."""
        ok = self.mconn.remove_address(address, self.stack.now())
        self.stack._mark(self)
        return ok

    def stats(self) -> dict[str, Any]:
        """The first subflow's TCP counters (as a plain TCP connection reports them), plus
        ``mptcp``: fallback, every subflow and the MIB."""
        init = self.mconn.initial
        d: dict[str, Any] = {}
        if init is not None and init.tcp is not None:
            d = dataclasses.asdict(init.tcp.stats)
        edge = {
            "segments_in": 0,
            "segments_out": 0,
            "packets_out": 0,
            "malformed_dropped": 0,
            "send_dropped": 0,
            "acks_coalesced": 0,
        }
        for link in self.links.values():
            for k in edge:
                edge[k] += getattr(link.edge, k)
        # Endpoint-wide, of the first subflow's endpoint (a listener's is shared by its
        # connections), as stack.Conn reports them.
        first = next(iter(self.links.values()), None)
        if first is not None:
            ep = first.endpoint
            edge["endpoint_rx_packets"] = ep.rx.packets
            edge["endpoint_unknown_dropped"] = ep.unknown_dropped
            edge["endpoint_syns"] = ep.syns
            edge["endpoint_rx_queue_drops"] = ep.rx.kernel_drops() if not ep._closed else 0
        d["edge"] = edge
        d["sender"] = self.stack.sender_kind()
        d["mptcp"] = self.mconn.info()
        return d

    # Subflows ---------------------------------------------------------------------------------
    def add_link(self, sub: Subflow, endpoint: Endpoint) -> SubflowLink:
        link = SubflowLink(self, sub, endpoint)
        self.links[id(sub)] = link
        endpoint.add(link)  # type: ignore[arg-type]
        return link

    def _open_subflow(self, req: OpenSubflow, now: float) -> None:
        local_addr = req.local_addr
        try:
            if not local_addr:  # any address of the remote's family: the kernel's routing picks
                local_addr = local_address_for(req.remote[0])
            ep = self.stack.new_endpoint(local_addr, 0)
        except OSError as e:
            log.warning("no subflow from %s to %s: %s", local_addr or "*", req.remote[0], e)
            self.mconn.subflow_open_failed(req, now)  # its slot is free again
            return
        sub = self.mconn.add_subflow(req, (local_addr, ep.port), now)
        self.add_link(sub, ep)

    def _drop_link(self, sub: Subflow) -> None:
        link = self.links.get(id(sub))
        if link is None or link.closed:
            return
        if sub.fastclose:
            return  # it answers a challenge ACK until the connection's linger ends
        if sub.tcp.state is TcpState.TIME_WAIT:
            return  # keep the 4-tuple until TIME-WAIT ends (the core's timer)
        link.closed = True
        link.endpoint._remove(link)  # type: ignore[arg-type]

    # The wire side ----------------------------------------------------------------------------
    def _flush(self, now: float) -> None:
        if self.closed:
            return
        m = self.mconn
        self._events(now)
        # TCP small queues: the room of each subflow that may send new data in this flush
        # (data not yet given to a subflow, or on it unsent), and of one left without room
        # (owed copies, hole repairs and opportunistic retransmissions also ask its space);
        # a subflow with room and nothing to send is not asked (no ioctl)
        waiting = m.to_schedule
        for link in self.links.values():
            tsq = link.tsq
            if tsq is not None and not link.closed:
                tcp = link.tcp
                if waiting or tcp.unsent or (tcp.tx_room or 0) <= 0:
                    tcp.tx_room = tsq.room()
        pairs = m.segments_to_send(now)
        if pairs:
            by_link: dict[int, list[TcpSegment]] = {}
            for sub, seg in pairs:
                by_link.setdefault(id(sub), []).append(seg)
            for key, segs in by_link.items():
                link = self.links.get(key)
                if link is not None:
                    link.send_segments(segs)
        self._events(now)
        # subflows whose TIME-WAIT ended
        for link in list(self.links.values()):
            if not link.closed and link.sub.closed and link.sub.tcp.state is TcpState.CLOSED:
                link.closed = True
                link.endpoint._remove(link)  # type: ignore[arg-type]
        self._reschedule_timer()

    def _flush_data(self, link: SubflowLink, now: float) -> None:
        """The flush in the middle of a batch, after enough data on ``link``: the data level's
        steady-state round for that subflow (its ACK), then the application's events; the
        whole flush when the core says the round needs it. The batch ends with a whole flush."""
        if self.closed:
            return
        segs = self.mconn.data_round(link.sub, now)
        if segs is None:
            self._flush(now)
            return
        if segs:
            link.send_segments(segs)
        self._events(now)

    def _events(self, now: float) -> None:
        m = self.mconn
        cb = self._on_pm_event
        if cb is not None:
            while (pe := m.next_pm_event()) is not None:
                cb(pe)
        while True:
            ev = m.next_event()
            if ev is None:
                break
            name = type(ev).__name__
            if name == "OpenSubflow":
                self._open_subflow(ev, now)
            elif name == "SubflowClosed":
                assert isinstance(ev, SubflowClosed)
                self._drop_link(ev.subflow)
            else:
                self._dispatch(ev)

    def _finish(self, exc: BaseException | None) -> None:
        if self._app_done:
            return
        self._app_done = True
        self.close_exc = exc
        if self.handler:
            self.handler.on_closed(exc)
        linger = self.mconn.linger_until
        if (linger is None or self.stack.now() >= linger) and (
            not self.mconn.subflows
            or all(s.tcp.state is TcpState.CLOSED for s in self.mconn.subflows)
        ):
            self._release()

    def _release(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for link in self.links.values():
            if not link.closed:
                link.closed = True
                link.endpoint._remove(link)  # type: ignore[arg-type]
        self.stack._mptcp_conns.pop(id(self.mconn), None)

    def _reschedule_timer(self) -> None:
        if self.closed:
            return
        at = self.mconn.get_timer()
        linger = self.mconn.linger_until
        if linger is not None and self.stack.now() < linger and (at is None or at > linger):
            at = linger  # our fastclose: its subflows still answer until then
        elif at is None and self._app_done:
            self._release()  # nothing left to wait for (TIME-WAITs over)
            return
        self._set_timer(at)


def on_listener_syn(
    stack: TcpStack,
    endpoint: Endpoint,
    listener: Any,
    syn: TcpSegment,
    src: bytes,
    dst: bytes,
    config: MptcpConfig,
) -> None:
    """A SYN on an MPTCP listener: a new connection, a join, or an RST with MP_TCPRST."""
    now = stack.now()
    local = (unpacked(dst), syn.dst_port)
    remote = (unpacked(src), syn.src_port)
    res = route_syn(syn, local, remote, now, stack.registry, config, stack.subflow_tcp_config())
    if res.conn is None:
        assert res.refusal is not None
        segs = res.refusal.segments_to_send(now)
        try:
            s = raw_sender(local[0], remote[0])
            for seg in segs:
                s.send(encode_segment(seg, dst, src), b"")
            s.close()
        except OSError as e:
            log.debug("could not send RST: %s", e)
        return
    assert res.subflow is not None
    if res.new:
        mp = MptcpConn(stack, res.conn)
        mp.add_link(res.subflow, endpoint)
        mp.handler = listener.on_accept(mp)
        mp._flush(now)
        return
    mp = stack._mptcp_conns.get(id(res.conn))
    if mp is None:
        return
    mp.add_link(res.subflow, endpoint)
    mp._flush(now)
