"""The failover table on captures whose answers are known: hand-built receiver-side pcaps of a
transfer over path0 (20 Mbit/s) and path1 (10 Mbit/s), path0 cut at 5 s and back at 15 s,
analysed end to end (analyze_run, the run report).

kernel-like MPTCP: 30 Mbit/s on both subflows; the last path0 segment before the cut is lost,
so in-order progress stops at 4.99 s; at 6.0 s path1 carries the lost range again and goes on at
its full 10 Mbit/s. Either path0 is never used again ("never") or it carries new data from 16 s.
Plain TCP on path0: nothing from 4.995 s until its retransmission at 17 s, then 20 Mbit/s.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from mptcp_craft import dss, mpc, opt, segment, write_pcap

from analysis.events import run_entry, write_events
from analysis.mptcp import key_idsn, key_token
from analysis.report import write_report
from analysis.run import analyze_run

T = 1_795_000_000.0  # the run's start (t0_wall)
SEG = 12_500  # bytes per captured segment: every 5 ms = 20 Mbit/s, every 10 ms = 10 Mbit/s
CKEY, SKEY = 0x0102030405060708, 0x1122334455667788
SYN, ACK = 0x02, 0x10
PATHS = [
    {"name": "path0", "links": ["path0"], "rate_mbit": 20},
    {"name": "path1", "links": ["path1"], "rate_mbit": 10},
]
ADDR = {0: (("10.9.1.1", 40000), ("10.9.1.2", 5201)), 1: (("10.9.2.1", 40001), ("10.9.2.2", 5201))}


def _join(subtype_byte: int, body: bytes) -> bytes:
    return opt(subtype_byte, body)


class Capture:
    """Packets as the server (receiver) captured them, both subflows in one file."""

    def __init__(self) -> None:
        self.pk: list[tuple[float, bytes, int]] = []
        self.ssn = {0: 1, 1: 1}  # next subflow-relative sequence number of the client's data
        self.isn = {0: 1000, 1: 7000}

    def add(self, t: float, sf: int, to_server: bool, seq: int, ack: int, flags: int, o=b"", n=0):
        c, s = ADDR[sf]
        frm, to = (c, s) if to_server else (s, c)
        frame, orig = segment(frm[0], to[0], frm[1], to[1], seq, ack, flags, o, n)
        self.pk.append((T + t, frame, orig))


def _mptcp(path: Path, back: bool) -> None:
    cap = Capture()
    idsn = key_idsn(CKEY)
    cap.add(0.000, 0, True, 1000, 0, SYN, mpc(0x01))
    cap.add(0.0005, 0, False, 5000, 1001, SYN | ACK, mpc(0x01, send_key=SKEY))
    cap.add(0.001, 0, True, 1001, 5001, ACK, mpc(0x01, send_key=CKEY, recv_key=SKEY))
    tok = struct.pack("!I", key_token(SKEY))
    cap.add(0.002, 1, True, 7000, 0, SYN, _join(0x10, b"\x01" + tok + b"\0\0\0\1"))
    cap.add(0.0025, 1, False, 9000, 7001, SYN | ACK, _join(0x10, b"\x01" + b"\0" * 8 + b"\0\0\0\2"))
    cap.add(0.003, 1, True, 7001, 9001, ACK, _join(0x10, b"\0" + b"\0" * 20))
    sisn = {0: 5001, 1: 9001}
    # what each subflow sends, by time (ms): path0 every 5 ms until the cut, path1 every 10 ms
    sends: list[tuple[int, int]] = []
    sends += [(ms, 0) for ms in range(5, 5000, 5)]
    sends += [(ms, 1) for ms in range(10, 5000, 10)]
    sends += [(ms, 1) for ms in range(6010, 20001, 10)]
    if back:
        sends += [(ms, 0) for ms in range(16000, 20001, 5)]
    sends.sort()
    dsn, level = idsn + 1, idsn + 1
    held: list[tuple[int, int]] = []  # DSN ranges received above the hole
    lost = None
    for ms, sf in sends:
        t = ms / 1000
        if ms == 6010:  # path1 first carries the range lost on path0 (a reinjection)
            _data(cap, 6.0, 1, lost, sisn)
            level = max(level, lost + SEG)
            for s, e in sorted(held):
                level = max(level, e) if s <= level else level
            _ack(cap, 6.0001, 1, level, sisn)
        d, dsn = dsn, dsn + SEG
        if ms == 4995:  # the last path0 segment before the cut never arrives
            lost = d
            cap.ssn[0] += SEG
            continue
        _data(cap, t, sf, d, sisn)
        if lost is not None and d > lost and level <= lost:
            held.append((d, d + SEG))
        else:
            level = max(level, d + SEG)
        _ack(cap, t + 0.0001, sf, level, sisn)
    write_pcap(path, sorted(cap.pk, key=lambda p: p[0]))


def _data(cap: Capture, t: float, sf: int, d: int, sisn: dict) -> None:
    ssn = cap.ssn[sf]
    o = dss(dsn=d, dsn64=True, ssn=ssn, dll=SEG)
    cap.add(t, sf, True, cap.isn[sf] + ssn, sisn[sf], ACK, o, SEG)
    cap.ssn[sf] += SEG


def _ack(cap: Capture, t: float, sf: int, level: int, sisn: dict) -> None:
    cap.add(t, sf, False, sisn[sf], cap.isn[sf] + cap.ssn[sf], ACK, dss(ack=level, ack64=True))


def _tcp(path: Path) -> None:
    cap = Capture()
    cap.add(0.000, 0, True, 1000, 0, SYN)
    cap.add(0.0005, 0, False, 5000, 1001, SYN | ACK)
    cap.add(0.001, 0, True, 1001, 5001, ACK)
    seq, acked = 1001, 1001
    for ms in range(5, 4995, 5):
        cap.add(ms / 1000, 0, True, seq, 5001, ACK, n=SEG)
        seq += SEG
        acked = seq
        cap.add(ms / 1000 + 0.0001, 0, False, 5001, acked, ACK)
    hole, seq = seq, seq + SEG  # sent at 4.995 s, lost in the cut
    cap.add(17.0, 0, True, hole, 5001, ACK, n=SEG)  # the retransmission, once the path is back
    cap.add(17.0001, 0, False, 5001, seq, ACK)
    for ms in range(17005, 20001, 5):
        cap.add(ms / 1000, 0, True, seq, 5001, ACK, n=SEG)
        seq += SEG
        cap.add(ms / 1000 + 0.0001, 0, False, 5001, seq, ACK)
    write_pcap(path, cap.pk)


def _run(tmp: Path, stack: str, build) -> Path:
    run = tmp / stack
    pcap = run / "pcap" / stack / "rep0"
    pcap.mkdir(parents=True)
    build(pcap / "server-eth0.pcap")
    meta = {"experiment": "failover-known", "parameters": {"paths": PATHS}, "start": T}
    (run / "metadata.json").write_text(json.dumps(meta))
    events = [
        {"at": 5.0, "actual": 5.0, "link": "path0", "action": "down"},
        {"at": 15.0, "actual": 15.0, "link": "path0", "action": "up"},
    ]
    write_events(run / "events.json", [run_entry(f"{stack}/rep0", T, events)])
    return run


def _failover(run: Path) -> dict:
    [g] = analyze_run(run, figures=False)["groups"]
    [c] = g["connections"]
    [f] = c["failover"]
    return f


@pytest.mark.parametrize("back", [False, True])
def test_mptcp_failover_known_answers(tmp_path, back):
    f = _failover(_run(tmp_path, "kernel-mptcp", lambda p: _mptcp(p, back)))
    assert f["at_s"] == pytest.approx(5.0)
    assert f["gap_s"] == pytest.approx(1.01, abs=0.002)  # in order: 4.9901 s until 6.0001 s
    assert f["first_new_data_s"] == pytest.approx(1.0, abs=0.001)
    assert f["surviving_capacity_bps"] == 10e6  # path1 alone
    assert f["recovery_s"] == pytest.approx(1.0, abs=0.02)  # path1 at its full rate from 6 s
    # the lost segment + path1's segments acked by 8 s (6.01 ... 7.99), against 3 s of path1
    assert f["delivered_3s_bytes"] == SEG + 199 * SEG
    assert f["efficiency"] == pytest.approx(200 * SEG / (10e6 / 8 * 3), abs=1e-6)
    if back:  # path0 carries new data again from 16 s, 1 s after it came back
        assert f["return_s"] == pytest.approx(1.0, abs=0.001)
        assert f["return_bytes"] == len(range(16000, 20001, 5)) * SEG
    else:
        assert f["return_s"] is None and f["up_time"] == pytest.approx(T + 15)


def test_tcp_failover_known_answers(tmp_path):
    run = _run(tmp_path, "tcp", _tcp)
    f = _failover(run)
    assert f["gap_s"] == pytest.approx(17.0001 - 4.9901, abs=0.002)
    # nothing until the path is back and TCP retransmits at 17 s; then 20 Mbit/s >= 90% of 10
    assert f["recovery_s"] == pytest.approx(12.0, abs=0.02)
    assert f["delivered_3s_bytes"] == 0 and f["efficiency"] == 0.0
    assert f["return_s"] == pytest.approx(2.0, abs=0.001)  # its only subflow, back at 17 s


def test_failover_table_in_the_report(tmp_path):
    runs = {
        "kernel-mptcp": _run(tmp_path, "kernel-mptcp", lambda p: _mptcp(p, False)),
        "tcp": _run(tmp_path, "tcp", _tcp),
    }
    text = write_report(tmp_path).read_text()  # the two runs as a campaign
    table = text[text.index("<h2>Failover</h2>") :]
    table = table[: table.index("</table>")]
    rows = {
        stack: table[table.index(f'<td class="l">{run.name}</td>') :].split("</tr>")[0]
        for stack, run in runs.items()
    }
    # kernel-mptcp: recovered in 1 s, 67% efficient, path0 never used again
    assert ">1.01<" in rows["kernel-mptcp"]
    assert ">66.7<" in rows["kernel-mptcp"] and ">never<" in rows["kernel-mptcp"]
    assert ">12<" in rows["tcp"] and ">0<" in rows["tcp"] and ">2<" in rows["tcp"]
    # the stacks' summary too: kernel-mptcp never used path0 again, tcp after 2 s
    summary = text[text.index("Stacks compared") :]
    summary = summary[: summary.index("</table>")]
    assert summary.count(">never<") == 1 and ">2<" in summary.split('<td class="l">tcp')[1]
    after = text[text.index("<h2>Failover</h2>") :]
    assert "longest pause in the receiver's" in after[: after.index("</p>") + 5000]


# ---- aggregation benefit on captures with known goodput ------------------------------------------


def _bulk(path: Path, every_ms: dict[int, int], secs: int = 10) -> None:
    """MPTCP bulk without events: subflow sf sends a segment every every_ms[sf] ms (0 = idle)."""
    cap = Capture()
    idsn = key_idsn(CKEY)
    cap.add(0.000, 0, True, 1000, 0, SYN, mpc(0x01))
    cap.add(0.0005, 0, False, 5000, 1001, SYN | ACK, mpc(0x01, send_key=SKEY))
    cap.add(0.001, 0, True, 1001, 5001, ACK, mpc(0x01, send_key=CKEY, recv_key=SKEY))
    tok = struct.pack("!I", key_token(SKEY))
    cap.add(0.002, 1, True, 7000, 0, SYN, _join(0x10, b"\x01" + tok + b"\0\0\0\1"))
    cap.add(0.0025, 1, False, 9000, 7001, SYN | ACK, _join(0x10, b"\x01" + b"\0" * 8 + b"\0\0\0\2"))
    cap.add(0.003, 1, True, 7001, 9001, ACK, _join(0x10, b"\0" + b"\0" * 20))
    sisn = {0: 5001, 1: 9001}
    sends = sorted(
        (ms, sf) for sf, e in every_ms.items() if e for ms in range(e, secs * 1000 + 1, e)
    )
    dsn = idsn + 1
    for ms, sf in sends:
        _data(cap, ms / 1000, sf, dsn, sisn)
        dsn += SEG
        _ack(cap, ms / 1000 + 0.0001, sf, dsn, sisn)
    write_pcap(path, sorted(cap.pk, key=lambda p: p[0]))


def _bulk_run(tmp: Path, name: str, every_ms: dict[int, int]) -> dict:
    run = tmp / name
    pcap = run / "pcap" / "kernel-mptcp" / "rep0"
    pcap.mkdir(parents=True)
    _bulk(pcap / "server-eth0.pcap", every_ms)
    meta = {"experiment": "bulk-known", "parameters": {"paths": PATHS, "capacities_mbit": [20, 10]}}
    (run / "metadata.json").write_text(json.dumps({**meta, "start": T}))
    write_events(run / "events.json", [run_entry("kernel-mptcp/rep0", T, [])])
    [g] = analyze_run(run, figures=False)["groups"]
    [c] = g["connections"]
    return c


@pytest.mark.parametrize(
    "every_ms, mbit, benefit",
    [
        ({0: 5, 1: 20}, 25, 0.5),  # 20 + 5 Mbit/s on 20 + 10: half of what lte could add
        ({0: 5, 1: 10}, 30, 1.0),  # both paths full: perfect aggregation
        ({0: 5, 1: 0}, 20, 0.0),  # the best path alone: no benefit
        ({0: 10, 1: 0}, 10, -0.5),  # half the best path
        ({0: 0, 1: 10}, 10, -0.5),  # lte alone
    ],
)
def test_aggregation_benefit_known_answers(tmp_path, every_ms, mbit, benefit):
    c = _bulk_run(tmp_path, "bulk", every_ms)
    assert c["steady_goodput_bps"] == pytest.approx(mbit * 1e6, rel=0.003)
    assert c["aggregation_benefit"] == pytest.approx(benefit, abs=0.01)


def _mptcp_seamless(path: Path) -> None:
    """Our stack in the failover demo: path0 cut at 5 s with nothing of it lost in order (its
    last segment arrived), path1 carrying on at 10 Mbit/s without a pause; the only pause, 0.2 s,
    comes at 14.3 s as path0 is about to return (here: path1 sends nothing from 14.3 to 14.5 s)."""
    cap = Capture()
    cap.add(0.000, 0, True, 1000, 0, SYN, mpc(0x01))
    cap.add(0.0005, 0, False, 5000, 1001, SYN | ACK, mpc(0x01, send_key=SKEY))
    cap.add(0.001, 0, True, 1001, 5001, ACK, mpc(0x01, send_key=CKEY, recv_key=SKEY))
    tok = struct.pack("!I", key_token(SKEY))
    cap.add(0.002, 1, True, 7000, 0, SYN, _join(0x10, b"\x01" + tok + b"\0\0\0\1"))
    cap.add(0.0025, 1, False, 9000, 7001, SYN | ACK, _join(0x10, b"\x01" + b"\0" * 8 + b"\0\0\0\2"))
    cap.add(0.003, 1, True, 7001, 9001, ACK, _join(0x10, b"\0" + b"\0" * 20))
    sisn = {0: 5001, 1: 9001}
    sends = [(ms, 0) for ms in range(5, 5000, 5)]
    sends += [(ms, 1) for ms in range(10, 20001, 10) if not 14300 < ms < 14500]
    dsn = key_idsn(CKEY) + 1
    for ms, sf in sorted(sends):
        _data(cap, ms / 1000, sf, dsn, sisn)
        dsn += SEG
        _ack(cap, ms / 1000 + 0.0001, sf, dsn, sisn)
    write_pcap(path, sorted(cap.pk, key=lambda p: p[0]))


def test_first_new_data_only_when_progress_stopped(tmp_path):
    """A connection that carried on through the cut has no "first new data" after a stop: the
    failover record says progress did not stop, and the report's table says so in words (it
    showed 9.5 s here before, measured from the unrelated pause at 14.3 s)."""
    run = _run(tmp_path, "userspace", _mptcp_seamless)
    f = _failover(run)
    assert f["gap_s"] == pytest.approx(0.2, abs=0.002)  # the later pause, still the gap
    assert f["progress_stopped"] is False and f["first_new_data_s"] is None
    text = write_report(run).read_text()
    table = text[text.index("<h2>Failover</h2>") :]
    assert ">progress did not stop<" in table[: table.index("</table>")]
    # a stop at the cut still gives it (the kernel-like capture above: 1.0 s)
    g = _failover(_run(tmp_path, "kernel-mptcp", lambda p: _mptcp(p, False)))
    assert g["progress_stopped"] is True and g["first_new_data_s"] == pytest.approx(1.0, abs=1e-3)
