"""What a run's MPTCP connections met on the way, from the captures and from the counters.

`capture_signals(frames)` reads the segments of every capture point of a run (analysis.frames:
one row per TCP segment, every option decoded) and says, without any counter:

- each initial handshake: "mptcp" (the SYN/ACK echoed MP_CAPABLE), "fallback" (a SYN with
  MP_CAPABLE answered by a SYN/ACK without it), "unanswered";
- each MP_JOIN: "accepted" (SYN/ACK with MP_JOIN), "refused" (a SYN/ACK without MP_JOIN, or a
  RST), "unanswered";
- MP_FAIL, MP_TCPRST, MP_FASTCLOSE and infinite mappings (a DSS mapping of length 0) seen,
  and data segments without any MPTCP option on a subflow that began as MPTCP (what a
  fallback in mid-connection looks like);
- what a middlebox did to a SYN between two capture points (the same SYN: same TCP timestamp
  and destination port, seen on the client and on the server): "source translated" (NAT),
  "sequence rewritten", "MPTCP option removed".

`outcome(...)` turns the counters (Linux's MPTcpExt names, which our stack's MIB uses too),
the fallback flag, the subflow count and the integrity check into the few words a table shows:
"MPTCP, 2 subflows", "fallback to TCP", "join refused", "MP_FAIL", "stalled", "DATA CORRUPTED"...
"""

from __future__ import annotations

from typing import Any

import pandas as pd


def _tuple(r) -> tuple[str, int, str, int]:
    return (str(r.src), int(r.sport), str(r.dst), int(r.dport))


def _rev(t: tuple[str, int, str, int]) -> tuple[str, int, str, int]:
    return (t[2], t[3], t[0], t[1])


def capture_signals(df: pd.DataFrame) -> dict[str, Any]:
    """Handshakes, joins, MPTCP error signals and middlebox traces in a run's segments."""
    out: dict[str, Any] = {
        "handshakes": {},
        "joins": {},
        "mp_fail": 0,
        "mp_rst": 0,
        "fastclose": 0,
        "infinite_mappings": 0,
        "data_without_mptcp": 0,
        "middlebox_traces": [],
    }
    if df.empty:
        return out
    syn = df[df["syn"] & ~df["ack_flag"]]
    synack = df[df["syn"] & df["ack_flag"]]
    answers: dict[tuple, list] = {}
    for r in synack.itertuples(index=False):
        answers.setdefault(_tuple(r), []).append(r)
    rsts: set[tuple] = {_tuple(r) for r in df[df["rst"]].itertuples(index=False)}
    hs: dict[str, int] = {}
    joins: dict[str, int] = {}
    seen: set[tuple] = set()
    mptcp_tuples: set[tuple] = set()  # subflows whose MP_CAPABLE handshake succeeded
    for r in syn.itertuples(index=False):
        t = _tuple(r)
        # a retransmitted SYN, or the same SYN at another capture point (same TSval and port,
        # whatever a NAT or a sequence rewriter did to it)
        same = (int(r.ts_val), int(r.dport)) if pd.notna(r.ts_val) else t
        if t in seen or same in seen:
            continue
        mpc, join = pd.notna(r.mpc_version), pd.notna(r.join_token)
        if not (mpc or join):
            continue
        seen.update((t, same))
        ans = answers.get(_rev(t), [])
        if mpc:
            if any(pd.notna(a.mpc_version) for a in ans):
                what = "mptcp"
                mptcp_tuples.update((t, _rev(t)))
            elif ans:
                what = "fallback"
            else:
                what = "unanswered"
            hs[what] = hs.get(what, 0) + 1
        else:
            if any(pd.notna(a.join_hmac64) for a in ans):
                what = "accepted"
            elif ans or _rev(t) in rsts:
                what = "refused"
            else:
                what = "unanswered"
            joins[what] = joins.get(what, 0) + 1
    out["handshakes"], out["joins"] = hs, joins
    # after a fallback in mid-connection, a subflow's data segments carry no MPTCP option
    data = df[(df["payload_len"] > 0) & df["mp_subtypes"].isna()]
    out["data_without_mptcp"] = sum(
        1
        for r in data[["src", "sport", "dst", "dport"]].itertuples(index=False)
        if (str(r.src), int(r.sport), str(r.dst), int(r.dport)) in mptcp_tuples
    )
    out["mp_fail"] = int(df["fail_dsn"].notna().sum())
    out["mp_rst"] = int(df["tcprst_reason"].notna().sum())
    out["fastclose"] = int(df["fastclose_key"].notna().sum())
    out["infinite_mappings"] = int((df["dss_dll"].notna() & (df["dss_dll"] == 0)).sum())
    out["middlebox_traces"] = _syn_traces(syn)
    return out


