"""A send buffer: bytes appended at the end, released from the front once acknowledged.

It holds what it is given by reference, not by copy, whenever that cannot change under it
(``bytes``, or a read-only view of ``bytes``): an application writing a block, the MPTCP data
level handing a subflow part of its own buffer. Each copy of a sender's byte stream in Python
was measured at a few percent of its CPU per Gbit (issue 22: the data level and TCP copied
each byte once each). So the buffer is a list of chunks with their absolute starting offsets
(a bisection finds the one a sequence number falls in); releasing the front only moves an
offset and drops whole chunks. Small writes and anything mutable (a ``bytearray``) are copied
into an open ``bytearray`` at the end, so a stream of tiny writes is not a list of tiny chunks.

A segment's payload is a view into one chunk (no copy); one that straddles two chunks is
joined into new bytes (once per chunk boundary, and chunks are mappings or application
writes, tens of KB at least on the bulk path).
"""

from __future__ import annotations

from bisect import bisect_right

# Writes below this are copied into the open chunk at the end: a chunk per tiny write would
# make the chunk list (and joins across chunks) long for no gain, a copy of a few KB is cheap.
SMALL = 4096
# Released chunks are dropped from the lists' front once this many have piled up (and they
# are at least half of the lists), so each is moved at most once.
COMPACT_CHUNKS = 64


def _immutable_view(data: bytes | bytearray | memoryview) -> memoryview | None:
    """A byte view of ``data`` if nothing can change its bytes later, else None. Always a
    view of our own: the writer may release the one it passed (the data level does)."""
    if type(data) is bytes:
        return memoryview(data)
    if type(data) is memoryview and data.readonly and type(data.obj) is bytes:
        if data.contiguous and data.ndim == 1 and data.format == "B":
            return memoryview(data)
        return data.cast("B") if data.contiguous else None
    return None


class SendBuffer:
    """The bytes a sender holds; ``len`` is what is held. Indexing is relative to the first
    byte held: ``buf[a:b]`` (bytes), ``buf.view(a, n)`` (a memoryview, valid for good: the
    bytes it shows never change), ``del buf[:n]`` (release the first n), ``del buf[n:]``
    (drop the tail)."""

    __slots__ = ("_chunks", "_starts", "_i", "_front", "_end", "_open")

    def __init__(self, data: bytes = b"") -> None:
        self._chunks: list[memoryview | bytearray] = []  # from _i on: held (maybe partly)
        self._starts: list[int] = []  # absolute offset of each chunk's first byte
        self._i = 0  # first chunk still held
        self._front = 0  # absolute offset of the first byte held
        self._end = 0  # absolute offset past the last byte held
        self._open = False  # the last chunk is a bytearray we own and may still grow
        if data:
            self += data

    def __len__(self) -> int:
        return self._end - self._front

    def __bool__(self) -> bool:
        return self._end > self._front

    def __iadd__(self, data: bytes | bytearray | memoryview) -> SendBuffer:
        n = len(data)
        if not n:
            return self
        v = _immutable_view(data) if n >= SMALL else None
        if v is not None:
            self._open = False
            self._starts.append(self._end)
            self._chunks.append(v)
        else:
            if self._open:
                try:
                    self._chunks[-1] += data  # type: ignore[operator]
                    self._end += n
                    return self
                except BufferError:  # a view of it is still out: it stays as it is
                    pass
            self._open = True
            self._starts.append(self._end)
            self._chunks.append(bytearray(data))
        self._end += n
        return self

    def _locate(self, a: int) -> int:
        """Index of the chunk holding absolute offset ``a`` (front <= a < end)."""
        return bisect_right(self._starts, a, self._i) - 1

    def view(self, off: int, n: int) -> memoryview:
        a = self._front + off
        if n <= 0:
            return memoryview(b"")
        k = self._locate(a)
        c = self._chunks[k]
        s = a - self._starts[k]
        if s + n <= len(c):
            return memoryview(c)[s : s + n]  # a bytearray with a view out refuses to grow
        return memoryview(self._join(a, a + n, k))

    def _join(self, a: int, b: int, k: int) -> bytes:
        chunks, starts = self._chunks, self._starts
        parts = []
        while a < b:
            c = chunks[k]
            s = a - starts[k]
            e = min(len(c), b - starts[k])
            parts.append(memoryview(c)[s:e])
            a = starts[k] + e
            k += 1
        return b"".join(parts)

    def __getitem__(self, key: slice) -> bytes:
        start, stop, _ = key.indices(self._end - self._front)
        if stop <= start:
            return b""
        a = self._front + start
        return self._join(a, self._front + stop, self._locate(a))

    def __bytes__(self) -> bytes:
        return self[:]

    def __delitem__(self, key: slice) -> None:
        if key.step is not None or (key.start is None) == (key.stop is None):
            raise TypeError("SendBuffer: only del buf[:n] and del buf[n:]")
        if key.start is None:
            self._release(min(max(key.stop, 0), self._end - self._front))
        else:
            self._cut(self._front + min(max(key.start, 0), self._end - self._front))

    def _release(self, n: int) -> None:
        front = self._front + n
        if front >= self._end:
            self._chunks.clear()
            self._starts.clear()
            self._i = 0
            self._front = self._end
            self._open = False
            return
        self._front = front
        chunks, starts = self._chunks, self._starts
        i = self._i
        last = len(starts) - 1
        while i < last and starts[i + 1] <= front:
            chunks[i] = None  # type: ignore[call-overload]
            i += 1
        if i >= COMPACT_CHUNKS and 2 * i >= len(starts):
            del chunks[:i], starts[:i]
            i = 0
        self._i = i

    def _cut(self, cut: int) -> None:
        """Drop everything from absolute offset ``cut`` on."""
        if cut >= self._end:
            return
        if cut <= self._front:
            self._release(self._end - self._front)
            return
        k = self._locate(cut)
        keep = cut - self._starts[k]
        del self._chunks[k + 1 :], self._starts[k + 1 :]
        if keep == 0:
            del self._chunks[k], self._starts[k]
        else:
            c = self._chunks[k]
            if type(c) is bytearray:
                try:
                    del c[keep:]
                except BufferError:  # a view of it is out: keep its bytes, hold a view
                    self._chunks[k] = memoryview(c)[:keep]
            else:
                self._chunks[k] = c[:keep]
        self._end = cut
        self._open = type(self._chunks[-1]) is bytearray
