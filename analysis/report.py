"""Self-contained HTML reports (figures embedded as base64 PNG) with metrics.json beside them.

`write_report(dir)`: a run directory gets a run report; a directory of runs gets a campaign report
comparing stacks and repetitions (mean with 95% confidence interval) and, when the runs sweep two
parameters, an aggregation-benefit heatmap. Both open with what ran, where and with which versions.
"""

from __future__ import annotations

import base64
import html
import json
import math
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from analysis import events as EV
from analysis import plots
from analysis.frames import find_pcaps
from analysis.metrics import to_jsonable
from analysis.middlebox import signals_words
from analysis.run import analyze_run, epoch, failover_table, read_json

# two-sided 95% Student t quantiles by degrees of freedom (no scipy in the venv)
_T95 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    12: 2.179,
    15: 2.131,
    20: 2.086,
    25: 2.060,
    30: 2.042,
}


def mean_ci(values) -> tuple[float | None, float | None, int]:
    """Mean and half-width of its 95% confidence interval (Student t), and n."""
    v = [float(x) for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    n = len(v)
    if n == 0:
        return None, None, 0
    m = sum(v) / n
    if n == 1:
        return m, None, 1
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (n - 1))
    t = _T95.get(n - 1) or next((q for d, q in sorted(_T95.items()) if d >= n - 1), 1.96)
    return m, t * sd / math.sqrt(n), n


SUMMARY_METRICS = [  # (column, label, scale, unit)
    ("goodput_mbps", "goodput", 1, "Mbit/s"),
    ("steady_mbps", "steady goodput", 1, "Mbit/s"),
    ("duration_s", "completion time", 1, "s"),
    ("benefit", "aggregation benefit", 1, ""),
    ("gap_s", "failover gap", 1, "s"),
    ("first_new_data_s", "event to first new data", 1, "s"),
    ("recovery_s", "recovery time", 1, "s"),
    ("efficiency", "failover efficiency", 100, "%"),
    ("return_s", "path return", 1, "s"),
    ("reinjected_bytes", "reinjected", 1e-3, "kB"),
    ("retrans_bytes", "retransmitted", 1e-3, "kB"),
    ("reorder_p95_ms", "reordering delay (scheduling) p95", 1, "ms"),
    ("sched_reordered_pct", "scheduling reordered", 1, "%"),
    ("network_reordered_pct", "network reordered", 1, "%"),
    ("network_wait_p95_ms", "network reordering wait p95", 1, "ms"),
    ("mptcp_rtt_ms", "MPTCP-level RTT median", 1, "ms"),
]


def run_rows(result: dict, run_name: str = "") -> pd.DataFrame:
    """One row per (stack, rep, connection) with the headline numbers of a run."""
    rows = []
    for g in result["groups"]:
        for c in g["connections"]:
            fo = (c.get("failover") or [{}])[0]
            stats = c.get("subflow_stats") or []
            rows.append(
                {
                    "run": run_name,
                    "stack": g["stack"],
                    "rep": g["rep"],
                    "conn": c["conn"],
                    "goodput_mbps": c["goodput_bps"] / 1e6 if c.get("goodput_bps") else None,
                    "steady_mbps": (
                        c["steady_goodput_bps"] / 1e6
                        if c.get("steady_goodput_bps") is not None
                        else None
                    ),
                    "duration_s": c["completion"]["duration_s"],
                    "bytes": c["completion"]["bytes"],
                    "benefit": c.get("aggregation_benefit"),
                    "gap_s": fo.get("gap_s"),
                    "first_new_data_s": fo.get("first_new_data_s"),
                    "recovery_s": fo.get("recovery_s"),
                    "efficiency": fo.get("efficiency"),
                    "return_s": fo.get("return_s"),
                    # the link came back and no subflow used it again within the capture
                    "return_never": fo.get("up_time") is not None and fo.get("return_s") is None,
                    "reinjected_bytes": c["reinjection"]["bytes"],
                    "retrans_bytes": sum(s.get("retrans_bytes") or 0 for s in stats),
                    "reorder_p95_ms": c["reordering"]["p95_ms"],
                    "sched_reordered_pct": c["reordering"].get("scheduling_reordered_pct"),
                    "network_reordered_pct": c["reordering"].get("network_reordered_pct"),
                    "network_wait_p95_ms": c["reordering"].get("network_p95_ms"),
                    "mptcp_rtt_ms": (c.get("mptcp_rtt") or {}).get("median_ms"),
                    "subflows": len(c["subflows"]),
                }
            )
    return pd.DataFrame(rows)


