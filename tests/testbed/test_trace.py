"""Trace files (Mahimahi format) and the trace queue's departure schedule: pure checks, no
network. The schedule is compared with a line-by-line port of Mahimahi's own link queue
(LinkQueue::rationalize in src/frontend/link_queue.cc), which ticks through every opportunity;
ours computes each departure when the packet arrives, so the two must agree on every packet."""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

from testbed import linkem
from testbed.routing import resolve_path
from testbed.topology import TopologyError, load_topology
from testbed.trace import Trace, TraceError, TraceQueue, ip_bytes, read_trace

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "topologies" / "traces"

TOPO = """
description = "trace test"
[nodes]
c = "host"
r = "router"
s = "host"
[links.a]
ends = ["c", "r"]
{fields}
[links.b]
ends = ["r", "s"]
[paths.p]
from = "c"
link = "a"
to = "s"
"""


def topo_file(tmp_path: Path, fields: str) -> Path:
    f = tmp_path / "topo.toml"
    f.write_text(TOPO.format(fields=fields))
    return f


def test_reads_a_trace_and_its_mean():
    # the README's example: one packet per millisecond is 12 Mbit/s
    t = Trace("x", (1,))
    assert (t.period_ms, t.mean_mbit) == (1, 12.0)
    t = Trace("x", (0, 0, 5, 10))  # 4 opportunities per 10 ms
    assert t.mean_mbit == pytest.approx(4 * 1500 * 8 / 10_000)
    # (t0, t1]: 0 and 10 coincide at each wrap (Mahimahi's rule), so 2 s hold 800 opportunities
    assert t.opportunities_between(0, 2000) == 800 - 2 + 2
    assert t.opportunities_between(10, 20) == 4
    assert t.opportunities_between(4, 5) == 1


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("", "line 1", "empty"),
        ("1\n2\n1\n", "line 3", "backwards"),
        ("1\n2\nx3\n", "line 3", "'x3'"),
        ("1\n\n3\n", "line 2", "an empty line"),
        ("0\n0\n", "line 2", "lasts no time"),
        ("5\n-1\n", "line 2", "'-1'"),
    ],
)
def test_a_bad_trace_names_file_and_line(tmp_path, text, line, what):
    f = tmp_path / "bad.down"
    f.write_text(text)
    with pytest.raises(TraceError) as e:
        read_trace(f)
    assert str(e.value).startswith(f"{f}: {line}: "), e.value
    assert what in str(e.value)


def test_an_unreadable_trace(tmp_path):
    with pytest.raises(TraceError, match=r"nope\.down: \(file\): cannot read"):
        read_trace(tmp_path / "nope.down")
    (tmp_path / "dir.down").mkdir()
    with pytest.raises(TraceError, match=r"dir\.down: \(file\): cannot read"):
        read_trace(tmp_path / "dir.down")
    (tmp_path / "bin.down").write_bytes(b"1\n2\n\xff\xfe\n")
    with pytest.raises(TraceError, match=r"bin\.down: line 3: not a text file"):
        read_trace(tmp_path / "bin.down")


def test_the_topology_refuses_a_bad_trace_naming_field_file_and_line(tmp_path):
    (tmp_path / "t.down").write_text("3\n7\n5\n")
    f = topo_file(tmp_path, 'trace_down = "t.down"')
    with pytest.raises(TopologyError) as e:
        load_topology(f)
    msg = str(e.value)
    assert msg.startswith(f"{f}: links.a.trace_down: {tmp_path / 't.down'}: line 3: "), msg
    # an override is read the same way, relative to the topology file's folder
    (tmp_path / "ok.up").write_text("1\n")
    with pytest.raises(TopologyError, match=r"links\.a\.trace_up: .*missing\.up: \(file\)"):
        load_topology(f, ["links.a.trace_down='ok.up'", "links.a.trace_up='missing.up'"])


