"""Congestion control per MPTCP connection: uncoupled (each subflow its own CUBIC or Reno, as
upstream Linux) or coupled: LIA (RFC 6356), OLIA (Khalili, Gast, Popovic, Le Boudec, 2013),
BALIA (Peng, Walid, Hwang, Low, 2016).

A coupled controller needs every subflow's window and RTT, so the connection creates one
``CcGroup`` and gives its subflows ``TcpConfig(cc=group.factory)``: each subflow's controller
is a member of the group and reads the others through it. A researcher's coupled controller is
a ``CcGroup`` subclass whose ``member`` is a ``Member`` subclass overriding ``increase`` (and
``decrease`` if the multiplicative decrease is coupled too)::

    class Half(CcGroup):            # every subflow grows at half Reno's rate
        class member(Member):
            def increase(self, acked):
                return 0.5 * acked * self.mss / self.cwnd

Outside slow start, ``increase(acked)`` returns how many bytes cwnd grows for ``acked`` newly
acknowledged bytes (the TCP core calls it only when cwnd limits the sender and not in
recovery); slow start, recovery and timeouts are Reno's (RFC 5681, ABC with L = 2 SMSS).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from itertools import count
from typing import Any

from ..tcp.cc import Reno


class Member(Reno):
    """One subflow's controller in a ``CcGroup``: Reno with a coupled increase."""

    def __init__(self, group: CcGroup, mss: int) -> None:
        super().__init__(mss)
        self.group = group
        self.rtt: float | None = None  # the subflow's smoothed RTT, from the TCP core
        self.acked_total = 0  # bytes acknowledged in congestion avoidance and slow start
        self._cwnd_f = float(self.cwnd)

    # ----------------------------------------------------------------- for subclasses
    def increase(self, acked: int) -> float:
        """Bytes of cwnd growth for ``acked`` bytes acknowledged in congestion avoidance."""
        return acked * self.mss / self.cwnd

    def decrease(self, flight: int) -> int:
        """ssthresh after a loss (Reno: half the flight, at least two segments)."""
        return max(flight // 2, 2 * self.mss)

    def peers(self) -> list[Member]:
        """The group's members with an RTT sample (this one included): the subflows that
        carry data."""
        return [m for m in self.group if m.rtt or m is self]

    # ----------------------------------------------------------------- CongestionControl
    def on_ack(self, bytes_acked: int, rtt: float | None, now: float) -> None:
        if rtt:
            self.rtt = rtt
        self.acked_total += bytes_acked
        if self.cwnd < self.ssthresh:  # slow start, HyStart++'s CSS included (Reno's)
            self.cwnd += self.hystart.growth(min(bytes_acked, 2 * self.mss))
            self._cwnd_f = float(self.cwnd)
            return
        if int(self._cwnd_f) != self.cwnd:  # the TCP core set cwnd (recovery, PRR)
            self._cwnd_f = float(self.cwnd)
        self._cwnd_f = max(self._cwnd_f + self.increase(bytes_acked), float(self.mss))
        self.cwnd = int(self._cwnd_f)

    def enter_recovery(self, flight: int, now: float) -> None:
        self.on_loss()
        self.hystart.stop()
        self.ssthresh = self.decrease(flight)
        self.cwnd = self.ssthresh
        self._cwnd_f = float(self.cwnd)

    def exit_recovery(self, flight: int, now: float) -> None:
        super().exit_recovery(flight, now)
        self._cwnd_f = float(self.cwnd)

    def on_rto(self, flight: int, now: float) -> None:
        self.on_loss()
        self.hystart.stop()
        self.ssthresh = self.decrease(flight)
        self.cwnd = self.mss
        self._cwnd_f = float(self.cwnd)

    def after_idle(self, restart_window: int, now: float) -> None:
        super().after_idle(restart_window, now)
        self._cwnd_f = float(self.cwnd)

    def on_loss(self) -> None:
        """A congestion event on this subflow (before ssthresh is set)."""


class CcGroup:
    """The connection-level coordinator: ``factory(mss)`` makes a member for a new subflow.
    The TCP core may call the factory more than once for a subflow (again when the MSS is
    known); members no longer referenced leave the group by themselves, and the connection
    ``discard``s the controller of a subflow that closed."""

    name = "coupled"
    member: type[Member] = Member

    def __init__(self) -> None:
        self._members: weakref.WeakValueDictionary[int, Member] = weakref.WeakValueDictionary()
        self._ids = count()

    def factory(self, mss: int) -> Member:
        m = self.member(self, mss)
        self._members[next(self._ids)] = m
        return m

    def discard(self, cc: Any) -> None:
        for k, m in list(self._members.items()):
            if m is cc:
                del self._members[k]

    def __iter__(self) -> Iterator[Member]:
        return iter(list(self._members.values()))

    def __len__(self) -> int:
        return len(self._members)


# --------------------------------------------------------------------------- LIA


class LiaMember(Member):
    """RFC 6356: cwnd_i += min(alpha * acked * MSS_i / cwnd_total, acked * MSS_i / cwnd_i),
    alpha = cwnd_total * max_i(cwnd_i / rtt_i^2) / (sum_i cwnd_i / rtt_i)^2."""

    def alpha(self) -> tuple[float, int]:
        ps = self.peers()
        total = sum(m.cwnd for m in ps)
        best = max(m.cwnd / m.rtt**2 for m in ps if m.rtt) if self.rtt else 0.0
        denom = sum(m.cwnd / m.rtt for m in ps if m.rtt) ** 2
        if not best or not denom:
            return 1.0, max(total, self.cwnd)
        return total * best / denom, total

    def increase(self, acked: int) -> float:
        alpha, total = self.alpha()
        return min(alpha * acked * self.mss / total, acked * self.mss / self.cwnd)


class Lia(CcGroup):
    name = "lia"
    member = LiaMember


# --------------------------------------------------------------------------- OLIA


class OliaMember(Member):
    """OLIA (Khalili et al., IEEE/ACM ToN 2013; the v0 kernel's mptcp_olia.c), windows w in
    segments, per acknowledged segment on path r:

        w_r += (w_r / rtt_r^2) / (sum_p w_p / rtt_p)^2 + eps_r / w_r

    l_r = max(bytes acked between the last two losses, bytes acked since the last loss);
    B = paths with the largest l_r / rtt_r^2, M = paths with the largest window, n = paths;
    eps_r = 1/(n |B\\M|) for r in B\\M, -1/(n |M|) for r in M when B\\M is not empty, else 0.
    Losses halve the window (Reno)."""

    def __init__(self, group: CcGroup, mss: int) -> None:
        super().__init__(group, mss)
        self.loss1 = self.loss2 = 0  # acked_total at the last two losses

    def on_loss(self) -> None:
        if self.acked_total != self.loss2:
            self.loss1, self.loss2 = self.loss2, self.acked_total

    @property
    def inter_loss(self) -> int:
        return max(self.acked_total - self.loss2, self.loss2 - self.loss1)

    def epsilon(self) -> float:
        ps = self.peers()
        n = len(ps)
        w_max = max(m.cwnd for m in ps)
        quality = {id(m): m.inter_loss / m.rtt**2 if m.rtt else 0.0 for m in ps}
        q_best = max(quality.values())
        in_m = [m for m in ps if m.cwnd == w_max]
        b_not_m = [
            m
            for m in ps
            if m.cwnd != w_max and abs(quality[id(m)] - q_best) <= 1e-12 * max(q_best, 1e-300)
        ]
        if not b_not_m:
            return 0.0
        if any(m is self for m in b_not_m):
            return 1.0 / (n * len(b_not_m))
        if any(m is self for m in in_m):
            return -1.0 / (n * len(in_m))
        return 0.0

    def increase(self, acked: int) -> float:
        ps = self.peers()
        mss = self.mss
        w = self.cwnd / mss
        if not self.rtt:
            return acked * mss / self.cwnd
        rate = sum((m.cwnd / m.mss) / m.rtt for m in ps if m.rtt)
        per_seg = (w / self.rtt**2) / rate**2 + self.epsilon() / w
        return acked / mss * per_seg * mss


class Olia(CcGroup):
    name = "olia"
    member = OliaMember


# --------------------------------------------------------------------------- BALIA


class BaliaMember(Member):
    """BALIA (Peng, Walid, Hwang, Low, IEEE/ACM ToN 2016; the v0 kernel's mptcp_balia.c),
    x_k = w_k / rtt_k, a_r = max_k x_k / x_r, per acknowledged segment on path r:

        w_r += (x_r / rtt_r) / (sum_k x_k)^2 * (1 + a_r)/2 * (4 + a_r)/5

    and on a loss w_r -= (w_r / 2) * min(a_r, 1.5) (ssthresh; at least two segments)."""

    def _rates(self) -> tuple[float, float, float]:
        ps = [m for m in self.peers() if m.rtt]
        if not self.rtt or not ps:
            return 0.0, 0.0, 0.0
        xs = [(m.cwnd / m.mss) / m.rtt for m in ps]
        return (self.cwnd / self.mss) / self.rtt, max(xs), sum(xs)

    def increase(self, acked: int) -> float:
        x_r, x_max, x_sum = self._rates()
        if not x_r:
            return acked * self.mss / self.cwnd
        a = x_max / x_r
        per_seg = (x_r / self.rtt) / x_sum**2 * (1 + a) / 2 * (4 + a) / 5  # type: ignore[operator]
        return acked * per_seg

    def decrease(self, flight: int) -> int:
        x_r, x_max, _ = self._rates()
        a = x_max / x_r if x_r else 1.0
        return max(int(self.cwnd - self.cwnd / 2 * min(a, 1.5)), 2 * self.mss)


class Balia(CcGroup):
    name = "balia"
    member = BaliaMember


# --------------------------------------------------------------------------- registry

CONTROLLERS: dict[str, Any] = {
    "uncoupled": None,  # the TcpConfig's controller (CUBIC by default) on each subflow
    "cubic": "cubic",  # uncoupled CUBIC
    "reno": "reno",  # uncoupled Reno
    "lia": Lia,
    "olia": Olia,
    "balia": Balia,
}


def make_cc(spec: Any) -> tuple[CcGroup | None, Any]:
    """``MptcpConfig.cc`` -> (group or None, what to put in ``TcpConfig.cc`` or None to keep
    it). A name of ``CONTROLLERS``, ``FILE.py:Class`` or a class: a ``CcGroup`` subclass
    (coupled), or a plain controller class ``f(mss)`` used uncoupled on every subflow."""
    from .plugins import resolve

    obj = resolve(spec, CONTROLLERS, "congestion control")
    if obj is None:
        return None, None
    if isinstance(obj, str):
        return None, obj
    if isinstance(obj, CcGroup):
        return obj, obj.factory
    if isinstance(obj, type) and hasattr(obj, "factory"):
        g = obj()
        return g, g.factory
    if callable(obj):
        return None, obj
    raise ValueError(f"congestion control {spec!r}: neither a CcGroup nor a controller class")
