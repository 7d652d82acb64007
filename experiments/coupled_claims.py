"""Coupled congestion control's claims where the paths do NOT share one bottleneck: RFC 6356's
goals 1 and 3 and Khalili et al. 2013's case against LIA, judged by the one rule
(analysis/verdict.py) as every claim of a campaign report is.

A campaign says which of these it checks in its ``[claims]`` table (experiments/config.py),
because the data alone cannot tell: a run with background flows on disjoint bottlenecks looks
like a shared-bottleneck run, and "no more than one TCP" would be judged where it means nothing.

- ``best_path`` (RFC 6356, goal 1, "improve throughput"): a multipath flow should do at least
  as well as a single TCP on the best of its paths. Per run: the flow under test's steady
  goodput (after ``metrics.warmup_s``); the reference is the ``tcp`` stack as the flow under
  test (the kernel's TCP on the client's first path, which the campaign makes the best one,
  beside the same competitors). Claim per MPTCP variant: mean - reference mean > -tolerance x
  reference mean.
- ``congested_path`` (RFC 6356, goal 3, "balance congestion"): a multipath flow should move
  traffic off its more congested path. Per run: the share of the receiver's steady bytes that
  crossed the named path's subflow (told by its client address). Claim per coupled variant
  (lia, olia, balia): its share - the uncoupled Reno control's share < 0.
- ``single_path_users`` (Khalili et al. 2013, scenario C): LIA takes from single-path users on a
  shared access point without gaining itself; OLIA leaves them more. Per run: the single-path
  users' (the background flows') steady goodput summed. Claim: OLIA's runs - LIA's runs > 0.

Reads the runs as experiments/campaign_report.py loads them (file logic only: the tests build
runs by hand).
"""

from __future__ import annotations

import html
import statistics
from pathlib import Path
from typing import Any

from analysis.report import _img
from analysis.verdict import judge
from experiments.campaign_report import (
    Checked,
    _bars,
    _check,
    _claims_html,
    _fmt_ci,
    _receiver,
    _table,
)

COUPLED = ("lia", "olia", "balia")
CONTROL = "reno"  # uncoupled Reno per subflow: the control for the Reno-based coupled ones


def _cc(variant: str) -> str:
    """The controller of a variant ("userspace-olia" -> "olia"; a stack alone -> "")."""
    return variant.rsplit("-", 1)[1] if "-" in variant else ""


def _variants(runs: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["variant"] for r in runs))


def _values(runs: list[dict[str, Any]], variant: str, key) -> list[float | None]:
    return [key(r) for r in runs if r["variant"] == variant]


def steady_goodput(r: dict[str, Any]) -> float | None:
    """The flow under test's goodput after the warm-up (the runner's goodput_steady_mbit)."""
    return r.get("goodput_steady_mbit")


def single_path_goodput(r: dict[str, Any]) -> float | None:
    """The background (single-path) flows' steady goodput, summed; None when one lacks it."""
    vals = [b.get("goodput_steady_mbit") for b in r.get("background") or []]
    if not vals or any(v is None for v in vals):
        return None
    return float(sum(vals))


def path_share(r: dict[str, Any], addr: str, warmup_s: float) -> float | None:
    """The share of the receiver's bytes after ``warmup_s`` that crossed subflows whose client
    end is ``addr`` (the receiver's per-subflow counters, "ADDR:PORT->ADDR:PORT" keys, 100 ms
    samples): the first sample at or after the warm-up to the last. None without samples in
    that window or without bytes in it."""
    subs = [s for s in _receiver(r).get("subflow_samples") or [] if s[0] >= warmup_s]
    if len(subs) < 2:
        return None
    first, last = subs[0][1], subs[-1][1]
    moved = {k: (last.get(k) or 0) - (first.get(k) or 0) for k in last}
    total = sum(v for v in moved.values() if v > 0)
    if total <= 0:
        return None
    on = sum(v for k, v in moved.items() if v > 0 and _client_addr(k) == addr)
    return on / total


