"""The data-level retransmission timer and zero-window probe (Linux's mptcp_retransmit_timer,
__mptcp_retrans, mptcp_subflow_get_retrans and the probe in mptcp_sendmsg_frag, in
net/mptcp/protocol.c).

Each subflow's own timers repair what that subflow holds. Two stalls are beyond them:
- the DATA_ACK stops while no live subflow holds the bytes it waits for (a subflow
  acknowledged them at the TCP level and was then reset, or they were never on a live subflow):
  after the timer, the bytes at the DATA_ACK go again on an idle subflow that never carried
  them (Linux: any idle subflow); when every idle subflow did (the peer acknowledged them at
  the TCP level: it has them), the probe below asks for the DATA_ACK again;
- the peer's data-level window is closed, everything sent is acknowledged, and the window
  update that reopens it is lost: no subflow has anything to send, so none probes. After the
  timer a probe goes out and the answer carries the current DATA_ACK and window (MIB
  WinProbe). Linux sends one byte at DSN ``snd_una - 1``; ours is a pure ACK at subflow
  sequence ``snd_una - 1``, which any TCP answers with an ACK: the same answer without using
  subflow sequence space or putting on the wire a byte that a peer that fell back to plain TCP
  unnoticed (a middlebox stripped our options) would take as data. For the same reason a
  retransmission never goes on a subflow that already carried the bytes: a conforming peer
  that acknowledged them at the TCP level has them.

The interval is the largest RTO of the subflows that are not stale (Linux: the longest pending
subflow timer, TCP_RTO_MIN when none), doubled after each expiry without progress and back to
it whenever the DATA_ACK moves; it runs while data is unacknowledged or waiting to be sent.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import TYPE_CHECKING

from ..tcp.rangeset import RangeSet
from .holes import chunks_at

if TYPE_CHECKING:
    from .connection import MptcpConnection
    from .subflow import Subflow

BACKOFF_MAX = 16  # doublings kept (the interval is capped by TcpConfig.max_rto anyway)


class Ranges(RangeSet):
    """DSN ranges queued for reinjection: a range several failing subflows held is queued
    once; a range leaves when it is sent again (``remove``) or DATA_ACKed (``remove_below``)."""

    __slots__ = ()

    def remove(self, start: int, end: int) -> None:
        """Uncover [start, end) (O(log n) plus a slice move)."""
        starts, ends = self.starts, self.ends
        i = bisect_right(ends, start)  # first range ending after start
        j = bisect_left(starts, end, i)  # ranges from i up to j overlap [start, end)
        if i >= j:
            return
        gone = sum(min(e, end) - max(b, start) for b, e in zip(starts[i:j], ends[i:j], strict=True))
        keep_s: list[int] = []
        keep_e: list[int] = []
        if starts[i] < start:
            keep_s.append(starts[i])
            keep_e.append(start)
        if ends[j - 1] > end:
            keep_s.append(end)
            keep_e.append(ends[j - 1])
        starts[i:j] = keep_s
        ends[i:j] = keep_e
        self.total -= gone
        if len(self._cum) > i:
            del self._cum[i:]


class DataRetransmitter:
    """One per connection: when the data-level timer fires next, and how far it backed off."""

    __slots__ = ("deadline", "backoff", "_una")

    def __init__(self) -> None:
        self.deadline: float | None = None
        self.backoff = 0  # expiries since the DATA_ACK last moved
        self._una: int | None = None

    def rearm(self, conn: MptcpConnection, now: float) -> None:
        """After each pass of the send path: stop the timer when nothing is outstanding or
        waiting, restart it (without backoff) when the DATA_ACK moved, else start it if it is
        not running (Linux's __mptcp_clean_una / __mptcp_push_pending)."""
        if not _pending(conn):
            self.deadline = None
            self.backoff = 0
            self._una = conn.snd_una
            return
        if conn.snd_una != self._una:
            self._una = conn.snd_una
            self.backoff = 0
            self.deadline = now + interval(conn, 0)
        elif self.deadline is None:
            self.deadline = now + interval(conn, self.backoff)

    def on_timer(self, conn: MptcpConnection, now: float) -> None:
        """The timer expired without the DATA_ACK moving: resend the bytes at it, or probe a
        closed window; then back off. When every idle subflow already carried the bytes at
        the DATA_ACK (the peer acknowledged them at the TCP level: it has them), a probe asks
        for the DATA_ACK again instead (the one that covers them may have been lost)."""
        self.deadline = None
        if not _pending(conn):
            return
        if conn.snd_una < conn.snd_nxt:
            if not retransmit_head(conn):
                window_probe(conn, now)
        elif conn.snd_edge <= conn.snd_nxt:
            window_probe(conn, now)
        self.backoff = min(self.backoff + 1, BACKOFF_MAX)
        self.deadline = now + interval(conn, self.backoff)


def _pending(conn: MptcpConnection) -> bool:
    """Data unacknowledged at the data level, or written and not yet sent."""
    if conn.fallback or conn._closed or conn._aborting or not conn._connected:
        return False
    return conn.snd_una < conn.snd_nxt or conn.snd_nxt < conn.snd_una + len(conn._sbuf)


def interval(conn: MptcpConnection, backoff: int) -> float:
    """The largest RTO among the usable subflows that are not stale (a stale one's RTO has
    backed off towards the maximum), TCP's minimum RTO when there is none; doubled
    ``backoff`` times, at most TCP's maximum RTO."""
    cfg = conn.tcp_config
    base = max(
        (s.tcp.rto for s in conn.subflows if s.usable and not s.stale),
        default=cfg.min_rto,
    )
    return min(max(base, cfg.min_rto) * (1 << backoff), cfg.max_rto)


def retrans_target(subflows: list[Subflow], carried: set[int]) -> Subflow | None:
    """Linux's mptcp_subflow_get_retrans: a usable subflow with nothing in flight and nothing
    queued (one with data outstanding has its own timer, and resent bytes would wait behind
    its queue), a non-backup one first, the lowest srtt among them; a backup one only when no
    non-backup subflow is progressing (each has had two RTOs or more since its last progress).
    Not one whose id is in ``carried`` (it already carried the bytes). None: wait."""
    idle = [
        s
        for s in subflows
        if s.usable and s.in_flight == 0 and s.queued == 0 and id(s) not in carried
    ]
    main = [s for s in idle if not (s.backup or s.peer_backup)]
    if not main:
        progressing = any(
            s._rto_streak < 2 for s in subflows if s.usable and not (s.backup or s.peer_backup)
        )
        main = [] if progressing else idle
    return min(main, key=lambda s: s.srtt if s.srtt is not None else 1.0, default=None)


def retransmit_head(conn: MptcpConnection) -> int:
    """Resend the bytes at the DATA_ACK (at most one mapping, and what the subflow's window
    lets out at once) on the subflow ``retrans_target`` picks; returns how many."""
    una = conn.snd_una
    # who carried the byte at the DATA_ACK (one scan of the chunks an expiry: rare)
    carried = {id(ch[2]) for ch in chunks_at(conn, una)}
    s = retrans_target(conn.subflows, carried)
    if s is None:
        return 0
    n = min(conn.snd_nxt - una, conn.config.max_mapping, max(s.space, s.mss))
    if n <= 0:
        return 0
    n = s.push(una, bytes(conn._sbuf[:n]))
    if n:
        s.reinjected += n
        conn._add_chunk(una, n, s)
        conn.mib.inc("MPTCPRetrans")
    return n


def window_probe(conn: MptcpConnection, now: float) -> bool:
    """Probe a closed data-level window (or a DATA_ACK that stopped): a pure ACK with an old
    sequence number on the best usable subflow (not stale, not backup, lowest srtt first),
    which the peer answers with its DATA_ACK and window (see the module's docstring for why
    not Linux's 1-byte probe)."""
    subs = [s for s in conn.subflows if s.usable]
    if not subs:
        return False
    s = min(
        subs,
        key=lambda s: (s.stale, s.backup or s.peer_backup, s.srtt if s.srtt is not None else 1.0),
    )
    s.tcp.send_probe(now)
    if conn.snd_edge <= conn.snd_nxt:
        conn.mib.inc("WinProbe")  # (Linux counts its zero-window probes only)
    return True
