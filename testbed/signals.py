"""SIGTERM and SIGHUP as an exception, so that every `with` and `finally` on the way out runs."""

from __future__ import annotations

import ctypes
import os
import signal
import threading
from typing import Any


class Interrupted(BaseException):
    """Raised in the main thread on SIGTERM/SIGHUP inside a SignalGuard, so that the stack
    unwinds and tears down what it built."""


class SignalGuard:
    """While entered (in the main thread; elsewhere it does nothing), SIGTERM and SIGHUP raise
    Interrupted; the previous handlers come back on exit. Guards nest."""

    SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self._old: dict[int, Any] = {}

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, _raise_interrupted)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old.clear()


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(f"signal {signum}")


def die_with_parent() -> None:
    """SIGTERM to this process when the one that started it dies (SIGKILL included): no
    monitor or path-manager daemon outlives a killed run. Called in the child (as a
    ``preexec_fn`` or at its start); a parent already gone before the request took effect
    is caught too."""
    ppid = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != ppid:
        os.kill(os.getpid(), signal.SIGTERM)
