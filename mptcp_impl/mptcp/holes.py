"""What the sender does while the DATA_ACK stands still: keep the receiver's buffer from filling
behind the hole, and fill the hole early.

A hole at the data level is the byte at the DATA_ACK, held by a subflow that has gone silent (a
path cut, a burst of losses). Every other subflow keeps delivering data beyond it, which the
receiver must hold out of order. Linux (6.x) as a receiver stops moving data from its subflows
to the MPTCP socket once that out-of-order data reaches its receive buffer, so the segment that
would fill the hole, queued on a subflow behind data already acknowledged there, never gets in:
the connection stalls for good, whatever the sender does next. Two rules keep it from happening:

- a cap (``stall_limit``): once the DATA_ACK has not moved for two of the smallest live srtt, or
  while it moves only through a repaired hole, new data may go at most up to ``DATA_ACK + window
  - max(window / 4, 2 mappings)``, so the receiver keeps room for the repair and for what is
  already in flight;
- an early repair (``repair_hole``): once every subflow holding the byte at the DATA_ACK has been
  silent (data in flight, no ACK progress) for ``max(2 srtt, srtt + 4 rttvar)`` of its own, the
  bytes it holds from there are sent again on the fastest other subflow, one with empty queues
  first (Linux's ``mptcp_subflow_get_retrans``), without waiting for the holder's RTO (200 ms at
  least, several seconds once backed off) by which time the window is full of data beyond it.

The repair is sent once per hole: the subflow carrying it is alive, so its own TCP delivers it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .connection import MptcpConnection
    from .subflow import Subflow

REPAIR_CHUNKS = 4  # at most this many mappings of the hole go out in one repair


SILENCE_MIN = 0.01  # the floor of a tail loss probe's timeout (Linux's tcp_schedule_loss_probe)
DELACK_MAX = 0.2  # a lone segment may wait this long for a delayed ACK (RFC 8985's WCDelAckT)


SILENCE_CAP = 1.0  # s: the bound never exceeds this or SILENCE_CAP_RTTS min RTTs, if longer
SILENCE_CAP_RTTS = 8


def silence_bound(s: Subflow) -> float:
    """How long a subflow with data in flight may go without ACK progress before it counts as
    silent: ``max(2 srtt, srtt + 4 rttvar)`` (its RTO before the 200 ms floor), at least 10 ms,
    and a delayed ACK's worth more when a single segment is in flight (as a tail loss probe
    waits); its RTO while it has no RTT sample. At most ``max(SILENCE_CAP, SILENCE_CAP_RTTS
    min RTTs)``: after an outage a duplicate's ACK echoes a timestamp from before it (RFC
    7323 4.3), one sample of seconds that leaves srtt and rttvar inflated for many round
    trips, and a hole held there waited that long to be repaired (fault seed 2222: 6.3 s
    with a 40 ms path that had come back). A silence that long is worth a repair whatever
    the estimate says: at worst a few mappings go twice."""
    srtt, var = s.srtt, s.rttvar
    if srtt is None:
        return s.tcp.rto
    bound = max(2 * srtt, srtt + 4 * (var or 0.0), SILENCE_MIN)
    best = s.tcp.min_rtt
    if best is not None:
        bound = min(bound, max(SILENCE_CAP, SILENCE_CAP_RTTS * best))
    if s.in_flight <= s.mss:
        bound += DELACK_MAX
    return bound


def is_silent(s: Subflow, now: float) -> bool:
    """Data in flight and no ACK progress for longer than ``silence_bound``: its path is cut or
    drops everything (before its RTOs make it stale). The close avoids it too: a DATA_FIN sent
    there waits for the subflow's backed-off RTO, and its FIN would never be answered."""
    return s.tcp.bytes_in_flight > 0 and now - s._progress_at >= silence_bound(s)


def note_progress(s: Subflow, now: float) -> None:
    """Called on every pass: the subflow made ACK progress, or has nothing in flight (a subflow
    that just started sending is not silent since long ago)."""
    tcp = s.tcp
    if tcp.snd_una != s._una_progress or tcp.bytes_in_flight == 0:
        s._una_progress = tcp.snd_una
        s._progress_at = now


