"""The demo report's "what this shows" paragraphs: one column per stack that has runs, the
userspace stack's appearing once it runs (rows as analysis/ writes them in metrics.json)."""

from __future__ import annotations

import json
import re

from experiments.demo import what_this_shows


def _campaign(tmp_path, name, rows):
    d = tmp_path / name / "20261201T000000Z-abcd"
    (d / "analysis").mkdir(parents=True, exist_ok=True)
    (d / "analysis" / "metrics.json").write_text(json.dumps({"rows": rows}))
    return d


def _row(stack, **kw):
    base = {"stack": stack, "rep": "rep1", "goodput_mbps": 10.0, "steady_mbps": None}
    return {**base, **kw}


def _columns(text):
    return re.findall(r"<th>([^<]+)</th>", text)


def test_failover_paragraph_stacks_side_by_side(tmp_path):
    rows = [
        _row(
            "kernel-mptcp",
            gap_s=0.9,
            recovery_s=3.1,
            efficiency=0.4,
            return_s=None,
            return_never=True,
        ),
        _row("tcp", gap_s=11.2, recovery_s=10.5, efficiency=0.0, return_s=0.4, return_never=False),
    ]
    text = what_this_shows(_campaign(tmp_path, "failover", rows))
    assert _columns(text) == ["tcp", "kernel-mptcp"]
    assert "userspace MPTCP stack has no runs here yet" in text
    wifi_again = text[text.index("wifi used again") :].split("</tr>")[0]
    assert re.findall(r"<td>([^<]+)</td>", wifi_again) == ["0.40 s", "never"]
    assert "<td>3.10 s</td>" in text and "<td>40%</td>" in text

    rows.append(_row("userspace", gap_s=0.5, recovery_s=None, efficiency=0.8, return_s=1.0))
    text = what_this_shows(_campaign(tmp_path, "failover", rows))
    assert _columns(text) == ["tcp", "kernel-mptcp", "userspace"]
    assert "no runs here yet" not in text and "not within the run" in text


def test_aggregation_paragraph_per_grid_point(tmp_path):
    rows = [
        _row(s, point=f"links.lte.delay_ms={d}", steady_mbps=g, benefit=b)
        for s, d, g, b in [
            ("tcp", 10, 19.0, -0.05),
            ("kernel-mptcp", 10, 27.0, 0.7),
            ("tcp", 40, 19.0, -0.05),
            ("kernel-mptcp", 40, 24.0, 0.4),
        ]
    ]
    text = what_this_shows(_campaign(tmp_path, "aggregation", rows))
    assert _columns(text) == ["tcp", "kernel-mptcp"]
    line = text[text.index("links.lte.delay_ms=40: aggregation benefit") :].split("</tr>")[0]
    assert re.findall(r"<td>([^<]+)</td>", line) == ["-0.05", "0.40"]
    assert what_this_shows(tmp_path / "nothing") == ""
