"""Shared test setup. Network tests need root: the suite is meant to run as root (CI does).

Under pytest-xdist (``./inv test`` runs ``-n 2``) the sans-I/O modules spread over the
workers while the live tests go to one worker, in collection order: live tests never
overlap, since namespaces, veth names, nft tables, sysctls and the kernel's counters are the
machine's, not a test's. The sans-I/O tests (a fake clock, no namespace, no root) run beside
them on the other core, and so does a second live unit (LIVE_APART): live tests that check
orchestration, not timing, and share nothing of the machine with the first unit's.
"""

import os

import pytest

# Folders and modules with no namespace, no root and no kernel state of their own: safe to run
# beside a live test. Everything else is live (one worker, one test at a time).
SANS_IO = (
    "tests/tcp/",
    "tests/mptcp/",
    "tests/stress/test_fuzz_segments.py",
    "tests/test_bootstrap.py",  # ./inv in a copy, with stand-ins for dpkg, apt-get and pip
    "tests/test_suite_durations.py",
    "tests/test_suite_units.py",  # which unit each test is in (this file's rules)
    "tests/test_testkit_readline.py",  # testkit's line reader on a shell's pipe
    "tests/analysis/test_verdict.py",  # the claims rule: plain arithmetic
    # the failover table's known answers: hand-built pcaps (mptcp_craft) analysed and reported
    # in tmp_path, no namespace, no capture of its own
    "tests/analysis/test_analysis_failover_known.py",
    # hand-built pcaps (mptcp_craft) too: both ends' analyses and their report; options against
    # tshark's dissector (a subprocess on a file); the definitions, events files, metrics and
    # middlebox signals on made-up frames. None is marked net: nothing here needs root
    "tests/analysis/test_analysis_both_ends.py",
    "tests/analysis/test_analysis_crafted.py",
    "tests/analysis/test_analysis_definitions.py",
    "tests/analysis/test_analysis_events.py",
    "tests/analysis/test_analysis_metrics.py",
    "tests/analysis/test_analysis_middlebox.py",
    # files in, files or values out (experiment files, metrics, reports from fixture rows)
    "tests/experiments/test_apps.py",
    "tests/experiments/test_campaigns.py",
    "tests/experiments/test_coupled_claims.py",
    "tests/experiments/test_demo_report.py",
    "tests/experiments/test_experiment_config.py",
    "tests/experiments/test_experiment_metrics.py",
    "tests/experiments/test_experiment_sample.py",
    "tests/experiments/test_path_rates.py",
    "tests/experiments/test_records.py",
    "tests/testbed/test_clock.py",
    "tests/testbed/test_inventory.py",
    "tests/testbed/test_packets.py",
    "tests/testbed/test_pmmonitor.py",
    "tests/testbed/test_topology.py",
    "tests/testbed/test_uspm.py",  # the mptcp_pm codec and the daemon's decisions, no kernel
    "tests/userspace_tcp/test_api_reader.py",  # the application's stream reader alone, in a loop
)


