"""The application reader's hand-overs (mptcp_impl/api.py ``_Reader``): a bytearray that a
connection's read handed over becomes the reader's buffer with no copy, ``read_buffer`` hands
the buffer on; the bytes, their order and the flow control (pause above twice the limit,
resume at the limit) are asyncio's StreamReader's. No network: the reader alone, in a loop."""

from __future__ import annotations

import asyncio

from mptcp_impl.api import _Reader


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")


def _reader(limit: int) -> tuple[_Reader, _Transport]:
    """A reader (made inside the running loop) on a transport that records pause/resume."""
    r, t = _Reader(limit=limit), _Transport()
    r.set_transport(t)
    return r, t


def _run(coro):  # one loop per test
    return asyncio.run(coro)


def test_an_empty_reader_takes_a_handed_over_bytearray_and_appends_to_it():
    async def go():
        r, _ = _reader(8)
        a = bytearray(b"abc")
        r.feed_data(a)
        assert r._buffer is a  # adopted: no copy
        r.feed_data(b"de")  # bytes are appended, a bytearray too once not empty
        r.feed_data(bytearray(b"f"))
        assert await r.read(4) == b"abcd"
        assert await r.read(100) == b"ef"
        r.feed_data(b"gh")  # bytes into an empty buffer: copied (not ours to keep)
        assert type(r._buffer) is bytearray
        r.feed_eof()
        assert await r.read(-1) == b"gh"
        assert await r.read(10) == b""

    _run(go())


def test_read_buffer_hands_the_buffer_over_and_waits_for_data():
    async def go():
        r, _ = _reader(8)
        waiting = asyncio.ensure_future(r.read_buffer())
        await asyncio.sleep(0)
        assert not waiting.done()
        a = bytearray(b"xyz")
        r.feed_data(a)
        got = await waiting
        assert got is a and got == b"xyz"
        r.feed_data(b"more")
        r.feed_data(b"!")
        assert await r.read_buffer() == b"more!"
        r.feed_eof()
        assert await r.read_buffer() == b""

    _run(go())


def test_flow_control_as_asyncio_for_an_adopted_buffer():
    async def go():
        r, t = _reader(4)
        r.feed_data(bytearray(b"123456789"))  # adopted, over twice the limit: pause
        assert t.calls == ["pause"]
        assert await r.read(3) == b"123"  # 6 left, above the limit: still paused
        assert t.calls == ["pause"]
        assert await r.read(2) == b"45"  # 4 left: resume
        assert t.calls == ["pause", "resume"]
        r.feed_data(bytearray(b"x" * 20))  # queued: 24 bytes in all, pause
        assert t.calls == ["pause", "resume", "pause"]
        assert await r.read_buffer() == b"6789"
        assert t.calls == ["pause", "resume", "pause"]  # 20 left
        assert await r.read_buffer() == b"x" * 20
        assert t.calls == ["pause", "resume", "pause", "resume"]

    _run(go())


def test_a_handed_over_bytearray_behind_a_buffer_is_queued_not_copied():
    async def go():
        r, _ = _reader(1 << 20)
        a, b, c = bytearray(b"ab"), bytearray(b"cd"), bytearray(b"ef")
        for x in (a, b, c):
            r.feed_data(x)
        assert await r.read_buffer() is a
        assert await r.read_buffer() is b  # handed on as they came, none copied
        r.feed_data(bytearray(b"gh"))
        # asyncio's own reads see one buffer: the queued ones joined in order
        assert await r.readexactly(3) == b"efg"
        r.feed_data(bytearray(b"ij\n"))
        assert await r.readline() == b"hij\n"

    _run(go())


def test_paused_the_queued_buffers_are_counted_not_joined():
    async def go():
        r, t = _reader(2)
        a, b, c = bytearray(b"aaaa"), bytearray(b"bb"), bytearray(b"c")
        for x in (a, b, c):
            r.feed_data(x)
        assert t.calls == ["pause"]
        assert await r.read_buffer() is a
        assert t.calls == ["pause"]  # 3 left, above the limit
        assert await r.read_buffer() is b  # not b + c: counting them joined nothing
        assert t.calls == ["pause", "resume"]
        assert await asyncio.wait_for(r.read_buffer(), 5) is c  # (a deadline, not a delay)

    _run(go())


def test_an_error_is_raised_as_asyncio_does():
    async def go():
        r = _Reader(limit=8)
        r.set_exception(ConnectionResetError("gone"))
        for read in (r.read(5), r.read_buffer()):
            try:
                await read
            except ConnectionResetError:
                pass
            else:
                raise AssertionError("no error")

    _run(go())


def test_pieces_of_any_buffer_type_are_queued_and_handed_on_as_they_are():
    """An MPTCP connection's ``read_chunks``: a subflow's bytearray, a held out-of-order piece
    (bytes), the rest of one cut by a view: none copied on the way to ``read_buffer``."""

    async def go():
        r, t = _reader(4)
        a, b = bytearray(b"ab"), b"cdefg"
        c = memoryview(b"xxgh")[2:]
        r.feed_chunks([a, b, c])
        assert t.calls == ["pause"]  # 9 bytes: over twice the limit
        got = [await r.read_buffer() for _ in range(3)]
        assert got[0] is a and got[1] is b and got[2] is c
        assert t.calls == ["pause", "resume"]
        waiting = asyncio.ensure_future(r.read_buffer())
        await asyncio.sleep(0)
        assert not waiting.done()  # nothing left: it waits for the next piece
        r.feed_chunks([memoryview(b"ij")])
        assert bytes(await waiting) == b"ij"
        r.feed_chunks([b"kl", memoryview(b"mn")])
        assert await r.readexactly(3) == b"klm"  # asyncio's own reads: the pieces joined
        r.feed_eof()
        assert await r.read() == b"n"

    _run(go())


def test_the_room_offered_to_the_connection_lets_a_reader_that_took_twice_the_limit_resume():
    """The connection hands over at most ``room()``: whatever the reader held, taking 2 x limit
    after the pause resumes it (with all of a 256 KiB receive buffer handed over at once, it
    stayed paused, the rest of the stream stuck behind a closed window)."""

    async def go():
        r, t = _reader(4)
        assert r.room() == 12
        r.feed_chunks([bytearray(b"ab")])
        assert r.room() == 10 and t.calls == []
        r.feed_chunks([b"cdefghij", memoryview(b"kl")])  # exactly the room: over 2 x limit
        assert t.calls == ["pause"] and r.room() == 0
        assert await r.readexactly(8) == b"abcdefgh"
        assert t.calls == ["pause", "resume"] and r.room() == 8

    _run(go())
