"""Fixtures of the MPTCP interop suite: our MPTCP layer against Linux kernel MPTCP, for real.

Every test runs real processes in the testbed's Mininet namespaces: our stack through its CLI
(``python -m mptcp_impl``, MPTCP by default), Linux MPTCP or plain TCP peers from ``kmptcp.py``
(``socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP)``), Linux's path manager configured with ``ip
mptcp``, Linux's MPTCP counters read with ``nstat`` in the Linux host's namespace, captures
with tcpdump and checks with tshark. Testbeds are module-scoped: a module's tests share one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from testbed.capture import Capture

ROOT = Path(__file__).resolve().parents[2]
PY = (
    str(ROOT / ".venv" / "bin" / "python")
    if (ROOT / ".venv" / "bin" / "python").exists()
    else sys.executable
)
ENV = {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
HERE = Path(__file__).resolve().parent
MB = 1_000_000

# Linux counters that must stay 0 in every MPTCP scenario: a mapping contradicted, an infinite
# mapping (fallback in mid-connection), a checksum or HMAC failure, an MP_FAIL, a fallback.
LINUX_BAD = (
    "MPTcpExtDSSNotMatching",
    "MPTcpExtDSSCorruptionFallback",
    "MPTcpExtDSSCorruptionReset",
    "MPTcpExtInfiniteMapRx",
    "MPTcpExtInfiniteMapTx",
    "MPTcpExtDSSNoMatchTCP",
    "MPTcpExtDataCsumErr",
    "MPTcpExtMPJoinSynAckHMacFailure",
    "MPTcpExtMPJoinAckHMacFailure",
    "MPTcpExtMPJoinNoTokenFound",
    "MPTcpExtMPFailRx",
    "MPTcpExtMPFailTx",
    "MPTcpExtMPCapableFallbackACK",
    "MPTcpExtMPCapableFallbackSYNACK",
    "MPTcpExtMPCapableDataFallback",
    "MPTcpExtDssFallback",
    "MPTcpExtFallbackFailed",
    "MPTcpExtAddAddrDrop",
    "MPTcpExtMPRstRx",
    "MPTcpExtMPFastcloseRx",
)
# ... and the same in our MIB (names as Linux's, without the MPTcpExt prefix)
OURS_BAD = (
    "DSSNotMatching",
    "InfiniteMapRx",
    "DataCsumErr",
    "MPJoinSynAckHMacFailure",
    "MPJoinAckHMacFailure",
    "MPJoinNoTokenFound",
    "MPCapableFallbackACK",
    "MPCapableFallbackSYNACK",
    "MPFailRx",
    "AddAddrDrop",
    "OptionMalformed",
    "DataAckInvalid",
    "MPRstRx",
)


@dataclass
class Bed:
    """A running testbed, its work folder and the Linux counters last seen per host."""

    tb: object
    workdir: Path
    _names: set[str] = field(default_factory=set)

    def host(self, name: str):
        return self.tb.host(name)

    def addr(self, host: str, link: str) -> str:
        return self.tb.addr(host, link)

    def _unique(self, name: str) -> str:
        base, k = name, 1
        while name in self._names:
            k += 1
            name = f"{base}-{k}"
        self._names.add(name)
        return name

    def start(self, host: str, args: list[str], name: str):
        """``python args`` on ``host``: stdout to a file, stderr piped (wait_for_line)."""
        name = self._unique(name)
        out = self.workdir / f"{name}.out"
        proc = self.host(host).start([PY, *args], stdout=out, stderr=subprocess.PIPE, env=ENV)
        proc.out_path = out
        proc.name = name
        return proc

    def result(self, proc, timeout: float = 90) -> dict:
        """Wait for the process to exit and return the last JSON line it printed."""
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(10)  # SIGUSR1: our CLI dumps its connection state to stderr
            proc.stop()
            err = _drain(proc)
            pytest.fail(f"{proc.name}: no exit within {timeout}s; stderr tail: {err[-3000:]}")
        text = proc.out_path.read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith("{")]
        if not lines:
            pytest.fail(f"{proc.name} exited {rc} without JSON: {text[-1000:]} {_drain(proc)}")
        res = json.loads(lines[-1])
        res["_rc"] = rc
        return res

    def nstat(self, host: str) -> dict[str, int]:
        """Absolute values of the host namespace's counters (``nstat -asz``: no history)."""
        out = self.host(host).run(["nstat", "-asz"]).stdout
        vals = {}
        for ln in out.splitlines():
            parts = ln.split()
            if len(parts) >= 2 and parts[1].isdigit():
                vals[parts[0]] = int(parts[1])
        return vals

    def capture(self, name: str, hosts: list[str]) -> Capture:
        """tcpdump (immediate mode) on every interface of ``hosts``; returns once it listens."""
        return self.tb.capture(self.workdir / self._unique(name), hosts=hosts)


