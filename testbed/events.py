"""Link events at given times: deterministic, scheduled from the experiment's start, logged with
the time they actually happened."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

ACTIONS = ("down", "up", "set")
MODES = ("blackhole", "interface")


@dataclass(frozen=True)
class LinkEvent:
    at: float  # seconds after the start (t0)
    link: str
    action: str  # "down" | "up" | "set"
    mode: str = "blackhole"  # for down/up: a silent blackhole on the path, or the host's interface
    params: dict[str, Any] = field(default_factory=dict)  # for set: rate_mbit, delay_ms, ...

    def __post_init__(self):
        if self.action not in ACTIONS:
            raise ValueError(f"event action must be one of {ACTIONS}, got {self.action!r}")
        if self.mode not in MODES:
            raise ValueError(f"event mode must be one of {MODES}, got {self.mode!r}")
        if self.at < 0:
            raise ValueError(f"event time must be >= 0, got {self.at}")


class EventRun:
    """A thread that applies events at t0 + at. `log` records, per event, the planned time and
    the time the change was in effect (seconds after t0); `error` keeps the first failure."""

    def __init__(self, apply: Callable[[LinkEvent], None], events: list[LinkEvent], t0: float):
        self.events = sorted(events, key=lambda e: e.at)
        self.t0 = t0
        self.log: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self._apply = apply
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name="link-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        for ev in self.events:
            if self._cancel.wait(max(0.0, self.t0 + ev.at - time.monotonic())):
                return
            started = time.monotonic() - self.t0
            try:
                self._apply(ev)
            except Exception as e:  # recorded and re-raised by wait()
                self.error = e
                self.log.append({**asdict(ev), "actual": started, "error": str(e)})
                return
            done = time.monotonic() - self.t0
            self.log.append({**asdict(ev), "actual": started, "done": done})

    def wait(self, timeout: float | None = None) -> list[dict[str, Any]]:
        self._thread.join(timeout)
        if self.error:
            raise self.error
        return self.log

    def cancel(self) -> None:
        self._cancel.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5)