# Live modules whose checks are orchestration and bookkeeping (what ran where, which files, the
# journal, retries, refusals), never a rate or a delay that the other worker's load could move,
# and which share no state of the machine with the other live tests: each builds its own
# namespaces (SshMachines' random names and addresses, Mininet's unnamed ones), its sshd listens
# inside them (test_ssh's on a free loopback port), its results go to tmp_path; nft tables,
# sysctls and MPTCP counters are per namespace. They are one unit ("live-apart"), one test at a
# time among themselves (the sshd users share /run/sshd, which each makes and removes when it
# was missing), on the other worker beside the "live" unit, at the sans-I/O tests' nice: the
# timing-bound live tests keep their CPU. What they do put in the root namespace, the SSH
# machines' management links, test_net's root-namespace check leaves out by name
# (testkit/sshmachines.py MGMT_LINK); registry.clean_leftovers, which test_net calls, leaves
# the records of a live owner alone.
LIVE_APART = (
    "tests/experiments/test_remote.py",  # campaigns on SSH machines: files, pcaps, intact
    "tests/experiments/test_workers.py",  # campaigns on workers: retries, journal, quarantine
    "tests/experiments/test_merge.py",  # sharded campaign == whole one (folders compared)
    "tests/experiments/test_resume.py",  # interrupted + resumed == uninterrupted
    "tests/testbed/test_crosslink.py",  # a vxlan between two SSH machines (SshMachines too)
    "tests/testbed/test_ssh.py",  # SshHost against a loopback sshd (/run/sshd, as above)
    # bookkeeping of single runs: a new folder per run, a run's teardown on SIGTERM
    "tests/experiments/test_experiment_runner.py::test_results_are_never_overwritten",
    "tests/experiments/test_experiment_runner.py::test_interrupted_run_is_marked_and_cleaned",
    # a flow cut for good is stopped at its timeout (its gap is the rest of the run: > 2 s by
    # construction); a background flow's files and outcome (its goodput only > 0)
    "tests/experiments/test_experiment_runner.py::test_flow_that_never_finishes_is_stopped",
    "tests/experiments/test_experiment_runner.py::test_background_flow_runs_beside_the_main_one",
    # what the kernel had in the namespaces and the sockets (not the goodput test beside them)
    "tests/experiments/test_knobs.py::test_sysctl_grid_is_in_force_in_every_namespace",
    "tests/experiments/test_knobs.py::test_congestion_control_reaches_both_ends_sockets",
    # a testbed's teardown on SIGINT/SIGTERM and ./inv clean after a killed run: that it
    # happens, not how fast (clean_leftovers leaves a live owner's records alone)
    "tests/testbed/test_net.py::test_interrupted_run_tears_down",
    "tests/testbed/test_net.py::test_clean_removes_what_a_killed_run_left",
    # refusals: a topology with a bad trace makes no namespace (strace of the build; its
    # control builds a testbed and asserts only that it did), an app server that exits is a
    # clear error naming it (nothing of the run's traffic is measured)
    "tests/testbed/test_trace.py::test_a_bad_trace_is_refused_before_any_namespace",
    "tests/experiments/test_apps_live.py::test_a_server_that_does_not_start_is_a_clear_error",
    # kernel MPTCP's userspace path manager: the codec's replies (errnos, an ADD_ADDR seen),
    # pm_type set and put back, no daemon left, and which subflow each mode's daemon opens
    # before or after a link event (an order, no delay bounded: the join at ESTABLISHED, before
    # the link goes down 1.5 s into the run, or at the event itself). pm_type, the genl PM
    # events and the MPTCP counters are per namespace; each test builds its own two_path
    "tests/testbed/test_uspm_live.py",
    # reports rendered from the analysis fixtures' captures (CPU-bound, and nice 10 here keeps
    # that off the live unit): which files, figures, links and metrics, the pool's files equal
    # to the serial ones; no bound on what the transfers achieved. Their session fixtures
    # (tests/analysis/conftest.py: campaign, runs) are built on this worker in namespaces
    # named after its pid (mptcp_pair "an<pid>..."), which no live test's name can collide with
    "tests/analysis/test_analysis_report.py::test_campaign_report_compares_and_sweeps",
    "tests/analysis/test_analysis_report.py::test_combined_report_keeps_figures_and_links",
    "tests/analysis/test_analysis_report.py::"
    "test_campaign_analysed_on_a_process_pool_equals_the_serial_one",
    # our parser against tshark and its own two paths on those captures: files only
    "tests/analysis/test_analysis_parse_real.py",
    "tests/analysis/test_analysis_parse_paths.py",
    # more of the same on this worker's `runs`: a run's report rendered in chromium (its
    # images load), analysis of a run with pieces missing and a truncated capture (a clear
    # error), the runner's events format read back (a cut's gap > 0.05 s, which a slower
    # build only lengthens); the capture files' cache, pcapng, broken files, and a capture on
    # `any` of a loopback transfer in a namespace named after the worker's pid ("an<pid>-any").
    # The metrics that bound what the runs achieved (goodput, failover gap, recovery) stay live
    "tests/analysis/test_analysis_files.py",
    "tests/analysis/test_analysis_report.py::test_run_report_renders_in_chromium",
    "tests/analysis/test_analysis_report.py::test_missing_pieces_and_a_broken_pcap",
    "tests/analysis/test_analysis_report.py::test_runner_event_format",
    # what a middlebox that acts at the handshake does to both stacks: the fallback counters,
    # the bytes intact; and a rewritten byte without checksums: delivered changed, nothing
    # counted. No join is expected (so no race between a join and the transfer's end), no
    # rate or delay bounded; the stall timeout (30 s) is 30 times a transfer. The tests that
    # want two subflows (clean_mptcp), a join refused or announced, the checksum's MP_FAIL
    # and the coalescing box's 5 s stall stay live. make_mbox_bed builds each (box, link)
    # testbed on the worker that needs it (Mininet's unnamed namespaces)
    "tests/middleboxes/test_middleboxes.py::test_strip_syn_",
    "tests/middleboxes/test_middleboxes.py::test_strip_after_syn_",
    "tests/middleboxes/test_middleboxes.py::test_payload_rewrite_kernel_without_checksums",
    "tests/middleboxes/test_middleboxes.py::test_payload_rewrite_ours_without_checksums",
    # which subflows exist and what the counters say, over IPv6 and mixed families, and with
    # MP_CAPABLE's flag C: exact counts and address pairs, the bytes intact; no rate, delay or
    # gap bounded (a join takes a few round trips of 10-25 ms, the 2 MB transfers ~0.5 s or
    # more). Each module builds its own testbed (module fixture), its ports and nft fences
    # inside its namespaces
    "tests/mptcp_interop/test_ipv6.py",
    "tests/mptcp_interop/test_join_edges.py",
    # our userspace TCP's API (echo, EOF after all bytes with a paused reader, the BPF filter,
    # the fence removed on SIGTERM) and robustness (challenge ACKs, malformed segments dropped
    # and counted): events awaited with timeouts of 10-60 s, no rate or delay bounded; its
    # own two_path per module
    "tests/userspace_tcp/test_api.py",
    "tests/userspace_tcp/test_robustness.py",
    # the control plane's tests that want no join at all: MP_FASTCLOSE from either side (the
    # counters and the reset, each sets the PM it needs), one subflow's checksum failure
    # (MP_FAIL, the infinite mapping) and a client at subflows=0. The others (a join made in
    # a 1 MB transfer, ADD_ADDR timeouts of 1 s) stay live; each worker builds its ctrl_plane
    "tests/mptcp_interop/test_ctrl_plane.py::test_fastclose_our_client",
    "tests/mptcp_interop/test_ctrl_plane.py::test_fastclose_linux_server",
    "tests/mptcp_interop/test_ctrl_plane.py::test_fastclose_our_server",
    "tests/mptcp_interop/test_ctrl_plane.py::test_checksum_failure_single_subflow",
    "tests/mptcp_interop/test_ctrl_plane.py::test_subflow_limits[ours0]",
)
LIVE, LIVE_APART_UNIT = "live", "live-apart"


