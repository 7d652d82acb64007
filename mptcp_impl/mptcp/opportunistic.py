"""Opportunistic retransmission and penalisation (Raiciu, Paasch, Barré, Ford, Honda, Duchêne,
Bonaventure, Handley, "How hard can it be? Designing and implementing a deployable multipath
TCP", NSDI 2012, section 4.2; the v0 kernel's mptcp_rcv_buf_optimization).

When the peer's data-level window stops new data while a subflow still has room in its cwnd,
the bytes at the DATA_ACK (those the receiver waits for, held by a slower subflow) are sent
again on the fast subflow. The v0 rule: only when each subflow holding them has a cwnd of at
most 4 segments or an RTT more than 4 times the fast one's. With ``penalise`` the slower
holders (not in loss recovery) also have their cwnd halved (and ssthresh with it outside slow
start), at most once per RTT of the fast subflow. ``MptcpConfig.opportunistic``: "off",
"retransmit" or "penalise".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .holes import chunks_at

if TYPE_CHECKING:
    from .connection import MptcpConnection
    from .subflow import Subflow


def _srtt(s: Any) -> float:
    return s.srtt if s.srtt is not None else 0.1


def opportunistic_retransmit(conn: MptcpConnection, usable: list[Subflow], now: float) -> int:
    """Called when the window blocks new data; returns the bytes sent again (0 if none)."""
    una = conn.snd_una
    chunks = chunks_at(conn, una)
    if not chunks:
        return 0
    holders = {id(ch[2]): ch[2] for ch in chunks}
    cands = [s for s in usable if id(s) not in holders and not s.stale and s.space > 0]
    if not cands:
        return 0
    fast = min(cands, key=_srtt)
    others = [h for h in holders.values() if h is not fast]
    do = False
    for h in others:
        if h.cwnd <= 4 * h.mss:
            do = True
            break
        if 4 * _srtt(fast) >= _srtt(h):
            do = False
            break
        do = True
    if not do:
        return 0
    if conn.config.opportunistic == "penalise":
        _penalise(conn, fast, others, now)
    end = max(ch[0] + ch[1] for ch in chunks)
    n = min(end - una, fast.space, conn.config.max_mapping)
    if n <= 0:
        return 0
    fast.push(una, bytes(conn._sbuf[:n]))
    fast.reinjected += n
    conn._add_chunk(una, n, fast)  # (resent again elsewhere if ``fast`` fails in turn)
    conn.mib.inc("MPTCPRetrans")
    conn.ortx_bytes = getattr(conn, "ortx_bytes", 0) + n
    hook = getattr(conn.sched, "on_opportunistic", None)
    if hook is not None:
        hook()
    return n


def _penalise(conn: MptcpConnection, fast: Subflow, slow: list[Subflow], now: float) -> None:
    last = getattr(fast, "_penalised_at", None)
    if last is not None and now - last < _srtt(fast):
        return
    for h in slow:
        tcp = h.tcp
        if _srtt(h) <= _srtt(fast) or tcp.in_recovery:
            continue
        cc = tcp.cc
        prior = cc.cwnd
        cc.cwnd = max(prior // 2, tcp.mss)
        if prior >= cc.ssthresh:  # not in slow start
            cc.ssthresh = max(cc.cwnd, 2 * tcp.mss)
        fast._penalised_at = now  # type: ignore[attr-defined]
        conn.ortx_penalties = getattr(conn, "ortx_penalties", 0) + 1
