"""Real applications as a flow kind, sans I/O: the app flow's keys are checked and name the
field, placeholders expand, each stack wraps the program as it must, and the parsers read real
programs' output (iperf3 -J captured from real runs; experiments/webclient.py's report).

No network: these run in well under a second.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments import apps
from experiments.config import ExperimentError, load_experiment, resolve_runs
from experiments.metrics import app_run_metrics, summarize
from experiments.stacks import STACKS

DATA = Path(__file__).parent / "data"

GOOD = """
name = "app"
stacks = ["tcp", "kernel-mptcp", "userspace", "userspace-proxy"]
[topology]
name = "two_path"
[traffic]
kind = "app"
client_host = "client"
server_host = "server"
port = 5201
duration_s = 3
server = ["iperf3", "-s", "-1", "-B", "{listen_addr}", "-p", "{port}"]
client = ["iperf3", "-c", "{server_addr}", "-p", "{port}", "-t", "{duration_s}", "-J"]
parse = "iperf3"
"""
CLIENT = GOOD.splitlines()[-2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "exp.toml"
    p.write_text(text)
    return p


def test_app_flow_loads_and_resolves(tmp_path):
    exp = load_experiment(write(tmp_path, GOOD))
    t = exp.traffic
    assert (t.kind, t.client, t.server, t.parse) == ("app", "client", "server", "iperf3")
    assert t.client_argv[:2] == ("iperf3", "-c")
    runs = resolve_runs(exp)
    assert len(runs) == 4 and all(r.traffic.server_argv == t.server_argv for r in runs)
    # the server's grace after its client: 3 s unless the file says (0: SIGTERM at once)
    assert t.server_grace_s == 3.0
    zero = load_experiment(write(tmp_path, GOOD.replace("duration_s = 3", "server_grace_s = 0")))
    assert zero.traffic.server_grace_s == 0.0


def test_app_flow_grid_over_traffic_field(tmp_path):
    exp = load_experiment(write(tmp_path, GOOD + '[grid]\n"traffic.duration_s" = [2, 4]\n'))
    assert sorted({r.traffic.duration_s for r in resolve_runs(exp)}) == [2.0, 4.0]
    assert all(r.traffic.kind == "app" for r in resolve_runs(exp))


@pytest.mark.parametrize(
    ("old", "new", "field", "words"),
    [
        (CLIENT, 'client = "iperf3 -c {server_addr}"', "traffic.client", "list of arguments"),
        ('"{server_addr}", "-p"', '"{server}", "-p"', "traffic.client[2]", "placeholder {server}"),
        ('"-t", "{duration_s}"', '"-t", 3', "traffic.client[6]", "expected a string"),
        ('"{listen_addr}"', '"{listen_addr"', "traffic.server[4]", "bad placeholder"),
        ('parse = "iperf3"', 'parse = "iperf2"', "traffic.parse", "iperf3, page_load"),
        ("port = 5201", "port = 5201\nbytes = 10", "traffic.bytes", "unknown key for an app"),
        ('client_host = "client"', 'client_host = "nosuch"', "traffic.client", "no host"),
        ('server_host = "server"', "server_host = 3", "traffic.server_host", "expected str"),
        ("duration_s = 3", "duration_s = -1", "traffic.duration_s", ">= 0"),
        ("duration_s = 3", "duration_s = 3\nserver_grace_s = -1", "traffic.server_grace_s", ">= 0"),
        ('server = ["iperf3", "-s"', 'server = [""', "traffic.server[0]", "empty"),
    ],
)
def test_bad_app_config_names_the_field(tmp_path, old, new, field, words):
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    with pytest.raises(ExperimentError) as e:
        load_experiment(write(tmp_path, text))
    assert e.value.field == field, e.value
    assert words in str(e.value), e.value


def test_missing_program_names_the_field(tmp_path):
    text = "\n".join(ln for ln in GOOD.splitlines() if not ln.startswith("server ="))
    with pytest.raises(ExperimentError) as e:
        load_experiment(write(tmp_path, text))
    assert e.value.field == "traffic.server" and "missing" in str(e.value)


def test_placeholders_expand():
    v = apps.AppValues("10.0.3.2", "10.0.1.1", 8080, "0.0.0.0", "/w", "py", "/r", 7, 4.0)
    argv = apps.expand(("x", "{server_addr}:{port}", "{{lit}}", "-t", "{duration_s}"), v)
    assert argv == ["x", "10.0.3.2:8080", "{lit}", "-t", "4"]


def test_each_stack_wraps_the_program():
    argv = ["nginx", "-c", "x"]
    assert STACKS["tcp"].app_command("server", argv, python="py", port=80) == argv
    assert STACKS["tcp"].app_listen(80) == ("0.0.0.0", 80)
    k = STACKS["kernel-mptcp"].app_command("server", argv, python="py", port=80)
    assert k == ["mptcpize", "run", *argv]
    for name in ("userspace", "userspace-proxy"):
        s = STACKS[name]
        assert s.app_listen(80) == ("127.0.0.1", 10080)  # the program behind our stack
        srv = s.app_command("server", argv, python="py", port=80)
        cli = s.app_command("client", ["curl", "x"], python="py", port=80)
        assert srv[:4] == ["py", "-m", "mptcp_impl", "proxy"] and srv[-4:] == ["--", *argv]
        assert srv[srv.index("--listen") + 1] == "0.0.0.0:80"
        assert srv[srv.index("--to") + 1] == "127.0.0.1:10080"
        assert "--transparent" in cli and cli[cli.index("--ports") + 1] == "80"


def test_iperf3_json_from_a_real_run():
    rep = apps.parse_output("iperf3", (DATA / "iperf3-reverse.json").read_text())
    assert "error" not in rep
    assert 49 < rep["goodput_mbit"] < 51  # -b 50M on loopback
    assert rep["retransmits"] == 0 and rep["reverse"] is True
    assert rep["bytes"] == rep["samples"][-1][1] > 0
    assert rep["samples"][0] == [0.0, 0] and len(rep["samples"]) == 3


def test_iperf3_error_report():
    rep = apps.parse_output("iperf3", (DATA / "iperf3-refused.json").read_text())
    assert rep == {"error": "iperf3: unable to connect to server: Connection refused"}


def test_iperf3_output_not_json():
    rep = apps.parse_output("iperf3", "iperf3: error - unable to connect\n")
    assert "not understood" in rep["error"]


def _load(start: float, dt: float, errors: list[str] | None = None) -> dict:
    return {
        "start_wall": start,
        "end_wall": start + dt,
        "page_load_s": dt,
        "objects": 100,
        "bytes": 2_000_000,
        "connections": 6,
        "errors": errors or [],
    }


def test_page_load_report_and_the_loads_around_a_cut():
    loads = [_load(100.0, 1.0), _load(101.5, 4.0), _load(105.6, 2.0), _load(108.0, 1.2)]
    text = "noise\n" + json.dumps({"connections": 6, "loads": loads}) + "\n"
    rep = apps.parse_output("page_load", text)
    assert rep["page_load_s"] == 1.6 and rep["page_load_max_s"] == 4.0 and rep["complete"]
    # wifi down at 102.0 (inside the 2nd load), up at 106.0 (the 3rd began in the outage)
    cuts = apps.outages(
        [{"action": "down", "link": "wifi"}, {"action": "up", "link": "wifi"}], [102.0, 106.0]
    )
    assert cuts == [(102.0, 106.0)]
    got = apps.loads_around_events(loads, cuts)
    assert got["page_load_clean_s"] == 1.1 and got["loads_clean"] == 2
    assert got["page_load_cut_s"] == 4.0 and got["loads_cut"] == 1
    assert got["page_load_outage_s"] == 2.0 and got["loads_outage"] == 1
    # a link that never comes back: every later load is in the outage
    assert apps.outages([{"action": "down", "link": "wifi"}], [102.0]) == [(102.0, float("inf"))]


def test_app_run_metrics_exit_codes_and_parsed_figures():
    loads = [_load(100.0, 1.0), _load(101.5, 4.0, ["o/001.js: HTTP 404"])]
    client = {
        "role": "client",
        "exit_code": 1,
        "stderr_tail": [],
        "parsed": apps.parse_output("page_load", json.dumps({"loads": loads})),
    }
    server = {"role": "server", "exit_code": -15, "stderr_tail": []}
    kw = dict(
        label="tcp/rep1",
        stack="tcp",
        point=0,
        point_values={},
        rep=1,
        direction="download",
        events=[],
        event_times=[],
        path_rates={},
        warmup_s=1.0,
        window_s=10.0,
    )
    m = app_run_metrics(client=client, server=server, **kw)
    assert not m.intact and not m.ok and "client exited 1" in m.errors[0]
    assert m.app["metrics"]["page_load_s"] == 2.5 and m.app["server"]["exit_code"] == -15
    ok = dict(
        client, exit_code=0, parsed=apps.parse_output("page_load", json.dumps({"loads": loads[:1]}))
    )
    m2 = app_run_metrics(client=ok, server=server, **kw)  # a server we stopped is no error
    assert m2.ok and m2.intact and m2.app["metrics"]["page_load_clean_s"] == 1.0
    row = summarize([m, m2])[0]
    assert row["app_page_load_s"]["n"] == 2 and row["app_page_load_s"]["mean"] == 1.75


def test_video_report_from_a_real_run():
    """webclient.py video against webserve.py's nginx on loopback (5 segments of 1 s)."""
    rep = apps.parse_output("video", (DATA / "webclient-video.json").read_text())
    assert rep["complete"] and rep["startup_delay_s"] == 0.0035 and rep["rebuffer_s"] == 0.0
    assert rep["mean_bitrate_kbit"] == 16200.0 and rep["bitrates_kbit"][0] == 1000
    short = json.loads((DATA / "webclient-video.json").read_text())
    short["video"].update(segments=3, errors=["/video/20000.m4s?n=3: TimeoutError: timed out"])
    rep = apps.parse_output("video", json.dumps(short))
    assert not rep["complete"] and "TimeoutError" in rep["errors"][0]


