"""The traffic tool every stack is measured with: one program, run in the hosts, for every stack.

    python -m experiments.traffic server --listen 0.0.0.0:5201 --proto mptcp --once --out s.json
    python -m experiments.traffic client --connect 10.0.3.2:5201 --proto mptcp --kind bulk \
        --direction download --duration 10 --seed 7 --out c.json

Why our own tool and not iperf3: the same code has to drive plain TCP, kernel MPTCP (socket
protocol 262) and our userspace stack, and we need what iperf3 does not give: the receiver's
in-order progress every 100 ms (the failover gap), per-subflow byte counters (which path carried
the data), and a sha256 of exactly what arrived, so "data intact" is a fact.

One measurement code path: the tool is asyncio throughout and moves its bytes through stream
reader/writer pairs. For `tcp` and `mptcp` they are asyncio's own over a kernel socket; for
`userspace` they are mptcp_impl.api's (the same interface, our stack on the same event loop, no
thread). Only opening the connection, the per-subflow counters (the kernel's MPTCP_TCPINFO and
MPTCP_SUBFLOW_ADDRS, or our connection's own MPTCP view) and the fallback flag differ.

The file is deliberately standalone (standard library only, no imports from this repository for
tcp and mptcp): the runner copies it to a host through the Host interface (put) and runs it
there, which works the same in a Mininet namespace and on a real machine over SSH. `--proto
userspace` imports mptcp_impl, which must then be importable on the host: on PYTHONPATH, or
named with --import-path (the runner passes its own checkout, which a Mininet host shares).

Protocol: the client opens the connection and sends a header (4-byte big-endian length + JSON with
the traffic parameters); then the data phase runs in the requested direction. Payload bytes are a
deterministic pseudo-random stream from the seed, so a run can be replayed byte for byte. Both ends
hash everything they send and everything they receive; the runner compares sender and receiver.
The server prints one line "listening HOST:PORT proto=P" on stdout once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import errno
import hashlib
import json
import os
import random
import resource
import signal
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

IPPROTO_MPTCP = 262
SOL_MPTCP = 284
MPTCP_INFO = 1
MPTCP_TCPINFO = 2
MPTCP_SUBFLOW_ADDRS = 3
MPTCP_INFO_FLAG_FALLBACK = 1
TCP_CONGESTION = getattr(socket, "TCP_CONGESTION", 13)

SAMPLE_INTERVAL_S = 0.1
GAP_THRESHOLD_S = 0.05  # pauses in in-order progress longer than this are recorded
BLOCK = 64 * 1024
READ_SIZE = 256 * 1024  # per read, and the stream reader's buffer limit
CLOSE_TIMEOUT_S = 3.0  # our stack: wait this long for the subflows FINs after the data phase
READY_PREFIX = "listening"
PROTOS = ("tcp", "mptcp", "userspace")  # kernel TCP, kernel MPTCP, our stack (mptcp_impl)


# ---------------------------------------------------------------------------------------------
# Parameters and results


@dataclass
class TrafficSpec:
    """What the client asks for; sent to the server as the header so both ends agree."""

    kind: str = "bulk"  # bulk | reqresp | stream
    direction: str = "download"  # download: server sends; upload: client sends
    bytes: int = 0  # bulk/stream: stop after this many bytes (0: use duration_s)
    duration_s: float = 0.0  # bulk/stream: stop after this long (0: use bytes)
    rate_mbit: float = 0.0  # stream: pace the sender at this rate
    req_bytes: int = 100  # reqresp: request size
    resp_bytes: int = 10000  # reqresp: response size
    count: int = 10  # reqresp: number of exchanges
    seed: int = 1  # payload stream seed

    def validate(self) -> None:
        if self.kind not in ("bulk", "reqresp", "stream"):
            raise ValueError(f"kind must be bulk, reqresp or stream, not {self.kind!r}")
        if self.direction not in ("download", "upload"):
            raise ValueError(f"direction must be download or upload, not {self.direction!r}")
        if self.kind in ("bulk", "stream") and self.bytes <= 0 and self.duration_s <= 0:
            raise ValueError(f"{self.kind} needs bytes > 0 or duration_s > 0")
        if self.kind == "stream" and self.rate_mbit <= 0:
            raise ValueError("stream needs rate_mbit > 0")
        if self.kind == "reqresp" and (
            self.req_bytes <= 0 or self.resp_bytes <= 0 or self.count <= 0
        ):
            raise ValueError("reqresp needs req_bytes, resp_bytes and count > 0")


@dataclass
class Report:
    """One end's view of the connection: printed as JSON and written to --out."""

    role: str
    proto: str
    spec: dict
    local: str = ""
    remote: str = ""
    start_wall: float = 0.0  # time.time() when the data phase started (aligns with link events)
    duration_s: float = 0.0
    bytes_sent: int = 0
    bytes_received: int = 0
    sent_sha256: str = ""
    received_sha256: str = ""
    goodput_mbit: float = 0.0  # received bytes over the data phase (0 when this end only sent)
    samples: list = field(default_factory=list)  # [t, cumulative bytes received] every 100 ms
    subflow_samples: list = field(default_factory=list)  # [t, {"laddr->raddr": bytes}] (MPTCP)
    # while this end sends: [t, {"laddr->raddr": congestion window in bytes}] (MPTCP), as the
    # stack itself reports it (ours: its TCP's cwnd; the kernel: tcpi_snd_cwnd x tcpi_snd_mss)
    cwnd_samples: list = field(default_factory=list)
    gaps: list = field(default_factory=list)  # [t_start, length] of pauses in in-order receiving
    latencies_ms: list = field(default_factory=list)  # reqresp: per exchange, client side
    max_subflows: int = 0
    mptcp_fallback: bool | None = None
    cpu_s: float = 0.0  # this process's CPU time over the data phase (user + system)
    stack_info: dict = field(default_factory=dict)  # userspace: final subflows, MIB, edge
    # kernel sockets, at the end of the data phase: congestion control (TCP_CONGESTION; an
    # MPTCP socket's is what it hands its subflows), SO_RCVBUF, SO_SNDBUF
    socket: dict = field(default_factory=dict)
    error: str = ""


