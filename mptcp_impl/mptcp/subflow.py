"""A subflow: an ordinary ``mptcp_impl.tcp`` connection plus the hooks that speak MPTCP on it.

TCP knows nothing of MPTCP; this object is the TcpHooks it calls. Outgoing: the MP_CAPABLE or
MP_JOIN handshake options, then a DSS on every segment (DATA_ACK always, the mapping of the
segment's bytes when it carries any, DATA_FIN when due) and whatever the path manager queued
(ADD_ADDR, MP_PRIO). Incoming: the handshake checks (keys, HMACs), DATA_ACKs and mappings.
Data leaves the subflow's in-order stream only through a mapping (``pull``), as in Linux's
subflow.c, so a byte reaches the connection with its data sequence number or not at all.
"""

from __future__ import annotations

import bisect
from collections import deque
from typing import TYPE_CHECKING, Any

from ..tcp.connection import DEFER, TcpConnection, TcpState
from ..tcp.options import MAX_OPTIONS_LEN, Sack, Timestamps, UnknownOption, encoded_length
from ..tcp.segment import ACK, FIN, RST, SYN, TcpSegment
from . import crypto
from .options import (
    _DSS_LAYOUT,
    DSS,
    DSS_A,
    DSS_M,
    KIND_MPTCP,
    RST_MIDDLEBOX,
    RST_MPTCP_ERROR,
    RST_UNSPECIFIED,
    AddAddr,
    Dss,
    DSS_a,
    DSS_m,
    FastClose,
    MpCapable,
    MpFail,
    MpJoinAck,
    MpJoinSyn,
    MpJoinSynAck,
    MpPrio,
    MptcpOptionError,
    RemoveAddr,
    TcpRst,
    decode,
    dss_map_option,
    dss_option,
    expand32,
    find_mptcp,
    to_tcp_option,
)

if TYPE_CHECKING:
    from .connection import MptcpConnection

MASK32 = 0xFFFFFFFF
MASK64 = (1 << 64) - 1
DSS_DATA_ROOM = 28  # DATA_ACK (64) + mapping (64-bit DSN), padded: what each data segment needs
# Seconds our MP_FAIL waits for the peer's answer (its MP_FAIL or an infinite mapping) before
# the subflow is reset: Linux's fail_tout, jiffies + TCP_RTO_MAX (mptcp_subflow_fail)
MP_FAIL_TIMEOUT = 120.0
# ACKs of new data in a row without any MPTCP option on the first subflow: the peer fell back
# (one could be a box's slip; three are a receiver that stopped speaking MPTCP)
PLAIN_ACKS_FALLBACK = 3


def _fast_dss_table() -> dict[tuple[int, int], tuple[Any, bool, bool, bool]]:
    """(first two body bytes as one int, body length) -> (layout, 64-bit DATA_ACK, mapping,
    64-bit DSN) for the DSSs the receive fast path takes: a DATA_ACK, a mapping or none,
    no checksum, no DATA_FIN (what a data segment or an ACK of an established subflow
    carries); any other option goes through ``find_mptcp``."""
    out = {}
    for f in range(16):
        if not f & DSS_A:
            continue
        ack64, has_map, dsn64 = bool(f & DSS_a), bool(f & DSS_M), bool(f & DSS_M and f & DSS_m)
        blen = 2 + (8 if ack64 else 4) + ((14 if dsn64 else 10) if has_map else 0)
        out[(DSS << 12) | f, blen] = (_DSS_LAYOUT[f, False], ack64, has_map, dsn64)
    return out


_FAST_DSS = _fast_dss_table()


def mpc_usable(mpc: MpCapable | None, syn: bool = False) -> bool:
    """Linux's mptcp_parse_option: an MP_CAPABLE counts only with version 1 (a SYN may name
    a later one), flag H and no other crypto bit, flag B clear; otherwise it is ignored."""
    return (
        mpc is not None
        and (mpc.version >= 1 if syn else mpc.version == 1)
        and mpc.hmac_sha256
        and mpc.crypto_dg == 0
        and not mpc.extensibility
    )


def _drop_tcp_options(seg: TcpSegment) -> int:
    """Take TCP's timestamps and SACK off a pure ACK to make room for an MPTCP option that does
    not fit beside them (Linux sends an ADD_ADDR of an IPv6 address with port and HMAC so; a
    segment without timestamps is accepted on a timestamp connection). Returns the room left."""
    seg.options[:] = [o for o in seg.options if type(o) not in (Timestamps, Sack)]
    return MAX_OPTIONS_LEN - encoded_length(seg.options)


def _drop_sack(seg: TcpSegment) -> int:
    """Take the SACK blocks off a pure ACK so that a DATA_FIN fits: a subflow that holds
    out-of-order data (its path was cut amid losses) puts SACK blocks on every ACK, and a
    DATA_FIN that never fits there never leaves. Returns the room left."""
    seg.options[:] = [o for o in seg.options if type(o) is not Sack]
    return MAX_OPTIONS_LEN - encoded_length(seg.options)


def _hmac(key_a: int, key_b: int, msg: bytes) -> bytes:
    return crypto.hmac_sha256(key_a.to_bytes(8, "big") + key_b.to_bytes(8, "big"), msg)


