"""A slice of the whole-segment fuzzer (``segfuzz.py``): 100k mutated segments (options,
header fields, payload with a wrong checksum, trimmed payload, replays) through live simulated
MPTCP connections, no exception, every received byte a prefix of what was sent. The full 1M:
``./inv bench-stress --case fuzz``."""

from __future__ import annotations

import time

from tests.stress.segfuzz import fuzz, run_seed

TARGET = 100_000


def test_fuzz_100k_mutated_segments():
    t0, c0 = time.perf_counter(), time.process_time()
    t = fuzz(TARGET, budget_s=90)  # CPU seconds (about 25 when the machine is not loaded)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"{t.mutated} mutated segments in {t.runs} connections, {dt:.1f} s, CPU {cpu:.1f} s: {t}")
    assert t.mutated >= TARGET, f"only {t.mutated} in the CPU budget"
    assert all(v > TARGET // 10 for v in t.by_kind.values()), t.by_kind
    assert t.bad_checksum_dropped > TARGET // 10
    assert t.completed >= t.runs // 4, "almost nothing completed: the fuzz tests little"
    assert t.bytes_checked > 100 * TARGET


def test_a_seed_is_reproducible():
    a, b = run_seed(7), run_seed(7)
    assert a == b and a.mutated > 0
