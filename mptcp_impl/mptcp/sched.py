"""Packet schedulers: which subflow gets the next bytes (Linux's sched.c).

The interface is one method, so that a researcher's scheduler is a few lines: given the
subflows that could take data now, return the one to use, or None to wait.
"""

from __future__ import annotations

from typing import Protocol


class SubflowView(Protocol):
    """What a scheduler may read about a subflow."""

    backup: bool
    stale: bool

    @property
    def cwnd(self) -> int: ...
    @property
    def in_flight(self) -> int: ...  # sent, not yet acknowledged at the subflow level
    @property
    def queued(self) -> int: ...  # handed to the subflow, not yet sent
    @property
    def srtt(self) -> float | None: ...
    @property
    def space(self) -> int: ...  # bytes it can take now without queueing behind its cwnd


def is_backup(s: SubflowView) -> bool:
    return s.backup or getattr(s, "peer_backup", False)


class Scheduler(Protocol):
    def pick(self, candidates: list[SubflowView]) -> SubflowView | None: ...


class DefaultScheduler:
    """Linux's default: the subflow whose queue drains first (lowest linger time, queued and
    in-flight bytes over its rate cwnd/srtt); backup subflows only when no other is usable.
    A subflow is backup when we asked for it (our endpoint's flag) or the peer did (MP_JOIN's B
    flag, MP_PRIO), as Linux's ``subflow->backup || subflow->request_bkup``."""

    name = "default"

    def pick(self, candidates: list[SubflowView]) -> SubflowView | None:
        active = [s for s in candidates if not is_backup(s) and not s.stale]
        if not active:
            active = [s for s in candidates if not s.stale] or candidates
        best = None
        best_linger = 0.0
        for s in active:
            if s.space <= 0:
                continue
            rate = s.cwnd / (s.srtt or 0.1)
            linger = (s.in_flight + s.queued) / rate if rate > 0 else float("inf")
            if best is None or linger < best_linger:
                best, best_linger = s, linger
        return best


SCHEDULERS = {"default": DefaultScheduler}


def make_scheduler(name: str) -> Scheduler:
    try:
        return SCHEDULERS[name]()
    except KeyError:
        raise ValueError(f"unknown scheduler {name!r} (have {sorted(SCHEDULERS)})") from None
