"""The MPTCP connection (Linux's protocol.c): sans-I/O, above ordinary TCP subflows.

The connection exists from the moment it is created, with its key and token, and its first
subflow; data passes to subflows as DSS mappings (``Subflow.push``) and comes back from them
through mappings (``Subflow.pull``) into a data-level reassembly queue. Falling back to plain
TCP is a normal path (``fallback``): the first subflow then carries the byte stream as is.

Driven like ``TcpConnection``: the edge feeds segments to ``sub.tcp.receive_segment`` and time
to ``handle_timer``, then drains ``segments_to_send`` (pairs of subflow and segment) and
``next_event``. Two events are for the edge rather than the application: ``OpenSubflow`` (the
path manager wants a subflow from a local address: the edge picks a port and calls
``add_subflow``) and ``SubflowClosed`` (forget its 4-tuple).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
from collections import deque
from dataclasses import dataclass
from typing import Any

from ..tcp.connection import (
    Closed,
    Connected,
    DataReceived,
    PeerClosed,
    Reset,
    SendBufferAvailable,
    TcpConfig,
    TcpConnection,
    TcpState,
)
from ..tcp.rangeset import RangeSet
from ..tcp.reassembly import drain_held, joined, read_pieces
from ..tcp.segment import TcpSegment
from ..tcp.sendbuf import SendBuffer
from . import crypto
from .coupled import make_cc
from .ctrl import Endpoint, MptcpConfig
from .holes import is_silent, note_progress, repair_hole, stall_limit
from .opportunistic import opportunistic_retransmit
from .options import AddAddr, FastClose, MpCapable, MpFail, MpPrio, RemoveAddr
from .pm import make_pm
from .retrans import DataRetransmitter, Ranges
from .sched import Candidates, as_list, is_backup, make_scheduler
from .subflow import DSS_DATA_ROOM, Subflow, mpc_usable
from .token import TokenRegistry

MASK64 = (1 << 64) - 1
HALF64 = 1 << 63
ADD_ADDR_RETRANS_MAX = 3  # Linux: an ADD_ADDR is resent at most 3 times (pm_kernel.c)
RST_MIDDLEBOX = 6  # MP_TCPRST reason: middlebox interference (a checksum failure)
FASTCLOSE_LINGER = 1.0  # seconds a reset subflow still answers (its RST may draw a challenge)
# Subflow states that show the peer has our DATA_ACK of its DATA_FIN once the subflows close:
# our FIN (which carried it) acknowledged, or the peer's FIN (sent only after that DATA_ACK)
_PEER_HAS_LAST_ACK = frozenset(
    {
        TcpState.FIN_WAIT_2,
        TcpState.TIME_WAIT,
        TcpState.CLOSING,
        TcpState.CLOSE_WAIT,
        TcpState.LAST_ACK,
    }
)


@dataclass(slots=True)
class OpenSubflow:
    """For the edge: open a subflow from ``local_addr`` to ``remote``, then ``add_subflow``.
    An empty ``local_addr``: any local address of the remote's family, the one routing picks
    (Linux's "IPADDRANY" local address for a join to an announced address of another family)."""

    local_addr: str
    remote: tuple[str, int]
    local_id: int
    remote_id: int
    backup: bool
    # settled: the edge opened it (``add_subflow``) or could not (``subflow_open_failed``);
    # either way its subflow slot is accounted for once
    settled: bool = False


@dataclass(slots=True)
class PmEvent:
    """A path-manager event, as Linux's userspace PM reports them (``ip mptcp monitor``):
    ``type`` is one of created, established, closed, announced, removed, sub_established,
    sub_closed, priority; the rest are the attributes that event has (addresses, ids, flags).
    Drained with ``MptcpConnection.next_pm_event`` (a stream apart from the application's)."""

    type: str
    attrs: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, **self.attrs}


@dataclass(slots=True)
class SubflowClosed:
    """For the edge: this subflow is gone; its 4-tuple no longer belongs to the connection."""

    subflow: Subflow


def _unwrap64(x: int, ref: int) -> int:
    return ref + ((x - ref + HALF64) & MASK64) - HALF64


def _whole_bursts(s: Subflow, max_map: int) -> int:
    """A full-size mapping for ``s``: ``max_map`` cut to whole segments as its TCP sends them
    (GSO super-packets, else MSS). A segment never spans two mappings, so a mapping of 64512
    bytes over 62480-byte super-packets left a 2032-byte tail: two sends a mapping instead of
    one (and, without GSO, a short segment after every 45 full ones)."""
    burst = s.tcp.max_burst
    if burst >= max_map or burst <= 0:
        return max_map
    return max_map - max_map % burst


def add_addr_hmac(
    key_sender: int, key_receiver: int, addr_id: int, address: Any, port: int | None
) -> int:
    """RFC 8684 3.4.1: rightmost 64 bits of HMAC(Ks||Kr, id || address || port), port 0 when
    absent."""
    msg = bytes([addr_id]) + address.packed + (port or 0).to_bytes(2, "big")
    key = key_sender.to_bytes(8, "big") + key_receiver.to_bytes(8, "big")
    return int.from_bytes(hmac.new(key, msg, hashlib.sha256).digest()[-8:], "big")


