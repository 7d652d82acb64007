"""The one signal guard the testbed and the experiment runner share."""

from __future__ import annotations

import os
import signal

import pytest

from testbed.signals import Interrupted, SignalGuard


def test_sigterm_inside_the_guard_unwinds_and_the_old_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    unwound = []
    with pytest.raises(Interrupted, match=f"signal {int(signal.SIGTERM)}"):
        with SignalGuard():
            try:
                os.kill(os.getpid(), signal.SIGTERM)  # delivered before kill() returns
            finally:
                unwound.append(True)
    assert unwound == [True]
    assert signal.getsignal(signal.SIGTERM) is before


def test_guards_nest_and_restore_in_order():
    before = signal.getsignal(signal.SIGHUP)
    with SignalGuard():
        inner_before = signal.getsignal(signal.SIGHUP)
        with SignalGuard():
            pass
        assert signal.getsignal(signal.SIGHUP) is inner_before
    assert signal.getsignal(signal.SIGHUP) is before
