"""Coupled congestion control's claims on disjoint bottlenecks (experiments/coupled_claims.py):
RFC 6356's goal 1 (at least one TCP on the best path), goal 3 (less on the congested path than
uncoupled) and Khalili et al. 2013 (single-path users keep more beside OLIA than beside LIA),
judged by the one rule on small hand-made runs; the [claims] table's validation names the bad
field. Sans-I/O apart from reading the shipped files: no network, under a second."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments import coupled_claims as cc
from experiments.campaign_report import claims, write_campaign_report
from experiments.config import ExperimentError, load_experiment, resolve_runs
from testbed.routing import resolve_path
from testbed.topology import load_topology

SHIPPED = Path(__file__).resolve().parents[2] / "experiments"
CONGESTED = "10.0.1.1"  # the client's address on the congested path (mp1's link, mpc1)


def _run(variant: str, rep: int, **kw) -> dict:
    base = {
        "label": f"{variant}/rep{rep}",
        "stack": variant.split("-")[0] if variant != "kernel-mptcp" else variant,
        "variant": variant,
        "point_values": {},
        "rep": rep,
        "ok": True,
        "intact": True,
        "goodput_mbit": 10.0,
        "goodput_steady_mbit": 10.0,
        "max_subflows": 2,
        "subflow_bytes": {"10.0.1.1:1->10.0.6.2:5201": 5, "10.0.2.1:2->10.0.6.2:5201": 5},
        "background": [{"flow": "competitor", "goodput_mbit": 10, "goodput_steady_mbit": 10}],
        "failover": [],
        "client_report": {},
        "server_report": {},
        "capture": {},
    }
    return {**base, **kw}


def _samples(on_congested: float, warmup_s: float = 3.0) -> list:
    """Per-subflow counters every 100 ms for 10 s: a slow start that puts everything on the
    congested path (which the steady window must not see), then `on_congested` of the bytes."""
    out = []
    a = b = 0.0
    for i in range(101):
        t = i / 10
        if t < warmup_s:
            a += 1e5
        else:
            a += 1e5 * on_congested
            b += 1e5 * (1 - on_congested)
        out.append([t, {"10.0.1.1:40000->10.0.6.2:5201": a, "10.0.2.1:40001->10.0.6.2:5201": b}])
    return out


def test_path_share_counts_the_steady_window_only():
    r = _run("userspace-lia", 1, client_report={"subflow_samples": _samples(0.2)})
    assert cc.path_share(r, CONGESTED, 3.0) == pytest.approx(0.2)
    # over the whole run the slow start (all on the congested path) would count
    assert cc.path_share(r, CONGESTED, 0.0) > 0.4
    assert cc.path_share(r, "10.0.9.9", 3.0) == 0.0
    assert cc.path_share(_run("userspace-lia", 1), CONGESTED, 3.0) is None  # no samples


def test_client_address_of_a_subflow_key():
    assert cc._client_addr("10.0.1.1:5431->10.0.6.2:5201") == "10.0.1.1"
    assert cc._client_addr("[fd00:0:1::1]:5431->[fd00:0:6::2]:5201") == "fd00:0:1::1"


GOAL1 = [
    # (MPTCP steady goodputs, single TCP's on the best path, verdict)
    ([12.5, 12.8, 12.6], [12.0, 12.1, 11.9], "agrees"),
    # 0.2 below the reference, within 5% of 12 (0.6): still "at least as well"
    ([11.8, 11.85, 11.75], [12.0, 12.05, 11.95], "agrees"),
    ([9.0, 9.2, 8.9], [12.0, 12.1, 11.9], "disagrees"),
    ([10.0, 13.0, 11.5], [12.0, 12.1, 11.9], "inconclusive"),
]


@pytest.mark.parametrize(("mp", "tcp", "verdict"), GOAL1)
def test_goal1_at_least_one_tcp_on_the_best_path(mp, tcp, verdict):
    runs = [_run("tcp", i, goodput_steady_mbit=g) for i, g in enumerate(tcp)]
    runs += [_run("userspace-lia", i, goodput_steady_mbit=g) for i, g in enumerate(mp)]
    (c,) = cc.best_path_claims(runs, 0.05)
    assert c.outcome == verdict, c
    assert c.short == "userspace-lia at least one TCP on the best path"
    assert c.claimed.startswith("> -0.6")  # -5% of the reference's mean, 12 Mbit/s


def test_goal1_judges_every_mptcp_variant_and_not_the_reference():
    runs = [_run(v, i) for v in ("tcp", "kernel-mptcp", "userspace-olia") for i in range(3)]
    assert [c.short.split()[0] for c in cc.best_path_claims(runs, 0.05)] == [
        "kernel-mptcp",
        "userspace-olia",
    ]


def _goal3_runs(shares: dict[str, list[float]]) -> list[dict]:
    return [
        _run(v, i, client_report={"subflow_samples": _samples(s)})
        for v, ss in shares.items()
        for i, s in enumerate(ss)
    ]


@pytest.mark.parametrize(
    ("lia", "verdict"),
    [
        ([0.10, 0.12, 0.11], "agrees"),  # less on the congested path than uncoupled's 0.25
        ([0.35, 0.36, 0.34], "disagrees"),
        ([0.05, 0.45, 0.25], "inconclusive"),
    ],
)
def test_goal3_less_on_the_congested_path_than_uncoupled(lia, verdict):
    runs = _goal3_runs({"userspace-reno": [0.25, 0.26, 0.24], "userspace-lia": lia})
    shares = cc.congested_shares(runs, CONGESTED, 3.0)
    (c,) = cc.congested_path_claims(shares, "mp1")
    assert c.outcome == verdict, c
    assert "userspace-reno" in c.compared


def test_goal3_without_the_uncoupled_control_is_not_measured():
    runs = _goal3_runs({"userspace-olia": [0.1, 0.1]})
    (c,) = cc.congested_path_claims(cc.congested_shares(runs, CONGESTED, 3.0), "mp1")
    assert c.outcome == "not measured"


@pytest.mark.parametrize(
    ("olia", "lia", "verdict"),
    [
        ([9.0, 9.2, 8.8], [7.0, 7.1, 6.9], "agrees"),
        ([6.0, 6.1, 5.9], [7.0, 7.1, 6.9], "disagrees"),
        ([7.0, 9.0, 5.0], [7.0, 7.1, 6.9], "inconclusive"),
    ],
)
def test_khalili_single_path_users_keep_more_beside_olia(olia, lia, verdict):
    runs = [
        _run(v, i, background=[{"goodput_mbit": g, "goodput_steady_mbit": g}])
        for v, gs in (("userspace-olia", olia), ("userspace-lia", lia))
        for i, g in enumerate(gs)
    ]
    (c,) = cc.single_path_claims(runs)
    assert c.outcome == verdict, c
    # "lia" is a suffix of "olia": the groups must not be mixed up
    assert "userspace-olia runs - userspace-lia runs" in c.compared


def test_single_path_goodput_sums_the_users_and_needs_each():
    two = [{"goodput_steady_mbit": 3.0}, {"goodput_steady_mbit": 4.0}]
    assert cc.single_path_goodput({"background": two}) == 7.0
    assert cc.single_path_goodput({"background": [*two, {"goodput_mbit": 1}]}) is None


def _campaign(tmp_path: Path, spec: dict, runs: list[dict]) -> Path:
    """A finished campaign folder as the runner writes it (traffic reports apart)."""
    d = tmp_path / "camp"
    for r in runs:
        tdir = d / "traffic" / r["label"]
        tdir.mkdir(parents=True)
        (tdir / "main-client.json").write_text(json.dumps(r.pop("client_report")))
        for k in ("server_report", "capture"):
            r.pop(k)
    (d / "metrics.json").write_text(json.dumps({"runs": runs, "summary": []}))
    (d / "metadata.json").write_text(
        json.dumps({"experiment": "fixture", "description": "x", "claims": spec})
    )
    return d


def test_the_campaign_report_judges_the_claims_its_file_names(tmp_path):
    """With [claims] check = congested_path the report states goal 3, and not the shared
    bottleneck's "no more than one TCP" (these runs have background flows too)."""
    runs = _goal3_runs({"userspace-reno": [0.25, 0.26, 0.24], "userspace-lia": [0.1, 0.12, 0.11]})
    spec = {"check": "congested_path", "path": "mp1", "addr": CONGESTED, "warmup_s": 3.0}
    d = _campaign(tmp_path, spec, runs)
    checked, excluded = claims(d)
    assert [(c.short, c.outcome) for c in checked] == [
        ("userspace-lia less on the congested path than uncoupled", "agrees")
    ]
    assert excluded == []
    page = write_campaign_report(d).read_text()
    assert "RFC 6356 goal 3" in page and "no more than one TCP" not in page
    assert (d / "figures" / "claims-congested_path.png").exists()


