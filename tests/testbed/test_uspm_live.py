"""Kernel MPTCP's userspace path manager, live: our mptcp_pm codec against this kernel (a real
connection on two_path, an ANNOUNCE the server sees as ADD_ADDR, refusals answered with the
kernel's errno and text), the kernel-mptcp stack's `pm = "userspace-*"` variants through the
runner (the second subflow opened as each mode says, seen in the client's MIB and the daemon's
timeline), and what setup changes put back (pm_type, no daemon left)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from experiments.config import load_experiment
from experiments.runner import _start_pm_monitors, run_experiment
from experiments.stacks import STACKS
from testbed.net import Testbed
from testbed.sysctl import read_sysctls
from testbed.topology import load_topology

pytestmark = pytest.mark.net
REPO = Path(__file__).resolve().parents[2]

SERVER = textwrap.dedent(
    """
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 5201)); s.listen(1); print("listening", flush=True)
    c, _ = s.accept()
    while c.recv(65536):
        pass
    """
)

# In the client's namespace: subscribe, connect over MPTCP, and on ESTABLISHED announce the lte
# address (id 5) on that connection; then two refusals. Prints one JSON object.
CLIENT = textwrap.dedent(
    """
    import json, socket, sys
    from testbed import mptcp_genl as g
    out = {}
    with g.PmSocket() as pm:
        out["groups"] = pm.family.groups
        pm.subscribe()
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
        c.connect((sys.argv[1], 5201))
        c.send(b"x" * 1000)
        ev = None
        while ev is None:
            ev = next((e for e in pm.read_events() if e["type"] == "established"), None)
        out["established"] = ev
        token = int(ev["token"], 16)
        lte = g.Addr(sys.argv[2], id=5, flags=g.FLAG_SIGNAL)
        out["announce"] = pm.request(g.announce, token, lte).errno
        try:
            pm.request(g.announce, token ^ 0xFFFFFFFF, lte)
        except g.NetlinkError as e:
            out["bad_token"] = [e.errno, e.message]
        # a token of one byte where the kernel wants four: a malformed request
        bad = g.genl(pm.family.id, g.CMD["announce"], 999, [g.nla(g.ATTR_TOKEN, b"\\x01")])
        ack = pm.send_raw(bad)
        out["malformed"] = [ack.errno, ack.message]
        out["after"] = pm.request(g.remove, token, 5).errno  # the socket still serves
        c.close()
    print(json.dumps(out))
    """
)


def _nstat(host, name: str) -> int:
    res = host.run(["nstat", "-asz", name], check=False)
    for line in res.stdout.splitlines():
        parts = line.split()
        if parts and parts[0] == name:
            return int(parts[1])
    return 0


def test_codec_against_the_kernel(tmp_path):
    """The family and its groups resolve; an ANNOUNCE on a live connection is accepted and
    reaches the server as an ADD_ADDR; a wrong token and a malformed attribute are refused with
    the kernel's errno and message, and the socket goes on serving."""
    topo = load_topology("two_path")
    with Testbed(topo, workdir=tmp_path) as tb:
        client, server = tb.host("client"), tb.host("server")
        client.run(["sysctl", "-q", "-w", "net.mptcp.pm_type=1"])
        srv = server.start([sys.executable, "-c", SERVER], stdout=subprocess.PIPE)
        srv.wait_for_line("^listening", stream="stdout", timeout=15)
        before = _nstat(server, "MPTcpExtAddAddr")
        res = client.run(
            [
                "env",
                f"PYTHONPATH={REPO}",
                sys.executable,
                "-c",
                CLIENT,
                _server_addr(tb),
                tb.addr("client", "lte"),
            ],  # fmt: skip
            timeout=30,
            check=False,
        )
        assert res.returncode == 0, res.stderr
        out = json.loads(res.stdout)
        srv.wait(timeout=10)
        added = _nstat(server, "MPTcpExtAddAddr") - before
    assert "mptcp_pm_events" in out["groups"]
    assert out["established"]["saddr"] == tb.addr("client", "wifi")
    assert out["announce"] == 0 and added == 1
    assert out["bad_token"] == [22, "invalid token"]
    assert out["malformed"][0] == 34 and "policy" in out["malformed"][1]
    assert out["after"] == 0


def _server_addr(tb) -> str:
    return tb.addr("server", tb.topo.links_of("server")[0].name)


