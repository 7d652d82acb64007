"""The traffic tool every stack is measured with: one program, run in the hosts, for tcp and MPTCP.

    python -m experiments.traffic server --listen 0.0.0.0:5201 --proto mptcp --once --out s.json
    python -m experiments.traffic client --connect 10.0.3.2:5201 --proto mptcp --kind bulk \
        --direction download --duration 10 --seed 7 --out c.json

Why our own tool and not iperf3: the same code has to drive plain TCP, kernel MPTCP (socket
protocol 262) and later our userspace stack, and we need what iperf3 does not give: the receiver's
in-order progress every 100 ms (the failover gap), per-subflow byte counters from the kernel
(which path carried the data), and a sha256 of exactly what arrived, so "data intact" is a fact.

The file is deliberately standalone (standard library only, no imports from this repository): the
runner copies it to a host through the Host interface (put) and runs it there, which works the same
in a Mininet namespace and on a real machine over SSH.

Protocol: the client opens the connection and sends a header (4-byte big-endian length + JSON with
the traffic parameters); then the data phase runs in the requested direction. Payload bytes are a
deterministic pseudo-random stream from the seed, so a run can be replayed byte for byte. Both ends
hash everything they send and everything they receive; the runner compares sender and receiver.
The server prints one line "listening HOST:PORT proto=P" on stdout once it accepts connections.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import hashlib
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass, field

IPPROTO_MPTCP = 262
SOL_MPTCP = 284
MPTCP_INFO = 1
MPTCP_TCPINFO = 2
MPTCP_SUBFLOW_ADDRS = 3
MPTCP_INFO_FLAG_FALLBACK = 1

SAMPLE_INTERVAL_S = 0.1
GAP_THRESHOLD_S = 0.05  # pauses in in-order progress longer than this are recorded
BLOCK = 64 * 1024
READY_PREFIX = "listening"


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
    gaps: list = field(default_factory=list)  # [t_start, length] of pauses in in-order receiving
    latencies_ms: list = field(default_factory=list)  # reqresp: per exchange, client side
    max_subflows: int = 0
    mptcp_fallback: bool | None = None
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
# The data phase


class Endpoint:
    """One end of a connection: hashes both directions, samples progress and subflows."""

    def __init__(self, sock: socket.socket, report: Report, seed: int):
        self.sock = sock
        self.report = report
        self.payload = Payload(seed)
        self.sent_hash = hashlib.sha256()
        self.recv_hash = hashlib.sha256()
        self.mptcp = report.proto == "mptcp"
        self.t0 = time.monotonic()
        self.next_sample = self.t0 + SAMPLE_INTERVAL_S
        self.last_recv: float | None = None
        self.buf = bytearray(256 * 1024)

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.report.start_wall = time.time()
        self.next_sample = self.t0 + SAMPLE_INTERVAL_S

    def maybe_sample(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self.next_sample:
            return
        while self.next_sample <= now:
            self.next_sample += SAMPLE_INTERVAL_S
        t = round(now - self.t0, 4)
        self.report.samples.append([t, self.report.bytes_received])
        if self.mptcp:
            counters = subflow_counters(self.sock)
            if counters:
                self.report.max_subflows = max(self.report.max_subflows, len(counters))
                key = "bytes_received" if self.report.bytes_received else "bytes_acked"
                self.report.subflow_samples.append([t, {k: v[key] for k, v in counters.items()}])

    def send(self, n: int) -> None:
        data = self.payload.take(n)
        view = memoryview(data)
        while view:
            _, writable, _ = select.select([], [self.sock], [], SAMPLE_INTERVAL_S / 2)
            if writable:
                try:
                    sent = self.sock.send(view, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    sent = 0
                view = view[sent:]
            self.maybe_sample()
        self.sent_hash.update(data)
        self.report.bytes_sent += n

    def recv_some(self, limit: int) -> int:
        """Receive up to limit bytes; returns 0 on EOF, -1 when nothing arrived in a while."""
        readable, _, _ = select.select([self.sock], [], [], SAMPLE_INTERVAL_S / 2)
        if not readable:
            self.maybe_sample()
            return -1
        n = self.sock.recv_into(self.buf, min(limit, len(self.buf)))
        now = time.monotonic()
        if n > 0:
            if self.last_recv is not None and now - self.last_recv > GAP_THRESHOLD_S:
                self.report.gaps.append(
                    [round(self.last_recv - self.t0, 4), round(now - self.last_recv, 4)]
                )
            self.last_recv = now
            self.recv_hash.update(memoryview(self.buf)[:n])
            self.report.bytes_received += n
        self.maybe_sample()
        return n

    def recv_exact(self, n: int) -> None:
        while n > 0:
            got = self.recv_some(n)
            if got == 0:
                raise ConnectionError(f"peer closed with {n} bytes still expected")
            n -= max(got, 0)

    def recv_to_eof(self) -> None:
        while self.recv_some(len(self.buf)) != 0:
            pass

    def send_stream(self, spec: TrafficSpec) -> None:
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
                # Pace: never more than rate * elapsed; send in ~10 ms slices.
                allowed = rate_bps * (now - self.t0 + 0.01) - self.report.bytes_sent
                if allowed < 1:
                    time.sleep(0.005)
                    self.maybe_sample()
                    continue
                n = min(n, int(allowed))
            self.send(n)
        self.sock.shutdown(socket.SHUT_WR)
        # Wait for the receiver to close: then every byte we sent has been read.
        self.recv_to_eof()

    def finish(self) -> None:
        now = time.monotonic()
        self.report.duration_s = round(now - self.t0, 4)
        self.maybe_sample(force=True)
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
        if self.mptcp:
            self.report.mptcp_fallback = mptcp_fallback(self.sock)


class Stopped(Exception):
    """SIGTERM/SIGINT: stop the transfer but still report what got through until then."""


def _on_signal(signum: int, frame: object) -> None:
    raise Stopped(f"stopped by signal {signum}")


def run_data_phase(ep: Endpoint, spec: TrafficSpec, is_client: bool) -> None:
    """The transfer; on error or a stop signal the report still gets its samples and hashes
    (the error says the transfer is incomplete)."""
    ep.start()
    try:
        _transfer(ep, spec, is_client)
    except (OSError, ConnectionError, Stopped) as exc:
        ep.report.error = f"{type(exc).__name__}: {exc}"
    finally:
        ep.finish()


def _transfer(ep: Endpoint, spec: TrafficSpec, is_client: bool) -> None:
    if spec.kind in ("bulk", "stream"):
        sender = (spec.direction == "download") != is_client
        if sender:
            ep.send_stream(spec)
        else:
            ep.recv_to_eof()
    else:  # reqresp: the client asks, the server answers; direction is irrelevant
        for _ in range(spec.count):
            if is_client:
                t = time.monotonic()
                ep.send(spec.req_bytes)
                ep.recv_exact(spec.resp_bytes)
                ep.report.latencies_ms.append(round((time.monotonic() - t) * 1000, 3))
            else:
                ep.recv_exact(spec.req_bytes)
                ep.send(spec.resp_bytes)
        if is_client:
            ep.sock.shutdown(socket.SHUT_WR)
        ep.recv_to_eof()
        if not is_client:
            ep.sock.shutdown(socket.SHUT_WR)


# ---------------------------------------------------------------------------------------------
# Server and client


def _split(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def _proto_number(proto: str) -> int:
    return IPPROTO_MPTCP if proto == "mptcp" else socket.IPPROTO_TCP


def _read_header(sock: socket.socket) -> TrafficSpec:
    raw = b""
    while len(raw) < 4:
        chunk = sock.recv(4 - len(raw))
        if not chunk:
            raise ConnectionError("peer closed before sending the header")
        raw += chunk
    (length,) = struct.unpack("!I", raw)
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            raise ConnectionError("peer closed inside the header")
        body += chunk
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
            if k not in ("samples", "subflow_samples", "gaps", "latencies_ms")
        }
    print(json.dumps(full), flush=True)


def serve(listen: str, proto: str, once: bool, out: str | None) -> int:
    host, port = _split(listen)
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, _proto_number(proto))
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((host, port))
    lsock.listen(8)
    print(f"{READY_PREFIX} {host}:{lsock.getsockname()[1]} proto={proto}", flush=True)
    rc = 0
    while True:
        try:
            conn, peer = lsock.accept()
        except Stopped:
            break
        report = Report(role="server", proto=proto, spec={})
        try:
            spec = _read_header(conn)
            report.spec = asdict(spec)
            report.local = "{}:{}".format(*conn.getsockname()[:2])
            report.remote = "{}:{}".format(*peer[:2])
            run_data_phase(Endpoint(conn, report, spec.seed), spec, is_client=False)
        except (OSError, ValueError, ConnectionError, Stopped) as exc:
            report.error = f"{type(exc).__name__}: {exc}"
            rc = 1
        finally:
            conn.close()
        _emit(report, out)
        rc = 1 if report.error else rc
        if once:
            break
    lsock.close()
    return rc


def connect(
    target: str, proto: str, spec: TrafficSpec, bind: str | None, out: str | None, timeout: float
) -> int:
    spec.validate()
    host, port = _split(target)
    report = Report(role="client", proto=proto, spec=asdict(spec))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, _proto_number(proto))
    rc = 0
    try:
        if bind:
            sock.bind((bind, 0))
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.settimeout(None)
        report.local = "{}:{}".format(*sock.getsockname()[:2])
        report.remote = f"{host}:{port}"
        header = json.dumps(asdict(spec)).encode()
        sock.sendall(struct.pack("!I", len(header)) + header)
        run_data_phase(Endpoint(sock, report, spec.seed), spec, is_client=True)
    except (OSError, ValueError, ConnectionError, Stopped) as exc:
        report.error = f"{type(exc).__name__}: {exc}"
        rc = 1
    finally:
        sock.close()
    _emit(report, out)
    return 1 if report.error else rc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m experiments.traffic", description=__doc__.split("\n")[0]
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server", help="accept connections and run what each client asks")
    s.add_argument("--listen", default="0.0.0.0:5201")
    s.add_argument("--proto", choices=["tcp", "mptcp"], default="tcp")
    s.add_argument("--once", action="store_true", help="exit after one connection")
    s.add_argument("--out", help="also write the JSON report here")
    c = sub.add_parser("client", help="connect, send the traffic header, run the data phase")
    c.add_argument("--connect", required=True, help="HOST:PORT")
    c.add_argument("--proto", choices=["tcp", "mptcp"], default="tcp")
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
    c.add_argument("--out", help="also write the JSON report here")
    a = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    if a.cmd == "server":
        return serve(a.listen, a.proto, a.once, a.out)
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
    return connect(a.connect, a.proto, spec, a.bind, a.out, a.connect_timeout)


if __name__ == "__main__":
    sys.exit(main())
