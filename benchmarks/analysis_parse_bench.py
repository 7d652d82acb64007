"""How fast our pcap parser is against tshark on the same ~1M-segment MPTCP capture.

The capture is made for real, then grown: a kernel MPTCP bulk transfer between two namespaces
(testkit/mptcp_pair.py) gives the seed (every data segment carries DSS), whose records are
replicated with shifted timestamps until the file holds --segments TCP segments. Then:
  ours      analysis.pcap.parse_pcap (all TCP and MPTCP options decoded into a DataFrame)
  ours+dsn  plus analysis.mptcp.annotate (connections, absolute DSN per segment)
  cache     analysis.frames.load_pcap from the parquet cache
  tshark    `tshark -T fields` of the same per-segment fields (MPTCP analysis off), the same
            export the oracle tests use (testkit.tshark)
  tshark+a  the same with MPTCP analysis on (mptcp.rawdsn64, the DSN per segment)
Usage: .venv/bin/python -m benchmarks.analysis_parse_bench [--segments N] [--pcap seed] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from analysis.frames import cache_path, load_pcap
from analysis.mptcp import annotate
from analysis.pcap import parse_pcap
from testkit.mptcp_pair import mptcp_pair, run_transfer
from testkit.tshark import MPTCP_OPTION_FIELDS, SEGMENT_FIELDS, fields_command


def make_seed(out: Path) -> Path:
    """A real kernel MPTCP upload (3 MB, two paths), captured at the client's first interface."""
    with mptcp_pair(f"apb{os.getpid()}", (200, 100)) as pair:
        run_transfer(pair, out, "bulk", 6_000_000)
    return out / "client-eth0.pcap"


def grow(seed: Path, target: int, out: Path) -> int:
    """Replicate the seed's records (shifted in time, one copy after the other) up to `target`
    TCP segments; returns how many records were written."""
    buf = seed.read_bytes()
    if buf[:4] != b"\xd4\xc3\xb2\xa1":
        raise SystemExit(f"{seed}: need a little-endian microsecond pcap as seed")
    recs, off = [], 24
    while off + 16 <= len(buf):
        sec, usec, incl, orig = struct.unpack_from("<IIII", buf, off)
        recs.append((sec + usec * 1e-6, buf[off + 8 : off + 16 + incl]))
        off += 16 + incl
    span = recs[-1][0] - recs[0][0] + 0.01
    n = 0
    with out.open("wb") as f:
        f.write(buf[:24])
        copy = 0
        while n < target:
            for ts, rest in recs:
                t = ts + copy * span
                f.write(struct.pack("<II", int(t), int(round((t % 1) * 1e6)) % 1_000_000) + rest)
                n += 1
                if n >= target:
                    break
            copy += 1
    return n


def timed(fn, *a):
    t = time.perf_counter()
    r = fn(*a)
    return r, time.perf_counter() - t


def tshark(pcap: Path, analysis: bool) -> float:
    """Seconds for tshark to export the fields we parse (testkit.tshark: the oracle's export)."""
    fields = (
        SEGMENT_FIELDS + MPTCP_OPTION_FIELDS + (["mptcp.rawdsn64", "mptcp.ack"] if analysis else [])
    )
    cmd = fields_command(pcap, fields, analysis=analysis)
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--segments", type=int, default=1_000_000)
    ap.add_argument("--pcap", type=Path, help="seed capture (default: make one, needs root)")
    ap.add_argument(
        "--no-tshark-analysis",
        action="store_true",
        help="skip the (slowest) tshark run with MPTCP analysis on",
    )
    ap.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="parse-bench-") as tmp:
        tmp = Path(tmp)
        seed = a.pcap or make_seed(tmp / "seed")
        big = tmp / "big-eth0.pcap"
        n = grow(seed, a.segments, big)
        size = big.stat().st_size
        print(f"capture: {n} records, {size / 1e6:.0f} MB (seed {seed.name})")
        df, t_ours = timed(parse_pcap, big)
        (ann, _), t_ann = timed(annotate, df)
        _, t_miss = timed(load_pcap, big)  # parse + write the parquet cache
        _, t_hit = timed(load_pcap, big)
        t_ts = tshark(big, analysis=False)
        t_tsa = None if a.no_tshark_analysis else tshark(big, analysis=True)
        cache_path(big).unlink(missing_ok=True)
    res = {
        "segments": int(len(df)),
        "records": n,
        "mbytes": round(size / 1e6, 1),
        "ours_parse_s": round(t_ours, 2),
        "ours_parse_pps": round(len(df) / t_ours),
        "ours_parse_dsn_s": round(t_ours + t_ann, 2),
        "cache_write_s": round(t_miss, 2),
        "cache_read_s": round(t_hit, 2),
        "tshark_fields_s": round(t_ts, 2),
        "tshark_fields_pps": round(n / t_ts),
        "speedup_vs_tshark_fields": round(t_ts / t_ours, 1),
        "speedup_with_dsn_vs_tshark_fields": round(t_ts / (t_ours + t_ann), 1),
    }
    if t_tsa is not None:
        res.update(
            {
                "tshark_analysis_s": round(t_tsa, 2),
                "speedup_with_dsn_vs_tshark_analysis": round(t_tsa / (t_ours + t_ann), 1),
            }
        )
    for k, v in res.items():
        print(f"{k:>38}: {v}")
    if a.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
