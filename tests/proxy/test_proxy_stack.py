"""The `userspace-proxy` stack: an experiment's unmodified traffic tool over our MPTCP.

A short run through the same code as ``./inv run``, both directions on two_path: the data is
intact (the tool's own sha256s), the goodput beats the best single path, the metrics see two
subflows that both carried data (the proxies' samples in the tool's report), and the proxies'
JSON lines in the run's logs show one MPTCP connection at each end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.config import load_experiment
from experiments.errors import ExperimentError
from experiments.runner import run_experiment

TINY = """
name = "proxy_{direction}"
description = "test run"
seed = 3
repetitions = 1
stacks = ["userspace-proxy"]

[topology]
name = "two_path"

[traffic]
client = "client"
server = "server"
kind = "bulk"
direction = "{direction}"
duration_s = 4

[stack.userspace-proxy]
limits = {{ subflows = 2, add_addr_accepted = 2 }}

[metrics]
warmup_s = 1.0
"""


def proxy_lines(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.startswith("{")]


@pytest.mark.net
@pytest.mark.parametrize("direction", ["download", "upload"])
def test_traffic_tool_over_our_mptcp(tmp_path, direction: str) -> None:
    p = tmp_path / "x.toml"
    p.write_text(TINY.format(direction=direction))
    res = run_experiment(
        load_experiment(p), results_root=tmp_path / "results", progress=False, analyze=False
    )
    assert res.complete
    (m,) = res.runs
    assert m.ok and m.intact, m.errors
    print(direction, "goodput steady", m.goodput_steady_mbit)
    assert m.goodput_steady_mbit > 21, m.goodput_steady_mbit  # more than wifi alone
    # the proxies' view in the tool's report (--annotate): what metrics read for every stack
    assert m.max_subflows == 2 and m.mptcp_fallback is False, (m.max_subflows, m.mptcp_fallback)
    # keyed "local->remote" as the receiver sees them; the client's end is wifi and lte
    end = 0 if direction == "download" else 1
    by_addr = {k.split("->")[end].rsplit(":", 1)[0]: v for k, v in m.subflow_bytes.items()}
    assert set(by_addr) == {"10.0.1.1", "10.0.2.1"}, m.subflow_bytes
    assert all(v > 100_000 for v in by_addr.values()), by_addr
    logs = res.run_dir / "logs" / "userspace-proxy" / "rep1"
    key = "bytes_received" if direction == "download" else "bytes_sent"
    for role in ("client", "server"):
        lines = proxy_lines(logs / f"main-{role}.stderr")
        conns = [x for x in lines if x["event"] == "conn"]
        summary = [x for x in lines if x["event"] == "summary"]
        assert len(conns) == 1 and "error" not in conns[0], conns
        assert summary and summary[0]["completed"] == 1 and summary[0]["mptcp"] == 1
        if role == "client":
            subs = conns[0]["mptcp"]["subflows"]
            total = sum(s[key] for s in subs)
            assert len([s for s in subs if s[key] > total // 20]) == 2, subs


def test_options_are_checked(tmp_path) -> None:
    bad = TINY.format(direction="upload").replace("subflows = 2", "subflows = 9")
    p = tmp_path / "x.toml"
    p.write_text(bad)
    with pytest.raises(ExperimentError) as info:
        load_experiment(p)
    assert info.value.field == "stack.userspace-proxy.limits", info.value
