"""Application API of the userspace TCP: asyncio streams, and a blocking socket-like facade.

The streams mirror ``asyncio.open_connection``/``asyncio.start_server`` so code written for the
kernel's TCP runs over ours by changing one import. The reader is a plain ``asyncio.StreamReader``
with a transport stand-in whose pause/resume stops and restarts pulling bytes out of the
connection: a slow reader then closes the TCP receive window instead of growing a buffer.

Run as root: the stack opens packet sockets and installs an nft table (see netio.firewall).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from .netio.stack import Conn, StackConfig, TcpStack

_STACKS: dict[asyncio.AbstractEventLoop, TcpStack] = {}


def get_stack(config: StackConfig | None = None) -> TcpStack:
    """The stack of the running loop (created on first use; ``config`` applies then)."""
    loop = asyncio.get_running_loop()
    stack = _STACKS.get(loop)
    if stack is None:
        stack = _STACKS[loop] = TcpStack(config, loop)
    return stack


def close_stack() -> None:
    """Release every endpoint of the running loop's stack (ports, sockets, fence rules)."""
    loop = asyncio.get_running_loop()
    stack = _STACKS.pop(loop, None)
    if stack is not None:
        stack.close()


class _Reader(asyncio.StreamReader):
    """asyncio's StreamReader with fewer copies of each byte: the pieces a connection hands
    over (``read_chunks(room())``: its data as it arrived, TCP's or MPTCP's) are
    taken as they are, a bytearray into an empty buffer, anything else
    queued behind it (appending would copy it, and grow the buffer by reallocations that copy
    all of it again), ``read(n)`` copies once (3.11 slices, then copies the slice), and
    ``read_buffer`` hands the buffer over, then each queued piece. The queued ones join the
    buffer only when asyncio's own code reads it (``_buffer``). The same bytes, the same flow
    control."""

    @property  # type: ignore[override]
    def _buffer(self) -> bytearray:
        q = self._queued
        if q:
            head = self._head
            for chunk in q:
                head += chunk
            q.clear()
            self._queued_bytes = 0
        return self._head

    @_buffer.setter
    def _buffer(self, value: bytearray) -> None:
        self._head = value
        self._queued: list[bytes | bytearray | memoryview] = []
        self._queued_bytes = 0

    def feed_data(self, data: bytes | bytearray) -> None:
        if type(data) is not bytearray or not data or self._eof:
            super().feed_data(data)
            return
        self.feed_chunks([data])

    def feed_chunks(self, chunks: list) -> None:
        """Pieces nobody else holds or changes (the connection handed them over)."""
        if self._eof:
            for c in chunks:
                super().feed_data(c)
            return
        q = self._queued
        for c in chunks:
            if not c:
                continue
            if not self._head and not q and type(c) is bytearray:
                self._head = c
            else:
                q.append(c)
                self._queued_bytes += len(c)
        self._wakeup_waiter()
        size = len(self._head) + self._queued_bytes
        if self._transport is not None and not self._paused and size > 2 * self._limit:
            self._transport.pause_reading()
            self._paused = True

    def room(self) -> int:
        """How much the connection may hand over now. asyncio pauses the transport above
        2 x limit and resumes it at limit or less; one pull may overshoot the pause, but by less
        than a limit, so a reader that took 2 x limit after a pause always resumes, and the rest
        stays in the connection, where it closes the window (asyncio's own transports may
        overshoot by a whole 256 KiB read)."""
        return 3 * self._limit - len(self._head) - self._queued_bytes

    def _maybe_resume_transport(self) -> None:
        # asyncio's, with the size counted, not the queued buffers joined to count it
        if self._paused and len(self._head) + self._queued_bytes <= self._limit:
            self._paused = False
            self._transport.resume_reading()

    async def read(self, n: int = -1) -> bytes:
        if n <= 0 or self._exception is not None:
            return await super().read(n)
        if not self._buffer and not self._eof:
            await self._wait_for_data("read")
        buf = self._buffer
        data = bytes(buf) if n >= len(buf) else bytes(memoryview(buf)[:n])
        del buf[: len(data)]
        self._maybe_resume_transport()
        return data

    async def read_buffer(self) -> bytes | bytearray | memoryview:
        """``read(n)`` for an ``n`` of at least what is buffered, without its copy: the
        buffer itself (a new one takes its place), else the next queued piece; empty at EOF."""
        if self._exception is not None:
            raise self._exception
        if not self._head and not self._queued and not self._eof:
            await self._wait_for_data("read_buffer")
        data: bytes | bytearray | memoryview = self._head
        if data:
            self._head = bytearray()
        elif self._queued:
            data = self._queued.pop(0)
            self._queued_bytes -= len(data)
        self._maybe_resume_transport()
        return data


