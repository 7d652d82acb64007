"""Shared test setup. Network tests need root: the suite is meant to run as root (CI does).

Under pytest-xdist (``./inv test`` runs ``-n 2``) the sans-I/O modules spread over the
workers while every other test goes to one worker, in collection order: live tests never
overlap, since namespaces, veth names, nft tables, sysctls and the kernel's counters are the
machine's, not a test's. The sans-I/O tests (a fake clock, no namespace, no root) run beside
them on the other core.
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
    "tests/analysis/test_verdict.py",  # the claims rule: plain arithmetic
)


def xdist_scope(nodeid: str) -> str:
    """The unit of work a worker takes: a sans-I/O module, or "live" (every other test)."""
    return nodeid.split("::")[0] if nodeid.startswith(SANS_IO) else "live"


@pytest.hookimpl(optionalhook=True)  # (a hook of pytest-xdist: unknown without it)
def pytest_xdist_make_scheduler(config, log):
    """Whatever --dist says, the live tests go to one worker as one unit (xdist's own
    ``loadgroup`` cannot be used: with pytest 9 its group marks no longer reach the node ids).
    Largest unit first (``loadscopereorder``): the live unit starts at once on one worker."""
    from xdist.scheduler import LoadScopeScheduling

    class LiveOnOneWorker(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_scope(nodeid)

    return LiveOnOneWorker(config, log)


# A sans-I/O test beside a live one yields the CPU: the live test's processes (our stack, the
# Python link emulator, tcpdump, Linux's peers) keep their timing as in a serial run (two
# parallel runs at equal priority failed timing-bound live checks, 1 and 2 of ~990).
SANS_IO_NICE = 10


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not (os.environ.get("PYTEST_XDIST_WORKER") and item.nodeid.startswith(SANS_IO)):
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
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root for namespaces")
    for item in items:
        if "net" in item.keywords:
            item.add_marker(skip)