def summarize(rows: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean and 95% CI of every headline metric per group (e.g. per stack over repetitions)."""
    out = []
    for key, g in rows.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        rec = dict(zip(by, key, strict=True))
        rec["n"] = len(g)
        for col, *_ in SUMMARY_METRICS:
            m, ci, n = mean_ci(g[col].tolist()) if col in g else (None, None, 0)
            rec[col] = m
            rec[col + "_ci95"] = ci
        # the path came back in every repetition and was never used again: "never", not "–"
        rec["return_never"] = bool(
            len(g) and "return_never" in g and g["return_never"].fillna(False).astype(bool).all()
        )
        out.append(rec)
    return pd.DataFrame(out)


# ---- HTML ---------------------------------------------------------------------------------------

CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;
padding:3px 8px;text-align:right;vertical-align:top}th{background:#f0f0f0}td.l,th.l{text-align:left}
img{max-width:100%;border:1px solid #ddd;margin:.5em 0}.err{color:#a00}
.meta td{text-align:left}code{background:#f5f5f5}"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(alt)}</figcaption></figure>"
    )


def _fmt(v, scale: float = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v * scale:.3g}"
    return html.escape(str(v))


def _table(df: pd.DataFrame, left: int = 1) -> str:
    if df.empty:
        return "<p>none</p>"
    head = "".join(
        f'<th class="{"l" if i < left else ""}">{html.escape(str(c))}</th>'
        for i, c in enumerate(df.columns)
    )
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"l" if i < left else ""}">{_fmt(v)}</td>' for i, v in enumerate(r))
        + "</tr>"
        for r in df.itertuples(index=False)
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _summary_html(summary: pd.DataFrame, keys: list[str]) -> str:
    cols = (
        keys
        + ["n"]
        + [f"{label} [{unit}]" if unit else label for _, label, _, unit in SUMMARY_METRICS]
    )
    rows = []
    for _, r in summary.iterrows():
        cells = [r[k] for k in keys] + [r["n"]]
        for col, _, scale, _ in SUMMARY_METRICS:
            m, ci = r[col], r[col + "_ci95"]
            if col == "return_s" and r.get("return_never"):
                cells.append("never")
                continue
            cells.append(
                "–"
                if m is None or pd.isna(m)
                else f"{m * scale:.3g}"
                + ("" if ci is None or pd.isna(ci) else f" ± {ci * scale:.2g}")
            )
        rows.append(cells)
    return (
        _table(pd.DataFrame(rows, columns=cols), left=len(keys))
        + "<p>mean ± half-width of the 95% confidence interval (Student t) over repetitions</p>"
    )


FAILOVER_DEFINITIONS = """<p class='defs'><b>gap</b>: the longest pause in the receiver's
in-order data-level progress (DATA_ACK level at the receiver; TCP: its ACKs) that overlaps the
event or starts within 10 s after it. <b>first new data</b>: from the event to the first data
above everything delivered before it, arriving once progress had stopped; &ldquo;progress did not
stop&rdquo; when the gap did not begin within 1 s of the event (the connection carried on through
it; its gap is then a later pause).
<b>recovery</b>: from the event until in-order goodput holds at &ge; 90% of what the surviving
paths can carry (the sum of their configured rates, shown as <i>surviving</i>) for at least
1 s: the first moment (10 ms steps) at which progress is moving and from which every 500 ms window
over the next second delivers 90% of that capacity; &ldquo;not within the run&rdquo; when it never
does. <b>delivered 3 s</b> / <b>efficiency</b>: in-order bytes delivered in the 3 s after the
event, and their share of what the surviving paths could have carried in those 3 s.
<b>path return</b>: from the link's &ldquo;up&rdquo; until a subflow that carried no new data during
the outage (the returning path, or a new subflow on it) delivers new data again; &ldquo;never&rdquo;
within the capture. Times in seconds; definitions in analysis/definitions.py.</p>"""


def failover_rows(result: dict, run_name: str = "") -> pd.DataFrame:
    """One row per link-down event of every connection: the failover figures, readable."""
    rows = []
    for g in result["groups"]:
        for c in g["connections"]:
            for f in c.get("failover") or []:
                cap = f.get("surviving_capacity_bps")
                if f.get("up_time") is None:
                    ret = "no up event"
                elif f.get("return_s") is None:
                    ret = "never"
                else:
                    ret = f"{f['return_s']:.3g}"
                rows.append(
                    {
                        **({"run": run_name} if run_name else {}),
                        "stack": g["stack"],
                        "rep": g["rep"],
                        "link": f.get("link"),
                        "at_s": f.get("at_s"),
                        "gap_s": f.get("gap_s"),
                        "first_new_data_s": (
                            "progress did not stop"
                            if f.get("progress_stopped") is False
                            else f.get("first_new_data_s")
                        ),
                        "recovery_s": (
                            f.get("recovery_s")
                            if f.get("recovery_s") is not None or cap is None
                            else "not within the run"
                        ),
                        "surviving [Mbit/s]": None if cap is None else cap / 1e6,
                        "delivered 3 s [MB]": (
                            None
                            if f.get("delivered_3s_bytes") is None
                            else f["delivered_3s_bytes"] / 1e6
                        ),
                        "efficiency [%]": (
                            None if f.get("efficiency") is None else 100 * f["efficiency"]
                        ),
                        "path return_s": ret,
                    }
                )
    return pd.DataFrame(rows)


def failover_html(rows: pd.DataFrame) -> str:
    if rows.empty:
        return ""
    left = 4 if "run" in rows else 3
    return "<h2>Failover</h2>" + _table(rows, left=left) + FAILOVER_DEFINITIONS


def _middlebox_words(stats: dict | None) -> str:
    """What each link's middlebox did (testbed RouterMiddlebox.stats), briefly."""
    parts = []
    for link, st in sorted((stats or {}).items()):
        done = {}
        for side in ("in", "out"):
            for k, v in (st.get(side) or {}).items():
                if isinstance(v, int) and k not in ("port", "packets", "errors") and v:
                    done[k] = done.get(k, 0) + v
        for k, v in st.items():
            if isinstance(v, int) and v:
                done[k] = v
        what = ", ".join(f"{k} {v}" for k, v in sorted(done.items())) or "nothing to do"
        parts.append(f"{link}: {st.get('kind')} ({what})")
    return "; ".join(parts)


def outcome_rows(result: dict, run_name: str = "", point: str = "") -> pd.DataFrame:
    """One row per (stack, rep): what the captures show of the MPTCP handshakes, joins and
    error signals, next to the outcome the runner measured (counters, integrity) and what the
    middleboxes on the links did, when the run's metadata has them."""
    meta = result.get("metadata") or {}
    measured = meta.get("outcome") or {}
    rows = []
    for g in result["groups"]:
        if "signals" not in g:
            continue
        counters = measured.get("mptcp_counters") or {}
        rows.append(
            {
                **({"run": run_name} if run_name else {}),
                **({"point": point} if point else {}),
                "stack": g["stack"],
                "rep": g["rep"],
                "outcome (counters, sha256)": measured.get("outcome") or "–",
                "captures show": signals_words(g["signals"]),
                "middlebox did": _middlebox_words(measured.get("middlebox")) or "–",
                "counters": "; ".join(
                    f"{h}: " + " ".join(f"{k}={v}" for k, v in sorted(c.items()))
                    for h, c in sorted(counters.items())
                    if c
                )
                or "–",
            }
        )
    return pd.DataFrame(rows)


OUTCOME_NOTE = """<p class='defs'><b>outcome</b>: from the MPTCP counters of both ends
(Linux: nstat deltas in each host; our stack: its MIB, same names) and the sha256 of what
arrived: fallback, join refused, MP_FAIL, STALLED (did not finish in time), DATA CORRUPTED.
<b>captures show</b>: the same read from the segments alone (analysis/middlebox.py): each
MP_CAPABLE handshake and MP_JOIN and how it was answered, MP_FAIL / MP_TCPRST / infinite
mappings seen, and what changed in a SYN between the client's and the server's capture.</p>"""


# emulator counters that describe its own working, not what it did to packets
_EMU_INTERNAL = {"held", "verdicts", "mean_late_us", "delay_ms", "jitter_ms", "port"}


def _emulator_words(counts: dict) -> str:
    """One direction's emulator counters in words: packets first, then every other count that
    is not zero (reordered, duplicated, ge_lost, random_lost, and whatever a newer emulator
    counts), each with its share of the packets."""
    packets = counts.get("packets") or 0
    parts = [f"packets {packets}"]
    for k, v in counts.items():
        if k == "packets" or k in _EMU_INTERNAL or not isinstance(v, int | float) or not v:
            continue
        share = f" ({100 * v / packets:.2g} %)" if packets and isinstance(v, int) else ""
        parts.append(f"{k} {v:g}{share}")
    return ", ".join(parts)


def conditions_rows(meta: dict, run_name: str = "") -> pd.DataFrame:
    """One row per link direction: the link's conditions as the run had them (the runner's
    `link_conditions`: non-default fields with units, after overrides and the grid point) and
    what the link emulator counted in that direction (`emulator`), when the metadata has them.
    A link with conditions but no emulator counts gets one row."""
    conds = meta.get("link_conditions") or {}
    emu = meta.get("emulator") or {}
    rows = []
    for link in list(dict.fromkeys([*conds, *emu])):
        words = ", ".join(f"{k} {v}" for k, v in (conds.get(link) or {}).items()) or "default"
        dirs = emu.get(link) or {"–": None}
        for i, (direction, counts) in enumerate(dirs.items()):
            rows.append(
                {
                    **({"run": run_name} if run_name else {}),
                    "link": link,
                    "conditions": words if i == 0 else "″",
                    "direction": direction,
                    "emulator counted": _emulator_words(counts) if counts else "–",
                }
            )
    return pd.DataFrame(rows)


CONDITIONS_NOTE = """<p class='defs'><b>conditions</b>: each link's fields that differ from a
default link, as the run had them (topology file, overrides, grid point). <b>emulator
counted</b>: per direction (sender->receiver end), what the router's link emulator did over the
whole run (testbed/linkem.py): packets it handled (GSO packets count once), reordered (sent
ahead), duplicated, ge_lost (Gilbert-Elliott), random_lost (the loss_pct rule),
kernel_dropped (the emulator fell behind). Links no emulator touched are left out.</p>"""

REORDERING_NOTE = """<p class='defs'><b>network reordered</b>: share of segments that arrived
below their own subflow's highest sequence number (the links reordered them; retransmissions
that repair a loss are counted apart, from the sender's capture); its wait is the time in the
subflow's out-of-order queue. <b>scheduling reordered</b>: share of segments that arrived in
order within their subflow but below the connection's highest data sequence number (the
scheduler sent lower data on a slower path). <b>reordering delay (scheduling)</b>: the wait in
the data-level out-of-order queue, from when the subflow could hand the segment up until every
lower DSN had arrived; it excludes the network wait. Definitions in analysis/definitions.py.</p>"""


def _flat_versions(v) -> str:
    """{"python_packages": {...}, "debian_packages": {...}} or a flat {name: version}."""
    if not isinstance(v, dict):
        return str(v)
    parts = []
    for k, x in sorted(v.items()):
        if isinstance(x, dict):
            parts.append(f"{k}: " + ", ".join(f"{n} {ver}" for n, ver in sorted(x.items())))
        else:
            parts.append(f"{k} {x}")
    return "; ".join(parts)


def what_ran(meta: dict) -> dict[str, str]:
    """The headline facts of a run from metadata.json, whichever shape its fields take."""
    git = meta.get("git") if isinstance(meta.get("git"), dict) else {}
    kernel = meta.get("kernel")
    host = meta.get("host")
    out = {
        "experiment": meta.get("experiment"),
        "description": meta.get("description"),
        "parameters": meta.get("parameters") or meta.get("grid") or None,
        "seed": meta.get("seed"),
        "git commit": (meta.get("git_commit") or git.get("commit") or "")
        + (" (dirty)" if meta.get("git_dirty") or git.get("dirty") else ""),
        "kernel": kernel.get("release") if isinstance(kernel, dict) else kernel,
        "host": host.get("hostname") if isinstance(host, dict) else host,
        "start": meta.get("start"),
        "end": meta.get("end"),
        "versions": _flat_versions(meta.get("packages") or meta.get("versions") or {}),
    }
    for key in ("start", "end"):
        t = epoch(out[key])
        if t is not None:
            out[key] = datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
    return {
        k: (json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v))
        for k, v in out.items()
        if v not in (None, "", {}, [])
    }


