"""Micro-benchmark: segments/s through two sans-I/O TCP cores wired back to back.

Prints figures, asserts nothing. Times are CPU time of this process (time.process_time), so
that other load on a shared machine distorts them less. Runs: the cores alone (segments handed
over as objects; receiver answering per burst, then per segment), the cores plus the wire codec
(encode + checksum + decode of every segment, as the I/O edge does), GSO-sized segments, and
the codec alone. Run: .venv/bin/python benchmarks/tcp_core_bench.py [MB]
"""

from __future__ import annotations

import os
import sys
import time

from mptcp_impl.tcp import (
    ACK,
    TcpConfig,
    TcpConnection,
    TcpSegment,
    Timestamps,
    decode_segment,
    encode_segment,
)

A = ("10.0.0.1", 40000)
B = ("10.0.0.2", 5001)


def run(
    total: int, codec: bool, cfg: TcpConfig | None = None, per_segment: bool = True
) -> tuple[float, int, int]:
    """Bulk transfer A -> B with zero delay; the fake clock advances 1 us per exchange.

    With ``per_segment`` the receiver's output is drained after every segment, as an edge
    that handles one datagram at a time would (an ACK every second segment); without it the
    receiver takes a whole burst and answers with one ACK (a batching edge)."""
    cfg = cfg or TcpConfig()
    now = 0.0
    a = TcpConnection(cfg, A, B)
    a.connect(now)
    syn = a.segments_to_send(now)[0]
    b = TcpConnection.accept_syn(cfg, syn, B, A, now)
    for s in b.segments_to_send(now):
        a.receive_segment(s, now)
    for s in a.segments_to_send(now):
        b.receive_segment(s, now)
    chunk = os.urandom(256 * 1024)
    sent = received = 0
    segs = 0
    t0 = time.process_time()
    while received < total:
        now += 1e-6
        while sent < total and a.send_buffer_free > 0:
            sent += a.send(chunk[: min(len(chunk), total - sent)])
        out = a.segments_to_send(now)
        segs += len(out)
        for s in out:
            if codec:
                s = decode_segment(encode_segment(s, A[0], B[0]), A[0], B[0])
            b.receive_segment(s, now)
            if per_segment:
                received += len(b.read())
                for s2 in b.segments_to_send(now):
                    if codec:
                        s2 = decode_segment(encode_segment(s2, B[0], A[0]), B[0], A[0])
                    a.receive_segment(s2, now)
        received += len(b.read())
        for s in b.segments_to_send(now):
            if codec:
                s = decode_segment(encode_segment(s, B[0], A[0]), B[0], A[0])
            a.receive_segment(s, now)
        t = b.get_timer()
        if t is not None and not out:
            now = max(now, t)
            b.handle_timer(now)
        t = a.get_timer()
        if t is not None and t <= now:
            a.handle_timer(now)
        while a.next_event() or b.next_event():
            pass
    return time.process_time() - t0, segs, received


def codec_only(n: int = 50_000) -> float:
    seg = TcpSegment(1, 2, 3, 4, ACK, 100, [Timestamps(1, 2)], os.urandom(1448))
    t0 = time.process_time()
    for _ in range(n):
        decode_segment(encode_segment(seg, A[0], B[0]), A[0], B[0])
    return n / (time.process_time() - t0)


def main() -> None:
    mb = float(sys.argv[1]) if len(sys.argv) > 1 else 50
    total = int(mb * 1e6)
    for label, codec, per in (
        ("cores, batched", False, False),
        ("cores", False, True),
        ("cores + codec", True, True),
    ):
        dt, segs, nbytes = run(total, codec, per_segment=per)
        print(
            f"{label:15s}: {nbytes / 1e6:.0f} MB in {dt:.2f} s: {segs / dt:,.0f} data segments/s,"
            f" {nbytes * 8 / dt / 1e6:,.0f} Mbit/s of payload (both ends on one core)"
        )
    dt, segs, nbytes = run(total, False, TcpConfig(max_segment_payload=64000))
    print(
        f"{'GSO 64 KB':15s}: {nbytes / 1e6:.0f} MB in {dt:.2f} s: {segs / dt:,.0f} segments/s,"
        f" {nbytes * 8 / dt / 1e6:,.0f} Mbit/s of payload"
    )
    print(f"codec only     : {codec_only():,.0f} encode+decode round trips/s (1448-byte payload)")


if __name__ == "__main__":
    main()
