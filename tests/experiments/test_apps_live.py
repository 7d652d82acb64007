"""Real programs as flows (kind = "app"), live: iperf3 and an nginx page load over each stack,
through the same code as ``./inv run``, short (each test a few seconds of traffic).

Each checks what the stack is for: plain TCP moves the data over wifi alone; kernel MPTCP under
`mptcpize run` really ran MPTCP (the client's nstat counters show the MP_CAPABLE handshake and
a join); our stack through its proxy carried the connections over two subflows (its JSON lines
in the program's stderr). The programs' output, exit codes and nginx's own logs are in the
run's folder, and nothing of the run is left on the machine (its processes and folders).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from experiments.config import load_experiment
from experiments.runner import run_experiment

STACKS = ["tcp", "kernel-mptcp", "userspace"]

HEAD = """
name = "{name}"
seed = 5
repetitions = 1
stacks = ["{stack}"]
[topology]
name = "two_path"
[stack.kernel-mptcp]
endpoints = [{{ host = "client", link = "lte", flags = ["subflow"] }}]
limits = {{ subflows = 2, add_addr_accepted = 2 }}
[stack.userspace]
limits = {{ subflows = 2, add_addr_accepted = 2 }}
"""

IPERF3 = """
[traffic]
kind = "app"
port = 5201
duration_s = 2
timeout_s = 15
server = ["iperf3", "-s", "-1", "-B", "{{listen_addr}}", "-p", "{{port}}", "-J"]
client = ["iperf3", "-c", "{{server_addr}}", "-p", "{{port}}", "-t", "{{duration_s}}", "-R", "-J"]
parse = "iperf3"
"""

PAGE = """
[traffic]
kind = "app"
port = 8080
duration_s = 2
timeout_s = 15
server = ["{{python}}", "{{repo}}/experiments/webserve.py", "--workdir", "{{workdir}}",
          "--listen", "{{listen_addr}}", "--port", "{{port}}", "--seed", "{{seed}}"]
client = ["{{python}}", "{{repo}}/experiments/webclient.py", "page",
          "--url", "http://{{server_addr}}:{{port}}/index.html", "--connections", "6"]