def _meta_html(meta: dict, where: Path) -> str:
    """What ran, where, with which versions: the first thing a reader needs. The whole
    metadata.json follows, folded."""
    if not meta:
        return f"<p>No metadata.json in <code>{html.escape(str(where))}</code>.</p>"
    rows = "".join(
        f"<tr><th class='l'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
        for k, v in what_ran(meta).items()
    )
    full = html.escape(json.dumps(meta, indent=1, sort_keys=True, default=str)[:20000])
    return (
        f"<table class='meta'>{rows}</table><details><summary>metadata.json</summary>"
        f"<pre>{full}</pre></details>"
    )


def events_table(events: list) -> pd.DataFrame:
    """Link events as rows (analysis.events entries), times in seconds from each run's start,
    to the millisecond (planned against actual)."""
    t = pd.DataFrame(EV.rows(events))
    for col in ("at_s", "actual_s"):
        if col in t:
            t[col] = t[col].map(lambda v: "–" if v is None or v != v else f"{v:.3f}")
    return t


def _page(title: str, parts: list[str]) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{''.join(parts)}"
        f"<p><small>generated {datetime.now(UTC).isoformat(timespec='seconds')} by "
        f"mptcp-lab analysis</small></p></body></html>"
    )


def is_run(d: Path) -> bool:
    return (d / "metadata.json").exists() or (d / "pcap").is_dir()


