"""Metrics a researcher would otherwise read off Wireshark by hand, as plain functions on the
annotated frame table (analysis.mptcp.annotate) returning dataclasses or DataFrames.

Definitions in analysis/DEFINITIONS.md: goodput from data-level progress at the receiver (100 ms
bins), aggregation benefit after Kaspar, failover gap around a link event, reinjected bytes as DSN
ranges sent on more than one subflow, reordering delay as time spent waiting for lower DSNs.
Times are absolute (epoch seconds, as in the pcap) unless a name ends in `_s` (a duration).
"""

from __future__ import annotations

import bisect
import heapq
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from analysis import definitions as D
from analysis.definitions import aggregation_benefit  # noqa: F401 - part of this API

BIN_S = 0.1


# ---- who sends, where to look ------------------------------------------------------------------


@dataclass(frozen=True)
class Vantage:
    """Which MPTCP role sent the bulk of a connection's data, and which capture host is closest to
    the sender and to the receiver (Mininet hosts share one clock, so we can tell by who saw the
    same segment first)."""

    conn: int
    sender_role: str
    sender_host: str
    receiver_host: str


def vantage(df: pd.DataFrame, conn: int) -> Vantage:
    c = df[(df["conn"] == conn) & (df["payload_len"] > 0)]
    if c.empty:
        h = str(df["host"].iloc[0]) if len(df) else ""
        return Vantage(conn, "client", h, h)
    by_role = c.groupby("role", observed=True)["payload_len"].sum()
    role = str(by_role.idxmax())
    data = c[c["role"] == role]
    hosts = [str(h) for h in data["host"].unique()]
    if len(hosts) < 2:
        return Vantage(conn, role, hosts[0], hosts[0])
    first = data.groupby(["host", "subflow", "seq"], observed=True)["time"].min().unstack(0)
    first = first.dropna()
    if first.empty:  # the hosts' captures share no segment: cannot tell, use the first host
        return Vantage(conn, role, hosts[0], hosts[0])
    med = {h: float(np.median(first[h] - first.mean(axis=1))) for h in first.columns}
    order = sorted(med, key=med.get)
    return Vantage(conn, role, str(order[0]), str(order[-1]))


def receiver_data(df: pd.DataFrame, v: Vantage) -> pd.DataFrame:
    """Data segments of the main direction as they arrived at the receiver, in time order."""
    m = (df["conn"] == v.conn) & (df["role"] == v.sender_role) & (df["payload_len"] > 0)
    m &= (df["host"] == v.receiver_host) & df["dsn"].notna()
    cols = ["time", "subflow", "intf", "dsn", "payload_len", "seq"]
    out = df.loc[m, cols + [c for c in ("ts_val",) if c in df]].copy()
    out["dsn"] = out["dsn"].astype("uint64")
    return out.sort_values("time", kind="stable")


def sender_data(df: pd.DataFrame, v: Vantage) -> pd.DataFrame:
    """Data segments of the main direction as the sender's capture saw them leave (time
    order); empty when only one end was captured (then there is no telling a retransmission)."""
    if v.sender_host == v.receiver_host:
        return pd.DataFrame({"time": [], "subflow": [], "seq": [], "ts_val": []})
    m = (df["conn"] == v.conn) & (df["role"] == v.sender_role) & (df["payload_len"] > 0)
    m &= df["host"] == v.sender_host
    cols = ["time", "subflow", "seq"] + [c for c in ("ts_val",) if c in df]
    return df.loc[m, cols].sort_values("time", kind="stable")


def sender_dsn(df: pd.DataFrame, v: Vantage) -> pd.DataFrame:
    """Data segments of the main direction with their DSN as the sender's capture saw them
    leave (for the DSN-vs-time picture from both ends); empty with one end captured."""
    if v.sender_host == v.receiver_host:
        return pd.DataFrame({"time": [], "subflow": [], "dsn": []})
    m = (df["conn"] == v.conn) & (df["role"] == v.sender_role) & (df["payload_len"] > 0)
    m &= (df["host"] == v.sender_host) & df["dsn"].notna()
    out = df.loc[m, ["time", "subflow", "dsn"]].copy()
    out["dsn"] = out["dsn"].astype("uint64")
    return out.sort_values("time", kind="stable")


def data_acks(df: pd.DataFrame, v: Vantage) -> pd.DataFrame:
    """DATA_ACKs the receiver sent for the main direction, as captured at the receiver."""
    m = (df["conn"] == v.conn) & (df["role"] != v.sender_role) & df["data_ack"].notna()
    m &= df["host"] == v.receiver_host
    out = df.loc[m, ["time", "subflow", "data_ack"]].copy()
    out["data_ack"] = out["data_ack"].astype("uint64")
    return out.sort_values("time", kind="stable")


def subflow_labels(df: pd.DataFrame, v: Vantage) -> dict[int, str]:
    """Readable subflow names: 'sf1 eth1 10.0.2.1:42783>10.0.2.2:5201' (sender > receiver)."""
    d = df[(df["conn"] == v.conn) & (df["role"] == v.sender_role) & (df["host"] == v.receiver_host)]
    out = {}
    for sf, g in d.groupby("subflow"):
        r = g.iloc[0]
        out[int(sf)] = f"sf{int(sf)} {r['intf']} {r['src']}:{r['sport']}>{r['dst']}:{r['dport']}"
    return out


# ---- goodput ----------------------------------------------------------------------------------


