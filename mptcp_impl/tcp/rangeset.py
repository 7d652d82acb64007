"""Sorted sets of disjoint integer ranges, for the SACK scoreboard and the out-of-order queue.

Both used to be lists of [start, end] scanned from the front on every segment, which made a
window with thousands of holes quadratic. ``RangeSet`` keeps two parallel sorted lists (starts
and ends) searched with ``bisect``, so finding, adding and trimming are O(log n) plus a slice
move (a memmove in C), and the bytes covered below any point come from lazily rebuilt prefix
sums (rebuilt with ``itertools.accumulate``, only from the first index that changed).

Ranges are half-open ``[start, end)``; ranges that touch or overlap are merged. Sequence
numbers here are the connection's unwrapped ints.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from itertools import accumulate, chain
from operator import sub


class RangeSet:
    __slots__ = ("starts", "ends", "total", "_cum", "_base")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.total = 0  # bytes covered
        # _cum[k] - _base = bytes covered by ranges 0..k; valid for k < len(_cum)
        self._cum: list[int] = []
        self._base = 0

    def __len__(self) -> int:
        return len(self.starts)

    def __bool__(self) -> bool:
        return bool(self.starts)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self.starts, self.ends, strict=True)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RangeSet):
            return self.starts == other.starts and self.ends == other.ends
        if isinstance(other, list):  # compare with a list of pairs
            return list(self) == [tuple(x) for x in other]
        return NotImplemented

    def __repr__(self) -> str:
        return f"RangeSet({list(self)})"

    def clear(self) -> None:
        self.starts.clear()
        self.ends.clear()
        self._cum.clear()
        self.total = 0
        self._base = 0

    @property
    def high(self) -> int | None:
        """End of the highest range."""
        return self.ends[-1] if self.ends else None

    def add(self, start: int, end: int) -> int:
        """Cover [start, end); returns the index of the range that now holds it."""
        starts = self.starts
        ends = self.ends
        i = bisect_left(ends, start)  # first range ending at or after start (touching merges)
        j = bisect_right(starts, end, i)  # ranges starting at or before end merge too
        if i == j:
            starts.insert(i, start)
            ends.insert(i, end)
            self.total += end - start
        else:
            s0 = starts[i]
            e1 = ends[j - 1]
            ns = start if start < s0 else s0
            ne = end if end > e1 else e1
            if j - i == 1:
                old = e1 - s0
            else:
                old = sum(map(sub, ends[i:j], starts[i:j]))
            starts[i:j] = [ns]
            ends[i:j] = [ne]
            self.total += (ne - ns) - old
        if len(self._cum) > i:
            del self._cum[i:]
        return i

    def gaps(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of [start, end) not covered, in order."""
        starts = self.starts
        ends = self.ends
        i = bisect_right(ends, start)  # first range ending after start
        out = []
        x = start
        n = len(starts)
        while i < n and starts[i] < end:
            if starts[i] > x:
                out.append((x, starts[i]))
            if ends[i] > x:
                x = ends[i]
            i += 1
        if x < end:
            out.append((x, end))
        return out

    def remove_below(self, x: int) -> None:
        """Forget everything below x (a cumulative ACK, or RCV.NXT moving)."""
        starts = self.starts
        if not starts or starts[0] >= x:
            return
        ends = self.ends
        k = bisect_right(ends, x)  # ranges ending at or below x go entirely
        if k:
            removed = sum(map(sub, ends[:k], starts[:k])) if k > 1 else ends[0] - starts[0]
            del starts[:k]
            del ends[:k]
            del self._cum[:k]
            self.total -= removed
            self._base += removed
        if starts and starts[0] < x:
            d = x - starts[0]
            starts[0] = x
            self.total -= d
            self._base += d

    def find(self, x: int) -> int:
        """Index of the range holding x, or -1."""
        i = bisect_right(self.starts, x) - 1
        if i >= 0 and self.ends[i] > x:
            return i
        return -1

    def next_start(self, x: int) -> int | None:
        """Start of the first range beginning after x."""
        i = bisect_right(self.starts, x)
        return self.starts[i] if i < len(self.starts) else None

    def next_gap(self, x: int, stop: int) -> tuple[int, int] | None:
        """First uncovered range at or after x, cut at stop."""
        starts = self.starts
        i = bisect_right(starts, x) - 1
        if i >= 0 and self.ends[i] > x:
            x = self.ends[i]
        if x >= stop:
            return None
        i += 1
        end = starts[i] if i < len(starts) and starts[i] < stop else stop
        return x, end

    def covered_below(self, x: int) -> int:
        """Bytes covered below x."""
        starts = self.starts
        i = bisect_right(starts, x) - 1
        if i < 0:
            return 0
        ends = self.ends
        e = ends[i]
        if e > x:
            part = x - starts[i]
            i -= 1
            if i < 0:
                return part
        else:
            part = 0
        cum = self._cum
        v = len(cum)
        if v <= i:  # rebuild the prefix sums from the first stale index up to i
            it = accumulate(
                chain(
                    (cum[-1] if cum else self._base,), map(sub, ends[v : i + 1], starts[v : i + 1])
                )
            )
            next(it)
            cum.extend(it)
        return cum[i] - self._base + part

    def covered_above(self, x: int) -> int:
        """Bytes covered at or above x."""
        return self.total - self.covered_below(x)
