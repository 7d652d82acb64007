"""Compound faults on the testbed against Linux: a family of link faults, a transfer per pair
of stacks (ours to Linux, Linux to ours, Linux to Linux as the control), and what became of it
(intact, corrupt, stalled with its state dumps kept, or an error). Used by
``benchmarks/live_fault_bench.py`` (every family, 20 times, under load) and by a short test.
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

MB = 1_000_000
PAIRS = ("ours->linux", "linux->ours", "linux->linux")
# two_path with faster access links so that a transfer lasts a few seconds
BASE = {
    "links.wifi.rate_mbit": 40,
    "links.wifi.delay_ms": 5,
    "links.lte.rate_mbit": 20,
    "links.lte.delay_ms": 15,
}


@dataclass(frozen=True)
class Family:
    """Link overrides for the whole run and events (seconds after the server has received its
    first megabyte, action ``down``/``up``, link, mode ``blackhole``/``interface``)."""

    overrides: dict = field(default_factory=dict)
    events: tuple[tuple[float, str, str, str], ...] = ()
    doc: str = ""


def _loss(pct: float) -> dict:
    return {f"links.{ln}.loss_pct": pct for ln in ("wifi", "lte")}


FAMILIES = {
    "cut": Family(events=((0.2, "down", "wifi", "blackhole"),), doc="wifi silently cut for good"),
    "cut_return": Family(
        events=((0.2, "down", "wifi", "blackhole"), (2.2, "up", "wifi", "blackhole")),
        doc="wifi silently cut for 2 s, then back",
    ),
    "loss": Family(overrides=_loss(2.0), doc="2% random loss on both paths"),
    "loss_cut": Family(
        overrides=_loss(1.0),
        events=((0.2, "down", "wifi", "blackhole"),),
        doc="1% loss on both paths and wifi cut for good",
    ),
    "loss_cut_return": Family(
        overrides=_loss(1.0),
        events=((0.2, "down", "wifi", "blackhole"), (1.4, "up", "wifi", "blackhole")),
        doc="1% loss on both paths and wifi cut for 1.2 s",
    ),
    "ifdown_return": Family(
        events=((0.2, "down", "wifi", "interface"), (2.2, "up", "wifi", "interface")),
        doc="the client's wifi interface down for 2 s, then up",
    ),
}


@dataclass
class Run:
    family: str
    pair: str
    rep: int
    outcome: str  # intact, corrupt, stalled, error
    time_s: float  # from the client's start until the receiver had every byte
    exit_s: float | None = None  # until both ends had closed and exited
    detail: str = ""


def _commands(pair: str, srv_ip: str, port: int, nbytes: int) -> tuple[list[str], list[str]]:
    sender, receiver = pair.split("->")
    if receiver == "ours":
        sargs = ["-m", "mptcp_impl", "server", "--listen", f"{srv_ip}:{port}", "--once", "--json"]
        sargs += ["--progress", "1"]
    else:
        sargs = ["-m", "tests.mptcp_interop.kmptcp", "server", "--listen", f"{srv_ip}:{port}"]
        sargs += ["--progress", "1"]
    if sender == "ours":
        cargs = ["-m", "mptcp_impl", "client", "--json"]
    else:
        cargs = ["-m", "tests.mptcp_interop.kmptcp", "client"]
    cargs += ["--connect", f"{srv_ip}:{port}", "--bytes", str(nbytes)]
    return sargs, cargs


def _ended(proc, timeout: float) -> bool:
    try:
        proc.wait(max(timeout, 0.0))
    except subprocess.TimeoutExpired:
        return False
    return True


def _ours(pair: str, who: str) -> bool:
    return pair.startswith("ours") if who == "client" else pair.endswith("ours")


def run_one(tb, work: Path, fam: str, pair: str, rep: int, nbytes: int, stall_s: float) -> Run:
    """One transfer of ``pair`` under family ``fam``'s events; restores every link after."""
    from mptcp_impl.cli import pattern_sha256
    from testkit import ENV, PY, json_tail
    from testkit.transfer import nstat, state_dump

    family = FAMILIES[fam]
    client, server = tb.host("client"), tb.host("server")
    srv_ip = tb.addr("server", "server")
    port = 6000 + (rep * len(PAIRS) + PAIRS.index(pair)) % 2000
    sargs, cargs = _commands(pair, srv_ip, port, nbytes)
    stem = work / f"{fam}-{pair.replace('->', '-')}-{rep}"
    s_out, c_out = stem.with_name(stem.name + ".srv"), stem.with_name(stem.name + ".cli")
    srv = server.start([PY, *sargs], stdout=s_out, stderr=subprocess.PIPE, env=ENV)
    srv.wait_for_line("^listening", timeout=30)
    # what the transfer needs on the slower path alone, the faults' own length, then a stall
    budget = nbytes * 8 / 20e6 + max((e[0] for e in family.events), default=0) + stall_s
    t_start = time.monotonic()
    cli = client.start([PY, *cargs], stdout=c_out, stderr=subprocess.PIPE, env=ENV)
    down: set[tuple[str, str]] = set()
    outcome, detail = "intact", ""
    try:
        try:
            srv.wait_for_line("^progress 1$", timeout=60)  # under way: the faults' clock starts
            events = sorted(family.events)
        except TimeoutError:
            events = []  # (not even the first megabyte: a stall before any fault, or an end)
        t0 = time.monotonic()
        for at, action, link, mode in events:
            if _ended(cli, t0 + at - time.monotonic()):
                break  # (finished before the fault)
            if action == "down":
                tb.link_down(link, mode=mode)
                down.add((link, mode))
            else:
                tb.link_up(link, mode=mode)
                down.discard((link, mode))
        last = f"^progress {nbytes // MB}$"
        data_s = None
        try:
            srv.wait_for_line(last, timeout=max(t0 + budget - time.monotonic(), 0.1))
            data_s = time.monotonic() - t_start
        except TimeoutError:
            pass  # (or the server ended early: a reset, told below)
        if data_s is None and srv.returncode is None:
            stalled = f"the data did not arrive within {budget:.0f} s"
        elif not _ended(cli, stall_s) or not _ended(srv, 5.0):
            stalled = f"no end within {stall_s:.0f} s of the data's arrival (the close)"
        else:
            stalled = ""
        if stalled:
            outcome = "stalled"
            view = [f"{fam} {pair} #{rep}: {stalled}\n"]
            for proc, who in ((cli, "client"), (srv, "server")):
                if _ours(pair, who) and proc.returncode is None:
                    view.append(f"\n--- our {who}'s state\n{state_dump(proc)}")
            for name, h in (("client", client), ("server", server)):
                view.append(f"\n--- kernel {name}: {nstat(h, 'MPTcpExt')}\n")
                view.append(h.run(["ss", "-tinM"], check=False).stdout)
            stem.with_name(stem.name + ".stalled.txt").write_text("".join(view))
            detail = f"{stalled}; {stem}.stalled.txt"
    finally:
        for link, mode in down:
            tb.link_up(link, mode=mode)
        for p in (cli, srv):
            if p.returncode is None:
                p.stop()
    wall = round(time.monotonic() - t_start, 2)
    took = round(data_s, 2) if data_s is not None else wall
    if outcome == "intact":
        try:
            c, s = json_tail(c_out), json_tail(s_out)
        except RuntimeError as e:
            return Run(fam, pair, rep, "error", took, wall, str(e)[:300])
        if c.get("error") or s.get("error") or cli.returncode or srv.returncode:
            outcome = "error"
            detail = str(c.get("error") or s.get("error") or (cli.returncode, srv.returncode))
        elif not (c.get("sha256") == s.get("sha256") == pattern_sha256(nbytes)):
            outcome = "corrupt"
            detail = f"server got {s.get('bytes_received')} bytes, sha256 {s.get('sha256')}"
    return Run(fam, pair, rep, outcome, took, wall, detail)


