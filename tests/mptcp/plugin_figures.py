"""Figures of the research plug-ins in the two-host simulator (deterministic, about a minute):

    python -m tests.mptcp.plugin_figures [--json]

1. Schedulers: a 2 MB upload over a fast path (10 ms RTT, 20 Mbit/s) and a slow one (200 ms,
   5 Mbit/s), with a small (256 KiB) and a large (8 MiB) receive buffer: completion time and
   the bytes each path carried.
2. Coupled congestion control: an MPTCP connection (two subflows) and one Reno TCP flow through
   one 4 Mbit/s drop-tail bottleneck (40 ms RTT, queues of 30, 60 and 90 kB): MPTCP's share of
   the goodput after 5 s, and its mean.
3. Handover modes: an app-limited flow (5 kB every 50 ms) when wifi is silently cut: the
   longest pause of the receiver's in-order progress, per mode (both subflows active, lte as a
   backup endpoint, lte opened by the backup-on-loss path manager, redundant).

The same scenarios as tests/mptcp/test_plugin_e2e.py, which asserts on them.
"""

from __future__ import annotations

import argparse
import json

from .test_plugin_e2e import C1, C2, QUEUES, longest_pause_after_cut, shared_bottleneck, transfer

SCHEDS = ["default", "minrtt", "roundrobin", "redundant", "blest", "ecf"]


def scheduler_table() -> list[dict]:
    rows = []
    for rcv_buf, label in ((256 * 1024, "256KiB"), (8 << 20, "8MiB")):
        for sched in SCHEDS:
            for opp in ("off", "penalise") if sched in ("default", "blest") else ("off",):
                r = transfer(scheduler=sched, rcv_buf=rcv_buf, opportunistic=opp)
                assert r.intact
                rows.append(
                    {
                        "rcv_buf": label,
                        "scheduler": sched,
                        "opportunistic": opp,
                        "seconds": round(r.duration, 3),
                        "goodput_mbit": round(len(r.data) * 8 / r.duration / 1e6, 2),
                        "fast_bytes": r.sent[C1],
                        "slow_bytes": r.sent[C2],
                        "waits": getattr(r.conn.sched, "waits", None),
                        "ortx_bytes": getattr(r.conn, "ortx_bytes", 0),
                    }
                )
    return rows


def cc_table() -> list[dict]:
    rows = []
    for cc in ("reno", "cubic", "lia", "olia", "balia"):
        shares = [shared_bottleneck(cc, queue=q) for q in QUEUES]
        rows.append(
            {
                "cc": cc,
                "shares": {q: round(v, 3) for q, v in zip(QUEUES, shares, strict=True)},
                "mptcp_share": round(sum(shares) / len(shares), 3),
            }
        )
    return rows


HANDOVER = [
    ("both active, default", "default", "kernel", ("subflow",)),
    ("both active, minrtt", "minrtt", "kernel", ("subflow",)),
    ("lte backup", "default", "kernel", ("subflow", "backup")),
    ("lte opened on loss", "default", "backup-on-loss", ("subflow",)),
    ("redundant", "redundant", "kernel", ("subflow",)),
]


def handover_table() -> list[dict]:
    return [
        {"mode": m, "pause_s": round(longest_pause_after_cut(s, pm, fl), 3)}
        for m, s, pm, fl in HANDOVER
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sched, cc, ho = scheduler_table(), cc_table(), handover_table()
    if args.json:
        print(json.dumps({"schedulers": sched, "coupled_cc": cc, "handover": ho}))
        return
    print("schedulers: 2 MB, fast 10 ms/20 Mbit/s + slow 200 ms/5 Mbit/s")
    print(
        f"{'rcv_buf':8} {'scheduler':11} {'opport.':9} {'s':>6} {'Mbit/s':>7} "
        f"{'fast B':>9} {'slow B':>9} {'waits':>6} {'ortx B':>8}"
    )
    for r in sched:
        print(
            f"{r['rcv_buf']:8} {r['scheduler']:11} {r['opportunistic']:9} {r['seconds']:6.2f} "
            f"{r['goodput_mbit']:7.2f} {r['fast_bytes']:9d} {r['slow_bytes']:9d} "
            f"{'' if r['waits'] is None else r['waits']:>6} {r['ortx_bytes']:8d}"
        )
    print("\ncoupled CC: MPTCP (2 subflows) vs 1 Reno TCP, shared 4 Mbit/s bottleneck")
    print(f"{'cc':8} " + " ".join(f"q={q // 1000}kB" for q in QUEUES) + "  mean")
    for r in cc:
        per = " ".join(f"{v:7.3f}" for v in r["shares"].values())
        print(f"{r['cc']:8} {per}  {r['mptcp_share']:.3f}")
    print("\nhandover: 5 kB every 50 ms, wifi (10 ms RTT) silently cut; lte 60 ms RTT")
    for r in ho:
        print(f"{r['mode']:22} longest pause {r['pause_s']:.3f} s")


if __name__ == "__main__":
    main()
