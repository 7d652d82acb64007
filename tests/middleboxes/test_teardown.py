"""Middlebox setup and teardown: rules and processes where they belong, and exactly nothing left."""

from __future__ import annotations

import json
import os

import pytest

from testbed import registry
from testbed.topology import load_topology

pytestmark = pytest.mark.net


def test_rules_process_and_exact_teardown(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from testbed.net import Testbed

    topo = load_topology("two_path", ["links.wifi.middlebox=split", "links.lte.middlebox=nat"])
    with Testbed(topo, workdir=tmp_path, seed=1) as tb:
        r1, r2 = tb.middleboxes["r1"], tb.middleboxes["r2"]
        before = {
            name: r.host.run(["nft", "list", "tables"]).stdout
            for name, r in (("r1", r1), ("r2", r2))
        }
        # r1: a rewriting process and its queue rules on the wifi port, both directions
        assert r1.running and r1.pids
        rules = r1.host.run(["iptables", "-w", "-t", "security", "-S", "MPTCPLAB_MBOX"]).stdout
        assert "-i r1-eth0 -p tcp -j NFQUEUE --queue-num 100" in rules
        assert "-o r1-eth0 -p tcp -j NFQUEUE --queue-num 101" in rules
        # recorded for ./inv clean, like every process a host starts
        recorded = json.loads(next(registry.STATE_DIR.glob(f"{os.getpid()}-*.json")).read_text())
        assert any(t.startswith(f"{r1.proc.pid}:") for t in recorded["pids"])
        # r2: nat only, no process
        assert not r2.running
        assert "masquerade" in r2.host.run(["nft", "list", "table", "ip", "mptcplab_nat"]).stdout
        assert "security" not in before["r2"]
        assert tb.middlebox_stats()["lte"] == {
            "kind": "nat",
            "masqueraded_connections": 0,
            "inbound_refused": 0,
        }
        # stop on live routers: every rule and table of ours gone, the process too
        pid = r1.proc.pid
        r1.stop()
        r2.stop()
        for r in (r1, r2):
            tables = r.host.run(["nft", "list", "tables"]).stdout
            assert "mptcplab_nat" not in tables and "table ip security" not in tables, tables
            assert "mptcplab" in tables  # the link emulator's table is not ours to remove
        assert not os.path.exists(f"/proc/{pid}/stat") or registry.start_ticks(pid) is None
        r1.stop()  # idempotent
    with pytest.raises(ValueError, match="middlebox"):
        tb.set_link("wifi", middlebox="nat")
