"""What ran, where and with what: the facts metadata.json records so a result can be traced.

Every item is best effort and says "unknown" rather than failing: a run must not be lost
because, say, git is missing; but a missing fact is visible in the file.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PY_PACKAGES = (
    "invoke",
    "mininet",
    "pandas",
    "pyarrow",
    "seaborn",
    "matplotlib",
    "paramiko",
    "pytest",
)
DEB_PACKAGES = ("mininet", "tcpdump", "tshark", "iproute2", "nftables", "iptables", "iperf3")
MPTCP_SYSCTLS = (
    "enabled",
    "scheduler",
    "available_schedulers",
    "path_manager",
    "pm_type",
    "checksum_enabled",
    "stale_loss_cnt",
    "add_addr_timeout",
)


def _out(args: list[str], cwd: Path | None = None) -> str | None:
    try:
        res = subprocess.run(args, capture_output=True, text=True, timeout=10, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def git_info() -> dict[str, Any]:
    """Commit and dirty flag of the checkout; dirty lists the changed paths (truncated)."""
    commit = _out(["git", "rev-parse", "HEAD"], REPO)
    status = _out(["git", "status", "--porcelain", "--untracked-files=no"], REPO)
    changed = [ln[3:] for ln in (status or "").splitlines()]
    return {
        "commit": commit or "unknown",
        "dirty": bool(changed) if status is not None else None,
        "changed": changed[:50],
        "branch": _out(["git", "rev-parse", "--abbrev-ref", "HEAD"], REPO),
    }


def package_versions() -> dict[str, Any]:
    py = {}
    for name in PY_PACKAGES:
        try:
            py[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            py[name] = None
    deb = {}
    for name in DEB_PACKAGES:
        deb[name] = _out(["dpkg-query", "-W", "-f=${Version}", name])
    return {"python": sys.version.split()[0], "python_packages": py, "debian_packages": deb}


def kernel_info() -> dict[str, Any]:
    mptcp = {}
    for name in MPTCP_SYSCTLS:
        try:
            mptcp[name] = Path(f"/proc/sys/net/mptcp/{name}").read_text().strip()
        except OSError:
            mptcp[name] = None
    from experiments.knobs import root_sysctls

    return {
        "release": platform.release(),
        "version": platform.version(),
        "mptcp_sysctls": mptcp,
        # every net.mptcp.* and net.ipv4.tcp_* of the root namespace; each run's metrics.json
        # row has per host what differed from these (its namespaces)
        "sysctls": root_sysctls(),
    }


def host_info() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


TCP_SYSCTLS = (
    "tcp_congestion_control",
    "tcp_available_congestion_control",
    "tcp_rmem",
    "tcp_wmem",
    "tcp_sack",
    "tcp_timestamps",
    "tcp_window_scaling",
    "tcp_ecn",
    "tcp_mtu_probing",
    "tcp_no_metrics_save",
    "tcp_slow_start_after_idle",
)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cpu_model() -> str | None:
    for line in (_read(Path("/proc/cpuinfo")) or "").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or None


def machine_info() -> dict[str, Any]:
    """The machine a run ran on, as one record per run: a campaign spread over workers (or
    merged from shards) mixes machines, and a result is only comparable with what ran on the
    same kernel, CPU and settings. The sysctls are this (root) namespace's: the defaults the
    testbed's namespaces start from, before a stack sets its own."""
    mptcp = Path("/proc/sys/net/mptcp")
    return {
        "hostname": socket.gethostname(),
        "kernel": platform.release(),
        "kernel_version": platform.version(),
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "mptcp_sysctls": {f.name: _read(f) for f in sorted(mptcp.iterdir()) if f.is_file()}
        if mptcp.is_dir()
        else {},
        "tcp_sysctls": {n: _read(Path("/proc/sys/net/ipv4") / n) for n in TCP_SYSCTLS},
    }