def xdist_scope(nodeid: str) -> str:
    """The unit of work a worker takes: a sans-I/O module, "live-apart" or "live" (every
    other test)."""
    if nodeid.startswith(SANS_IO):
        return nodeid.split("::")[0]
    return LIVE_APART_UNIT if nodeid.startswith(LIVE_APART) else LIVE


def unmatched_live_apart(nodeids: list[str]) -> list[str]:
    """The LIVE_APART entries that match none of these tests although their module was
    collected (a module not collected at all, as in a run of another folder, is no mistake)."""
    modules = {n.split("::")[0] for n in nodeids}
    return [
        entry
        for entry in LIVE_APART
        if entry.split("::")[0] in modules and not any(n.startswith(entry) for n in nodeids)
    ]


@pytest.hookimpl(optionalhook=True)  # (a hook of pytest-xdist: unknown without it)
def pytest_xdist_make_scheduler(config, log):
    """Whatever --dist says, the live tests go to one worker as one unit (xdist's own
    ``loadgroup`` cannot be used: with pytest 9 its group marks no longer reach the node ids).
    The live unit first, then the live-apart one, so that both start at once, one on each
    worker (a worker takes a next unit only when it has two tests left); then the rest,
    largest first (``loadscopereorder``)."""
    from xdist.scheduler import LoadScopeScheduling

    class LiveOnOneWorker(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_scope(nodeid)

        def _assign_work_unit(self, node) -> None:
            for scope in (LIVE_APART_UNIT, LIVE):  # (each moved to the front: live first)
                if scope in self.workqueue:
                    self.workqueue.move_to_end(scope, last=False)
            super()._assign_work_unit(node)

    return LiveOnOneWorker(config, log)


# A sans-I/O or live-apart test beside a live one yields the CPU: the live test's processes
# (our stack, the Python link emulator, tcpdump, Linux's peers) keep their timing as in a
# serial run (two parallel runs at equal priority failed timing-bound live checks, 1 and 2 of
# ~990). What a live-apart test starts (sshd, the runs through it) inherits the nice.
SANS_IO_NICE = 10


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    beside = item.nodeid.startswith(SANS_IO) or item.nodeid.startswith(LIVE_APART)
    if not (os.environ.get("PYTEST_XDIST_WORKER") and beside):
        yield
        return
    before = os.getpriority(os.PRIO_PROCESS, 0)
    os.setpriority(os.PRIO_PROCESS, 0, max(before, SANS_IO_NICE))
    try:
        yield
    finally:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, before)  # (raising it back needs root)
        except PermissionError:
            pass


def pytest_collection_modifyitems(config, items):
    # a net test in a sans-I/O folder would run beside the live ones: refuse it by name
    wrong = [i.nodeid for i in items if "net" in i.keywords and i.nodeid.startswith(SANS_IO)]
    if wrong:
        raise pytest.UsageError(
            f"tests marked net in a sans-I/O folder (tests/conftest.py SANS_IO): {wrong}"
        )
    # a LIVE_APART entry that names no test (renamed, moved) would put nothing apart, silently
    # (a module picked test by test on the command line is not collected whole: not checked)
    picked = {a.split("::")[0] for a in config.args if "::" in a}
    unmatched = [
        e
        for e in unmatched_live_apart([i.nodeid for i in items])
        if not any(e.split("::")[0].endswith(p.removeprefix("./")) for p in picked)
    ]
    if unmatched:
        raise pytest.UsageError(
            f"tests/conftest.py LIVE_APART names no collected test of its module: {unmatched}"
        )
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root for namespaces")
    for item in items:
        if "net" in item.keywords:
            item.add_marker(skip)