def _bins(t: np.ndarray, t0: float, t_end: float, bin_s: float) -> np.ndarray:
    return np.arange(t0, t_end + bin_s, bin_s)


def ack_level(acks: pd.DataFrame) -> np.ndarray:
    """The data ACK level over the ACKs (monotone), in bytes above the lowest one: float64
    holds that exactly, unlike 64-bit DSNs themselves."""
    a = acks["data_ack"].to_numpy().astype(np.uint64)
    return np.maximum.accumulate((a - a.min()).astype(np.float64))


def connection_goodput(
    acks: pd.DataFrame, t0: float, t_end: float | None = None, bin_s: float = BIN_S
) -> pd.DataFrame:
    """Goodput per bin from data-level ACK progress (mptcptrace -G): bits/s, t relative to t0."""
    if acks.empty:
        return pd.DataFrame({"t": [], "goodput_bps": []})
    t = acks["time"].to_numpy()
    level = ack_level(acks)
    t_end = float(t.max()) if t_end is None else t_end
    edges = _bins(t, t0, t_end, bin_s)
    # the ACK level at each bin edge: last ACK at or before the edge
    k = np.searchsorted(t, edges, side="right") - 1
    lvl = np.where(k >= 0, level[np.maximum(k, 0)], level[0])
    delta = np.diff(lvl)
    return pd.DataFrame({"t": edges[:-1] - t0, "goodput_bps": delta * 8 / bin_s})


class IntervalSet:
    """Sorted disjoint [start, end) intervals: how much of a range is covered, and add one.
    In-order data keeps it to a handful of intervals (only holes make it grow)."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def _span(self, s: int, e: int) -> tuple[int, int]:
        return bisect.bisect_right(self.ends, s - 1), bisect.bisect_left(self.starts, e + 1)

    def overlap(self, s: int, e: int) -> int:
        lo, hi = self._span(s, e)
        return sum(max(0, min(e, self.ends[k]) - max(s, self.starts[k])) for k in range(lo, hi))

    def add(self, s: int, e: int) -> None:
        lo, hi = self._span(s, e)
        if lo < hi:  # merge with the intervals it touches
            s, e = min(s, self.starts[lo]), max(e, self.ends[hi - 1])
        self.starts[lo:hi] = [s]
        self.ends[lo:hi] = [e]


def new_bytes(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """For [start, end) ranges in arrival order: how many of each range's bytes had not arrived
    before, byte-exact even when a copy is cut differently (a reinjection on another subflow)."""
    seen = IntervalSet()
    out = np.zeros(len(starts), dtype=np.int64)
    for i, (s, e) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        if e > s:
            out[i] = (e - s) - seen.overlap(s, e)
            seen.add(s, e)
    return out


def first_seen(rx: pd.DataFrame) -> pd.DataFrame:
    """Receiver data segments that brought DSN bytes not seen before, with `new_bytes`."""
    if rx.empty:
        return rx.assign(new_bytes=np.zeros(0, dtype=np.int64))
    dsn = rx["dsn"].astype("uint64").to_numpy()
    s = (dsn - dsn.min()).astype(np.int64)
    nb = new_bytes(s, s + rx["payload_len"].to_numpy().astype(np.int64))
    out = rx.assign(new_bytes=nb)
    return out[nb > 0]


def subflow_goodput(
    rx: pd.DataFrame, t0: float, t_end: float | None = None, bin_s: float = BIN_S
) -> pd.DataFrame:
    """Bytes of first-seen DSNs per bin, by the subflow that carried them: long table
    (t, subflow, goodput_bps), every subflow present in every bin."""
    fs = first_seen(rx)
    if fs.empty:
        return pd.DataFrame({"t": [], "subflow": [], "goodput_bps": []})
    t_end = float(fs["time"].max()) if t_end is None else t_end
    edges = _bins(fs["time"].to_numpy(), t0, t_end, bin_s)
    b = np.clip(np.searchsorted(edges, fs["time"].to_numpy(), side="right") - 1, 0, len(edges) - 2)
    tab = (
        pd.DataFrame(
            {"bin": b, "subflow": fs["subflow"].to_numpy(), "bytes": fs["new_bytes"].to_numpy()}
        )
        .pivot_table(index="bin", columns="subflow", values="bytes", aggfunc="sum", fill_value=0)
        .reindex(range(len(edges) - 1), fill_value=0)
    )
    long = tab.stack().rename("bytes").reset_index()
    long["t"] = edges[long["bin"].to_numpy()] - t0
    long["goodput_bps"] = long["bytes"] * 8 / bin_s
    return long[["t", "subflow", "goodput_bps"]]


def steady_goodput(acks: pd.DataFrame, start: float, end: float) -> float | None:
    """Data-level goodput (bits/s) between two times: the DATA_ACK level at each (last ACK at or
    before it). Used after a warm-up and before any link event, as the experiment runner does."""
    if acks.empty or end <= start:
        return None
    t = acks["time"].to_numpy()
    lvl = ack_level(acks)
    k0, k1 = np.searchsorted(t, [start, end], side="right") - 1
    if k1 < 0:
        return None
    a0 = lvl[k0] if k0 >= 0 else lvl[0]
    return float((lvl[k1] - a0) * 8 / (end - start))


# ---- aggregation benefit ------------------------------------------------------------------------


# (one definition for the runner and the analysis: analysis.definitions)


# ---- completion ---------------------------------------------------------------------------------


@dataclass
class Completion:
    """From the connection's first SYN to the last data-level progress at the receiver."""

    conn: int
    start: float
    end: float
    duration_s: float
    bytes: int
    goodput_bps: float


