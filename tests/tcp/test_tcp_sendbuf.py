"""The send buffer (tcp/sendbuf.py) behaves as the bytearray it replaces for every operation the
TCP and MPTCP senders use, through its chunk releases and compactions; it holds immutable
bytes by reference and copies what could change."""

from __future__ import annotations

import random

import pytest

from mptcp_impl.tcp.sendbuf import COMPACT_CHUNKS, SMALL, SendBuffer


def test_send_buffer_matches_a_bytearray_through_appends_releases_and_cuts():
    rnd = random.Random(5)
    ref = bytearray()
    sb = SendBuffer()
    compactions = 0
    for _ in range(4000):
        op = rnd.random()
        if op < 0.4:
            d = rnd.randbytes(rnd.choice((rnd.randrange(0, 70_000), rnd.randrange(0, 300))))
            ref += d
            kind = rnd.random()
            sb += memoryview(d) if kind < 0.4 else bytearray(d) if kind < 0.6 else d
        elif op < 0.8:
            n = rnd.randrange(0, len(ref) + 10)
            head = sb._i
            del ref[:n]
            del sb[:n]
            compactions += head > 0 and sb._i == 0 and len(sb) > 0
        elif op < 0.85:
            n = rnd.randrange(0, len(ref) + 10)
            del ref[n:]
            del sb[n:]
        else:
            a, b = rnd.randrange(0, len(ref) + 5), rnd.randrange(0, len(ref) + 5)
            assert sb[a:b] == bytes(ref[a:b]) and sb[:b] == bytes(ref[:b])
            n = max(0, min(b, len(ref)) - a) if a < len(ref) else 0
            v = sb.view(a, n)
            assert bytes(v) == bytes(ref[a : a + n])
            v.release()
        assert len(sb) == len(ref) and bool(sb) == bool(ref) and bytes(sb) == bytes(ref)
        # the released chunks still listed stay bounded
        assert sb._i < COMPACT_CHUNKS or 2 * sb._i < len(sb._starts)
    assert compactions > 0


def test_send_buffer_refuses_deletions_it_does_not_implement():
    sb = SendBuffer(b"abcdef")
    for key in (slice(1, 3), slice(None, None), slice(None, 4, 2)):
        with pytest.raises(TypeError):
            del sb[key]
    assert bytes(sb) == b"abcdef"


def test_immutable_bytes_are_held_by_reference_and_mutable_ones_copied():
    """The point of the chunks: a bulk write is not copied (the data level hands TCP views of
    its own chunks), while a bytearray the writer may change later is."""
    block = bytes(range(256)) * 64  # >= SMALL
    assert len(block) >= SMALL
    sb = SendBuffer()
    sb += block
    sb += memoryview(block)[100:]
    assert sb.view(10, 100).obj is block and sb.view(len(block) + 5, 100).obj is block
    mutable = bytearray(block)
    sb += mutable
    mutable[:] = bytes(len(mutable))
    assert bytes(sb) == block + block[100:] + block
    # a view across two chunks is joined: still the right bytes
    assert bytes(sb.view(len(block) - 3, 6)) == block[-3:] + block[100:103]
    # small writes share one chunk instead of a chunk each
    small = SendBuffer()
    for i in range(100):
        small += bytes([i]) * 10
    assert len(small._chunks) == 1 and bytes(small) == b"".join(bytes([i]) * 10 for i in range(100))


def test_views_still_alive_keep_their_bytes_through_appends_releases_and_cuts():
    """A view handed out (a segment's payload with ``payload_views``) may outlive a change of
    the buffer: the buffer goes on with a copy, the view keeps the bytes it was given, and
    the buffer still matches a bytearray."""
    rnd = random.Random(9)
    ref = bytearray()
    sb = SendBuffer()
    views: list[tuple[memoryview, bytes]] = []
    for _ in range(600):
        op = rnd.random()
        if op < 0.45:
            d = rnd.randbytes(rnd.randrange(1, 40_000))
            ref += d
            sb += d
        elif op < 0.75:
            n = rnd.randrange(0, len(ref) + 10)
            del ref[:n]
            del sb[:n]
        elif op < 0.8:
            n = rnd.randrange(0, len(ref) + 10)
            del ref[n:]
            del sb[n:]
        else:
            a = rnd.randrange(0, len(ref) + 1)
            n = rnd.randrange(0, len(ref) - a + 1)
            views.append((sb.view(a, n), bytes(ref[a : a + n])))
            if len(views) > 5:
                views.pop(0)[0].release()
        assert bytes(sb) == bytes(ref)
        for v, want in views:
            assert bytes(v) == want


def test_a_view_released_by_the_writer_leaves_the_held_bytes_alone():
    """The MPTCP data level passes TCP a view of its buffer and releases it right after: TCP's
    buffer must hold a view of its own."""
    block = bytes(range(256)) * 64
    data_level = SendBuffer(block)
    tcp = SendBuffer()
    v = data_level.view(0, len(block))
    tcp += v
    v.release()
    del data_level[: len(block)]
    assert bytes(tcp) == block and bytes(tcp.view(5, 10)) == block[5:15]
