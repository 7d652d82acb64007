"""The stream API's promise at the end of a connection: drain() reports bytes that never left.

asyncio's StreamWriter.drain() raises once the connection is gone with data still buffered; ours
must too, or an application that aborts (or whose connection ends while its queue is full) is
told its bytes were sent. These tests drive the handler the stack calls (on_closed), so they need
no network.
"""

from __future__ import annotations

import asyncio

import pytest

from mptcp_impl.api import UserspaceStreamWriter, _StreamHandler


async def _queued_writer(nbytes: int) -> tuple[_StreamHandler, UserspaceStreamWriter]:
    h = _StreamHandler(limit=1 << 16)
    w = UserspaceStreamWriter(h, high_water=1024)
    w.write(b"x" * nbytes)  # no connection yet: everything stays queued
    return h, w


def test_drain_raises_when_a_clean_close_leaves_bytes_queued() -> None:
    async def main() -> None:
        h, w = await _queued_writer(4096)
        waiter = asyncio.ensure_future(w.drain())
        await asyncio.sleep(0)  # let drain() register its waiter
        h.on_closed(None)  # what an abort (RST sent, no error of ours) reports
        assert isinstance(h.connected.exception(), ConnectionRefusedError)  # never connected
        with pytest.raises(ConnectionResetError, match="4096 bytes not sent"):
            await waiter
        with pytest.raises(ConnectionResetError):
            await w.drain()
        with pytest.raises(ConnectionResetError):
            w.write(b"more")

    asyncio.run(main())


def test_drain_succeeds_when_nothing_was_left() -> None:
    async def main() -> None:
        h, w = await _queued_writer(0)
        h.on_closed(None)
        assert isinstance(h.connected.exception(), ConnectionRefusedError)
        await w.drain()

    asyncio.run(main())