class Subflow:
    """One TCP connection of an MPTCP connection, and the hooks its TCP calls."""

    def __init__(
        self,
        conn: MptcpConnection,
        local: tuple[str, int],
        remote: tuple[str, int],
        *,
        initial: bool,
        active: bool,
        local_id: int = 0,
        remote_id: int = 0,
        backup: bool = False,
    ) -> None:
        self.conn = conn
        self.local = local
        self.remote = remote
        self.initial = initial
        self.active = active  # we sent the SYN
        self.local_id = local_id
        self.remote_id = remote_id
        self.backup = backup  # we send on it only when no other subflow is usable
        self.peer_backup = False  # the peer asked us (MP_JOIN B flag / MP_PRIO)
        self.tcp: TcpConnection = None  # type: ignore[assignment]  # set by the connection
        self.stale = False
        self.established = False  # usable for data (join: after the 4th ACK)
        self.closed = False
        self.rst_reason: int | None = None  # MP_TCPRST on the RST we send (None: 0)
        self.peer_rst_reason: int | None = None  # MP_TCPRST on the peer's RST
        self.fastclose = False  # our RST carries MP_FASTCLOSE (the connection's abort)
        self._close_after_options = False  # reset once the queued options left (REMOVE_ADDR)
        self.mp_fail_dsn: int | None = None  # MP_FAIL on our RST (a checksum failure)
        self.csum_ok_seen = False  # a mapping of the peer's passed its DSS checksum
        self._plain_acks = 0  # ACKs of our data in a row with no MPTCP option (peer_fell_back)
        self.mp_fail_deadline: float | None = None  # our MP_FAIL unanswered: reset by then
        self._tx_sums: dict[int, tuple[int, int]] = {}  # DSS checksums: dsn -> (sum, length)
        self.reset_pending = False  # a protocol error: the connection resets this subflow
        self._local_nonce = conn.rng.getrandbits(32)
        self._remote_nonce = 0
        self._join_ack_pending = False  # joiner: third ACK sent, 4th ACK not yet seen
        self._join_ack_deadline: float | None = None
        self._mpc_pending = initial and active  # client: keys not yet confirmed by a DSS
        self._queued_opts: deque[Any] = deque()  # ADD_ADDR, MP_PRIO, ... on the next segments
        self._ack_dss: Dss | None = None  # the last DATA_ACK-only DSS (immutable: reused)
        self._adv_win: int | None = None  # receive_window's answer for the segment being built
        # receive side: the peer's mappings [subflow seq (relative, unwrapped), length, dsn,
        # checksum], sorted by start; those before _map_head are consumed (dropped in batches, so
        # taking the head is amortized O(1); a lookup is a bisect)
        self._maps: list[list[Any]] = []
        self._map_starts: list[int] = []
        self._map_head = 0
        self._rx_ssn = 1  # relative subflow sequence of the next byte to pull
        # failover bookkeeping
        self._rto_seen = 0
        self._rto_streak = 0
        self._una_seen = 0
        self._una_progress = 0  # (holes.py) its snd_una when it last made ACK progress, and when
        self._progress_at = 0.0
        self.bytes_sent = 0  # payload handed to this subflow (reinjections included)
        self.bytes_received = 0  # payload pulled from it through mappings
        self.reinjected = 0
        self.holds_slot = False  # a join counted in the connection's subflow limit

    # ----------------------------------------------------------------- scheduler's view
    @property
    def cwnd(self) -> int:
        return self.tcp.cwnd

    @property
    def in_flight(self) -> int:
        return self.tcp.bytes_in_flight

    @property
    def queued(self) -> int:
        return self.tcp.unsent

    @property
    def srtt(self) -> float | None:
        return self.tcp.srtt

    @property
    def rttvar(self) -> float | None:
        return self.tcp.rttvar

    @property
    def ssthresh(self) -> int:
        return self.tcp.cc.ssthresh

    @property
    def mss(self) -> int:
        return self.tcp.mss

    @property
    def pacing_rate(self) -> float:
        """Bytes per second, as Linux sets sk_pacing_rate: cwnd/srtt, times 2 in slow start
        and 1.2 after (no pacing is done here; schedulers read it)."""
        return self.tcp.pacing_rate

    @property
    def space(self) -> int:
        """What it can take now without queueing: its window's room, and never more than its
        send buffer holds (a push beyond that would be cut short: bytes recorded as carried
        by a subflow that never had them), nor more than the edge's local queue takes now
        (``tx_room``, TCP small queues: what a subflow cannot send yet stays with the
        connection for whichever subflow drains first, as Linux's scheduler skips a subflow
        whose queue is full)."""
        t = self.tcp
        unsent = t.unsent
        room = min(min(t.cwnd, t.snd_wnd) - t.bytes_in_flight - unsent, t.send_buffer_free)
        tx = t.tx_room
        if tx is not None and tx - unsent < room:
            # Less than two segments of room: wait for the queue to drain. A mapping of one
            # segment, behind another mapping's last one, loses its only DSS to a middlebox
            # that merges two segments into one (the peer then resets: data without a
            # mapping); a mapping of two or more still has a segment that carries it.
            r = tx - unsent
            return r if r >= 2 * t.mss else 0
        return room

    @property
    def usable(self) -> bool:
        t = self.tcp
        return (
            self.established
            and not self.closed
            and (t.state is TcpState.ESTABLISHED or t.state is TcpState.CLOSE_WAIT)
        )

    @property
    def name(self) -> str:
        return f"{self.local[0]}:{self.local[1]}->{self.remote[0]}:{self.remote[1]}"

    def info(self) -> dict[str, Any]:
        t = self.tcp
        return {
            "local": f"{self.local[0]}:{self.local[1]}",
            "remote": f"{self.remote[0]}:{self.remote[1]}",
            "local_id": self.local_id,
            "remote_id": self.remote_id,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "reinjected": self.reinjected,
            "retransmits": t.stats.retransmits,  # segments carrying retransmitted bytes
            "srtt_ms": round(t.srtt * 1000, 3) if t.srtt is not None else None,
            "cwnd": t.cwnd,
            "backup": self.backup or self.peer_backup,
            "stale": self.stale,
            "state": t.state.value if not self.closed else "CLOSED",
            "peer_rst_reason": self.peer_rst_reason,  # MP_TCPRST on the peer's RST, if any
        }

    # ----------------------------------------------------------------- sending
    def push(self, dsn: int, data: bytes | memoryview) -> int:
        """Queue bytes of the connection on this subflow as one mapping starting at ``dsn``,
        or as more of the last mapping when that one continues at ``dsn``, was never sent and
        stays within ``max_mapping`` (Linux's mptcp_sendmsg_frag grows an unsent mapping so;
        each mapping bounds segments and GSO batches, and costs a DSS to encode and check).
        Not with DSS checksums: the checksum covers the mapping as first recorded."""
        tcp = self.tcp
        conn = self.conn
        if not conn.checksum:
            last = tcp.last_unsent_meta()
            if (
                last is not None
                and last[1] + last[0] == dsn  # type: ignore[operator]
                and last[0] + len(data) <= conn.config.max_mapping
            ):
                n = tcp.extend_last_meta(data)
                self.bytes_sent += n
                return n
        n = tcp.send(data, meta=dsn)
        self.bytes_sent += n
        if n and conn.checksum:
            sums = self._tx_sums
            if len(sums) > 256:  # forget the mappings the peer has DATA_ACKed
                una = self.conn.snd_una
                for k in [k for k, (_s, ln) in sums.items() if k + ln <= una]:
                    del sums[k]
            sums[dsn] = (crypto.payload_sum(memoryview(data)[:n]), n)
        return n

    def _tx_checksum(self, dsn: int, ssn_rel: int, length: int) -> int:
        """The DSS checksum of our mapping at ``dsn`` (``corrupt_checksum_at``: a test's way to
        make the peer see a checksum failure, once)."""
        ps = self._tx_sums.get(dsn, (0, 0))[0]
        c = crypto.dss_checksum_of_sum(dsn & MASK64, ssn_rel, length, ps)
        conn = self.conn
        bad = conn.config.corrupt_checksum_at
        if bad is not None and not conn._csum_corrupted:
            off = dsn - conn.local_idsn - 1
            if off <= bad < off + length:
                conn._csum_corrupted = True
                c ^= 0x5A5A
        return c

    def queue_option(self, opt: Any) -> None:
        if opt not in self._queued_opts:  # (an ADD_ADDR echoed twice before it left: once)
            self._queued_opts.append(opt)
        self.tcp.send_ack()

    def has_queued_options(self) -> bool:
        return bool(self._queued_opts)

    # ----------------------------------------------------------------- TcpHooks: outgoing
    def outgoing_options(self, tcp: TcpConnection, seg: TcpSegment, space: int) -> list:
        conn = self.conn
        if conn.fallback:
            return []
        flags = seg.flags
        if flags & RST:
            # Linux puts MP_TCPRST on every RST of an MPTCP subflow, after MP_FASTCLOSE when
            # the connection is being reset (mptcp_established_options)
            out = []
            if self.fastclose and conn.remote_key:
                conn.mib.inc("MPFastcloseTx")
                out.append(to_tcp_option(FastClose(receiver_key=conn.remote_key)))
            elif self.mp_fail_dsn is not None:
                conn.mib.inc("MPFailTx")
                out.append(to_tcp_option(MpFail(dsn=self.mp_fail_dsn & MASK64)))
            conn.mib.inc("MPRstTx")
            out.append(to_tcp_option(TcpRst(reason=self.rst_reason or 0)))
            return out
        if flags & SYN:
            if (
                self.initial
                and self.active
                and not flags & ACK
                and tcp.stats.rto_count >= conn.config.syn_retrans_before_tcp_fallback
            ):
                # Two MP_CAPABLE SYNs lost: a middlebox may drop them; the next SYN is plain
                # TCP (Linux's mptcp_active_detect_blackhole, MPCapableSYNTXDrop)
                conn.mib.inc("MPCapableSYNTXDrop")
                conn.enter_fallback("MP_CAPABLE SYNs lost")
                return []
            return [to_tcp_option(self._syn_option(flags))]
        if flags & ACK:
            # the window relative to the DATA_ACK, not what TCP made of it in subflow space
            # (TCP asked receive_window for this very segment: the same value, kept once)
            w = self._adv_win
            if w is None:
                w = conn.adv_window(tcp.rcv_wscale, tcp.config.mss)
            else:
                self._adv_win = None
            seg.window = w >> tcp.rcv_wscale
        out: list = []
        if self.initial and self.active and self._mpc_pending:
            mpc = self._third_ack_mpc(tcp, seg)
            if mpc is not None:
                return [to_tcp_option(mpc)]
        if self._join_ack_pending and not seg.payload:
            hm = _hmac(
                conn.local_key,
                conn.remote_key,
                self._local_nonce.to_bytes(4, "big") + self._remote_nonce.to_bytes(4, "big"),
            )
            return [to_tcp_option(MpJoinAck(hm[:20]))]
        dss = self._dss(tcp, seg, space)
        q = self._queued_opts
        if q and not seg.payload:
            if dss is not None and dss.dsn is None and dss.length + q[0].length > space:
                dss = None  # room for it on this pure ACK (Linux: drop_other_suboptions)
            if q[0].length > space and not flags & (SYN | FIN | RST):
                space = _drop_tcp_options(seg)  # (an IPv6 ADD_ADDR with port and HMAC: 30)
            if q[0].length > space:  # fits on no segment: drop it rather than wait forever
                o = q.popleft()
                if isinstance(o, AddAddr):
                    conn.mib.inc("EchoAddTxDrop" if o.echo else "AddAddrTxDrop")
        if type(dss) is UnknownOption:
            out.append(dss)
            space -= 2 + len(dss.data)
        elif dss is not None:
            out.append(dss_option(dss))
            space -= dss.length
        while self._queued_opts and self._queued_opts[0].length <= space - (0 if not out else 0):
            o = self._queued_opts.popleft()
            out.append(to_tcp_option(o))
            space -= o.length
            conn.note_option_sent(o)
        return out

    def _syn_option(self, flags: int) -> Any:
        conn = self.conn
        deny = not conn.config.allow_join_initial_addr_port  # flag C, as Linux sets it
        if self.initial:
            if flags & ACK:
                return MpCapable(
                    checksum_required=conn.checksum,
                    no_join_source=deny,
                    sender_key=conn.local_key,
                )
            return MpCapable(checksum_required=conn.config.checksum, no_join_source=deny)
        if flags & ACK:
            hm = _hmac(
                conn.local_key,
                conn.remote_key,
                self._local_nonce.to_bytes(4, "big") + self._remote_nonce.to_bytes(4, "big"),
            )
            return MpJoinSynAck(
                hmac64=int.from_bytes(hm[:8], "big"),
                nonce=self._local_nonce,
                addr_id=self.local_id,
                backup=self.backup,
            )
        return MpJoinSyn(
            token=conn.remote_token,
            nonce=self._local_nonce,
            addr_id=self.local_id,
            backup=self.backup,
        )

    def _third_ack_mpc(self, tcp: TcpConnection, seg: TcpSegment) -> MpCapable | None:
        """Client, until the server's first DSS: the third ACK and the first data segment carry
        both keys (RFC 8684 3.1), so the server learns them even if the third ACK was lost."""
        conn = self.conn
        deny = not conn.config.allow_join_initial_addr_port
        if not seg.payload:
            return MpCapable(
                checksum_required=conn.checksum,
                no_join_source=deny,
                sender_key=conn.local_key,
                receiver_key=conn.remote_key,
            )
        rel = (seg.seq - tcp.iss) & MASK32
        m = tcp.meta_at(seg.seq)
        if rel == 1 and m is not None and m[0] == seg.seq:
            return MpCapable(
                checksum_required=conn.checksum,
                no_join_source=deny,
                sender_key=conn.local_key,
                receiver_key=conn.remote_key,
                data_len=m[1],
                checksum=self._tx_checksum(m[2], 1, m[1]) if conn.checksum else None,
            )
        return None

    def _dss(self, tcp: TcpConnection, seg: TcpSegment, space: int) -> Dss | UnknownOption | None:
        """The DSS for ``seg``: a ``Dss``, or (a data segment's usual mapping) its TCP option
        already encoded."""
        conn = self.conn
        ack = conn.rcv_nxt & MASK64
        if seg.payload:
            m = tcp.meta_at(seg.seq)
            if m is None:
                return Dss(data_ack=ack, data_ack64=True)  # unmapped: cannot happen in MPTCP mode
            start, length, dsn = m
            if conn._infinite_map_pending and not conn.can_fallback():
                # a subflow joined since the MP_FAIL: no fallback now (the other subflows'
                # bytes would be misplaced); Linux's mptcp_update_infinite_map resets it
                conn._infinite_map_pending = False
                conn.mib.inc("FallbackFailed")
                self.rst_reason = 1
                self.reset_pending = True
            elif (
                conn._infinite_map_pending
                and seg.seq == start
                and not (start - tcp.snd_max) & MASK32
            ):
                # after MP_FAIL with a single subflow: the infinite mapping, then plain TCP
                # (Linux's mptcp_update_infinite_map). Only on the first segment of a mapping
                # none of whose bytes has left (Linux marks new data): a Linux receiver reads
                # the rest of a mapping it holds without looking at the DSS inside it, so one
                # there (a retransmission, or the rest of a partly sent mapping) goes
                # unseen, the plain segments after it end the mapping on missing
                # DSS (its DssFallback, no InfiniteMapRx). Until then: the mapping as it was.
                conn._infinite_map_pending = False
                conn.mib.inc("InfiniteMapTx")
                d = Dss(
                    data_ack=ack,
                    data_ack64=True,
                    dsn=(dsn + ((seg.seq - start) & MASK32)) & MASK64,
                    dsn64=True,
                    subflow_seq=0,
                    data_len=0,
                    checksum=0 if conn.checksum else None,
                )
                conn.enter_fallback("infinite mapping sent (MP_FAIL)")
                return d
            # DATA_FIN rides on pure ACKs only, so a retransmitted mapping never changes
            ssn = (start - tcp.iss) & MASK32
            if not conn.checksum and length <= 0xFFFF:
                return dss_map_option(ack, dsn & MASK64, ssn, length)  # (every data segment)
            return Dss(
                data_ack=ack,
                data_ack64=True,
                dsn=dsn & MASK64,
                dsn64=True,
                subflow_seq=ssn,
                data_len=length,
                checksum=self._tx_checksum(dsn, ssn, length) if conn.checksum else None,
            )
        fin_dsn = conn.data_fin_due(self)
        if fin_dsn is not None:
            d = Dss(
                data_ack=ack,
                data_ack64=True,
                dsn=fin_dsn & MASK64,
                dsn64=True,
                subflow_seq=0,
                data_len=1,
                data_fin=True,
                checksum=crypto.dss_checksum(fin_dsn, 0, 1, b"") if conn.checksum else None,
            )
            if d.length > space and not seg.payload:
                space = _drop_sack(seg)  # (Linux too gives MPTCP's options the room first)
            if d.length <= space:
                conn.data_fin_sent(self)
                return d
        c = self._ack_dss
        if c is None or c.data_ack != ack:  # (the same DATA_ACK on each segment of a flush)
            c = self._ack_dss = Dss(data_ack=ack, data_ack64=True)
        return c

    # ----------------------------------------------------------------- TcpHooks: incoming
    def incoming_options(self, tcp: TcpConnection, seg: TcpSegment) -> bool | str | None:
        conn = self.conn
        options = seg.options
        if (
            len(options) == 2
            and type(o := options[1]) is UnknownOption
            and o.kind == KIND_MPTCP
            and type(options[0]) is Timestamps
            and not seg.flags & (RST | SYN)
            and (fast := _FAST_DSS.get((int.from_bytes(o.data[:2], "big"), len(o.data))))
            and not conn.fallback
            and not conn.checksum
            and not self._mpc_pending
            and not self._join_ack_pending
            and tcp.state is not TcpState.SYN_RECEIVED
        ):
            return self._fast_dss(tcp, seg, o.data, fast)
        opts = []
        for o in find_mptcp(seg.options) if seg.options else ():
            if isinstance(o, MptcpOptionError):
                conn.mib.inc("OptionMalformed")
                continue
            opts.append(o)
        flags = seg.flags
        if flags & RST:
            if conn.fallback:
                return None
            for o in opts:
                if isinstance(o, TcpRst):
                    conn.mib.inc("MPRstRx")
                    self.peer_rst_reason = o.reason
                elif isinstance(o, FastClose):
                    conn.on_fastclose(self, o, rst=True)
                elif isinstance(o, MpFail):
                    conn.on_mp_fail(
                        self, o, rst=True
                    )  # (several subflows: the peer resets this one)
            return None
        if flags & SYN:
            if flags & ACK:
                return self._on_synack(tcp, seg, opts)
            return self._on_syn(seg, opts)
        if conn.fallback:
            return None
        if tcp.state is TcpState.SYN_RECEIVED:
            ok = self._on_third_ack(tcp, seg, opts)
            if ok is not None or conn.fallback:
                return ok
        return self._on_established(tcp, seg, opts)

    def _on_syn(self, seg: TcpSegment, opts: list) -> bool | None:
        """Server side; the listener already routed MP_JOIN SYNs by token."""
        conn = self.conn
        if self.initial:
            mpc = next((o for o in opts if isinstance(o, MpCapable)), None)
            conn.accept_capable(mpc)
            return None
        join = next((o for o in opts if isinstance(o, MpJoinSyn)), None)
        if join is None:
            return False
        self._remote_nonce = join.nonce
        self.remote_id = join.addr_id
        self.peer_backup = join.backup
        if join.backup:
            conn.mib.inc("MPJoinSynBackupRx")
        return None

    def _on_synack(self, tcp: TcpConnection, seg: TcpSegment, opts: list) -> bool | None:
        conn = self.conn
        if self.initial:
            mpc = next((o for o in opts if isinstance(o, MpCapable)), None)
            conn.on_synack_capable(mpc)
            return None
        join = next((o for o in opts if isinstance(o, MpJoinSynAck)), None)
        if join is None:
            # The peer answered without MP_JOIN: this subflow cannot be part of the connection.
            conn.mib.inc("MPJoinSynAckHMacFailure")
            self.rst_reason = 1
            return False
        self._remote_nonce = join.nonce
        self.remote_id = join.addr_id
        self.peer_backup = join.backup
        if join.backup:
            conn.mib.inc("MPJoinSynAckBackupRx")
        hm = _hmac(
            conn.remote_key,
            conn.local_key,
            join.nonce.to_bytes(4, "big") + self._local_nonce.to_bytes(4, "big"),
        )
        if int.from_bytes(hm[:8], "big") != join.hmac64:
            conn.mib.inc("MPJoinSynAckHMacFailure")
            self.rst_reason = 1  # MPTCP-specific error
            return False
        conn.mib.inc("MPJoinSynAckRx")
        if conn.initial is not None and self.remote[1] != conn.initial.remote[1]:
            conn.mib.inc("MPJoinPortSynAckRx")  # from a port the peer announced
        self._join_ack_pending = True
        self._join_ack_deadline = None
        return None

    def _on_third_ack(self, tcp: TcpConnection, seg: TcpSegment, opts: list) -> bool | str | None:
        conn = self.conn
        if self.initial:
            mpc = next((o for o in opts if isinstance(o, MpCapable)), None)
            if mpc is None and (seg.seq - tcp.irs) & MASK32 != 1:
                # Data sent ahead of the third ACK and the first data overtook both (reordering,
                # or both lost). Only those carry the keys, and whichever comes in order
                # decides. Any answer now would be a plain ACK of the in-order byte, which the
                # peer takes for our fallback (RFC 8684 3.1; Linux's check_fully_established).
                # Linux's listener falls back on such a segment; we leave it to be resent.
                return DEFER
            conn.on_third_ack_capable(self, mpc, seg)
            return None
        ja = next((o for o in opts if isinstance(o, MpJoinAck)), None)
        expect = _hmac(
            conn.remote_key,
            conn.local_key,
            self._remote_nonce.to_bytes(4, "big") + self._local_nonce.to_bytes(4, "big"),
        )[:20]
        if ja is None or ja.hmac160 != expect:
            conn.mib.inc("MPJoinAckHMacFailure")
            self.rst_reason = 1
            return False
        if not conn.take_join_slot(self):
            self.rst_reason = 3  # administratively prohibited: no slot left (MPJoinRejected)
            return False
        conn.mib.inc("MPJoinAckRx")
        if conn.initial is not None and self.local[1] != conn.initial.local[1]:
            conn.mib.inc("MPJoinPortAckRx")
        self.established = True
        tcp.send_ack()  # the 4th ACK: Linux resets a joined subflow that never gets one
        conn.on_join_established(self)
        return None

    def _fast_dss(self, tcp: TcpConnection, seg: TcpSegment, body: bytes, fast: tuple) -> None:
        """``_on_established`` for the common segment of an established subflow: timestamps
        and one DSS with a DATA_ACK and maybe a mapping (no checksum, no DATA_FIN), taken
        straight from its bytes (no option list, no ``Dss``): the same checks and effects."""
        conn = self.conn
        layout, ack64, has_map, dsn64 = fast
        vals = layout.unpack_from(body, 2)
        ack = vals[0]
        if not ack64:
            ack = expand32(ack, conn.snd_una & MASK64)
        conn.on_data_ack(ack, seg.window << tcp.snd_wscale)
        if has_map and seg.payload:
            dsn, ssn, dlen = vals[1], vals[2], vals[3]
            if dlen == 0:  # an infinite mapping: the general path says what it means
                self._on_dss(tcp, seg, Dss(dsn=dsn, dsn64=dsn64, subflow_seq=ssn, data_len=0))
            else:
                if not dsn64:
                    dsn = expand32(dsn, conn.rcv_nxt & MASK64)
                self._add_map(ssn, dlen, dsn, None, seg)
        self._plain_acks = 0
        conn.data_ack_seen = True
        return None

    def _on_established(self, tcp: TcpConnection, seg: TcpSegment, opts: list) -> bool | None:
        conn = self.conn
        saw_dss = False
        for o in opts:
            t = type(o)
            if t is Dss:
                saw_dss = True
                self._on_dss(tcp, seg, o)
            elif t is MpCapable:
                # Client's first data (and a third ACK the server sees again): the mapping
                # of the first data is implied, DSN = IDSN+1, subflow sequence 1.
                if (
                    self.initial
                    and not self.active
                    and o.data_len
                    and mpc_usable(o)
                    and self._csum_presence_ok(o.checksum)
                ):
                    self._add_map(1, o.data_len, (conn.remote_idsn + 1) & MASK64, o.checksum, seg)
            elif t is MpJoinAck:
                if not self.active:
                    tcp.send_ack()  # our 4th ACK was lost: the joiner repeats its third ACK
            elif t is AddAddr:
                conn.on_add_addr(self, o)
            elif t is RemoveAddr:
                conn.on_remove_addr(self, o)
            elif t is MpPrio:
                conn.on_mp_prio(self, o)
            elif t is MpFail:
                conn.on_mp_fail(self, o)
            elif t is FastClose:
                conn.on_fastclose(self, o, rst=False)
        if opts:
            self._plain_acks = 0
        elif self.initial and self._acks_new_data(tcp, seg):
            # The peer acknowledges our data as plain TCP: its receiver fell back on its own
            # (Linux and we do so without a word on a DSS checksum failure before any valid
            # one, RFC 8684 3.7). Without noticing, a pure sender waits for DATA_ACKs forever.
            self._plain_acks += 1
            if self._plain_acks >= PLAIN_ACKS_FALLBACK:
                conn.on_peer_fell_back(self)
        if saw_dss:
            conn.data_ack_seen = True
            if self._mpc_pending:
                self._mpc_pending = False
                conn.on_fully_established(self)
            if self._join_ack_pending:
                self._join_ack_pending = False
                self._join_ack_deadline = None
                self.established = True
                conn.on_join_established(self)
        elif self._join_ack_pending:
            # We joined: the peer's first segment is the 4th ACK (a DATA_ACK; Linux also takes
            # an ADD_ADDR). Anything else resets the subflow (Linux's check_fully_established).
            if any(type(o) is AddAddr for o in opts):
                self._join_ack_pending = False
                self._join_ack_deadline = None
                self.established = True
                conn.on_join_established(self)
            else:
                self.rst_reason = 1
                self.reset_pending = True
        elif self._mpc_pending:
            # Client: the server's first segment carries a DATA_ACK or an ADD_ADDR, or the
            # connection is plain TCP (Linux's check_fully_established, RFC 8684 3.1).
            if any(type(o) is AddAddr and not o.echo for o in opts):
                self._mpc_pending = False
                conn.on_fully_established(self)
            else:
                conn.mib.inc("MPCapableDataFallback")
                conn.enter_fallback("server's first segment without DATA_ACK")
        elif (
            seg.payload
            and self.initial
            and not conn.data_ack_seen
            and conn.can_fallback()
            and not self._mapped((seg.seq - tcp.irs) & MASK32, len(seg.payload))
        ):
            # Data without a mapping before the peer ever sent a DATA_ACK: a middlebox
            # stripped the options, or the peer fell back. Go on as plain TCP (RFC 8684 3.7).
            conn.mib.inc("DssFallback")
            conn.enter_fallback("data without DSS before the first DATA_ACK")
        return None

    @staticmethod
    def _acks_new_data(tcp: TcpConnection, seg: TcpSegment) -> bool:
        """``seg`` moves our send window's left edge (TCP has not processed it yet)."""
        return bool(seg.flags & ACK) and 0 < ((seg.ack - tcp.snd_una) & MASK32) < 1 << 31

    def _unwrap_ssn(self, ssn: int) -> int:
        """A 32-bit relative subflow sequence number, unwrapped near the next byte to pull."""
        rx = self._rx_ssn
        return rx + ((ssn - rx + (1 << 31)) & MASK32) - (1 << 31)

    def _map_index(self, ssn: int) -> int:
        """Index of a live mapping holding the (unwrapped) subflow byte ``ssn``, or -1."""
        starts = self._map_starts
        i = bisect.bisect_right(starts, ssn, self._map_head) - 1
        while i >= self._map_head:
            m = self._maps[i]
            if ssn < m[0] + m[1]:
                return i
            if ssn - m[0] > 0xFFFF:  # mappings are at most 65535 bytes: none further back
                break
            i -= 1
        return -1

    def _mapped(self, ssn: int, length: int) -> bool:
        """Whether the bytes at relative subflow sequence ``ssn`` already have a mapping (or
        were consumed: a retransmission)."""
        ssn = self._unwrap_ssn(ssn)
        rx = self._rx_ssn
        if ssn + length <= rx:
            return True
        return self._map_index(max(ssn, rx)) >= 0

    def _on_dss(self, tcp: TcpConnection, seg: TcpSegment, d: Dss) -> None:
        conn = self.conn
        if d.data_ack is not None:
            ack = d.data_ack if d.data_ack64 else expand32(d.data_ack, conn.snd_una & MASK64)
            conn.on_data_ack(ack, seg.window << tcp.snd_wscale)
        if d.dsn is None:
            return
        dsn = d.dsn if d.dsn64 else expand32(d.dsn, conn.rcv_nxt & MASK64)
        if not seg.payload and not (d.data_fin and d.data_len == 1):
            return  # Linux: a mapping on a segment without data maps nothing (DATA_FIN aside)
        if d.data_len == 0:
            conn.mib.inc("InfiniteMapRx")
            self.mp_fail_deadline = None  # (the answer to our MP_FAIL, if we sent one)
            if conn.can_fallback():
                conn.enter_fallback("infinite mapping")
            else:  # RFC 8684 3.7, Linux: a subflow that cannot fall back is reset
                self.rst_reason = 1
                self.reset_pending = True
            return
        fin_only = d.data_fin and d.subflow_seq == 0 and d.data_len == 1
        if not fin_only and not self._csum_presence_ok(d.checksum):
            return
        if d.data_fin:
            conn.on_data_fin(dsn + d.data_len - 1)
            if fin_only:
                return  # a DATA_FIN on an empty segment maps no data
            length = d.data_len - 1
        else:
            length = d.data_len
        if length > 0:
            self._add_map(d.subflow_seq, length, dsn, d.checksum, seg)

    def _csum_presence_ok(self, checksum: int | None) -> bool:
        """RFC 8684 3.3: once DSS checksums are negotiated, a mapping without one is not
        valid and the receiver MUST reset the subflow; one with a checksum nobody asked for
        is as invalid (Linux's get_mapping_status: map_csum_reqd != csum_reqd). Reset with
        MP_TCPRST 'MPTCP-specific error', its data dropped (the peer sends it again on the
        others). (Linux itself falls back to TCP instead while it still can.)"""
        if (checksum is not None) == self.conn.checksum:
            return True
        if not self.closed:
            self.rst_reason = RST_MPTCP_ERROR
            self.reset_pending = True
        return False

    def _covers(self, seg: TcpSegment, ssn: int, length: int) -> bool:
        """Linux's validate_mapping: a mapping must hold the first byte of the segment that
        carries it. (Bytes of the segment past its end are unmapped, as a box that merges
        segments leaves them: the next mapping may still cover them.)"""
        rel = (seg.seq - self.tcp.irs) & MASK32
        return ((rel - ssn) & MASK32) < length

    def invalid_mapping(self, why: str, reason: int = RST_MPTCP_ERROR) -> None:
        """A mapping Linux's get_mapping_status calls invalid (or data that can have none):
        as its subflow_check_data_avail, plain TCP when the connection still may (the first
        subflow, never another, nothing out of order at the data level: DssFallback),
        otherwise this subflow is reset with MP_TCPRST ``reason`` and its data dropped (the
        peer sends it again on the others)."""
        conn = self.conn
        if conn.fallback or self.reset_pending or self.closed:
            return
        if self.initial and conn.can_fallback() and not conn._ooo:
            conn.mib.inc("DssFallback")
            conn.enter_fallback(why)
            return
        self.rst_reason = reason
        self.reset_pending = True

    def _add_map(
        self,
        ssn: int,
        length: int,
        dsn: int,
        csum: int | None = None,
        seg: TcpSegment | None = None,
    ) -> None:
        """Remember a mapping of the peer's (``seg``: the segment carrying it). Validated as
        Linux's get_mapping_status does: it must hold the first byte of its segment
        (DSSNoMatchTCP), and agree with every live mapping it overlaps (the same start: the
        very same mapping; else the same DSN for each shared byte: DSSNotMatching); an invalid
        one is a protocol error (``invalid_mapping``: fallback or reset)."""
        # relative subflow sequence numbers are 32-bit; unwrap near the next byte to pull
        rel = ssn
        ssn = self._unwrap_ssn(ssn)
        end = ssn + length
        if end <= self._rx_ssn:
            return  # all consumed already (a retransmission's mapping)
        if seg is not None and seg.payload and not self._covers(seg, rel, length):
            self.conn.mib.inc("DSSNoMatchTCP")
            self.invalid_mapping("DSS mapping does not cover its segment")
            return
        starts = self._map_starts
        maps = self._maps
        head = self._map_head
        n = len(starts)
        if n == head or ssn > starts[-1]:
            i = n  # the usual case: a new mapping after the others
        else:
            i = bisect.bisect_left(starts, ssn, head)
            if i < n and starts[i] == ssn:
                m = maps[i]
                if m[1] == length and m[2] == dsn:
                    return  # the same mapping again (every segment of it carries it)
                self.conn.mib.inc("DSSNotMatching")
                self.invalid_mapping("DSS mapping contradicts one in use")
                return
        # overlap with a neighbour: it must agree on the DSN of every shared byte
        for j in (i - 1, i):
            if head <= j < n:
                ms, ml, md = maps[j][:3]
                if ms < end and ssn < ms + ml and md - ms != dsn - ssn:
                    self.conn.mib.inc("DSSNotMatching")
                    self.invalid_mapping("DSS mapping contradicts one in use")
                    return
        if i == n:
            maps.append([ssn, length, dsn, csum])
            starts.append(ssn)
        else:
            maps.insert(i, [ssn, length, dsn, csum])
            starts.insert(i, ssn)

    def _consume_maps(self) -> None:
        """Step the head over the mappings wholly consumed; compact the lists once the consumed
        prefix is half of them (amortized O(1) per mapping)."""
        maps = self._maps
        head = self._map_head
        rx = self._rx_ssn
        n = len(maps)
        while head < n and maps[head][0] + maps[head][1] <= rx:
            head += 1
        if head > 32 and 2 * head > n:
            del maps[:head]
            del self._map_starts[:head]
            head = 0
        self._map_head = head

    def _no_mapping(self) -> None:
        """The next byte to pull has no mapping. RFC 8684 3.3.1 lets it wait a little for a
        mapping on a later segment, but not forever: when the bytes up to the next known
        mapping are all here (the segments that could map them came and went) or the unmapped
        bytes fill the window we advertised (nothing more can come), it never will: Linux's
        MAPPING_NODSS (fallback, or reset with MP_TCPRST 'middlebox interference')."""
        tcp = self.tcp
        rx = self._rx_ssn
        have = tcp.readable
        head = self._map_head
        nxt = self._map_starts[head] if head < len(self._map_starts) else None
        conn = self.conn
        window = max(conn._rcv_wnd_sent, conn.rcv_nxt + conn.rcv_window()) - conn.rcv_nxt
        if (nxt is not None and rx + have >= nxt) or have >= max(window, 1):
            self.invalid_mapping("data without a DSS mapping", RST_MIDDLEBOX)

    def pull(self) -> list[tuple[int, bytes | bytearray | memoryview]]:
        """Take the subflow's in-order bytes that have a mapping, as (dsn, bytes) pieces."""
        tcp = self.tcp
        out: list[tuple[int, bytes | bytearray | memoryview]] = []
        maps = self._maps
        conn = self.conn
        while tcp.readable and not self.reset_pending and not self.closed and not conn.fallback:
            self._consume_maps()
            # the head mapping ends past the next byte; none after it starts earlier
            i = self._map_head
            if i == len(maps) or maps[i][0] > self._rx_ssn:
                self._no_mapping()  # (it may come on a later segment, up to a point)
                break
            ms, ml, md, mc = maps[i]
            if mc is not None and self.conn.checksum and self._rx_ssn == ms:
                # DSS checksums: a mapping leaves whole, once all of it is here and checked
                if tcp.readable < ml:
                    break
                data = tcp.read(ml)
                self._rx_ssn += len(data)
                if crypto.dss_checksum_ok(md & MASK64, ms & MASK32, ml, data, mc):
                    self.csum_ok_seen = True
                elif not self.conn.on_checksum_failure(self, md, ml):
                    break  # this subflow is reset, its data dropped (sent again elsewhere)
                out.append((md, data))
                self.bytes_received += len(data)
                continue
            want = ms + ml - self._rx_ssn
            pieces = tcp.read_chunks(want)
            if not pieces:
                break
            # one piece (a GRO packet's payload, the usual case at speed) as it is; many small
            # ones joined, one copy rather than a data-level step for each
            data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            out.append((md + (self._rx_ssn - ms), data))
            self._rx_ssn += len(data)
            self.bytes_received += len(data)
        if self.reset_pending and not self.closed:
            # a protocol error found here (not inside TCP's own processing): reset at once,
            # so the RST leaves with this round's segments
            self.reset_pending = False
            self.tcp.abort(conn._now)
        return out

    def pull_fallback(self) -> bytes | bytearray:
        data = self.tcp.read()
        self._rx_ssn += len(data)
        self.bytes_received += len(data)
        return data

    # ----------------------------------------------------------------- timers
    def timer(self) -> float | None:
        t = self._join_ack_deadline if self._join_ack_pending else None
        f = self.mp_fail_deadline
        if f is not None and (t is None or f < t):
            t = f
        return t

    def arm_mp_fail(self, now: float) -> None:
        """Our MP_FAIL left (a checksum failure on the only subflow): the peer must answer with
        its MP_FAIL or an infinite mapping within MP_FAIL_TIMEOUT (Linux: fail_tout)."""
        if not self.closed:
            self.mp_fail_deadline = now + MP_FAIL_TIMEOUT

    def on_timer(self, now: float) -> None:
        f = self.mp_fail_deadline
        if f is not None and now >= f:
            # no answer: the peer cannot fall back with us, and data can no longer be trusted
            # to be the peer's: reset, as Linux's mptcp_mp_fail_no_response (MP_TCPRST with its
            # default reason, unspecified; MPRstTx)
            self.mp_fail_deadline = None
            if not self.closed:
                self.rst_reason = RST_UNSPECIFIED
                self.tcp.abort(now)
        if self._join_ack_pending and self._join_ack_deadline is not None:
            if now >= self._join_ack_deadline:
                self.tcp.send_ack()  # repeat the third ACK until the 4th ACK comes
                self._join_ack_deadline = now + max(self.tcp.rto, 0.2)

    def arm_join_ack(self, now: float) -> None:
        if self._join_ack_pending and self._join_ack_deadline is None:
            self._join_ack_deadline = now + max(self.tcp.rto, 0.2)

    def options_dropped(self, tcp: TcpConnection, seg: TcpSegment, dropped: list) -> None:
        """TCP had no room for some of our options: queued ones wait for the next segment, a
        DATA_FIN is sent again."""
        for raw in dropped:
            try:
                o = decode(raw.data)
            except MptcpOptionError:
                continue
            if isinstance(o, (AddAddr, RemoveAddr, MpPrio, MpFail, FastClose)):
                self._queued_opts.appendleft(o)
            elif isinstance(o, Dss) and o.data_fin:
                self.conn.data_fin_lost()

    def receive_window(self, tcp: TcpConnection) -> int:
        """Every subflow advertises the connection-level window (RFC 8684 3.3.4)."""
        conn = self.conn
        if conn.fallback:
            # plain TCP: the connection's buffer is the socket buffer; TCP's own rules (right
            # edge never back, SWS avoidance) apply to it
            return conn.rcv_window()
        w = self._adv_win = conn.adv_window(tcp.rcv_wscale, tcp.config.mss)
        return w

    def received_range(self, tcp: TcpConnection, seq_start: int, data_len: int, seg: Any) -> None:
        pass

    def sent_range(self, tcp: TcpConnection, seq_start: int, length: int, meta: object) -> None:
        pass