def test_trace_fields_relative_paths_directions_and_rates(tmp_path):
    (tmp_path / "tr").mkdir()
    (tmp_path / "tr" / "d").write_text("1\n")  # 12 Mbit/s down
    (tmp_path / "tr" / "u").write_text("2\n")  # 6 Mbit/s up
    f = topo_file(tmp_path, 'trace_down = "tr/d"\ntrace_up = "tr/u"\nqueue_pkts = 50')
    topo = load_topology(f)
    m = topo.links["a"].model
    assert m.trace_down.path == str(tmp_path / "tr" / "d") and m.queue_pkts == 50
    assert m.delayed  # a trace runs in the router's emulator
    # the path goes c -> s: up the link a (c is its ends[0]); its way back is down
    p = resolve_path(topo, "p")
    assert (p.want_mbit, p.want_mbit_back) == (6.0, 12.0)
    # an absolute path works from anywhere
    topo = load_topology(f, [f"links.a.trace_up='{tmp_path / 'tr' / 'd'}'"])
    assert resolve_path(topo, "p").want_mbit == 12.0


def test_a_trace_and_rate_mbit_on_one_link_is_refused(tmp_path):
    (tmp_path / "d").write_text("1\n")
    f = topo_file(tmp_path, 'trace_down = "d"\nrate_mbit = 10')
    with pytest.raises(TopologyError, match=r"links\.a\.trace_down: a trace replaces rate_mbit"):
        load_topology(f)
    # ... and so is a rate given later (--set, or a `set` event's check_model)
    f = topo_file(tmp_path, 'trace_down = "d"')
    with pytest.raises(TopologyError, match=r"links\.a\.trace_down: a trace replaces"):
        load_topology(f, ["links.a.rate_mbit=5"])
    # a trace needs a router end to run on
    bad = TOPO.replace('r = "router"', 'r = "host"').format(fields='trace_down = "d"')
    (tmp_path / "h.toml").write_text(bad)
    with pytest.raises(TopologyError, match=r"links\.a: .*traces are emulated on a router"):
        load_topology(tmp_path / "h.toml")


def test_shipped_traces_are_valid():
    files = sorted(SHIPPED.glob("*.down")) + sorted(SHIPPED.glob("*.up"))
    assert len(files) >= 4
    for f in files:
        t = read_trace(f)
        assert 0.1 < t.mean_mbit < 100, (f, t.mean_mbit)


# -- the schedule ----------------------------------------------------------------------------


def mahimahi(times: list[int], arrivals: list[tuple[int, int]], limit: int) -> list[int | None]:
    """Mahimahi's LinkQueue on whole-millisecond arrivals (its clock), ported line by line:
    rationalize(now) spends every opportunity up to now, then the packet is queued (drop-tail
    on bytes: DropTailPacketQueue with a byte limit). Returns each packet's departure (ms) or
    None if dropped."""
    n, nxt, base = len(times), 0, 0
    queue: deque = deque()  # [index, size, arrival]
    queued_bytes = 0
    transit: list | None = None
    transit_left = 0
    out: list[int | None] = [None] * len(arrivals)

    def rationalize(now: int) -> None:
        nonlocal nxt, base, transit, transit_left, queued_bytes
        while times[nxt] + base <= now:
            this = times[nxt] + base
            budget = 1500
            nxt = (nxt + 1) % n
            if nxt == 0:
                base += times[-1]
            while budget > 0:
                if not transit_left:
                    if not queue:
                        break
                    transit = queue.popleft()
                    queued_bytes -= transit[1]
                    transit_left = transit[1]
                send = min(budget, transit_left)
                transit_left -= send
                budget -= send
                if transit_left == 0:
                    out[transit[0]] = this

    for i, (t, size) in enumerate(arrivals):
        rationalize(t)
        # our limit counts every packet not gone yet, the one in transit whole
        if queued_bytes + (transit[1] if transit_left else 0) + size > limit:
            continue
        queue.append([i, size, t])
        queued_bytes += size
    rationalize(arrivals[-1][0] + 10 * times[-1] + 10**6)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_departures_match_mahimahis_link_queue(seed):
    rng = random.Random(seed)
    # a bursty trace: runs of opportunities, some ms with several, gaps of nothing
    times, t = [], rng.randint(0, 3)
    for _ in range(rng.randint(5, 60)):
        times += [t] * rng.choice([1, 1, 2, 5])
        t += rng.choice([0, 1, 1, 2, 7])
    times.append(max(t, 1))
    arrivals, t = [], 0
    for _ in range(3000):
        t += rng.choice([0, 0, 0, 1, 1, 2, 5, 40])
        arrivals.append((t, rng.choice([60, 1500, 1500, 700, 3000, 9000])))
    limit = rng.choice([6000, 30000, 10**9])
    want = mahimahi(times, arrivals, limit)
    q = TraceQueue(times, start=0.0, limit=limit)
    got = []
    for t, size in arrivals:
        dep = q.admit(t / 1000.0, size)
        got.append(None if dep is None else round(dep * 1000))
    assert got == want
    assert q.dropped == want.count(None) and q.departures == len(want) - q.dropped
    if limit == 10**9:
        assert q.dropped == 0