def _client_addr(key: str) -> str:
    """ "10.0.1.1:5431->10.0.6.2:5201" -> "10.0.1.1" (the first end: the receiver's own, which
    for a download is the client's; "[fd00::1]:5431->..." -> "fd00::1")."""
    end = key.split("->", 1)[0]
    host = end.rsplit(":", 1)[0]
    return host.strip("[]")


# ---- claims ---------------------------------------------------------------------------------


def best_path_claims(runs: list[dict[str, Any]], tolerance: float) -> list[Checked]:
    """RFC 6356 goal 1 for every MPTCP variant against the tcp stack's runs."""
    ref = _values(runs, "tcp", steady_goodput)
    ref_clean = [v for v in ref if v is not None]
    out = []
    for v in _variants(runs):
        if v == "tcp":
            continue
        vals = _values(runs, v, steady_goodput)
        margin = -tolerance * statistics.fmean(ref_clean) if ref_clean else 0.0
        out.append(
            _check(
                "RFC 6356, goal 1 (improve throughput): a multipath flow should perform at "
                "least as well as a single path flow would on the best of the paths available "
                f"to it. Here: {v}'s steady goodput against a single TCP on the best path "
                f"beside the same competitors (at least as well: within {tolerance:g} of its "
                "mean).",
                f"{v} at least one TCP on the best path",
                f"{v} steady goodput - single TCP's on the best path (Mbit/s)",
                [("", judge(vals, ref, ">", margin))],
                " Mbit/s",
                evidence=f"{v} {_fmt_ci(vals, ' Mbit/s')} vs single TCP {_fmt_ci(ref, ' Mbit/s')}",
            )
        )
    return out


def congested_shares(
    runs: list[dict[str, Any]], addr: str, warmup_s: float
) -> dict[str, list[float | None]]:
    """variant -> each run's share of its steady bytes on the congested path (file order)."""
    return {v: _values(runs, v, lambda r: path_share(r, addr, warmup_s)) for v in _variants(runs)}


def congested_path_claims(shares: dict[str, list[float | None]], path: str) -> list[Checked]:
    """RFC 6356 goal 3 for every coupled variant against the uncoupled Reno control."""
    control = next((v for v in shares if _cc(v) == CONTROL), None)
    out = []
    for v in shares:
        if _cc(v) not in COUPLED:
            continue
        base = shares.get(control, []) if control else []
        out.append(
            _check(
                "RFC 6356, goal 3 (balance congestion): a multipath flow should move as much "
                "traffic as possible off its most congested paths. Here: the share of "
                f"{v}'s steady bytes on {path} (the path beside the competing TCP flows) is "
                f"smaller than uncoupled Reno's ({control or 'not run'}).",
                f"{v} less on the congested path than uncoupled",
                f"{v} share of bytes on {path} - {control or 'uncoupled Reno'}'s",
                [("", judge(shares[v], base, "<"))],
                evidence=f"{v} {_fmt_ci(shares[v])} vs uncoupled {_fmt_ci(base)}",
            )
        )
    return out


def single_path_claims(runs: list[dict[str, Any]]) -> list[Checked]:
    """Khalili et al. 2013: the single-path users keep more beside OLIA than beside LIA."""
    by_cc = {_cc(v): v for v in _variants(runs)}
    olia, lia = by_cc.get("olia"), by_cc.get("lia")
    a = _values(runs, olia, single_path_goodput) if olia else []
    b = _values(runs, lia, single_path_goodput) if lia else []
    mp_a = _values(runs, olia, steady_goodput) if olia else []
    mp_b = _values(runs, lia, steady_goodput) if lia else []
    return [
        _check(
            "Khalili et al. 2013 (MPTCP is not Pareto-optimal, scenario C): with LIA a "
            "multipath user with a private and a shared access point keeps sending on the "
            "shared one and takes from its single-path users without gaining itself; OLIA "
            "leaves the single-path users more. Here: the single-path users' steady goodput "
            "beside OLIA's multipath user is larger than beside LIA's.",
            "single-path users get more beside OLIA than beside LIA",
            f"single-path users' steady goodput: {olia or 'olia'} runs - {lia or 'lia'} runs "
            "(Mbit/s)",
            [("", judge(a, b, ">"))],
            " Mbit/s",
            evidence=f"single-path users beside olia {_fmt_ci(a, ' Mbit/s')}, beside lia "
            f"{_fmt_ci(b, ' Mbit/s')}; the multipath user itself: olia "
            f"{_fmt_ci(mp_a, ' Mbit/s')}, lia {_fmt_ci(mp_b, ' Mbit/s')}",
        )
    ]


