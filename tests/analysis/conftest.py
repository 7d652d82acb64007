"""Session fixtures: real kernel MPTCP runs between two namespaces, captured with tcpdump.

Three small runs, laid out like the experiment runner's output (RUN/metadata.json,
RUN/events.json, RUN/pcap/<stack>/<rep>/<host>-<intf>.pcap):
  bulk      3 MB upload over two paths, the server's second path switched to backup (MP_PRIO)
  failover  5 MB, path 0 cut (nft drop) at 1/5 of the transfer, restored at 3/5
  abort     the server drops its second address (REMOVE_ADDR), closes with unread data
            (MP_FASTCLOSE + MP_TCPRST)
  tcp       plain TCP, 3 MB over path 0 (the same metrics for the baseline stack)
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from analysis.events import run_entry, write_events
from testkit.mptcp_pair import mptcp_pair, run_transfer
from testkit.tshark import tshark_fields

TOTAL = 3_000_000
# path 1 alone carries 2/5 of it (1/5 to 3/5) at 10 Mbit/s: with 8 MB 2.6 s, so that after a
# failover gap of up to ~1.3 s (kernel MPTCP on a loaded machine: 1.25 s in a CI-like run) it
# still holds its rate for the 1 s a recovery needs (with 5 MB, 1.6 s, it did not: recovery
# None); and enough after the path returns to regain the goodput
FAILOVER_TOTAL = 8_000_000


def _git_commit() -> str:
    p = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    )
    return p.stdout.strip()


def make_run(
    run: Path,
    variant: str,
    stack: str = "kernel",
    rep: int = 0,
    rates: tuple[int, int] = (20, 10),
    total: int = TOTAL,
    extra_params: dict | None = None,
) -> dict:
    """One captured transfer in run/ with the runner's layout; returns the transfer summary."""
    total = FAILOVER_TOTAL if variant == "failover" else total
    with mptcp_pair(f"an{os.getpid()}{variant[:2]}{rep}", rates) as pair:
        start = time.time()
        res = run_transfer(pair, run / "pcap" / stack / str(rep), variant, total)
        end = time.time()
    # the testbed's log: planned and actual times in seconds from the run's start
    events = [dict(e, at=e["actual"] - start, actual=e["actual"] - start) for e in res["events"]]
    meta_path = run / "metadata.json"
    if not meta_path.exists():
        meta = {
            "experiment": f"analysis-fixture-{variant}",
            "parameters": {
                "bytes": total,
                "rates_mbit": list(rates),
                # path i is link "path<i>" (the events name them so)
                "paths": [
                    {"name": f"path{i}", "links": [f"path{i}"], "rate_mbit": r}
                    for i, r in enumerate(rates)
                ],
                "variant": variant,
                **(extra_params or {}),
            },
            "seed": 0,
            "git_commit": _git_commit(),
            "kernel": platform.release(),
            "host": platform.node(),
            "start": start,
            "end": end,
            "packages": {"python": platform.python_version()},
        }
        meta_path.write_text(json.dumps(meta, indent=1))
        write_events(run / "events.json", [run_entry(f"{stack}/{rep}", start, events)])
    (run / f"traffic-{stack}.json").write_text(json.dumps(res, indent=1))
    return res


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The four runs, made once per session (about 10 s)."""
    if os.geteuid() != 0:
        pytest.skip("needs root for namespaces")
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for variant in ("bulk", "failover", "abort", "tcp"):
        make_run(root / variant, variant)
        out[variant] = root / variant
    return out


@pytest.fixture(scope="session")
def all_pcaps(runs) -> list[Path]:
    """Every capture of the MPTCP runs (the oracle tests' material)."""
    return sorted(p for k, r in runs.items() if k != "tcp" for p in (r / "pcap").rglob("*.pcap"))


@pytest.fixture(scope="session")
def oracle(all_pcaps) -> dict[Path, dict[int, dict[str, str]]]:
    """tshark's view of every fixture capture, computed once (two at a time: 2 cores)."""
    with ThreadPoolExecutor(2) as ex:
        return dict(zip(all_pcaps, ex.map(tshark_fields, all_pcaps), strict=True))


@pytest.fixture(scope="session")
def campaign(tmp_path_factory) -> Path:
    """A real 2x2 sweep of path rates (1 MB bulk transfers), for the campaign report and the
    aggregation-benefit heatmap."""
    if os.geteuid() != 0:
        pytest.skip("needs root for namespaces")
    root = tmp_path_factory.mktemp("campaign")
    for r0 in (8, 16):
        for r1 in (4, 8):
            make_run(
                root / f"r{r0}-{r1}",
                "bulk",
                rates=(r0, r1),
                total=1_000_000,
                extra_params={"rate0_mbit": r0, "rate1_mbit": r1},
            )
    return root