def run_family(
    fam: str, reps: int, nbytes: int, stall_s: float, pairs=PAIRS, work: Path | None = None
) -> list[Run]:
    from testbed.net import Testbed
    from testbed.topology import load_topology

    topo = load_topology("two_path", overrides={**BASE, **FAMILIES[fam].overrides})
    runs = []
    with tempfile.TemporaryDirectory(prefix=f"bench-faults-{fam}-") as d:
        wd = work or Path(d)
        with Testbed(topo, workdir=wd) as tb:
            tb.kernel_mptcp("client", endpoints=tb.default_endpoints("client"))
            tb.kernel_mptcp("server", endpoints=[])
            for rep in range(reps):
                for pair in pairs:
                    r = run_one(tb, wd, fam, pair, rep, nbytes, stall_s)
                    runs.append(r)
                    if r.outcome != "intact":
                        print(f"  {fam} {pair} #{rep}: {r.outcome} {r.detail}", flush=True)
    return runs


def summary(runs: list[Run]) -> dict:
    out: dict = {}
    for r in runs:
        d = out.setdefault(r.family, {}).setdefault(
            r.pair,
            {"intact": 0, "corrupt": 0, "stalled": 0, "error": 0, "times": [], "exits": []},
        )
        d[r.outcome] += 1
        if r.outcome == "intact":
            d["times"].append(r.time_s)
            d["exits"].append(r.exit_s)
    for fam in out.values():
        for d in fam.values():
            t, e = d.pop("times"), d.pop("exits")
            d["median_s"] = round(statistics.median(t), 2) if t else None
            d["median_exit_s"] = round(statistics.median(e), 2) if e else None
    return out
