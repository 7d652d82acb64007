"""32-bit modular sequence-number arithmetic (RFC 9293 section 3.4).

Sequence numbers wrap at 2**32, so plain ``<`` is wrong near the wrap point: every comparison
goes through the signed 32-bit difference, which is correct as long as the two numbers are less
than 2**31 apart (always true for a window of at most 2**30 bytes).
"""

from __future__ import annotations

MOD = 1 << 32
MASK = MOD - 1
HALF = 1 << 31


def add(a: int, b: int) -> int:
    """a + b modulo 2**32 (b may be negative)."""
    return (a + b) & MASK


def sub(a: int, b: int) -> int:
    """Signed distance a - b, in [-2**31, 2**31): how far a is ahead of b."""
    return ((a - b + HALF) & MASK) - HALF


def lt(a: int, b: int) -> bool:
    return ((a - b) & MASK) >= HALF  # a is "behind" b


def le(a: int, b: int) -> bool:
    return a == b or ((a - b) & MASK) >= HALF


def gt(a: int, b: int) -> bool:
    return a != b and ((a - b) & MASK) < HALF


def ge(a: int, b: int) -> bool:
    return ((a - b) & MASK) < HALF


def seq_max(a: int, b: int) -> int:
    return a if ge(a, b) else b


def seq_min(a: int, b: int) -> int:
    return a if le(a, b) else b


def in_window(x: int, start: int, size: int) -> bool:
    """start <= x < start + size, modulo 2**32."""
    return ((x - start) & MASK) < size
