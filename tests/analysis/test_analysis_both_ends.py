"""Analyses that need both ends' captures, on hand-built captures whose answers are known:
one-way delay per subflow and direction, reinjection qualification (useful / wasted / lost,
and how much earlier a useful copy arrived), bytes in flight per subflow.

An MPTCP upload from client to server over two subflows, captured at the client and at the
server: subflow 0 takes 10 ms one way for data and 10 ms for ACKs, subflow 1 30 ms and
20 ms. Subflow 0 sends one 1000-byte segment every 10 ms (DSN in order). Of those, #5 is
lost and #8 arrives 100 ms late; subflow 1 sends #5 again at 100 ms (useful: the first copy
never arrived), #8 at 105 ms (useful, 65 ms before the late first copy), #3 at 150 ms (wasted:
#3 arrived at 50 ms) and #10 at 160 ms (that copy is lost).
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from mptcp_craft import dss, mpc, opt, segment, write_pcap

from analysis import metrics as M
from analysis.frames import load_many
from analysis.mptcp import key_idsn, key_token

T = 1_795_000_000.0
SEG = 1000
CKEY, SKEY = 0x0102030405060708, 0x1122334455667788
SYN, ACK = 0x02, 0x10
ADDR = {0: (("10.9.1.1", 40000), ("10.9.9.2", 5201)), 1: (("10.9.2.1", 40001), ("10.9.9.2", 5201))}
DATA_OWD = {0: 0.010, 1: 0.030}
ACK_OWD = {0: 0.010, 1: 0.020}
ISN = {0: 1000, 1: 7000}
SISN = {0: 5001, 1: 9001}


class Pair:
    """Packets as the client and the server captured them."""

    def __init__(self) -> None:
        self.client: list = []
        self.server: list = []

    def send(
        self,
        t: float,
        sf: int,
        up: bool,
        seq: int,
        ack: int,
        flags: int,
        o=b"",
        n=0,
        delay: float | None = None,
    ) -> None:
        """A segment leaving one end at t, arriving after the path's delay (never: delay
        < 0)."""
        c, s = ADDR[sf]
        frm, to = (c, s) if up else (s, c)
        pkt = segment(frm[0], to[0], frm[1], to[1], seq, ack, flags, o, n)
        d = (DATA_OWD if up else ACK_OWD)[sf] if delay is None else delay
        (self.client if up else self.server).append((T + t, *pkt))
        if d >= 0:
            (self.server if up else self.client).append((T + t + d, *pkt))

    def write(self, run: Path) -> list[Path]:
        run.mkdir(parents=True, exist_ok=True)
        return [
            write_pcap(run / "client-eth0.pcap", sorted(self.client, key=lambda p: p[0])),
            write_pcap(run / "server-eth0.pcap", sorted(self.server, key=lambda p: p[0])),
        ]


def upload(run: Path) -> pd.DataFrame:  # noqa: F821 - pandas via analysis
    p = Pair()
    p.send(0.000, 0, True, ISN[0], 0, SYN, mpc(0x01))
    p.send(0.001, 0, False, SISN[0] - 1, ISN[0] + 1, SYN | ACK, mpc(0x01, send_key=SKEY))
    p.send(
        0.002,
        0,
        True,
        ISN[0] + 1,
        SISN[0],
        ACK,
        mpc(0x01, send_key=CKEY, recv_key=SKEY),
    )
    tok = struct.pack("!I", key_token(SKEY))
    p.send(0.003, 1, True, ISN[1], 0, SYN, opt(0x10, b"\x01" + tok + b"\0\0\0\1"))
    p.send(
        0.004,
        1,
        False,
        SISN[1] - 1,
        ISN[1] + 1,
        SYN | ACK,
        opt(0x10, b"\x01" + b"\0" * 8 + b"\0\0\0\2"),
    )
    p.send(0.005, 1, True, ISN[1] + 1, SISN[1], ACK, opt(0x10, b"\0" + b"\0" * 20))
    d0 = key_idsn(CKEY) + 1
    ssn = {0: 1, 1: 1}
    got: dict[int, list[tuple[float, int]]] = {0: [], 1: []}  # (arrival, ssn) per subflow

    def data(t: float, sf: int, k: int, delay: float | None = None) -> None:
        o = dss(dsn=d0 + k * SEG, dsn64=True, ssn=ssn[sf], dll=SEG)
        p.send(t, sf, True, ISN[sf] + ssn[sf], SISN[sf], ACK, o, SEG, delay=delay)
        if delay is None or delay >= 0:
            got[sf].append((t + (DATA_OWD[sf] if delay is None else delay), ssn[sf]))
        ssn[sf] += SEG

    for k in range(20):
        extra = {5: -1.0, 8: DATA_OWD[0] + 0.100}.get(k)
        data(0.010 * (k + 1), 0, k, extra)
    data(0.100, 1, 5)
    data(0.105, 1, 8)
    data(0.150, 1, 3)
    data(0.160, 1, 10, delay=-1.0)
    # each arrival is acknowledged at once, cumulatively (a hole holds the ACK)
    for sf, arrivals in got.items():
        have: set[int] = set()
        for t, s in sorted(arrivals):
            have.add(s)
            nxt = 1
            while nxt in have:
                nxt += SEG
            p.send(t, sf, False, SISN[sf], ISN[sf] + nxt, ACK, dss(ack=d0, ack64=True))
    return p.write(run)


@pytest.fixture
def frames(tmp_path):
    from analysis.mptcp import annotate

    df, _ = annotate(load_many(upload(tmp_path / "run"), cache=False))
    return df


def test_one_way_delay_per_subflow_and_direction(frames):
    [c] = frames["conn"].dropna().unique()
    v = M.vantage(frames, int(c))
    assert (v.sender_role, v.sender_host, v.receiver_host) == ("client", "client", "server")
    owd = M.one_way_delays(frames, v)
    rows = {(r["subflow"], r["direction"]): r for r in M.owd_summary(owd)}
    sf0, sf1 = sorted({k[0] for k in rows})
    # data: every segment seen at both ends once (the lost ones and the late one aside, the
    # late one at 110 ms); ACKs: one per arrival
    assert rows[(sf0, "data")]["min_ms"] == pytest.approx(10.0, abs=0.002)
    assert rows[(sf0, "data")]["p50_ms"] == pytest.approx(10.0, abs=0.002)
    assert rows[(sf0, "data")]["max_ms"] == pytest.approx(110.0, abs=0.002)
    assert rows[(sf0, "data")]["n"] == 19 + 2  # 19 of 20 arrived; the SYN and third ACK
    assert rows[(sf1, "data")]["p50_ms"] == pytest.approx(30.0, abs=0.002)
    assert rows[(sf0, "ack")]["p95_ms"] == pytest.approx(10.0, abs=0.002)
    assert rows[(sf1, "ack")]["max_ms"] == pytest.approx(20.0, abs=0.002)


def test_reinjections_are_qualified_useful_wasted_or_lost(frames):
    [c] = frames["conn"].dropna().unique()
    v = M.vantage(frames, int(c))
    q = M.reinjection_quality(frames, v)
    assert q.segments == 4
    assert (q.useful_bytes, q.wasted_bytes, q.lost_bytes) == (2 * SEG, SEG, SEG)
    assert q.useful_first_lost == 1  # #5: its first copy never arrived
    # #8: reinjected at 105 ms, arrived 135 ms; its first copy at 90 + 110 = 200 ms
    assert q.advance_s["median"] == pytest.approx(0.065, abs=1e-5)
    [sf1] = q.by_subflow
    assert q.by_subflow[sf1] == {"useful": 2 * SEG, "wasted": SEG, "lost": SEG}


def test_bytes_in_flight_per_subflow(frames):
    [c] = frames["conn"].dropna().unique()
    v = M.vantage(frames, int(c))
    fl = M.in_flight(frames, v, T, bin_s=0.05)
    sf0 = fl[fl["subflow"] == fl["subflow"].min()].set_index("t")["bytes"]
    # subflow 0 sends every 10 ms and hears each ACK 20 ms after sending (10 + 10); the send
    # of k and the ACK of k-2 share an instant and the capture lists the send first: 3
    # segments out at most (0-50 ms)... until #5 (sent at 60 ms) is lost: subflow 0's
    # cumulative ACK stays there and in flight grows by a segment per 10 ms, 14 segments (#5
    # to #18) by the last send of the 150-200 ms bin
    assert sf0.loc[0.0] == 3 * SEG
    assert sf0.loc[0.15] == 14 * SEG


def test_stack_cwnd_on_the_capture_clock():
    reports = [
        {"role": "server", "start_wall": 100.5, "cwnd_samples": [[0.1, {"x->y": 3000}]]},
        {"role": "client", "start_wall": 100.0},  # a receiver: no samples
        {"role": "client", "cwnd_samples": [[0.1, {"x->y": 1}]]},  # no clock to align: left out
    ]
    cw = M.stack_cwnd(reports, t0=100.25)
    assert cw.to_dict("records") == [
        {"t": 0.35, "host": "server", "subflow": "x->y", "bytes": 3000}
    ]


def test_the_run_analysis_and_report_show_them(tmp_path):
    import json

    from analysis.report import write_report
    from analysis.run import analyze_run

    run = tmp_path / "run"
    upload(run / "pcap" / "userspace" / "rep0")
    (run / "metadata.json").write_text(json.dumps({"experiment": "both-ends", "start": T}))
    # the sending stack's own windows, as the traffic tool reports them (100 ms samples from
    # its data phase's start, 0.05 s after the capture's first SYN here)
    sent = run / "traffic" / "userspace" / "rep0"
    sent.mkdir(parents=True)
    cw = [[0.1, {"a->b": 10 * SEG, "c->d": 4 * SEG}], [0.2, {"a->b": 20 * SEG, "c->d": 2 * SEG}]]
    (sent / "main-client.json").write_text(
        json.dumps({"role": "client", "start_wall": T + 0.05, "cwnd_samples": cw})
    )
    (sent / "main-server.json").write_text(json.dumps({"role": "server", "start_wall": T}))
    [g] = analyze_run(run)["groups"]
    assert g["cwnd_max_bytes"] == {"client a->b": 20 * SEG, "client c->d": 4 * SEG}
    [c] = g["connections"]
    q = c["reinjection_quality"]
    assert (q["useful_bytes"], q["wasted_bytes"], q["lost_bytes"]) == (2 * SEG, SEG, SEG)
    assert {(r["direction"], round(r["p50_ms"])) for r in c["owd"]} == {
        ("data", 10),
        ("data", 30),
        ("ack", 10),
        ("ack", 20),
    }
    assert (
        max(max(s["bytes"]) for s in c["in_flight_series"]["subflows_bytes"].values()) >= 14 * SEG
    )
    html = write_report(run).read_text()
    part = html[html.index("<h3>From both ends</h3>") :]
    assert "useful 2000 bytes" in part and "wasted 1000" in part and "lost 1000" in part
    assert "arrived 65 ms (median) before the first one" in part
    for fig in ("owd-", "inflight-", "dsn-", "cwnd-"):
        assert fig in html, fig