def min_rtt_s(result: dict) -> float | None:
    """The run's smallest RTT as its captures show it: the lowest median RTT of any subflow
    of its connections (the fastest path's round trip), seconds."""
    rtts = [
        s["rtt_ms_median"] / 1e3
        for g in result.get("groups", [])
        for c in g.get("connections", [])
        for s in c.get("subflow_stats") or []
        if isinstance(s.get("rtt_ms_median"), (int, float)) and s["rtt_ms_median"] > 0
    ]
    return min(rtts) if rtts else None


def clock_problems(result: dict) -> list[str]:
    """Each machine whose clock offset (measured before the run over its SSH connection,
    testbed.clock; metadata clock_offsets) was larger than the run's smallest RTT: its
    timestamps and the coordinator's can be out of order by more than a round trip."""
    offsets = (result.get("metadata") or {}).get("clock_offsets") or {}
    rtt = min_rtt_s(result)
    return [
        f"CLOCK OFFSET: {name} {o['offset_s'] * 1e3:+.1f} ms "
        f"(\u00b1{o['uncertainty_s'] * 1e3:.1f} ms) against the coordinator, more than the "
        f"run's smallest RTT ({rtt * 1e3:.1f} ms): times from the two clocks cannot be "
        "lined up to within a round trip"
        for name, o in sorted(offsets.items())
        if "offset_s" in o and rtt is not None and abs(o["offset_s"]) > rtt
    ]


