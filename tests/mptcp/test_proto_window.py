"""The connection-level receive window (RFC 8684 3.3.4, Linux's mptcp_set_rwin): every subflow
advertises the window relative to the DATA_ACK, the right edge never moves back, and the
sender sends no byte beyond DATA_ACK + window."""

from __future__ import annotations

from mptcp_impl.mptcp import crypto
from mptcp_impl.mptcp.ctrl import MptcpConfig
from mptcp_impl.mptcp.options import Dss, MpJoinAck, MpJoinSyn, MpJoinSynAck, find_mptcp
from testkit.mptcp_sim import C1, S, client_cfg, two_path_net

from .peer import (
    ACK,
    PORT,
    SYN,
    THEM2,
    US,
    Box,
    Flow,
    data_ack,
    dss_of,
    established_server,
    mapping,
    one,
)

RBUF = 20_000


def join(box: Box, f: Flow) -> Flow:
    conn = box.conn
    f2 = Flow((THEM2, 40001), (US, PORT), f.key, isn=0x30000000, win=f.win)
    (synack,) = box.syn(f2, f2.seg(SYN, MpJoinSyn(token=conn.local_token, nonce=5, addr_id=1)))
    ja = one(synack, MpJoinSynAck)
    hm = crypto.join_ack_hmac(f.key, conn.local_key, 5, ja.nonce)
    box.feed(f2, f2.seg(ACK, MpJoinAck(hm)))
    return f2


class Edges:
    """Right edges (DATA_ACK + window) of every segment we send, checked as they go."""

    def __init__(self, box: Box) -> None:
        self.box = box
        self.n = 0
        self.edge = None
        self.read = 0

    def check(self) -> None:
        box = self.box
        conn = box.conn
        for sub, s in box.sent[self.n :]:
            self.n += 1
            d = dss_of(s)
            if s.flags & SYN or d is None or d.data_ack is None:
                continue
            e = d.data_ack + (s.window << sub.tcp.rcv_wscale)
            if self.edge is not None:
                assert e >= self.edge, f"right edge pulled back by {self.edge - e} on {sub.name}"
            self.edge = e
            limit = conn.remote_idsn + 1 + self.read + conn.config.rcv_buf
            assert e <= limit, f"window {e - d.data_ack} beyond the buffer by {e - limit}"


def test_window_relative_to_data_ack_never_pulled_back_with_ooo_on_two_subflows():
    box, f = established_server(config=MptcpConfig(rcv_buf=RBUF))
    conn = box.conn
    f2 = join(box, f)
    edges = Edges(box)
    edges.check()
    # subflow 2 brings data-level bytes 3001.. while 1..3000 (subflow 1) are missing
    seq2 = 1
    for dsn in range(3001, 12001, 1000):
        box.feed(f2, f2.seg(ACK, mapping(f, dsn, seq2, 1000), seq=seq2, payload=b"b" * 1000))
        seq2 += 1000
        edges.check()
    box.advance(0.1)
    edges.check()
    # the hole fills on subflow 1
    box.feed(f, f.seg(ACK, mapping(f, 1, 1, 3000), seq=1, payload=b"a" * 3000))
    box.advance(0.1)
    edges.check()
    assert conn.rcv_nxt == f.idsn + 12001
    # the reader takes a little at a time; the window reopens relative to the DATA_ACK
    got = b""
    for _ in range(6):
        got += conn.read(2000)
        edges.read = len(got)
        box.feed(f, f.seg(ACK, data_ack(conn, 1), seq=3001))
        box.advance(0.05)
        edges.check()
    assert got == b"a" * 3000 + b"b" * 9000