# ---------------------------------------------------------------------------------------------
# Payload and kernel MPTCP introspection


class Payload:
    """Deterministic pseudo-random byte stream; independent of how it is sliced."""

    def __init__(self, seed: int):
        self._rng = random.Random(seed)
        self._buf = b""
        self._pos = 0

    def take(self, n: int) -> bytes:
        out = []
        while n > 0:
            if self._pos >= len(self._buf):
                self._buf = self._rng.randbytes(BLOCK)
                self._pos = 0
            chunk = self._buf[self._pos : self._pos + n]
            self._pos += len(chunk)
            n -= len(chunk)
            out.append(chunk)
        return b"".join(out) if len(out) != 1 else out[0]


_libc = None


def _getsockopt_inout(sock: socket.socket, level: int, opt: int, buf: bytearray) -> int:
    """getsockopt whose buffer carries input (struct mptcp_subflow_data); Python's cannot."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    cbuf = (ctypes.c_char * len(buf)).from_buffer(buf)
    optlen = ctypes.c_uint32(len(buf))
    rc = _libc.getsockopt(sock.fileno(), level, opt, cbuf, ctypes.byref(optlen))
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return optlen.value


def _fmt_sockaddr(raw: bytes) -> str:
    family = struct.unpack_from("=H", raw, 0)[0]
    port = struct.unpack_from("!H", raw, 2)[0]
    if family == socket.AF_INET:
        return f"{socket.inet_ntop(socket.AF_INET, raw[4:8])}:{port}"
    if family == socket.AF_INET6:
        return f"[{socket.inet_ntop(socket.AF_INET6, raw[8:24])}]:{port}"
    return "?"


def subflow_counters(sock: socket.socket) -> dict[str, dict[str, int]]:
    """Per-subflow tcp_info counters of an MPTCP socket, keyed "local->remote".

    Uses MPTCP_SUBFLOW_ADDRS and MPTCP_TCPINFO (both iterate the subflows in the same order).
    Returns {} for plain TCP or when the kernel refuses (e.g. after fallback).
    """
    n_max, sf_user, info_user = 8, 256, 136  # tcp_info up to bytes_received
    hdr = struct.Struct("=IIII")
    try:
        abuf = bytearray(hdr.size + n_max * sf_user)
        hdr.pack_into(abuf, 0, hdr.size, 0, 0, sf_user)
        _getsockopt_inout(sock, SOL_MPTCP, MPTCP_SUBFLOW_ADDRS, abuf)
        _, n_a, _, size_a = hdr.unpack_from(abuf, 0)
        tbuf = bytearray(hdr.size + n_max * info_user)
        hdr.pack_into(tbuf, 0, hdr.size, 0, 0, info_user)
        _getsockopt_inout(sock, SOL_MPTCP, MPTCP_TCPINFO, tbuf)
        _, n_t, _, size_t = hdr.unpack_from(tbuf, 0)
    except OSError:
        return {}
    out: dict[str, dict[str, int]] = {}
    for i in range(min(n_a, n_t, n_max)):
        a = abuf[hdr.size + i * size_a : hdr.size + (i + 1) * size_a]
        t = tbuf[hdr.size + i * size_t : hdr.size + (i + 1) * size_t]
        key = f"{_fmt_sockaddr(bytes(a[:128]))}->{_fmt_sockaddr(bytes(a[128:256]))}"
        rtt_us = struct.unpack_from("=I", t, 68)[0] if len(t) >= 72 else 0
        acked, received = struct.unpack_from("=QQ", t, 120) if len(t) >= 136 else (0, 0)
        out[key] = {"bytes_acked": acked, "bytes_received": received, "rtt_us": rtt_us}
        if len(t) >= 84:  # tcpi_snd_cwnd is in segments of tcpi_snd_mss bytes
            out[key]["cwnd"] = (
                struct.unpack_from("=I", t, 80)[0] * struct.unpack_from("=I", t, 16)[0]
            )
    return out


def mptcp_fallback(sock: socket.socket) -> bool | None:
    """True when an MPTCP socket fell back to plain TCP (peer or middlebox without MPTCP)."""
    try:
        raw = sock.getsockopt(SOL_MPTCP, MPTCP_INFO, 64)
    except OSError as exc:
        # The kernel answers EOPNOTSUPP on MPTCP_INFO once the connection fell back.
        return True if exc.errno == errno.EOPNOTSUPP else None
    return bool(struct.unpack_from("=I", raw, 8)[0] & MPTCP_INFO_FLAG_FALLBACK)


# ---------------------------------------------------------------------------------------------
# Connections: what differs between the stacks (opening, per-subflow counters, fallback)


class KernelConn:
    """A kernel TCP or MPTCP socket behind asyncio streams; counters from getsockopt."""

    def __init__(self, reader: Any, writer: Any, proto: str):
        self.reader, self.writer, self.proto = reader, writer, proto
        self.sock = writer.get_extra_info("socket")

    def names(self) -> tuple[str, str]:
        return _fmt_addr(self.sock.getsockname()), _fmt_addr(self.sock.getpeername())

    def counters(self) -> dict[str, dict[str, int]]:
        return subflow_counters(self.sock) if self.proto == "mptcp" else {}

    def fallback(self) -> bool | None:
        return mptcp_fallback(self.sock) if self.proto == "mptcp" else None

    def info(self) -> dict:
        return {}

    def socket_info(self) -> dict:
        """What the kernel says of the socket: its congestion control and buffer sizes."""
        try:
            cc = self.sock.getsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, 16)
            return {
                "congestion": cc.split(b"\0", 1)[0].decode(),
                "rcvbuf": self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
                "sndbuf": self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
            }
        except OSError as e:
            return {"error": f"{type(e).__name__}: {e}"}


def set_congestion(sock: socket.socket, name: str | None) -> None:
    """Put `name` on a kernel socket (TCP_CONGESTION: a root process may use any of
    tcp_available_congestion_control); an MPTCP socket passes it to its subflows."""
    if name:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, name.encode())


class UserspaceConn:
    """Our stack's streams (mptcp_impl.api); counters from the connection's own MPTCP view
    (writer.stats()["mptcp"], what `python -m mptcp_impl --json` prints)."""

    def __init__(self, reader: Any, writer: Any):
        self.reader, self.writer, self.proto = reader, writer, "userspace"

    def names(self) -> tuple[str, str]:
        local = self.writer.get_extra_info("sockname") or ("?", 0)
        remote = self.writer.get_extra_info("peername") or ("?", 0)
        return _fmt_addr(local), _fmt_addr(remote)

    def _mptcp(self) -> dict:
        return self.writer.stats().get("mptcp") or {}

    def counters(self) -> dict[str, dict[str, int]]:
        m = self._mptcp()
        if not m or m.get("fallback"):
            return {}
        out = {}
        for s in m.get("subflows", []):
            srtt = s.get("srtt_ms")
            out[f"{s['local']}->{s['remote']}"] = {
                # bytes handed to the subflow (the kernel's is bytes acked at the subflow level)
                "bytes_acked": s.get("bytes_sent", 0),
                "bytes_received": s.get("bytes_received", 0),
                "rtt_us": int(srtt * 1000) if srtt is not None else 0,
                "cwnd": int(s.get("cwnd") or 0),
            }
        return out

    def fallback(self) -> bool | None:
        m = self._mptcp()
        return bool(m.get("fallback")) if m else None

    def info(self) -> dict:
        """The final MPTCP view (subflows with srtt, cwnd, reinjected; the MIB) and edge."""
        st = self.writer.stats()
        return {"mptcp": st.get("mptcp"), "edge": st.get("edge"), "sender": st.get("sender")}


def _fmt_addr(addr: Any) -> str:
    return "{}:{}".format(*addr[:2]) if addr else ""


# ---------------------------------------------------------------------------------------------
# The data phase (one code path for every stack)


class Endpoint:
    """One end of a connection: hashes both directions, samples progress and subflows."""

    def __init__(self, conn: KernelConn | UserspaceConn, report: Report, seed: int):
        self.conn = conn
        self.reader, self.writer = conn.reader, conn.writer
        self.report = report
        self.payload = Payload(seed)
        self.sent_hash = hashlib.sha256()
        self.recv_hash = hashlib.sha256()
        self.multipath = report.proto in ("mptcp", "userspace")
        self.t0 = time.monotonic()
        self.last_recv: float | None = None
        self.cpu0 = _cpu()
        self._sampler: asyncio.Task | None = None

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.report.start_wall = time.time()
        self.cpu0 = _cpu()
        self._sampler = asyncio.get_running_loop().create_task(self._sample_every())

    async def _sample_every(self) -> None:
        """A sample every 100 ms on the clock, whatever the transfer is waiting for."""
        k = 1
        while True:
            await asyncio.sleep(max(0.0, self.t0 + k * SAMPLE_INTERVAL_S - time.monotonic()))
            self.sample()
            k = int((time.monotonic() - self.t0) / SAMPLE_INTERVAL_S) + 1

    def sends_data(self) -> bool:
        """This end carries the transfer (the header a bulk receiver sends does not count):
        its congestion windows are worth sampling."""
        spec = self.report.spec
        if spec.get("kind", "bulk") == "reqresp":
            return True
        sender = "client" if spec.get("direction") == "upload" else "server"
        return self.report.role == sender

    def sample(self) -> None:
        t = round(time.monotonic() - self.t0, 4)
        self.report.samples.append([t, self.report.bytes_received])
        if self.multipath:
            counters = self.conn.counters()
            if counters:
                self.report.max_subflows = max(self.report.max_subflows, len(counters))
                key = "bytes_received" if self.report.bytes_received else "bytes_acked"
                self.report.subflow_samples.append([t, {k: v[key] for k, v in counters.items()}])
                if self.sends_data():
                    cwnd = {k: v["cwnd"] for k, v in counters.items() if "cwnd" in v}
                    if cwnd:
                        self.report.cwnd_samples.append([t, cwnd])

    async def send(self, n: int) -> None:
        data = self.payload.take(n)
        self.writer.write(data)
        await self.writer.drain()
        self.sent_hash.update(data)
        self.report.bytes_sent += n

    async def recv_some(self, limit: int) -> int:
        """Receive up to limit bytes; returns 0 on EOF."""
        data = await self.reader.read(min(limit, READ_SIZE))
        n = len(data)
        if n:
            now = time.monotonic()
            if self.last_recv is not None and now - self.last_recv > GAP_THRESHOLD_S:
                self.report.gaps.append(
                    [round(self.last_recv - self.t0, 4), round(now - self.last_recv, 4)]
                )
            self.last_recv = now
            self.recv_hash.update(data)
            self.report.bytes_received += n
        return n

    async def recv_exact(self, n: int) -> None:
        while n > 0:
            got = await self.recv_some(n)
            if got == 0:
                raise ConnectionError(f"peer closed with {n} bytes still expected")
            n -= got

    async def recv_to_eof(self) -> None:
        while await self.recv_some(READ_SIZE):
            pass

    async def send_stream(self, spec: TrafficSpec) -> None:
        """Bulk or paced sending until bytes or duration is reached, then a clean shutdown."""
        deadline = self.t0 + spec.duration_s if spec.duration_s > 0 else None
        limit = spec.bytes if spec.bytes > 0 else None
        rate_bps = spec.rate_mbit * 1e6 / 8 if spec.kind == "stream" else 0
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if limit is not None and self.report.bytes_sent >= limit:
                break
            n = BLOCK if limit is None else min(BLOCK, limit - self.report.bytes_sent)
            if rate_bps:
                # Pace: never more than rate * elapsed; send in slices of ~5 ms of data (or the
                # rest), so that the loop sleeps between them instead of spinning on crumbs.
                allowed = rate_bps * (now - self.t0 + 0.01) - self.report.bytes_sent
                if allowed < min(n, max(1.0, rate_bps * 0.005)):
                    await asyncio.sleep(0.005)
                    continue
                n = min(n, int(allowed))
            await self.send(n)
        self.writer.write_eof()
        # Wait for the receiver to close: then every byte we sent has been read.
        await self.recv_to_eof()

    def finish(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
        now = time.monotonic()
        self.report.duration_s = round(now - self.t0, 4)
        self.report.cpu_s = round(_cpu() - self.cpu0, 3)
        self.sample()
        self.report.sent_sha256 = self.sent_hash.hexdigest()
        self.report.received_sha256 = self.recv_hash.hexdigest()
        if self.last_recv is not None and now - self.last_recv > GAP_THRESHOLD_S:
            # A pause that never ended (the transfer was stopped, or the peer went silent
            # before closing) is a pause all the same.
            self.report.gaps.append(
                [round(self.last_recv - self.t0, 4), round(now - self.last_recv, 4)]
            )
        if self.report.bytes_received and self.report.duration_s > 0:
            # Goodput over the receiving period: from the start to the last byte in, or to the
            # end when the transfer did not complete (an error or a stop signal).
            end = (now if self.report.error else (self.last_recv or now)) - self.t0
            self.report.goodput_mbit = round(
                self.report.bytes_received * 8 / 1e6 / max(end, 1e-6), 3
            )
        if self.multipath:
            self.report.mptcp_fallback = self.conn.fallback()
            self.report.stack_info = self.conn.info()
        if isinstance(self.conn, KernelConn):
            self.report.socket = self.conn.socket_info()


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class _Stop:
    """SIGTERM/SIGINT stop the running transfers (each still reports what got through), or,
    when none runs, the program."""

    signum: int | None = None
    phases: set = set()
    main: asyncio.Task | None = None

    @classmethod
    def trigger(cls, signum: int) -> None:
        cls.signum = signum
        if cls.phases:
            for t in list(cls.phases):
                t.cancel()
        elif cls.main is not None:
            cls.main.cancel()


async def run_data_phase(ep: Endpoint, spec: TrafficSpec, is_client: bool) -> None:
    """The transfer; on error or a stop signal the report still gets its samples and hashes
    (the error says the transfer is incomplete)."""
    task = asyncio.current_task()
    _Stop.phases.add(task)
    ep.start()
    try:
        await _transfer(ep, spec, is_client)
    except (OSError, ConnectionError, asyncio.IncompleteReadError) as exc:
        ep.report.error = f"{type(exc).__name__}: {exc}"
    except asyncio.CancelledError:
        if _Stop.signum is None:
            raise
        task.uncancel()
        ep.report.error = f"Stopped: stopped by signal {_Stop.signum}"
    finally:
        _Stop.phases.discard(task)
        ep.finish()


async def _transfer(ep: Endpoint, spec: TrafficSpec, is_client: bool) -> None:
    if spec.kind in ("bulk", "stream"):
        sender = (spec.direction == "download") != is_client
        if sender:
            await ep.send_stream(spec)
        else:
            await ep.recv_to_eof()
    else:  # reqresp: the client asks, the server answers; direction is irrelevant
        for _ in range(spec.count):
            if is_client:
                t = time.monotonic()
                await ep.send(spec.req_bytes)
                await ep.recv_exact(spec.resp_bytes)
                ep.report.latencies_ms.append(round((time.monotonic() - t) * 1000, 3))
            else:
                await ep.recv_exact(spec.req_bytes)
                await ep.send(spec.resp_bytes)
        if is_client:
            ep.writer.write_eof()
        await ep.recv_to_eof()
        if not is_client:
            ep.writer.write_eof()


async def _close(conn: KernelConn | UserspaceConn) -> None:
    """Close the connection; ours waits until both FINs are through (bounded). After a stop
    signal: abort at once (the caller that sent it waits only so long)."""
    w = conn.writer
    try:
        if _Stop.signum is not None:
            w.transport.abort() if conn.proto != "userspace" else w.abort()
            return
        w.close()
        await asyncio.wait_for(w.wait_closed(), CLOSE_TIMEOUT_S)
    except (OSError, ConnectionError, TimeoutError):
        pass


# ---------------------------------------------------------------------------------------------
# Server and client


def _split(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def _proto_number(proto: str) -> int:
    return IPPROTO_MPTCP if proto == "mptcp" else socket.IPPROTO_TCP


async def _read_header(reader: Any) -> TrafficSpec:
    try:
        (length,) = struct.unpack("!I", await reader.readexactly(4))
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise ConnectionError("peer closed before the end of the header") from None
    spec = TrafficSpec(**json.loads(body))
    spec.validate()
    return spec


def _emit(report: Report, out: str | None) -> None:
    """The full report to --out; stdout gets it only without --out (else a short summary), so a
    caller that reads stdout through a pipe never blocks us on a large report."""
    full = asdict(report)
    if out:
        tmp = out + ".tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(full) + "\n")
        os.replace(tmp, out)
        full = {
            k: v
            for k, v in full.items()
            if k
            not in (
                "samples",
                "subflow_samples",
                "cwnd_samples",
                "gaps",
                "latencies_ms",
                "stack_info",
            )
        }
    print(json.dumps(full), flush=True)


@dataclass
class UserspaceOptions:
    """--proto userspace: our stack's MPTCP settings, in `ip mptcp`'s vocabulary."""

    endpoints: list[str] | None = None  # ADDR[,FLAG...]; None: the stack's default
    limits: str = ""  # subflows=N,add_addr_accepted=N
    scheduler: str = "default"  # research plug-ins: a name, or FILE.py:Class
    import_path: str | None = None  # where mptcp_impl lives, if not on sys.path
    cc: str = "uncoupled"
    pm: str = "kernel"
    opportunistic: str = "off"
    rcvbuf: int | None = None  # TcpConfig.rcv_buf / snd_buf (tcp_rmem / tcp_wmem)
    sndbuf: int | None = None
    checksum: bool = False  # DSS checksums (MptcpConfig.checksum, net.mptcp.checksum_enabled)
    pm_events: str | None = None  # a file: each path-manager event as a JSON line with its time


def _userspace(opts: UserspaceOptions, server: bool) -> tuple[Any, Any]:
    """mptcp_impl.api and a StackConfig (imported only for --proto userspace)."""
    if opts.import_path and opts.import_path not in sys.path:
        sys.path.insert(0, opts.import_path)
    from mptcp_impl import api
    from mptcp_impl.mptcp.ctrl import Endpoint as MpEndpoint
    from mptcp_impl.mptcp.ctrl import Limits, MptcpConfig
    from mptcp_impl.netio.stack import StackConfig
    from mptcp_impl.tcp.connection import TcpConfig

    eps = opts.endpoints
    if eps is None:
        endpoints = [] if server else None
    else:
        endpoints = [
            MpEndpoint.parse(e, i + 1) for i, e in enumerate(e for e in eps if e != "none")
        ]
    limits = Limits.parse(opts.limits) if opts.limits else Limits()
    cfg = MptcpConfig(
        endpoints=endpoints,
        limits=limits,
        scheduler=opts.scheduler,
        cc=opts.cc,
        pm=opts.pm,
        opportunistic=opts.opportunistic,
        checksum=opts.checksum,
    )
    tcp = TcpConfig()
    if opts.rcvbuf:
        tcp.rcv_buf = opts.rcvbuf
    if opts.sndbuf:
        tcp.snd_buf = opts.sndbuf
    on_pm = None
    if opts.pm_events:
        out = open(opts.pm_events, "a")  # noqa: SIM115 - open for the process's life

        def on_pm(ev: Any) -> None:  # (testbed/pmmonitor.py writes the kernel's alike)
            out.write(json.dumps({"time": time.time(), **ev.as_dict()}) + "\n")
            out.flush()

    return api, StackConfig(tcp=tcp, mptcp=cfg, on_pm_event=on_pm)


def _userspace_cleanup() -> None:
    """Our stack's endpoints, port reservations and nft table go with the process."""
    mod = sys.modules.get("mptcp_impl.api")
    if mod is None:
        return
    try:
        mod.close_stack()
    finally:
        from mptcp_impl.netio.firewall import process_fence

        process_fence().close()