# ---- [claims] in an experiment file ---------------------------------------------------------

FILE = """
name = "e"
stacks = ["tcp", "userspace"]
[topology]
name = "two_bottlenecks"
[traffic]
client = "mpc"
server = "mps"
duration_s = 1
[metrics]
warmup_s = 0.5
[claims]
"""


@pytest.mark.parametrize(
    ("claims_text", "field", "words"),
    [
        ('check = "goal2"', "claims.check", "unknown check 'goal2'"),
        ("path = 'mp1'", "claims.check", "missing"),
        ('check = "congested_path"', "claims.path", "missing"),
        ('check = "congested_path"\npath = "nosuch"', "claims.path", "no path 'nosuch'"),
        ('check = "congested_path"\npath = "tcp"', "claims.path", "starts at tcpc"),
        ('check = "best_path"\ntolerance = 2', "claims.tolerance", "must be in [0, 1)"),
        ('check = "best_path"\ntolerance = "5%"', "claims.tolerance", "expected"),
        ('check = "single_path_users"\ntolerance = 0.1', "claims.tolerance", "only for"),
        ('check = "best_path"\npath = "mp1"', "claims.path", "only for congested_path"),
        ('check = "best_path"\nmargin = 1', "claims.margin", "unknown key"),
        ('check = ["best_path", "goal2"]', "claims.check[1]", "unknown check 'goal2'"),
        ("check = []", "claims.check", "empty list"),
        ('check = ["share", "best_path"]', "claims.check", "judged alone"),
        ('check = ["single_path_users", "congested_path"]', "claims.path", "missing"),
    ],
)
def test_bad_claims_name_the_field(tmp_path, claims_text, field, words):
    p = tmp_path / "e.toml"
    p.write_text(FILE + claims_text + "\n")
    with pytest.raises(ExperimentError) as e:
        load_experiment(p)
    assert e.value.field == field and words in str(e.value), str(e.value)
    assert str(p) in str(e.value)


