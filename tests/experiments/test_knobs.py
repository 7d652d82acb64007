"""The kernel's knobs as experiment factors (experiments/knobs.py), on real namespaces.

Refusals are read from files (no root needed); the live tests run a second or two of traffic
per run on two_path and check what the kernel had in the hosts' namespaces, what the sockets
reported and what the buffers did to the goodput.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.config import load_experiment, resolve_runs
from experiments.errors import ExperimentError
from experiments.runner import run_experiment

BASE = """
name = "knobs"
seed = 5
stacks = {stacks}
[topology]
name = "two_path"
[traffic]
duration_s = {duration}
{extra}
"""


def exp_file(tmp_path: Path, stacks: str, extra: str, duration: float = 1.5) -> Path:
    p = tmp_path / "knobs.toml"
    p.write_text(BASE.format(stacks=stacks, extra=extra, duration=duration))
    return p


def refused(tmp_path: Path, extra: str, sets: list[str] | None = None) -> ExperimentError:
    with pytest.raises(ExperimentError) as e:
        load_experiment(exp_file(tmp_path, '["kernel-mptcp"]', extra), sets)
    return e.value


def test_unknown_sysctl_is_refused_naming_the_field(tmp_path):
    e = refused(tmp_path, '[sysctl]\n"net.mptcp.no_such_knob" = 1')
    assert e.field == "sysctl.net.mptcp.no_such_knob"
    assert "this kernel has no sysctl net.mptcp.no_such_knob" in e.problem


def test_grid_and_set_values_are_checked_against_the_kernel(tmp_path):
    e = refused(tmp_path, '[grid]\n"sysctl.net.mptcp.scheduler" = ["default", "nosuch"]')
    assert e.field == "grid.sysctl.net.mptcp.scheduler[1]"
    assert "available_schedulers" in e.problem
    e = refused(tmp_path, "", ["sysctl.net.mptcp.available_schedulers=x"])
    assert e.field == "sysctl.net.mptcp.available_schedulers" and "read-only" in e.problem
    e = refused(tmp_path, "", ["sysctl.net.core.rmem_max=1000000"])
    assert "only per-namespace sysctls" in e.problem


def test_unavailable_congestion_control_is_refused_naming_the_field(tmp_path):
    e = refused(tmp_path, '[stack.kernel-mptcp]\ncc = "vegas"')
    assert e.field == "stack.kernel-mptcp.cc"
    assert "tcp_available_congestion_control" in e.problem
    e = refused(tmp_path, '[grid]\n"stack.kernel-mptcp.cc" = ["reno", "nosuch"]')
    assert e.field == "grid.stack.kernel-mptcp.cc[1]"


def test_namespace_default_cc_must_be_an_allowed_one(tmp_path):
    allowed = Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control").read_text().split()
    available = Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().split()
    not_allowed = [c for c in available if c not in allowed]
    if not not_allowed:
        pytest.skip("every available congestion control is allowed on this machine")
    e = refused(tmp_path, f'[sysctl]\n"net.ipv4.tcp_congestion_control" = "{not_allowed[0]}"')
    assert "tcp_allowed_congestion_control" in e.problem and "cc" in e.problem


def test_buffers_take_bytes_or_the_kernels_triple(tmp_path):
    exp = load_experiment(
        exp_file(
            tmp_path,
            '["tcp", "userspace"]',
            "[stack.tcp]\ntcp_rmem = 65536\ntcp_wmem = [4096, 16384, 1048576]\n"
            "[stack.userspace]\ntcp_rmem = 65536",
        )
    )
    assert exp.stack_options["tcp"] == {
        "tcp_rmem": "4096 65536 65536",
        "tcp_wmem": "4096 16384 1048576",
    }
    assert exp.stack_options["userspace"]["tcp_rmem"] == 65536
    e = refused(tmp_path, "[stack.userspace]\ntcp_wmem = [4096, 16384, 65536]")
    assert e.field == "stack.userspace.tcp_wmem" and "fixed" in e.problem


def test_checksums_refused_on_a_payload_rewriting_path(tmp_path):
    e = refused(
        tmp_path,
        '[grid]\n"sysctl.net.mptcp.checksum_enabled" = [0, 1]',
        ['links.wifi.middlebox="payload-rewrite"'],
    )
    assert e.field == "grid.sysctl.net.mptcp.checksum_enabled"
    assert "deadlock" in e.problem
    # a clean path is fine
    exp = load_experiment(
        exp_file(tmp_path, '["kernel-mptcp"]', '[sysctl]\n"net.mptcp.checksum_enabled" = 1')
    )
    assert [r.sysctls for r in resolve_runs(exp)] == [{"net.mptcp.checksum_enabled": "1"}]


# ---- live -------------------------------------------------------------------------------------


def _run(tmp_path: Path, stacks: str, extra: str, **kw):
    exp = load_experiment(exp_file(tmp_path, stacks, extra, **kw))
    res = run_experiment(exp, results_root=tmp_path / "results", progress=False, analyze=False)
    assert res.complete and all(r.ok and r.intact for r in res.runs), [r.errors for r in res.runs]
    return res


@pytest.mark.net
def test_sysctl_grid_is_in_force_in_every_namespace_during_the_run(tmp_path):
    """Two values of a per-namespace sysctl: each run's hosts had its point's value when the
    traffic started and when it ended (read in the namespaces), and the run records it."""
    res = _run(
        tmp_path,
        '["kernel-mptcp"]',
        '[grid]\n"sysctl.net.mptcp.stale_loss_cnt" = [2, 7]\n'
        '[sysctl]\n"net.mptcp.add_addr_timeout" = 33',
        duration=1,
    )
    root = Path("/proc/sys/net/mptcp/stale_loss_cnt").read_text().strip()
    assert root not in ("2", "7")  # so the namespaces cannot have it from the root's
    meta = json.loads((res.run_dir / "metadata.json").read_text())
    assert meta["kernel"]["sysctls"]["net.mptcp.stale_loss_cnt"] == root
    seen = []
    for m in res.runs:
        want = str(m.point_values["sysctl.net.mptcp.stale_loss_cnt"])
        seen.append(want)
        snap = json.loads((res.run_dir / "logs" / m.label / "sysctls.json").read_text())
        for when in ("start", "end"):
            for host in ("client", "server"):
                vals = snap[when][host]
                assert vals["net.mptcp.stale_loss_cnt"] == want, (when, host)
                assert vals["net.mptcp.add_addr_timeout"] == "33"
        assert m.sysctls_set == {
            "net.mptcp.add_addr_timeout": "33",
            "net.mptcp.stale_loss_cnt": want,
        }
        assert m.sysctls["client"]["net.mptcp.stale_loss_cnt"] == want
    assert seen == ["2", "7"]


@pytest.mark.net
def test_congestion_control_reaches_both_ends_sockets(tmp_path):
    """cc on the kernel stacks: cubic (which a namespace may not take as its default here) for
    TCP, reno for MPTCP; both ends' sockets report it, the namespaces' routes pin it."""
    res = _run(
        tmp_path,
        '["tcp", "kernel-mptcp"]',
        '[stack.tcp]\ncc = "cubic"\n[stack.kernel-mptcp]\ncc = "reno"',
        duration=1,
    )
    for stack, cc in (("tcp", "cubic"), ("kernel-mptcp", "reno")):
        for role in ("client", "server"):
            rep = json.loads(
                (res.run_dir / "traffic" / stack / "rep1" / f"main-{role}.json").read_text()
            )
            assert rep["socket"]["congestion"] == cc, (stack, role, rep["socket"])
        setup = json.loads((res.run_dir / "logs" / stack / "rep1" / "stack-setup.json").read_text())
        assert setup[stack]["cc"] == cc
    # the testbed pins cubic on its routes: reno had to replace it
    setup = json.loads((res.run_dir / "logs/kernel-mptcp/rep1/stack-setup.json").read_text())
    assert setup["kernel-mptcp"]["routes_changed"]["client"] > 0


@pytest.mark.net
def test_small_buffers_bound_the_goodput_of_kernel_tcp_and_our_stack(tmp_path):
    """tcp_rmem = 32 KiB: kernel TCP over wifi (20 Mbit/s, 20 ms RTT) cannot pass 32 KiB per
    RTT (13 Mbit/s), nor can our stack over both paths (its connection-level window is the
    subflows' buffer); the hosts' namespaces had the sysctl, the socket its size."""
    res = _run(
        tmp_path,
        '["tcp", "userspace"]',
        "[stack.tcp]\ntcp_rmem = 32768\n[stack.userspace]\ntcp_rmem = 32768",
    )
    for m in res.runs:
        assert m.goodput_mbit < 13.2, (m.label, m.goodput_mbit)
        assert m.goodput_mbit > 2, (m.label, m.goodput_mbit)
    tcp = json.loads((res.run_dir / "traffic/tcp/rep1/main-client.json").read_text())
    assert tcp["socket"]["rcvbuf"] <= 32768
    tcp_run = next(m for m in res.runs if m.stack == "tcp")
    assert tcp_run.sysctls["client"]["net.ipv4.tcp_rmem"] == "4096 32768 32768"
    us = next(m for m in res.runs if m.stack == "userspace")
    assert us.max_subflows == 2  # both paths, and still bounded
