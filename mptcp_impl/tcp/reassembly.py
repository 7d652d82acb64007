"""Receive-side reassembly of the TCP core: in-window data into the receive buffer or the
out-of-order range set, delivery when holes fill, and the SACK blocks that describe them
(RFC 9293 3.10.7.4, RFC 2018). A mixin of ``TcpConnection``, split off like aioquic's stream
reassembly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .segment import TcpSegment
from .state import (
    MASK,
    DataReceived,
)

if TYPE_CHECKING:
    pass


class Reassembly:
    """What ``TcpConnection`` does with the data of accepted segments."""

    def _sack_blocks(self, limit: int) -> list[tuple[int, int]]:
        """RFC 2018 section 4: the block of the most recent arrival first, then the most recently
        reported other blocks (so each block appears in several ACKs), then the highest."""
        ooo = self._ooo
        starts = ooo.starts
        ends = ooo.ends
        taken: list[int] = []
        for x in self._sack_hist:
            i = ooo.find(x)
            if i >= 0 and i not in taken:
                taken.append(i)
                if len(taken) >= limit:
                    break
        k = len(starts) - 1
        while k >= 0 and len(taken) < limit:
            if k not in taken:
                taken.append(k)
            k -= 1
        return [(starts[i] & MASK, ends[i] & MASK) for i in taken]

    def _rx_data(self, seg: TcpSegment, s: int, now: float) -> None:
        payload = seg.payload
        plen = len(payload)
        rcv_nxt = self.rcv_nxt
        # trim to the window: what precedes rcv_nxt and what lies past our buffer space
        start = 0
        if s < rcv_nxt:
            start = rcv_nxt - s
        right = max(self._rcv_adv, rcv_nxt + self.config.rcv_buf - self._rlen)
        stop = plen
        if s + stop > right:
            stop = right - s
        if stop <= start:
            self._ack_now = True
            return
        first = s + start
        n = stop - start
        self._st.bytes_in += n
        if self.hooks is not None:
            self.hooks.received_range(self, first & MASK, n, seg)
        if plen > self._rcv_mss and self._rcv_mss < self.config.mss:
            self._rcv_mss = min(plen, self.config.mss)  # GRO'd segments do not count as larger
        if type(payload) is not bytes and not isinstance(getattr(payload, "obj", None), bytes):
            payload = bytes(payload)  # never keep a view into a buffer the edge reuses
        if first == rcv_nxt:
            # queued as it came (no copy): the payload, or a view of its part in the window
            self._rq.append(
                payload if start == 0 and stop == plen else memoryview(payload)[start:stop]
            )
            self._rlen += n
            self.rcv_nxt = rcv_nxt = first + n
            delivered = n
            if self._ooo:
                delivered += self._drain_ooo()
                self._ack_now = True  # a hole was (partly) filled: tell the sender at once
            ev = self._events
            if ev and type(ev[-1]) is DataReceived:
                ev[-1].nbytes += delivered
            else:
                ev.append(DataReceived(delivered))
            if not self._ack_now:
                self._unacked_bytes += n
                if self._unacked_bytes >= 2 * self._rcv_mss:
                    self._ack_now = True
                elif self._delack_deadline is None:
                    self._delack_deadline = now + self.config.delayed_ack
        else:
            self._st.ooo_segments += 1
            self._ooo_insert(first, memoryview(payload)[start:stop])
            hist = self._sack_hist
            hist.insert(0, first)
            if len(hist) > 8:
                del hist[8:]
            self._ack_now = True

    def _ooo_insert(self, start: int, data: memoryview) -> None:
        """Hold out-of-order data: only the parts not held yet are kept, as chunks keyed by
        their start, so a range of the set is tiled exactly by its chunks (no merged copies)."""
        ooo = self._ooo
        chunks = self._ooo_data
        end = start + len(data)
        for a, b in ooo.gaps(start, end):
            chunks[a] = data[a - start : b - start]
        ooo.add(start, end)

    def _drain_ooo(self) -> int:
        """Move the held data that rcv_nxt has reached into the receive queue."""
        rcv = self.rcv_nxt
        self.rcv_nxt = drain_held(self._ooo, self._ooo_data, self._rq.append, rcv)
        n = self.rcv_nxt - rcv
        self._rlen += n
        return n


def drain_held(ooo: Any, chunks: dict, put: Any, rcv_nxt: int) -> int:
    """Hand ``put`` the held ranges (``ooo``, a RangeSet; ``chunks``, the pieces tiling it by
    start) that ``rcv_nxt`` has reached, in order (a piece partly below ``rcv_nxt`` cut by a
    view), forget them, and return the new ``rcv_nxt``. TCP's reassembly and MPTCP's data level
    queue the pieces themselves."""
    starts = ooo.starts
    while starts and starts[0] <= rcv_nxt:
        x = starts[0]
        bend = ooo.ends[0]
        while x < bend:
            chunk = chunks.pop(x)
            nx = x + len(chunk)
            if nx > rcv_nxt:
                put(chunk if x >= rcv_nxt else memoryview(chunk)[rcv_nxt - x :])
            x = nx
        rcv_nxt = max(rcv_nxt, bend)
        ooo.remove_below(bend)
    return rcv_nxt


def take_pieces(q: list, n: int) -> list:
    """The first ``n`` bytes of the queued pieces ``q`` (which hold more than ``n``), taken out of
    ``q``: whole pieces as they are, the one that ``n`` cuts split into two views (no copy).
    The receive queues of TCP and of MPTCP's data level both read with it."""
    i = taken = 0
    while taken + len(q[i]) <= n:
        taken += len(q[i])
        i += 1
    out = q[:i]
    if taken < n:
        view = memoryview(q[i])
        out.append(view[: n - taken])
        q[i] = view[n - taken :]
    del q[:i]
    return out


def read_pieces(q: list, total: int, max_bytes: int) -> tuple[list, list, int]:
    """A read of at most ``max_bytes`` (all when negative) from the queue ``q`` of ``total``
    bytes: (the pieces read, the queue left, the bytes read)."""
    if max_bytes < 0 or max_bytes >= total:
        return q, [], total
    return take_pieces(q, max_bytes), q, max_bytes


def joined(pieces: list) -> bytes | bytearray:
    """One piece as it is (unless a view: a read returns bytes), several joined (one copy)."""
    if len(pieces) == 1 and type(pieces[0]) is not memoryview:
        return pieces[0]
    return b"".join(pieces)