def test_best_path_needs_the_single_tcp_reference(tmp_path):
    p = tmp_path / "e.toml"
    p.write_text(FILE.replace('["tcp", "userspace"]', '["userspace"]') + 'check = "best_path"\n')
    with pytest.raises(ExperimentError) as e:
        load_experiment(p)
    assert e.value.field == "claims.check" and "tcp stack" in str(e.value)


def test_congested_path_resolves_the_paths_client_address(tmp_path):
    p = tmp_path / "e.toml"
    p.write_text(FILE + 'check = "congested_path"\npath = "mp2"\n')
    assert load_experiment(p).claims == {
        "check": "congested_path",
        "path": "mp2",
        "warmup_s": 0.5,
        "addr": "10.0.2.1",  # the second link of two_bottlenecks, the client's end
    }


@pytest.mark.parametrize(
    ("name", "check", "runs"),
    [
        ("coupled_cc_best_path", "best_path", 30),
        ("coupled_cc_congested", "congested_path", 20),
        ("coupled_cc_khalili", ["single_path_users", "congested_path"], 20),
    ],
)
def test_shipped_campaigns_state_their_claims_at_5_repetitions(name, check, runs):
    exp = load_experiment(SHIPPED / f"{name}.toml")
    assert exp.repetitions == 5 and exp.claims["check"] == check
    assert len(resolve_runs(exp)) == runs
    assert {r.variant for r in resolve_runs(exp)} >= {"userspace-lia", "userspace-olia"}


def test_two_bottlenecks_paths_cross_disjoint_bottlenecks():
    """mp1 and the competitors' path share bottleneck a; mp2 crosses b alone."""
    topo = load_topology("two_bottlenecks")
    links = {p: resolve_path(topo, p).links for p in topo.paths}
    assert "bn_a" in links["mp1"] and "bn_b" not in links["mp1"]
    assert "bn_b" in links["mp2"] and "bn_a" not in links["mp2"]
    assert "bn_a" in links["tcp"] and "bn_b" not in links["tcp"]


def test_a_list_of_checks_judges_each_in_its_order(tmp_path):
    runs = _goal3_runs({"userspace-reno": [0.25, 0.26, 0.24], "userspace-olia": [0.1, 0.12, 0.11]})
    runs += [
        _run("userspace-lia", i, client_report={"subflow_samples": _samples(0.2)}) for i in range(3)
    ]
    spec = {
        "check": ["single_path_users", "congested_path"],
        "path": "mp1",
        "addr": CONGESTED,
        "warmup_s": 3.0,
    }
    shorts = [c.short for c in cc.claims_for(spec, runs)]
    assert shorts == [
        "single-path users get more beside OLIA than beside LIA",
        "userspace-olia less on the congested path than uncoupled",
        "userspace-lia less on the congested path than uncoupled",
    ]
    assert set(cc.run_value(spec, runs[0])) == {"congested_path_share", "single_path_steady_mbit"}
    d = _campaign(tmp_path, spec, runs)
    page = write_campaign_report(d).read_text()
    assert "RFC 6356 goal 3" in page and "Khalili et al. 2013: what" in page
