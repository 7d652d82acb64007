"""Real applications as a flow kind: the sans-I/O half (config checks, placeholders, parsers).

An experiment's flow of ``kind = "app"`` runs an unmodified program on each end instead of our
traffic tool::

    [traffic]
    kind = "app"
    client_host = "client"                   # the hosts (defaults: "client", "server")
    server_host = "server"
    port = 5201
    server = ["iperf3", "-s", "-1", "-B", "{listen_addr}", "-p", "{port}"]
    client = ["iperf3", "-c", "{server_addr}", "-p", "{port}", "-t", "4", "-J", "-R"]
    parse = "iperf3"                         # how the client's stdout becomes metrics
    duration_s = 4                           # how long it should take; stopped after
    timeout_s = 30                           # duration_s + timeout_s

Why argv lists and placeholders rather than a shell line: the stack under test has to wrap the
program (``mptcpize run`` for kernel MPTCP, our transparent proxy for our stack) and move the
server's listening address and port (behind our proxy it listens on loopback), which only works
on a command it can take apart; and no shell means no quoting surprises.

Placeholders (``{name}``, Python format syntax; ``{{`` for a literal brace):
``{server_addr}`` the server host's address (on its first link), ``{client_addr}`` the client
host's, ``{port}`` the port the program must use (the server: where it listens, the client:
where it connects), ``{listen_addr}`` where a server binds (0.0.0.0, or 127.0.0.1 behind our
proxy), ``{workdir}`` an empty folder of this end's own for the run (removed after it),
``{python}`` the host's Python, ``{repo}`` this checkout on the host, ``{seed}`` the run's
payload seed, ``{duration_s}`` the flow's duration.

The programs' stdout and stderr are kept in the run's logs and their exit codes in metrics.json;
a parser (``parse``) turns the client's stdout into the run's metrics: ``iperf3`` (its ``-J``
report: goodput, retransmits, intervals), ``page_load`` (experiments/webclient.py's JSON: page
load times), ``video`` (webclient.py video: startup delay, rebuffering, mean bitrate), ``none``
(exit codes only).
"""

from __future__ import annotations

import json
import statistics
import string
from dataclasses import dataclass
from typing import Any

from experiments.errors import ExperimentError

PLACEHOLDERS = (
    "server_addr",
    "client_addr",
    "port",
    "listen_addr",
    "workdir",
    "python",
    "repo",
    "seed",
    "duration_s",
)
PARSERS = ("none", "iperf3", "page_load", "video")
# the keys of an app flow ([traffic] or [[background]] with kind = "app")
APP_KEYS = {
    "kind",
    "client",
    "server",
    "client_host",
    "server_host",
    "parse",
    "port",
    "direction",
    "duration_s",
    "timeout_s",
    "ready_timeout_s",
    "server_grace_s",
}


@dataclass(frozen=True)
class AppValues:
    """What the placeholders of one end stand for in one run."""

    server_addr: str
    client_addr: str
    port: int
    listen_addr: str
    workdir: str
    python: str
    repo: str
    seed: int
    duration_s: float

    def as_dict(self) -> dict[str, str]:
        d = {k: str(getattr(self, k)) for k in PLACEHOLDERS}
        d["duration_s"] = f"{self.duration_s:g}"
        return d


