"""How ./inv test splits the suite between its two workers (tests/conftest.py): which unit a
test belongs to decides what may run beside what, so a mistake there is a flaky suite."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "suite_conftest", Path(__file__).with_name("conftest.py")
)
conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conftest)


def test_each_test_has_its_unit():
    scope = conftest.xdist_scope
    # sans-I/O: a unit per module, anywhere
    assert scope("tests/tcp/test_tcp_cc.py::test_x") == "tests/tcp/test_tcp_cc.py"
    assert scope("tests/experiments/test_campaigns.py::test_y[a]") == (
        "tests/experiments/test_campaigns.py"
    )
    # orchestration, apart from the timing-bound tests: a whole module, or single tests
    assert scope("tests/experiments/test_workers.py::test_z") == "live-apart"
    knobs = "tests/experiments/test_knobs.py::"
    assert scope(knobs + "test_congestion_control_reaches_both_ends_sockets") == "live-apart"
    # the goodput test beside them is timing-bound: with the other live tests, one at a time
    assert scope(knobs + "test_small_buffers_bound_the_goodput_of_kernel_tcp_and_our_stack") == (
        "live"
    )
    assert scope("tests/testbed/test_conditions.py::test_loss") == "live"
    # the analysis fixtures' reports apart; the metrics with bounds on what the runs achieved
    # (goodput, failover gap) stay with the timing-bound tests
    report = "tests/analysis/test_analysis_report.py::"
    assert scope(report + "test_combined_report_keeps_figures_and_links") == "live-apart"
    assert scope(report + "test_failover_run_metrics") == "live"
    assert scope(report + "test_plain_tcp_gets_the_same_metrics") == "live"  # goodput bounds
    assert scope(report + "test_run_report_renders_in_chromium") == "live-apart"
    assert scope("tests/analysis/test_analysis_files.py::test_pcapng_reads_like_pcap") == (
        "live-apart"
    )
    assert scope("tests/mptcp_interop/test_two_path.py::test_a") == "live"
    # the userspace PM's live checks (replies, events' order, pm_type put back) apart
    uspm = "tests/testbed/test_uspm_live.py::test_codec_against_the_kernel"
    assert scope(uspm) == "live-apart"
    # the middleboxes that act at the handshake apart; those whose outcome needs a join made
    # before the transfer ends (two subflows, a refused join) or a 5 s stall stay live
    mbox = "tests/middleboxes/test_middleboxes.py::"
    assert scope(mbox + "test_strip_syn_kernel_falls_back") == "live-apart"
    assert scope(mbox + "test_strip_after_syn_ours_falls_back_both_ends") == "live-apart"
    assert scope(mbox + "test_seq_rewrite_kernel_transparent") == "live"
    assert scope(mbox + "test_payload_rewrite_ours_with_checksums") == "live"
    assert scope(mbox + "test_coalesce_kernel_never_delivers_merged_data_wrong") == "live"
    ctrl = "tests/mptcp_interop/test_ctrl_plane.py::"
    assert scope(ctrl + "test_fastclose_our_client") == "live-apart"
    assert scope(ctrl + "test_subflow_limits[ours0]") == "live-apart"
    assert scope(ctrl + "test_subflow_limits[linux_server0]") == "live"  # a join in 1 MB
    assert scope(ctrl + "test_fastclose_on_ack_our_client") == "live"  # a join before 1 MB
    assert scope(ctrl + "test_add_addr_timeout_echo_dropped") == "live"
    # the failover table's known answers: crafted pcaps, sans-I/O
    known = "tests/analysis/test_analysis_failover_known.py"
    assert scope(known + "::test_tcp_failover_known_answers") == known
    both = "tests/analysis/test_analysis_both_ends.py"
    assert scope(both + "::test_the_run_analysis_and_report_show_them") == both


def test_live_apart_and_sans_io_do_not_overlap():
    for entry in conftest.LIVE_APART:
        assert not entry.startswith(conftest.SANS_IO), entry


def test_a_live_apart_entry_that_names_no_test_is_reported():
    ids = [
        "tests/experiments/test_knobs.py::test_congestion_control_reaches_both_ends_sockets",
        "tests/experiments/test_workers.py::test_z",
    ]
    unmatched = conftest.unmatched_live_apart(ids)
    # knobs' sysctl test is missing from these ids, its module is there: reported
    assert unmatched == [
        "tests/experiments/test_knobs.py::test_sysctl_grid_is_in_force_in_every_namespace"
    ]
    # modules not collected at all (a run of one folder) are no mistake
    assert conftest.unmatched_live_apart(["tests/tcp/test_tcp_cc.py::test_x"]) == []
