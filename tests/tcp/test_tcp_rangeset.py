"""RangeSet against a brute-force model (a set of covered integers)."""

import random

from mptcp_impl.tcp.rangeset import RangeSet


def model_ranges(cov):
    out = []
    for x in sorted(cov):
        if out and out[-1][1] == x:
            out[-1][1] = x + 1
        else:
            out.append([x, x + 1])
    return [tuple(r) for r in out]


def test_random_operations_match_a_model():
    rng = random.Random(7)
    for _ in range(50):
        rs = RangeSet()
        cov: set[int] = set()
        low = 0
        for _ in range(300):
            op = rng.random()
            if op < 0.6:
                a = rng.randrange(low, low + 400)
                b = a + rng.randrange(1, 30)
                gaps = rs.gaps(a, b)
                assert sum(e - s for s, e in gaps) == len(set(range(a, b)) - cov)
                for s, e in gaps:
                    assert not cov & set(range(s, e))
                idx = rs.add(a, b)
                cov |= set(range(a, b))
                assert rs.starts[idx] <= a and rs.ends[idx] >= b
            elif op < 0.75:
                low += rng.randrange(0, 40)
                rs.remove_below(low)
                cov = {x for x in cov if x >= low}
            x = rng.randrange(low, low + 450)
            assert rs.covered_below(x) == len([c for c in cov if c < x])
            assert rs.covered_above(x) == len([c for c in cov if c >= x])
            assert (rs.find(x) >= 0) == (x in cov)
            g = rs.next_gap(x, x + 50)
            free = [c for c in range(x, x + 50) if c not in cov]
            if not free:
                assert g is None
            else:
                assert g[0] == free[0]
                assert all(c not in cov for c in range(*g)) and (g[1] == x + 50 or g[1] in cov)
            assert list(rs) == model_ranges(cov)
            assert rs.total == len(cov)