def check_argv(source: str, where: str, value: Any) -> tuple[str, ...]:
    """A program's argv as the file gives it: a non-empty list of strings whose placeholders
    are known. The error names the element (``traffic.client[3]``)."""
    if not isinstance(value, list) or not value:
        raise ExperimentError(
            source,
            where,
            f"an app flow's {where.rpartition('.')[2]} is a list of "
            f"arguments (the program first), got {value!r}",
        )
    for i, arg in enumerate(value):
        w = f"{where}[{i}]"
        if not isinstance(arg, str):
            raise ExperimentError(source, w, f"expected a string, got {arg!r}")
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(arg) if f is not None]
        except ValueError as e:
            raise ExperimentError(source, w, f"bad placeholder in {arg!r}: {e}") from None
        for f in fields:
            if f not in PLACEHOLDERS:
                raise ExperimentError(
                    source,
                    w,
                    f"unknown placeholder {{{f}}} in {arg!r} (known: "
                    f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)}; {{{{ for a brace)",
                )
    if not value[0].strip():
        raise ExperimentError(source, f"{where}[0]", "the program's name is empty")
    return tuple(value)


def check_parse(source: str, where: str, value: Any) -> str:
    if value not in PARSERS:
        raise ExperimentError(source, where, f"must be one of {', '.join(PARSERS)}, not {value!r}")
    return value


def expand(argv: tuple[str, ...] | list[str], values: AppValues) -> list[str]:
    """The argv with its placeholders filled in."""
    d = values.as_dict()
    return [a.format(**d) for a in argv]


# ---------------------------------------------------------------------------------------------
# Parsers: a program's stdout -> the run's metrics (a flat dict of numbers, plus details)


def parse_output(parser: str, stdout: str) -> dict[str, Any]:
    """The metrics `parser` finds in a client's stdout; {"error": ...} when there are none."""
    if parser == "none":
        return {}
    try:
        if parser == "iperf3":
            return parse_iperf3(stdout)
        if parser == "page_load":
            return parse_page_load(stdout)
        if parser == "video":
            return parse_video(stdout)
    except (ValueError, KeyError, TypeError) as e:
        return {"error": f"{parser} output not understood: {type(e).__name__}: {e}"}
    raise ValueError(f"unknown parser {parser!r}")


def _last_json(text: str) -> dict[str, Any]:
    """The last JSON object in `text`: a one-line report, or a pretty-printed one (iperf3 -J)
    that starts on a line of its own."""
    lines = text.strip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("{"):
            try:
                obj = json.loads("\n".join(lines[i:]))
            except ValueError:
                continue
            if isinstance(obj, dict):
                return obj
    raise ValueError("no JSON object in the program's output")


def parse_iperf3(text: str) -> dict[str, Any]:
    """iperf3 -J: the receiver's goodput, the sender's retransmits, and the intervals as
    cumulative [t, bytes] samples (the receiving side's view as the client reports it)."""
    rep = _last_json(text)
    if rep.get("error"):
        return {"error": f"iperf3: {rep['error']}"}
    end = rep["end"]
    recv, sent = end["sum_received"], end["sum_sent"]
    reverse = bool(rep.get("start", {}).get("test_start", {}).get("reverse"))
    samples, total = [[0.0, 0]], 0
    for iv in rep.get("intervals", []):
        s = iv["sum"]
        total += int(s["bytes"])
        samples.append([round(float(s["end"]), 3), total])
    out: dict[str, Any] = {
        "goodput_mbit": round(float(recv["bits_per_second"]) / 1e6, 3),
        "bytes": int(recv["bytes"]),
        "duration_s": round(float(recv["seconds"]), 3),
        "sent_bytes": int(sent["bytes"]),
        "retransmits": sent.get("retransmits"),
        "reverse": reverse,
        "samples": samples,
    }
    cpu = end.get("cpu_utilization_percent") or {}
    if cpu:
        out["cpu_host_pct"] = cpu.get("host_total")
        out["cpu_remote_pct"] = cpu.get("remote_total")
    return out


def parse_page_load(text: str) -> dict[str, Any]:
    """experiments/webclient.py's report: each load's time and whether every object came."""
    rep = _last_json(text)
    loads = rep["loads"]
    if not loads:
        return {"error": "no page load finished"}
    times = [float(ld["page_load_s"]) for ld in loads]
    return {
        "page_load_s": round(statistics.median(times), 4),
        "page_load_max_s": round(max(times), 4),
        "loads": loads,
        "objects": int(loads[0]["objects"]),
        "bytes": int(loads[0]["bytes"]),
        "connections": int(rep.get("connections", 0)),
        "complete": all(not ld.get("errors") for ld in loads),
    }


def parse_video(text: str) -> dict[str, Any]:
    """experiments/webclient.py video's report: startup delay, rebuffering, mean bitrate."""
    v = _last_json(text)["video"]
    keep = ("startup_delay_s", "rebuffer_s", "stalls", "mean_bitrate_kbit", "switches")
    out: dict[str, Any] = {k: v[k] for k in keep}
    out["bitrates_kbit"] = v["bitrates_kbit"]
    out["throughput_kbit"] = v["throughput_kbit"]
    out["complete"] = not v["errors"] and v["segments"] == v["segments_total"]
    if v["errors"]:
        out["errors"] = v["errors"]
    return out


def outages(events: list[dict[str, Any]], walls: list[float]) -> list[tuple[float, float]]:
    """(down, up) wall times of each link's outages (up: inf when it never came back)."""
    out, down = [], {}
    for ev, t in zip(events, walls, strict=True):
        if ev["action"] == "down":
            down.setdefault(ev["link"], t)
        elif ev["action"] == "up" and ev["link"] in down:
            out.append((down.pop(ev["link"]), t))
    out += [(t, float("inf")) for t in down.values()]
    return sorted(out)


def loads_around_events(
    loads: list[dict[str, Any]], cuts: list[tuple[float, float]]
) -> dict[str, float | int | None]:
    """Page loads split by the link outages `cuts` ((down, up) on the wall clock, which the
    hosts share): loads clear of every outage (clean), loads during which a link went down
    (cut), and loads that began while a link was down (outage: with MPTCP a new connection
    still opens its first subflow on the primary path). Median time of each, and counts."""
    groups: dict[str, list[float]] = {"clean": [], "cut": [], "outage": []}
    for ld in loads:
        t0, t1 = float(ld["start_wall"]), float(ld["end_wall"])
        if any(t0 <= down <= t1 for down, _ in cuts):
            key = "cut"
        elif any(down < t0 < up for down, up in cuts):
            key = "outage"
        elif any(t0 <= up and down <= t1 for down, up in cuts):
            key = "outage"  # overlaps the end of an outage it did not start in
        else:
            key = "clean"
        groups[key].append(float(ld["page_load_s"]))
    out: dict[str, float | int | None] = {}
    for key, times in groups.items():
        out[f"page_load_{key}_s"] = round(statistics.median(times), 4) if times else None
        out[f"loads_{key}"] = len(times)
    return out


def proxy_records(stderr: str) -> list[dict[str, Any]]:
    """Our transparent proxy's JSON lines (``--json`` under a command: on its stderr, among the
    program's own lines)."""
    out = []
    for line in stderr.splitlines():
        if line.startswith('{"event"'):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out