def _drain(proc) -> str:
    try:
        if proc.popen.stderr and not proc.popen.stderr.closed:
            return proc.popen.stderr.read().decode(errors="replace")
    except (OSError, ValueError):
        pass
    return ""


def counters_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def make_bed(topology: str | Path, overrides: dict, tmp_path_factory, name: str) -> Iterator[Bed]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from testbed.net import Testbed
    from testbed.topology import load_topology

    topo = load_topology(topology, overrides=overrides)
    workdir = tmp_path_factory.mktemp(name)
    with Testbed(topo, workdir=workdir) as tb:
        yield Bed(tb, workdir)


# ---------------------------------------------------------------- peers


def ours_client(bed: Bed, host: str, dst: str, port: int, nbytes: int, name: str, *extra: str):
    return bed.start(
        host,
        [
            "-m",
            "mptcp_impl",
            "client",
            "--connect",
            f"{dst}:{port}",
            "--bytes",
            str(nbytes),
            "--json",
            *extra,
        ],
        name,
    )


def ours_server(bed: Bed, host: str, ip: str, port: int, name: str, *extra: str):
    p = bed.start(
        host,
        ["-m", "mptcp_impl", "server", "--listen", f"{ip}:{port}", "--once", "--json", *extra],
        name,
    )
    p.wait_for_line("^listening ", timeout=30)
    return p


def linux_server(bed: Bed, host: str, ip: str, port: int, name: str, *extra: str):
    p = bed.start(
        host,
        ["-m", "tests.mptcp_interop.kmptcp", "server", "--listen", f"{ip}:{port}", *extra],
        name,
    )
    p.wait_for_line("^listening", timeout=30)
    return p


def linux_client(bed: Bed, host: str, dst: str, port: int, nbytes: int, name: str, *extra: str):
    return bed.start(
        host,
        [
            "-m",
            "tests.mptcp_interop.kmptcp",
            "client",
            "--connect",
            f"{dst}:{port}",
            "--bytes",
            str(nbytes),
            *extra,
        ],
        name,
    )


# ---------------------------------------------------------------- tshark

TSHARK_MPTCP = [
    "-o",
    "tcp.analyze_sequence_numbers:TRUE",
    "-o",
    "mptcp.analyze_mptcp:TRUE",
    "-o",
    "mptcp.relative_sequence_numbers:FALSE",
    "-o",
    "mptcp.analyze_mappings:TRUE",
    "-o",
    "mptcp.intersubflows_retransmission:TRUE",
]


def tshark(pcap: Path, filt: str, *fields: str, two_pass: bool = True) -> list[list[str]]:
    """Rows of ``fields`` (multi-valued fields joined by ';') for frames matching ``filt``,
    with Wireshark's MPTCP analysis on."""
    cmd = ["tshark", "-r", str(pcap), *(["-2"] if two_pass else []), *TSHARK_MPTCP]
    if filt:
        cmd += ["-R" if two_pass else "-Y", filt]
    cmd += ["-T", "fields", "-E", "occurrence=a", "-E", "aggregator=;"]
    for f in fields:
        cmd += ["-e", f]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    return [ln.split("\t") for ln in res.stdout.splitlines() if ln.strip()]


def merged(files: list[Path], out: Path) -> Path:
    """One pcap of several interfaces' captures (mergecap, by time)."""
    subprocess.run(["mergecap", "-w", str(out), *map(str, files)], check=True, timeout=60)
    return out


def ip_of(text: str) -> str:
    m = re.match(r"^(\d+\.\d+\.\d+\.\d+)", text)
    assert m, text
    return m.group(1)
