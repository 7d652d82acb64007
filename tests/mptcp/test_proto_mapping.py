"""Validating the peer's DSS mappings as Linux's subflow.c get_mapping_status does (issue 18,
defect 6), against a scripted peer: a mapping must hold the first byte of the segment carrying
it (DSSNoMatchTCP) and agree with the mappings in use (DSSNotMatching); bytes that can never get
a mapping do not wait forever (MAPPING_NODSS). Each is a protocol error: plain TCP while the
connection still may (only the first subflow ever: DssFallback), else the subflow is reset with
MP_TCPRST (1 'MPTCP-specific error', 6 'middlebox interference' for missing mappings) and the
rest of the connection goes on. Consumed mappings leave in amortized O(1)."""

from __future__ import annotations

from mptcp_impl.mptcp.ctrl import MptcpConfig
from mptcp_impl.mptcp.options import Dss, TcpRst, find_mptcp, to_tcp_option
from mptcp_impl.tcp.options import UnknownOption
from mptcp_impl.tcp.segment import TcpSegment
from testkit.mptcp_sim import C1, Link, S, client_cfg, two_path_net

from .peer import ACK, RST, data_ack, established_server, mapping, one
from .test_proto_join import KEY
from .test_proto_mp_prio import joined


def resets(box, n: int, f2) -> list:
    """MP_TCPRST reasons of the RSTs we sent on ``f2``'s subflow since ``box.sent[n]``."""
    sub = box.sub_for(f2)
    return [one(s, TcpRst).reason for x, s in box.sent[n:] if x is sub and s.flags & RST]


def two_subflows(**kw):
    box, f = established_server(key=KEY, **kw)
    f2 = joined(box)
    box.feed(f, f.seg(ACK, data_ack(box.conn, 1), mapping(f, 1, 1, 100), payload=b"a" * 100))
    assert box.conn.read() == b"a" * 100
    return box, f, f2


def test_mapping_not_covering_its_segment_resets_the_subflow():
    """Before: a mapping for any subflow sequence within 2**31 was kept; its segment's bytes
    waited for a mapping for ever and the subflow stayed up."""
    box, f, f2 = two_subflows()
    conn = box.conn
    n = len(box.sent)
    # bytes 1..500 of the join carry a mapping of subflow bytes 10001..10500
    box.feed(f2, f2.seg(ACK, data_ack(conn, 1), mapping(f2, 101, 10_001, 500), payload=b"x" * 500))
    box.out()
    assert conn.mib["DSSNoMatchTCP"] == 1
    assert resets(box, n, f2) == [1]  # MP_TCPRST 'MPTCP-specific error'
    assert box.sub_for(f2).closed and not conn.fallback and conn.readable == 0
    # the first subflow goes on
    box.feed(
        f, f.seg(ACK, data_ack(conn, 1), mapping(f, 101, 101, 100), seq=101, payload=b"b" * 100)
    )
    assert conn.read() == b"b" * 100 and "Reset" not in box.kinds()


def test_mapping_not_covering_its_segment_on_the_only_subflow_falls_back():
    """Linux's mptcp_try_fallback: the first subflow, never another one: plain TCP, the byte
    stream intact. Before: the segment's bytes waited for ever (100 of 300 delivered)."""
    box, f = established_server(key=KEY)
    conn = box.conn
    box.feed(f, f.seg(ACK, data_ack(conn, 1), mapping(f, 1, 1, 100), payload=b"a" * 100))
    box.feed(
        f, f.seg(ACK, data_ack(conn, 1), mapping(f, 101, 5_001, 100), seq=101, payload=b"b" * 100)
    )
    box.feed(f, f.seg(ACK, seq=201, payload=b"c" * 100))
    box.advance(0.1)
    assert conn.mib["DSSNoMatchTCP"] == 1 and conn.mib["DssFallback"] == 1 and conn.fallback
    assert conn.read() == b"a" * 100 + b"b" * 100 + b"c" * 100
    assert "Reset" not in box.kinds()