class _ReaderTransport(asyncio.Transport):
    """What StreamReader calls pause_reading/resume_reading on."""

    def __init__(self, stream: _StreamHandler) -> None:
        super().__init__()
        self._stream = stream

    def pause_reading(self) -> None:
        self._stream.paused = True

    def resume_reading(self) -> None:
        self._stream.paused = False
        self._stream.pull()

    def is_reading(self) -> bool:
        return not self._stream.paused

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._stream.extra(name, default)


class _StreamHandler:
    """The ConnectionHandler behind one reader/writer pair."""

    def __init__(self, limit: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.conn: Conn | None = None
        self.reader = _Reader(limit=limit, loop=self.loop)
        self.reader.set_transport(_ReaderTransport(self))
        self.paused = False
        self.connected: asyncio.Future[None] = self.loop.create_future()
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self.pending: deque[memoryview] = deque()
        self.pending_bytes = 0
        self.drain_waiters: list[asyncio.Future[None]] = []
        self.close_requested = False
        self.exc: BaseException | None = None
        self.write_exc: BaseException | None = None  # queued bytes lost at a clean close
        self.peer_eof = False  # the peer's FIN arrived (or the connection ended cleanly)
        self.eof_fed = False  # ... and the reader has been told, after the last byte

    def extra(self, name: str, default: Any = None) -> Any:
        c = self.conn
        if c is None:
            return default
        return {"peername": c.remote, "sockname": c.local, "stats": c.stats()}.get(name, default)

    # ConnectionHandler -------------------------------------------------------------------------
    def on_connected(self) -> None:
        if not self.connected.done():
            self.connected.set_result(None)

    def on_data(self) -> None:
        self.pull()

    def pull(self) -> None:
        """Move received bytes into the StreamReader, then the EOF once all bytes are in."""
        if self.paused or self.conn is None or self.eof_fed:
            return
        room = self.reader.room()
        if room > 0:
            pieces = self.conn.read_chunks(room)
            if pieces:
                self.reader.feed_chunks(pieces)
        # The peer's FIN (or the end of the connection) may have been seen while the reader
        # was paused with bytes still in the connection: EOF only after the last of them.
        if self.peer_eof and not self.paused and not self.conn.readable:
            self.eof_fed = True
            self.reader.feed_eof()

    def on_send_space(self) -> None:
        self.push()

    def on_peer_closed(self) -> None:
        self.peer_eof = True
        self.pull()

    def on_closed(self, exc: BaseException | None) -> None:
        self.exc = exc
        if exc is None and self.pending_bytes:
            # A clean end with bytes still queued here (e.g. aborted, or the connection ended
            # before they fit): they were never sent, so drain() must not report success.
            self.write_exc = ConnectionResetError(
                f"connection closed with {self.pending_bytes} bytes not sent"
            )
        if not self.connected.done():
            self.connected.set_exception(exc or ConnectionRefusedError("connection closed"))
        if exc is not None:
            self.reader.set_exception(exc)
        else:
            self.peer_eof = True
            self.pull()
        failed = exc or self.write_exc
        for w in self.drain_waiters:
            if not w.done():
                if failed is not None:
                    w.set_exception(failed)
                else:
                    w.set_result(None)
        self.drain_waiters.clear()
        if not self.closed.done():
            self.closed.set_result(None)

    # Writing ------------------------------------------------------------------------------------
    def push(self) -> None:
        """Move queued bytes into the connection's send buffer, as far as it takes them."""
        conn = self.conn
        if conn is None or conn.closed:
            return
        while self.pending:
            buf = self.pending[0]
            n = conn.send(buf)
            self.pending_bytes -= n
            if n < len(buf):
                self.pending[0] = buf[n:]
                break
            self.pending.popleft()
        if not self.pending:
            for w in self.drain_waiters:
                if not w.done():
                    w.set_result(None)
            self.drain_waiters.clear()
            if self.close_requested:
                conn.close()


class UserspaceStreamWriter:
    """The subset of asyncio.StreamWriter that applications use."""

    def __init__(self, handler: _StreamHandler, high_water: int = 1 << 20) -> None:
        self._h = handler
        self._high = high_water
        self.transport = handler.reader._transport

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._h.close_requested:
            raise RuntimeError("write after close")
        if self._h.exc is not None:
            raise self._h.exc
        if self._h.write_exc is not None:
            raise self._h.write_exc
        if not data:
            return
        self._h.pending.append(
            memoryview(bytes(data)) if isinstance(data, bytearray) else memoryview(data)
        )
        self._h.pending_bytes += len(data)
        self._h.push()

    def writelines(self, data: list[bytes]) -> None:
        for d in data:
            self.write(d)

    async def drain(self) -> None:
        h = self._h
        if h.exc is not None:
            raise h.exc
        if h.write_exc is not None:
            raise h.write_exc
        if h.pending_bytes <= self._high:
            return
        fut = h.loop.create_future()
        h.drain_waiters.append(fut)
        await fut

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Half-close: a FIN after the queued bytes; reading goes on."""
        self.close()

    def close(self) -> None:
        h = self._h
        if h.close_requested:
            return
        h.close_requested = True
        if not h.pending and h.conn is not None:
            h.conn.close()

    def abort(self) -> None:
        if self._h.conn is not None:
            self._h.conn.abort()

    def is_closing(self) -> bool:
        return self._h.close_requested or self._h.closed.done()

    async def wait_closed(self) -> None:
        """Until the connection is fully closed (our FIN acknowledged, the peer's FIN seen)."""
        await asyncio.shield(self._h.closed)
        if self._h.exc is not None:
            raise self._h.exc

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._h.extra(name, default)

    def stats(self) -> dict[str, Any]:
        return self._h.conn.stats() if self._h.conn else {}


async def open_connection(
    host: str,
    port: int,
    *,
    local_addr: tuple[str, int] | str | None = None,
    limit: int = 1 << 20,
    config: StackConfig | None = None,
) -> tuple[asyncio.StreamReader, UserspaceStreamWriter]:
    """Connect with our TCP; like asyncio.open_connection."""
    stack = get_stack(config)
    h = _StreamHandler(limit)
    h.conn = await stack.connect(host, port, h, local_addr=local_addr)
    await h.connected
    return h.reader, UserspaceStreamWriter(h)


class UserspaceServer:
    """Like asyncio.Server: close(), wait_closed(), serve_forever(), async with."""

    def __init__(self, stack: TcpStack, listener: Any) -> None:
        self._stack = stack
        self._listener = listener
        self._closed = asyncio.get_running_loop().create_future()
        self.tasks: set[asyncio.Task[Any]] = set()

    @property
    def port(self) -> int:
        return self._listener.port

    def close(self) -> None:
        self._listener.close()
        if not self._closed.done():
            self._closed.set_result(None)

    async def wait_closed(self) -> None:
        await self._closed

    async def serve_forever(self) -> None:
        await self._closed

    async def __aenter__(self) -> UserspaceServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


async def start_server(
    client_connected_cb: Callable[
        [asyncio.StreamReader, UserspaceStreamWriter], Awaitable[None] | None
    ],
    host: str,
    port: int,
    *,
    limit: int = 1 << 20,
    config: StackConfig | None = None,
) -> UserspaceServer:
    """Listen with our TCP; the callback runs (as a task if a coroutine) once a peer connects."""
    stack = get_stack(config)
    server: UserspaceServer

    def on_accept(conn: Conn) -> _StreamHandler:
        h = _StreamHandler(limit)
        h.conn = conn

        def start() -> None:
            res = client_connected_cb(h.reader, UserspaceStreamWriter(h))
            if asyncio.iscoroutine(res):
                t = asyncio.ensure_future(res)
                server.tasks.add(t)
                t.add_done_callback(server.tasks.discard)

        h.connected.add_done_callback(lambda f: None if f.exception() else start())
        return h

    listener = stack.listen(host, port, on_accept)
    server = UserspaceServer(stack, listener)
    return server


class _LoopThread:
    """One asyncio loop in a daemon thread, shared by a listener and the sockets it accepts."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, daemon=True, name="userspace-tcp"
        )
        self.thread.start()
        self.users = 1

    def call(self, coro: Awaitable[Any], timeout: float | None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def release(self) -> None:
        """Drop one user; the last one releases the stack and stops the loop."""
        self.users -= 1
        if self.users > 0:
            return

        async def shutdown() -> None:
            close_stack()

        try:
            self.call(shutdown(), 10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()


class UserspaceSocket:
    """A blocking, socket-like client over our TCP (connect, sendall, recv, shutdown, close).

    Our stack lives on an asyncio loop; this facade runs one in a background thread (one thread
    per facade or per listener, none per packet) and waits on its futures.
    """

    def __init__(
        self,
        config: StackConfig | None = None,
        timeout: float | None = None,
        *,
        _loop: _LoopThread | None = None,
        _streams: tuple[asyncio.StreamReader, UserspaceStreamWriter] | None = None,
    ) -> None:
        self._config = config
        self._timeout = timeout
        self._lt = _loop or _LoopThread()
        self._reader, self._writer = _streams if _streams else (None, None)
        self._closed = False

    def _call(self, coro: Awaitable[Any]) -> Any:
        return self._lt.call(coro, self._timeout)

    def settimeout(self, timeout: float | None) -> None:
        self._timeout = timeout

    def connect(self, address: tuple[str, int], local_addr: str | None = None) -> None:
        async def go() -> None:
            self._reader, self._writer = await open_connection(
                address[0], address[1], local_addr=local_addr, config=self._config
            )

        self._call(go())

    def getpeername(self) -> tuple[str, int]:
        assert self._writer is not None
        return tuple(self._writer.get_extra_info("peername"))

    def getsockname(self) -> tuple[str, int]:
        assert self._writer is not None
        return tuple(self._writer.get_extra_info("sockname"))

    def sendall(self, data: bytes) -> None:
        async def go() -> None:
            assert self._writer is not None
            self._writer.write(data)
            await self._writer.drain()

        self._call(go())

    def recv(self, bufsize: int) -> bytes:
        assert self._reader is not None
        return self._call(self._reader.read(bufsize))

    def shutdown_write(self) -> None:
        async def go() -> None:
            assert self._writer is not None
            self._writer.write_eof()

        self._call(go())

    def stats(self) -> dict[str, Any]:
        async def go() -> dict[str, Any]:
            return self._writer.stats() if self._writer else {}

        return self._call(go())

    def close(self) -> None:
        """Close gracefully (FIN, wait for the peer's), then release the loop if it was ours."""
        if self._closed:
            return
        self._closed = True

        async def go() -> None:
            if self._writer is not None:
                self._writer.close()
                await asyncio.wait_for(self._writer.wait_closed(), 10)

        try:
            self._call(go())
        except (TimeoutError, OSError):
            pass
        finally:
            self._lt.release()

    def __enter__(self) -> UserspaceSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class UserspaceListener:
    """A blocking listening socket: ``accept()`` returns (UserspaceSocket, peer address)."""

    def __init__(
        self, host: str, port: int, config: StackConfig | None = None, timeout: float | None = None
    ) -> None:
        self._lt = _LoopThread()
        self._timeout = timeout
        self._config = config

        async def go() -> tuple[UserspaceServer, asyncio.Queue]:
            q: asyncio.Queue = asyncio.Queue()
            srv = await start_server(lambda r, w: q.put_nowait((r, w)), host, port, config=config)
            return srv, q

        try:
            self._server, self._queue = self._lt.call(go(), 30)
        except BaseException:
            self._lt.release()
            raise

    @property
    def port(self) -> int:
        return self._server.port

    def accept(self) -> tuple[UserspaceSocket, tuple[str, int]]:
        r, w = self._lt.call(self._queue.get(), self._timeout)
        self._lt.users += 1
        sock = UserspaceSocket(self._config, self._timeout, _loop=self._lt, _streams=(r, w))
        return sock, tuple(w.get_extra_info("peername"))

    def close(self) -> None:
        async def go() -> None:
            self._server.close()

        try:
            self._lt.call(go(), 10)
        finally:
            self._lt.release()

    def __enter__(self) -> UserspaceListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
