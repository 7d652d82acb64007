"""Sequence arithmetic must stay right across the 2**32 wrap."""

import pytest

from mptcp_impl.tcp import seq

TOP = 2**32 - 1


@pytest.mark.parametrize(
    "a,b", [(0, 1), (TOP, 0), (TOP - 10, 5), (2**31 - 1, 2**31), (5, 2**31 + 4)]
)
def test_ordering_across_wrap(a, b):
    assert seq.lt(a, b) and seq.le(a, b)
    assert seq.gt(b, a) and seq.ge(b, a)
    assert not seq.lt(b, a) and not seq.gt(a, b)


def test_equal_and_distance():
    assert seq.le(7, 7) and seq.ge(7, 7) and not seq.lt(7, 7) and not seq.gt(7, 7)
    assert seq.add(TOP, 1) == 0
    assert seq.add(3, -5) == TOP - 1
    assert seq.sub(2, TOP) == 3
    assert seq.sub(TOP, 2) == -3
    assert seq.seq_max(TOP, 4) == 4 and seq.seq_min(TOP, 4) == TOP


def test_in_window_wraps():
    assert seq.in_window(2, TOP - 5, 100)
    assert not seq.in_window(TOP - 6, TOP - 5, 100)
    assert not seq.in_window(94, TOP - 5, 100)
    assert seq.in_window(93, TOP - 5, 100)