def completion(df: pd.DataFrame, v: Vantage, idsn: int | None, kind: str = "mptcp") -> Completion:
    c = df[df["conn"] == v.conn]
    start = float(c.loc[c["syn"], "time"].min()) if c["syn"].any() else float(c["time"].min())
    acks = data_acks(df, v)
    rx = receiver_data(df, v)
    if not acks.empty:
        top = int(acks["data_ack"].max())
        end = float(acks.loc[acks["data_ack"] == top, "time"].iloc[0])
        nbytes = top - (idsn + 1) if idsn is not None else int(first_seen(rx)["new_bytes"].sum())
        fin_col = c["dss_fin"].fillna(False).astype(bool) if kind == "mptcp" else c["fin"]
        fin = c[(c["role"] == v.sender_role) & fin_col]
        if idsn is not None and not fin.empty:
            nbytes -= 1  # DATA_FIN takes one DSN
    else:
        end = float(rx["time"].max()) if not rx.empty else start
        nbytes = int(first_seen(rx)["new_bytes"].sum())
    dur = max(end - start, 1e-9)
    return Completion(v.conn, start, end, end - start, int(nbytes), nbytes * 8 / dur)


# ---- failover -----------------------------------------------------------------------------------


@dataclass
class Failover:
    """What a link event did to data-level progress at the receiver."""

    event_time: float
    gap_s: float | None  # longest pause in data-level progress around the event
    gap_start: float | None
    gap_end: float | None
    # event -> first new DSN on a surviving subflow once progress had stopped; None when it
    # did not stop (progress_stopped False: there is no "first" new data to wait for)
    first_new_data_s: float | None
    regain90_s: float | None  # event -> goodput back at 90% of the pre-failure level
    pre_goodput_bps: float | None
    surviving_subflows: list[int] = field(default_factory=list)
    resumed: bool = True  # False: no data-level progress after the event within the capture
    # what the surviving paths can carry, and how the connection compared (analysis.definitions)
    surviving_capacity_bps: float | None = None
    recovery_s: float | None = None  # event -> goodput holds >= 90% of that for 1 s
    delivered_3s_bytes: int | None = None  # in-order bytes in the 3 s after the event
    efficiency: float | None = None  # ... over capacity x 3 s
    # the path's return ("up" on the same link): when a subflow that carried nothing during
    # the outage delivers new data again (None: never within the capture, or no "up")
    up_time: float | None = None
    return_s: float | None = None
    return_bytes: int | None = None
    # whether in-order progress stopped at the event: the gap began within `stop_within_s`
    # of it (or progress never resumed). A longer pause seconds later (the path's return, a
    # loss) is still the gap, but it is not the event's stop
    progress_stopped: bool = True


def failover(
    rx: pd.DataFrame,
    acks: pd.DataFrame,
    event_time: float,
    window_s: float = 1.0,
    horizon_s: float = 10.0,
    bin_s: float = BIN_S,
    capacity_bps: float | None = None,
    up_time: float | None = None,
    stop_within_s: float = 1.0,
) -> Failover:
    """Gap, time to first new data, time to regain 90% of pre-failure goodput (see REFERENCE);
    with `capacity_bps` (what the surviving paths can carry) the recovery time and failover
    efficiency, with `up_time` (the path's return) the time until it carries data again.

    "First new data" is given only when progress stopped at the event (the gap began within
    `stop_within_s` after it, or progress never resumed): for a connection that carried on
    through the cut, the first data above the pre-event high once "progress had stopped" would
    be measured from an unrelated later pause (6-9 s for our stack in the failover demo, whose
    longest pause came as the path returned)."""
    if acks.empty or rx.empty:
        return Failover(
            event_time, None, None, None, None, None, None, [], True, capacity_bps, up_time=up_time
        )
    t = acks["time"].to_numpy()
    lvl = ack_level(acks)
    prog = t[np.r_[True, np.diff(lvl) > 0]]  # times where the data ACK moved forward
    gap = gs = ge = None
    resumed = bool((prog > event_time).any())
    if len(prog) >= 2:
        # pauses that end after the event and start before event + horizon (a stall longer
        # than the horizon still counts in full)
        starts, ends = prog[:-1], prog[1:]
        ok = (ends > event_time) & (starts <= event_time + horizon_s)
        ok &= ends >= event_time - window_s
        if ok.any():
            d = np.where(ok, ends - starts, -1)
            i = int(np.argmax(d))
            gap, gs, ge = float(d[i]), float(starts[i]), float(ends[i])
    if not resumed and len(prog):  # stalled until the capture ended
        gs, ge = float(prog[-1]), float(max(t[-1], rx["time"].max()))
        gap = ge - gs
    # surviving subflows: those still delivering data after the gap
    after = rx[rx["time"] > (ge if ge is not None else event_time)]
    surviving = sorted(int(s) for s in after["subflow"].unique()) if resumed else []
    before = rx[rx["time"] <= event_time]
    high = (
        int((before["dsn"].astype("uint64") + before["payload_len"].astype("uint64")).max())
        if not before.empty
        else 0
    )
    # new data: above everything delivered before the event, arriving once progress had
    # stopped (segments already past the cut when it happened do not count)
    since = max(event_time, gs) if gs is not None and gs < event_time + horizon_s else event_time
    new = rx[(rx["time"] > since) & rx["subflow"].isin(surviving)]
    new = new[new["dsn"].astype("uint64") + new["payload_len"].astype("uint64") > high]
    first_new = float(new["time"].iloc[0] - event_time) if not new.empty else None
    stopped = not resumed or (gs is not None and gs <= event_time + stop_within_s)
    if not stopped:
        first_new = None
    # goodput before the event and the first time a 0.5 s window (its mean and its median bin)
    # is back at 90% of it
    t0 = max(float(t[0]), event_time - window_s)
    g = connection_goodput(acks, t0, float(t[-1]), bin_s)
    pre = g[g["t"] + t0 < event_time - 1e-9]["goodput_bps"]
    pre_bps = float(pre.mean()) if len(pre) else None
    regain = None
    if pre_bps:
        # windows after the drop: from the start of the pause (the in-flight data delivered
        # just after the event is not a recovery)
        after = max(event_time, gs) if gs is not None else event_time
        post = g[g["t"] + t0 + bin_s > after]
        # the window's mean and its median bin: data held out of order behind a hole and
        # released at once when the hole is filled is one huge bin, a backlog and not a rate
        win = post["goodput_bps"].rolling(5, min_periods=5)
        back = (win.mean().to_numpy() >= 0.9 * pre_bps) & (win.median().to_numpy() >= 0.9 * pre_bps)
        hit = post[back]
        if not hit.empty:
            regain = float(hit["t"].iloc[0] + t0 + bin_s - event_time)
    tl, ll = t.tolist(), lvl.tolist()
    end = float(max(t[-1], rx["time"].max()))
    recovery = D.recovery_time(tl, ll, event_time, capacity_bps, end, ge if stopped else None)
    got, eff = D.failover_efficiency(tl, ll, event_time, capacity_bps)
    ret = ret_bytes = None
    if up_time is not None:
        fs = first_seen(rx)
        arrivals = list(
            zip(fs["time"].tolist(), fs["subflow"].tolist(), fs["new_bytes"].tolist(), strict=True)
        )
        ret, _, ret_bytes = D.path_return(arrivals, event_time, up_time)
    return Failover(
        event_time,
        gap,
        gs,
        ge,
        first_new,
        regain,
        pre_bps,
        surviving,
        resumed,
        capacity_bps,
        recovery,
        got,
        eff,
        up_time,
        ret,
        ret_bytes,
        stopped,
    )