def test_contradicting_mapping_resets_the_subflow():
    """Linux allows replacing a mapping only with an identical one (DSSNotMatching, then the
    subflow is reset): ignoring it left bytes mapped to DSNs the peer no longer meant."""
    box, f, f2 = two_subflows()
    conn = box.conn
    n = len(box.sent)
    box.feed(f2, f2.seg(ACK, mapping(f2, 101, 501, 500), seq=501, payload=b"y" * 500))
    box.feed(f2, f2.seg(ACK, mapping(f2, 901, 501, 500), seq=501, payload=b"y" * 500))
    box.out()
    assert conn.mib["DSSNotMatching"] == 1
    assert resets(box, n, f2) == [1] and box.sub_for(f2).closed and not conn.fallback


def data_without_mapping_can_never_get_one(box, f2) -> None:
    conn = box.conn
    # subflow bytes 1..500 come without a mapping, 501..1000 with their own: no segment will
    # ever map 1..500 now (they were all acknowledged)
    box.feed(f2, f2.seg(ACK, data_ack(conn, 1), payload=b"u" * 500))
    assert not box.sub_for(f2).closed  # it may still come: it waits
    box.feed(
        f2, f2.seg(ACK, data_ack(conn, 1), mapping(f2, 101, 501, 500), seq=501, payload=b"m" * 500)
    )
    box.out()


def test_data_that_can_never_get_a_mapping_resets_the_subflow():
    """Linux's MAPPING_NODSS: reset with 'middlebox interference'. Before: those bytes, and all
    that followed them on the subflow, waited for ever."""
    box, f, f2 = two_subflows()
    conn = box.conn
    n = len(box.sent)
    data_without_mapping_can_never_get_one(box, f2)
    assert resets(box, n, f2) == [6] and box.sub_for(f2).closed
    assert conn.readable == 0 and not conn.fallback and conn.mib["MPRstTx"] >= 1


def test_unmapped_data_filling_the_window_resets_the_subflow():
    """RFC 8684 3.3.1: no mapping within a receive window of data: the subflow is broken."""
    box, f, f2 = two_subflows(config=MptcpConfig(rcv_buf=20_000))
    conn = box.conn
    n = len(box.sent)
    seq = 1
    while not box.sub_for(f2).closed and seq < 40_000:
        box.feed(f2, f2.seg(ACK, data_ack(conn, 1), seq=seq, payload=b"u" * 1000))
        seq += 1000
    assert resets(box, n, f2) == [6]
    assert seq <= 21_001  # at the latest once a window's worth of unmapped bytes was in


def test_data_before_its_mapping_on_the_only_subflow_falls_back_when_it_never_comes():
    box, f = established_server(key=KEY)
    conn = box.conn
    box.feed(f, f.seg(ACK, data_ack(conn, 1), payload=b"1" * 500))
    assert conn.readable == 0 and not conn.fallback
    box.feed(
        f, f.seg(ACK, data_ack(conn, 1), mapping(f, 501, 501, 500), seq=501, payload=b"2" * 500)
    )
    box.advance(0.1)
    assert conn.fallback and conn.mib["DssFallback"] == 1
    assert conn.read() == b"1" * 500 + b"2" * 500


class CountingList(list):
    """A list that counts the elements its removals and insertions shift (what list.pop(0)
    and list.insert cost), so the test measures work, not time."""

    shifted = 0

    def pop(self, i=-1):
        if i != -1 and i != len(self) - 1:
            CountingList.shifted += len(self) - 1 - (i % len(self))
        return super().pop(i)

    def insert(self, i, x):
        CountingList.shifted += max(0, len(self) - i)
        super().insert(i, x)

    def __delitem__(self, k):
        if isinstance(k, slice):
            start, stop, _ = k.indices(len(self))
            CountingList.shifted += len(self) - stop
        else:
            CountingList.shifted += len(self) - 1 - (k % len(self))
        super().__delitem__(k)