def _clock_html(meta: dict) -> str:
    offsets = meta.get("clock_offsets") or {}
    if not offsets:
        return ""
    words = [
        f"{html.escape(n)} {o['offset_s'] * 1e3:+.2f} ms \u00b1{o['uncertainty_s'] * 1e3:.2f} ms"
        if "offset_s" in o
        else f"{html.escape(n)}: not measured ({html.escape(str(o.get('error')))})"
        for n, o in sorted(offsets.items())
    ]
    return (
        "<p>Clock offsets against the coordinator, measured before the run (NTP-style over "
        "the SSH connection, best of several exchanges): " + "; ".join(words) + "</p>"
    )


def write_run_report(run_dir: Path, result: dict | None = None) -> Path:
    """report.html for one run; `result` is analyze_run's, when the caller has it already."""
    result = result if result is not None else analyze_run(run_dir)
    meta = result["metadata"]
    rows = run_rows(result)
    parts = ["<h2>What ran</h2>", _meta_html(meta, run_dir), _clock_html(meta)]
    for problem in clock_problems(result):
        parts.append(f"<p class='err'>{html.escape(problem)}</p>")
    if result["events"]:
        parts += ["<h3>Link events</h3>", _table(events_table(result["events"]))]
    cond = conditions_rows(meta)
    if not cond.empty:
        parts += ["<h3>Link conditions</h3>", _table(cond, left=4), CONDITIONS_NOTE]
    if result["errors"]:
        parts += ["<h2>Problems</h2>"] + [
            f"<p class='err'>{html.escape(e)}</p>" for e in result["errors"]
        ]
    parts.append("<h2>Stacks compared</h2>")
    parts.append(
        _summary_html(summarize(rows, ["stack"]), ["stack"]) + REORDERING_NOTE
        if not rows.empty
        else "<p>No MPTCP connection found in the captures.</p>"
    )
    outcomes = outcome_rows(result)
    if not outcomes.empty:
        parts += ["<h2>MPTCP outcome</h2>", _table(outcomes, left=2), OUTCOME_NOTE]
    parts.append(failover_html(failover_rows(result)))
    for name in ("failover", "reordering-cdf"):
        if name in result["figures"]:
            parts.append(_img(run_dir / result["figures"][name], name))
    for g in result["groups"]:
        for c in g["connections"]:
            tag = f"{g['stack']}-{g['rep']}".replace("/", "_")
            parts.append(
                f"<h2>{html.escape(g['stack'])} rep {html.escape(g['rep'])}, "
                f"connection {c['conn']}</h2>"
            )
            parts.append(
                f"<p>{c['sender_role']} ({c['sender_host']}) sent "
                f"{c['completion']['bytes']} bytes to {c['receiver_host']} in "
                f"{c['completion']['duration_s']:.3f} s: "
                f"{(c['goodput_bps'] or 0) / 1e6:.2f} Mbit/s</p>"
            )
            if c.get("failover"):
                fo = pd.DataFrame(c["failover"])
                fo["surviving"] = fo["surviving_subflows"].map(
                    lambda s: " ".join(f"sf{x}" for x in s)
                )
                keep = [
                    "link",
                    "action",
                    "at_s",
                    "gap_s",
                    "first_new_data_s",
                    "progress_stopped",
                    "recovery_s",
                    "efficiency",
                    "return_s",
                    "regain90_s",
                    "pre_goodput_bps",
                    "resumed",
                    "surviving",
                ]
                parts.append("<h3>Failover</h3>" + _table(fo[[k for k in keep if k in fo]]))
            re = c.get("reinjection") or {}
            rtt = c.get("mptcp_rtt") or {}
            parts.append(
                f"<p>reinjected {re.get('bytes', 0)} bytes "
                f"({', '.join(f'sf{k}: {v}' for k, v in (re.get('by_subflow') or {}).items())}); "
                f"MPTCP-level RTT median {_fmt(rtt.get('median_ms'))} ms, "
                f"p95 {_fmt(rtt.get('p95_ms'))} ms ({rtt.get('samples', 0)} mappings); "
                f"reordering delay (scheduling) p95 {_fmt(c['reordering']['p95_ms'])} ms; "
                + _reordering_words(c["reordering"])
                + "</p>"
            )
            parts.append(_table(pd.DataFrame(c["subflow_stats"])))
            parts.append(_both_ends(c))
            if c is g["connections"][0]:
                parts.append(_pm_events(g.get("pm_events") or []))
                key = f"cwnd-{tag}"
                if key in result["figures"]:
                    parts.append(_img(run_dir / result["figures"][key], key))
            for k in ("goodput", "dsn", "owd", "inflight"):
                key = f"{k}-{tag}-c{c['conn']}"
                if key in result["figures"]:
                    parts.append(_img(run_dir / result["figures"][key], key))
    out = run_dir / "report.html"
    title = f"MPTCP run: {meta.get('experiment', run_dir.name)}"
    out.write_text(_page(title, parts))
    return out


