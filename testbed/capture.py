"""Packet capture with tcpdump on chosen interfaces, started before and flushed after traffic."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from testbed.host import Host, Process


class Capture:
    """tcpdump on (host, interface) pairs; files are named `<interface>.pcap`, and an interface
    is called `<host>-ethN`, so a file says both where and on which link it was taken."""

    def __init__(
        self,
        targets: list[tuple[Host, str]],
        outdir: Path,
        *,
        snaplen: int = 128,
        bpf: str = "tcp or icmp",
    ):
        """bpf: what to keep (the experiments' TCP and pings by default; the link probes of
        testbed/probe.py are UDP)."""
        self.targets = targets
        self.bpf = bpf
        self.outdir = Path(outdir)
        self.snaplen = snaplen
        self.procs: list[Process] = []
        self.files: list[Path] = []

    def start(self, timeout: float = 30.0) -> None:
        """Start every tcpdump; return once all say they listen (timeout: a deadline for a
        broken capture, generous because a loaded machine starts tcpdump slowly)."""
        self.outdir.mkdir(parents=True, exist_ok=True)
        for host, intf in self.targets:
            path = self.outdir / f"{intf}.pcap"
            self._tcpdump(host, intf, str(path))
            self.files.append(path)
        self._wait_listening(timeout)

    def _tcpdump(self, host: Host, intf: str, path: str) -> None:
        """Start tcpdump on the host's interface, writing to path (a path on that host)."""
        # --immediate-mode: hand over each packet at once (otherwise libpcap holds up to a
        # second of them in a ring block, and SIGINT loses that block); -U: write each
        # packet at once; -Z root: tcpdump would otherwise drop to user tcpdump, who may
        # not write here.
        args = [
            "tcpdump",
            "-i",
            intf,
            "-n",
            "-U",
            "--immediate-mode",
            "-s",
            str(self.snaplen),
            "-Z",
            "root",
            "-w",
            path,
            self.bpf,
        ]
        self.procs.append(host.start(args, stderr=subprocess.PIPE))

    def _wait_listening(self, timeout: float) -> None:
        for proc in self.procs:
            proc.wait_for_line(r"listening on", stream="stderr", timeout=timeout)

    def stop(self) -> list[Path]:
        """SIGINT each tcpdump and wait, so the files are complete."""
        for proc in self.procs:
            if proc.returncode is None:
                proc.stop(signal.SIGINT, timeout=5)
        self.procs.clear()
        return [f for f in self.files if f.exists()]