def stall_limit(conn: MptcpConnection, now: float) -> int | None:
    """The highest DSN new data may reach while the DATA_ACK is stalled (None: no cap)."""
    una = conn.snd_una
    if conn.snd_nxt <= una:
        return None
    if una >= conn._repaired_to:  # (not inside a repaired hole)
        live = [s.srtt for s in conn.subflows if s.usable and not s.stale and s.srtt is not None]
        if not live or now - conn._una_moved_at < 2 * min(live):
            return None
    window = max(0, conn.snd_edge - una)
    return una + window - max(window // 4, 2 * conn.config.max_mapping)


def chunks_at(conn: Any, dsn: int) -> list[list[Any]]:
    """The chunks (``conn._chunks`` entries) holding the byte at ``dsn``: its first copy and
    any reinjections. New data is recorded in DSN order, so of those chunks only a prefix can
    hold ``dsn`` and the walk stops at the first one starting beyond it; the few recorded out
    of order (copies, reinjections, repairs: ``conn._late``) are looked at apart. Called on
    every scheduling pass, it was a scan of every chunk in flight (hundreds at high rates)."""
    late = getattr(conn, "_late", None)
    if late is None:  # (a stand-in without the index: scan)
        return [ch for ch in conn._chunks if ch[0] <= dsn < ch[0] + ch[1]]
    out = []
    if late:
        ids = conn._late_ids
        for ch in conn._chunks:
            if id(ch) in ids:
                continue
            if ch[0] > dsn:
                break
            if dsn < ch[0] + ch[1]:
                out.append(ch)
        out += [ch for ch in late if ch[0] <= dsn < ch[0] + ch[1]]
    else:
        for ch in conn._chunks:
            if ch[0] > dsn:
                break
            if dsn < ch[0] + ch[1]:
                out.append(ch)
    return out


def _holders(conn: MptcpConnection, dsn: int) -> list[Subflow]:
    """Every subflow that was given the byte at ``dsn`` (first copy and reinjections)."""
    return [ch[2] for ch in chunks_at(conn, dsn)]


def _chunk_end(conn: MptcpConnection, dsn: int, holders: list[Subflow]) -> int:
    """Where the run of bytes from ``dsn`` held by ``holders`` only ends (first piece)."""
    end = dsn
    for ch in chunks_at(conn, dsn):
        if ch[2] in holders:
            end = max(end, ch[0] + ch[1])
    return end


def repair_hole(conn: MptcpConnection, usable: list[Subflow], now: float) -> int:
    """Send the silent holders' bytes at the DATA_ACK again on another subflow; bytes sent.
    Sets ``conn._repair_at`` to when the current hole is due for repair (the timer)."""
    conn._repair_at = None
    una = conn.snd_una
    if conn.snd_nxt <= una or una < conn._repaired_to:
        return 0
    holders = _holders(conn, una)
    if not holders:
        return 0
    due = 0.0
    for h in holders:
        if h not in conn.subflows or h.closed or h.stale:
            continue  # gone or stale: its bytes are queued for reinjection already
        if h.tcp.bytes_in_flight == 0:
            return 0  # not sent yet, or delivered: nothing is lost
        due = max(due, h._progress_at + silence_bound(h))
    if now < due:
        conn._repair_at = due
        return 0
    targets = [s for s in usable if s not in holders and not s.stale and s.space > 0]
    if not targets:
        return 0
    fast = min(
        targets,
        key=lambda s: (s.in_flight + s.queued > 0, s.srtt if s.srtt is not None else 1.0),
    )
    budget = min(fast.space, REPAIR_CHUNKS * conn.config.max_mapping)
    pos, sent = una, 0
    while budget > 0 and pos < conn.snd_nxt:
        if pos != una and not set(_holders(conn, pos)) <= set(holders):
            break  # the next bytes are somewhere else too: not part of this hole
        end = _chunk_end(conn, pos, holders)
        n = min(end - pos, budget, conn.config.max_mapping)
        if n <= 0:
            break
        off = pos - una
        fast.push(pos, bytes(conn._sbuf[off : off + n]))
        fast.reinjected += n
        conn._add_chunk(pos, n, fast)
        conn.mib.inc("MPTCPRetrans")
        pos += n
        sent += n
        budget -= n
    conn._repaired_to = pos
    return sent