PM_EVENT_COLUMNS = ["t", "host", "type", "saddr", "sport", "daddr", "dport", "loc_id", "rem_id"]


def _pm_events(events: list[dict]) -> str:
    """The run's path-manager events, both hosts on one timeline (kernel MPTCP's from ``ip
    mptcp monitor``, our stack's from its own; the same names)."""
    if not events:
        return ""
    df = pd.DataFrame(events)
    cols = [c for c in PM_EVENT_COLUMNS + ["backup", "error", "reason", "result"] if c in df]
    return (
        "<h3>Path-manager events</h3><p>Both hosts, seconds from the run's start (kernel MPTCP: "
        "<code>ip mptcp monitor</code>; our stack: its own events, the same names).</p>"
        + _table(df[cols].fillna(""))
    )


def _both_ends(c: dict) -> str:
    """One-way delays and the reinjections' fate: what needs both ends' captures."""
    if not c.get("owd"):
        return "<p>One-way delay, reinjection qualification: need both ends' captures.</p>"
    owd = pd.DataFrame(c["owd"]).drop(columns=["subflow"])
    q = c.get("reinjection_quality") or {}
    adv = q.get("advance_s") or {}
    words = (
        f"<p>Reinjections ({q.get('segments', 0)} segments): useful {q.get('useful_bytes', 0)} "
        f"bytes (this copy arrived first; {q.get('useful_first_lost', 0)} of them because the "
        f"first copy never arrived), wasted {q.get('wasted_bytes', 0)} (a copy had arrived "
        f"already), lost {q.get('lost_bytes', 0)}; a useful copy arrived "
        f"{_fmt(None if adv.get('median') is None else adv['median'] * 1e3)} ms (median) "
        f"before the first one. One-way delay from both captures, the hosts' clocks taken as "
        f"one:</p>"
    )
    return "<h3>From both ends</h3>" + words + _table(owd)


def _reordering_words(r: dict) -> str:
    """The reordering split of one connection in a sentence."""

    def pct(k: str) -> str:
        return "–" if r.get(k) is None else f"{r[k]:.2g} %"

    return (
        f"network reordered {r.get('network_reordered', 0)} segments ({pct('network_reordered_pct')}"
        f", wait p95 {_fmt(r.get('network_p95_ms'))} ms), loss repairs {r.get('loss_repairs', 0)}, "
        f"scheduling reordered {r.get('scheduling_reordered', 0)} ("
        f"{pct('scheduling_reordered_pct')}) of {r.get('segments', 0)} segments"
    )


def find_runs(root: Path) -> list[Path]:
    return sorted(
        {p.parent for p in root.rglob("metadata.json")}
        | {p.parent for p in root.rglob("pcap") if p.is_dir()}
    )


def _swept(metas: dict[str, dict]) -> list[str]:
    """Scalar parameters that take more than one value across the campaign's runs."""
    vals: dict[str, set] = {}
    for m in metas.values():
        for k, v in (m.get("parameters") or {}).items():
            if isinstance(v, (int, float, str)):
                vals.setdefault(k, set()).add(v)
    return sorted(k for k, s in vals.items() if len(s) > 1)


def _campaign_conditions(results: dict[str, dict], point_of) -> list[str]:
    """The links' conditions once per grid point (they are the same for every stack and
    repetition of a point), then every run's emulator counts, folded."""
    per_point: dict[str, pd.DataFrame] = {}
    counts = []
    for name, res in results.items():
        meta = res.get("metadata") or {}
        rows = conditions_rows(meta, name)
        if rows.empty:
            continue
        per_point.setdefault(point_of(name), rows[rows["conditions"] != "″"])
        counts.append(rows.assign(stack=(meta.get("stack") or "")))
    if not per_point:
        return []
    table = pd.concat(
        [
            r.drop(columns=["run", "direction", "emulator counted"]).assign(point=p)
            for p, r in sorted(per_point.items())
        ],
        ignore_index=True,
    )[["point", "link", "conditions"]]
    every = pd.concat(counts, ignore_index=True)
    every = every[["run", "stack", "link", "direction", "emulator counted"]]
    return [
        "<h2>Link conditions per grid point</h2>",
        _table(table, left=3),
        f"<details><summary>what the link emulators counted, per run ({len(counts)} runs)"
        f"</summary>{_table(every, left=4)}</details>",
        CONDITIONS_NOTE,
    ]


