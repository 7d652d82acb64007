"""Benchmark: CPU per segment of the sans-I/O TCP core on a lossy long fat path.

Two TcpConnection objects and a fake clock, no network: A sends to B over a simulated path of
200 ms RTT with a large window (receive and send buffers of 32 MB). The first ``warmup`` bytes
cross without loss so that slow start opens a window of thousands of segments; after that 5% of
A's data segments are dropped (seeded), which keeps hundreds to thousands of holes in the SACK
scoreboard and in B's out-of-order queue. ACKs are never dropped.

Prints CPU time (time.process_time) per data segment sent, split into the sender's ACK
processing + output and the receiver's input, and a second figure: B filling 1000
out-of-order blocks, one hole at a time. Asserts only that the data arrives intact.

Run: PYTHONPATH=. .venv/bin/python benchmarks/tcp_loss_bench.py [MB] [seed] [warmup MB]
"""

from __future__ import annotations

import heapq
import itertools
import random
import sys
import time

from mptcp_impl.tcp import ACK, TcpConfig, TcpConnection, TcpSegment

A = ("10.0.0.1", 40000)
B = ("10.0.0.2", 5001)
ONE_WAY = 0.1  # 200 ms RTT
LOSS = 0.05


def transfer(total: int, seed: int = 1, warmup: int = 4 << 20) -> dict:
    rng = random.Random(seed)
    cfg = TcpConfig(rcv_buf=32 << 20, snd_buf=32 << 20, isn=1000)
    now = 0.0
    q: list = []
    order = itertools.count()
    a = TcpConnection(cfg, A, B)
    b: TcpConnection | None = None
    a.connect(now)
    data = bytes(rng.getrandbits(8) for _ in range(1 << 16)) * (total // (1 << 16) + 1)
    data = data[:total]
    view = memoryview(data)  # slices handed to send() are not copies
    sent = 0
    got = bytearray()
    cpu = {"sender": 0.0, "receiver": 0.0}
    data_segs = drops = 0
    pc = time.process_time

    def flush_a() -> None:
        nonlocal sent, data_segs, drops
        t0 = pc()
        while sent < total and a.send_buffer_free > 0 and a.state.value == "ESTABLISHED":
            sent += a.send(view[sent : sent + (1 << 20)])
        out = a.segments_to_send(now)
        cpu["sender"] += pc() - t0
        for s in out:
            if s.payload:
                data_segs += 1
                if (s.seq - a.iss) & 0xFFFFFFFF > warmup and rng.random() < LOSS:
                    drops += 1
                    continue
            heapq.heappush(q, (now + ONE_WAY, next(order), "ab", s))

    def flush_b() -> None:
        if b is None:
            return
        t0 = pc()
        got.extend(b.read())
        out = b.segments_to_send(now)
        cpu["receiver"] += pc() - t0
        for s in out:
            heapq.heappush(q, (now + ONE_WAY, next(order), "ba", s))

    flush_a()
    while len(got) < total:
        timers = [(c.get_timer(), c) for c in (a, b) if c is not None]
        timers = [(t, c) for t, c in timers if t is not None]
        t_timer = min((t for t, _ in timers), default=None)
        if q and (t_timer is None or q[0][0] <= t_timer):
            now, _, direction, seg = heapq.heappop(q)
            if direction == "ab":
                t0 = pc()
                if b is None:
                    b = TcpConnection.accept_syn(cfg, seg, B, A, now)
                else:
                    b.receive_segment(seg, now)
                cpu["receiver"] += pc() - t0
            else:
                t0 = pc()
                a.receive_segment(seg, now)
                cpu["sender"] += pc() - t0
        elif t_timer is not None:
            now = t_timer
            for t, c in timers:
                if t <= now:
                    t0 = pc()
                    c.handle_timer(now)
                    cpu["sender" if c is a else "receiver"] += pc() - t0
        else:
            raise RuntimeError("stalled")
        flush_a()
        flush_b()
        while a.next_event() or (b is not None and b.next_event()):
            pass
    assert bytes(got) == data
    st = a.stats
    return {
        "segments": data_segs,
        "drops": drops,
        "sim_time": now,
        "rto": st.rto_count,
        "retransmits": st.retransmits,
        "recoveries": st.fast_retransmits,
        **cpu,
    }


def ooo_fill(blocks: int = 1000, mss: int = 1448) -> float:
    """B holds ``blocks`` out-of-order blocks (every other segment); then the holes arrive
    from the highest to the lowest (each merges two blocks; the last one drains everything).
    Returns CPU seconds per hole-filling segment."""
    cfg = TcpConfig(rcv_buf=32 << 20, isn=5000, timestamps=False)
    a = TcpConnection(cfg, A, B)
    a.connect(0.0)
    b = TcpConnection.accept_syn(cfg, a.segments_to_send(0.0)[0], B, A, 0.0)
    for s in b.segments_to_send(0.0):
        a.receive_segment(s, 0.0)
    for s in a.segments_to_send(0.0):
        b.receive_segment(s, 0.0)
    payload = b"x" * mss
    base = b.rcv_nxt
    ack = a.snd_nxt & 0xFFFFFFFF

    def seg(i: int) -> TcpSegment:
        return TcpSegment(A[1], B[1], (base + i * mss) & 0xFFFFFFFF, ack, ACK, 0xFFFF, [], payload)

    for i in range(1, 2 * blocks + 1, 2):
        b.receive_segment(seg(i), 0.0)
        b.segments_to_send(0.0)
    t0 = time.process_time()
    for i in range(2 * blocks - 2, -1, -2):
        b.receive_segment(seg(i), 0.0)
        b.segments_to_send(0.0)
    dt = time.process_time() - t0
    assert b.readable == 2 * blocks * mss
    return dt / blocks


def main() -> None:
    mb = float(sys.argv[1]) if len(sys.argv) > 1 else 24
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    warm = float(sys.argv[3]) if len(sys.argv) > 3 else 4
    r = transfer(int(mb * (1 << 20)), seed, int(warm * (1 << 20)))
    n = r["segments"]
    cpu = r["sender"] + r["receiver"]
    print(
        f"transfer {mb:g} MB, 200 ms RTT, 5% loss after {warm:g} MB, seed {seed}: {n} data segments, "
        f"{r['drops']} dropped, {r['retransmits']} retransmitted, {r['recoveries']} recoveries, "
        f"{r['rto']} RTOs, {r['sim_time']:.1f} s simulated"
    )
    print(
        f"  CPU {cpu:.2f} s = {cpu / n * 1e6:.0f} us/segment "
        f"(sender {r['sender'] / n * 1e6:.0f}, receiver {r['receiver'] / n * 1e6:.0f})"
    )
    print(f"ooo fill: 1000 out-of-order blocks, {ooo_fill() * 1e6:.0f} us per hole-filling segment")


if __name__ == "__main__":
    main()