async def serve(
    listen: str,
    proto: str,
    once: bool,
    out: str | None,
    us: UserspaceOptions | None = None,
    congestion: str | None = None,
) -> int:
    host, port = _split(listen)
    reports: asyncio.Queue[Report] = asyncio.Queue()

    async def handle(reader: Any, writer: Any) -> None:
        report = Report(role="server", proto=proto, spec={})
        conn = (
            UserspaceConn(reader, writer)
            if proto == "userspace"
            else KernelConn(reader, writer, proto)
        )
        try:
            if isinstance(conn, KernelConn):  # (also inherited from the listener)
                set_congestion(conn.sock, congestion)
            report.local, report.remote = conn.names()
            spec = await _read_header(reader)
            report.spec = asdict(spec)
            await run_data_phase(Endpoint(conn, report, spec.seed), spec, is_client=False)
        except (OSError, ValueError, TypeError, ConnectionError) as exc:
            report.error = f"{type(exc).__name__}: {exc}"
        finally:
            # The report first: a stop signal during the close must not lose it.
            reports.put_nowait(report)
            await _close(conn)

    if proto == "userspace":
        api, config = _userspace(us or UserspaceOptions(), server=True)
        server = await api.start_server(handle, host, port, limit=READ_SIZE, config=config)
        bound = server.port
    else:
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, _proto_number(proto))
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        set_congestion(lsock, congestion)
        lsock.bind((host, port))
        lsock.listen(8)
        lsock.setblocking(False)
        server = await asyncio.start_server(handle, sock=lsock, limit=READ_SIZE)
        bound = lsock.getsockname()[1]
    print(f"{READY_PREFIX} {host}:{bound} proto={proto}", flush=True)
    rc = 0
    try:
        while True:
            report = await reports.get()
            _emit(report, out)
            rc = 1 if report.error else rc
            if once:
                break
        # Let the connection close (bounded) before the process and its stack go.
        current = asyncio.current_task()
        others = [t for t in asyncio.all_tasks() if t is not current]
        if others:
            await asyncio.wait(others, timeout=CLOSE_TIMEOUT_S + 1)
    except asyncio.CancelledError:
        pass
    finally:
        server.close()
    return rc


