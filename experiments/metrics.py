"""Headline metrics computed from the traffic tool's own reports (no pcap parsing needed).

The receiver samples its in-order byte count every 100 ms and records every pause longer than
50 ms; the kernel's per-subflow counters are sampled alongside. That is enough for goodput,
the failover gap and which path carried the data, so a run has its headline numbers even when
the pcap analysis (analysis/) is not run. Definitions: analysis/DEFINITIONS.md.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from analysis.definitions import (
    aggregation_benefit,
    failover_efficiency,
    recovery_time,
    surviving_capacity_mbit,
)
from experiments.apps import loads_around_events, outages


@dataclass
class FailoverMetrics:
    """What happened to the flow around one link-down event (times from the event)."""

    link: str
    event_t: float  # seconds after the receiver's start
    gap_s: float  # longest pause in in-order progress that starts within the window
    gap_start_t: float | None
    resume_after_s: float | None  # event -> end of that pause (in-order progress resumed)
    recovery_90pct_s: float | None  # first 500 ms window at >= 90% of pre-event goodput
    goodput_before_mbit: float
    goodput_after_mbit: float  # from 1 s after the event to the next event (or the end)
    subflow_bytes_after: dict[str, int] = field(default_factory=dict)  # per subflow, event+1s..
    cut_path_bytes_after: int | None = None  # subflows on the cut link (should be 0)
    other_paths_bytes_after: int | None = None  # subflows elsewhere (should carry on)
    # against what the surviving paths can carry (definitions shared with analysis/)
    surviving_capacity_mbit: float | None = None
    recovery_s: float | None = None  # event -> in-order goodput holds >= 90% of it for 1 s
    efficiency: float | None = None  # in-order bytes in the 3 s after / capacity x 3 s


@dataclass
class RunMetrics:
    label: str
    stack: str
    point: int
    point_values: dict[str, Any]
    rep: int
    ok: bool  # both ends finished without error
    intact: bool  # receiver's sha256 == sender's sha256 and byte counts equal
    bytes: int
    duration_s: float
    goodput_mbit: float  # whole transfer
    goodput_steady_mbit: float  # after the warm-up, up to the first event (or the end)
    max_subflows: int
    mptcp_fallback: bool | None
    subflow_bytes: dict[str, int]
    path_rates_mbit: dict[str, float]
    aggregation_benefit: float | None
    goodput_vs_sum_of_rates: float | None
    latency_ms_median: float | None
    failover: list[FailoverMetrics] = field(default_factory=list)
    background: list[dict[str, Any]] = field(default_factory=list)  # competing flows' goodput
    errors: list[str] = field(default_factory=list)
    # MPTCP counters per host that changed during the run (kernel stacks: nstat deltas in the
    # hosts' namespaces; userspace: each end's MIB), what the links' middleboxes did, and the
    # outcome in words (analysis.middlebox.outcome: fallback, join refused, MP_FAIL, ...)
    mptcp_counters: dict[str, dict[str, int]] = field(default_factory=dict)
    middlebox: dict[str, Any] = field(default_factory=dict)
    outcome: str = ""
    variant: str = ""  # the stack, or "<stack>-<value>" for a run of a stack.<stack>.<option> grid
    # the links as the run had them: topology file, each link's non-default fields with units
    # (LinkModel.conditions), and what the link emulators counted per link and direction
    # (packets, reordered, duplicated, ge_lost, random_lost, ...; Testbed.emulator_stats)
    topology: str = ""
    link_conditions: dict[str, dict[str, str]] = field(default_factory=dict)
    emulator: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # the kernel's knobs (experiments/knobs.py): the sysctls the experiment set in every host's
    # namespace, and per host the net.mptcp.* / net.ipv4.tcp_* values that differed from the
    # root namespace's (metadata.json kernel.sysctls) when the traffic started
    sysctls_set: dict[str, str] = field(default_factory=dict)
    sysctls: dict[str, dict[str, str]] = field(default_factory=dict)
    # kind = "app": each end's program (argv, exit code, where its output is) and the numbers
    # the flow's parser read from the client's output (experiments/apps.py), under "metrics"
    app: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rate_between(samples: list[list[float]], t_from: float, t_to: float) -> float:
    """Mbit/s of in-order progress between two times (samples: [t, cumulative bytes])."""
    inside = [s for s in samples if t_from <= s[0] <= t_to]
    if len(inside) < 2:
        return 0.0
    dt = inside[-1][0] - inside[0][0]
    return (inside[-1][1] - inside[0][1]) * 8 / 1e6 / dt if dt > 0 else 0.0


def _bytes_at(series: list[list[float]], t: float) -> float:
    """Cumulative count at time t (last sample at or before t; 0 before the first)."""
    best = 0.0
    for s in series:
        if s[0] <= t:
            best = s[1]
        else:
            break
    return best


def failover_metrics(
    receiver: dict[str, Any],
    event_t: float,
    link: str,
    next_t: float | None,
    window_s: float,
    link_addr: str | None = None,
    surviving_mbit: float | None = None,
) -> FailoverMetrics:
    """`link_addr` is the client's address on the cut link: subflows using it are "cut";
    `surviving_mbit` what the paths that avoid it can carry (for recovery and efficiency)."""
    samples = receiver.get("samples", [])
    end_t = samples[-1][0] if samples else event_t
    gaps = [
        g
        for g in receiver.get("gaps", [])
        if event_t - 1.0 <= g[0] + g[1] and g[0] <= event_t + window_s
    ]
    # A pause counts if it overlaps the event or starts within the window after it.
    best = max(gaps, key=lambda g: g[1], default=None)
    resume = round(best[0] + best[1] - event_t, 3) if best else None
    before = _rate_between(samples, max(0.0, event_t - 3.0), event_t)
    after_end = next_t if next_t is not None else end_t
    after = _rate_between(samples, event_t + 1.0, after_end)
    recovery = None
    t = event_t
    while before > 0 and t + 0.5 <= after_end:
        if _rate_between(samples, t, t + 0.5) >= 0.9 * before:
            recovery = round(t - event_t, 3)
            break
        t += 0.1
    sub_after: dict[str, int] = {}
    sub = receiver.get("subflow_samples", [])
    if sub:
        keys = {k for _, d in sub for k in d}
        for k in sorted(keys):
            series = [[t_, d[k]] for t_, d in sub if k in d]
            sub_after[k] = int(_bytes_at(series, after_end) - _bytes_at(series, event_t + 1.0))
    st, sl = [x[0] for x in samples], [x[1] for x in samples]
    cap = surviving_mbit * 1e6 if surviving_mbit is not None else None
    _, eff = failover_efficiency(st, sl, event_t, cap)
    cut = other = None
    if sub_after and link_addr:
        on_cut = [
            k for k in sub_after if any(end.rsplit(":", 1)[0] == link_addr for end in k.split("->"))
        ]
        cut = sum(sub_after[k] for k in on_cut)
        other = sum(v for k, v in sub_after.items() if k not in on_cut)
    return FailoverMetrics(
        link=link,
        event_t=round(event_t, 3),
        gap_s=round(best[1], 3) if best else 0.0,
        gap_start_t=round(best[0], 3) if best else None,
        resume_after_s=resume,
        recovery_90pct_s=recovery,
        goodput_before_mbit=round(before, 3),
        goodput_after_mbit=round(after, 3),
        subflow_bytes_after=sub_after,
        cut_path_bytes_after=cut,
        other_paths_bytes_after=other,
        surviving_capacity_mbit=surviving_mbit,
        recovery_s=recovery_time(st, sl, event_t, cap),
        efficiency=None if eff is None else round(eff, 4),
    )


def run_metrics(
    *,
    label: str,
    stack: str,
    point: int,
    point_values: dict[str, Any],
    rep: int,
    client: dict[str, Any],
    server: dict[str, Any],
    direction: str,
    events: list[dict[str, Any]],
    event_times: list[float],
    path_rates: dict[str, float],
    warmup_s: float,
    window_s: float,
    link_addrs: dict[str, str] | None = None,
    has_background: bool = False,
    path_links: dict[str, list[str]] | None = None,
    variant: str = "",
    event_walls: list[float] | None = None,
) -> RunMetrics:
    """Metrics for one run. `event_times` are the events' actual times on the receiver's clock
    (`event_walls`, the same on the wall clock, serve app flows: app_run_metrics)."""
    receiver, sender = (client, server) if direction == "download" else (server, client)
    errors = [f"{r.get('role')}: {r['error']}" for r in (client, server) if r.get("error")]
    intact = (
        bool(receiver.get("bytes_received"))
        and receiver.get("received_sha256") == sender.get("sent_sha256")
        and receiver.get("bytes_received") == sender.get("bytes_sent")
        and client.get("received_sha256") == server.get("sent_sha256")
        and server.get("received_sha256") == client.get("sent_sha256")
    )
    samples = receiver.get("samples", [])
    end_t = samples[-1][0] if samples else 0.0
    steady_end = min([t for t in event_times if t > warmup_s] + [end_t])
    steady = _rate_between(samples, warmup_s, steady_end) if steady_end > warmup_s else 0.0
    sub = receiver.get("subflow_samples", [])
    subflow_bytes = dict(sub[-1][1]) if sub else {}
    # Aggregation is measured against the paths' rates only when the flow is alone: with
    # competing flows (or a shared bottleneck) the sum of the path rates is not its capacity.
    caps = [r for r in path_rates.values() if r] if not has_background else []
    # one definition with the analysis (analysis.definitions): undefined with fewer than two
    # paths, without a steady window, or for a run with link events (not an aggregation question)
    has_steady = steady_end > warmup_s
    benefit = aggregation_benefit(steady, caps) if not events and has_steady else None
    latencies = client.get("latencies_ms") or []
    fails: list[FailoverMetrics] = []
    for i, (ev, t) in enumerate(zip(events, event_times, strict=True)):
        if ev["action"] != "down":
            continue
        later = [
            tt
            for e2, tt in zip(events[i + 1 :], event_times[i + 1 :], strict=True)
            if e2["link"] == ev["link"]
        ]
        fails.append(
            failover_metrics(
                receiver,
                t,
                ev["link"],
                later[0] if later else None,
                window_s,
                (link_addrs or {}).get(ev["link"]),
                surviving_capacity_mbit(
                    [
                        {"name": n, "links": (path_links or {}).get(n, [n]), "rate_mbit": r}
                        for n, r in path_rates.items()
                    ],
                    ev["link"],
                ),
            )
        )
    return RunMetrics(
        label=label,
        stack=stack,
        point=point,
        point_values=point_values,
        rep=rep,
        ok=not errors,
        intact=intact,
        bytes=int(receiver.get("bytes_received", 0)),
        duration_s=float(receiver.get("duration_s", 0.0)),
        goodput_mbit=float(receiver.get("goodput_mbit", 0.0)),
        goodput_steady_mbit=round(steady, 3),
        max_subflows=int(receiver.get("max_subflows", 0)),
        mptcp_fallback=receiver.get("mptcp_fallback"),
        subflow_bytes=subflow_bytes,
        path_rates_mbit=path_rates,
        aggregation_benefit=None if benefit is None else round(benefit, 4),
        goodput_vs_sum_of_rates=(
            round(steady / sum(caps), 4) if caps and not events and has_steady else None
        ),
        latency_ms_median=statistics.median(latencies) if latencies else None,
        failover=fails,
        errors=errors,
        variant=variant or stack,
    )


def bottleneck_share(
    steady_mbit: float | None, whole_mbit: float | None, background: list[dict[str, Any]]
) -> float | None:
    """The flow under test's share of a shared bottleneck: its goodput over its own and the
    competing flows' (analysis/DEFINITIONS.md), after the warm-up when every competitor's
    steady goodput was recorded (all flows past slow start), else over the whole transfers."""
    if steady_mbit is not None and background:
        others = [b.get("goodput_steady_mbit") for b in background]
        if all(o is not None for o in others):
            tot = steady_mbit + sum(others)  # type: ignore[arg-type]
            return steady_mbit / tot if tot else None
    tot = (whole_mbit or 0) + sum(b.get("goodput_mbit") or 0 for b in background)
    return whole_mbit / tot if tot and whole_mbit is not None else None


APP_SCALARS = (
    "goodput_mbit",
    "retransmits",
    "page_load_s",
    "page_load_max_s",
    "page_load_clean_s",
    "page_load_cut_s",
    "page_load_outage_s",
    "startup_delay_s",
    "rebuffer_s",
    "stalls",
    "mean_bitrate_kbit",
)


def app_run_metrics(
    *,
    label: str,
    stack: str,
    point: int,
    point_values: dict[str, Any],
    rep: int,
    client: dict[str, Any],
    server: dict[str, Any],
    direction: str,
    events: list[dict[str, Any]],
    event_times: list[float],
    path_rates: dict[str, float],
    warmup_s: float,
    window_s: float,
    variant: str = "",
    event_walls: list[float] | None = None,
    **_: Any,
) -> RunMetrics:
    """Metrics of a run of real programs: what the client's parser read (experiments/apps.py)
    and both exit codes. `intact` is the program's own word: it exited 0 and its parser found
    a complete result (every object of the page, an iperf3 report without error); `ok` also
    needs the server to have ended cleanly (exit 0, or stopped by us after its client)."""
    parsed = dict(client.get("parsed") or {})
    errors = [f"client: {parsed['error']}"] if parsed.get("error") else []
    if client.get("exit_code") != 0:
        errors.append(f"client exited {client.get('exit_code')}: {client.get('stderr_tail')}")
    # a server we stopped after its client ends by SIGTERM (-15, or 143 through a shell)
    if server.get("exit_code") not in (0, -15, 143, None):
        errors.append(f"server exited {server.get('exit_code')}: {server.get('stderr_tail')}")
    if "loads" in parsed:
        parsed.update(loads_around_events(parsed["loads"], outages(events, event_walls or [])))
    intact = client.get("exit_code") == 0 and not parsed.get("error")
    intact = intact and bool(parsed.get("complete", True))
    samples = parsed.get("samples") or []
    steady = 0.0
    if samples and samples[-1][0] > warmup_s:
        steady_end = min([t for t in event_times if t > warmup_s] + [samples[-1][0]])
        steady = _rate_between(samples, warmup_s, steady_end) if steady_end > warmup_s else 0.0
    subflows = [
        len((r.get("mptcp") or {}).get("subflows") or [])
        for r in client.get("proxy") or []
        if r.get("event") == "conn"
    ]
    fallback = [
        bool((r.get("mptcp") or {}).get("fallback"))
        for r in client.get("proxy") or []
        if r.get("event") == "conn" and r.get("mptcp")
    ]
    if fallback:  # a program opens many connections: say how many fell back
        parsed["fallback_connections"] = f"{sum(fallback)} of {len(fallback)}"
    metrics = {k: parsed[k] for k in APP_SCALARS if parsed.get(k) is not None}
    return RunMetrics(
        label=label,
        stack=stack,
        point=point,
        point_values=point_values,
        rep=rep,
        ok=not errors,
        intact=intact,
        bytes=int(parsed.get("bytes") or 0),
        duration_s=float(parsed.get("duration_s") or parsed.get("page_load_s") or 0.0),
        goodput_mbit=float(parsed.get("goodput_mbit") or 0.0),
        goodput_steady_mbit=round(steady, 3),
        max_subflows=max(subflows, default=0),
        mptcp_fallback=all(fallback) if fallback else None,  # a few fell back: parsed says
        subflow_bytes={},
        path_rates_mbit=path_rates,
        aggregation_benefit=None,
        goodput_vs_sum_of_rates=None,
        latency_ms_median=None,
        errors=errors,
        variant=variant or stack,
        app={
            "metrics": metrics,
            "client": {k: v for k, v in client.items() if k != "parsed"},
            "server": server,
            "parsed": {k: v for k, v in parsed.items() if k not in ("samples",)},
        },
    )


def kernel_app_subflows(client_counters: dict[str, int]) -> tuple[bool | None, int]:
    """Fallback and subflows per connection of a kernel MPTCP app run, from the client's
    counter deltas (a program's sockets are not ours to ask, and it may open many): MPTCP when
    the server answered MP_CAPABLE and none fell back; subflows = 1 + joins per connection
    (rounded: the mean over the program's connections)."""
    capable = client_counters.get("MPCapableSYNACKRX", 0)
    if not capable:
        return None, 0
    fell = client_counters.get("MPCapableFallbackSYNACK", 0) + client_counters.get(
        "MPCapableFallbackACK", 0
    )
    return fell >= capable, 1 + round(client_counters.get("MPJoinSynAckRx", 0) / capable)


def _stats(values: list[float]) -> dict[str, Any]:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    return {
        "n": len(vals),
        "mean": round(statistics.fmean(vals), 4),
        "std": round(statistics.stdev(vals), 4) if len(vals) > 1 else 0.0,
        "min": round(min(vals), 4),
        "max": round(max(vals), 4),
    }


def summarize(runs: list[RunMetrics]) -> list[dict[str, Any]]:
    """Mean and spread over repetitions, per grid point and stack."""
    groups: dict[tuple[int, str], list[RunMetrics]] = {}
    for r in runs:
        groups.setdefault((r.point, r.stack), []).append(r)
    out = []
    for (point, stack), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        row: dict[str, Any] = {
            "point": point,
            "point_values": rs[0].point_values,
            "stack": stack,
            "variant": rs[0].variant or stack,
            "repetitions": len(rs),
            "all_intact": all(r.intact for r in rs),
            "goodput_mbit": _stats([r.goodput_mbit for r in rs]),
            "goodput_steady_mbit": _stats([r.goodput_steady_mbit for r in rs]),
            "path_rates_mbit": rs[0].path_rates_mbit,
        }
        if any(r.aggregation_benefit is not None for r in rs):
            row["aggregation_benefit"] = _stats([r.aggregation_benefit for r in rs])
            row["goodput_vs_sum_of_rates"] = _stats([r.goodput_vs_sum_of_rates for r in rs])
        if any(r.failover for r in rs):
            row["failover_gap_s"] = _stats(
                [max(f.gap_s for f in r.failover) for r in rs if r.failover]
            )
            row["failover_recovery_s"] = _stats(
                [r.failover[0].recovery_s for r in rs if r.failover]
            )
            row["failover_efficiency"] = _stats(
                [r.failover[0].efficiency for r in rs if r.failover]
            )
            row["goodput_after_failure_mbit"] = _stats(
                [r.failover[0].goodput_after_mbit for r in rs if r.failover]
            )
        if any(r.background for r in rs):
            # Share of the bottleneck the flow under test took against the competing flows.
            shares = [
                bottleneck_share(r.goodput_steady_mbit, r.goodput_mbit, r.background) for r in rs
            ]
            row["main_share"] = _stats(shares)
            row["background_goodput_mbit"] = _stats(
                [sum(b.get("goodput_mbit") or 0 for b in r.background) for r in rs]
            )
        if any(r.latency_ms_median is not None for r in rs):
            row["latency_ms_median"] = _stats([r.latency_ms_median for r in rs])
        for k in APP_SCALARS:  # a real program's figures (kind = "app"), as its parser read them
            vals = [r.app.get("metrics", {}).get(k) for r in rs if r.app]
            if any(v is not None for v in vals):
                row[f"app_{k}"] = _stats(vals)
        out.append(row)
    return out
