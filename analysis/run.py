"""analyze_run: one experiment run directory in, metrics.json and figures out.

Layout (written by the experiment runner): RUN/metadata.json, RUN/events.json,
RUN/pcap/<stack>/<rep>/<host>-<intf>.pcap (or RUN/pcap/*.pcap), per-stack traffic JSON (events.json
in the one format of analysis.events: times in seconds from each run's t0_wall). Every
piece may be missing: no events means no failover figures, no metadata means no capacities (so no
aggregation benefit), a broken pcap is reported by name and skipped.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

import pandas as pd

from analysis import definitions as D
from analysis import events as EV
from analysis import metrics as M
from analysis import plots
from analysis.events import EventsFormatError, read_events
from analysis.frames import find_pcaps, load_many
from analysis.middlebox import capture_signals
from analysis.mptcp import annotate
from analysis.pcap import CaptureError

RESERVED_JSON = {"metadata.json", "events.json", "metrics.json"}


def read_json(path: Path, default):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def traffic_reports(run_dir: Path, stack: str, rep: str) -> list[dict]:
    """The traffic tool's reports of one (stack, repetition): RUN/traffic/<stack>/<rep>/*.json,
    as the experiment runner writes them (and links into each run's analysis view)."""
    d = run_dir / "traffic" / stack / rep
    return [r for p in sorted(d.glob("*.json")) if isinstance(r := read_json(p, None), dict)]


def epoch(v) -> float | None:
    """Seconds since the epoch from a number or an ISO 8601 string (metadata's start/end)."""
    if v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    try:
        return datetime.fromisoformat(str(v).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def group_pcaps(run_dir: Path) -> dict[tuple[str, str], list[Path]]:
    """Captures per (stack, repetition), from their place under RUN/pcap/."""
    base = run_dir / "pcap" if (run_dir / "pcap").is_dir() else run_dir
    groups: dict[tuple[str, str], list[Path]] = {}
    for p in find_pcaps(base):
        parts = p.relative_to(base).parts[:-1]
        stack = parts[0] if parts else "default"
        rep = "/".join(parts[1:]) if len(parts) > 1 else "0"
        groups.setdefault((stack, rep), []).append(p)
    return groups


def capacities_mbit(meta: dict) -> list[float] | None:
    """Per-path capacities from the run's parameters, if it says them (several spellings)."""
    params = meta.get("parameters") or {}
    for key in ("capacities_mbit", "rates_mbit", "capacity_mbit", "bw_mbit"):
        v = params.get(key)
        if isinstance(v, (list, tuple)) and v and all(isinstance(x, (int, float)) for x in v):
            return [float(x) for x in v]
    links = params.get("links") or {}
    caps = []
    for spec in links.values() if isinstance(links, dict) else links:
        if isinstance(spec, dict):
            for key in ("rate_mbit", "bw_mbit", "bw", "capacity_mbit"):
                if isinstance(spec.get(key), (int, float)):
                    caps.append(float(spec[key]))
                    break
    return caps or None


def paths_of(meta: dict) -> list[dict]:
    """The paths between the flow's hosts, [{"name", "links", "rate_mbit"}], from the run's
    parameters (the experiment runner writes them), for what survives a cut link."""
    paths = (meta.get("parameters") or {}).get("paths")
    return [p for p in paths if isinstance(p, dict)] if isinstance(paths, list) else []


def _mbit_to_bps(v: float | None) -> float | None:
    return None if v is None else v * 1e6


def _up_after(events: list[dict], down: dict) -> float | None:
    """When the cut link came back: the first "up" on it after the "down"."""
    ups = [
        e["time"]
        for e in events
        if e.get("action") == "up"
        and e.get("link") == down.get("link")
        and e["time"] > down["time"]
    ]
    return min(ups) if ups else None


def _conn_metrics(
    df: pd.DataFrame,
    conns: pd.DataFrame,
    c: int,
    events: list[dict],
    caps: list[float] | None,
    fig_dir: Path,
    tag: str,
    t0: float,
    warmup_s: float = 1.0,
    paths: list[dict] | None = None,
) -> tuple[dict, dict]:
    info = conns.iloc[c]
    v = M.vantage(df, c)
    idsn = info["client_idsn"] if v.sender_role == "client" else info["server_idsn"]
    idsn = None if idsn is None or (isinstance(idsn, float) and math.isnan(idsn)) else int(idsn)
    rx, acks = M.receiver_data(df, v), M.data_acks(df, v)
    labels = M.subflow_labels(df, v)
    comp = M.completion(df, v, idsn, info["kind"])
    # steady state: after the warm-up, up to the first link event (or the end)
    downs = [e for e in events if e.get("action") == "down"]
    s_end = min([e["time"] for e in events if e["time"] > t0 + warmup_s] + [comp.end])
    # (a transfer too short for a steady second after the warm-up has no steady goodput: the
    # benefit then uses the whole transfer's goodput)
    steady = M.steady_goodput(acks, t0 + warmup_s, s_end) if s_end - t0 - warmup_s >= 1.0 else None
    g_benefit = steady if steady is not None else comp.goodput_bps
    t_end = comp.end + 0.3  # a little after the last data-level progress
    g_conn = M.connection_goodput(acks[acks["time"] <= t_end], t0, t_end)
    g_sub = M.subflow_goodput(rx, t0, t_end)
    rel_events = [{**e, "t": e["time"] - t0} for e in events]
    figs = {
        "goodput": plots.goodput_plot(
            g_sub, g_conn, labels, rel_events, fig_dir / f"goodput-{tag}-c{c}.png", f"Goodput {tag}"
        ),
        "dsn": plots.dsn_plot(
            rx,
            labels,
            t0,
            rel_events,
            fig_dir / f"dsn-{tag}-c{c}.png",
            f"DSN vs time {tag}",
            tx=M.sender_dsn(df, v),  # what left the sender too, when both ends are captured
        ),
    }
    # from both ends' captures: one-way delays, bytes in flight, the sender's DSNs
    owd = M.one_way_delays(df, v)
    flight = M.in_flight(df, v, t0)
    if not owd.empty:
        figs["owd"] = plots.owd_plot(
            owd, labels, fig_dir / f"owd-{tag}-c{c}.png", f"One-way delay {tag}"
        )
    if not flight.empty:
        figs["inflight"] = plots.in_flight_plot(
            flight,
            labels,
            rel_events,
            fig_dir / f"inflight-{tag}-c{c}.png",
            f"Bytes in flight {tag}",
        )
    # network reordering (what the links did) apart from scheduling reordering (what the
    # multipath scheduler did); the reordering delay is the latter (analysis/definitions.py)
    split = M.reordering_split(rx, M.sender_data(df, v))
    new = split[split["new_data"]]
    delays = pd.DataFrame(
        {"time": new["time"], "subflow": new["subflow"], "delay_s": new["scheduling_s"]}
    )
    out = {
        "conn": c,
        "kind": info["kind"],
        "version": int(info["version"]),
        "client_token": None if pd.isna(info["client_token"]) else int(info["client_token"]),
        "server_token": None if pd.isna(info["server_token"]) else int(info["server_token"]),
        "sender_role": v.sender_role,
        "sender_host": v.sender_host,
        "receiver_host": v.receiver_host,
        "subflows": labels,
        "completion": M.to_jsonable(comp),
        "goodput_bps": comp.goodput_bps,
        "steady_goodput_bps": steady,
        # Kaspar's benefit on the steady goodput, and only for runs without link events (as the
        # experiment runner computes it): a failure is not an aggregation question
        "aggregation_benefit": (
            M.aggregation_benefit(g_benefit / 1e6, caps) if caps and not downs else None
        ),
        "capacities_mbit": caps,
        "failover": [
            M.to_jsonable(
                {
                    **M.to_jsonable(
                        M.failover(
                            rx,
                            acks,
                            e["time"],
                            capacity_bps=_mbit_to_bps(
                                D.surviving_capacity_mbit(paths, e.get("link"))
                            ),
                            up_time=_up_after(events, e),
                        )
                    ),
                    "link": e.get("link"),
                    "action": e.get("action"),
                    "at_s": e["time"] - t0,
                }
            )
            for e in events
            if e.get("action") == "down"
        ],
        "goodput_series": {  # 100 ms bins from t0, bits/s
            "bin_s": M.BIN_S,
            "t": g_conn["t"].round(3).tolist(),
            "connection_bps": g_conn["goodput_bps"].round(0).tolist(),
            "subflows_bps": {
                str(sf): g["goodput_bps"].round(0).tolist() for sf, g in g_sub.groupby("subflow")
            },
        },
        "reinjection": M.to_jsonable(M.reinjections(df, v)),
        "reinjection_quality": M.to_jsonable(M.reinjection_quality(df, v)),
        # both ends' clocks taken as one (namespaces share it; real machines: see metadata)
        "owd": M.owd_summary(owd, labels),
        "in_flight_series": {
            "bin_s": M.BIN_S,
            "subflows_bytes": {
                str(sf): {"t": g["t"].tolist(), "bytes": g["bytes"].astype(int).tolist()}
                for sf, g in flight.groupby("subflow")
            },
        },
        "mptcp_rtt": M.to_jsonable(M.mptcp_rtt(df, v)),
        "subflow_stats": M.to_jsonable(M.subflow_stats(df, v, labels).to_dict("records")),
        "reordering": M.reordering_summary(split),
    }
    return out, {"figures": figs, "delays": delays}


def analyze_run(run_dir: str | Path, figures: bool = True) -> dict:
    """Metrics for every (stack, repetition, connection) of a run; writes RUN/metrics.json and
    RUN/figures/*.png; returns what it wrote (paths as strings relative to the run)."""
    run_dir = Path(run_dir)
    meta = read_json(run_dir / "metadata.json", {})
    errors: list[str] = []
    try:
        events = read_events(run_dir / "events.json")
    except EventsFormatError as e:  # named in the report, the captures are still analysed
        errors.append(str(e))
        events = []
    caps = capacities_mbit(meta)
    warmup = float((meta.get("metrics") or {}).get("warmup_s", meta.get("warmup_s", 1.0)))
    fig_dir = run_dir / "figures"
    result: dict = {
        "run": str(run_dir),
        "metadata": meta,
        "events": events,
        "groups": [],
        "errors": errors,
        "figures": {},
        "traffic": {},
    }
    for p in sorted(run_dir.glob("*.json")):
        if p.name not in RESERVED_JSON and p.stat().st_size < 200_000:
            result["traffic"][p.name] = read_json(p, None)
    all_delays = []
    for (stack, rep), pcaps in sorted(group_pcaps(run_dir).items()):
        tag = f"{stack}-{rep}".replace("/", "_")
        good = []
        for p in pcaps:  # a broken capture is named and left out, the rest is analysed
            try:
                good.append((p, load_many([p])))
            except CaptureError as e:
                result["errors"].append(str(e))
        grp = {
            "stack": stack,
            "rep": rep,
            "pcaps": [str(p.relative_to(run_dir)) for p in pcaps],
            "connections": [],
        }
        result["groups"].append(grp)
        if not good:
            continue
        df, conns = annotate(load_many([p for p, _ in good]))
        # handshakes, joins, MP_FAIL, middlebox traces: what the connections met on the way
        grp["signals"] = capture_signals(df)
        if df.empty or conns.empty:
            continue
        t_first = float(df["time"].min())
        syn = df.loc[df["syn"], "time"]
        t0 = float(syn.min()) if len(syn) else t_first
        entry = EV.for_group(events, stack, rep)
        start = entry["t0_wall"] if entry else epoch(meta.get("start"))
        if start is not None and t_first - 60 <= start <= t0:
            t0 = start
        evs = EV.absolute(entry) if entry else []
        grp["t0"] = t0
        # both hosts' path-manager events (kernel: ip mptcp monitor; ours: --pm-events),
        # seconds from the run's start, as the runner put them in events.json
        grp["pm_events"] = list((entry or {}).get("pm_events") or [])
        # connections that matter: side connections (control channels) carry a few bytes
        volume = df[df["payload_len"] > 0].groupby("conn")["payload_len"].sum()
        grp["minor_connections"] = int((volume < 0.05 * volume.max()).sum()) if len(volume) else 0
        # the sending stack's own congestion windows (the traffic tool's reports, if the run
        # kept them as RUN/traffic/<stack>/<rep>/*.json), on the captures' time axis
        cwnd = M.stack_cwnd(traffic_reports(run_dir, stack, rep), t0)
        if not cwnd.empty:
            grp["cwnd_max_bytes"] = {
                f"{h} {sf}": int(b)
                for (h, sf), b in cwnd.groupby(["host", "subflow"])["bytes"].max().items()
            }
            p = plots.cwnd_plot(
                cwnd,
                [{**e, "t": e["time"] - t0} for e in evs],
                fig_dir / f"cwnd-{tag}.png",
                f"Congestion window per subflow {tag} (the sending stack's own figure)",
            )
            result["figures"][f"cwnd-{tag}"] = str(p.relative_to(run_dir))
        for c in range(len(conns)):
            if c not in volume.index or volume[c] < 0.05 * volume.max():
                continue
            out, extra = _conn_metrics(
                df, conns, c, evs, caps, fig_dir, tag, t0, warmup, paths_of(meta)
            )
            grp["connections"].append(out)
            for k, pth in extra["figures"].items():
                result["figures"][f"{k}-{tag}-c{c}"] = str(Path(pth).relative_to(run_dir))
            all_delays.append(extra["delays"].assign(group=f"{stack} rep {rep}"))
    if all_delays:
        p = plots.reordering_cdf(pd.concat(all_delays), fig_dir / "reordering-cdf.png")
        result["figures"]["reordering-cdf"] = str(p.relative_to(run_dir))
    fo = failover_table(result)
    if not fo.empty:
        p = plots.failover_plot(fo, fig_dir / "failover.png")
        result["figures"]["failover"] = str(p.relative_to(run_dir))
    (run_dir / "metrics.json").write_text(json.dumps(M.to_jsonable(result), indent=1))
    return result


def failover_table(result: dict) -> pd.DataFrame:
    """One row per (stack, rep, connection, down event) with the failover figures."""
    rows = []
    for g in result["groups"]:
        for c in g["connections"]:
            for f in c.get("failover", []):
                rows.append(
                    {
                        "stack": g["stack"],
                        "rep": g["rep"],
                        "conn": c["conn"],
                        "link": f.get("link"),
                        "gap_s": f.get("gap_s"),
                        "first_new_data_s": f.get("first_new_data_s"),
                        "regain90_s": f.get("regain90_s"),
                        "recovery_s": f.get("recovery_s"),
                        "efficiency": f.get("efficiency"),
                        "return_s": f.get("return_s"),
                        "up": f.get("up_time") is not None,
                    }
                )
    return pd.DataFrame(rows)