def _syn_traces(syn: pd.DataFrame) -> list[str]:
    """The same SYN seen at two capture points (host differs; same TSval and destination port),
    compared: what changed between them."""
    if "host" not in syn or syn.empty:
        return []
    traces: set[str] = set()
    keyed = syn[syn["ts_val"].notna()]
    for _, g in keyed.groupby(["ts_val", "dport"], sort=False):
        if g["host"].nunique() < 2:
            continue
        if g["src"].astype(str).nunique() > 1:
            traces.add("source translated")
        if g["seq"].nunique() > 1:
            traces.add("sequence rewritten")
        mp = g["mpc_version"].notna() | g["join_token"].notna()
        if mp.any() and not mp.all():
            traces.add("MPTCP option removed")
    return sorted(traces)


def signals_words(sig: dict[str, Any]) -> str:
    """A capture's signals in a few words, for a table cell."""
    parts = []
    hs = sig.get("handshakes") or {}
    if hs:
        parts.append("handshake " + ", ".join(f"{v} {k}" for k, v in sorted(hs.items())))
    js = sig.get("joins") or {}
    if js:
        parts.append("joins " + ", ".join(f"{v} {k}" for k, v in sorted(js.items())))
    for key, label in (
        ("mp_fail", "MP_FAIL"),
        ("infinite_mappings", "infinite mapping"),
        ("mp_rst", "MP_TCPRST"),
        ("fastclose", "MP_FASTCLOSE"),
        ("data_without_mptcp", "data segments without MPTCP option on an MPTCP subflow"),
    ):
        if sig.get(key):
            parts.append(f"{label} ×{sig[key]}")
    if sig.get("middlebox_traces"):
        parts.append("on the way: " + ", ".join(sig["middlebox_traces"]))
    return "; ".join(parts) or "no MPTCP option seen"


# Counters (Linux's MPTcpExt names without the prefix; our MIB uses the same) that name an
# outcome, in the order a table cell lists them.
OUTCOME_COUNTERS = (
    ("MPCapableFallbackSYNACK", "fallback to TCP (SYN/ACK without MP_CAPABLE)"),
    ("MPCapableFallbackACK", "fallback to TCP (third ACK without MP_CAPABLE)"),
    ("DSSCorruptionFallback", "fallback on DSS corruption"),
    ("DssFallback", "fallback (data without mapping)"),
    ("MPCapableDataFallback", "fallback (data without mapping)"),
    ("DataCsumErr", "DSS checksum error"),
    ("MPFailTx", "MP_FAIL sent"),
    ("MPFailRx", "MP_FAIL received"),
    ("InfiniteMapTx", "infinite mapping sent"),
    ("DSSNotMatching", "mapping contradicted"),
    ("DSSNoMatchTCP", "mapping and TCP disagree"),
)


def outcome(
    *,
    counters: dict[str, dict[str, int]],
    fallback: bool | None,
    subflows: int,
    finished: bool,
    intact: bool,
) -> str:
    """A run's outcome in words. counters: per host, counter deltas (MPTcpExt prefix or not)."""
    total: dict[str, int] = {}
    for per_host in counters.values():
        for k, v in per_host.items():
            k = k.removeprefix("MPTcpExt")
            total[k] = total.get(k, 0) + v
    words = []
    for name, label in OUTCOME_COUNTERS:
        if total.get(name) and label not in words:
            words.append(label)
    join_tx = total.get("MPJoinSynTx", 0)
    join_ok = total.get("MPJoinSynAckRx", 0)
    if join_tx > join_ok:
        words.append(f"join refused ({join_tx - join_ok} of {join_tx})")
    if fallback and not any(w.startswith("fallback") for w in words):
        words.append("fallback to TCP")
    if not words:
        words.append(f"MPTCP, {subflows} subflows" if fallback is False else "not MPTCP")
    if not finished:
        words.append("STALLED")
    elif not intact:
        words.append("DATA CORRUPTED")
    else:
        words.append("intact")
    return "; ".join(words)