EXP = """
name = "uspm"
seed = 3
stacks = ["kernel-mptcp"]
[topology]
name = "two_path"
[traffic]
kind = "bulk"
direction = "download"
duration_s = 5
[[events]]
at = 1.5
link = "wifi"
action = "down"
mode = "interface"
[[events]]
at = 3.5
link = "wifi"
action = "up"
mode = "interface"
[grid]
"stack.kernel-mptcp.pm" = ["userspace-full", "userspace-backup", "userspace-single-path"]
[stack.kernel-mptcp]
endpoints = [{ host = "client", link = "lte", flags = ["subflow"] }]
[metrics]
warmup_s = 0.5
gap_window_s = 2.0
"""


def test_userspace_pm_variants_open_the_second_subflow_as_their_mode_says(tmp_path):
    """Each mode's daemon joins from lte (the client's MPJoinSynTx), when its mode says: full
    and backup at once after ESTABLISHED (backup with the flag, and the kernel reports the
    subflow as backup), single-path only after wifi went down; each moves back to wifi when it
    comes up. The data arrives intact across the handover."""
    f = tmp_path / "uspm.toml"
    f.write_text(EXP)
    res = run_experiment(
        load_experiment(f), results_root=tmp_path / "r", progress=False, analyze=False
    )
    assert res.complete and all(r.ok and r.intact for r in res.runs), [r.errors for r in res.runs]
    entries = {e["stack"]: e for e in json.loads((res.run_dir / "events.json").read_text())}
    for m in res.runs:
        client, server = m.mptcp_counters["client"], m.mptcp_counters["server"]
        assert client.get("MPJoinSynTx", 0) >= 2, (m.variant, client)  # lte, then wifi again
        backup = m.variant.endswith("-backup")
        assert (server.get("MPJoinSynBackupRx", 0) >= 1) == backup, (m.variant, server)
        evs = [e for e in entries[m.variant]["pm_events"] if e["host"] == "client"]
        cmds = [e for e in evs if e["type"] == "cmd_subflow_create"]
        assert all(c["result"] == "ok" for c in evs if c["type"].startswith("cmd_")), evs
        down = next(e["t"] for e in evs if e["type"] == "link_down")
        first = cmds[0]
        assert (first["saddr"], first["loc_id"]) == ("10.0.2.1", 1)  # lte, our id
        lte_up = next(e for e in evs if e["type"] == "sub_established" and e["saddr"] == "10.0.2.1")
        assert lte_up["loc_id"] == 1
        if m.variant.endswith("single-path"):
            assert first["t"] >= down and first["reason"] == "client-eth0 down"
        else:
            assert first["t"] < down and first["reason"] == "established"
            assert first["backup"] == int(backup)
        assert any(e["type"] == "cmd_remove" and e["loc_id"] == 0 for e in evs)  # wifi, id 0
        again = [c for c in cmds if c["saddr"] == "10.0.1.1"]  # once its routes are back
        assert len(again) == 1 and again[0]["t"] > down and again[0]["reason"] == "client-eth0 up"
        assert any(e["type"] == "sub_established" and e["saddr"] == "10.0.1.1" for e in evs)


def test_setup_sets_pm_type_and_teardown_puts_it_back_with_no_daemon_left(tmp_path):
    stack = STACKS["kernel-mptcp"]
    eps = [{"host": "client", "link": "lte", "flags": ["subflow"]}]
    opts = stack.validate_options("t", "s", {"pm": "userspace-full", "endpoints": eps})
    with Testbed(load_topology("two_path"), workdir=tmp_path) as tb:
        client, server = tb.host("client"), tb.host("server")
        before = read_sysctls(client)["net.mptcp.pm_type"]
        done = stack.setup(tb, opts, tb.topo.hosts)
        assert read_sysctls(client)["net.mptcp.pm_type"] == "1"
        assert read_sysctls(server)["net.mptcp.pm_type"] == before  # it only accepts joins
        assert done["userspace_pm"]["client"][:2] == ["--mode", "full"]
        procs = []
        _start_pm_monitors(tb, ["client"], tmp_path / "pm", procs, stack.pm_daemons())
        (daemon,) = procs
        assert Path(f"/proc/{daemon.pid}").exists()
        daemon.stop(signal.SIGTERM, timeout=5)
        assert daemon.returncode == 0
        stack.teardown(tb)
        assert read_sysctls(client)["net.mptcp.pm_type"] == before
        assert stack.pm_daemons() == {}
        with pytest.raises(ProcessLookupError):
            os.kill(daemon.pid, 0)
