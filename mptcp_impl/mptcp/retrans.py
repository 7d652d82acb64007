"""The data-level retransmission timer and zero-window probe (Linux's mptcp_retransmit_timer,
__mptcp_retrans, mptcp_subflow_get_retrans and the probe in mptcp_sendmsg_frag, in
net/mptcp/protocol.c).

Each subflow's own timers repair what that subflow holds. Two stalls are beyond them:
- the DATA_ACK stops while no subflow holds the bytes it waits for any more (a subflow
  acknowledged them at the TCP level and was then reset, or they were never on a live subflow):
  after the timer, the bytes at the DATA_ACK go again on an idle subflow;
- the peer's data-level window is closed, everything sent is acknowledged, and the window
  update that reopens it is lost: no subflow has anything to send, so none probes. After the
  timer a 1-byte probe goes out (DSN ``snd_una - 1``, a byte the receiver already has and
  drops): its subflow's TCP sends it, or zero-window probes for it, and the answer carries the
  current DATA_ACK and window (MIB WinProbe).

The interval is the largest RTO of the subflows that are not stale (Linux: the longest pending
subflow timer, TCP_RTO_MIN when none), doubled after each expiry without progress and back to
it whenever the DATA_ACK moves; it runs while data is unacknowledged or waiting to be sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .connection import MptcpConnection
    from .subflow import Subflow

BACKOFF_MAX = 16  # doublings kept (the interval is capped by TcpConfig.max_rto anyway)


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
        closed window; then back off."""
        self.deadline = None
        if not _pending(conn):
            return
        if conn.snd_una < conn.snd_nxt:
            retransmit_head(conn)
        elif conn.snd_edge <= conn.snd_nxt:
            window_probe(conn)
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


def retrans_target(subflows: list[Subflow]) -> Subflow | None:
    """Linux's mptcp_subflow_get_retrans: a usable subflow with nothing in flight and nothing
    queued (one with data outstanding has its own timer, and resent bytes would wait behind
    its queue), a non-backup one first, the lowest srtt among them; a backup one only when no
    non-backup subflow is progressing (each has had two RTOs or more since its last progress).
    None: wait for the next expiry."""
    idle = [s for s in subflows if s.usable and s.in_flight == 0 and s.queued == 0]
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
    s = retrans_target(conn.subflows)
    if s is None:
        return 0
    una = conn.snd_una
    n = min(conn.snd_nxt - una, conn.config.max_mapping, max(s.space, s.mss))
    if n <= 0:
        return 0
    n = s.push(una, bytes(conn._sbuf[:n]))
    if n:
        s.reinjected += n
        conn._add_chunk(una, n, s)
        conn._reinject.remove_below(una + n)  # (queued reinjections of these bytes: done)
        conn.mib.inc("MPTCPRetrans")
    return n


def window_probe(conn: MptcpConnection) -> bool:
    """A 1-byte probe of a closed data-level window: DSN ``snd_una - 1`` (the last byte
    acknowledged, which the receiver drops as old data and answers with its window), on the
    best usable subflow that has nothing queued (one already holding a probe probes for it at
    the TCP level). Linux's mptcp_sendmsg_frag does the same when nothing is pending."""
    subs = [s for s in conn.subflows if s.usable and s.queued == 0]
    if not subs:
        return False
    s = min(
        subs,
        key=lambda s: (s.stale, s.backup or s.peer_backup, s.srtt if s.srtt is not None else 1.0),
    )
    if not s.push(conn.snd_una - 1, conn._acked_tail):
        return False
    conn.mib.inc("WinProbe")
    return True
