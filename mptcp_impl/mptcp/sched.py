"""Packet schedulers: which subflow gets the next bytes (Linux's sched.c, and the v0 kernel's
mptcp_sched.c, mptcp_rr.c, mptcp_redundant.c, mptcp_blest.c, mptcp_ecf.c).

The interface is one method, so that a researcher's scheduler is a few lines::

    class Slowest:
        def pick(self, candidates):
            return max(candidates, key=lambda s: s.srtt or 0.0, default=None)

``pick(candidates)`` gets the subflows that can take data now (each with ``space > 0``) and
returns one of them, a list (the same bytes go on each: "send on several"; the first one's room
sets the chunk size, and one without room for its copy sends it once it has room, from the
first byte not yet DATA_ACKed), or None (wait: nothing is sent until the next ACK, timer or
write). ``candidates`` is a list; it also
carries what schedulers that look further need (``Candidates``): every usable subflow, the
bytes waiting and the peer's data-level window. The connection asks again for each chunk (at
most one mapping, ``MptcpConfig.max_mapping`` bytes, and at most the picked subflows' space).
A scheduler object lives as long as its connection, so it may keep state.
"""

from __future__ import annotations

from typing import Any, Protocol


class SubflowView(Protocol):
    """What a scheduler may read about a subflow (all sizes in bytes, times in seconds)."""

    backup: bool  # used only when no other subflow is usable (MP_JOIN B flag / endpoint)
    stale: bool  # timed out repeatedly without progress (net.mptcp.stale_loss_cnt)

    @property
    def cwnd(self) -> int: ...
    @property
    def ssthresh(self) -> int: ...
    @property
    def mss(self) -> int: ...
    @property
    def in_flight(self) -> int: ...  # sent, not yet acknowledged at the subflow level
    @property
    def queued(self) -> int: ...  # handed to the subflow, not yet sent
    @property
    def srtt(self) -> float | None: ...
    @property
    def rttvar(self) -> float | None: ...
    @property
    def pacing_rate(self) -> float: ...  # bytes/s, Linux's: (2 in slow start, else 1.2) cwnd/srtt
    @property
    def space(self) -> int: ...  # bytes it can take now without queueing behind its cwnd


class Candidates(list):
    """The subflows ``pick`` may choose from now (each has ``space > 0``), and the context:

    - ``all``: every usable subflow, with or without space (whom one could wait for);
    - ``waiting``: bytes written by the application and not yet given to any subflow;
    - ``window``: the peer's data-level receive window (DATA_ACK + window - DATA_ACK);
    - ``window_left``: what that window still allows beyond the data already scheduled;
    - ``reinjection``: True when the bytes are a failed subflow's, to be sent again;
    - ``now``: the connection's clock (seconds).
    """

    def __init__(
        self,
        subflows: list[Any],
        all: list[Any] | None = None,
        waiting: int = 0,
        window: int = 0,
        window_left: int = 0,
        reinjection: bool = False,
        now: float = 0.0,
    ) -> None:
        super().__init__(subflows)
        self.all = list(all) if all is not None else list(subflows)
        self.waiting = waiting
        self.window = window
        self.window_left = window_left
        self.reinjection = reinjection
        self.now = now


class Scheduler(Protocol):
    def pick(self, candidates: list[SubflowView]) -> SubflowView | list[SubflowView] | None: ...


def is_backup(s: Any) -> bool:
    """Backup when we asked for it (our endpoint's flag) or the peer did (MP_JOIN's B flag,
    MP_PRIO), as Linux's ``subflow->backup || subflow->request_bkup``."""
    return s.backup or getattr(s, "peer_backup", False)


def as_list(choice: Any) -> list[Any]:
    """A scheduler's answer as a list of subflows (empty: wait)."""
    if choice is None:
        return []
    if isinstance(choice, (list, tuple)):
        return [s for s in choice if s is not None]
    return [choice]


def _active(subs: list[Any]) -> list[Any]:
    """Linux's rule for backups: non-backup, non-stale subflows when there are any; otherwise
    the non-stale backups; otherwise whatever there is."""
    act = [s for s in subs if not is_backup(s) and not s.stale]
    if act:
        return act
    return [s for s in subs if not s.stale] or list(subs)


def _srtt(s: Any) -> float:
    return s.srtt if s.srtt is not None else 0.1