def test_consumed_mappings_leave_in_amortized_constant_time():
    """5,000 mappings held while the subflow's first segment is missing, then consumed at once:
    before, each left by list.pop(0) (25 million element moves over the two lists); now the
    head moves and the consumed prefix is cut in batches (about one move per mapping and
    list)."""
    box, f = established_server(key=KEY, wscale=7)
    conn = box.conn
    sub = box.sub_for(f)
    sub._maps = CountingList()
    sub._map_starts = CountingList()
    count, size = 5_000, 100
    data = bytes(i % 251 for i in range(count * size))

    def segment(k: int):
        off = 1 + k * size
        # the second segment carries a mapping of the first two (so mappings come in order)
        m = mapping(f, 1, 1, 2 * size) if k < 2 else mapping(f, off, off, size)
        return f.seg(ACK, m, seq=off, payload=data[off - 1 : off - 1 + size])

    for k in range(1, count):  # the first segment is lost: TCP holds the others
        sub.tcp.receive_segment(segment(k), box.now)
        box.out()  # (our ACKs open the window past the SYN/ACK's 64 KB)
    assert conn.readable == 0 and len(sub._maps) - getattr(sub, "_map_head", 0) == count - 1
    CountingList.shifted = 0
    sub.tcp.receive_segment(segment(0), box.now)
    box.out()
    assert conn.read() == data
    assert CountingList.shifted <= 2 * 2 * count, CountingList.shifted
    assert len(sub._maps) - getattr(sub, "_map_head", 0) <= 1


def test_sim_a_box_stripping_one_mapping_costs_a_subflow_not_the_transfer():
    """In the simulator: a box on the second path strips the mapping (not the DATA_ACK) from
    every segment of one mapping of the client's. Those bytes can never be mapped; before the
    fix they waited for ever on a subflow that kept acknowledging them, so the DATA_ACK never
    passed them and the upload stalled. Now the server resets that subflow (MP_TCPRST 6) once
    the next mapping's bytes are in, and the client sends the bytes again on the first path."""
    net, client, server, p1, p2 = two_path_net(seed=3)
    dsns: list[int] = []
    stripped: list[TcpSegment] = []

    def strip_one_mapping(seg: TcpSegment) -> None:
        if seg.src_port == 5001 or not seg.payload:
            return
        d = next((o for o in find_mptcp(seg.options) if isinstance(o, Dss)), None)
        if d is None or d.dsn is None:
            return
        if d.dsn not in dsns:
            dsns.append(d.dsn)
        if len(dsns) >= 3 and d.dsn == dsns[2]:  # the third mapping sent on this path
            seg.options = [
                o for o in seg.options if not (isinstance(o, UnknownOption) and o.kind == 30)
            ] + [to_tcp_option(Dss(data_ack=d.data_ack, data_ack64=d.data_ack64))]
            stripped.append(seg)

    p1.link, p2.link = Link(20e6, 64_000), Link(10e6, 64_000)  # both paths carry data
    p2.mutate = strip_one_mapping
    conn = net.connect(client, C1, (S, 5001), client_cfg())
    net.run(1.0, stop=lambda: conn._connected)
    data = bytes(i % 241 for i in range(1_500_000))
    conn.send(data)
    conn.close(net.now)
    net.flush(client, conn)
    net.run(30.0, stop=lambda: len(server.rx[id(server.accepted[0])]) >= len(data))
    srv = server.accepted[0]
    assert stripped, "the box never acted"
    assert bytes(server.rx[id(srv)]) == data
    resets = [
        one(seg, TcpRst).reason
        for _t, src, _dst, seg in net.trace
        if src == S and seg.flags & RST and one(seg, TcpRst) is not None
    ]
    assert resets == [6]  # that subflow, 'middlebox interference' (Linux: MAPPING_NODSS)
    assert not srv.fallback and not conn.fallback