def checks(spec: dict[str, Any] | None) -> list[str]:
    """The checks a [claims] table names: one ("best_path") or a list of them."""
    check = (spec or {}).get("check")
    return [check] if isinstance(check, str) else list(check or [])


def claims_for(spec: dict[str, Any], runs: list[dict[str, Any]]) -> list[Checked]:
    """The claims a campaign's [claims] table names (metadata.json "claims"), judged on the
    runs a claim may use (campaign_report.split_mptcp_runs), in the table's order."""
    return [c for check in checks(spec) for c in _claims_of(check, spec, runs)]


def _claims_of(check: str, spec: dict[str, Any], runs: list[dict[str, Any]]) -> list[Checked]:
    if check == "best_path":
        return best_path_claims(runs, float(spec.get("tolerance", 0.05)))
    if check == "congested_path":
        shares = congested_shares(runs, str(spec.get("addr")), float(spec.get("warmup_s", 0)))
        return congested_path_claims(shares, str(spec.get("path")))
    if check == "single_path_users":
        return single_path_claims(runs)
    return []


def run_value(spec: dict[str, Any] | None, r: dict[str, Any]) -> dict[str, Any]:
    """The per-run value a record keeps for these claims (records.run_rows)."""
    out: dict[str, Any] = {}
    if "congested_path" in checks(spec):
        share = path_share(r, str(spec.get("addr")), float(spec.get("warmup_s", 0)))  # type: ignore[union-attr]
        out["congested_path_share"] = None if share is None else round(share, 4)
    if "single_path_users" in checks(spec):
        out["single_path_steady_mbit"] = single_path_goodput(r)
    return out


# ---- the report's section -------------------------------------------------------------------

TITLES = {
    "best_path": "RFC 6356 goal 1: at least one TCP on the best path",
    "congested_path": "RFC 6356 goal 3: traffic off the more congested path",
    "single_path_users": "Khalili et al. 2013: what the single-path users keep, OLIA vs LIA",
}


def section(spec: dict[str, Any], runs: list[dict[str, Any]], fig_dir: Path) -> list[str]:
    """The campaign report's sections, one per [claims] check."""
    return [p for check in checks(spec) for p in _section(check, spec, runs, fig_dir)]


def _section(
    check: str, spec: dict[str, Any], runs: list[dict[str, Any]], fig_dir: Path
) -> list[str]:
    """One check's section: per variant the value the claim uses (bars, 95% CI) and a table,
    then the claims."""
    if check not in TITLES or not runs:
        return []
    variants = _variants(runs)
    if check == "best_path":
        key, label = steady_goodput, "steady goodput (Mbit/s)"
    elif check == "congested_path":
        addr, warm = str(spec.get("addr")), float(spec.get("warmup_s", 0))

        def key(r: dict[str, Any]) -> float | None:
            return path_share(r, addr, warm)

        label = f"share of steady bytes on {spec.get('path')}"
    else:
        key, label = single_path_goodput, "single-path users' steady goodput (Mbit/s)"
    groups = {v: {"value": _values(runs, v, key)} for v in variants}
    fig = _bars(groups, fig_dir / f"claims-{check}.png", label, TITLES[check])
    rows = [
        [
            v,
            _fmt_ci(groups[v]["value"]),
            _fmt_ci(_values(runs, v, steady_goodput), " Mbit/s"),
            _fmt_ci(_values(runs, v, single_path_goodput), " Mbit/s"),
        ]
        for v in variants
    ]
    return [
        f"<h2>{html.escape(TITLES[check])}</h2>",
        _img(fig, TITLES[check]),
        _table(["variant", label, "flow under test steady", "competing flows steady"], rows),
        "<h3>Published claims checked</h3>",
        *_claims_html(_claims_of(check, spec, runs)),
    ]
