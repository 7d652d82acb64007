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