async def _sock_connect(sock: socket.socket, addr: tuple[str, int]) -> None:
    """Non-blocking connect (loop.sock_connect resolves the address with the socket's protocol,
    and getaddrinfo knows no IPPROTO_MPTCP)."""
    err = sock.connect_ex(addr)
    if err == errno.EINPROGRESS:
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        loop.add_writer(sock.fileno(), lambda: ready.done() or ready.set_result(None))
        try:
            await ready
        finally:
            loop.remove_writer(sock.fileno())
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        raise OSError(err, f"connect to {addr[0]}:{addr[1]}: {os.strerror(err)}")


async def connect(
    target: str,
    proto: str,
    spec: TrafficSpec,
    bind: str | None,
    out: str | None,
    timeout: float,
    us: UserspaceOptions | None = None,
    congestion: str | None = None,
) -> int:
    spec.validate()
    host, port = _split(target)
    report = Report(role="client", proto=proto, spec=asdict(spec))
    conn: KernelConn | UserspaceConn | None = None
    try:
        if proto == "userspace":
            api, config = _userspace(us or UserspaceOptions(), server=False)
            reader, writer = await asyncio.wait_for(
                api.open_connection(host, port, local_addr=bind, limit=READ_SIZE, config=config),
                timeout,
            )
            conn = UserspaceConn(reader, writer)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, _proto_number(proto))
            sock.setblocking(False)
            try:
                set_congestion(sock, congestion)
                if bind:
                    sock.bind((bind, 0))
                await asyncio.wait_for(_sock_connect(sock, (host, port)), timeout)
                set_congestion(sock, congestion)  # a route's congctl replaced it at connect
                reader, writer = await asyncio.open_connection(sock=sock, limit=READ_SIZE)
            except BaseException:
                sock.close()
                raise
            conn = KernelConn(reader, writer, proto)
        report.local, _ = conn.names()
        report.remote = f"{host}:{port}"
        header = json.dumps(asdict(spec)).encode()
        conn.writer.write(struct.pack("!I", len(header)) + header)
        await run_data_phase(Endpoint(conn, report, spec.seed), spec, is_client=True)
    except (OSError, ValueError, ConnectionError, TimeoutError) as exc:
        report.error = f"{type(exc).__name__}: {exc}"
    except asyncio.CancelledError:
        report.error = f"Stopped: stopped by signal {_Stop.signum}"
    # The report first: a stop signal during the close must not lose it.
    _emit(report, out)
    if conn is not None:
        try:
            await _close(conn)
        except asyncio.CancelledError:
            pass
    return 1 if report.error else 0


