"""Fixtures of the middlebox tests: a two_path testbed with one middlebox on one link, and one
transfer through it with Linux MPTCP (tests.mptcp_interop.kmptcp, both ends) or with our stack
(python -m mptcp_impl, both ends), reporting what each side's counters say."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mptcp_impl.cli import pattern_sha256
from testkit import ENV, PY
from testkit.transfer import nstat

# Faster than two_path's defaults to keep runs short, same shape.
RATES = {
    "links.wifi.rate_mbit": 40,
    "links.wifi.queue_pkts": 200,
    "links.lte.rate_mbit": 20,
    "links.lte.delay_ms": 25,
    "links.lte.queue_pkts": 200,
}
NBYTES = 1_500_000


@dataclass
class Outcome:
    """One transfer through the middlebox: did it finish, did the bytes arrive intact, what the
    counters of each side say (deltas; MPTcpExt prefix dropped), what the middlebox did."""

    finished: bool
    intact: bool
    client: dict = field(default_factory=dict)  # the program's JSON report
    server: dict = field(default_factory=dict)
    client_mib: dict[str, int] = field(default_factory=dict)
    server_mib: dict[str, int] = field(default_factory=dict)
    middlebox: dict = field(default_factory=dict)

    def c(self, name: str) -> int:
        return self.client_mib.get(name, 0)

    def s(self, name: str) -> int:
        return self.server_mib.get(name, 0)


def _mib(d: dict | None) -> dict[str, int]:
    return {k.removeprefix("MPTcpExt"): v for k, v in (d or {}).items() if v}


def _nstat(host) -> dict[str, int]:
    return {k.removeprefix("MPTcpExt"): v for k, v in nstat(host, "MPTcpExt").items()}


def _last_json(path: Path) -> dict:
    lines = (
        [ln for ln in path.read_text().splitlines() if ln.startswith("{")] if path.exists() else []
    )
    return json.loads(lines[-1]) if lines else {}


class MboxBed:
    def __init__(self, tb, workdir: Path, link: str):
        self.tb = tb
        self.workdir = workdir
        self.link = link
        self.port = 6000

    def transfer(
        self,
        stack: str,
        *,
        timeout: float = 30.0,
        nbytes: int = NBYTES,
        client_extra: tuple[str, ...] = (),
        server_extra: tuple[str, ...] = (),
    ) -> Outcome:
        """One upload of nbytes from client to server: stack "kernel" (Linux MPTCP both ends),
        "kernel-tcp" (plain Linux TCP) or "ours" (our stack both ends, with extra CLI flags). A transfer still running after timeout is stopped and
        reported unfinished."""
        self.port += 1
        tag = f"{stack}-{self.port}"
        srv_ip = self.tb.addr("server", "server")
        client, server = self.tb.host("client"), self.tb.host("server")
        kernel = stack in ("kernel", "kernel-tcp")
        tcp = ["--tcp"] if stack == "kernel-tcp" else []
        if kernel:
            s_args = ["-m", "tests.mptcp_interop.kmptcp", "server", "--listen"]
            s_args += [f"{srv_ip}:{self.port}", *tcp]
            c_args = ["-m", "tests.mptcp_interop.kmptcp", "client", "--connect"]
            c_args += [f"{srv_ip}:{self.port}", "--bytes", str(nbytes), *tcp]
        else:
            s_args = ["-m", "mptcp_impl", "server", "--listen", f"{srv_ip}:{self.port}"]
            s_args += ["--once", "--json", *server_extra]
            c_args = ["-m", "mptcp_impl", "client", "--connect", f"{srv_ip}:{self.port}"]
            c_args += ["--bytes", str(nbytes), "--json", *client_extra]
        before = (_nstat(client), _nstat(server)) if kernel else None
        s_out, c_out = self.workdir / f"{tag}-server.out", self.workdir / f"{tag}-client.out"
        sp = server.start([PY, *s_args], stdout=s_out, stderr=subprocess.PIPE, env=ENV)
        sp.wait_for_line("^listening", timeout=30)
        cp = client.start(
            [PY, *c_args], stdout=c_out, stderr=self.workdir / f"{tag}-client.err", env=ENV
        )
        finished = True
        try:
            cp.wait(timeout)
            sp.wait(10)
        except subprocess.TimeoutExpired:
            finished = False
        for p in (cp, sp):
            if p.returncode is None:
                p.stop()
        cres, sres = _last_json(c_out), _last_json(s_out)
        if kernel:
            assert before is not None
            after = (_nstat(client), _nstat(server))
            cm = {k: v - before[0].get(k, 0) for k, v in after[0].items()}
            sm = {k: v - before[1].get(k, 0) for k, v in after[1].items()}
            cm, sm = _mib(cm), _mib(sm)
        else:
            cm = _mib(cres.get("mptcp", {}).get("mib"))
            sm = _mib(sres.get("mptcp", {}).get("mib"))
        sent_sha = pattern_sha256(nbytes)  # both programs send the seed-0 pattern stream
        intact = (
            finished and sres.get("bytes_received") == nbytes and sres.get("sha256") == sent_sha
        )
        return Outcome(finished, intact, cres, sres, cm, sm, self.tb.middlebox_stats())

    def sysctl(self, *settings: str) -> None:
        for h in ("client", "server"):
            self.tb.host(h).run(["sysctl", "-q", "-w", *settings])


@pytest.fixture(scope="module")
def make_mbox_bed(tmp_path_factory):
    """A factory: (middlebox, link) -> an MboxBed; each testbed lives until the module ends."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from testbed.net import Testbed
    from testbed.topology import load_topology

    current: dict[tuple[str, str], tuple[Testbed, MboxBed]] = {}

    def close() -> None:
        for tb, _ in current.values():
            tb.__exit__(None, None, None)
        current.clear()

    def make(kind: str, link: str) -> MboxBed:
        """One testbed at a time on this small machine: a new middlebox replaces the last."""
        if (kind, link) not in current:
            close()
            topo = load_topology("two_path", {**RATES, f"links.{link}.middlebox": kind})
            workdir = tmp_path_factory.mktemp(f"{kind}-{link}")
            tb = Testbed(topo, workdir=workdir, seed=1)
            tb.__enter__()
            current[(kind, link)] = (tb, MboxBed(tb, workdir, link))
            tb.kernel_mptcp("client", endpoints=tb.default_endpoints("client"))
            tb.kernel_mptcp("server", endpoints=[])
        return current[(kind, link)][1]

    try:
        yield make
    finally:
        close()