class DefaultScheduler:
    """Linux's default: the subflow whose queue drains first (lowest linger time, queued and
    in-flight bytes over its rate cwnd/srtt); backup subflows only when no other is usable."""

    name = "default"

    def pick(self, candidates: list[SubflowView]) -> SubflowView | None:
        active = [s for s in candidates if not is_backup(s) and not s.stale]
        every = getattr(candidates, "all", candidates)
        working = any(not is_backup(s) and not s.stale for s in every)
        if not active and (getattr(candidates, "reinjection", False) or not working):
            # New data waits for a working non-backup subflow that is merely full; backups
            # take reinjections, or everything once no other works (Linux's get_send/retrans).
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


class MinRttScheduler:
    """The v0 kernel's default (mptcp_sched.c): the lowest smoothed RTT among the subflows with
    room in their cwnd. While any non-backup subflow is usable, backups get nothing and a full
    cwnd on every non-backup subflow means waiting; backups are used, lowest RTT first, only
    when there is no usable non-backup subflow."""

    name = "minrtt"

    def pick(self, candidates: list[SubflowView]) -> SubflowView | None:
        every = getattr(candidates, "all", candidates)
        if any(not is_backup(s) and not s.stale for s in every):
            pool = [s for s in candidates if not is_backup(s) and not s.stale]
        else:
            pool = [s for s in candidates if not s.stale]
        return min(pool, key=_srtt, default=None)


class RoundRobinScheduler:
    """The v0 kernel's mptcp_rr.c with its default cwnd_limited=1: each subflow in turn (in
    the order they were opened) gets a chunk as long as it has room in its cwnd; a subflow
    without room is skipped. Backups only when no non-backup subflow is usable."""

    name = "roundrobin"

    def __init__(self) -> None:
        self._last: Any = None

    def pick(self, candidates: list[SubflowView]) -> SubflowView | None:
        every = _active(list(getattr(candidates, "all", candidates)))
        if not every:
            return None
        start = every.index(self._last) + 1 if self._last in every else 0
        for i in range(len(every)):
            s = every[(start + i) % len(every)]
            if s in candidates:
                self._last = s
                return s
        return None


class RedundantScheduler:
    """Every byte on every active subflow (the v0 kernel's mptcp_redundant.c, for latency and
    robustness): each chunk goes on the fastest subflow with room and, as copies, on every
    other non-backup, non-stale subflow. A subflow without room catches up later, skipping what
    the DATA_ACK has covered meanwhile, so the slowest path never holds the others back.
    Backups only when no other subflow is usable."""

    name = "redundant"

    def pick(self, candidates: list[SubflowView]) -> list[SubflowView] | None:
        group = sorted(_active(list(getattr(candidates, "all", candidates))), key=_srtt)
        first = next((s for s in group if s in candidates), None)
        if first is None:
            return None
        return [first] + [s for s in group if s is not first]


