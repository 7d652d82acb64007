"""Fixtures for the userspace-TCP tests: the project's testbed, and helpers to run peers in it.

Every test runs real processes in Mininet namespaces: our stack through its CLI
(``python -m mptcp_impl``), Linux TCP peers and a segment injector from ``testkit/kpeer.py``. Links use
the testbed's emulation (htb, NFQUEUE delay/jitter on a router, nft loss); captures are checked
with tshark.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testbed.capture import Capture
from testbed.net import Testbed
from testbed.topology import load_topology
from testkit import ENV, PY


@dataclass
class Bed:
    """A running two_path testbed seen through its "wifi" path (client -> server)."""

    tb: Testbed
    client_ip: str
    server_ip: str
    workdir: Path

    @property
    def client(self):
        return self.tb.host("client")

    @property
    def server(self):
        return self.tb.host("server")

    def start(self, host, args: list[str], name: str, stdin: bool = False):
        """Start ``python args`` on ``host``; stdout to a file, stderr piped for wait_for_line."""
        out = self.workdir / f"{name}.out"
        proc = host.start(
            [PY, *args],
            stdout=out,
            stderr=subprocess.PIPE,
            stdin=subprocess.PIPE if stdin else None,
            env=ENV,
        )
        proc.out_path = out
        return proc

    def result(self, proc, timeout: float = 90) -> dict:
        """Wait for the process and return the JSON it printed last."""
        rc = proc.wait(timeout)
        text = proc.out_path.read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith("{")]
        assert lines, f"{proc.args} exited {rc} without JSON; stdout: {text[-2000:]}"
        res = json.loads(lines[-1])
        res["_rc"] = rc
        return res


def _bed(overrides: dict, tmp_path_factory, name: str, offload: bool = False) -> Iterator[Bed]:
    """A two_path testbed. ``offload=True`` leaves TSO/GSO on the hosts' veths (64 KiB
    super-packets both ways: our GSO send and whole-super-packet receive get exercised);
    the default (off) makes every packet one segment, which is what loss emulation needs."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    topo = load_topology("two_path", overrides=overrides)
    workdir = tmp_path_factory.mktemp(name)
    with Testbed(topo, workdir=workdir, offload=offload) as tb:
        p = next(p for p in tb.paths if p.name == "wifi")
        yield Bed(tb, p.src_addr, p.dst_addr, workdir)


@pytest.fixture(scope="module")
def clean_bed(tmp_path_factory) -> Iterator[Bed]:
    """A clean, fast path with offload on: 1 ms one-way delay, no loss, shaped at 500 Mbit/s."""
    yield from _bed(
        {"links.wifi.delay_ms": 1, "links.wifi.rate_mbit": 500, "links.wifi.queue_pkts": 1000},
        tmp_path_factory,
        "clean",
        offload=True,
    )


def capture(bed: Bed, name: str, host: str = "server") -> Capture:
    """The testbed's capture on every interface of `host` (immediate mode: a short transfer
    leaves complete files, so checks on them cannot pass vacuously)."""
    return bed.tb.capture(bed.workdir / name, hosts=[host])


def tshark_malformed(pcap: Path) -> list[str]:
    """Frames tshark calls malformed (expert info), as text lines; empty means clean."""
    res = subprocess.run(
        ["tshark", "-r", str(pcap), "-Y", "_ws.malformed"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    return [ln for ln in res.stdout.splitlines() if ln.strip()]


def tshark_fields(pcap: Path, filt: str, *fields: str) -> list[list[str]]:
    cmd = ["tshark", "-r", str(pcap), "-Y", filt, "-T", "fields"]
    for f in fields:
        cmd += ["-e", f]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return [ln.split("\t") for ln in res.stdout.splitlines() if ln.strip()]


def frames(pcap: Path) -> int:
    """Number of frames in a capture (so that "nothing malformed" is never vacuous)."""
    return len(tshark_fields(pcap, "frame", "frame.number"))
