"""What the DSS checksum can see: the tests' judge of a stream that arrived changed.

RFC 8684's DSS checksum (3.3.1) is TCP's: the 16-bit ones' complement sum of the mapping and
a pseudo-header. A box that flips one bit, then another bit of the same weight the other way
in the same mapping, leaves that sum as it was: no end can see it, Linux's included. With
random bit flips at a few percent over megabytes this happens (the simulator's seed 110,
upload, 2% on both paths: bytes 994744 and 996438, bit 3 set in one, cleared in the other),
so a test that asserts an intact stream under such corruption would fail with nothing wrong
in the stack. These tests assert instead that every change that arrived is one the checksum
could not see: a stack that kept a damaged mapping it should have caught leaves a sum off.
"""

from __future__ import annotations

ONES = 0xFFFF  # ones' complement arithmetic: modulo 2**16 - 1


def wrong_bytes(sent: bytes, got: bytes) -> list[tuple[int, int, int]]:
    """(offset, sent, received) of each byte of ``got`` that differs from ``sent`` (over
    their common length)."""
    if sent[: len(got)] == got:
        return []
    return [(i, a, b) for i, (a, b) in enumerate(zip(sent, got, strict=False)) if a != b]


def checksum_delta(wrong: list[tuple[int, int, int]]) -> int:
    """How much these changes move the 16-bit ones' complement sum of the stream (words
    aligned on the stream's first byte), modulo 0xFFFF: 0 when they cancel out. A mapping's
    own sum may be aligned the other way (a mapping starting at an odd offset), which only
    multiplies its part by 256 (256 * 256 = 1 modulo 0xFFFF): changes that each mapping's
    checksum cannot see leave this 0 too."""
    return sum((got - sent) * (256 if off % 2 == 0 else 1) for off, sent, got in wrong) % ONES


def checksum_cannot_see(wrong: list[tuple[int, int, int]]) -> bool:
    """Whether these changes (all of them: not a capped list) are invisible to the DSS
    checksum taken over the stream: none, or ones that cancel out in the sum."""
    return checksum_delta(wrong) == 0