def test_a_saturated_queue_carries_the_trace_rate():
    """Always backlogged, the queue sends exactly the trace's bytes, at the trace's times."""
    times = [0, 0, 3, 4, 4, 4, 10]  # 7 opportunities per 10 ms
    q = TraceQueue(times, start=100.0, limit=10**9)
    deps = [q.admit(100.0, 1500) for _ in range(700)]
    assert deps == sorted(deps)
    # 7 per period, period 10 ms; the one at time 0 is gone (at the arrival, not after it)
    firsts = [round((d - 100.0) * 1000, 6) for d in deps[:8]]
    assert firsts == [3.0, 4.0, 4.0, 4.0, 10.0, 10.0, 10.0, 13.0]
    assert round((deps[-1] - 100.0) * 1000) == 1000  # 700 packets = 100 periods


def test_gso_packets_count_their_segments_headers():
    # IPv4 (20 bytes) + TCP with timestamps (32 bytes): 1448 bytes of payload per segment
    head = bytes([0x45]) + bytes(8) + bytes([6]) + bytes(10) + bytes(12) + bytes([0x80])
    assert ip_bytes(1500, head) == 1500
    assert ip_bytes(52 + 10 * 1448, head) == 10 * 1500
    assert ip_bytes(52 + 10 * 1448 + 1, head) == 10 * 1500 + 53
    assert ip_bytes(5000, b"") == 5000  # no header known: the length as it is


# -- refused before any namespace is made ------------------------------------------------------

BUILD = """
import sys
from testbed.topology import load_topology
from testbed.net import Testbed
with Testbed(load_topology(sys.argv[1])):
    pass
"""


def namespaces_made(tmp_path: Path, argv: list[str]) -> tuple[int, str, bool]:
    """Run argv under strace: (exit status, stderr, whether any process of it made a network
    namespace: mnexec's unshare(CLONE_NEWNET) for a Mininet node)."""
    log = tmp_path / "strace.log"
    res = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=unshare,setns,clone,clone3", "-o", str(log), *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    return res.returncode, res.stderr, "CLONE_NEWNET" in log.read_text()


@pytest.mark.net
def test_a_bad_trace_is_refused_before_any_namespace(tmp_path):
    (tmp_path / "t.down").write_text("1\n2\n")
    good = topo_file(tmp_path, 'trace_down = "t.down"\ndelay_ms = 1')
    # the control: the same topology with a good trace builds nodes, and strace sees it
    rc, err, made = namespaces_made(tmp_path, [sys.executable, "-c", BUILD, str(good)])
    assert rc == 0 and made, err
    (tmp_path / "t.down").write_text("1\n2\n1\n")
    check = "import sys; from testbed.check import main; sys.exit(main(sys.argv[1]))"
    rc, err, made = namespaces_made(tmp_path, [sys.executable, "-c", check, str(good)])
    assert rc == 2 and not made, err
    assert f"{good}: links.a.trace_down: {tmp_path / 't.down'}: line 3: " in err, err


