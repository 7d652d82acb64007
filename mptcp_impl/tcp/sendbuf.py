"""A send buffer: bytes appended at the end, released from the front once acknowledged.

A bytearray whose front is deleted keeps an offset; CPython then moves the whole buffer (a
fresh allocation and a copy of everything held) on the next growth that does not fit, every
eighth or so of its size appended. With megabytes in flight and an ACK every few segments that
was about a tenth of a sender's CPU at a few hundred Mbit/s. Here the front is only cut off once
it is at least half of the array and at least ``COMPACT_MIN`` bytes (each byte is moved at most
once), and growth otherwise happens at offset 0, where it is a realloc.
"""

from __future__ import annotations

COMPACT_MIN = 1 << 18


class SendBuffer:
    """The bytes a sender holds; ``len`` is what is held. Indexing is relative to the first
    byte held: ``buf[a:b]`` (bytes), ``buf.view(a, n)`` (a memoryview: release it before the
    buffer changes, or the change copies the buffer once to leave the view its bytes),
    ``del buf[:n]`` (release the first n), ``del buf[n:]`` (drop the tail)."""

    __slots__ = ("_b", "_h")

    def __init__(self, data: bytes = b"") -> None:
        self._b = bytearray(data)
        self._h = 0

    def __len__(self) -> int:
        return len(self._b) - self._h

    def __bool__(self) -> bool:
        return len(self._b) > self._h

    def __iadd__(self, data: bytes | bytearray | memoryview) -> SendBuffer:
        try:
            self._b += data
        except BufferError:
            self._detach()
            self._b += data
        return self

    def _detach(self) -> None:
        """A view handed out (``view``) is still alive and a bytearray with views cannot be
        resized: go on with a copy; the views keep the old array, which no longer changes."""
        self._b = bytearray(self._b)

    def __getitem__(self, key: slice) -> bytes:
        start, stop, _ = key.indices(len(self._b) - self._h)
        h = self._h
        return bytes(memoryview(self._b)[h + start : h + max(start, stop)])

    def __bytes__(self) -> bytes:
        return bytes(memoryview(self._b)[self._h :])

    def view(self, off: int, n: int) -> memoryview:
        h = self._h + off
        return memoryview(self._b)[h : h + n]

    def __delitem__(self, key: slice) -> None:
        if key.step is not None or (key.start is None) == (key.stop is None):
            raise TypeError("SendBuffer: only del buf[:n] and del buf[n:]")
        try:
            self._delete(key)
        except BufferError:
            self._detach()
            self._delete(key)

    def _delete(self, key: slice) -> None:
        b = self._b
        if key.start is None:  # release the first bytes
            held = len(b) - self._h
            n = min(max(key.stop, 0), held)
            h = self._h + n
            if h == len(b):
                b.clear()
                self._h = 0
            elif h >= COMPACT_MIN and 2 * h >= len(b):
                del b[:h]
                self._h = 0
            else:
                self._h = h
        else:  # drop the tail from ``start``
            del b[self._h + max(key.start, 0) :]