# ---- reinjection, retransmissions, RTT ------------------------------------------------------------


@dataclass
class Reinjection:
    """DSN ranges sent on more than one subflow (extra copies, in bytes), seen at the sender."""

    bytes: int
    by_subflow: dict[int, int]
    total_data_bytes: int


def reinjections(df: pd.DataFrame, v: Vantage) -> Reinjection:
    """Bytes sent on a subflow after another subflow had already sent them (in capture order at
    the sender), per subflow that carried the extra copy; retransmissions on the same subflow
    are not reinjections."""
    m = (df["conn"] == v.conn) & (df["role"] == v.sender_role) & (df["payload_len"] > 0)
    m &= (df["host"] == v.sender_host) & df["dsn"].notna()
    cols = ["subflow", "dsn", "payload_len"] + (["time"] if "time" in df else [])
    d = df.loc[m, cols]
    if "time" in d:
        d = d.sort_values("time", kind="stable")
    if d.empty:
        return Reinjection(0, {}, 0)
    dsn = d["dsn"].astype("uint64").to_numpy()
    s = (dsn - dsn.min()).astype(np.int64)
    e = s + d["payload_len"].to_numpy().astype(np.int64)
    sf = d["subflow"].to_numpy()
    every, own = IntervalSet(), {int(x): IntervalSet() for x in np.unique(sf)}
    by = dict.fromkeys(own, 0)
    for x, a, b in zip(sf.tolist(), s.tolist(), e.tolist(), strict=True):
        by[x] += every.overlap(a, b) - own[x].overlap(a, b)  # sent before, elsewhere only
        every.add(a, b)
        own[x].add(a, b)
    total = sum(b - a for a, b in zip(every.starts, every.ends, strict=True))
    return Reinjection(int(sum(by.values())), {k: int(v) for k, v in by.items()}, int(total))


def subflow_stats(
    df: pd.DataFrame, v: Vantage, labels: dict[int, str] | None = None
) -> pd.DataFrame:
    """Per subflow at the sender: segments, bytes, retransmitted segments/bytes (a segment that
    ends at or below what that subflow had already sent), RTT (data -> first covering ACK, Karn)."""
    rows = []
    m = (df["conn"] == v.conn) & (df["host"] == v.sender_host)
    for sf, g in df[m].groupby("subflow"):
        data = g[(g["role"] == v.sender_role) & (g["payload_len"] > 0)].sort_values("time")
        acks = g[(g["role"] != v.sender_role) & g["ack_flag"]].sort_values("time")
        if data.empty:
            continue
        isn = int(data["seq"].iloc[0])
        rel = (data["seq"].to_numpy().astype(np.int64) - isn) % (1 << 32)
        end = rel + data["payload_len"].to_numpy()
        prev_high = np.r_[-1, np.maximum.accumulate(end)[:-1]]
        retx = end <= prev_high
        rtts = np.array([])
        if not acks.empty:
            arel = (acks["ack"].to_numpy().astype(np.int64) - isn) % (1 << 32)
            arel = np.where(arel > (1 << 31), 0, arel)
            alvl = np.maximum.accumulate(arel)
            at = acks["time"].to_numpy()
            dt = data["time"].to_numpy()
            # first ACK after the segment whose level covers its end
            k = np.searchsorted(at, dt, side="right")
            ok = ~retx & (k < len(at))
            kk = np.minimum(k, len(at) - 1)
            # the ACK level is monotone in time: the ACKs covering a segment's end form a suffix,
            # so the first covering ACK after the segment is the later of the two starts
            j = np.maximum(kk, np.searchsorted(alvl, end, side="left"))
            ok &= j < len(at)
            rtts = at[np.minimum(j, len(at) - 1)][ok] - dt[ok]
        rows.append(
            {
                "subflow": int(sf),
                "label": (labels or {}).get(int(sf), f"sf{int(sf)}"),
                "segments": len(data),
                "bytes": int(data["payload_len"].sum()),
                "retrans_segments": int(retx.sum()),
                "retrans_bytes": int(data["payload_len"].to_numpy()[retx].sum()),
                "rtt_ms_median": float(np.median(rtts) * 1e3) if len(rtts) else None,
                "rtt_ms_p95": float(np.percentile(rtts, 95) * 1e3) if len(rtts) else None,
                "rtt_samples": len(rtts),
            }
        )
    return pd.DataFrame(rows)