def test_sender_respects_data_level_window_across_subflows():
    box, f = established_server(win=5000)
    conn = box.conn
    f2 = join(box, f)
    # both subflows allow 5000 bytes at the TCP level, the connection only 5000 in all
    box.feed(f, f.seg(ACK, data_ack(conn, 1)))
    box.feed(f2, f2.seg(ACK, data_ack(conn, 1)))
    conn.send(b"x" * 50_000)
    box.out()

    def top_dsn(pairs) -> int:
        """The data-level end of the highest byte sent (from each segment's mapping)."""
        ends = [0]
        for sub, s in pairs:
            d = dss_of(s)
            if s.payload and d is not None and d.dsn is not None:
                rel = (s.seq - sub.tcp.iss) & 0xFFFFFFFF
                ends.append(d.dsn + rel - d.subflow_seq + len(s.payload))
        return max(ends)

    sent_bytes = sum(len(s.payload) for _, s in box.sent if s.payload)
    assert sent_bytes <= 5000, f"{sent_bytes} bytes sent into a 5000-byte connection window"
    assert top_dsn(box.sent) <= conn.local_idsn + 1 + 5000
    # the DATA_ACK moves and the window reopens: more goes out, still within the edge
    n = len(box.sent)
    box.feed(f, f.seg(ACK, data_ack(conn, 5001), win=8000, ack=5001))
    box.out()
    assert [s for _, s in box.sent[n:] if s.payload]
    assert top_dsn(box.sent) <= conn.local_idsn + 1 + 13000
    assert sum(len(s.payload) for _, s in box.sent if s.payload) <= 13000


def test_zero_window_then_update_resumes():
    box, f = established_server()
    conn = box.conn
    box.feed(f, f.seg(ACK, data_ack(conn, 1), win=0))
    conn.send(b"z" * 4000)
    out = [s for s in box.out() if s.payload]
    assert not out or sum(len(s.payload) for s in out) <= 1
    box.feed(f, f.seg(ACK, Dss(data_ack=(conn.local_idsn + 1) & 0xFFFFFFFF), win=4000))
    box.advance(0.5)
    assert sum(len(s.payload) for _, s in box.sent if s.payload) >= 4000


def test_sim_small_rcv_buf_slow_reader():
    """Two paths, a 32 KiB connection buffer read 4 KiB every 10 ms: every segment the
    receiver sends keeps the data-level edge monotonic and within its buffer, the sender never
    sends beyond the edge it was given, and the bytes arrive intact."""

    net, client, server, p1, p2 = two_path_net(seed=5)
    server.config = MptcpConfig(rcv_buf=32_768)
    server.auto_read = False
    conn = net.connect(client, C1, (S, 5001), client_cfg())
    net.run(1.0, stop=lambda: conn._connected)
    data = bytes(i % 239 for i in range(400_000))
    conn.send(data)
    net.flush(client, conn)
    got = bytearray()
    srv = None
    while net.now < 60 and len(got) < len(data):
        net.run(net.now + 0.01)
        if server.accepted:
            srv = server.accepted[0]
            got += srv.read(4096)
            net.flush(server, srv)
            assert srv.readable + srv._ooo_bytes <= 32_768 + 1460
    assert bytes(got) == data
    # the receiver's advertised edges, in the order sent
    wsc = {s.local[1]: s.tcp.rcv_wscale for s in srv.all_subflows()}
    best = 0
    edges = []  # (time, edge) as the receiver sent them
    for t, src, _dst, seg in net.trace:
        if src != S or seg.flags & SYN:
            continue
        for o in find_mptcp(seg.options):
            if isinstance(o, Dss) and o.data_ack is not None:
                e = o.data_ack + (seg.window << wsc[seg.src_port])
                assert e >= best, f"edge pulled back by {best - e} at {t}"
                best = e
                edges.append((t, e))
    # the sender: no mapped byte beyond the highest edge advertised before it was sent
    i = 0
    top = 0
    for t, src, _dst, seg in net.trace:
        if src == S:
            continue
        while i < len(edges) and edges[i][0] <= t:
            top = max(top, edges[i][1])
            i += 1
        for o in find_mptcp(seg.options):
            if isinstance(o, Dss) and o.dsn is not None and seg.payload and top:
                assert o.dsn + o.data_len <= top + 1, "sent beyond DATA_ACK + window"