class MptcpConnection:
    def __init__(
        self,
        config: MptcpConfig | None = None,
        tcp_config: TcpConfig | None = None,
        registry: TokenRegistry | None = None,
    ) -> None:
        self.config = cfg = config or MptcpConfig()
        self.tcp_config = tcp_config or TcpConfig()
        self.registry = registry if registry is not None else TokenRegistry()
        self.mib = self.registry.mib
        self.rng = self.registry.rng
        self.sched = make_scheduler(cfg.scheduler)
        # coupled congestion control: one coordinator, a member per subflow (coupled.py)
        self.cc_group, tcp_cc = make_cc(cfg.cc)
        if tcp_cc is not None:
            self.tcp_config = dataclasses.replace(self.tcp_config, cc=tcp_cc)
        self.pm = make_pm(cfg.pm)  # path manager (pm.py)
        self.pm.attach(self)
        self.rcv_buf = cfg.rcv_buf if cfg.rcv_buf is not None else self.tcp_config.rcv_buf
        self.snd_buf = cfg.snd_buf if cfg.snd_buf is not None else self.tcp_config.snd_buf
        self.subflows: list[Subflow] = []
        self._seen_subflows: list[Subflow] = []  # closed ones too, for the report
        self.initial: Subflow | None = None
        self.fallback = not cfg.enabled
        self.fallback_reason = "" if cfg.enabled else "MPTCP disabled"
        self.fully_established = False
        self.data_ack_seen = False  # a DSS came from the peer (no more fallback on a bare segment)
        self.checksum = cfg.checksum
        self.local_key, self.local_token = self.registry.new_key()
        self.local_idsn = crypto.idsn(self.local_key)
        self.remote_key = 0
        self.remote_token = 0
        self.remote_idsn = 0
        self._registered = False
        self._events: deque[Any] = deque()
        self._now = 0.0
        self._connected = False
        self._closed = False
        # send side (data sequence numbers are unwrapped ints; & MASK64 on the wire)
        self.snd_una = self.snd_nxt = self.local_idsn + 1
        self.snd_edge = self.snd_una  # right edge the peer allows (DATA_ACK + window)
        self._sbuf = SendBuffer()  # written, not yet DATA_ACKed
        self._snd_blocked = False
        # Every range handed to a subflow, in the order handed: [dsn, len, subflow, queued]
        # (queued: already put in ``_reinject`` because its subflow failed). ``_held`` indexes
        # the chunks of each subflow not yet queued, so a failing subflow's holdings are found
        # without scanning everything (each chunk leaves it once: amortized O(1)).
        self._chunks: deque[list[Any]] = deque()
        self._held: dict[Subflow, deque[list[Any]]] = {}
        # chunks recorded below the highest start recorded so far (copies, reinjections,
        # repairs): the rest of ``_chunks`` is in DSN order (holes.chunks_at relies on it)
        self._chunk_top = 0
        self._late: list[list[Any]] = []
        self._late_ids: set[int] = set()
        # ranges waiting to be resent on another subflow: [dsn, len, subflow it failed on]
        # (never sent back there), and the set of them all, so that a range two failing
        # subflows both held is queued once
        self._reinject: deque[list[Any]] = deque()
        self._reinject_set = Ranges()
        self._owed: dict[Subflow, int] = {}  # copies a subflow had no room for, from this DSN
        # a stalled DATA_ACK (holes.py): since when it stands, when its hole is due for an
        # early repair, and how far the last repair reached
        self._una_moved_at = 0.0
        self._repair_at: float | None = None
        self._repaired_to = 0
        self._rtx = DataRetransmitter()  # data-level retransmission timer and window probe
        # receive side
        self.rcv_nxt = 0
        # in-order data not read yet: the pieces as they came (a subflow's piece, a held
        # chunk), queued rather than appended, so no byte is copied on its way to the
        # reader (``read_chunks``); ``read`` joins them only when there are several
        self._rq: list[bytes | bytearray | memoryview] = []
        self._rlen = 0
        # out-of-order data above rcv_nxt: the ranges held and the chunks tiling them, keyed by
        # their start (only bytes not held yet are stored, as tcp/reassembly.py does)
        self._ooo = RangeSet()
        self._ooo_data: dict[int, bytes] = {}
        self._rcv_wnd_sent = 0  # data-level right edge advertised (DATA_ACK + window)
        self._peer_fin: int | None = None
        self._eof = False
        # close
        self._close_requested = False
        self._fin_dsn: int | None = None
        self._fin_acked = False
        self._fin_send = False
        self._fin_deadline: float | None = None
        self._fin_tries = 0  # DATA_FIN retransmissions (each on the next usable subflow)
        self._subflows_closing = False
        self._linger_deadline: float | None = None  # subflow FINs unanswered by then: reset
        self._linger_cap: float | None = None  # ... unless the peer may lack our last DATA_ACK
        self._graceful_subflow_end = False  # a subflow closed with FINs since the close began
        # Linux's close timeout (net.mptcp.close_timeout): no subflow can carry the connection
        # (none left, or all on local addresses that are down) while its streams are not
        # finished; a new subflow or a returning interface must come before this deadline
        self._tout_deadline: float | None = None
        self._down_addrs: set[str] = set()  # local addresses the edge reported down
        # path manager state
        self._add_addr_accepted = 0
        self._joins = 0
        self._announced = False
        # the peer's MP_CAPABLE had flag C: no joins to its initial address and port (Linux's
        # remote_deny_join_id0)
        self.remote_deny_join_id0 = False
        self._c_flag_used = False  # (the one ADD_ADDR taken in Linux's C-flag case)
        self._remote_addrs: set[tuple[str, int]] = set()  # announced to us, already acted on
        # ADD_ADDRs we sent and the peer has not echoed yet: id -> [option, deadline, resent]
        self._add_addr_pending: dict[int, list[Any]] = {}
        self._removed_ids: set[int] = set()  # local address ids we removed (REMOVE_ADDR sent)
        self._fastclosed = False
        self._csum_corrupted = False  # (config.corrupt_checksum_at done)
        self._mp_fail_sent = False
        self._infinite_map_pending = False
        self._mp_fail_answer = False
        # subflows we reset with MP_FASTCLOSE: still answer what arrives (an RST at the ACK of
        # a challenge ACK, RFC 5961, again with MP_FASTCLOSE) until ``linger_until``
        self._lingering: list[Subflow] = []
        self.linger_until: float | None = None
        self._fastclose_carrier: Subflow | None = None  # MP_FASTCLOSE on an ACK sent there
        self._aborting = False  # (abort(on_ack=True): no more data, DATA_FIN or joins)
        self._pm_events: deque[PmEvent] = deque()
        self._pm_created = False
        self.pm_events_enabled = True  # False: none are kept (nobody listens)

    # ================================================================= opening
    def connect(self, local: tuple[str, int], remote: tuple[str, int], now: float) -> Subflow:
        """Active open: the first subflow's SYN carries MP_CAPABLE."""
        self._now = now
        sub = Subflow(self, local, remote, initial=True, active=True)
        self._attach(sub, TcpConnection(self.tcp_config, local, remote, hooks=sub))
        self.initial = sub
        self._register()
        sub.tcp.connect(now)
        if not self.fallback:
            self.mib.inc("MPCapableSYNTX")
        return sub

    # ----------------------------------------------------------------- path-manager events
    def next_pm_event(self) -> PmEvent | None:
        return self._pm_events.popleft() if self._pm_events else None

    def _pm_event(self, kind: str, sub: Subflow | None = None, **attrs: Any) -> None:
        if not self.pm_events_enabled:
            return
        a: dict[str, Any] = {"token": f"{self.local_token:08x}"}
        if sub is not None:
            a.update(
                saddr=sub.local[0],
                sport=sub.local[1],
                daddr=sub.remote[0],
                dport=sub.remote[1],
                loc_id=sub.local_id,
                rem_id=sub.remote_id,
                backup=int(sub.backup or sub.peer_backup),
            )
        a.update(attrs)
        self._pm_events.append(PmEvent(kind, a))

    @classmethod
    def accept(
        cls,
        config: MptcpConfig,
        tcp_config: TcpConfig,
        registry: TokenRegistry,
        syn: TcpSegment,
        local: tuple[str, int],
        remote: tuple[str, int],
        now: float,
    ) -> MptcpConnection:
        """Passive open from a SYN without MP_JOIN: MPTCP if it carries a usable MP_CAPABLE,
        plain TCP otherwise."""
        conn = cls(config, tcp_config, registry)
        conn._now = now
        sub = Subflow(conn, local, remote, initial=True, active=False)
        conn.initial = sub
        sub.tcp = None  # type: ignore[assignment]
        tcp = TcpConnection.accept_syn(conn.tcp_config, syn, local, remote, now, hooks=sub)
        conn._attach(sub, tcp)
        return conn

    def _attach(self, sub: Subflow, tcp: TcpConnection) -> None:
        sub.tcp = tcp
        self._seen_subflows.append(sub)
        if not self.fallback:
            tcp.reserve_option_space(DSS_DATA_ROOM)
        self.subflows.append(sub)

    def _register(self) -> None:
        if not self._registered and not self.fallback:
            self.registry.add(self.local_token, self)
            self._registered = True

    def _unregister(self) -> None:
        if self._registered:
            self.registry.remove(self.local_token, self)
            self._registered = False

    def accept_join(
        self, syn: TcpSegment, local: tuple[str, int], remote: tuple[str, int], now: float
    ) -> Subflow:
        """A Linux (or our) client joins: answer with MP_JOIN's SYN/ACK, or refuse with RST.

        The SYN takes no subflow slot: its HMAC is checked only on the third ACK, and a
        half-open join (a lost third ACK, a spoofed SYN) must not hold a slot until its SYN/ACK
        retries run out. The slot is taken with the valid third ACK (``take_join_slot``, as
        Linux's mptcp_finish_join); here only joins already complete count against the limit
        (Linux's accept_subflow)."""
        self._now = now
        self.mib.inc("MPJoinSynRx")
        local_id = self._local_id_for(local[0])
        backup = any(ep.address == local[0] and "backup" in ep.flags for ep in self._endpoints())
        sub = Subflow(
            self, local, remote, initial=False, active=False, local_id=local_id, backup=backup
        )
        refuse = (
            self.fallback
            or self._mp_fail_sent  # Linux: after accepting a fail, no other subflow
            or not self.fully_established
            or self._joins >= self.config.limits.subflows
            or self._data_done()
            or self._aborting
            or self._closed
            or self._join_to_initial_denied(local)
        )
        if refuse:
            # Linux's subflow_check_req: MPJoinRejected, RST "administratively prohibited"
            self.mib.inc("MPJoinRejected")
            sub.rst_reason = 3
            sub.closed = True
            sub.tcp = TcpConnection.accept_syn(
                self.tcp_config, syn, local, remote, now, hooks=_Refuser(sub)
            )
            return sub
        if self.initial is not None and local[1] != self.initial.local[1]:
            self.mib.inc("MPJoinPortSynRx")  # to a port we announced
        tcp = TcpConnection.accept_syn(self.tcp_config, syn, local, remote, now, hooks=sub)
        self._attach(sub, tcp)
        return sub

    def _join_to_initial_denied(self, local: tuple[str, int]) -> bool:
        """Our MP_CAPABLE carried flag C (``allow_join_initial_addr_port`` off): a join to the
        initial subflow's address and port is refused (joins to announced addresses, or to
        another port, are not affected), as Linux's net.mptcp.allow_join_initial_addr_port."""
        init = self.initial
        return (
            not self.config.allow_join_initial_addr_port
            and init is not None
            and local == init.local
        )

    def take_join_slot(self, sub: Subflow) -> bool:
        """A join we answered has a valid third ACK: it takes a subflow slot now, if one is
        left (Linux's mptcp_finish_join; otherwise MPJoinRejected and the subflow is reset)."""
        if (
            self._closed
            or self.fallback
            or self._aborting
            or self._joins >= self.config.limits.subflows
        ):
            self.mib.inc("MPJoinRejected")
            return False
        self._joins += 1
        sub.holds_slot = True
        return True

    def subflow_open_failed(self, req: OpenSubflow, now: float | None = None) -> None:
        """The edge could not open the subflow an ``OpenSubflow`` asked for (no local port,
        no route): its slot, taken when it was asked for, is free again (Linux's
        __mptcp_subflow_connect error path, MPJoinSynTxBindErr). Once per request."""
        if now is not None:
            self._now = now
        if req.settled:
            return
        req.settled = True
        self.mib.inc("MPJoinSynTxBindErr")
        if self._joins > 0:
            self._joins -= 1

    def add_subflow(self, req: OpenSubflow, local: tuple[str, int], now: float) -> Subflow:
        """The edge has a local port for an ``OpenSubflow``: send the MP_JOIN SYN."""
        self._now = now
        req.settled = True
        sub = Subflow(
            self,
            local,
            req.remote,
            initial=False,
            active=True,
            local_id=req.local_id,
            remote_id=req.remote_id,
            backup=req.backup,
        )
        sub.holds_slot = True  # (taken by ``_request_subflow``)
        self._attach(sub, TcpConnection(self.tcp_config, local, req.remote, hooks=sub))
        sub.tcp.connect(now)
        self.mib.inc("MPJoinSynTx")
        return sub

    def _local_id_for(self, addr: str) -> int:
        if self.initial is not None and self.initial.local[0] == addr:
            return 0
        for ep in self.config.endpoints or ():
            if ep.address == addr:
                return ep.id
        return 0

    # ----------------------------------------------------------------- handshake callbacks
    def accept_capable(self, mpc: MpCapable | None) -> None:
        """Server, on the SYN: Linux's rules (version 1, H set, B clear, no key on a v1 SYN)."""
        if self.config.enabled and mpc_usable(mpc, syn=True) and mpc.sender_key is None:
            self.mib.inc("MPCapableSYNRX")
            self.checksum = self.config.checksum or mpc.checksum_required
            self.remote_deny_join_id0 = mpc.no_join_source  # (Linux: on SYN receive too)
            self._register()
            return
        if mpc is not None:
            self.mib.inc("MPCapableFallbackSYN")
        self.enter_fallback("SYN without usable MP_CAPABLE")

    def on_synack_capable(self, mpc: MpCapable | None) -> None:
        if self.fallback:
            return  # our last SYN went without MP_CAPABLE (SYN retries)
        if mpc_usable(mpc) and mpc.sender_key is not None and mpc.receiver_key is None:
            self.mib.inc("MPCapableSYNACKRX")
            self._set_remote_key(mpc.sender_key)
            self.remote_deny_join_id0 = mpc.no_join_source
            self.checksum = self.config.checksum or mpc.checksum_required
            return
        self.mib.inc("MPCapableFallbackSYNACK")
        self.enter_fallback("SYN/ACK without MP_CAPABLE")

    def on_third_ack_capable(self, sub: Subflow, mpc: MpCapable | None, seg: TcpSegment) -> None:
        if mpc_usable(mpc) and mpc.sender_key is not None and mpc.receiver_key == self.local_key:
            self.mib.inc("MPCapableACKRX")
            self._set_remote_key(mpc.sender_key)
            self.fully_established = True
            self.pm.established()
            return
        self.mib.inc("MPCapableFallbackACK")
        self.enter_fallback("third ACK without MP_CAPABLE keys")

    def _set_remote_key(self, key: int) -> None:
        self.remote_key = key
        self.remote_token = crypto.token(key)
        self.remote_idsn = crypto.idsn(key)
        self.rcv_nxt = self.remote_idsn + 1

    def on_fully_established(self, sub: Subflow) -> None:
        if not self.fully_established:
            self.fully_established = True
            self.pm.established()

    def on_join_established(self, sub: Subflow) -> None:
        sub.arm_join_ack(self._now)
        self._pm_event("sub_established", sub)
        self.pm.subflow_up(sub)

    def can_fallback(self) -> bool:
        """Whether we can follow a fallback the peer chose (its infinite mapping, its answer
        to our MP_FAIL, its plain-TCP ACKs): only while no join of ours was ever established
        (Linux's allow_infinite_fallback), for only then is what the first subflow carried
        the whole stream. A join still in its handshake never carried a byte of ours, and a
        peer that falls back never sends on one."""
        return sum(1 for s in self._seen_subflows if s.initial or s.established) <= 1

    def reset_subflow(self, sub: Subflow, reason: int | None = None) -> None:
        """Reset one subflow (RST, MP_TCPRST ``reason``); what it held beyond the DATA_ACK is
        queued for the others first."""
        if sub not in self.subflows or sub.tcp is None:
            return
        if reason is not None:
            sub.rst_reason = reason
        self._reinject_from(sub)
        sub.tcp.abort(self._now)

    def on_peer_fell_back(self, sub: Subflow) -> None:
        """The peer acknowledges our data on the first subflow as plain TCP (Subflow's
        PLAIN_ACKS_FALLBACK): it fell back without telling us, as a receiver does after a
        DSS checksum failure before any valid checksum. We follow while no join was ever
        established (what the first subflow carried is the stream, in order). With a join
        established the peer cannot have fallen back (it saw the join before it could), so a
        box strips this path's options: the subflow is reset (Linux's FallbackFailed), its
        data going on the others, rather than left to wait for DATA_ACKs."""
        if self.fallback or self._closed:
            return
        if self._mp_fail_sent or self._infinite_map_pending:
            # an MP_FAIL exchange is under way: the peer's ACKs without DSS are its fallback in
            # progress, and ours ends with the infinite mapping it expects (or MP_FAIL's timeout)
            return
        if self.can_fallback():
            self.mib.inc("DssFallback")
            self.enter_fallback("the peer acknowledges data without DSS (it fell back)")
            return
        self.mib.inc("FallbackFailed")
        self.reset_subflow(sub, reason=1)  # MPTCP-specific error

    def enter_fallback(self, reason: str) -> None:
        if self.fallback:
            return
        self.fallback = True
        self.fallback_reason = reason
        self._unregister()
        # Everything handed to the first subflow so far is the byte stream, in order (no join
        # can exist before the connection is fully established): from here TCP owns it.
        sub = self.initial
        if sub is not None and sub.tcp is not None:
            sent = self.snd_nxt - self.snd_una
            del self._sbuf[:sent]
            self.snd_una = self.snd_nxt
            self._chunks.clear()
            self._held.clear()
            self._late.clear()
            self._late_ids.clear()
            self._reinject.clear()
            self._reinject_set.clear()

    # ================================================================= application side
    def send(self, data: bytes | memoryview) -> int:
        if self._close_requested or self._closed or self._aborting:
            raise ConnectionError("cannot send after close")
        room = self.snd_buf - len(self._sbuf)
        n = min(len(data), max(room, 0))
        if n < len(data):
            self._snd_blocked = True
        if n:
            self._sbuf += data if n == len(data) else memoryview(data)[:n]
        return n

    @property
    def to_schedule(self) -> int:
        """Bytes the scheduler may still hand to subflows: written and given to none yet,
        plus what waits for reinjection (the edge's TCP small queues ask each subflow's
        room only then)."""
        n = self.snd_una + len(self._sbuf) - self.snd_nxt
        return n + 1 if self._reinject else n

    @property
    def readable(self) -> int:
        return self._rlen

    def read(self, max_bytes: int = -1) -> bytes | bytearray:
        """In-order data, at most ``max_bytes`` (all when negative): one piece as it is, several
        joined (the one copy)."""
        return joined(self.read_chunks(max_bytes))

    def read_chunks(self, max_bytes: int = -1) -> list[bytes | bytearray | memoryview]:
        """In-order data, at most ``max_bytes`` (all of it when negative), as the pieces it
        arrived in, without copying: the edge hands them to the application's reader one by one.
        A piece cut by ``max_bytes`` leaves as a view; the rest stays queued as another view."""
        q, self._rq, n = read_pieces(self._rq, self._rlen, max_bytes)
        self._rlen -= n
        self._read_done(n)
        return q

    def _read_done(self, n: int) -> None:
        """``n`` bytes were read: a window that reopened is announced."""
        if not n:
            return
        before = max(0, self.rcv_window() - n)
        if before * 2 <= self.rcv_buf and self.rcv_window() >= 2 * before:
            # the connection-level window reopened: tell the peer on one (working) subflow
            s = self._pm_subflow()
            if s is not None:
                s.tcp.send_ack()

    def close(self, now: float) -> None:
        """Half-close: a DATA_FIN follows the last byte (plain TCP FIN after fallback)."""
        self._now = now
        self._close_requested = True

    def abort(self, now: float, on_ack: bool = False) -> None:
        """Reset the connection. Once fully established, every subflow's RST carries
        MP_FASTCLOSE with the peer's key and MP_TCPRST (Linux's mptcp_do_fastclose, what a
        close with unread data does). ``on_ack``: RFC 8684 3.5's other form, MP_FASTCLOSE on
        an ACK of one subflow (RSTs on the others), that one reset when the peer's RST comes
        or after ``FASTCLOSE_LINGER``."""
        self._now = now
        fast = not self.fallback and self.fully_established and not self._closed
        carrier = self._pm_subflow() if fast and on_ack else None
        if carrier is not None:
            self._aborting = True
            carrier.queue_option(FastClose(receiver_key=self.remote_key))
            self._fastclose_carrier = carrier
            self.linger_until = now + FASTCLOSE_LINGER
            for s in list(self.subflows):
                if s is not carrier:
                    s.tcp.abort(now)
            self._unregister()
            return
        for s in list(self.subflows):
            if fast:
                s.fastclose = True
                if s.rst_reason is None:
                    s.rst_reason = 0
                self._lingering.append(s)
            s.tcp.abort(now)
        if fast:
            self.linger_until = now + FASTCLOSE_LINGER
        self._unregister()

    def next_event(self) -> Any:
        return self._events.popleft() if self._events else None

    @property
    def send_buffer_free(self) -> int:
        return max(0, self.snd_buf - len(self._sbuf))

    @property
    def state(self) -> str:
        if self._closed:
            return "CLOSED"
        return "FALLBACK" if self.fallback else "ESTABLISHED" if self._connected else "SYN"

    # ================================================================= timers
    def get_timer(self) -> float | None:
        t = self._fin_deadline if not self._closed else None
        if self._fastclose_carrier is not None and self.linger_until is not None:
            t = self.linger_until if t is None else min(t, self.linger_until)
        if self._linger_deadline is not None and not self._closed:
            t = self._linger_deadline if t is None else min(t, self._linger_deadline)
        if self._repair_at is not None and not self._closed:
            t = self._repair_at if t is None else min(t, self._repair_at)
        if self._tout_deadline is not None and not self._closed:
            t = self._tout_deadline if t is None else min(t, self._tout_deadline)
        if not self._closed:
            for ent in self._add_addr_pending.values():
                if t is None or ent[1] < t:
                    t = ent[1]
            rtx = self._rtx.deadline
            if rtx is not None and (t is None or rtx < t):
                t = rtx
        for s in self.subflows:
            for d in (s.tcp.get_timer(), s.timer()):
                if d is not None and (t is None or d < t):
                    t = d
        return t

    def handle_timer(self, now: float) -> None:
        self._now = now
        for s in list(self.subflows):
            d = s.tcp.get_timer()
            if d is not None and now >= d:
                s.tcp.handle_timer(now)
            s.on_timer(now)
        if self._add_addr_pending:
            self._add_addr_timer(now)
        rtx = self._rtx.deadline
        if rtx is not None and now >= rtx and not self._closed:
            self._rtx.on_timer(self, now)
        fc = self._fastclose_carrier
        if fc is not None and self.linger_until is not None and now >= self.linger_until:
            self._fastclose_carrier = None  # no RST from the peer: reset it ourselves
            if fc.tcp.state is not TcpState.CLOSED:
                fc.fastclose = True
                fc.tcp.abort(now)
        if self._linger_deadline is not None and now >= self._linger_deadline:
            self._linger_deadline = None
            if not self._peer_has_last_ack() and self._linger_cap and now < self._linger_cap:
                self._linger_deadline = min(self._linger_cap, now + 2.0)
        if self._linger_deadline is None and self._linger_cap is not None:
            # A subflow still delivering what it holds (ours in flight with its ACKs moving
            # within its silence bound, or bytes still unsent: a loaded peer, spurious RTOs,
            # a backed-off recovery of its tail) gets more time, up to the cap. Reset, it
            # had every byte at the peer, so the RST landed on the peer's rcv_nxt and was
            # taken (MP_TCPRST, the peer's MPRstRx: the 100-connection stress test under
            # load). A silent or stale one, or one waiting only for the peer's FIN, is reset.
            cap = self._linger_cap
            alive = [
                s
                for s in self.subflows
                if s.tcp.state not in (TcpState.CLOSED, TcpState.TIME_WAIT)
                and (s.tcp.bytes_in_flight > 0 or s.tcp.unsent > 0)
                and not s.stale
                and not is_silent(s, now)
            ]
            if alive and now < cap:
                self._linger_deadline = min(
                    cap, now + max(2.0, 8 * max(s.srtt or 0.0 for s in alive))
                )
            else:
                self._linger_cap = None
                alive = []
            for s in list(self.subflows):
                if s not in alive and s.tcp.state not in (TcpState.CLOSED, TcpState.TIME_WAIT):
                    s.tcp.abort(now)
        if self._fin_deadline is not None and now >= self._fin_deadline:
            self._fin_deadline = None
            if not self._fin_acked:
                self._fin_send = True
                self._fin_tries += 1
                self._kick_fin()
        if self._tout_deadline is not None and now >= self._tout_deadline:
            self._close_timeout_check(now)  # (a subflow may be back since)
            if self._tout_deadline is not None and now >= self._tout_deadline:
                self._close_timeout_expired(now)

    # ================================================================= the poll
    def segments_to_send(self, now: float) -> list[tuple[Subflow, TcpSegment]]:
        self._now = now
        # a subflow that closes while its events are processed (a refused join, a reset) still
        # has its last segments to send: the RST with MP_TCPRST
        subs = list(self.subflows)
        self._process(now)
        subs += [s for s in self.subflows if s not in subs]
        if self._lingering:
            subs += [s for s in self._lingering if s not in subs]
        out: list[tuple[Subflow, TcpSegment]] = []
        for s in subs:
            for seg in s.tcp.segments_to_send(now):
                out.append((s, seg))
            if s.has_queued_options() and not self.fallback:
                # Data segments have no room left for them (DSS fills it): a pure ACK of their
                # own, at once, as Linux sends an ADD_ADDR or its echo (mptcp_pm_send_ack).
                s.tcp.send_ack()
                for seg in s.tcp.segments_to_send(now):
                    out.append((s, seg))
            if s._close_after_options and not s.has_queued_options():
                s._close_after_options = False
                self._remove_subflow(s)
                for seg in s.tcp.segments_to_send(now):
                    out.append((s, seg))
        self._subflow_events(now)
        return out

    def data_round(self, s: Subflow, now: float) -> list[TcpSegment] | None:
        """The round after in-order data on one subflow, in the steady state (Linux's header
        prediction, for the data level): its bytes to the data level, then that subflow's
        segments (the ACK and its DATA_ACK). None when anything else is pending on the
        subflow or the connection, before or after its bytes moved: then ``segments_to_send``
        does the whole round (the bytes already moved are simply not there to pull again). A
        receiver spends most of its time here: the connection-wide work (scheduling, failover,
        closing, timers) waits for the round that ends the batch."""
        if not self._steady(s):
            return None
        while s.tcp.next_event() is not None:
            pass  # only data events (ignored in _subflow_events too): the data is pulled here
        self._now = now
        if s.tcp.readable:
            for dsn, data in s.pull():
                self._rx(dsn, data)
            if not self._steady(s):
                return None
        return s.tcp.segments_to_send(now)

    def _steady(self, s: Subflow) -> bool:
        """Nothing but data to deal with on ``s`` and the connection (see ``data_round``)."""
        tcp = s.tcp
        if (
            self.fallback
            or self._aborting
            or self._peer_fin is not None
            or self._subflows_closing
            or s.closed
            or s.reset_pending
            or s._close_after_options
            or tcp.state is not TcpState.ESTABLISHED
            or tcp.unsent
            or s.has_queued_options()
            or s not in self.subflows
            or not tcp.only_data_events()
        ):
            return False
        return True

    def _process(self, now: float) -> None:
        self._subflow_events(now)
        self._failover(now)
        if self.fallback:
            self._fallback_io(now)
        elif not self._aborting:
            self._schedule(now)
            self._close_progress(now)
        self._rtx.rearm(self, now)
        self._close_timeout_check(now)
        self._check_closed()

    def _subflow_events(self, now: float) -> None:
        for s in list(self.subflows):
            tcp = s.tcp
            if self._subflows_closing and tcp.state in _PEER_HAS_LAST_ACK:
                self._graceful_subflow_end = True  # seen before the subflow is gone
            if s.reset_pending and not s.closed:
                s.reset_pending = False
                tcp.abort(now)
            while True:
                ev = tcp.next_event()
                if ev is None:
                    break
                t = type(ev)
                if t is Connected:
                    self._on_subflow_connected(s, now)
                elif t is DataReceived:
                    pass  # pulled below
                elif t is SendBufferAvailable:
                    pass
                elif t is PeerClosed:
                    if self.fallback and s is self.initial:
                        self._deliver_eof()
                elif t is Reset:
                    s.closed = True
                    self._subflow_gone(s, ev.reason)
                elif t is Closed:
                    s.closed = True
                    self._subflow_gone(s, None)
            if s.tcp.readable:
                if self.fallback:
                    if s is self.initial:
                        self._rx(self.rcv_nxt, s.pull_fallback())
                else:
                    for dsn, data in s.pull():
                        self._rx(dsn, data)
        if self._peer_fin is not None and self.rcv_nxt == self._peer_fin and not self._eof:
            self.rcv_nxt += 1
            self._deliver_eof()
            for s in self.subflows:
                if s.usable:
                    s.tcp.send_ack()

    def _on_subflow_connected(self, s: Subflow, now: float) -> None:
        if s.initial:
            if not self.fallback:
                self.snd_edge = self.snd_una + s.tcp.snd_wnd  # Linux: wnd_end = snd_nxt + snd_wnd
                s.established = True
            else:
                s.established = True
            self._connected = True
            self._events.append(Connected())
            if not self.fallback and not self._pm_created:
                self._pm_created = True
                self._pm_event("created", s)
        else:
            if s.active:
                s.arm_join_ack(now)
            # passive joins are established on the valid third ACK (Subflow._on_third_ack)

    def _subflow_gone(self, s: Subflow, reason: str | None) -> None:
        if s in self.subflows:
            self.subflows.remove(s)
            self._events.append(SubflowClosed(s))
            if not self.fallback and not s.initial:
                self._pm_event("sub_closed", s, error=reason)
            self._reinject_from(s)
            self._held.pop(s, None)
            if s.holds_slot and self._joins > 0:
                s.holds_slot = False
                self._joins -= 1  # its slot is free again (Linux: mptcp_pm_close_subflow)
            if self.cc_group is not None:
                self.cc_group.discard(s.tcp.cc)
            self.pm.subflow_down(s, reason)
        if s is self.initial and self.fallback:
            if reason is not None and not self._closed:
                self._events.append(Reset(reason))
            return
        if not self.subflows and not self._closed:
            if self._keep_without_subflows():
                return  # a new subflow may still come: the close timeout decides (_check_closed)
            graceful = self._fin_acked and (self._eof or self._peer_fin is not None)
            if not graceful and reason is not None:
                self._events.append(Reset(reason))
            elif not graceful and not self._connected:
                self._events.append(Reset("connection refused"))
            elif (
                not graceful
                and not self.fallback
                and self.config.close_timeout <= 0
                and not (self._aborting or self._fastclosed or self.linger_until is not None)
            ):
                # no close timeout to wait for a new subflow: the streams are cut, which the
                # application must hear as such, never as a clean close
                self._events.append(Reset("last subflow closed with data outstanding"))

    def _peer_has_last_ack(self) -> bool:
        """Whether the peer has our DATA_ACK of its DATA_FIN, as far as its subflows show: a
        subflow FIN of ours acknowledged (it carried that DATA_ACK), a FIN of the peer's (a
        peer closes subflows only once its DATA_FIN is acknowledged), or a subflow gone
        that was in one of those states since the close began."""
        return self._graceful_subflow_end or any(
            s.tcp is not None and s.tcp.state in _PEER_HAS_LAST_ACK for s in self.subflows
        )

    def _keep_without_subflows(self) -> bool:
        """Whether the connection outlives its last subflow (Linux's __mptcp_close_ssk: an
        established connection starts its close timeout instead of closing): MPTCP, connected,
        its streams not both finished, not being reset. Linux closes at once after the
        application's close; we also wait then while data is outstanding, since a returning
        path can still deliver it."""
        return (
            self._connected
            and not self.fallback
            and not self._data_done()
            and not self._aborting
            and not self._fastclosed
            and self.config.close_timeout > 0
        )

    def _has_carrier(self) -> bool:
        """A subflow can carry the connection now or once its handshake ends: not closed, on
        a local address that is up, and (a join we answered) past its third ACK."""
        down = self._down_addrs
        return any(
            not s.closed
            and s.tcp is not None
            and s.tcp.state not in (TcpState.CLOSED, TcpState.TIME_WAIT)
            and s.local[0] not in down
            and (s.initial or s.active or s.established)
            for s in self.subflows
        )

    def _close_timeout_check(self, now: float) -> None:
        """Start the close timeout when no subflow can carry the connection any more, stop it
        when one can again (Linux: mptcp_start_tout_timer when the last subflow closes,
        mptcp_stop_tout_timer when a subflow connects or joins)."""
        if self._closed or not self._keep_without_subflows() or self._has_carrier():
            self._tout_deadline = None
        elif self._tout_deadline is None:
            self._tout_deadline = now + self.config.close_timeout

    def _close_timeout_expired(self, now: float) -> None:
        """No subflow came back in time: the connection is reset (Linux's mptcp_worker on
        close_tout_expired: mptcp_do_fastclose), and the application hears a Reset that says
        what was left, never a clean close."""
        self._tout_deadline = None
        unacked = len(self._sbuf)  # written, not DATA_ACKed
        parts = [f"no subflow for {self.config.close_timeout:g} s (close timeout)"]
        if unacked:
            parts.append(f"{unacked} bytes not acknowledged by the peer")
        if self._fin_dsn is not None and not self._fin_acked:
            parts.append("our DATA_FIN not acknowledged")
        if not self._eof:
            parts.append("the peer's stream not finished")
        self.abort(now)  # MP_FASTCLOSE on whatever subflow is left (on a down interface)
        self._closed = True
        self._unregister()
        self._events.append(Reset(", ".join(parts)))
        self._events.append(Closed())
        if self.fully_established:
            self._pm_event("closed")

    def _check_closed(self) -> None:
        if self._closed:
            return
        if not self.subflows and self._keep_without_subflows():
            return  # waiting for a new subflow until the close timeout
        if not self.subflows or all(
            s.tcp.state in (TcpState.CLOSED, TcpState.TIME_WAIT) for s in self.subflows
        ):
            if self._keep_without_subflows():
                # every subflow is ending (reset, not yet gone) while the peer's stream is
                # not finished: a new subflow may still bring the rest, as above (closing
                # here on our own DATA_FIN acked left the peer's data cut without a word)
                return
            if not self.subflows or self._fin_acked or self.fallback:
                self._closed = True
                self._unregister()
                self._events.append(Closed())
                if self.fully_established:
                    self._pm_event("closed")

    def _deliver_eof(self) -> None:
        if not self._eof:
            self._eof = True
            self._events.append(PeerClosed())

    # ================================================================= receive
    def rcv_window(self) -> int:
        return max(0, self.rcv_buf - self._rlen - self._ooo_bytes)

    def adv_window(self, wscale: int, mss: int) -> int:
        """The window a subflow advertises, relative to the DATA_ACK (RFC 8684 3.3.4, Linux's
        mptcp_set_rwin): the data-level right edge never moves back (whatever arrives out of
        order, on whichever subflow), and moves forward by at least min(rcv_buf/2, MSS) at a
        time (receiver SWS avoidance). Rounded up to the scale so the edge is never cut."""
        ack = self.rcv_nxt
        sent = self._rcv_wnd_sent
        edge = ack + self.rcv_window()
        if edge - sent < min(self.rcv_buf >> 1, mss):
            edge = sent if sent > ack else ack
        field = min((edge - ack + (1 << wscale) - 1) >> wscale, 0xFFFF)
        adv = ack + (field << wscale)
        if adv > sent:
            self._rcv_wnd_sent = adv
        return field << wscale

    def unwrap_rx(self, dsn: int) -> int:
        return _unwrap64(dsn, self.rcv_nxt)

    def _rx(self, dsn: int, data: bytes | bytearray) -> None:
        """Bytes of a mapping at ``dsn`` (in order on their subflow): delivered if they reach
        rcv_nxt, else held out of order. Only bytes not held yet are stored, so overlapping
        pieces and resends cut at other points (a reinjection, another subflow's copy) cost no
        memory twice and never shrink the window we advertise."""
        n = len(data)
        if not n:
            return
        dsn = _unwrap64(dsn & MASK64, self.rcv_nxt)  # (after fallback: rcv_nxt itself)
        if not self.fallback:
            fin = self._peer_fin
            if fin is not None and dsn + n > fin:
                # the peer's DATA_FIN said where its stream ends: nothing comes after it
                n = max(0, fin - dsn)
                data = data[:n]
                if not n:
                    return
        end = dsn + n
        if end <= self.rcv_nxt:
            self.mib.inc("DuplicateData")
            return
        if dsn < self.rcv_nxt:
            data = data[self.rcv_nxt - dsn :]
            dsn = self.rcv_nxt
        if not self.fallback:
            # never past the window we advertised, in order or not (Linux: NoDSSInWindow,
            # dropped; its subflows enforce the connection's window). Not after fallback: TCP
            # has acknowledged these bytes and nobody would send them again.
            limit = max(self._rcv_wnd_sent, self.rcv_nxt + self.rcv_window())
            if end > limit:
                self.mib.inc("NoDSSInWindow")
                if dsn >= limit:
                    return
                end = limit
                data = data[: end - dsn]
        if dsn == self.rcv_nxt:
            self._rq.append(data)  # a subflow's piece: immutable bytes, or a view of them
            delivered = len(data)
            self._rlen += delivered
            self.rcv_nxt = end
            if self._ooo:
                delivered += self._drain_ooo()
            self._data_event(delivered)
            return
        self._ooo_queue(dsn, data)

    def _ooo_queue(self, dsn: int, data: bytes) -> None:
        """Hold ``data`` (at ``dsn``, above rcv_nxt, within the window) out of order, counted as
        Linux's mptcp_data_queue_ofo does: OFOQueue each time, OFOQueueTail at or past the
        highest byte held, OFOMerge when it touches a range already held, DuplicateData when
        every byte is held already.

        Only the bytes not held yet are stored (as tcp/reassembly.py does), so the memory is
        bounded by the window: everything held lies in [rcv_nxt, edge advertised), and
        in-order bytes plus that span never exceed ``rcv_buf`` (plus the rounding of the
        window to its scale), whatever the peer's split points or overlaps."""
        ooo = self._ooo
        mib = self.mib
        mib.inc("OFOQueue")
        end = dsn + len(data)
        high = ooo.high
        if high is not None and dsn >= high:
            mib.inc("OFOQueueTail")
        gaps = ooo.gaps(dsn, end)
        if not gaps:
            mib.inc("DuplicateData")  # held already: kept once
            return
        before = len(ooo)
        chunks = self._ooo_data
        for a, b in gaps:
            if a == dsn and b == end:
                chunks[a] = data
            else:
                # a copy: a view would keep the whole (mostly duplicate) piece alive
                chunks[a] = bytes(memoryview(data)[a - dsn : b - dsn])
            ooo.add(a, b)
        if len(ooo) < before + len(gaps):
            mib.inc("OFOMerge")  # it touched or filled in next to a range already held

    def _drain_ooo(self) -> int:
        """Move the held data that rcv_nxt has reached into the receive buffer."""
        rcv = self.rcv_nxt
        self.rcv_nxt = drain_held(self._ooo, self._ooo_data, self._rq.append, rcv)
        n = self.rcv_nxt - rcv
        self._rlen += n
        return n

    @property
    def _ooo_bytes(self) -> int:
        """Bytes held out of order (each byte once)."""
        return self._ooo.total

    def _data_event(self, n: int) -> None:
        if n <= 0:
            return
        ev = self._events
        if ev and type(ev[-1]) is DataReceived:
            ev[-1].nbytes += n
        else:
            ev.append(DataReceived(n))

    def on_data_fin(self, dsn: int) -> None:
        dsn = _unwrap64(dsn & MASK64, self.rcv_nxt)
        if self._peer_fin is None and dsn >= self.rcv_nxt:  # one below what came is bogus
            self._peer_fin = dsn

    # ================================================================= send
    def on_data_ack(self, ack: int, window: int) -> None:
        ack = _unwrap64(ack & MASK64, self.snd_una)
        top = self.snd_nxt + (1 if self._fin_dsn is not None else 0)
        if ack > top:
            self.mib.inc("DataAckInvalid")
            return
        if ack > self.snd_una:
            data_acked = min(ack, self.snd_nxt) - self.snd_una
            if data_acked > 0:
                del self._sbuf[:data_acked]
            self.snd_una = min(ack, self.snd_nxt)
            self._una_moved_at = self._now
            ch = self._chunks
            while ch and ch[0][0] + ch[0][1] <= self.snd_una:
                ch.popleft()
            if self._late:
                self._prune_late()
            if self._snd_blocked and len(self._sbuf) < self.snd_buf:
                self._snd_blocked = False
                self._events.append(SendBufferAvailable())
            if self._fin_dsn is not None and ack > self._fin_dsn:
                self._fin_acked = True
                self._fin_deadline = None
        edge = ack + window
        if edge > self.snd_edge:
            self.snd_edge = edge

    def _schedule(self, now: float) -> None:
        self._repair_at = None
        if not self._connected:
            return
        for s in self.subflows:
            note_progress(s, now)
        usable = self._sendable([s for s in self.subflows if s.usable])
        if not usable:
            return
        if self.snd_nxt == self.snd_una and not self._sbuf and not self._reinject:
            # nothing outstanding, nothing to send (a receiver, at every flush): no hole to
            # repair, no copy owed (those are of data not yet DATA_ACKed), no stall to cap
            self._una_moved_at = now
            self._owed.clear()
            return
        max_map = self.config.max_mapping
        write_end = self.snd_una + len(self._sbuf)
        window = max(0, self.snd_edge - self.snd_una)
        # reinjections first: data a failing subflow holds goes out on another one
        rq = self._reinject
        self._reinject_set.remove_below(self.snd_una)
        while rq:
            dsn, ln, bad = rq[0]
            if dsn + ln <= self.snd_una:
                rq.popleft()
                continue
            start = max(dsn, self.snd_una)
            others = [s for s in usable if s is not bad and not s.stale]
            cands = Candidates(
                [s for s in others if s.space > 0],
                others,
                write_end - self.snd_nxt,
                window,
                max(0, self.snd_edge - self.snd_nxt),
                True,
                now,
            )
            if not cands:
                break
            picked = self._picked(cands, usable)
            if not picked:
                break
            n = min(dsn + ln - start, max_map, picked[0].space)
            if n <= 0:
                break
            off = start - self.snd_una
            data = self._sbuf[off : off + n]
            for i, s in enumerate(picked):
                if i and s.space < n:
                    continue  # a copy of a reinjection goes only where there is room
                s.push(start, data)
                s.reinjected += n
                self._add_chunk(start, n, s)
            self.mib.inc("MPTCPRetrans")
            self._reinject_set.remove(start, start + n)
            if start + n >= dsn + ln:
                rq.popleft()
            else:
                rq[0] = [start + n, dsn + ln - start - n, bad]
        if len(usable) > 1:
            repair_hole(self, usable, now)
        if self._owed:
            self._send_owed_copies(usable)
        # new data
        if self.snd_nxt == self.snd_una:
            self._una_moved_at = now  # nothing outstanding: a stall can only start from here
        cap = stall_limit(self, now)
        while self.snd_nxt < write_end:
            limit = min(write_end, self.snd_edge)
            if cap is not None and cap < limit:
                limit = max(cap, self.snd_nxt)
            if self.snd_nxt >= limit:
                if self.config.opportunistic != "off":
                    opportunistic_retransmit(self, usable, now)
                break
            cands = Candidates(
                [s for s in usable if s.space > 0],
                usable,
                write_end - self.snd_nxt,
                window,
                limit - self.snd_nxt,
                False,
                now,
            )
            if not cands:
                break
            picked = self._picked(cands, usable)
            if not picked:
                break
            room = min(limit - self.snd_nxt, picked[0].space)
            n = min(room, max_map)
            if room > max_map:
                n = _whole_bursts(picked[0], max_map)
            if n <= 0:
                break
            off = self.snd_nxt - self.snd_una
            # the subflow holds these bytes by reference when they came as bytes (else one
            # copy); our view is released so that an open chunk of small writes may grow
            data = self._sbuf.view(off, n)
            for i, s in enumerate(picked):
                if i and (s in self._owed or s.space < n):
                    # no room for the copy now: it catches up later from here, skipping
                    # what the DATA_ACK has covered by then (v0's redundant scheduler)
                    self._owed.setdefault(s, self.snd_nxt)
                    continue
                s.push(self.snd_nxt, data)
                self._add_chunk(self.snd_nxt, n, s)
            data.release()
            self.snd_nxt += n

    def _send_owed_copies(self, usable: list[Subflow]) -> None:
        """Subflows that had no room for copies of scheduled data (a list from the scheduler)
        send them once they have room, from the first byte not yet DATA_ACKed."""
        for s, start in list(self._owed.items()):
            if s not in usable or s.stale:
                del self._owed[s]
                continue
            start = max(start, self.snd_una)
            while start < self.snd_nxt and s.space > 0:
                n = min(self.snd_nxt - start, s.space, self.config.max_mapping)
                off = start - self.snd_una
                s.push(start, self._sbuf[off : off + n])
                self._add_chunk(start, n, s)
                start += n
            if start >= self.snd_nxt:
                del self._owed[s]
            else:
                self._owed[s] = start

    def _picked(self, cands: Candidates, usable: list[Subflow]) -> list[Subflow]:
        """The scheduler's choice as a list of usable subflows, each once (empty: wait).

        Counted in the MIB (SchedWait, SchedPickMinRtt, SchedPickOther): a wait with a
        candidate that had room is BLEST's or ECF's "wait for the fast subflow"; a pick is
        classed by the first subflow chosen against the lowest smoothed RTT among the usable
        non-stale (and, while there are others, non-backup) subflows, only when there was a
        choice, so a run shows whether its
        scheduler ever used the slow path or held back for the fast one."""
        out: list[Subflow] = []
        for s in as_list(self.sched.pick(cands)):  # type: ignore[arg-type]
            if s in usable and s not in out:
                out.append(s)
        if not out:
            if cands:
                self.mib.inc("SchedWait")
            return out
        live = [s for s in cands.all if not s.stale]
        live = [s for s in live if not is_backup(s)] or live  # backups only count alone
        if len(live) > 1:
            best = min(s.srtt if s.srtt is not None else 0.1 for s in live)
            mine = out[0].srtt if out[0].srtt is not None else 0.1
            self.mib.inc("SchedPickMinRtt" if mine <= best else "SchedPickOther")
        return out

    def _add_chunk(self, dsn: int, n: int, s: Subflow) -> None:
        """Record that ``s`` now carries [dsn, dsn + n): a copy, a reinjection or new data, it
        is resent elsewhere if ``s`` fails before the DATA_ACK covers it."""
        ch = [dsn, n, s, False]
        self._chunks.append(ch)
        if dsn < self._chunk_top:
            self._late.append(ch)
            self._late_ids.add(id(ch))
        else:
            self._chunk_top = dsn
        held = self._held.get(s)
        if held is None:
            held = self._held[s] = deque()
        else:
            una = self.snd_una
            while held and held[0][0] + held[0][1] <= una:
                held.popleft()  # DATA_ACKed: nothing to resend (amortized O(1) a chunk)
        held.append(ch)

    def _prune_late(self) -> None:
        """Forget the out-of-order chunks the DATA_ACK has covered (their ids with them, once
        they have also left ``_chunks``: an id is only unique while its chunk lives)."""
        una = self.snd_una
        keep = []
        for ch in self._late:
            if ch[0] + ch[1] > una:
                keep.append(ch)
        if len(keep) != len(self._late):
            self._late = keep
            self._late_ids = {id(ch) for ch in keep}

    def _reinject_from(self, s: Subflow) -> None:
        """Queue for other subflows what ``s`` holds beyond the DATA_ACK (sent or not),
        whoever carried it before: a reinjected copy is reinjected again when its new subflow
        fails too (Linux's __mptcp_retransmit_pending_data resends from the data-level
        snd_una), or those bytes would be on no live subflow and the DATA_ACK would stop. Each
        chunk is queued once (its holder's later failures do not queue it again); a range
        another failed subflow queued and that is still waiting is not queued twice."""
        if self.fallback:
            return
        held = self._held.get(s)
        una = self.snd_una
        while held:
            ch = held.popleft()
            end = ch[0] + ch[1]
            if ch[3] or end <= una:
                continue
            ch[3] = True
            self._queue_reinject(max(ch[0], una), end, s)

    def _queue_reinject(self, start: int, end: int, origin: Subflow) -> None:
        """Queue [start, end) for a subflow other than ``origin``, except the parts already
        queued (each range waits in the queue once)."""
        queued = self._reinject_set
        for a, b in queued.gaps(start, end):
            self._reinject.append([a, b - a, origin])
        queued.add(start, end)

    def _failover(self, now: float) -> None:
        """A subflow whose retransmission timer fired has its data reinjected on the others;
        after ``stale_loss_cnt`` timeouts without progress it is stale (no new data) until it
        makes progress again (Linux's pm stale handling, with an earlier reinjection)."""
        for s in self.subflows:
            # progress, tracked whatever the number of subflows: the last one left must be
            # able to leave "stale" (reinjections skip stale subflows: they would wait for good)
            tcp = s.tcp
            if tcp.snd_una != s._una_seen:
                s._una_seen = tcp.snd_una
                s._rto_streak = 0
                if s.stale:
                    s.stale = False
                    self.mib.inc("SubflowRecover")
        if self.fallback or len(self.subflows) < 2:
            for s in self.subflows:
                if s.tcp.stats.rto_count > s._rto_seen and not self.fallback:
                    self.pm.subflow_timeout(s)
                s._rto_seen = s.tcp.stats.rto_count
            return
        for s in self.subflows:
            tcp = s.tcp
            rto = tcp.stats.rto_count
            if rto > s._rto_seen:
                s._rto_seen = rto
                s._rto_streak += 1
                self._reinject_from(s)
                self.pm.subflow_timeout(s)
                if s._rto_streak >= self.config.stale_loss_cnt and not s.stale:
                    s.stale = True
                    self.mib.inc("SubflowStale")
                    # The mappings it never sent are taken back (queued for reinjection just
                    # above). One partly sent stays whole here, frozen: its tail goes out here
                    # if the subflow recovers, and the receiver keeps whichever copy comes first.
                    s.bytes_sent -= tcp.take_unsent()

    # ----------------------------------------------------------------- DATA_FIN
    def _close_progress(self, now: float) -> None:
        if not self._close_requested or not self._connected:
            return
        if self._fin_dsn is None:
            if self.snd_nxt < self.snd_una + len(self._sbuf):
                return  # DATA_FIN goes at the end of the data: wait until all is scheduled
            self._fin_dsn = self.snd_nxt
            self._fin_send = True
        if self._fin_send:
            self._kick_fin()
        if self._fin_acked and self._eof and not self._subflows_closing:
            # Both DATA_FINs are through: the subflows' FINs follow (a subflow still in its
            # handshake is simply dropped).
            self._subflows_closing = True
            for s in list(self.subflows):
                if s.tcp.state is not TcpState.CLOSED:
                    if s.stale or (is_silent(s, now) and s._rto_streak):
                        # its FIN would wait for a path that is down (silent and timed out
                        # since its last progress: mere silence can be a busy peer's late ACKs)
                        s.tcp.abort(now)
                    else:
                        s.tcp.close(now)
            # The data are all through both ways: a subflow FIN that a path cut (one not yet
            # known to be dead) keeps unanswered must not hold the connection for minutes.
            srtt = max((s.srtt or 0.0 for s in self.subflows), default=0.0)
            self._linger_deadline = now + max(2.0, 8 * srtt)
            # Our DATA_ACK of the peer's DATA_FIN rides on those FINs: until the peer shows it
            # has it, a cut path's FIN is retried for as long as Linux retries an orphan's FIN
            # (about a minute), or the peer waits out its close timeout and hears a reset.
            self._linger_cap = now + max(self.config.close_timeout, 2.0)

    def _data_done(self) -> bool:
        """Both directions finished at the data level: no subflow can help any more. (Only a
        close *requested* is not enough: a sender that wrote everything and closed may still
        hold megabytes that a joining path would carry.)"""
        return self._fin_acked and self._eof

    def _kick_fin(self) -> None:
        # The first DATA_FIN on the best working subflow (the first usable one may be stale or
        # silent, its path cut); each retransmission on the next usable one, so that a path
        # only the other end knows is dead (a receiver never sees its own RTOs) cannot hold
        # the close.
        usable = [s for s in self.subflows if s.usable]
        if usable:
            now = self._now
            usable.sort(
                key=lambda s: (
                    s.stale,
                    is_silent(s, now),
                    s.backup or s.peer_backup,
                    s.srtt if s.srtt is not None else 1.0,
                )
            )
            sub = usable[self._fin_tries % len(usable)]
            sub.tcp.send_ack()
            if self._fin_deadline is None:
                # (data_fin_sent sets it once the DATA_FIN is on a segment; should it not get
                # there, the next try goes on the next subflow all the same)
                self._fin_deadline = self._now + max(sub.tcp.rto or 1.0, 0.2)

    def data_fin_due(self, sub: Subflow) -> int | None:
        if self._fin_send and self._fin_dsn is not None and not self._fin_acked:
            return self._fin_dsn
        return None

    def data_fin_sent(self, sub: Subflow) -> None:
        self._fin_send = False
        rto = sub.tcp.rto if sub.tcp.rto else 1.0
        self._fin_deadline = self._now + max(rto, 0.2)

    def data_fin_lost(self) -> None:
        self._fin_send = True

    # ================================================================= fallback
    def _fallback_io(self, now: float) -> None:
        s = self.initial
        if s is None or s.closed or s.tcp is None:
            return
        tcp = s.tcp
        if self._sbuf and tcp.state in (TcpState.ESTABLISHED, TcpState.CLOSE_WAIT):
            n = tcp.send(bytes(self._sbuf))
            if n:
                del self._sbuf[:n]
                self.snd_una += n
                self.snd_nxt = self.snd_una
                if self._snd_blocked and len(self._sbuf) < self.snd_buf:
                    self._snd_blocked = False
                    self._events.append(SendBufferAvailable())
        if self._close_requested and not self._sbuf and not self._subflows_closing:
            if tcp.state in (TcpState.ESTABLISHED, TcpState.CLOSE_WAIT, TcpState.SYN_RECEIVED):
                self._subflows_closing = True
                tcp.close(now)
                self._fin_acked = True

    # ================================================================= path manager
    def _endpoints(self) -> list[Endpoint]:
        return list(self.config.endpoints or ())

    def _pm_established(self) -> None:
        """Fully established: either side announces its signal endpoints, the client joins
        from its subflow endpoints (Linux's in-kernel path manager)."""
        init = self.initial
        if init is None:
            return
        if not self._pm_created:  # (a server: fully established on the third ACK)
            self._pm_created = True
            self._pm_event("created", init)
        self._pm_event("established", init)
        for ep in self._endpoints():
            if "signal" in ep.flags and not self._announced:
                self.announce(ep.address, ep.id, ep.port)
        if init.active:
            for ep in self._endpoints():
                if "subflow" not in ep.flags or ep.address == init.local[0]:
                    continue
                if _is_v6(ep.address) != _is_v6(init.remote[0]):
                    continue  # joins the peer's address only from one of its own family
                self._request_subflow(ep.address, init.remote, ep.id, 0, "backup" in ep.flags)

    def _request_subflow(
        self, local_addr: str, remote: tuple[str, int], local_id: int, remote_id: int, backup: bool
    ) -> bool:
        """Ask the edge for a join (an ``OpenSubflow``); its slot is taken now, and given back
        when the subflow closes or the edge cannot open it (``subflow_open_failed``). Never
        to the peer's initial address and port when its MP_CAPABLE had flag C (RFC 8684 3.1:
        it accepts no more subflows there; Linux's remote_deny_join_id0)."""
        if self._joins >= self.config.limits.subflows or self._mp_fail_sent:
            return False
        init = self.initial
        if self.remote_deny_join_id0 and init is not None and tuple(remote) == init.remote:
            return False
        self._joins += 1
        self._events.append(OpenSubflow(local_addr, remote, local_id, remote_id, backup))
        return True

    # ----------------------------------------------------------------- ADD_ADDR
    def announce(self, address: str, addr_id: int, port: int | None = None) -> bool:
        """Send ADD_ADDR (Linux: a signal endpoint), resent every ``add_addr_timeout`` until
        the peer echoes it, at most ``ADD_ADDR_RETRANS_MAX`` times (pm_kernel.c's add timer).
        False when it cannot be sent (fallback, no usable subflow)."""
        sub = self._pm_subflow()
        init = self.initial
        if sub is None and init is not None and not init.closed:
            sub = init  # fully established on the third ACK: the first ACK we send carries it
        if sub is None or self.fallback or not self.remote_key:
            return False
        addr = ipaddress.ip_address(address)
        h = add_addr_hmac(self.local_key, self.remote_key, addr_id, addr, port)
        opt = AddAddr(addr_id=addr_id, address=addr, port=port, hmac=h)
        self._removed_ids.discard(addr_id)
        self._add_addr_pending[addr_id] = [opt, self._now + self.config.add_addr_timeout, 0]
        sub.queue_option(opt)
        return True

    def _pm_subflow(self, avoid: Subflow | None = None) -> Subflow | None:
        """The subflow that carries a control option (or the DATA_FIN): the first usable one
        that is not stale, a non-backup one first; not ``avoid`` when there is another."""
        subs = [s for s in self.subflows if s.usable]
        subs.sort(key=lambda s: (s.stale, s.backup or s.peer_backup))
        for s in subs:
            if s is not avoid:
                return s
        return subs[0] if subs else None

    def _add_addr_timer(self, now: float) -> None:
        for addr_id, ent in list(self._add_addr_pending.items()):
            opt, deadline, resent = ent
            if now < deadline:
                continue
            if resent >= ADD_ADDR_RETRANS_MAX:
                del self._add_addr_pending[addr_id]
                continue
            sub = self._pm_subflow()
            ent[1] = now + self.config.add_addr_timeout
            if sub is not None:
                ent[2] += 1
                sub.queue_option(opt)
            if ent[2] >= ADD_ADDR_RETRANS_MAX:
                del self._add_addr_pending[addr_id]

    def on_add_addr(self, sub: Subflow, o: AddAddr) -> None:
        if o.echo:
            self.mib.inc("EchoAdd")
            ent = self._add_addr_pending.get(o.addr_id)
            if ent is not None and ent[0].address == o.address:
                del self._add_addr_pending[o.addr_id]  # echoed: no more resends
            return
        if o.hmac is None or o.hmac != add_addr_hmac(
            self.remote_key, self.local_key, o.addr_id, o.address, o.port
        ):
            self.mib.inc("AddAddrDrop")
            return
        self.mib.inc("AddAddr")
        if o.port:
            self.mib.inc("PortAdd")
        sub.queue_option(AddAddr(addr_id=o.addr_id, address=o.address, port=o.port, echo=True))
        self._pm_event("announced", rem_id=o.addr_id, daddr=str(o.address), dport=o.port)
        addr = o.address
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped  # (the HMAC above is over the address as sent)
        self.pm.address_announced(o.addr_id, str(addr), o.port)

    def _pm_add_addr(self, addr_id: int, address: str, port: int | None) -> None:
        """The in-kernel path manager's answer to an ADD_ADDR (pm.KernelPathManager), on either
        side, as Linux: joins within ``add_addr_accepted``."""
        init = self.initial
        if init is None:
            return
        known = (address, port or init.remote[1])
        if known in self._remote_addrs:
            return  # announced again (the echo was late or lost): echoed, no second subflow
        self._remote_addrs.add(known)
        if self._add_addr_accepted >= self.config.limits.add_addr_accepted:
            self._c_flag_add_addr(addr_id, known)
            return
        self._add_addr_accepted += 1
        remote = known
        if remote[0] == init.remote[0] and remote[1] == init.remote[1]:
            return
        mesh = [
            ep
            for ep in self._endpoints()
            if "fullmesh" in ep.flags and _is_v6(ep.address) == _is_v6(remote[0])
        ]
        if _is_v6(remote[0]) == _is_v6(init.local[0]):
            self._request_subflow(init.local[0], remote, 0, addr_id, False)
            mesh = [ep for ep in mesh if ep.address != init.local[0]]
        elif not mesh:
            # another family than the initial subflow's, and no fullmesh endpoint of it: from
            # "any" address of that family (routing picks it), as Linux
            self._request_subflow("", remote, 0, addr_id, False)
        for ep in mesh:
            self._request_subflow(ep.address, remote, ep.id, addr_id, "backup" in ep.flags)

    def _c_flag_add_addr(self, addr_id: int, remote: tuple[str, int]) -> None:
        """Linux 6.18's C-flag case (mptcp_pm_add_addr_c_flag_case): a server that set flag C
        and announces an address to a client that accepts no ADD_ADDR (add_addr_accepted 0,
        Linux's default) would get no second subflow at all, the client's ``subflow``
        endpoints being for the initial address only. So that one ADD_ADDR is taken, and each
        ``subflow`` endpoint other than the initial address joins it, within
        ``limits.subflows`` and once per connection."""
        init = self.initial
        if (
            not self.remote_deny_join_id0
            or self._c_flag_used
            or self.config.limits.add_addr_accepted != 0
            or self._joins >= self.config.limits.subflows
            or init is None
            or not init.active
        ):
            return
        self._c_flag_used = True
        for ep in self._endpoints():
            if (
                "subflow" in ep.flags
                and ep.address != init.local[0]
                and _is_v6(ep.address) == _is_v6(remote[0])
            ):
                self._request_subflow(ep.address, remote, ep.id, addr_id, "backup" in ep.flags)

    # ----------------------------------------------------------------- REMOVE_ADDR
    def on_remove_addr(self, sub: Subflow, o: RemoveAddr) -> None:
        """The peer removed addresses (Linux's mptcp_pm_rm_addr_received): RmAddr per id, and
        our subflows to each (the initial one for id 0) are reset, their data reinjected."""
        for addr_id in o.addr_ids:
            self.mib.inc("RmAddr")
            self._pm_event("removed", rem_id=addr_id)
            for s in list(self.subflows):
                if s.remote_id == addr_id and (not s.initial or addr_id == 0):
                    self._remove_subflow(s, deferred=True)
            if self.initial is not None:
                self._remote_addrs = {
                    a for a in self._remote_addrs if not self._addr_has_id(a, addr_id)
                }
            self.pm.address_removed(addr_id)

    def interface_up(self, address: str, now: float) -> None:
        """A local address came up (for the edge or an experiment): the path manager hears,
        and subflows kept on that address count as a way out again (close timeout)."""
        self._now = now
        self._down_addrs.discard(address)
        self.pm.interface_up(address)
        self._close_timeout_check(now)

    def interface_down(self, address: str, now: float) -> None:
        """A local address went away: the path manager hears (the kernel one closes its
        subflows while another path is up). Once no subflow is on an address that is up, the
        close timeout runs."""
        self._now = now
        self._down_addrs.add(address)
        self.pm.interface_down(address)
        self._close_timeout_check(now)

    @property
    def down_addresses(self) -> frozenset[str]:
        return frozenset(self._down_addrs)

    def _addr_has_id(self, addr: tuple[str, int], addr_id: int) -> bool:
        return any(s.remote_id == addr_id and s.remote == addr for s in self._seen_subflows)

    def _remove_subflow(self, s: Subflow, deferred: bool = False) -> None:
        """Reset a subflow, its data beyond the DATA_ACK reinjected; ``deferred``: from inside
        a segment's processing (the reset happens in the connection's next pass)."""
        if s.tcp is None or s.closed:
            return
        self._reinject_from(s)
        if s.tcp.state is not TcpState.CLOSED:
            # never sent and never will be: the whole mappings it had not started, and the
            # unsent tail of one it had (kept whole by take_unsent, but reset with it)
            s.bytes_sent -= s.tcp.take_unsent() + s.tcp.unsent
        s.rst_reason = 0
        if deferred:
            s.reset_pending = True
        else:
            s.tcp.abort(self._now)

    def remove_addresses(self, addr_ids: list[int], now: float | None = None) -> bool:
        """``ip mptcp endpoint del``/``flush``: REMOVE_ADDR for the ids (on a subflow that
        stays, when there is one), then our subflows from those addresses are reset, each
        counted as RmSubflow (Linux's mptcp_pm_nl_rm_subflow_received). An announced address
        is no longer resent."""
        if now is not None:
            self._now = now
        ids = tuple(dict.fromkeys(addr_ids))
        if self.fallback or not ids or not self.fully_established:
            return False
        going = [s for s in self.subflows if s.local_id in ids]
        carrier = next((s for s in self.subflows if s.usable and s not in going), None)
        if carrier is None:
            carrier = self._pm_subflow()
        for i in range(0, len(ids), 8):  # Linux puts at most 8 ids in one option
            opt = RemoveAddr(ids[i : i + 8])
            if carrier is not None:
                carrier.queue_option(opt)
            else:
                self.mib.inc("RmAddrTxDrop")
        for addr_id in ids:
            self._add_addr_pending.pop(addr_id, None)
            self._removed_ids.add(addr_id)
        for s in going:
            if carrier is not None and s is carrier:
                s._close_after_options = True  # (its own REMOVE_ADDR leaves first)
            self.mib.inc("RmSubflow")
            self._pm_event("sub_closed", s, error="removed")
            if s is not carrier:
                self._remove_subflow(s)
        return True

    def remove_address(self, address: str, now: float | None = None) -> bool:
        """REMOVE_ADDR for a local address (its endpoint id, 0 for the initial subflow's)."""
        return self.remove_addresses([self._local_id_for(address)], now)

    # ----------------------------------------------------------------- MP_PRIO
    def set_backup(self, sub: Subflow, backup: bool, now: float | None = None) -> bool:
        """Our priority of one subflow (``ip mptcp endpoint change ... backup|nobackup``): we
        stop (or start) sending on it unless nothing else is usable, and ask the peer the same
        with MP_PRIO on that subflow (MPPrioTx)."""
        if now is not None:
            self._now = now
        if self.fallback or sub not in self.subflows or not sub.usable:
            return False
        sub.backup = backup
        sub.queue_option(MpPrio(backup=backup))
        self._pm_event("priority", sub, local=True)
        return True

    def set_endpoint_backup(self, address: str, backup: bool, now: float | None = None) -> int:
        """``set_backup`` for every subflow from a local address; how many."""
        return sum(
            self.set_backup(s, backup, now) for s in list(self.subflows) if s.local[0] == address
        )

    def on_mp_prio(self, sub: Subflow, o: MpPrio) -> None:
        self.mib.inc("MPPrioRx")
        sub.peer_backup = o.backup
        self._pm_event("priority", sub, local=False)

    def _sendable(self, usable: list[Subflow]) -> list[Subflow]:
        """Linux's mptcp_subflow_get_send: a backup subflow (ours, or one the peer asked for
        with MP_JOIN's or MP_PRIO's B flag) gets data only while no other subflow is active
        (usable and not stale), however full the active ones are."""
        if any(not (s.backup or s.peer_backup) and not s.stale for s in usable):
            return [s for s in usable if not (s.backup or s.peer_backup)]
        return usable

    # ----------------------------------------------------------------- MP_FASTCLOSE
    def on_fastclose(self, sub: Subflow, o: FastClose, rst: bool = False) -> None:
        """MP_FASTCLOSE, on an ACK or an RST (RFC 8684 3.5): with our key (the receiver's) it
        counts (MPFastcloseRx) and every subflow is reset (the one an RST came on is closed by
        it), the connection with them; with any other key it is ignored (Linux: not even
        counted)."""
        if o.receiver_key != self.local_key or self.fallback or self._closed:
            return
        self.mib.inc("MPFastcloseRx")
        self._fastclosed = True
        for s in self.subflows:
            s.rst_reason = 0
            s.reset_pending = True  # (an RST's own subflow is CLOSED by then: nothing sent)
        self._closed = True
        self._unregister()
        self._events.append(Reset("connection reset by peer (MP_FASTCLOSE)"))
        self._events.append(Closed())
        self._pm_event("closed")

    # ----------------------------------------------------------------- DSS checksums, MP_FAIL
    def _infinite_fallback_allowed(self) -> bool:
        """Whether a checksum failure we found may end in fallback (MP_FAIL on an ACK, or
        silently before any valid checksum) rather than a reset of the subflow: only while
        no join was ever started. The peer must come to the same answer, and it counts a
        join from the moment its handshake began on its side, which we cannot see; with a
        reset, the client opens the path again (KernelPathManager.subflow_down)."""
        return len(self._seen_subflows) == 1 and not self.fallback

    def on_checksum_failure(self, sub: Subflow, dsn: int, length: int) -> bool:
        """A mapping whose DSS checksum is wrong (DataCsumErr), as Linux's subflow.c: with a
        single subflow, MP_FAIL and the data goes on (the peer answers with an infinite
        mapping: plain TCP from there), True; otherwise the subflow is reset with MP_FAIL and
        MP_TCPRST 'middlebox interference', its data dropped (the peer sends it again on the
        others), False."""
        self.mib.inc("DataCsumErr")
        if sub.initial and not sub.csum_ok_seen and self._infinite_fallback_allowed():
            # no checksum of the peer's ever passed: a middlebox from the start, plain TCP at
            # once, no MP_FAIL (subflow_can_fallback)
            self.enter_fallback("checksum failure before any valid checksum")
            return True
        if self._infinite_fallback_allowed():
            if not self._mp_fail_sent:
                self._mp_fail_sent = True
                sub.queue_option(MpFail(dsn=dsn & MASK64))
                sub.arm_mp_fail(self._now)  # unanswered, the subflow is reset (Linux)
            return True
        sub.mp_fail_dsn = dsn
        self.reset_subflow(sub, reason=RST_MIDDLEBOX)
        return False

    def on_mp_fail(self, sub: Subflow, o: MpFail, rst: bool = False) -> None:
        """The peer's MP_FAIL: with a single subflow, Linux's answer (MP_FAIL back and an
        infinite mapping on the next data, then plain TCP); with several the peer resets the
        subflow itself. On an RST (``rst``) it is that reset: the peer saw several subflows,
        so it is not a request to fall back, even when this end has seen only one so far (a
        join on its way): answering it would shut every later join out and leave nothing to
        send on."""
        self.mib.inc("MPFailRx")
        if rst:
            return
        if self._mp_fail_sent:
            sub.mp_fail_deadline = None  # the answer to ours (Linux: "MP_FAIL response received")
        if self.fallback or self._mp_fail_sent or not self.can_fallback():
            return
        self._mp_fail_sent = True
        self._mp_fail_answer = True  # the infinite mapping follows it (note_option_sent)
        sub.queue_option(MpFail(dsn=o.dsn))

    def note_option_sent(self, o: Any) -> None:
        if isinstance(o, AddAddr):
            self.mib.inc("EchoAddTx" if o.echo else "AddAddrTx")
        elif isinstance(o, MpPrio):
            self.mib.inc("MPPrioTx")
        elif isinstance(o, RemoveAddr):
            self.mib.inc("RmAddrTx")
        elif isinstance(o, FastClose):
            self.mib.inc("MPFastcloseTx")
        elif isinstance(o, MpFail):
            self.mib.inc("MPFailTx")
            if self._mp_fail_answer:
                self._mp_fail_answer = False
                self._infinite_map_pending = True

    # ================================================================= introspection
    def info(self) -> dict[str, Any]:
        return {
            "fallback": self.fallback,
            "fallback_reason": self.fallback_reason or None,
            "token": f"{self.local_token:08x}",
            "subflows": [s.info() for s in self.all_subflows()],
            "mib": self.mib.snapshot(),
            "plugins": {
                "scheduler": _plugin_name(self.sched),
                "cc": _plugin_name(
                    self.cc_group if self.cc_group is not None else self.tcp_config.cc
                ),
                "pm": _plugin_name(self.pm),
                "opportunistic": self.config.opportunistic,
                "opportunistic_bytes": getattr(self, "ortx_bytes", 0),
                "penalties": getattr(self, "ortx_penalties", 0),
            },
        }

    def debug_state(self) -> dict[str, Any]:
        """The data level right now (for a state dump when a run stalls): where each side's
        sequence stands, what waits for reinjection, how far the close has come, and each
        subflow's view of its own path."""
        return {
            "snd_una": self.snd_una,
            "snd_nxt": self.snd_nxt,
            "snd_edge": self.snd_edge,
            "unsent": self.snd_una + len(self._sbuf) - self.snd_nxt,
            "sbuf": len(self._sbuf),
            "chunks": len(self._chunks),
            # the oldest chunks: [offset from snd_una, length, subflow, reinjected]
            "chunks_head": [
                [d - self.snd_una, n, sub.local[0], r] for d, n, sub, r in list(self._chunks)[:40]
            ],
            "mib": self.mib.snapshot(),
            "reinject": [[d - self.snd_una, n, b.local[0]] for d, n, b in self._reinject],
            "owed": len(self._owed),
            "una_still_for": round(self._now - self._una_moved_at, 4),
            "repaired_to": self._repaired_to - self.snd_una,
            "repair_in": None if self._repair_at is None else round(self._repair_at - self._now, 4),
            "rtx": {"deadline": self._rtx.deadline, "backoff": self._rtx.backoff},
            "rcv_nxt": self.rcv_nxt,
            "rbuf": self._rlen,
            "ooo_bytes": self._ooo_bytes,
            "close": {
                "requested": self._close_requested,
                "fin_dsn": self._fin_dsn,
                "fin_send": self._fin_send,
                "fin_acked": self._fin_acked,
                "fin_tries": self._fin_tries,
                "fin_deadline": self._fin_deadline,
                "peer_fin": self._peer_fin,
                "eof": self._eof,
                "subflows_closing": self._subflows_closing,
                "close_timeout_at": self._tout_deadline,
                "down_addresses": sorted(self._down_addrs),
            },
            "subflows": [
                {
                    "local": s.local,
                    "usable": s.usable,
                    "stale": s.stale,
                    "backup": s.backup or s.peer_backup,
                    "space": s.space,
                    "state": getattr(s.tcp.state, "name", None) if s.tcp else None,
                    "snd_una": s.tcp.snd_una if s.tcp else None,
                    "snd_nxt": s.tcp.snd_nxt if s.tcp else None,
                    "rto_count": s.tcp.stats.rto_count if s.tcp else None,
                    "rto_streak": s._rto_streak,
                    "timer_in": (
                        None
                        if s.tcp is None or s.tcp.get_timer() is None
                        else round(s.tcp.get_timer() - self._now, 4)
                    ),
                }
                for s in self.subflows
            ],
        }

    def all_subflows(self) -> list[Subflow]:
        return list(self._seen_subflows)


def _is_v6(addr: str) -> bool:
    return ":" in addr


def _plugin_name(obj: Any) -> str:
    """A plug-in's own ``name`` (not one inherited), else its class's (or function's) name."""
    if isinstance(obj, str):
        return obj
    cls = obj if isinstance(obj, type) else type(obj)
    own = vars(cls).get("name")
    return own if isinstance(own, str) else getattr(obj, "__name__", cls.__name__)


class _Refuser:
    """Hooks of a join we refuse: the RST carries MP_TCPRST with the reason."""

    def __init__(self, sub: Subflow) -> None:
        self.sub = sub

    def outgoing_options(self, tcp: TcpConnection, seg: TcpSegment, space: int) -> list:
        return self.sub.outgoing_options(tcp, seg, space) if seg.flags & 0x04 else []

    def incoming_options(self, tcp: TcpConnection, seg: TcpSegment) -> bool:
        return False

    def sent_range(self, *a: Any) -> None:
        pass

    def received_range(self, *a: Any) -> None:
        pass
