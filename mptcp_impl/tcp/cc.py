"""Pluggable congestion control: Reno (RFC 5681 + ABC, RFC 3465) and CUBIC (RFC 9438), both
with HyStart++ (RFC 9406) in their initial slow start.

The connection owns loss detection and recovery (which bytes to resend); a controller only
decides how big cwnd and ssthresh are, so MPTCP can later swap in coupled controllers
(LIA/OLIA) without touching the state machine. All sizes are bytes.
"""

from __future__ import annotations

from typing import Protocol


class CongestionControl(Protocol):
    cwnd: int
    ssthresh: int

    def on_ack(self, bytes_acked: int, rtt: float | None, now: float) -> None:
        """New data acked outside recovery (grow cwnd)."""

    def enter_recovery(self, flight: int, now: float) -> None:
        """A loss was detected by dupacks/SACK: set ssthresh and the reduced cwnd."""

    def exit_recovery(self, flight: int, now: float) -> None:
        """Recovery point acked: settle cwnd (RFC 6582 step 3)."""

    def on_rto(self, flight: int, now: float) -> None:
        """Retransmission timeout: cwnd drops to one segment. The connection calls it once per
        timeout series (RFC 5681 3.1: ssthresh holds while the same data times out again)."""

    def after_idle(self, restart_window: int, now: float) -> None:
        """Sending resumes after an idle period longer than the RTO (RFC 5681 4.1)."""


INF = float("inf")


class HyStartPP:
    """HyStart++ (RFC 9406): leave the initial slow start when the round's minimum RTT has grown
    by RttThresh over the previous round's, for Conservative Slow Start (CSS: a quarter of slow
    start's growth) during CSS_ROUNDS rounds, then congestion avoidance (ssthresh = cwnd). If
    an RTT in CSS drops below the one that made us leave, the exit was spurious: back to slow
    start. Rounds are tracked by sequence number (windowEnd = SND.NXT at a round's start), so
    the connection hands every new ACK's number, SND.NXT and this ACK's RTT sample to
    ``on_ack``. Only the first slow start uses it (section 4.3: later ones have an ssthresh).
    """

    MIN_RTT_THRESH = 0.004
    MAX_RTT_THRESH = 0.016
    MIN_RTT_DIVISOR = 8
    N_RTT_SAMPLE = 8
    CSS_GROWTH_DIVISOR = 4
    CSS_ROUNDS = 5

    __slots__ = (
        "active",
        "window_end",
        "last_min",
        "cur_min",
        "samples",
        "css_baseline",
        "css_rounds",
    )

    def __init__(self) -> None:
        self.active = True  # until the first loss or the end of CSS
        self.window_end: int | None = None
        self.last_min = INF  # lastRoundMinRTT
        self.cur_min = INF  # currentRoundMinRTT
        self.samples = 0  # rttSampleCount
        self.css_baseline: float | None = None  # cssBaselineMinRtt; not None while in CSS
        self.css_rounds = 0

    @classmethod
    def rtt_thresh(cls, last_round_min_rtt: float) -> float:
        return max(
            cls.MIN_RTT_THRESH, min(last_round_min_rtt / cls.MIN_RTT_DIVISOR, cls.MAX_RTT_THRESH)
        )

    def on_ack(self, ack: int, snd_nxt: int, rtt: float | None, acks: int = 1) -> bool:
        """Returns True when CSS has run its CSS_ROUNDS rounds: time for congestion avoidance.
        ``acks``: how many of the peer's ACKs this one stands for (the edge coalesces a batch's
        pure ACKs and hands the last): each was an RTT sample of the round, and its RTT the
        last's or more (the earlier ones were sent before it and echo an older timestamp), so
        the round's minimum is this sample and its count grows by ``acks``. Counted as one, a
        round at a few hundred Mbit/s (a hundred ACKs in a batch) never reached N_RTT_SAMPLE
        processed samples and slow start never ended on delay."""
        if self.window_end is None or ack >= self.window_end:  # a new round
            self.window_end = snd_nxt
            self.last_min = self.cur_min
            self.cur_min = INF
            self.samples = 0
            if self.css_baseline is not None:
                self.css_rounds += 1
                if self.css_rounds >= self.CSS_ROUNDS:
                    self.active = False
                    self.css_baseline = None
                    return True
        if rtt is None:
            return False
        if rtt < self.cur_min:
            self.cur_min = rtt
        self.samples += acks
        if self.samples < self.N_RTT_SAMPLE:
            return False
        if self.css_baseline is None:
            last = self.last_min
            if last != INF and self.cur_min >= last + self.rtt_thresh(last):
                self.css_baseline = self.cur_min  # slow start exit: enter CSS
                self.css_rounds = 0
        elif self.cur_min < self.css_baseline:
            self.css_baseline = None  # spurious exit: back to slow start
        return False

    def stop(self) -> None:
        """A loss ends HyStart++ for good: the loss response sets ssthresh."""
        self.active = False
        self.css_baseline = None

    def growth(self, n: int) -> int:
        return n // self.CSS_GROWTH_DIVISOR if self.css_baseline is not None else n