# -- the emulator's arrival times (testbed/linkem.py) ------------------------------------------


def nfqueue_message(packet_id: int, head: bytes, length: int, stamp: float | None) -> bytes:
    """An NFQUEUE packet message as the kernel writes it for a trace queue (nlmsghdr, nfgenmsg,
    then the attributes: packet header, the kernel's stamp if any, captured length, payload)."""

    def attr(atype: int, payload: bytes) -> bytes:
        alen = 4 + len(payload)
        return struct.pack("=HH", alen, atype) + payload + bytes(-alen % 4)

    body = attr(linkem.NFQA_PACKET_HDR, struct.pack("!IHB", packet_id, 0x0800, 2))
    if stamp is not None:
        sec = int(stamp)
        body += attr(linkem.NFQA_TIMESTAMP, struct.pack("!QQ", sec, round((stamp - sec) * 1e6)))
    body += attr(linkem.NFQA_CAP_LEN, struct.pack("!I", length))
    body += attr(linkem.NFQA_PAYLOAD, head)
    return struct.pack("=IHHII", 20 + len(body), linkem.MSG_PACKET, 0, 0, 0) + bytes(4) + body


def test_a_packet_is_timed_by_the_kernels_stamp_of_its_arrival_not_by_its_read():
    """A trace queue's schedule hangs on arrival times: the second packet of a burst that
    reached the router before the first one's opportunity, but was read after it, still meets
    a busy queue and takes the next opportunity of the same millisecond; timed at its read it
    met an empty queue and lost that opportunity (and every packet behind it was one late)."""
    head = bytes([0x45]) + bytes(8) + bytes([17]) + bytes(10)
    stamp = 1_800_000_000.25  # wall clock, microseconds in the message
    size, got = linkem.packet_size(nfqueue_message(7, head, 1500, stamp), 4096)
    assert size == 1500 and abs(got - stamp) < 1e-6
    assert linkem.packet_size(nfqueue_message(7, head, 1500, None), 4096) == (1500, 0.0)

    ks = linkem.KernelStamps()
    ks.hold()  # the socket that has the kernel stamp packets (SO_TIMESTAMP accepted)
    assert ks.sock is not None
    ks.close()
    ks = linkem.KernelStamps(offset=1000.0)  # wall clock = monotonic + 1000 s
    q = TraceQueue([5, 5, 10], start=0.0, limit=10**9)  # two opportunities at 5 ms, period 10
    first, stamped = ks.arrival(1000.004, read=0.0041, previous=0.0)
    assert stamped and q.admit(first, 1500) == pytest.approx(0.005)
    # arrived at 4.2 ms (in the kernel's queue behind the first), read at 5.3 ms
    second, stamped = ks.arrival(1000.0042, read=0.0053, previous=first)
    assert stamped and second == pytest.approx(0.0042)
    assert q.admit(second, 1500) == pytest.approx(0.005)  # the 5 ms pair's second one
    late = TraceQueue([5, 5, 10], start=0.0, limit=10**9)
    late.admit(0.0041, 1500)
    assert late.admit(0.0053, 1500) == pytest.approx(0.010)  # what reading time gave

    # never after the read, never before the previous arrival (the kernel queues in order);
    # no stamp, or one that cannot be an arrival, is timed at the read and counted
    # (the clocks' offset is taken once per loop turn: a stamp may look a little later)
    assert ks.arrival(1000.2005, read=0.2, previous=0.1) == (0.2, True)
    assert ks.arrival(1000.05, read=0.2, previous=0.1) == (0.1, True)
    assert ks.arrival(0.0, read=0.2, previous=0.1) == (0.2, False)
    assert ks.arrival(500.0, read=0.2, previous=0.1) == (0.2, False)  # 500 s before the read
    assert ks.arrival(1001.2, read=0.2, previous=0.1) == (0.2, False)  # a second after it