def test_webserve_page_is_seeded_and_weighs_what_it_says(tmp_path):
    from experiments import webserve

    sizes = webserve.object_sizes(1, 100, 2_000_000)
    assert sum(sizes) == 2_000_000 and len(sizes) == 100 and min(sizes) >= 100
    assert (
        sizes
        == webserve.object_sizes(1, 100, 2_000_000)
        != webserve.object_sizes(2, 100, 2_000_000)
    )
    assert 2_000 < sorted(sizes)[50] < 20_000  # a web page's median object: some KB
    objs = webserve.make_page(tmp_path, 1, 20, 300_000)
    html = (tmp_path / "index.html").read_text()
    assert all(f'"/{name}" data-size="{size}"' in html for name, size in objs.items())
    assert sum(p.stat().st_size for p in (tmp_path / "o").iterdir()) == 300_000


def test_summary_table_of_the_programs_figures():
    from experiments.report import _app_lines

    row = {"point_values": {}, "stack": "tcp", "app_page_load_s": {"mean": 0.94, "std": 0.01}}
    lines = _app_lines([row, {"point_values": {}, "stack": "userspace"}])
    assert "| point | stack | page_load_s |" in lines
    assert "| - | tcp | 0.94 ± 0.01 |" in lines and "| - | userspace | - |" in lines
    assert _app_lines([{"point_values": {}, "stack": "tcp"}]) == []  # not an app campaign