def initial_window(mss: int) -> int:
    """RFC 6928 IW10, expressed in bytes."""
    return min(10 * mss, max(2 * mss, 14600))


class _HyStartExit:
    """What Reno and CUBIC share: HyStart++ ends the initial slow start (ssthresh = cwnd)."""

    cwnd: int
    ssthresh: int
    mss: int
    hystart: HyStartPP

    def hystart_ack(self, ack: int, snd_nxt: int, rtt: float | None, acks: int = 1) -> None:
        """Every new ACK outside recovery while cwnd < ssthresh (HyStart++ round tracking;
        ``acks``: the peer's ACKs it stands for, ``HyStartPP.on_ack``)."""
        hs = self.hystart
        if hs.active and hs.on_ack(ack, snd_nxt, rtt, acks):
            self.ssthresh = max(self.cwnd, 2 * self.mss)


class Reno(_HyStartExit):
    """Slow start with appropriate byte counting (L = 2 SMSS), then one SMSS per cwnd acked."""

    name = "reno"

    def __init__(self, mss: int) -> None:
        self.mss = mss
        self.cwnd = initial_window(mss)
        self.ssthresh = 1 << 30
        self._acc = 0
        self.hystart = HyStartPP()

    def on_ack(self, bytes_acked: int, rtt: float | None, now: float) -> None:
        if self.cwnd < self.ssthresh:
            self.cwnd += self.hystart.growth(min(bytes_acked, 2 * self.mss))
            return
        self._acc += bytes_acked
        if self._acc >= self.cwnd:
            self._acc -= self.cwnd
            self.cwnd += self.mss

    def enter_recovery(self, flight: int, now: float) -> None:
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.ssthresh
        self._acc = 0
        self.hystart.stop()

    def exit_recovery(self, flight: int, now: float) -> None:
        self.cwnd = self.ssthresh

    def on_rto(self, flight: int, now: float) -> None:
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.mss
        self._acc = 0
        self.hystart.stop()

    def after_idle(self, restart_window: int, now: float) -> None:
        # RFC 5681 4.1: cwnd = RW = min(IW, cwnd); like Linux (tcp_cwnd_restart) ssthresh keeps
        # 3/4 of the old cwnd so slow start brings the connection back to where it was.
        if self.cwnd > restart_window:
            self.ssthresh = max(self.ssthresh, self.cwnd * 3 // 4)
            self.cwnd = restart_window
            self._acc = 0


class Cubic(_HyStartExit):
    """CUBIC: W(t) = C (t - K)^3 + W_max, with fast convergence and the Reno-friendly region."""

    name = "cubic"
    C = 0.4
    BETA = 0.7

    def __init__(self, mss: int) -> None:
        self.mss = mss
        self.cwnd = initial_window(mss)
        self.ssthresh = 1 << 30
        self.w_max = 0.0  # segments
        self.w_last_max = 0.0
        self.k = 0.0
        self.epoch_start: float | None = None
        self.w_est = 0.0  # segments, Reno-friendly estimate
        self.w_prior = 0.0  # segments, cwnd before the last reduction (cwnd_prior)
        self._cwnd_f = float(self.cwnd)  # bytes, fractional growth accumulates here
        self.hystart = HyStartPP()

    def _reduce(self, now: float) -> None:
        seg = self.cwnd / self.mss
        self.w_prior = seg
        if seg < self.w_last_max:  # fast convergence: release bandwidth to newer flows
            self.w_last_max = seg
            self.w_max = seg * (1 + self.BETA) / 2
        else:
            self.w_last_max = seg
            self.w_max = seg
        self.ssthresh = max(int(self.cwnd * self.BETA), 2 * self.mss)
        self.epoch_start = None
        self.hystart.stop()

    def on_ack(self, bytes_acked: int, rtt: float | None, now: float) -> None:
        mss = self.mss
        if self.cwnd < self.ssthresh:
            self.cwnd += self.hystart.growth(min(bytes_acked, 2 * mss))
            self._cwnd_f = float(self.cwnd)
            return
        if int(self._cwnd_f) != self.cwnd:  # the connection set cwnd (NewReno recovery)
            self._cwnd_f = float(self.cwnd)
        cwnd_seg = self._cwnd_f / mss
        if self.epoch_start is None:
            self.epoch_start = now
            if cwnd_seg < self.w_max:
                self.k = ((self.w_max - cwnd_seg) / self.C) ** (1 / 3)
            else:
                self.k = 0.0
                self.w_max = cwnd_seg
            self.w_est = cwnd_seg
        t = now - self.epoch_start + (rtt or 0.0)
        target = self.C * (t - self.k) ** 3 + self.w_max
        acked_seg = bytes_acked / mss
        # RFC 9438 4.3: AIMD(3(1-b)/(1+b), b) until W_est reaches cwnd_prior, then Reno's
        # AIMD(1, 0.5) increase rate
        alpha = 1.0 if self.w_est >= self.w_prior else 3 * (1 - self.BETA) / (1 + self.BETA)
        self.w_est += alpha * acked_seg / cwnd_seg
        if target < self.w_est:  # Reno-friendly region
            new = self.w_est
        else:
            target = min(target, 1.5 * cwnd_seg)
            new = cwnd_seg + max(0.0, target - cwnd_seg) * acked_seg / cwnd_seg
        self._cwnd_f = max(self._cwnd_f, new * mss)
        self.cwnd = int(self._cwnd_f)

    def enter_recovery(self, flight: int, now: float) -> None:
        self._reduce(now)
        self.cwnd = self.ssthresh
        self._cwnd_f = float(self.cwnd)

    def exit_recovery(self, flight: int, now: float) -> None:
        self.cwnd = self.ssthresh
        self._cwnd_f = float(self.cwnd)

    def on_rto(self, flight: int, now: float) -> None:
        self._reduce(now)
        self.cwnd = self.mss
        self._cwnd_f = float(self.cwnd)
        # RFC 9438 4.8: the first congestion avoidance stage after a timeout starts its own
        # curve, K = 0 and W_max = W_est = cwnd at its start (on_ack does that when W_max is
        # not above cwnd). W_last_max still remembers the loss for fast convergence.
        self.w_max = 0.0

    def after_idle(self, restart_window: int, now: float) -> None:
        if self.cwnd > restart_window:
            self.ssthresh = max(self.ssthresh, self.cwnd * 3 // 4)
            self.cwnd = restart_window
            self._cwnd_f = float(self.cwnd)
        self.epoch_start = None  # the cubic curve restarts when avoidance resumes


CONTROLLERS = {"reno": Reno, "cubic": Cubic}


def make_cc(name: str, mss: int) -> CongestionControl:
    try:
        return CONTROLLERS[name](mss)
    except KeyError:
        raise ValueError(
            f"unknown congestion control {name!r} (have {sorted(CONTROLLERS)})"
        ) from None