def analysed_elsewhere(run_dir: Path) -> dict | None:
    """The analysis a worker made of this run and sent back without its captures (a results
    folder of `--workers` without `--fetch-pcaps`): RUN/metrics.json as analyze_run wrote it,
    read instead of redone, since without the captures there is nothing to redo it from. The
    run's own metadata.json (the coordinator's view of it) replaces the worker's."""
    if find_pcaps(run_dir / "pcap" if (run_dir / "pcap").is_dir() else run_dir):
        return None
    result = read_json(run_dir / "metrics.json", None)
    if not isinstance(result, dict) or "groups" not in result:
        return None
    result["run"] = str(run_dir)
    result["metadata"] = read_json(run_dir / "metadata.json", result.get("metadata") or {})
    return result


def analyse_one(run_dir: Path) -> tuple[dict, Path]:
    """One run's whole analysis (captures parsed, metrics, figures, its report.html): the unit
    a process of the pool does; a run a worker analysed is read (analysed_elsewhere)."""
    result = analysed_elsewhere(run_dir)
    if result is None:
        result = analyze_run(run_dir)
    return result, write_run_report(run_dir, result)


def analysis_jobs() -> int:
    """How many runs are analysed at once by default: every core this process may use
    (MPTCP_LAB_ANALYSIS_JOBS overrides it; 1 is the serial path)."""
    env = os.environ.get("MPTCP_LAB_ANALYSIS_JOBS")
    if env:
        return max(1, int(env))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def analyse_runs(runs: list[Path], jobs: int | None = None) -> list[tuple[dict, Path]]:
    """analyse_one for every run, in the runs' order, on a pool of `jobs` processes (default
    analysis_jobs()): parsing captures is CPU-bound Python, so threads would not help, and the
    runs are independent (each writes only into its own folder). The results are the serial
    path's, pickled back. forkserver, not fork: the caller may hold threads (the workers'
    coordinator with its SSH transports) that a forked child would inherit mid-lock."""
    jobs = analysis_jobs() if jobs is None else jobs
    if jobs <= 1 or len(runs) <= 1:
        return [analyse_one(r) for r in runs]
    ctx = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(min(jobs, len(runs)), mp_context=ctx) as pool:
        return list(pool.map(analyse_one, runs))


