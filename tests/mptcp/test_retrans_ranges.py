"""``retrans.Ranges``, the reinjection queue's set of DSN ranges: adding, removing from the
middle, forgetting below the DATA_ACK, against a plain set of integers (seeded)."""

from __future__ import annotations

import random

from mptcp_impl.mptcp.retrans import Ranges


def _covered(r: Ranges) -> set[int]:
    return {x for a, b in r for x in range(a, b)}


def test_ranges_match_a_set_of_integers_under_add_remove_and_remove_below():
    rng = random.Random(18)
    r, model = Ranges(), set()
    for step in range(3000):
        a = rng.randrange(0, 400)
        b = a + rng.randrange(1, 40)
        op = rng.random()
        if op < 0.45:
            r.add(a, b)
            model |= set(range(a, b))
        elif op < 0.9:
            r.remove(a, b)
            model -= set(range(a, b))
        else:
            r.remove_below(a)
            model = {x for x in model if x >= a}
        assert _covered(r) == model, step
        assert r.total == len(model)
        pairs = list(r)
        assert all(s < e for s, e in pairs)  # disjoint, sorted, not touching (merged)
        assert all(pairs[i][1] < pairs[i + 1][0] for i in range(len(pairs) - 1))
        x = rng.randrange(0, 450)
        assert r.covered_below(x) == sum(1 for y in model if y < x)


def test_remove_splits_a_range_and_leaves_its_neighbours():
    r = Ranges()
    r.add(0, 10)
    r.add(20, 30)
    r.remove(4, 6)
    assert list(r) == [(0, 4), (6, 10), (20, 30)] and r.total == 18
    r.remove(8, 25)
    assert list(r) == [(0, 4), (6, 8), (25, 30)] and r.total == 11
    r.remove(30, 40)  # nothing there
    assert list(r) == [(0, 4), (6, 8), (25, 30)]