async def _amain(coro: Any) -> int:
    loop = asyncio.get_running_loop()
    _Stop.main = asyncio.current_task()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _Stop.trigger, sig)
    try:
        return await coro
    except asyncio.CancelledError:
        return 1
    finally:
        _userspace_cleanup()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m experiments.traffic", description=__doc__.split("\n")[0]
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--proto", choices=PROTOS, default="tcp")
    common.add_argument("--out", help="also write the JSON report here")
    us = common.add_argument_group("--proto userspace (our stack, python package mptcp_impl)")
    us.add_argument(
        "--endpoint",
        action="append",
        default=None,
        metavar="ADDR[,FLAG...]",
        help="an MPTCP endpoint (flags: subflow, signal, backup, fullmesh); repeatable; `none`: "
        "no endpoint. Default: a client joins from every other local address, a server "
        "announces nothing",
    )
    us.add_argument("--limits", default="", metavar="subflows=N,add_addr_accepted=N")
    us.add_argument("--scheduler", default="default", metavar="NAME|FILE.py:Class")
    us.add_argument("--cc", default="uncoupled", metavar="NAME|FILE.py:Class")
    us.add_argument("--pm", default="kernel", metavar="NAME|FILE.py:Class")
    us.add_argument("--opportunistic", default="off", choices=("off", "retransmit", "penalise"))
    us.add_argument("--import-path", help="directory holding mptcp_impl, if not on PYTHONPATH")
    us.add_argument("--rcvbuf", type=int, default=None, metavar="BYTES", help="TcpConfig.rcv_buf")
    us.add_argument("--sndbuf", type=int, default=None, metavar="BYTES", help="TcpConfig.snd_buf")
    us.add_argument("--checksum", action="store_true", help="DSS checksums (MptcpConfig.checksum)")
    us.add_argument(
        "--pm-events", default=None, metavar="FILE", help="path-manager events, JSON lines"
    )
    common.add_argument(
        "--congestion",
        default=None,
        metavar="NAME",
        help="--proto tcp|mptcp: the sockets' congestion control (TCP_CONGESTION)",
    )
    s = sub.add_parser("server", parents=[common], help="accept connections and run what each asks")
    s.add_argument("--listen", default="0.0.0.0:5201")
    s.add_argument("--once", action="store_true", help="exit after one connection")
    c = sub.add_parser(
        "client", parents=[common], help="connect, send the header, run the data phase"
    )
    c.add_argument("--connect", required=True, help="HOST:PORT")
    c.add_argument("--bind", help="source address")
    c.add_argument("--kind", choices=["bulk", "reqresp", "stream"], default="bulk")
    c.add_argument("--direction", choices=["download", "upload"], default="download")
    c.add_argument("--bytes", type=int, default=0)
    c.add_argument("--duration", type=float, default=0.0)
    c.add_argument("--rate-mbit", type=float, default=0.0)
    c.add_argument("--req-bytes", type=int, default=100)
    c.add_argument("--resp-bytes", type=int, default=10000)
    c.add_argument("--count", type=int, default=10)
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--connect-timeout", type=float, default=10.0)
    a = ap.parse_args(argv)
    if a.proto != "userspace" and (
        a.endpoint or a.limits or a.import_path or a.rcvbuf or a.checksum or a.pm_events
    ):
        ap.error(
            "--endpoint, --limits, --import-path, --rcvbuf, --checksum are for --proto userspace"
        )
    if a.proto == "userspace" and a.congestion:
        ap.error("--congestion is for --proto tcp and mptcp (our stack: --cc)")
    uopts = UserspaceOptions(
        a.endpoint,
        a.limits,
        a.scheduler,
        a.import_path,
        a.cc,
        a.pm,
        a.opportunistic,
        a.rcvbuf,
        a.sndbuf,
        a.checksum,
        a.pm_events,
    )
    if a.cmd == "server":
        return asyncio.run(_amain(serve(a.listen, a.proto, a.once, a.out, uopts, a.congestion)))
    spec = TrafficSpec(
        kind=a.kind,
        direction=a.direction,
        bytes=a.bytes,
        duration_s=a.duration,
        rate_mbit=a.rate_mbit,
        req_bytes=a.req_bytes,
        resp_bytes=a.resp_bytes,
        count=a.count,
        seed=a.seed,
    )
    try:
        spec.validate()
    except ValueError as exc:
        ap.error(str(exc))
    return asyncio.run(
        _amain(
            connect(a.connect, a.proto, spec, a.bind, a.out, a.connect_timeout, uopts, a.congestion)
        )
    )


if __name__ == "__main__":
    sys.exit(main())