parse = "page_load"
server_grace_s = 0
"""


def run(tmp_path: Path, name: str, stack: str, traffic: str):
    p = tmp_path / f"{name}.toml"
    p.write_text((HEAD + traffic).format(name=name, stack=stack))
    res = run_experiment(
        load_experiment(p), results_root=tmp_path / "results", progress=False, analyze=False
    )
    assert res.complete
    (m,) = res.runs
    return res, m


def processes_with(text: str) -> list[str]:
    """Command lines of the live processes that mention `text` (the run's own folders)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmd:
            found.append(f"{pid}: {cmd}")
    return found


def check_carried(m, stack: str) -> None:
    """The stack under test carried the program's connections."""
    if stack == "kernel-mptcp":
        client = m.mptcp_counters.get("client", {})
        assert client.get("MPCapableSYNACKRX", 0) >= 1, m.mptcp_counters
        assert client.get("MPJoinSynAckRx", 0) >= 1, m.mptcp_counters
        assert (m.mptcp_fallback, m.max_subflows) == (False, 2), m.mptcp_counters
        assert m.outcome.startswith("MPTCP, 2 subflows"), m.outcome
    elif stack == "userspace":
        conns = [r for r in m.app["client"]["proxy"] if r["event"] == "conn"]
        assert conns and all(not r["mptcp"]["fallback"] for r in conns), conns
        assert m.max_subflows == 2, m.max_subflows
        assert m.outcome.startswith("MPTCP, 2 subflows"), m.outcome
    else:
        assert not m.mptcp_counters.get("client"), m.mptcp_counters


@pytest.mark.net
@pytest.mark.parametrize("stack", STACKS)
def test_iperf3_over_each_stack(tmp_path, stack):
    res, m = run(tmp_path, "iperf3_live", stack, IPERF3)
    assert m.ok and m.intact, m.errors
    assert m.app["client"]["exit_code"] == 0 and m.app["server"]["exit_code"] == 0
    g = m.app["metrics"]["goodput_mbit"]
    print(stack, "iperf3 goodput", g, "retransmits", m.app["metrics"].get("retransmits"))
    # wifi is 20 Mbit/s: TCP gets most of it; MPTCP adds lte (10 Mbit/s) to it
    assert (14 < g < 20.5) if stack == "tcp" else (g > 20), g
    check_carried(m, stack)
    logs = res.run_dir / "logs" / stack / "rep1"
    report = json.loads((logs / "main-client.stdout").read_text())  # iperf3's own, kept whole
    assert report["end"]["sum_received"]["bytes"] == m.bytes
    metrics = json.loads((res.run_dir / "metrics.json").read_text())
    assert metrics["summary"][0]["app_goodput_mbit"]["mean"] == g


@pytest.mark.net
@pytest.mark.parametrize("stack", STACKS)
def test_page_load_over_each_stack(tmp_path, stack):
    res, m = run(tmp_path, "page_live", stack, PAGE)
    assert m.ok and m.intact, m.errors
    parsed = m.app["parsed"]
    assert parsed["objects"] == 100 and parsed["bytes"] > 2_000_000, parsed
    t = m.app["metrics"]["page_load_s"]
    print(stack, "page load", t)
    # 2 MB: at least 0.8 s over wifi's 20 Mbit/s alone; more than a few seconds is a stall
    assert (0.8 if stack == "tcp" else 0.5) < t < 5, t
    check_carried(m, stack)
    logs = res.run_dir / "logs" / stack / "rep1"
    access = (logs / "main-server-access.log").read_text().splitlines()
    assert len(access) == 101 and all('" 200 ' in ln for ln in access), access[:3]
    assert (logs / "main-server-error.log").exists()
    # nginx was stopped after its client (SIGTERM), which is no error
    assert m.app["server"]["exit_code"] in (0, -15)
    # nothing of the run is left: no process of its folder, no folder
    run_id = res.run_dir.name
    assert processes_with(f"mptcp-lab-{run_id}") == []
    assert not list(Path("/tmp").glob(f"mptcp-lab-{run_id}*"))


@pytest.mark.net
def test_a_server_that_does_not_start_is_a_clear_error(tmp_path):
    bad = IPERF3.replace('"-s", "-1"', '"-s", "--no-such-option"')
    p = tmp_path / "bad.toml"
    p.write_text((HEAD + bad).format(name="bad", stack="tcp"))
    with pytest.raises(RuntimeError, match=r"app server on server: exited with 1 on port 5201"):
        run_experiment(
            load_experiment(p), results_root=tmp_path / "results", progress=False, analyze=False
        )
    (run_dir,) = (tmp_path / "results" / "bad").iterdir()
    err = (run_dir / "logs" / "tcp" / "rep1" / "main-server.stderr").read_text()
    assert "no-such-option" in err  # the program's own words are kept


VIDEO = """
[traffic]
kind = "app"
port = 8080
duration_s = 3
timeout_s = 15
server = ["{{python}}", "{{repo}}/experiments/webserve.py", "--workdir", "{{workdir}}",
          "--listen", "{{listen_addr}}", "--port", "{{port}}", "--seed", "{{seed}}",
          "--objects", "1", "--total-bytes", "1000",
          "--video", "--segments", "6", "--segment-s", "1"]
client = ["{{python}}", "{{repo}}/experiments/webclient.py", "video",
          "--base", "http://{{server_addr}}:{{port}}/video/", "--buffer-s", "3"]
parse = "video"
server_grace_s = 0
"""


@pytest.mark.net
@pytest.mark.parametrize("stack", STACKS)
def test_video_over_each_stack(tmp_path, stack):
    res, m = run(tmp_path, "video_live", stack, VIDEO)
    assert m.ok and m.intact, m.errors
    fig = m.app["metrics"]
    print(stack, "video", fig)
    assert 0 < fig["startup_delay_s"] < 1 and fig["rebuffer_s"] < 0.5, fig
    # the first segment at the lowest rung, then what the path affords: wifi's 20 Mbit/s
    # reaches the 10 Mbit/s rung (0.8 x 18 > 10), both paths the 20 Mbit/s one at best. Our
    # stack carries the video through its userspace proxy, which is CPU-bound on a loaded
    # 2-core machine (a CI-like run: 5 Mbit/s rung only; issue 22's speed): there the player
    # must still climb above the first rung
    rates = m.app["parsed"]["bitrates_kbit"]
    assert rates[0] == 1000 and max(rates) >= (5000 if stack == "userspace" else 10000), rates
    if stack == "tcp":
        assert max(rates) == 10000, rates
    check_carried(m, stack)
