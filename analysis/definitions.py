"""Metric definitions shared by the experiment runner (on its traffic tool's 100 ms samples) and
the analysis (on captures): plain Python, no pandas, so both compute the same thing.

Each definition, with the publication it comes from, is in analysis/DEFINITIONS.md; the failover
figures below answer what a reader comparing stacks needs after a path is cut. A
"progress" series is the receiver's in-order byte count over time: sorted times and a
non-decreasing cumulative level (the DATA_ACK level at the receiver, or the traffic tool's
in-order byte samples).
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Sequence

RECOVERY_SHARE = 0.9  # of what the surviving paths can carry
RECOVERY_HOLD_S = 1.0  # ... held for this long
RECOVERY_WINDOW_S = 0.5  # in windows this long (ACK bursts average out)
RECOVERY_STEP_S = 0.01  # resolution of the recovery time
EFFICIENCY_S = 3.0  # failover efficiency: the first seconds after the event


def aggregation_benefit(goodput: float | None, capacities: Sequence[float | None]) -> float | None:
    """Kaspar's aggregation benefit (analysis/DEFINITIONS.md), with g the goodput and C_i the paths'
    capacities (same unit), C_max the largest:
    (g - C_max) / (sum C_i - C_max) if g >= C_max, else (g - C_max) / C_max.

    1 = perfect aggregation, 0 = as good as the best single path, -1 = nothing delivered.
    Not clamped: above 1 means more goodput than the stated capacities add up to (they are
    understated). None when it is undefined: goodput unknown, or fewer than two paths with a
    capacity (a single path has nothing to aggregate; paths of capacity 0 or None do not count).
    """
    caps = [float(c) for c in capacities if c is not None and c > 0]
    if goodput is None or (isinstance(goodput, float) and math.isnan(goodput)) or len(caps) < 2:
        return None
    if goodput < 0:
        raise ValueError(f"goodput must be >= 0, got {goodput}")
    c_max = max(caps)
    if goodput >= c_max:
        return (goodput - c_max) / (sum(caps) - c_max)
    return (goodput - c_max) / c_max


def level_at(times: Sequence[float], levels: Sequence[float], t: float) -> float:
    """The progress level at time t: the last sample at or before t (the first before it)."""
    k = bisect.bisect_right(times, t) - 1
    return levels[max(k, 0)]


def recovery_time(
    times: Sequence[float],
    levels: Sequence[float],
    event_t: float,
    capacity_bps: float | None,
    end_t: float | None = None,
    resumed_t: float | None = None,
) -> float | None:
    """Seconds from the event until in-order goodput holds at >= 90% of `capacity_bps` (what
    the surviving paths can carry) for at least 1 s: the first moment t >= event (10 ms steps)
    at which progress is moving (the level rose within the 100 ms before t) and from which every
    500 ms window starting in [t, t + 0.5 s] (together they cover [t, t + 1 s]) delivers at
    least 90% of capacity x 0.5 s. None when that does not happen before `end_t` (the end of
    the series by default) or the capacity is unknown. With `resumed_t` (the end of the pause
    the event caused) the search starts there: what was in flight before the cut, delivered
    just after it, is no recovery when progress then stopped."""
    if not capacity_bps or not times:
        return None
    end_t = times[-1] if end_t is None else end_t
    start_t = max(event_t, resumed_t) if resumed_t is not None else event_t
    need = RECOVERY_SHARE * capacity_bps / 8 * RECOVERY_WINDOW_S
    starts = round(RECOVERY_HOLD_S / 0.1 - RECOVERY_WINDOW_S / 0.1) + 1  # windows per hold
    n = int((end_t - RECOVERY_HOLD_S - start_t) / RECOVERY_STEP_S + 1e-9) + 1
    for i in range(max(n, 0)):
        t = start_t + i * RECOVERY_STEP_S
        if level_at(times, levels, t) <= level_at(times, levels, t - 0.1):
            continue  # stalled: a burst of backlog after a stall is not a recovered rate
        ok = True
        for k in range(starts):
            v = t + k * 0.1
            if level_at(times, levels, v + RECOVERY_WINDOW_S) - level_at(times, levels, v) < need:
                ok = False
                break
        if ok:
            return round(t - event_t, 3)
    return None


def failover_efficiency(
    times: Sequence[float],
    levels: Sequence[float],
    event_t: float,
    capacity_bps: float | None,
    span_s: float = EFFICIENCY_S,
) -> tuple[int, float | None]:
    """In-order bytes delivered in the 3 s after the event, and their share of what the
    surviving paths could have carried in that time (capacity x 3 s); None without a capacity."""
    if not times:
        return 0, None
    got = int(level_at(times, levels, event_t + span_s) - level_at(times, levels, event_t))
    if not capacity_bps:
        return got, None
    return got, got / (capacity_bps / 8 * span_s)


def path_return(
    arrivals: Sequence[tuple[float, int, int]],
    down_t: float,
    up_t: float,
    settle_s: float = 0.5,
) -> tuple[float | None, list[int], int]:
    """After a path comes back: seconds from the "up" event until a subflow that carried no new
    data during the outage (from down + 0.5 s, once data in flight has arrived, to the "up")
    delivers new data again, i.e. the returning path (or a new subflow on it) is used again.
    `arrivals`: (time, subflow, new bytes) at the receiver. Returns (seconds or None = never
    within the capture, the outage's subflows, new bytes the returning subflows carried after
    the up event)."""
    during = sorted({sf for t, sf, b in arrivals if down_t + settle_s < t <= up_t and b > 0})
    back = [(t, b) for t, sf, b in arrivals if t > up_t and b > 0 and sf not in during]
    if not back:
        return None, during, 0
    return round(min(t for t, _ in back) - up_t, 3), during, int(sum(b for _, b in back))


def surviving_capacity_mbit(paths: Sequence[dict], link: str | None) -> float | None:
    """What the paths that do not cross the cut link can carry: the sum of their configured
    rates (`paths`: [{"name", "links": [...], "rate_mbit"}]). None when a rate is unknown."""
    if not paths or link is None:
        return None
    left = [p for p in paths if link not in (p.get("links") or [p.get("name")])]
    if any(not isinstance(p.get("rate_mbit"), (int, float)) for p in left):
        return None
    return float(sum(p["rate_mbit"] for p in left))


# ---- reordering: what the network did vs what multipath scheduling did ---------------------
#
# A multipath receiver reassembles twice: each subflow puts its own segments back in TCP
# sequence order (its out-of-order queue), then the data level puts the subflows' in-order
# streams back in data sequence (DSN) order. The two waits have different causes:
#
# - network reordering: a segment arrives below the highest sequence number its own subflow had
#   delivered (RFC 4737's "reordered", per subflow): the link reordered it (the emulator's
#   reorder_pct / jitter_reorders), or it repairs a loss (a retransmission, told apart with the
#   sender's capture: `loss_repair`). Its wait, `network_s`: from its arrival until every lower
#   byte of its subflow had arrived (time in the subflow's out-of-order queue).
# - scheduling reordering: a segment that arrived in order within its subflow but below the
#   highest DSN the connection had received (RFC 4737 at the data level): the scheduler sent
#   lower data on a slower path. Its wait, `scheduling_s`: from the moment its subflow could
#   hand it up (arrival + network_s) until every lower DSN had arrived: time in the data-level
#   out-of-order queue. A loss on *another* subflow lands here too: the data level waits for it,
#   as the stack's data-level queue does.
#
# total wait = network_s + scheduling_s (the head-of-line wait at the data level: every lower
# DSN of a subflow is a lower subflow sequence number there). Single-path TCP has scheduling
# 0 by construction (its DSN is its sequence number); a clean multipath run has network ~0.
# The reordering-delay metric is `scheduling_s` (what the scheduler comparisons are about).


def hol_waits(
    times: Sequence[float], starts: Sequence[int], ends: Sequence[int]
) -> list[float | None]:
    """Byte ranges [start, end) in arrival order (each bringing new bytes): how long each
    waited from its arrival until every byte below it (down to the lowest start) had arrived.
    0 for a range that arrived in order, None if a hole below it never filled in the capture."""
    out: list[float | None] = [0.0] * len(times)
    if not times:
        return out
    nxt = min(starts)
    pend: list[tuple[int, int, int]] = []
    for i, (t, s, e) in enumerate(zip(times, starts, ends, strict=True)):
        if s <= nxt:
            nxt = max(nxt, e)
            while pend and pend[0][0] <= nxt:
                _, en, j = heapq.heappop(pend)
                out[j] = t - times[j]
                nxt = max(nxt, en)
        else:
            heapq.heappush(pend, (s, e, i))
    for _, _, j in pend:
        out[j] = None
    return out


def late_arrivals(starts: Sequence[int], ends: Sequence[int]) -> list[bool]:
    """RFC 4737's reordered: a range that starts below the highest end seen before it."""
    high = None
    out = []
    for s, e in zip(starts, ends, strict=True):
        out.append(high is not None and s < high)
        high = e if high is None else max(high, e)
    return out
