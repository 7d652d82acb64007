"""events.json: link events in one format, written and read by this module only.

The experiment runner writes it (RUN/events.json for a campaign, RUN/analysis/<run>/events.json
for each run's view) and the analysis reads it; nobody else looks inside. The file is a list of
runs:

    [{"label": "kernel-mptcp/rep0",     # "<stack>/<rep>": the captures under pcap/<stack>/<rep>/
      "t0_wall": 1795000000.123,        # epoch seconds of the run's start (the traffic's t0)
      "events": [{"at": 5.0,            # planned, seconds from t0_wall
                  "actual": 5.0004,     # when the change took effect, seconds from t0_wall
                  "link": "wifi", "action": "down", ...}],
      ...}]                             # anything else the writer adds is kept

Every time in the file counts from its run's `t0_wall`; epoch times exist only in memory
(`absolute`). A label of null applies to every capture group (a hand-made single run).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


class EventsFormatError(ValueError):
    """events.json is not in the format above; the message names the file and the field."""


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def run_entry(
    label: str | None, t0_wall: float, events: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    """One run's entry. `events` as testbed.events.EventRun logs them: `at` and `actual` in
    seconds from the run's start, which is `t0_wall` on the wall clock."""
    entry = {
        **extra,
        "label": label,
        "t0_wall": float(t0_wall),
        "events": [dict(e) for e in events],
    }
    check(entry, "entry")
    return entry


def check(entry: Any, where: str) -> None:
    if not isinstance(entry, dict):
        raise EventsFormatError(f"{where}: expected an object with label, t0_wall, events")
    if not _num(entry.get("t0_wall")):
        raise EventsFormatError(
            f"{where}.t0_wall: expected epoch seconds, got {entry.get('t0_wall')!r}"
        )
    if not isinstance(entry.get("events"), list):
        raise EventsFormatError(f"{where}.events: expected a list")
    for i, e in enumerate(entry["events"]):
        if not isinstance(e, dict) or not _num(e.get("at")):
            raise EventsFormatError(f"{where}.events[{i}].at: expected seconds from t0_wall")
        a = e.get("actual")
        # seconds from the run's start: never an epoch (a run is not 30 years long)
        if a is not None and (not _num(a) or a > 1e6):
            raise EventsFormatError(
                f"{where}.events[{i}].actual: expected seconds from t0_wall, got {a!r}"
            )


def write_events(path: str | Path, entries: list[dict[str, Any]]) -> Path:
    path = Path(path)
    for i, e in enumerate(entries):
        check(e, f"{path}[{i}]")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries, indent=1, default=str))
    return path


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """The runs' entries; [] when the file is missing; EventsFormatError when it is not ours."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except ValueError as e:
        raise EventsFormatError(f"{path}: not JSON ({e})") from e
    if not isinstance(data, list):
        raise EventsFormatError(f"{path}: expected a list of runs")
    for i, e in enumerate(data):
        check(e, f"{path}[{i}]")
    return data


def for_group(entries: list[dict[str, Any]], stack: str, rep: str) -> dict[str, Any] | None:
    """The entry of the captures under pcap/<stack>/<rep>/ (or the one with a null label)."""
    for e in entries:
        if e.get("label") == f"{stack}/{rep}":
            return e
    return next((e for e in entries if e.get("label") is None), None)


def absolute(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The entry's events with `time` in epoch seconds (when the change took effect; the planned
    time when the log has no `actual`) and `t` in seconds from t0_wall."""
    out = []
    for e in entry["events"]:
        t = e["actual"] if e.get("actual") is not None else e["at"]
        out.append({**e, "t": float(t), "time": entry["t0_wall"] + float(t)})
    return out


def rows(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table rows (run, link, action, at_s, actual_s), all in seconds from the run's start."""
    return [
        {
            "run": e.get("label") or "",
            "link": x.get("link"),
            "action": x.get("action"),
            "at_s": x.get("at"),
            "actual_s": x.get("actual"),
        }
        for e in entries
        for x in e["events"]
    ]