# ---- reordering ---------------------------------------------------------------------------------


def subflow_seq(rx: pd.DataFrame) -> np.ndarray:
    """Each segment's TCP sequence number relative to its subflow's first arrival, unwrapped
    (arrival order; a segment arriving below the first one is negative)."""
    out = np.zeros(len(rx), dtype=np.int64)
    seq = rx["seq"].to_numpy().astype(np.int64)
    sf = rx["subflow"].to_numpy()
    for s in np.unique(sf):
        rows = np.flatnonzero(sf == s)
        step = (np.diff(seq[rows]) + (1 << 31)) % (1 << 32) - (1 << 31)
        out[rows] = np.r_[0, np.cumsum(step)]
    return out


def _retransmitted(rx: pd.DataFrame, tx: pd.DataFrame | None) -> np.ndarray:
    """Receiver segments that are a later copy of what the sender had sent before on the same
    subflow (the same sequence number sent twice, and this copy's TCP timestamp is not the
    first one's). Without the sender's capture or timestamps: all False."""
    no = np.zeros(len(rx), dtype=bool)
    if tx is None or tx.empty or "ts_val" not in tx or "ts_val" not in rx:
        return no
    g = tx.groupby(["subflow", "seq"], observed=True)["ts_val"]
    sent = pd.DataFrame({"copies": g.size(), "first_ts": g.first()})
    k = pd.MultiIndex.from_arrays([rx["subflow"], rx["seq"]])
    copies = sent["copies"].reindex(k).to_numpy()
    first_ts = sent["first_ts"].reindex(k).to_numpy(dtype=float, na_value=np.nan)
    ts = pd.to_numeric(rx["ts_val"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    ok = ~np.isnan(ts) & ~np.isnan(first_ts)
    return np.where(ok, (np.nan_to_num(copies) > 1) & (ts != first_ts), False).astype(bool)


def reordering_split(rx: pd.DataFrame, tx: pd.DataFrame | None = None) -> pd.DataFrame:
    """Network reordering told apart from scheduling reordering (analysis/definitions.py), per
    receiver data segment (`rx`, arrival order; `tx` the sender's data segments, to tell loss
    repairs from reordering):

    - new_subflow / new_data: it brought bytes new to its subflow / to the connection (DSN)
    - network_reordered: arrived below its subflow's highest sequence so far, not a repair
    - loss_repair: the same, but a retransmission (a loss, not a reordering)
    - scheduling_reordered: in order within its subflow, below the connection's highest DSN
    - network_s: wait in its subflow's out-of-order queue (NaN if not new to the subflow)
    - total_s: head-of-line wait at the data level (NaN: not new data, or never unblocked)
    - scheduling_s: total_s - network_s, the wait in the data-level out-of-order queue
    """
    n = len(rx)
    cols = {
        "time": rx["time"].to_numpy() if n else np.zeros(0),
        "subflow": rx["subflow"].to_numpy() if n else np.zeros(0, dtype=int),
    }
    new_sf = np.zeros(n, dtype=bool)
    late_sf = np.zeros(n, dtype=bool)
    net_s = np.full(n, np.nan)
    if n:
        t = rx["time"].to_numpy()
        plen = rx["payload_len"].to_numpy().astype(np.int64)
        rel = subflow_seq(rx)
        sf = rx["subflow"].to_numpy()
        for s in np.unique(sf):
            rows = np.flatnonzero(sf == s)
            nb = new_bytes(rel[rows], rel[rows] + plen[rows])
            rows = rows[nb > 0]
            new_sf[rows] = True
            st, en = rel[rows].tolist(), (rel[rows] + plen[rows]).tolist()
            late_sf[rows] = D.late_arrivals(st, en)
            w = D.hol_waits(t[rows].tolist(), st, en)
            net_s[rows] = [np.nan if x is None else x for x in w]
        dsn = rx["dsn"].astype("uint64").to_numpy()
        d0 = (dsn - dsn.min()).astype(np.int64)
        d1 = d0 + plen
        new_data = new_bytes(d0, d1) > 0
        rows = np.flatnonzero(new_data)
        total = np.full(n, np.nan)
        w = D.hol_waits(t[rows].tolist(), d0[rows].tolist(), d1[rows].tolist())
        total[rows] = [np.nan if x is None else x for x in w]
        late_dsn = np.zeros(n, dtype=bool)
        late_dsn[rows] = D.late_arrivals(d0[rows].tolist(), d1[rows].tolist())
    else:
        new_data = late_dsn = np.zeros(0, dtype=bool)
        total = np.zeros(0)
    repair = _retransmitted(rx, tx) if n else np.zeros(0, dtype=bool)
    sched = total - np.where(np.isnan(net_s), 0.0, net_s)
    return pd.DataFrame(
        {
            **cols,
            "new_subflow": new_sf,
            "new_data": new_data,
            "network_reordered": new_sf & late_sf & ~repair,
            "loss_repair": new_sf & late_sf & repair,
            "scheduling_reordered": new_data & late_dsn & ~(new_sf & late_sf),
            "network_s": net_s,
            "total_s": total,
            "scheduling_s": np.clip(sched, 0.0, None),
        }
    )


def reordering_summary(split: pd.DataFrame) -> dict:
    """The split in numbers: counts and shares of each kind, and the waits. The reordering
    delay (median/p95/max_ms) is the scheduling wait: what the multipath scheduler caused."""

    def ms(x: pd.Series, q: float | None) -> float | None:
        x = x.dropna()
        if x.empty:
            return None
        return float((x.max() if q is None else x.quantile(q)) * 1e3)

    data = split[split["new_data"]]
    sub = split[split["new_subflow"]]
    n, nsub = len(data), len(sub)
    net, rep = int(split["network_reordered"].sum()), int(split["loss_repair"].sum())
    sched = int(split["scheduling_reordered"].sum())
    return {
        "segments": n,
        "unresolved": int(data["total_s"].isna().sum()),
        "waits": "scheduling (data-level out-of-order queue); network_* the subflows' own",
        "median_ms": ms(data["scheduling_s"], 0.5),
        "p95_ms": ms(data["scheduling_s"], 0.95),
        "max_ms": ms(data["scheduling_s"], None),
        "scheduling_reordered": sched,
        "scheduling_reordered_pct": 100 * sched / n if n else None,
        "network_reordered": net,
        "network_reordered_pct": 100 * net / nsub if nsub else None,
        "loss_repairs": rep,
        "network_p95_ms": ms(sub["network_s"], 0.95),
        "network_max_ms": ms(sub["network_s"], None),
        "total_p95_ms": ms(data["total_s"], 0.95),
    }


def reordering_delay(rx: pd.DataFrame) -> pd.DataFrame:
    """Per first-seen segment at the receiver: time waiting until every lower DSN had arrived
    (head-of-line blocking). 0 for segments that arrived in order."""
    fs = first_seen(rx)
    if fs.empty:
        return pd.DataFrame({"time": [], "subflow": [], "delay_s": []})
    t = fs["time"].to_numpy()
    s = fs["dsn"].astype("uint64").to_numpy()
    base = s.min()
    s = (s - base).astype(np.int64)
    e = s + fs["payload_len"].to_numpy()
    delay = np.zeros(len(fs))
    nxt = 0
    pend: list[tuple[int, int, int]] = []
    for i in range(len(fs)):
        if s[i] <= nxt:
            nxt = max(nxt, int(e[i]))
            while pend and pend[0][0] <= nxt:
                st, en, j = heapq.heappop(pend)
                delay[j] = t[i] - t[j]
                nxt = max(nxt, en)
        else:
            heapq.heappush(pend, (int(s[i]), int(e[i]), i))
    for _, _, j in pend:  # never unblocked within the capture
        delay[j] = np.nan
    return pd.DataFrame({"time": t, "subflow": fs["subflow"].to_numpy(), "delay_s": delay})


def to_jsonable(obj):
    """Dataclasses and numpy scalars into plain JSON values."""
    if hasattr(obj, "__dataclass_fields__"):
        obj = asdict(obj)
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


@dataclass
class MptcpRtt:
    """MPTCP-level RTT (mptcptrace -r): a mapping's first transmission until a DATA_ACK covers
    its end, seen at the sender; includes reordering waits and reinjections, unlike subflow RTT."""

    samples: int
    median_ms: float | None
    p95_ms: float | None


def mptcp_rtt(df: pd.DataFrame, v: Vantage) -> MptcpRtt:
    at_sender = (df["conn"] == v.conn) & (df["host"] == v.sender_host)
    maps = df[
        at_sender
        & (df["role"] == v.sender_role)
        & df["dss_dsn"].notna()
        & (df["dss_dll"].fillna(0) > 0)
    ]
    acks = df[at_sender & (df["role"] != v.sender_role) & df["data_ack"].notna()]
    if maps.empty or acks.empty:
        return MptcpRtt(0, None, None)
    # each mapping once (its first transmission); its absolute end from that segment's DSN:
    # segment DSN + (mapping's subflow end - segment's relative subflow seq)
    first = maps.sort_values("time", kind="stable").drop_duplicates(["subflow", "dss_ssn"])
    first = first[first["dsn"].notna() & first["rel_seq"].notna()]
    if first.empty:
        return MptcpRtt(0, None, None)
    left = (
        first["dss_ssn"].to_numpy(dtype=np.int64)
        + first["dss_dll"].to_numpy(dtype=np.int64)
        - first["rel_seq"].to_numpy(dtype=np.int64)
    )
    end = first["dsn"].astype("uint64").to_numpy() + left.astype(np.uint64)
    ok = left > 0
    acks = acks.sort_values("time", kind="stable")
    at = acks["time"].to_numpy()
    lvl = np.maximum.accumulate(acks["data_ack"].astype("uint64").to_numpy())
    t = first["time"].to_numpy()
    k = np.searchsorted(at, t, side="right")
    j = np.maximum(k, np.searchsorted(lvl, end, side="left"))
    ok &= j < len(at)
    rtt = at[np.minimum(j, len(at) - 1)][ok] - t[ok]
    if len(rtt) == 0:
        return MptcpRtt(0, None, None)
    return MptcpRtt(len(rtt), float(np.median(rtt) * 1e3), float(np.percentile(rtt, 95) * 1e3))


# ---- from both ends: one-way delay, reinjection qualification, bytes in flight -----------------

OWD_PERCENTILES = (50, 95, 99)


def one_way_delays(df: pd.DataFrame, v: Vantage) -> pd.DataFrame:
    """Each segment of the connection seen at both ends' captures, with its one-way delay: the
    receiver's sighting minus the sender's (data, sender -> receiver), and the sender's minus
    the receiver's for what the receiver sends back ("ack"). A segment is matched by subflow,
    sequence and acknowledgment numbers, length and TCP timestamp where captured, and only
    when that key occurs once at each end (a retransmission or a repeated duplicate ACK is
    ambiguous, so left out). Needs both ends captured; the clocks are taken as one (Mininet
    hosts share the kernel's; ``clock_offset_s`` of the run's metadata says otherwise on real
    machines). Columns: time (sent), subflow, direction, delay_s."""
    cols = ["time", "subflow", "direction", "delay_s"]
    if v.sender_host == v.receiver_host:
        return pd.DataFrame({c: [] for c in cols})
    c = df[df["conn"] == v.conn]
    key = ["subflow", "seq", "ack", "payload_len"] + [k for k in ("ts_val",) if k in c]
    out = []
    for direction, role, src, dst in (
        ("data", v.sender_role, v.sender_host, v.receiver_host),
        ("ack", None, v.receiver_host, v.sender_host),
    ):
        m = c["role"] == role if role is not None else c["role"] != v.sender_role
        if direction == "ack":
            m &= c["payload_len"] == 0
        d = c[m]
        a, b = d[d["host"] == src], d[d["host"] == dst]
        a = a.drop_duplicates(key, keep=False)[key + ["time"]]
        b = b.drop_duplicates(key, keep=False)[key + ["time"]]
        j = a.merge(b, on=key, suffixes=("_tx", "_rx"))
        out.append(
            pd.DataFrame(
                {
                    "time": j["time_tx"].to_numpy(),
                    "subflow": j["subflow"].to_numpy(),
                    "direction": direction,
                    "delay_s": (j["time_rx"] - j["time_tx"]).to_numpy(),
                }
            )
        )
    return pd.concat(out, ignore_index=True).sort_values("time", kind="stable")


def owd_summary(owd: pd.DataFrame, labels: dict[int, str] | None = None) -> list[dict]:
    """Per subflow and direction: segments matched, min, percentiles and max of the one-way
    delay in milliseconds."""
    rows = []
    for (sf, direction), g in owd.groupby(["subflow", "direction"], sort=True):
        ms = g["delay_s"].to_numpy() * 1e3
        rows.append(
            {
                "subflow": int(sf),
                "label": (labels or {}).get(int(sf), f"sf{int(sf)}"),
                "direction": direction,
                "n": len(ms),
                "min_ms": float(ms.min()),
                **{f"p{p}_ms": float(np.percentile(ms, p)) for p in OWD_PERCENTILES},
                "max_ms": float(ms.max()),
            }
        )
    return rows


@dataclass
class ReinjectionQuality:
    """Each reinjected segment (a DSN range sent on a subflow after another had sent it) by
    what became of it at the receiver: ``useful`` (this copy arrived first: the first copy was
    lost or later), ``wasted`` (a copy on another subflow had already arrived), ``lost`` (this
    copy never arrived). For useful ones, how much earlier than the first copy it arrived
    (``advance_s``; the first copy never arriving is not counted there)."""

    segments: int = 0
    useful_bytes: int = 0
    wasted_bytes: int = 0
    lost_bytes: int = 0
    useful_first_lost: int = 0  # useful segments whose first copy never arrived
    advance_s: dict[str, float | None] = field(default_factory=dict)  # median, max
    by_subflow: dict[int, dict[str, int]] = field(default_factory=dict)


def reinjection_quality(df: pd.DataFrame, v: Vantage) -> ReinjectionQuality:
    """Qualifies the reinjections seen at the sender's capture against the receiver's (both
    ends captured; otherwise an empty result): a segment is a reinjection when its first DSN
    was sent before on another subflow; its copy at the receiver is found by subflow and
    sequence number, the other copies by DSN range on any other subflow."""
    q = ReinjectionQuality()
    if v.sender_host == v.receiver_host:
        return q
    m = (df["conn"] == v.conn) & (df["role"] == v.sender_role) & (df["payload_len"] > 0)
    m &= df["dsn"].notna()
    tx = df[m & (df["host"] == v.sender_host)].sort_values("time", kind="stable")
    rx = df[m & (df["host"] == v.receiver_host)].sort_values("time", kind="stable")
    if tx.empty:
        return q
    first_sf: dict[int, int] = {}
    reinj = []
    for t, sf, dsn, n, seq in zip(
        tx["time"].tolist(),
        tx["subflow"].tolist(),
        tx["dsn"].astype("uint64").tolist(),
        tx["payload_len"].tolist(),
        tx["seq"].tolist(),
        strict=True,
    ):
        f = first_sf.setdefault(dsn, sf)
        if f != sf:
            reinj.append((t, int(sf), int(dsn), int(n), int(seq)))
    if not reinj:
        return q
    # receiver copies: the first arrival per (subflow, seq), and per DSN range
    arr = rx.groupby(["subflow", "seq"], observed=True)["time"].min()
    base = np.uint64(min(int(tx["dsn"].min()), int(rx["dsn"].min()) if len(rx) else 2**64 - 1))
    # DSNs relative to the smallest (64-bit values lose their low bits as floats)
    r_start = (rx["dsn"].astype("uint64").to_numpy() - base).astype(np.int64)
    r_end = r_start + rx["payload_len"].to_numpy().astype(np.int64)
    r_sf = rx["subflow"].to_numpy()
    r_t = rx["time"].to_numpy()
    order = np.argsort(r_start, kind="stable")
    r_start, r_end, r_sf, r_t = r_start[order], r_end[order], r_sf[order], r_t[order]
    span = int((r_end - r_start).max()) if len(r_start) else 0
    advances: list[float] = []
    for _t, sf, dsn_abs, n, seq in reinj:
        dsn = dsn_abs - int(base)
        mine = arr.get((sf, seq))
        lo = np.searchsorted(r_start, dsn - span, side="left")
        hi = np.searchsorted(r_start, dsn, side="right")
        cand = [r_t[i] for i in range(lo, hi) if r_sf[i] != sf and r_start[i] <= dsn < r_end[i]]
        other = min(cand) if cand else None
        per = q.by_subflow.setdefault(sf, {"useful": 0, "wasted": 0, "lost": 0})
        q.segments += 1
        if mine is None:
            kind = "lost"
        elif other is not None and other <= mine:
            kind = "wasted"
        else:
            kind = "useful"
            if other is None:
                q.useful_first_lost += 1
            else:
                advances.append(float(other - mine))
        setattr(q, f"{kind}_bytes", getattr(q, f"{kind}_bytes") + n)
        per[kind] += n
    q.advance_s = {
        "median": float(np.median(advances)) if advances else None,
        "max": float(max(advances)) if advances else None,
    }
    return q


def in_flight(df: pd.DataFrame, v: Vantage, t0: float, bin_s: float = BIN_S) -> pd.DataFrame:
    """Bytes in flight per subflow over time at the sender, from its capture: the highest
    sequence sent minus the highest acknowledgment come back, sampled at every segment either
    way, the largest value of each bin. From the receiver's capture when the sender's is
    missing (what is in flight there is then only bounded from below). Columns: t (bin
    start, from t0), subflow, bytes."""
    host = v.sender_host
    c = df[(df["conn"] == v.conn) & (df["host"] == host)]
    rows = []
    for sf, g in c.groupby("subflow", observed=True):
        g = g.sort_values("time", kind="stable")
        sent = (g["role"] == v.sender_role).to_numpy() & (g["payload_len"].to_numpy() > 0)
        if not sent.any():
            continue
        seq = g["seq"].to_numpy().astype(np.int64)
        ack = g["ack"].to_numpy().astype(np.int64)
        base = int(seq[sent][0])
        rel_end = ((seq - base) % (1 << 32)) + g["payload_len"].to_numpy()
        rel_ack = (ack - base) % (1 << 32)
        back = ~((g["role"] == v.sender_role).to_numpy()) & ((g["flags"].to_numpy() & 0x10) > 0)
        # (a wrap of the 32-bit space is unwrapped against the last value: within 2 GB)
        snd_max = np.maximum.accumulate(np.where(sent, rel_end, 0))
        una = np.maximum.accumulate(np.where(back & (rel_ack < (1 << 31)), rel_ack, 0))
        fl = np.maximum(snd_max - una, 0)
        t = g["time"].to_numpy() - t0
        b = np.floor(t / bin_s).astype(np.int64)
        s = pd.Series(fl).groupby(b).max()
        t_bin = np.round(s.index.to_numpy() * bin_s, 6)
        rows.append(pd.DataFrame({"t": t_bin, "subflow": int(sf), "bytes": s.values}))
    if not rows:
        return pd.DataFrame({"t": [], "subflow": [], "bytes": []})
    return pd.concat(rows, ignore_index=True)


def stack_cwnd(reports: list[dict], t0: float) -> pd.DataFrame:
    """Congestion window per subflow over time as the sending stack itself reported it: the
    traffic tool's 100 ms ``cwnd_samples`` (our stack: its TCP's cwnd; kernel MPTCP: tcp_info's
    snd_cwnd x snd_mss), beside the in-flight bytes the captures show (`in_flight`): a window
    far above what is in flight means the sender was limited by something else (the scheduler,
    the data-level window, the application). Only ends that sent data report it. Columns: t
    (seconds from t0, the capture's origin; the report's ``start_wall`` aligns the two clocks,
    which Mininet hosts share), host, subflow ("laddr:port->raddr:port"), bytes."""
    rows = []
    for rep in reports:
        start = rep.get("start_wall")
        if not isinstance(start, int | float) or not start:
            continue
        for t, by_sf in rep.get("cwnd_samples") or []:
            for sf, cwnd in by_sf.items():
                rows.append((round(float(start) + float(t) - t0, 4), rep.get("role", ""), sf, cwnd))
    return pd.DataFrame(rows, columns=["t", "host", "subflow", "bytes"])
