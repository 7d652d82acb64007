"""benchmarks/suite_durations.py: pytest's --durations lines summed per module and phase."""

from benchmarks.suite_durations import parse, table

OUT = """\
============================= slowest durations ==============================
49.71s call     tests/experiments/test_remote.py::test_a_run_on_two_machines_end_to_end
8.87s setup    tests/analysis/test_analysis_files.py::test_unchanged_pcap_is_parsed_once
1.73s teardown tests/userspace_tcp/test_interop.py::test_connection_refused_by_linux
0.50s call     tests/analysis/test_analysis_files.py::test_b[x::y]
(580 durations < 0.005s hidden.  Use -vv to show these durations.)
=========== 987 passed, 1 skipped in 861.48s (0:14:21) ===========
"""


def test_times_are_summed_by_module_and_phase():
    t = parse(OUT)
    files = t.modules["tests/analysis/test_analysis_files.py"]
    assert (files.setup, files.call, files.teardown) == (8.87, 0.5, 0.0)
    assert t.modules["tests/userspace_tcp/test_interop.py"].teardown == 1.73
    assert len(t.modules) == 3 and t.wall_s == 861.48 and t.passed == 987


def test_the_table_puts_the_largest_module_first_and_compares_runs():
    one, two = parse(OUT), parse(OUT.replace("49.71s call", "24.24s call"))
    rows = table([one, two], ["before", "after"]).splitlines()
    assert rows[2] == "| tests/experiments/test_remote.py | 49.7 | 24.2 |"
    assert rows[-1] == "| **wall time (pytest)** | 861.5 | 861.5 |"
    assert "| **sum of test times** | 60.8 | 35.3 |" in rows