def test_a_background_program_is_judged_by_its_own_word():
    from experiments.config import FlowSpec
    from experiments.runner import FlowResult, _background_results

    parsed = apps.parse_output("iperf3", (DATA / "iperf3-reverse.json").read_text())
    spec = FlowSpec(kind="app", name="bg", stack="tcp", server_argv=("x",), client_argv=("y",))
    ok = FlowResult("bg", "tcp", {"exit_code": 0, "parsed": parsed}, {"exit_code": 0})
    bad = FlowResult("bg", "tcp", {"exit_code": 0, "parsed": {"error": "iperf3: x"}}, {})
    (a, b) = _background_results([ok, bad], [spec, spec])
    assert a["intact"] and 49 < a["goodput_mbit"] < 51 and a["app"]["retransmits"] == 0
    assert not b["intact"] and b["goodput_mbit"] is None


def test_kernel_app_subflows_from_the_counters():
    from experiments.metrics import kernel_app_subflows

    # app_failover's kernel-mptcp run: 48 connections, each joined once
    c = {"MPCapableSYNTX": 48, "MPCapableSYNACKRX": 48, "MPJoinSynAckRx": 48, "MPJoinSynTx": 48}
    assert kernel_app_subflows(c) == (False, 2)
    assert kernel_app_subflows({}) == (None, 0)  # no MPTCP handshake: not MPTCP
    assert kernel_app_subflows({"MPCapableSYNACKRX": 2, "MPCapableFallbackACK": 2}) == (True, 1)


def test_a_few_connections_falling_back_is_said_not_taken_for_the_run():
    conn = {"event": "conn", "mptcp": {"fallback": False, "subflows": [{}, {}]}}
    fell = {"event": "conn", "mptcp": {"fallback": True, "subflows": [{}]}}
    client = {"exit_code": 0, "proxy": [conn, conn, fell], "parsed": {}}
    m = app_run_metrics(
        label="userspace/rep1",
        stack="userspace",
        point=0,
        point_values={},
        rep=1,
        client=client,
        server={"exit_code": 0},
        direction="download",
        events=[],
        event_times=[],
        path_rates={},
        warmup_s=1.0,
        window_s=10.0,
    )
    assert m.mptcp_fallback is False and m.max_subflows == 2
    assert m.app["parsed"]["fallback_connections"] == "1 of 3"