def write_campaign_report(root: Path, jobs: int | None = None) -> Path:
    """The campaign's report.html and metrics.json over every run under `root`; each run is
    analysed (and gets its own report.html) on `jobs` processes (analyse_runs)."""
    runs = find_runs(root)
    analysed = analyse_runs(runs, jobs)
    results = {str(r.relative_to(root)): res for r, (res, _) in zip(runs, analysed, strict=True)}
    run_reports = {
        str(r.relative_to(root)): rep for r, (_, rep) in zip(runs, analysed, strict=True)
    }
    metas = {k: v["metadata"] for k, v in results.items()}
    rows = pd.concat(
        [run_rows(v, k) for k, v in results.items()] or [pd.DataFrame()], ignore_index=True
    )
    fig_dir = root / "figures"
    parts = ["<h2>What ran</h2>"]
    facts = {k: what_ran(m) for k, m in metas.items()}
    keys = list(dict.fromkeys(k for f in facts.values() for k in f))  # what_ran's order
    # what all runs share, once; what differs, per run (folded when there are many)
    common = {
        k: v
        for k in keys
        if len({f.get(k) for f in facts.values()}) == 1
        and (v := next(iter(facts.values())).get(k)) is not None
    }
    parts.append(
        "<table class='meta'>"
        + "".join(
            f"<tr><th class='l'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
            for k, v in common.items()
        )
        + "</table>"
    )
    differ = [k for k in keys if k not in common]
    per_run = _table(
        pd.DataFrame([{"run": r, **{k: f.get(k, "") for k in differ}} for r, f in facts.items()])
    )
    parts.append(
        per_run
        if len(facts) <= 6
        else f"<details><summary>{len(facts)} runs: {html.escape(', '.join(differ))}"
        f"</summary>{per_run}</details>"
    )
    summary = pd.DataFrame()
    if not rows.empty:
        parts.append("<h2>Stacks compared (all runs)</h2>")
        parts.append(_summary_html(summarize(rows, ["stack"]), ["stack"]))
        # runs with the same scalar parameters are repetitions of one grid point
        swept = _swept(metas)

        def rows_point(r: str) -> str:
            params = metas[r].get("parameters") or {}
            return ", ".join(f"{k}={params.get(k)}" for k in swept) or "all"

        rows["point"] = rows["run"].map(rows_point)
        parts.append("<h2>Per grid point and stack (over repetitions)</h2>")
        summary = summarize(rows, ["point", "stack"])
        parts.append(_summary_html(summary, ["point", "stack"]))
        parts.append(REORDERING_NOTE)
        parts += _campaign_conditions(results, rows_point)
        outcomes = pd.concat(
            [outcome_rows(v, k, rows_point(k)) for k, v in results.items()] or [pd.DataFrame()],
            ignore_index=True,
        )
        if not outcomes.empty and "point" in outcomes:
            outcomes = outcomes.sort_values(["point", "stack"], kind="stable")
            parts.append("<h2>MPTCP outcome per grid point and stack</h2>")
            parts.append(_table(outcomes.drop(columns=["run"]), left=3) + OUTCOME_NOTE)
        parts.append(
            failover_html(
                pd.concat(
                    [failover_rows(v, k) for k, v in results.items()] or [pd.DataFrame()],
                    ignore_index=True,
                )
            )
        )
        fo = pd.concat([failover_table(v) for v in results.values()] or [pd.DataFrame()])
        if not fo.empty:
            parts.append(_img(plots.failover_plot(fo, fig_dir / "failover.png"), "failover"))
        if len(swept) >= 2 and rows["benefit"].notna().any():
            x, y = swept[:2]
            grid = rows.assign(
                **{
                    x: rows["run"].map(lambda r: metas[r]["parameters"][x]),
                    y: rows["run"].map(lambda r: metas[r]["parameters"][y]),
                }
            )
            for stack, g in grid.groupby("stack"):  # one map per stack: they differ most
                if g["benefit"].notna().any():
                    p = plots.benefit_heatmap(
                        g,
                        x,
                        y,
                        fig_dir / f"benefit-heatmap-{stack}.png",
                        f"Aggregation benefit: {stack}",
                    )
                    parts.append(_img(p, f"aggregation benefit over {x} x {y}: {stack}"))
    # Every run gets its own report; the campaign shows each run's goodput per subflow (with
    # the link events marked) and links to the rest, so a failover is visible from here.
    parts.append("<h2>Runs</h2>")
    for name, res in results.items():
        run_report = run_reports[name]
        parts.append(
            f"<h3>{html.escape(name)}</h3><p><a href='"
            f"{html.escape(str(run_report.relative_to(root)))}'>run report</a></p>"
        )
        for key, rel in res["figures"].items():
            if key.startswith("goodput-"):
                parts.append(_img(root / name / rel, f"{name}: {key}"))
    errors = [e for v in results.values() for e in v["errors"]]
    errors += [f"{name}: {p}" for name, v in results.items() for p in clock_problems(v)]
    if errors:
        parts += ["<h2>Problems</h2>"] + [f"<p class='err'>{html.escape(e)}</p>" for e in errors]
    (root / "metrics.json").write_text(
        json.dumps(
            to_jsonable(
                {
                    "campaign": str(root),
                    "runs": list(results),
                    "rows": rows.to_dict("records"),
                    "summary": summary.to_dict("records"),
                    "errors": errors,
                }
            ),
            indent=1,
        )
    )
    out = root / "report.html"
    out.write_text(_page(f"MPTCP campaign: {root.name} ({len(runs)} runs)", parts))
    return out


def _demote(body: str) -> str:
    """Headings one level down, so a whole report can sit under a section heading."""
    for n in (5, 4, 3, 2, 1):
        body = body.replace(f"<h{n}>", f"<h{n + 1}>").replace(f"</h{n}>", f"</h{n + 1}>")
    return body


def combine_reports(
    out: Path, sections: list[tuple[str, Path]], title: str, intro_html: str = ""
) -> Path:
    """One self-contained page from several reports (figures are embedded, so their bodies can
    simply be put one after the other); links are rewritten to stay valid from `out`."""
    parts = [intro_html] if intro_html else []
    for heading, report in sections:
        text = Path(report).read_text()
        body = text[text.index("<body>") + 6 : text.rindex("</body>")]
        body = re.sub(r"<p><small>generated .*?</small></p>", "", body)
        base = Path(report).parent

        def relink(m: re.Match, base: Path = base) -> str:
            target = os.path.relpath(base / html.unescape(m.group(1)), Path(out).parent)
            return f"href='{html.escape(target)}'"

        body = re.sub(r"href='([^']+)'", relink, body)
        parts.append(
            f"<section><h2>{html.escape(heading)}</h2>"
            f"<p><a href='{html.escape(os.path.relpath(report, Path(out).parent))}'>"
            f"full report</a></p>{_demote(body)}</section>"
        )
    Path(out).write_text(_page(title, parts))
    return Path(out)


def write_report(directory: str | Path, jobs: int | None = None) -> Path:
    """report.html (and metrics.json) for a run directory or a directory of runs (those
    analysed on `jobs` processes, default every core: analyse_runs)."""
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: not a directory")
    return write_run_report(d) if is_run(d) else write_campaign_report(d, jobs)


def load_metrics(directory: str | Path) -> dict:
    return read_json(Path(directory) / "metrics.json", {})
