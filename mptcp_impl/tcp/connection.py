"""A sans-I/O TCP connection: the RFC 9293 state machine with modern loss recovery.

Nothing here touches a socket or a clock. The I/O edge feeds segments (``receive_segment``) and
time (``handle_timer`` at ``get_timer()``), and drains segments (``segments_to_send``) and events
(``next_event``). That keeps every behaviour reproducible in tests with a fake clock and lets the
MPTCP layer drive several subflows from one event loop.

Internally all sequence numbers are *unwrapped* Python ints (ISS + offset, never reduced
modulo 2**32), so ordinary ``<`` comparisons are correct; numbers are reduced only when written
to a segment, and incoming ones are unwrapped against a nearby reference (``_unwrap``).

Control segments (SYN, ACK, RST, probes) are queued as soon as they are decided; data segments
are cut lazily in ``segments_to_send`` so that one call after a burst of received ACKs produces
one well-sized batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import weakref
from bisect import bisect_left, bisect_right
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from .cc import CongestionControl, initial_window, make_cc
from .errors import MalformedSegment
from .options import (
    MAX_OPTIONS_LEN,
    MSS,
    Sack,
    SackPermitted,
    Timestamps,
    WindowScale,
    encoded_length,
)
from .rangeset import RangeSet
from .reassembly import Reassembly, joined, read_pieces
from .recovery import LossRecovery
from .segment import ACK, FIN, PSH, RST, SYN, TcpSegment, decode_segment
from .sendbuf import SendBuffer
from .state import (  # noqa: F401  (part of this module's API)
    _RECV_DATA_STATES,
    _SEND_DATA_STATES,
    _SYNCHRONIZED,
    DEFAULT_PEER_MSS,
    DUPTHRESH,
    HALF,
    MASK,
    Closed,
    Connected,
    DataReceived,
    Event,
    PeerClosed,
    Reset,
    S,
    SendBufferAvailable,
    TcpState,
    _unwrap,
)

# --------------------------------------------------------------------------- config, stats, events


IPV6_MSS_DELTA = 20  # an IPv6 header is 40 bytes, an IPv4 one 20


@dataclass(slots=True)
class TcpConfig:
    mss: int = 1460  # over IPv4; a connection to an IPv6 address uses 20 less (RFC 9293 3.7.1)
    rcv_buf: int = 4 * 1024 * 1024
    snd_buf: int = 4 * 1024 * 1024
    window_scale: bool = True
    sack: bool = True
    timestamps: bool = True
    cc: Any = "cubic"  # "reno" | "cubic", or a factory f(mss) -> CongestionControl
    min_rto: float = 0.2
    initial_rto: float = 1.0
    max_rto: float = 60.0
    delayed_ack: float = 0.04
    time_wait: float = 1.0  # 2*MSL; short by default so tests and experiments do not linger
    max_syn_retries: int = 6
    # If set (> mss), the edge can hand large segments to kernel GSO; the core never builds a
    # segment payload larger than max(mss, this).
    max_segment_payload: int | None = None
    # True: a data segment's payload is a memoryview into the send buffer instead of a bytes
    # copy, for an edge that sends each round's segments before the next call that can grow or
    # cut that buffer (one copy less per byte sent; a view still alive then costs one copy of
    # the buffer, see SendBuffer)
    payload_views: bool = False
    # Additions beyond the shared API:
    max_retries: int = 15  # data RTOs in a row before giving up (Reset("timeout"))
    isn: int | None = None  # fixed ISS for tests (e.g. near 2**32); None = RFC 6528
    challenge_ack_limit: int = 1000  # per second, RFC 5961 section 7
    dupthresh: int = DUPTHRESH
    tlp: bool = True  # tail loss probe (RFC 8985 section 7), with SACK only
    # Random source for the ISN secret and the timestamp offset (seed it for reproducible
    # runs); None = os.urandom / the random module.
    rng: random.Random | None = None
    oow_ack_interval: float = 0.5  # min gap between ACKs for out-of-window non-data segments


@dataclass(slots=True)
class TcpStats:
    segments_in: int = 0
    segments_out: int = 0
    bytes_in: int = 0  # payload bytes accepted in window
    bytes_out: int = 0  # payload bytes transmitted, retransmissions included
    retransmits: int = 0  # segments carrying retransmitted sequence space
    fast_retransmits: int = 0  # entries into fast recovery
    sack_recoveries: int = 0  # of which SACK-based (RFC 6675)
    rto_count: int = 0
    dupacks: int = 0
    malformed_dropped: int = 0
    challenge_acks: int = 0
    paws_dropped: int = 0
    handshake_deferred: int = 0  # segments the layer above left for later (DEFER), as if lost
    ooo_segments: int = 0
    lost_retransmits: int = 0  # retransmissions detected lost again during SACK recovery
    persist_probes: int = 0
    tlp_probes: int = 0
    tlp_repairs: int = 0  # losses repaired by a probe retransmission (cwnd reduced, RFC 8985 7.4)
    window_updates: int = 0
    srtt: float | None = None
    rttvar: float | None = None
    rto: float = 1.0
    cwnd: int = 0
    ssthresh: int = 0


#: ``TcpHooks.incoming_options``' third answer during the handshake: not yet (see there).
DEFER = "defer"


class TcpHooks(Protocol):
    """What the MPTCP layer plugs in. Sequence numbers given to hooks are wire values (mod 2**32);
    subtract ``conn.iss``/``conn.irs`` for the relative numbers DSS mappings use.

    ``incoming_options`` sees only segments TCP accepts (after the RFC 5961 checks and the
    SYN-RECEIVED ACK check), RSTs included; returning False during the handshake refuses it:
    the connection answers with an RST carrying the hook's options and never reports
    ``Connected``. Returning ``DEFER`` in SYN-RECEIVED treats the segment as lost (nothing taken,
    nothing answered, the handshake goes on): the layer above cannot decide on it yet, and any
    answer would decide for it. ``receive_window`` (optional) gives the bytes the layer above can
    still take, so that every subflow advertises the connection-level window.
    """

    def outgoing_options(self, conn: TcpConnection, seg: TcpSegment, space: int) -> list: ...

    def incoming_options(self, conn: TcpConnection, seg: TcpSegment) -> bool | str | None: ...

    # Optional: ``options_dropped(conn, seg, options)`` hears of hook options that did not fit
    # beside TCP's own on this segment; ``receive_window(conn) -> int`` (see above).

    def sent_range(
        self, conn: TcpConnection, seq_start: int, length: int, meta: object
    ) -> None: ...

    def received_range(
        self, conn: TcpConnection, seq_start: int, data_len: int, seg: TcpSegment
    ) -> None: ...


# --------------------------------------------------------------------------- helpers

_SECRET = os.urandom(16)
_RNG_SECRETS: weakref.WeakKeyDictionary[random.Random, bytes] = weakref.WeakKeyDictionary()


def _secret_for(rng: random.Random | None) -> bytes:
    """The RFC 6528 key: one per process, or one per injected random source (drawn from it
    once, so ISNs of one 4-tuple still advance with the clock across connections)."""
    if rng is None:
        return _SECRET
    key = _RNG_SECRETS.get(rng)
    if key is None:
        key = _RNG_SECRETS[rng] = rng.randbytes(16)
    return key


def rfc6528_isn(
    local: tuple[str, int], remote: tuple[str, int], now: float, secret: bytes | None = None
) -> int:
    """ISN = M + F(4-tuple, secret): M ticks every 4 us, F is a keyed hash (RFC 6528)."""
    h = hashlib.blake2s(
        f"{local[0]}|{local[1]}|{remote[0]}|{remote[1]}".encode(),
        key=secret or _SECRET,
        digest_size=4,
    ).digest()
    return (int(now * 250_000) + int.from_bytes(h, "big")) & MASK


def _new_cc(cc: Any, mss: int) -> CongestionControl:
    """``TcpConfig.cc`` is a controller name or a factory ``f(mss)``: a coupled controller (LIA,
    OLIA) is built by the MPTCP layer, which knows the other subflows."""
    return cc(mss) if callable(cc) else make_cc(cc, mss)


def _wscale_for(buf: int) -> int:
    s = 0
    while (buf >> s) > 0xFFFF and s < 14:
        s += 1
    return s


# --------------------------------------------------------------------------- connection


class TcpConnection(LossRecovery, Reassembly):
    def __init__(
        self,
        config: TcpConfig | None = None,
        local: tuple[str, int] = ("0.0.0.0", 0),
        remote: tuple[str, int] = ("0.0.0.0", 0),
        hooks: TcpHooks | None = None,
    ) -> None:
        cfg = config or TcpConfig()
        if ":" in str(remote[0]):
            # ``mss`` is the IPv4 one (MTU - 40); an IPv6 header is 20 bytes longer
            cfg = dataclasses.replace(cfg, mss=cfg.mss - IPV6_MSS_DELTA)
        self.config = cfg
        self.local = local
        self.remote = remote
        self.hooks = hooks
        self._rwin_hook = getattr(hooks, "receive_window", None)
        self.state = S.CLOSED
        self._st = TcpStats(rto=cfg.initial_rto)
        self._events: deque[Event] = deque()
        self._out: list[TcpSegment] = []

        # send side
        self.iss = 0
        self.snd_una = self.snd_nxt = self.snd_max = 0
        self.snd_wnd = 0
        self.snd_wl1 = self.snd_wl2 = 0
        self.max_snd_wnd = 0
        self._sbuf = SendBuffer()
        self._sbuf_seq = 0  # sequence number of _sbuf[0]
        self._snd_blocked = False
        self._fin_queued = False
        self._fin_seq = -1
        self._close_pending = False
        # [start, end, meta] (unwrapped seq), sorted, kept until acknowledged: a retransmission
        # carries the same metadata (MPTCP: the identical mapping) and no segment spans two.
        self._metas: list[list[Any]] = []
        self._meta_starts: list[int] = []
        self._meta_head = 0  # metas before this index are acknowledged
        self._meta_high = 0
        self.peer_mss = DEFAULT_PEER_MSS
        self._mss_send = DEFAULT_PEER_MSS
        self._hook_reserve = 0
        # Bytes the edge lets new transmissions put into the local queue now (TCP small
        # queues, Linux's tcp_small_queue_check): the room left below its limit of bytes in the
        # host's qdisc. None: no limit (sans-I/O use). Without it a sender fills a deep
        # shaping queue (1000 packets), its RTT grows tenfold and the queue's tail drops cost
        # long recoveries; the ACKs of what is queued bring the next chance to send.
        self.tx_room: int | None = None

        # receive side
        self.irs = 0
        self.rcv_nxt = 0
        # in-order data not yet read, as the pieces it arrived in (a payload, a view of one)
        self._rq: list[bytes | bytearray | memoryview] = []
        self._rlen = 0
        self._rcv_adv = 0  # right edge of the window we last advertised
        self._ooo = RangeSet()  # out-of-order data held above rcv_nxt
        self._ooo_data: dict[int, bytes | memoryview] = {}  # chunks tiling _ooo, by start
        self._sack_hist: list[int] = []  # recent out-of-order arrivals, newest first
        self._fin_rcv_seq: int | None = None
        self._rcv_mss = 536  # largest payload seen: the "full-sized segment" for delayed ACK
        self._unacked_bytes = 0
        self._ack_now = False

        # negotiated options
        self.snd_wscale = 0
        self.rcv_wscale = _wscale_for(cfg.rcv_buf) if cfg.window_scale else 0
        self._offer_ws = cfg.window_scale
        self.sack_ok = False
        self.ts_ok = False
        self.ts_recent = 0
        self._last_ack_sent = 0
        self._ts_offset = 0

        # RTT / RTO
        self.srtt: float | None = None
        self.rttvar: float | None = None
        # the smallest RTT sample: what the path takes at best, untouched by the samples an
        # outage inflates (a duplicate's ACK echoes an old timestamp, RFC 7323 4.3)
        self.min_rtt: float | None = None
        self.rto = cfg.initial_rto
        self._rtt_seq: int | None = None  # Karn timing when timestamps are off
        self._rtt_time = 0.0
        self._retries = 0

        # loss recovery
        self.cc: CongestionControl = _new_cc(cfg.cc, DEFAULT_PEER_MSS)
        self._dupacks = 0
        self.in_recovery = False
        self._recover = 0
        self._rto_recover = 0
        self._force_rxt: int | None = None
        self._sacked = RangeSet()  # SACKed above snd_una
        self._high_rxt = 0
        self._rxt_log: deque[tuple[int, int, int]] = deque()  # (start, end, snd_max then)
        self._rec_rxt_high = 0  # HighRxt as the last SACK recovery ended (none since an RTO)
        self._prr_delivered = 0  # RFC 6937 state, SACK recovery only
        self._prr_out = 0
        self._recover_fs = 1
        # congestion window validation (RFC 7661, as Linux's tcp_cwnd_validate): cwnd grows
        # only while the sender uses it; the state is measured per window of data
        self._cwnd_limited = False
        self._max_flight = 0
        self._cwl_seq = 0
        self._last_xmit: float | None = None  # when data last went out (restart after idle)

        # timers (absolute deadlines or None)
        self._rto_deadline: float | None = None
        self._delack_deadline: float | None = None
        self._persist_deadline: float | None = None
        self._persist_backoff = 0
        self._tw_deadline: float | None = None
        self._tlp_deadline: float | None = None
        self._tlp_sent = False
        self._tlp_high_rxt: int | None = None  # RFC 8985 TLPHighRxt while a probe rxt is out

        self._chack_window = 0
        self._chack_count = 0
        self._oow_ack_time: float | None = None

    # ------------------------------------------------------------------ opening

    def _init_iss(self, now: float) -> None:
        cfg = self.config
        if cfg.isn is not None:
            self.iss = cfg.isn
        else:
            self.iss = rfc6528_isn(self.local, self.remote, now, _secret_for(cfg.rng))
        self.snd_una = self.snd_nxt = self.snd_max = self.iss
        self._sbuf_seq = self._meta_high = self.iss + 1
        self._recover = self._rto_recover = self._high_rxt = self.iss
        self._ts_offset = (cfg.rng or random).getrandbits(32)

    def connect(self, now: float) -> None:
        """Active open: send a SYN."""
        if self.state is not S.CLOSED:
            raise ConnectionError(f"connect() in state {self.state.value}")
        self._init_iss(now)
        self.state = S.SYN_SENT
        self._send_syn(now, ack=False)

    @classmethod
    def accept_syn(
        cls,
        config: TcpConfig | None,
        syn_segment: TcpSegment,
        local: tuple[str, int],
        remote: tuple[str, int],
        now: float,
        hooks: TcpHooks | None = None,
    ) -> TcpConnection:
        """Passive open from a SYN the edge's listener received: answer with a SYN-ACK."""
        if not syn_segment.flags & SYN or syn_segment.flags & (ACK | RST):
            raise ValueError("accept_syn needs a plain SYN segment")
        conn = cls(config, local, remote, hooks)
        conn._init_iss(now)
        conn.stats.segments_in += 1
        conn._take_syn(syn_segment)
        if hooks is not None and hooks.incoming_options(conn, syn_segment) is False:
            conn.state = S.SYN_RECEIVED  # so that the RST carries an ACK of the SYN
            conn._refuse(0, now)
            return conn
        conn.state = S.SYN_RECEIVED
        conn._send_syn(now, ack=True)
        return conn

    def _refuse(self, seq: int, now: float) -> None:
        """The layer above refused the handshake: RST (with its options), never Connected."""
        self._queue_ctl(RST | ACK if self.state is S.SYN_RECEIVED else RST, seq, now)
        self._enter_closed("refused")

    def _take_syn(self, seg: TcpSegment) -> None:
        """Record the peer's ISN and negotiate options from its SYN or SYN-ACK."""
        cfg = self.config
        self.irs = seg.seq
        self.rcv_nxt = seg.seq + 1
        peer_ws = None
        peer_sack = False
        peer_ts = None
        mss = DEFAULT_PEER_MSS
        for o in seg.options:
            t = type(o)
            if t is MSS:
                mss = o.value
            elif t is WindowScale:
                peer_ws = min(o.shift, 14)
            elif t is SackPermitted:
                peer_sack = True
            elif t is Timestamps:
                peer_ts = o
        # Each option is on only if both SYNs carried it (RFC 7323, RFC 2018); a SYN-ACK we send
        # offers only what the peer's SYN offered.
        if self._offer_ws and peer_ws is not None:
            self.snd_wscale = peer_ws
        else:
            self.snd_wscale = 0
            self.rcv_wscale = 0
            self._offer_ws = False
        self.sack_ok = cfg.sack and peer_sack
        self.ts_ok = cfg.timestamps and peer_ts is not None
        if self.ts_ok:
            self.ts_recent = peer_ts.tsval
        self.peer_mss = mss
        self._mss_send = max(64, min(mss, cfg.mss))
        self.cc = _new_cc(cfg.cc, self._mss_send - (12 if self.ts_ok else 0))
        # SYN windows are never scaled.
        self.snd_wnd = seg.window
        self.max_snd_wnd = seg.window
        self.snd_wl1 = self.rcv_nxt - 1
        self.snd_wl2 = self.iss

    def _send_syn(self, now: float, ack: bool) -> None:
        cfg = self.config
        opts: list = [MSS(cfg.mss)]
        if self.state is S.SYN_SENT or self.sack_ok:
            if cfg.sack:
                opts.append(SackPermitted())
        if (self.state is S.SYN_SENT and cfg.timestamps) or self.ts_ok:
            opts.append(Timestamps(self._ts_now(now), self.ts_recent if ack else 0))
        if self._offer_ws:
            opts.append(WindowScale(self.rcv_wscale))
        win = min(cfg.rcv_buf, 0xFFFF)
        if self._rwin_hook is not None:
            win = max(0, min(win, self._rwin_hook(self)))
        seg = TcpSegment(
            self.local[1],
            self.remote[1],
            self.iss & MASK,
            (self.rcv_nxt & MASK) if ack else 0,
            SYN | (ACK if ack else 0),
            win,
            opts,
        )
        if ack:
            self._rcv_adv = self.rcv_nxt + win
            self._last_ack_sent = self.rcv_nxt
        self._add_hook_options(seg, encoded_length(opts))
        self._out.append(seg)
        self.snd_nxt = self.snd_max = self.iss + 1
        if self._rto_deadline is None:
            self._rto_deadline = now + self.rto
        self._rtt_seq = self.iss if self._retries == 0 else None
        self._rtt_time = now

    # ------------------------------------------------------------------ public API

    @property
    def stats(self) -> TcpStats:
        """Counters plus the current congestion state (cwnd/ssthresh are copied on read)."""
        st = self._st
        st.cwnd = self.cc.cwnd
        st.ssthresh = self.cc.ssthresh
        return st

    @property
    def bytes_in_flight(self) -> int:
        return self.snd_max - self.snd_una

    @property
    def pacing_rate(self) -> float:
        """Bytes per second, as Linux sets sk_pacing_rate: cwnd/srtt, times 2 in slow start
        and 1.2 after (no pacing is done; TCP small queues at the edge and the MPTCP
        schedulers read it)."""
        cc = self.cc
        return (2.0 if cc.cwnd < cc.ssthresh else 1.2) * cc.cwnd / (self.srtt or 0.1)

    @property
    def send_buffer_free(self) -> int:
        return max(0, self.config.snd_buf - len(self._sbuf))

    @property
    def readable(self) -> int:
        return self._rlen

    @property
    def cwnd(self) -> int:
        return self.cc.cwnd

    @property
    def mss(self) -> int:
        """Largest payload of a single wire segment after our fixed options."""
        return self._mss_send - (12 if self.ts_ok else 0) - self._hook_reserve

    @property
    def max_burst(self) -> int:
        """Largest payload of one segment handed to the edge: a whole number of MSS up to
        ``max_segment_payload`` (a GSO super-packet), else one MSS."""
        mss = self.mss
        big = self.config.max_segment_payload
        return mss if not big or big <= mss else (big // mss) * mss

    def send(self, data: bytes, meta: object | None = None) -> int:
        """Queue data; returns how much fitted in the send buffer (the rest is the caller's)."""
        if (
            self._fin_queued
            or self._close_pending
            or self.state not in (S.ESTABLISHED, S.CLOSE_WAIT, S.SYN_SENT, S.SYN_RECEIVED)
        ):
            raise ConnectionError(f"cannot send in state {self.state.value} after close")
        n = min(len(data), self.config.snd_buf - len(self._sbuf))
        if n < len(data):
            self._snd_blocked = True
        if n <= 0:
            return 0
        start = self._sbuf_seq + len(self._sbuf)
        self._sbuf += data if n == len(data) else memoryview(data)[:n]
        if meta is not None:
            self._metas.append([start, start + n, meta])
            self._meta_starts.append(start)
        return n

    def last_unsent_meta(self) -> tuple[int, object] | None:
        """(length, meta) of the last metadata range when it ends the queued data and none of
        its bytes was ever sent, so ``extend_last_meta`` may grow it; else None."""
        metas = self._metas
        if len(metas) <= self._meta_head or self._fin_queued:
            return None
        m = metas[-1]
        if m[1] != self._data_end() or m[0] < self.snd_max:
            return None
        return m[1] - m[0], m[2]

    def extend_last_meta(self, data: bytes | memoryview) -> int:
        """Queue ``data`` as the continuation of the last metadata range (the caller checked
        ``last_unsent_meta``): Linux grows an MPTCP mapping not yet sent in place, so bytes
        scheduled in small steps still leave in full segments and GSO batches, each range
        (mapping) being a boundary no segment crosses. Returns how much fitted."""
        n = self.send(data)
        if n:
            self._metas[-1][1] += n
        return n

    def meta_at(self, wire_seq: int) -> tuple[int, int, object] | None:
        """The metadata range (wire start, length, meta) holding sequence number ``wire_seq``:
        the MPTCP layer puts that range's mapping on every segment that carries its bytes."""
        m = self._meta_index(_unwrap(wire_seq, self.snd_una))
        if m is None:
            return None
        return m[0] & MASK, m[1] - m[0], m[2]

    def _meta_index(self, seq: int) -> list[Any] | None:
        i = bisect_right(self._meta_starts, seq, self._meta_head) - 1
        if i >= self._meta_head:
            m = self._metas[i]
            if m[1] > seq:
                return m
        return None

    def _meta_stop(self, seq: int, end: int) -> int:
        """``end`` cut so that [seq, end) lies within one metadata range (or between ranges)."""
        starts = self._meta_starts
        i = bisect_right(starts, seq, self._meta_head)
        if i < len(starts) and starts[i] < end:
            end = starts[i]
        if i > self._meta_head:
            m = self._metas[i - 1]
            if seq < m[1] < end:
                end = m[1]
        return end

    def _drop_metas(self, ack: int) -> None:
        metas = self._metas
        h = self._meta_head
        n = len(metas)
        while h < n and metas[h][1] <= ack:
            h += 1
        if h > 64 and 2 * h > n:
            del metas[:h]
            del self._meta_starts[:h]
            h = 0
        self._meta_head = h

    @property
    def unsent(self) -> int:
        """Bytes queued but never sent: what a scheduler has not yet seen go out."""
        return max(0, self._data_end() - self.snd_max)

    def read(self, max_bytes: int = -1) -> bytes | bytearray:
        """Take in-order data, at most ``max_bytes`` (all when negative); a read that opens the
        window enough schedules a window update. One piece is returned as it is, several are
        joined (a copy)."""
        return joined(self.read_chunks(max_bytes))

    def read_chunks(self, max_bytes: int = -1) -> list[bytes | bytearray | memoryview]:
        """``read`` without the join: the pieces as they arrived (a piece that ``max_bytes``
        cuts leaves as a view), for a consumer that takes pieces (MPTCP's subflows, the
        application's stream reader)."""
        q, self._rq, n = read_pieces(self._rq, self._rlen, max_bytes)
        self._rlen -= n
        st = self.state
        if n and (st is S.ESTABLISHED or st in _RECV_DATA_STATES) and not self._ack_now:
            # Like Linux's tcp_cleanup_rbuf: a dedicated update only when the window the peer
            # sees has fallen to half the buffer or less and this read at least doubles it;
            # otherwise the next ACK carries the new window anyway.
            cur = self._rcv_adv - self.rcv_nxt
            new = self.config.rcv_buf - self._rlen
            if 2 * cur <= self.config.rcv_buf and new >= 2 * cur and new - cur >= self._rcv_mss:
                self._ack_now = True
                self._st.window_updates += 1
        return q

    def close(self, now: float) -> None:
        """Half-close our direction: FIN goes out after everything queued."""
        st = self.state
        if st is S.SYN_SENT or st is S.CLOSED or st is S.LISTEN:
            self._enter_closed(None)
            return
        if st is S.SYN_RECEIVED:
            self._close_pending = True
            return
        if self._fin_queued:
            return
        if st is S.ESTABLISHED:
            self.state = S.FIN_WAIT_1
        elif st is S.CLOSE_WAIT:
            self.state = S.LAST_ACK
        else:
            return
        self._fin_queued = True
        self._fin_seq = self._sbuf_seq + len(self._sbuf)

    def abort(self, now: float) -> None:
        """Send RST and forget the connection."""
        if self.state in _SYNCHRONIZED or self.state is S.SYN_RECEIVED:
            # snd_max, not snd_nxt: after go-back-N snd_nxt is below what the peer may
            # expect, and an RST there only draws a challenge ACK (RFC 5961 3.2)
            self._queue_ctl(RST | ACK, self.snd_max, now)
        self._enter_closed(None)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def only_data_events(self) -> bool:
        """Whether every event waiting says only that data came or send space opened (a layer
        above that reads and writes anyway may drop them; anything else must be handled)."""
        return all(type(e) is DataReceived or type(e) is SendBufferAvailable for e in self._events)

    def get_timer(self) -> float | None:
        t = None
        for d in (
            self._rto_deadline,
            self._delack_deadline,
            self._persist_deadline,
            self._tw_deadline,
            self._tlp_deadline,
        ):
            if d is not None and (t is None or d < t):
                t = d
        return t

    def send_ack(self) -> None:
        """Have the next ``segments_to_send`` emit an ACK even with nothing new to acknowledge:
        the MPTCP layer uses it to carry options (DATA_ACK, ADD_ADDR) when no data is due."""
        if self.state in _SYNCHRONIZED or self.state is S.SYN_RECEIVED:
            self._ack_now = True  # in SYN-RECEIVED it goes out once the handshake completes

    def send_probe(self, now: float) -> None:
        """Queue an ACK with an old sequence number (SND.UNA - 1), which the peer answers with
        an ACK carrying its current window (RFC 9293 3.8.6.1; the form of a keep-alive or of
        our persist probe): for a layer above that needs that answer while TCP itself has
        nothing to send (MPTCP's data-level window probe)."""
        if self.state in _SYNCHRONIZED:
            self._queue_ctl(ACK, self.snd_una - 1, now)

    def note_malformed(self) -> None:
        """The edge failed to decode a segment for this connection: count it."""
        self._st.malformed_dropped += 1

    def receive_bytes(
        self,
        data: bytes,
        src_ip: str | bytes,
        dst_ip: str | bytes,
        now: float,
        verify_checksum: bool = True,
    ) -> None:
        """Decode and receive; undecodable segments are counted and dropped."""
        try:
            seg = decode_segment(data, src_ip, dst_ip, verify_checksum)
        except MalformedSegment:
            self._st.malformed_dropped += 1
            return
        self.receive_segment(seg, now)

    # ------------------------------------------------------------------ timers

    def handle_timer(self, now: float) -> None:
        if self._tw_deadline is not None and now >= self._tw_deadline:
            self._tw_deadline = None
            self._enter_closed(None)
            return
        if self._delack_deadline is not None and now >= self._delack_deadline:
            self._delack_deadline = None
            self._ack_now = True
        tlp = self._tlp_deadline
        if (
            tlp is not None
            and now >= tlp
            and (self._rto_deadline is None or tlp <= self._rto_deadline)
        ):
            self._tlp_deadline = None
            self._on_tlp(now)  # re-arms the RTO when it sends
        if self._rto_deadline is not None and now >= self._rto_deadline:
            self._rto_deadline = None
            self._tlp_deadline = None
            self._on_rto(now)
        if self._persist_deadline is not None and now >= self._persist_deadline:
            self._persist_deadline = None
            self._on_persist(now)

    def _on_persist(self, now: float) -> None:
        """Zero-window probe: an old sequence number elicits an ACK carrying the current window."""
        if self.state not in _SEND_DATA_STATES:
            return
        self._st.persist_probes += 1
        nxt = self.snd_nxt
        n = min(self.snd_una + self.snd_wnd - nxt, self._data_end() - nxt, self.mss)
        if n > 0:  # a small window that SWS avoidance would wait on forever: use it
            self._xmit(nxt, nxt + n, now)
        else:
            self._queue_ctl(ACK, self.snd_una - 1, now)
        self._persist_backoff += 1
        self._persist_deadline = now + min(
            self.rto * (1 << self._persist_backoff), self.config.max_rto
        )

    # ------------------------------------------------------------------ output

    def _ts_now(self, now: float) -> int:
        return (int(now * 1000) + self._ts_offset) & MASK

    def _window_field(self) -> int:
        """Advertised window: the right edge never shrinks, and it only moves right by at least
        min(rcv_buf/2, MSS) at a time (receiver SWS avoidance, RFC 9293 3.8.6.2.2)."""
        cfg = self.config
        rcv_nxt = self.rcv_nxt
        avail = cfg.rcv_buf - self._rlen
        if self._rwin_hook is not None:
            avail = min(avail, self._rwin_hook(self))
        edge = rcv_nxt + (avail if avail > 0 else 0)
        adv = self._rcv_adv
        if edge - adv < min(cfg.rcv_buf >> 1, self._rcv_mss):
            edge = adv if adv > rcv_nxt else rcv_nxt
        field = (edge - rcv_nxt) >> self.rcv_wscale
        if field > 0xFFFF:
            field = 0xFFFF
        edge = rcv_nxt + (field << self.rcv_wscale)
        if edge > adv:
            self._rcv_adv = edge
        return field

    def _base_options(self, now: float, data: bool = False) -> list:
        if self.ts_ok:
            opts: list = [Timestamps((int(now * 1000) + self._ts_offset) & MASK, self.ts_recent)]
        else:
            opts = []
        if self._ooo and self.sack_ok:
            # Leave the hooks the room their data segments need (an MPTCP DSS). A pure ACK keeps
            # at least one block (the most recent one is what the sender needs most); a data
            # segment with hooks gives SACK up rather than the mapping its bytes need.
            room = MAX_OPTIONS_LEN - (12 if self.ts_ok else 0) - self._hook_reserve - 4
            n = min(3 if self.ts_ok else 4, room // 8)
            if n > 0 or not data:
                opts.append(Sack(self._sack_blocks(n if n > 0 else 1)))
        return opts

    def reserve_option_space(self, nbytes: int) -> None:
        """Room the hooks need on data segments (known before the first one is cut)."""
        self._hook_reserve = max(self._hook_reserve, nbytes)

    def _add_hook_options(self, seg: TcpSegment, olen: int) -> int:
        """Ask the hooks for extra options; drop what does not fit in 40 bytes. Returns the new
        options length."""
        hooks = self.hooks
        if hooks is None:
            return olen
        extra = hooks.outgoing_options(self, seg, MAX_OPTIONS_LEN - olen)
        if not extra:
            return olen
        opts = seg.options
        dropped = []
        for o in extra:
            opts.append(o)
            n = encoded_length(opts)
            if n > MAX_OPTIONS_LEN:
                opts.pop()
                dropped.append(o)
            else:
                olen = n
        if dropped:
            note = getattr(hooks, "options_dropped", None)
            if note is not None:
                note(self, seg, dropped)  # e.g. a DATA_FIN that must go on a later segment
        return olen

    def take_unsent(self) -> int:
        """Remove the queued bytes that were never sent (and their metadata) and return how
        many: a scheduler takes data back from a subflow that stopped making progress, to send
        it elsewhere instead of late on this one.

        A metadata range any byte of which was sent stays whole, its unsent tail with it: the
        segments already sent declared the range's full length (an MPTCP mapping), and
        retransmissions must declare the same, or the receiver sees two mappings for the same
        bytes (Linux freezes a mapping once sent). So with metadata only whole ranges that
        start at or after ``snd_max`` go."""
        end = self._data_end()
        if self._fin_queued or self.snd_max >= end:
            return 0
        cut = max(self.snd_max, self._sbuf_seq)
        metas, starts = self._metas, self._meta_starts
        h = self._meta_head
        if len(metas) > h:
            i = bisect_left(starts, cut, h)
            if i > h and metas[i - 1][1] > cut:
                cut = metas[i - 1][1]  # partly sent: frozen, kept whole
        if cut >= end:
            return 0
        del self._sbuf[cut - self._sbuf_seq :]
        while len(metas) > h and metas[-1][0] >= cut:
            metas.pop()
            starts.pop()
        if self._meta_high > cut:
            self._meta_high = cut
        return end - cut

    def _queue_ctl(self, flags: int, seq: int, now: float) -> None:
        """Queue a control segment (pure ACK, RST, FIN-less probe)."""
        if flags & RST:
            opts: list = [Timestamps(self._ts_now(now), self.ts_recent)] if self.ts_ok else []
        else:
            opts = self._base_options(now)
        win = self._window_field() if flags & ACK else 0
        seg = TcpSegment(
            self.local[1],
            self.remote[1],
            seq & MASK,
            (self.rcv_nxt & MASK) if flags & ACK else 0,
            flags,
            win,
            opts,
        )
        if flags & ACK:
            self._ack_sent()
        self._add_hook_options(seg, encoded_length(opts))
        self._out.append(seg)

    def _ack_sent(self) -> None:
        self._ack_now = False
        self._unacked_bytes = 0
        self._delack_deadline = None
        self._last_ack_sent = self.rcv_nxt

    def segments_to_send(self, now: float) -> list[TcpSegment]:
        """Everything to transmit now: queued control segments, then data within cwnd/rwnd."""
        state = self.state
        if state is S.ESTABLISHED or state in _SEND_DATA_STATES:
            smax = self.snd_max
            self._send_data(now)
            if self.snd_max > smax or (
                self._tlp_deadline is None and self.snd_max > self.snd_una and not self._tlp_sent
            ):
                self._arm_tlp(now, self.snd_max > smax)
        if self._ack_now and (state is S.ESTABLISHED or self.state in _SYNCHRONIZED):
            # At the highest sequence sent (Linux's tcp_acceptable_seq), not at snd_nxt: after
            # an RTO snd_nxt goes back to snd_una, and a pure ACK numbered there lies below
            # what the peer has received, which drops it unread (RFC 9293 3.10.7.4). When both
            # ends were sending, each dropped the other's ACKs for good.
            self._queue_ctl(ACK, self.snd_max, now)
        out = self._out
        if out:
            self._out = []
            self._st.segments_out += len(out)
        return out

    def _send_data(self, now: float) -> None:
        if (
            self.snd_max == self.snd_una
            and self._last_xmit is not None
            and now - self._last_xmit > self.rto
            and self._has_unsent()
        ):
            # RFC 5681 4.1: after an idle period longer than the RTO the ACK clock is gone;
            # restart from RW = min(IW, cwnd) instead of a line-rate burst of a stale cwnd.
            self.cc.after_idle(initial_window(self.mss), now)
        if self._force_rxt is not None:
            seq = self._force_rxt
            self._force_rxt = None
            if self.snd_una <= seq < self.snd_max:
                self._xmit(seq, self._seg_end(seq, self.snd_max), now)
        if self.in_recovery and self.sack_ok:
            self._send_sack_recovery(now)
        else:
            self._send_window(now)
        if self._rto_deadline is None and self.snd_max > self.snd_una:
            self._rto_deadline = now + self.rto
        self._cwnd_validate()
        # Persist timer: data waiting, nothing in flight, and the peer's window is what stops us.
        if (
            self.snd_max == self.snd_una
            and self._rto_deadline is None
            and self._persist_deadline is None
            and self._has_unsent()
            and self.snd_wnd < min(self._unsent(), self._mss_send)
        ):
            self._persist_deadline = now + min(
                self.rto * (1 << self._persist_backoff), self.config.max_rto
            )

    def _cwnd_validate(self) -> None:
        """Record whether cwnd limits the sender (RFC 7661): after sending, could another full
        segment go out under cwnd? Kept per window of data (until snd_una passes what was
        sent when measured), so an application that does not fill cwnd stops growing it."""
        flight = self.snd_nxt - self.snd_una
        limited = flight + self.mss > self.cc.cwnd
        if (
            self.snd_una >= self._cwl_seq
            or limited
            or (not self._cwnd_limited and flight > self._max_flight)
        ):
            self._cwnd_limited = limited
            self._max_flight = flight
            self._cwl_seq = self.snd_nxt

    def _is_cwnd_limited(self) -> bool:
        cc = self.cc
        if cc.cwnd < cc.ssthresh:  # slow start: grow while at least half of cwnd was used
            return cc.cwnd < 2 * self._max_flight
        return self._cwnd_limited

    def _data_end(self) -> int:
        return self._sbuf_seq + len(self._sbuf)

    def _has_unsent(self) -> bool:
        return self.snd_nxt < self._data_end() or (
            self._fin_queued and self.snd_nxt <= self._fin_seq
        )

    def _unsent(self) -> int:
        return self._data_end() - self.snd_nxt

    def _seg_end(self, seq: int, limit: int) -> int:
        """End of a one-segment retransmission starting at seq (FIN included if it is next)."""
        data_end = self._data_end()
        end = min(seq + self.mss, limit, data_end)
        if self._fin_queued and end == self._fin_seq and limit > self._fin_seq:
            end += 1
        return end

    def _send_window(self, now: float) -> None:
        """Normal transmission (also NewReno recovery and go-back-N after an RTO)."""
        cfg = self.config
        cc = self.cc
        data_end = self._data_end()
        mss = self.mss
        big = cfg.max_segment_payload
        seg_cap = mss if not big or big <= mss else max(mss, (big // mss) * mss)
        fin_queued = self._fin_queued
        # Go-back-N after an RTO with SACK information (RFC 6675 5.1): skip SACKed ranges, and
        # do not count them as in flight (they have left the network).
        sb = self._sacked
        skip = bool(sb) and self.snd_nxt < self.snd_max
        sacked_low = sb.covered_below(self.snd_nxt) if skip else 0
        while True:
            nxt = self.snd_nxt
            cap = None
            if skip and nxt < self.snd_max:
                i = sb.find(nxt)
                if i >= 0:
                    sacked_low += sb.ends[i] - nxt
                    self.snd_nxt = sb.ends[i]
                    continue
                cap = sb.next_start(nxt)  # the next SACKed block above nxt
            if nxt >= data_end:
                if fin_queued and nxt == self._fin_seq:
                    if cc.cwnd - (nxt - self.snd_una) > 0 or nxt == self.snd_una:
                        self._xmit(nxt, nxt + 1, now)
                break
            cwnd = cc.cwnd
            if self._dupacks and not self.in_recovery:
                # Limited transmit (RFC 3042): each of the first two dupacks lets one new
                # segment out, so that a small window can still produce the third dupack.
                cwnd += min(self._dupacks, 2) * mss
            limit = self.snd_una + min(cwnd + sacked_low, self.snd_wnd)
            usable = limit - nxt
            if usable <= 0:
                break
            avail = data_end - nxt
            n = min(avail, usable, seg_cap)
            if n < mss and n < avail and usable < self.max_snd_wnd // 2:
                break  # sender SWS avoidance: wait for a bigger window
            room = self.tx_room
            if room is not None and room <= 0:
                break  # the local queue is full enough: its ACKs bring the next chance
            if cap is not None and nxt + n > cap:
                n = cap - nxt
            end = nxt + n
            if fin_queued and end == self._fin_seq:
                end += 1
            self._xmit(nxt, end, now)
            if self.snd_nxt == nxt:  # nothing went out (cannot happen, but never spin)
                break
            if room is not None:
                # what went out, not what was asked: a segment stops at a metadata range's
                # end (MPTCP mapping), and counting the asked ``n`` spent the room of the
                # next mapping on one that was not sent, stopping mid-mapping
                self.tx_room = room - (self.snd_nxt - nxt)
        if (
            self.snd_nxt < data_end
            and self._persist_deadline is not None
            and self.snd_wnd > 0
            and self.snd_max > self.snd_una
        ):
            self._persist_deadline = None

    def _xmit(self, seq: int, end: int, now: float) -> None:
        """Build and queue one data/FIN segment covering [seq, end) (end may include the FIN).

        Options come first: with hooks, bytes are reported through ``sent_range`` before
        ``outgoing_options`` so the hook can map them in this very segment; if the hook's
        options then leave too little room, the payload is shortened (the mapping may cover
        more than the segment, which DSS allows) and the shortfall is remembered so that the
        next segments are sized right from the start.
        """
        if len(self._metas) > self._meta_head:
            end = self._meta_stop(seq, end)
        fin = self._fin_queued and end == self._fin_seq + 1
        data_stop = end - 1 if fin else end
        opts = self._base_options(now, data=self.hooks is not None and data_stop > seq)
        olen = encoded_length(opts)
        n = data_stop - seq
        if n > 0:
            off = seq - self._sbuf_seq
            if self.config.payload_views:
                payload = self._sbuf.view(off, n)
            else:
                payload = self._sbuf[off : off + n]  # (bytes: one copy)
        else:
            payload = b""
        flags = ACK | (FIN if fin else 0) | (PSH if n and data_stop == self._data_end() else 0)
        seg = TcpSegment(
            self.local[1],
            self.remote[1],
            seq & MASK,
            self.rcv_nxt & MASK,
            flags,
            self._window_field(),
            opts,
            payload,
        )
        hooks = self.hooks
        if hooks is not None:
            if data_stop > self._meta_high:
                if self._metas:
                    self._report_sent(max(seq, self._meta_high), data_stop)
                self._meta_high = data_stop
            olen2 = self._add_hook_options(seg, olen)
            if olen2 - olen > self._hook_reserve and n:
                self._hook_reserve = olen2 - olen
            olen = olen2
        piece = self._mss_send - olen
        if n > piece:
            big = self.config.max_segment_payload
            if big and big > self._mss_send:
                seg.gso_size = piece
            else:  # options grew (hook, SACK blocks): send what fits, the rest follows
                n = piece
                seg.payload = payload[:n]
                seg.flags &= ~(FIN | PSH)
                end = seq + n
        self._ack_sent()
        self._out.append(seg)
        st = self._st
        st.bytes_out += n
        rxt = seq < self.snd_max
        if rxt:
            st.retransmits += 1
            self._rtt_seq = None
            if end > self._high_rxt:
                self._high_rxt = end
            if self.in_recovery and self.sack_ok:
                self._rxt_log.append((seq, end, self.snd_max))
        if self.in_recovery:
            self._prr_out += end - seq
        elif self._rtt_seq is None and not self.ts_ok and not rxt:
            # Karn (RFC 6298 3): only new data is timed; an ACK for a retransmission (RTO,
            # TLP) is ambiguous and could end up timing the original's late ACK
            self._rtt_seq = seq
            self._rtt_time = now
        if end > self.snd_nxt:
            self.snd_nxt = end
        if end > self.snd_max:
            self.snd_max = end
        self._last_xmit = now
        if self._rto_deadline is None:
            self._rto_deadline = now + self.rto

    def _report_sent(self, start: int, stop: int) -> None:
        """sent_range for every meta range overlapping [start, stop); each byte is reported once."""
        hooks = self.hooks
        metas = self._metas
        i = max(bisect_right(self._meta_starts, start, self._meta_head) - 1, self._meta_head)
        for k in range(i, len(metas)):
            ms, me, meta = metas[k]
            if ms >= stop:
                break
            if me <= start:
                continue
            a = ms if ms > start else start
            b = me if me < stop else stop
            hooks.sent_range(self, a & MASK, b - a, meta)

    # ------------------------------------------------------------------ SACK recovery (RFC 6675)

    # ------------------------------------------------------------------ input

    def receive_segment(self, seg: TcpSegment, now: float) -> None:
        st = self._st
        st.segments_in += 1
        flags = seg.flags
        if flags & SYN and flags & (RST | FIN):
            st.malformed_dropped += 1
            return
        state = self.state
        if state is S.ESTABLISHED or state in _SYNCHRONIZED or state is S.SYN_RECEIVED:
            self._rx_synchronized(seg, now)
        elif state is S.SYN_SENT:
            self._rx_syn_sent(seg, now)
        elif state is S.CLOSED:
            if not flags & RST:
                self._rst_for(seg)
        # LISTEN is handled by the edge through accept_syn().

    def _rst_for(self, seg: TcpSegment) -> None:
        """RFC 9293 reset generation for a segment that belongs to no connection."""
        if seg.flags & ACK:
            rst = TcpSegment(self.local[1], self.remote[1], seg.ack, 0, RST, 0)
        else:
            ln = len(seg.payload) + (1 if seg.flags & SYN else 0) + (1 if seg.flags & FIN else 0)
            rst = TcpSegment(self.local[1], self.remote[1], 0, (seg.seq + ln) & MASK, RST | ACK, 0)
        self._out.append(rst)

    def _rx_syn_sent(self, seg: TcpSegment, now: float) -> None:
        flags = seg.flags
        if flags & ACK:
            ack = _unwrap(seg.ack, self.iss)
            if ack <= self.iss or ack > self.snd_max:
                if not flags & RST:
                    self._rst_for(seg)
                return
            if flags & RST:
                if self.hooks is not None:
                    self.hooks.incoming_options(self, seg)
                self._reset("connection refused", seg.options)
                return
        elif flags & RST:
            return
        if not flags & SYN:
            return
        self._take_syn(seg)
        if self.hooks is not None and self.hooks.incoming_options(self, seg) is False:
            if flags & ACK:
                self._refuse(_unwrap(seg.ack, self.iss), now)
            else:
                self._enter_closed("refused")
            return
        if flags & ACK:
            self.snd_una = self.snd_wl2 = _unwrap(seg.ack, self.iss)
            self._established(now)
            self._rtt_from(seg, now)
            self._retries = 0
            self._ack_now = True
            self._rto_deadline = None
        else:
            # Simultaneous open: answer with SYN-ACK on the same ISS.
            self.state = S.SYN_RECEIVED
            self.snd_nxt = self.iss
            self._rto_deadline = None
            self._send_syn(now, ack=True)

    def _established(self, now: float) -> None:
        self.state = S.ESTABLISHED
        self._rcv_adv = max(self._rcv_adv, self.rcv_nxt)
        self._events.append(Connected())
        if self._close_pending:
            self._close_pending = False
            self.close(now)

    def _challenge_ack(self, now: float) -> None:
        sec = int(now)
        if sec != self._chack_window:
            self._chack_window = sec
            self._chack_count = 0
        if self._chack_count >= self.config.challenge_ack_limit:
            return
        self._chack_count += 1
        self._st.challenge_acks += 1
        self._ack_now = True

    def _oow_ack(self, now: float, limited: bool | int) -> None:
        """ACK a segment that failed the sequence (or PAWS) test. Non-data segments draw at
        most one such ACK per ``oow_ack_interval`` (Linux's tcp_oow_rate_limited): two stacks
        out of sync must not ping-pong ACKs forever; data always gets its duplicate ACK."""
        if limited:
            last = self._oow_ack_time
            if last is not None and now - last < self.config.oow_ack_interval:
                return
            self._oow_ack_time = now
        self._ack_now = True

    def _rx_synchronized(self, seg: TcpSegment, now: float) -> None:
        """RFC 9293 3.10.7.4 for SYN-RECEIVED and every synchronized state."""
        flags = seg.flags
        st = self._st
        rcv_nxt = self.rcv_nxt
        s = _unwrap(seg.seq, rcv_nxt)
        plen = len(seg.payload)
        seglen = plen + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        state = self.state

        if state is S.SYN_RECEIVED and flags & SYN and s == rcv_nxt - 1 and not flags & RST:
            if not flags & ACK:
                # A SYN retransmitted by a peer that has not seen our SYN-ACK yet.
                self._send_syn(now, ack=True)
                return
            if _unwrap(seg.ack, self.snd_una) == self.iss + 1:
                # Simultaneous open: the peer's SYN-ACK acks our SYN. Its SYN is old news
                # (already taken), so only the ACK half completes our side.
                self.snd_una = self.iss + 1
                self.snd_wnd = self.max_snd_wnd = seg.window << self.snd_wscale
                self.snd_wl1 = s
                self.snd_wl2 = self.snd_una
                self._rtt_from(seg, now)
                self._retries = 0
                self._rto_deadline = None
                self._ack_now = True
                if self.hooks is not None:
                    self.hooks.incoming_options(self, seg)
                self._established(now)
                return

        # PAWS (RFC 7323 5.3): a timestamp older than TS.Recent marks an old duplicate.
        tsopt = None
        if self.ts_ok:
            for o in seg.options:
                if type(o) is Timestamps:
                    tsopt = o
                    break
            if (
                tsopt is not None
                and not flags & RST
                and ((tsopt.tsval - self.ts_recent) & MASK) >= HALF
            ):
                st.paws_dropped += 1
                self._oow_ack(now, seglen == 0 or flags & SYN)
                return

        # Acceptability test (RFC 9293 3.10.7.4, four cases).
        wnd = self._rcv_adv - rcv_nxt
        if wnd < 0:
            wnd = 0
        text_ok = True
        if seglen == 0:
            ok = s == rcv_nxt if wnd == 0 else rcv_nxt <= s < rcv_nxt + wnd
        elif wnd == 0:
            # "special allowance ... to accept valid ACKs, URGs, and RSTs": keep the ACK,
            # drop the text (our window is closed).
            ok = s == rcv_nxt
            # A bare FIN costs no buffer space: take it (as Linux does), or a peer waiting on
            # a reader that is itself waiting for EOF would loop.
            text_ok = plen == 0
        else:
            ok = (rcv_nxt <= s < rcv_nxt + wnd) or (rcv_nxt <= s + seglen - 1 < rcv_nxt + wnd)
        if not ok:
            if not flags & RST:
                self._oow_ack(now, seglen == 0 or flags & SYN)  # also answers window probes
                if state is S.TIME_WAIT and flags & FIN:
                    self._tw_deadline = now + self.config.time_wait
            return

        # RST (RFC 5961 3.2): only the exact next sequence number resets; others in window
        # get a challenge ACK.
        if flags & RST:
            if state is S.TIME_WAIT:
                return  # RFC 1337: no TIME-WAIT assassination, the timer runs out as usual
            if s == rcv_nxt:
                if self.hooks is not None:
                    self.hooks.incoming_options(self, seg)
                self._reset("connection reset by peer", seg.options)
            else:
                self._challenge_ack(now)
            return

        # SYN in a synchronized state (RFC 5961 4.2): challenge ACK, never reset.
        if flags & SYN:
            self._challenge_ack(now)
            return

        if not flags & ACK:
            return

        # TS.Recent follows segments at the left window edge (RFC 7323 4.3).
        if tsopt is not None and s <= self._last_ack_sent:
            self.ts_recent = tsopt.tsval

        if state is S.SYN_RECEIVED:
            ack = _unwrap(seg.ack, self.snd_una)
            if not (self.snd_una < ack <= self.snd_max):
                self._rst_for(seg)
                return
            if self.hooks is not None:
                verdict = self.hooks.incoming_options(self, seg)
                if verdict is False:
                    self._refuse(self.snd_nxt, now)
                    return
                if verdict == DEFER:
                    st.handshake_deferred += 1
                    return
        elif self.hooks is not None:
            # RFC 5961 5.2 first: an ACK of data never sent, or far below snd_una, is dropped
            # (by _process_ack) and its options must not reach the layer above.
            ack = _unwrap(seg.ack, self.snd_una)
            if self.snd_una - max(self.max_snd_wnd, 0xFFFF) <= ack <= self.snd_max:
                self.hooks.incoming_options(self, seg)

        if state is S.SYN_RECEIVED:
            # _process_ack below moves snd_una over our SYN and takes the RTT sample.
            self.snd_wnd = seg.window << self.snd_wscale
            self.max_snd_wnd = max(self.max_snd_wnd, self.snd_wnd)
            self.snd_wl1 = s
            self.snd_wl2 = ack
            self._established(now)

        if not self._process_ack(seg, s, tsopt, now):
            return
        state = self.state
        if state is S.CLOSED:
            return
        if not text_ok:
            # A zero-window probe carrying data (1 byte at RCV.NXT, as Linux sends): the text is
            # not taken, but the probe must be answered with an ACK (RFC 9293 3.8.6.1).
            self._ack_now = True
            return

        if state is S.ESTABLISHED or state in _RECV_DATA_STATES:
            if plen:
                self._rx_data(seg, s, now)
            if flags & FIN:
                fin_seq = s + plen
                if fin_seq >= self.rcv_nxt:
                    self._fin_rcv_seq = fin_seq  # may wait for holes to fill
                else:
                    self._ack_now = True
            if self._fin_rcv_seq is not None and self._fin_rcv_seq == self.rcv_nxt:
                self._fin_rcv_seq = None
                self._on_fin(now)
        elif flags & FIN:
            # FIN already processed (CLOSE-WAIT, CLOSING, LAST-ACK, TIME-WAIT): re-ACK it.
            self._ack_now = True
            if state is S.TIME_WAIT:
                self._tw_deadline = now + self.config.time_wait

    def _on_fin(self, now: float) -> None:
        self.rcv_nxt += 1
        self._ack_now = True
        self._events.append(PeerClosed())
        st = self.state
        if st is S.ESTABLISHED or st is S.SYN_RECEIVED:
            self.state = S.CLOSE_WAIT
        elif st is S.FIN_WAIT_1:
            if self._fin_queued and self.snd_una > self._fin_seq:
                self._enter_time_wait(now)
            else:
                self.state = S.CLOSING
        elif st is S.FIN_WAIT_2:
            self._enter_time_wait(now)

    def _enter_time_wait(self, now: float) -> None:
        self.state = S.TIME_WAIT
        self._rto_deadline = self._tlp_deadline = None
        self._persist_deadline = None
        self._delack_deadline = None
        self._tw_deadline = now + self.config.time_wait

    def _process_ack(self, seg: TcpSegment, s: int, tsopt: Timestamps | None, now: float) -> bool:
        """Returns False when the segment must be dropped after the ACK field."""
        una = self.snd_una
        ack = _unwrap(seg.ack, una)
        if ack > self.snd_max:
            self._ack_now = True  # acks something not yet sent
            return False
        if ack < una - max(self.max_snd_wnd, 0xFFFF):
            self._challenge_ack(now)  # RFC 5961 section 5
            return False
        cc = self.cc
        wnd = seg.window << self.snd_wscale
        sack_opt = None
        if self.sack_ok and seg.options:
            for o in seg.options:
                if type(o) is Sack:
                    sack_opt = o
                    break
        if self._tlp_high_rxt is not None and ack >= self._tlp_high_rxt:
            self._tlp_ack(seg, ack, una, sack_opt, now)
        prr = self.in_recovery and self.sack_ok
        sacked_before = self._sacked.total if prr else 0
        if ack > una:
            acked = ack - una
            self.snd_una = ack
            # free acknowledged bytes (the FIN's sequence number is not in the buffer)
            data_acked = min(ack, self._data_end()) - self._sbuf_seq
            if data_acked > 0:
                del self._sbuf[:data_acked]
                self._sbuf_seq += data_acked
                if self._snd_blocked and len(self._sbuf) < self.config.snd_buf:
                    self._snd_blocked = False
                    self._events.append(SendBufferAvailable())
            if self.snd_nxt < ack:
                self.snd_nxt = ack  # after go-back-N, an ACK can jump past snd_nxt
            if len(self._metas) > self._meta_head:
                self._drop_metas(ack)
            sample = None  # this ACK's RTT sample
            if tsopt is not None:
                if tsopt.tsecr:
                    d = (self._ts_now(now) - tsopt.tsecr) & MASK
                    if d < HALF:
                        sample = d / 1000.0
                        self._rtt_sample(sample)
            elif self._rtt_seq is not None and ack > self._rtt_seq:
                self._rtt_seq = None
                sample = now - self._rtt_time
                self._rtt_sample(sample)
            self._retries = 0
            self._persist_backoff = 0
            self._tlp_sent = False
            self._tlp_deadline = None
            if self._sacked:
                self._sacked.remove_below(ack)
            if sack_opt is not None:
                self._update_scoreboard(sack_opt)
            if self.in_recovery:
                if ack >= self._recover:
                    self.in_recovery = False  # the log keeps retransmissions still out
                    if self.sack_ok:
                        self._rec_rxt_high = self._high_rxt
                    self._dupacks = 0
                    if self.sack_ok:
                        cc.exit_recovery(self.snd_max - ack, now)
                    else:
                        cc.exit_recovery(self.snd_max - ack, now)
                        cc.cwnd = min(cc.ssthresh, max(self.snd_max - ack, 0) + self.mss)
                elif not self.sack_ok:
                    # NewReno partial ACK (RFC 6582 3.2 step 5)
                    self._force_rxt = ack
                    cwnd = cc.cwnd - acked + (self.mss if acked >= self.mss else 0)
                    cc.cwnd = max(cwnd, self.mss)
                    self._rto_deadline = now + self.rto
                else:
                    if self._high_rxt < ack:
                        self._high_rxt = ack
            else:
                self._dupacks = 0
                if cc.cwnd < cc.ssthresh:
                    hystart = getattr(cc, "hystart_ack", None)  # RFC 9406 rounds and RTTs
                    if hystart is not None:  # (with the samples of the ACKs coalesced into it)
                        hystart(ack, self.snd_nxt, sample, seg.acks)
                if self._is_cwnd_limited():
                    k = seg.acks
                    if k > 1:
                        # one ACK standing for k (the edge coalesced a batch): growth as if each
                        # had come, so slow start's per-ACK cap (2 MSS) applies k times
                        part = acked // k
                        for _ in range(k - 1):
                            cc.on_ack(part, self.srtt, now)
                        acked -= part * (k - 1)
                    cc.on_ack(acked, self.srtt, now)
            if self._high_rxt < ack:
                self._high_rxt = ack
            # RTO timer (RFC 6298 5.2/5.3)
            if ack >= self.snd_max:
                self._rto_deadline = None
            elif not self.in_recovery or self.sack_ok:
                self._rto_deadline = now + self.rto
            st = self.state
            if self._fin_queued and ack > self._fin_seq:
                if st is S.FIN_WAIT_1:
                    self.state = S.FIN_WAIT_2
                elif st is S.CLOSING:
                    self._enter_time_wait(now)
                elif st is S.LAST_ACK:
                    self._enter_closed(None)
                    return False
        else:
            new_sack = False
            if sack_opt is not None:
                sacked = self._sacked.total
                self._update_scoreboard(sack_opt)
                new_sack = self._sacked.total > sacked
            if (
                ack == una
                and not seg.payload
                and not seg.flags & (SYN | FIN)
                and self.snd_max > una
                and wnd == self.snd_wnd
            ):
                self._st.dupacks += 1
                # With SACK a duplicate ACK counts when it SACKs new data (RFC 6675 2): one
                # without (the receiver got a segment twice: a retransmission that was not
                # needed) says nothing was lost and must not start a recovery.
                if not self.sack_ok or new_sack:
                    self._dupacks += 1
                if self.in_recovery and not self.sack_ok:
                    cc.cwnd += self.mss  # NewReno inflation
                elif (
                    not self.in_recovery
                    and una >= self._rto_recover
                    and (
                        self._dupacks >= self.config.dupthresh
                        or (self.sack_ok and self._una_lost())
                    )
                ):
                    self._enter_recovery(now)
            elif (
                sack_opt is not None
                and not self.in_recovery
                and una >= self._rto_recover
                and self.snd_max > una
                and self._una_lost()
            ):
                self._enter_recovery(now)
        if prr and self.in_recovery:
            self._prr_update(max(ack - una, 0), sacked_before)
        if ack > una and self.snd_max > ack:
            self._arm_tlp(now, True)
        elif self.in_recovery:
            self._tlp_deadline = None
        # window update (RFC 9293 3.10.7.4, SND.WL1/WL2 rule)
        if self.snd_wl1 < s or (self.snd_wl1 == s and self.snd_wl2 <= ack):
            self.snd_wnd = wnd
            self.snd_wl1 = s
            self.snd_wl2 = ack
            if wnd > self.max_snd_wnd:
                self.max_snd_wnd = wnd
            if wnd > 0 and self._persist_deadline is not None:
                self._persist_deadline = None
                self._persist_backoff = 0
        return True

    def _reset(self, reason: str, options: list | None = None) -> None:
        self._enter_closed(reason, options)

    def _enter_closed(self, reason: str | None, options: list | None = None) -> None:
        was = self.state
        self.state = S.CLOSED
        self._rto_deadline = self._delack_deadline = None
        self._persist_deadline = self._tw_deadline = self._tlp_deadline = None
        self._ack_now = False
        if was is S.CLOSED:
            return
        if reason is not None:
            self._events.append(Reset(reason, options))
        self._events.append(Closed())
