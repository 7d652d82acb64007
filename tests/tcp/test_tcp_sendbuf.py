"""The send buffer (tcp/sendbuf.py) behaves as the bytearray it replaces for every operation the
TCP and MPTCP senders use, through its lazy front releases and compactions."""

from __future__ import annotations

import random

import pytest

from mptcp_impl.tcp.sendbuf import COMPACT_MIN, SendBuffer


def test_send_buffer_matches_a_bytearray_through_appends_releases_and_cuts():
    rnd = random.Random(5)
    ref = bytearray()
    sb = SendBuffer()
    compactions = 0
    for _ in range(4000):
        op = rnd.random()
        if op < 0.4:
            d = rnd.randbytes(rnd.randrange(0, 70_000))
            ref += d
            sb += memoryview(d) if rnd.random() < 0.5 else d
        elif op < 0.8:
            n = rnd.randrange(0, len(ref) + 10)
            head = sb._h
            del ref[:n]
            del sb[:n]
            compactions += head and sb._h == 0 and len(sb) > 0
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
        assert sb._h < COMPACT_MIN or 2 * sb._h < len(sb._b)  # the dead front stays bounded
    assert compactions > 0


def test_send_buffer_refuses_deletions_it_does_not_implement():
    sb = SendBuffer(b"abcdef")
    for key in (slice(1, 3), slice(None, None), slice(None, 4, 2)):
        with pytest.raises(TypeError):
            del sb[key]
    assert bytes(sb) == b"abcdef"


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
