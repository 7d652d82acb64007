"""events.json: one format, written and read by analysis.events (the runner and the analysis)."""

from __future__ import annotations

import json

import pytest

from analysis.events import (
    EventsFormatError,
    absolute,
    for_group,
    read_events,
    rows,
    run_entry,
    write_events,
)
from analysis.report import events_table

T0 = 1_795_000_000.5
LOG = [  # as testbed.events.EventRun logs them: seconds from the run's start
    {"at": 5.0, "link": "wifi", "action": "down", "actual": 5.0012, "done": 5.03},
    {"at": 15.0, "link": "wifi", "action": "up", "actual": 15.0008, "done": 15.02},
]


def test_written_and_read_back(tmp_path):
    p = write_events(tmp_path / "events.json", [run_entry("kernel-mptcp/rep0", T0, LOG, run=0)])
    [e] = read_events(p)
    assert e["label"] == "kernel-mptcp/rep0" and e["run"] == 0 and e["events"] == LOG
    assert for_group([e], "kernel-mptcp", "rep0") is e and for_group([e], "tcp", "rep0") is None
    down, up = absolute(e)
    assert down["time"] == T0 + 5.0012 and down["t"] == 5.0012 and up["t"] == 15.0008
    assert read_events(tmp_path / "missing.json") == []


def test_table_is_in_seconds_from_the_start():
    t = events_table([run_entry("tcp/rep0", T0, LOG)])
    assert t["actual_s"].tolist() == ["5.001", "15.001"] and t["at_s"].tolist() == [
        "5.000",
        "15.000",
    ]
    assert rows([run_entry(None, T0, LOG)])[0]["run"] == ""


@pytest.mark.parametrize(
    "content, message",
    [
        ({"at": 5}, "expected a list of runs"),
        ([{"at": 5.0, "actual": T0 + 5, "link": "wifi"}], "[0].t0_wall: expected epoch seconds"),
        (
            [{"label": "a/0", "t0_wall": T0, "events": [{"at": 5.0, "actual": T0 + 5}]}],
            "[0].events[0].actual: expected seconds from t0_wall",
        ),
        ([{"label": "a/0", "t0_wall": T0, "events": [{"link": "x"}]}], "[0].events[0].at"),
    ],
)
def test_anything_else_is_refused_by_name(tmp_path, content, message):
    p = tmp_path / "events.json"
    p.write_text(json.dumps(content))
    with pytest.raises(EventsFormatError) as e:
        read_events(p)
    assert str(p) in str(e.value) and message in str(e.value)
    with pytest.raises(EventsFormatError):  # and never written
        write_events(p, content if isinstance(content, list) else [content])