class BlestScheduler:
    """BLEST (Ferlin, Alay, Mehani, Boreli, IFIP Networking 2016; the v0 kernel's
    mptcp_blest.c): take the min-RTT choice; if that is not the fastest subflow overall, estimate
    how many bytes the fastest one (F) could send while the slower one (S) holds a segment,
    X = lambda * MSS_F * (CWND_F + (n - 1)/2) * n with n = RTT_S/RTT_F + 1 rounds (Reno's growth;
    in initial slow start CWND_F * (2^n - 1) segments), and wait for F if X exceeds the send
    window left once S's in-flight bytes and this segment are counted: |W| - (in_flight_S + MSS).
    lambda starts at 1.2 and moves within [1.0, 1.3]: +0.04 per S-RTT with an opportunistic
    retransmission (the connection calls ``on_opportunistic``), -0.01 per S-RTT otherwise."""

    name = "blest"
    LAMBDA, LAMBDA_MIN, LAMBDA_MAX = 1.2, 1.0, 1.3
    BAD, GOOD = 0.04, 0.01

    def __init__(self) -> None:
        self.lam = self.LAMBDA
        self.waits = 0
        self._retrans = False
        self._lam_at: float | None = None

    def on_opportunistic(self) -> None:
        self._retrans = True

    def _update_lambda(self, slow: Any, now: float) -> None:
        if self._lam_at is not None and now - self._lam_at < _srtt(slow):
            return
        if self._lam_at is not None:
            self.lam += self.BAD if self._retrans else -self.GOOD
            self.lam = min(self.LAMBDA_MAX, max(self.LAMBDA_MIN, self.lam))
        self._retrans = False
        self._lam_at = now

    def fast_bytes(self, fast: Any, time: float) -> float:
        """Bytes the fast subflow can send in ``time`` seconds (BLEST's X, lambda included)."""
        n = int(time / _srtt(fast)) + 1
        cw = fast.cwnd / fast.mss
        if fast.ssthresh >= 1 << 29:  # initial slow start: cwnd doubles each round
            packets = cw * ((1 << min(n, 16)) - 1)
        else:
            packets = (max(cw, fast.ssthresh / fast.mss + 1) + (n - 1) / 2) * n
        return self.lam * packets * fast.mss

    def pick(self, candidates: list[SubflowView]) -> SubflowView | None:
        best = MinRttScheduler().pick(candidates)
        every = [s for s in getattr(candidates, "all", candidates) if not s.stale]
        fast = min(every, key=_srtt, default=None)
        if best is None or fast is None or best is fast or getattr(candidates, "reinjection", 0):
            return best
        self._update_lambda(best, getattr(candidates, "now", 0.0))
        x = self.fast_bytes(fast, _srtt(best))
        window = getattr(candidates, "window", 0)
        left = window - (best.in_flight + best.queued + best.mss)
        if x > max(left, 0):
            self.waits += 1
            return None
        return best


class EcfScheduler:
    """ECF, Earliest Completion First (Lim, Nahum, Towsley, Gibbens, CoNEXT 2017; the v0
    kernel's mptcp_ecf.c): take the min-RTT choice; if that is a slower subflow S than the
    fastest F, with k the bytes waiting (at least one cwnd of F), delta = max(rttvar_F,
    rttvar_S) and beta = 1/4, wait for F when

        RTT_F * (1 + k / (CWND_F*MSS)) < (1 + waiting * beta) * (RTT_S + delta)   and
        RTT_S * max(k, CWND_S*MSS) / (CWND_S*MSS) >= 2 * RTT_F + delta,

    where ``waiting`` (hysteresis) is 1 after a wait and 0 after a decision to use S. delta is
    the paper's (the RTT deviations, RFC 6298's RTTVAR here); the v0 kernel's rttvar_us >> 1 is
    about twice that: set ``DELTA_SCALE = 2`` for its margin."""

    name = "ecf"
    BETA = 0.25
    DELTA_SCALE = 1.0

    def __init__(self) -> None:
        self.waiting = 0
        self.waits = 0

    def pick(self, candidates: list[SubflowView]) -> SubflowView | None:
        best = MinRttScheduler().pick(candidates)
        every = [s for s in getattr(candidates, "all", candidates) if not s.stale]
        fast = min(every, key=_srtt, default=None)
        if best is None or fast is None or best is fast or getattr(candidates, "reinjection", 0):
            return best
        k = getattr(candidates, "waiting", 0)
        rtt_f, rtt_s = _srtt(fast), _srtt(best)
        delta = self.DELTA_SCALE * max(fast.rttvar or 0.0, best.rttvar or 0.0)
        cw_f, cw_s = max(fast.cwnd, 1), max(best.cwnd, 1)
        x_f = max(k, cw_f)
        if rtt_f * (1 + x_f / cw_f) < (1 + self.waiting * self.BETA) * (rtt_s + delta):
            if rtt_s * max(k, cw_s) / cw_s >= 2 * rtt_f + delta:
                self.waiting = 1
                self.waits += 1
                return None
        else:
            self.waiting = 0
        return best


SCHEDULERS: dict[str, Any] = {
    "default": DefaultScheduler,
    "minrtt": MinRttScheduler,
    "roundrobin": RoundRobinScheduler,
    "redundant": RedundantScheduler,
    "blest": BlestScheduler,
    "ecf": EcfScheduler,
}


def make_scheduler(spec: Any) -> Scheduler:
    """A scheduler for one connection from a name (``SCHEDULERS``), ``FILE.py:Class``, a class
    or an instance with ``pick``."""
    from .plugins import load

    return load(spec, SCHEDULERS, "scheduler", lambda o: hasattr(o, "pick"))
