"""DSS checksums and MP_FAIL against a scripted peer (packetdrill dss/ with checksums, mp_fail):
negotiated as Linux does (flag A from either side: both use them), every mapping of ours carries
the right checksum, a wrong one from the peer with a single subflow draws MP_FAIL and the data
goes on until the peer's infinite mapping makes the connection plain TCP; with two subflows the
subflow is reset (MP_FAIL and MP_TCPRST 'middlebox interference'); the peer's MP_FAIL makes us
answer with MP_FAIL and an infinite mapping."""

from __future__ import annotations

import dataclasses
import random

from mptcp_impl.mptcp import crypto
from mptcp_impl.mptcp.ctrl import MptcpConfig
from mptcp_impl.mptcp.options import Dss, MpCapable, MpFail, TcpRst, find_mptcp, to_tcp_option
from mptcp_impl.mptcp.subflow import MP_FAIL_TIMEOUT
from mptcp_impl.tcp.options import UnknownOption
from mptcp_impl.tcp.segment import TcpSegment
from testkit.mptcp_sim import C1, Link, S, client_cfg, two_path_net

from .peer import ACK, PORT, RST, SYN, THEM, US, Box, Flow, data_ack, dss_of, mapping, one
from .test_proto_join import KEY
from .test_proto_mp_prio import joined


def csum_server(config: MptcpConfig | None = None, peer_asks: bool = True) -> tuple[Box, Flow]:
    box = Box(config=config or MptcpConfig())
    f = Flow((THEM, 40000), (US, PORT), KEY)
    (synack,) = box.syn(f, f.seg(SYN, MpCapable(checksum_required=peer_asks)))
    mpc = one(synack, MpCapable)
    lk = mpc.sender_key
    box.feed(f, f.seg(ACK, MpCapable(checksum_required=True, sender_key=KEY, receiver_key=lk)))
    assert box.conn.fully_established and box.conn.checksum
    assert mpc.checksum_required  # flag A back: both use them
    return box, f


def test_dss_checksum_of_sum_is_dss_checksum():
    rng = random.Random(5)
    for n in (0, 1, 2, 3, 1000, 1001, 65535):
        data = rng.randbytes(n)
        dsn, ssn = rng.getrandbits(64), rng.getrandbits(32)
        assert crypto.dss_checksum_of_sum(dsn, ssn, n, crypto.payload_sum(data)) == (
            crypto.dss_checksum(dsn, ssn, n, data)
        )


def test_checksum_negotiated_when_only_we_ask():
    box, f = csum_server(MptcpConfig(checksum=True), peer_asks=False)
    assert box.conn.checksum


def test_our_mappings_carry_valid_checksums():
    box, f = csum_server()
    conn = box.conn
    payload = random.Random(1).randbytes(20_000)
    conn.send(payload)
    segs = [s for s in box.out() if s.payload]
    assert segs
    maps = {}
    for s in segs:
        d = dss_of(s)
        assert d.checksum is not None
        assert d.subflow_seq <= f.rel_seq(s) < d.subflow_seq + d.data_len
        maps[d.dsn] = d
    for d in maps.values():
        off = d.dsn - conn.local_idsn - 1
        assert crypto.dss_checksum_ok(
            d.dsn, d.subflow_seq, d.data_len, payload[off : off + d.data_len], d.checksum
        )


def test_peer_checksum_verified_and_wrong_one_draws_mp_fail_single_subflow():
    box, f = csum_server()
    conn = box.conn
    a, b = b"a" * 500, b"b" * 500
    good = crypto.dss_checksum(f.idsn + 1, 1, 500, a)
    box.feed(f, f.seg(ACK, data_ack(conn, 1), mapping(f, 1, 1, 500, checksum=good), payload=a))
    assert conn.readable == 500 and conn.mib["DataCsumErr"] == 0
    n = len(box.sent)
    bad = crypto.dss_checksum(f.idsn + 501, 501, 500, b) ^ 1
    box.feed(
        f,
        f.seg(ACK, data_ack(conn, 1), mapping(f, 501, 501, 500, checksum=bad), seq=501, payload=b),
    )
    assert conn.mib["DataCsumErr"] == 1
    fails = [o for _, s in box.sent[n:] for o in [one(s, MpFail)] if o is not None]
    assert [o.dsn for o in fails] == [f.idsn + 501] and conn.mib["MPFailTx"] == 1
    assert conn.read() == a + b  # single subflow: the data goes on
    # the peer's answer: its own MP_FAIL, then data with the infinite mapping -> plain TCP
    box.feed(f, f.seg(ACK, MpFail(dsn=f.idsn + 501), data_ack(conn, 1), seq=1001))
    c = b"c" * 300
    inf = Dss(dsn=(f.idsn + 1001), dsn64=True, subflow_seq=0, data_len=0, checksum=0)
    box.feed(f, f.seg(ACK, data_ack(conn, 1), inf, seq=1001, payload=c))
    assert conn.mib["InfiniteMapRx"] == 1 and conn.fallback
    box.feed(f, f.seg(ACK, seq=1301, payload=b"d" * 10))
    assert conn.read() == c + b"d" * 10
    assert conn.mib["MPFailRx"] == 1 and "Reset" not in box.kinds()


def test_wrong_checksum_with_two_subflows_resets_that_subflow():
    box, f = csum_server()
    conn = box.conn
    f2 = joined(box)
    data = b"z" * 400
    bad = crypto.dss_checksum(f.idsn + 1, 1, 400, data) ^ 0xFF
    n = len(box.sent)
    box.feed(f2, f2.seg(ACK, data_ack(conn, 1), mapping(f2, 1, 1, 400, checksum=bad), payload=data))
    rst = [(sub, s) for sub, s in box.sent[n:] if s.flags & RST]
    ((sub, seg),) = rst
    assert sub is box.sub_for(f2)
    assert one(seg, MpFail).dsn == f.idsn + 1 and one(seg, TcpRst).reason == 6
    assert conn.mib["DataCsumErr"] == 1 and conn.mib["MPFailTx"] == 1
    assert conn.readable == 0 and len(conn.subflows) == 1 and not conn.fallback


def test_peer_mp_fail_we_answer_and_send_infinite_mapping():
    box, f = csum_server()
    conn = box.conn
    conn.send(b"x" * 1000)
    box.out()
    box.feed(f, f.seg(ACK, MpFail(dsn=conn.local_idsn + 1), data_ack(conn, 1001), ack=1001))
    assert conn.mib["MPFailRx"] == 1 and conn.mib["MPFailTx"] == 1
    conn.send(b"y" * 1000)
    segs = [s for s in box.out() if s.payload]
    d = dss_of(segs[0])
    assert d.data_len == 0 and d.subflow_seq == 0 and d.dsn == conn.local_idsn + 1001
    assert conn.mib["InfiniteMapTx"] == 1 and conn.fallback
    assert all(not s.options or one(s, Dss) is None for s in segs[1:])  # plain TCP after
    assert b"".join(s.payload for s in segs) == b"y" * 1000


def test_wrong_checksum_on_the_first_mapping_falls_back_at_once():
    """Linux's subflow_can_fallback: no checksum of the peer's has passed yet, so a middlebox
    changed the data from the start: plain TCP, no MP_FAIL."""
    box, f = csum_server()
    conn = box.conn
    a = b"q" * 300
    bad = crypto.dss_checksum(f.idsn + 1, 1, 300, a) ^ 3
    n = len(box.sent)
    box.feed(f, f.seg(ACK, data_ack(conn, 1), mapping(f, 1, 1, 300, checksum=bad), payload=a))
    assert conn.fallback and conn.mib["DataCsumErr"] == 1 and conn.mib["MPFailTx"] == 0
    assert not [s for _, s in box.sent[n:] if one(s, MpFail) is not None]
    box.feed(f, f.seg(ACK, seq=301, payload=b"r" * 10))
    assert conn.read() == a + b"r" * 10


def rst_reasons(box: Box, n: int, flow: Flow) -> list[int]:
    """MP_TCPRST reasons of the RSTs we sent on ``flow``'s subflow since ``box.sent[n]``."""
    sub = box.sub_for(flow)
    return [one(s, TcpRst).reason for x, s in box.sent[n:] if x is sub and s.flags & RST]


def test_mapping_without_checksum_when_negotiated_resets_the_subflow():
    """RFC 8684 3.3: with checksums negotiated, a mapping without one is not valid and the
    receiver MUST reset the subflow. Before: taken and its bytes delivered unchecked."""
    box, f = csum_server()
    conn = box.conn
    n = len(box.sent)
    box.feed(f, f.seg(ACK, data_ack(conn, 1), mapping(f, 1, 1, 500), payload=b"n" * 500))
    assert rst_reasons(box, n, f) == [1]  # MP_TCPRST 'MPTCP-specific error'
    assert conn.readable == 0 and conn.mib["MPRstTx"] == 1
    # it was the only subflow: the connection waits close_timeout for another (Linux's
    # __mptcp_close_ssk starts its tout timer), then ends
    assert conn.state == "ESTABLISHED"
    box.advance(conn.config.close_timeout + 1)
    assert conn.state == "CLOSED"


def test_mapping_without_checksum_on_a_join_resets_only_the_join():
    box, f = csum_server()
    conn = box.conn
    f2 = joined(box)
    n = len(box.sent)
    box.feed(f2, f2.seg(ACK, data_ack(conn, 1), mapping(f2, 1, 1, 400), payload=b"j" * 400))
    assert rst_reasons(box, n, f2) == [1] and box.sub_for(f2).closed
    assert conn.readable == 0 and "Reset" not in box.kinds()
    # the peer sends those bytes again, checksummed, on the first subflow
    good = crypto.dss_checksum(f.idsn + 1, 1, 400, b"j" * 400)
    box.feed(
        f, f.seg(ACK, data_ack(conn, 1), mapping(f, 1, 1, 400, checksum=good), payload=b"j" * 400)
    )
    assert conn.read() == b"j" * 400 and conn.mib["DataCsumErr"] == 0


def test_mapping_with_checksum_when_not_negotiated_resets_the_subflow():
    """Linux's get_mapping_status: a checksum present when none was negotiated is as invalid
    (map_csum_reqd != csum_reqd)."""
    from .peer import established_server

    box, f = established_server(key=KEY)
    conn = box.conn
    assert not conn.checksum
    f2 = joined(box)
    n = len(box.sent)
    box.feed(
        f2,
        f2.seg(ACK, data_ack(conn, 1), mapping(f2, 1, 1, 300, checksum=0x1234), payload=b"k" * 300),
    )
    assert rst_reasons(box, n, f2) == [1] and conn.readable == 0


def mp_fail_sent(box: Box, f: Flow) -> int:
    """A good mapping, then one with a wrong checksum on the only subflow: our MP_FAIL leaves.
    Returns the index in ``box.sent`` after it."""
    conn = box.conn
    a, b = b"a" * 500, b"b" * 500
    good = crypto.dss_checksum(f.idsn + 1, 1, 500, a)
    box.feed(f, f.seg(ACK, data_ack(conn, 1), mapping(f, 1, 1, 500, checksum=good), payload=a))
    bad = crypto.dss_checksum(f.idsn + 501, 501, 500, b) ^ 1
    box.feed(
        f,
        f.seg(ACK, data_ack(conn, 1), mapping(f, 501, 501, 500, checksum=bad), seq=501, payload=b),
    )
    assert conn.mib["DataCsumErr"] == 1 and conn.mib["MPFailTx"] == 1
    return len(box.sent)


def test_unanswered_mp_fail_resets_the_subflow_after_the_fail_timeout():
    """Linux's mptcp_subflow_fail arms fail_tout (TCP_RTO_MAX, 120 s); with no MP_FAIL or
    infinite mapping back by then, mptcp_mp_fail_no_response resets the subflow. Before: the
    MP_FAIL was sent once and the connection then waited for an answer for ever."""
    box, f = csum_server()
    conn = box.conn
    n = mp_fail_sent(box, f)
    box.advance(MP_FAIL_TIMEOUT - 1)
    assert rst_reasons(box, n, f) == [] and not conn.fallback
    box.advance(2)
    assert rst_reasons(box, n, f) == [0]  # MP_TCPRST with Linux's default reason
    assert conn.mib["MPRstTx"] == 1
    box.advance(conn.config.close_timeout + 1)  # (no other subflow came: the close timeout)
    assert conn.state == "CLOSED" and conn.get_timer() is None


def test_mp_fail_answered_by_mp_fail_or_infinite_mapping_stops_the_fail_timeout():
    for answer in ("mp_fail", "infinite_mapping"):
        box, f = csum_server()
        conn = box.conn
        n = mp_fail_sent(box, f)
        if answer == "mp_fail":
            box.feed(f, f.seg(ACK, MpFail(dsn=f.idsn + 501), data_ack(conn, 1), seq=1001))
        else:  # its MP_FAIL was lost: the infinite mapping on its next data answers too
            inf = Dss(dsn=f.idsn + 1001, dsn64=True, subflow_seq=0, data_len=0, checksum=0)
            box.feed(f, f.seg(ACK, data_ack(conn, 1), inf, seq=1001, payload=b"c" * 100))
            assert conn.fallback
        box.advance(2 * MP_FAIL_TIMEOUT)
        assert rst_reasons(box, n, f) == [], answer
        assert conn.state != "CLOSED" and conn.mib["MPRstTx"] == 0, answer


def test_sim_mp_fail_lost_on_the_way_resets_after_the_fail_timeout():
    """In the simulator: a checksum failure on the only subflow; the path loses every MP_FAIL
    the client sends, so the server never answers. The client resets the subflow once
    MP_FAIL_TIMEOUT has passed (before: the connection went on, unanswered, for ever)."""
    net, client, server, p1, p2 = two_path_net(seed=4)
    server.config = MptcpConfig(checksum=True, corrupt_checksum_at=50_000)
    p1.drop = lambda seg: (
        seg.src_port != 5001 and any(isinstance(o, MpFail) for o in find_mptcp(seg.options))
    )
    conn = net.connect(client, C1, (S, 5001), MptcpConfig(endpoints=[], checksum=True))
    net.run(1.0, stop=lambda: conn._connected)
    conn.send(b"hello")
    net.flush(client, conn)
    net.run(net.now + 0.5, exact=True)
    srv = server.accepted[0]
    down = bytes(i % 233 for i in range(200_000))
    srv.send(down)
    net.flush(server, srv)
    net.run(net.now + 5, exact=True)
    assert conn.mib["DataCsumErr"] == 1 and conn.mib["MPFailTx"] == 1
    assert srv.mib["MPFailRx"] == 0  # lost on the way
    t_fail = net.now
    net.run(t_fail + MP_FAIL_TIMEOUT - 10, exact=True)
    assert conn.state != "CLOSED" and conn.mib["MPRstTx"] == 0
    net.run(t_fail + MP_FAIL_TIMEOUT + 10, exact=True)
    rsts = [
        (t, one(seg, TcpRst).reason)
        for t, src, _dst, seg in net.trace
        if src == C1 and seg.flags & RST and one(seg, TcpRst) is not None
    ]
    assert [r for _t, r in rsts] == [0] and conn.mib["MPRstTx"] == 1
    net.run(net.now + conn.config.close_timeout + 1, exact=True)
    assert conn.state == "CLOSED"


def test_sim_a_box_dropping_checksums_on_one_path_costs_that_subflow():
    """In the simulator, checksums negotiated: a box on the second path re-encodes the
    client's mappings without their checksum. The server resets that subflow (MP_TCPRST 1)
    and the bytes come again on the first path, intact (before: taken unchecked)."""
    net, client, server, p1, p2 = two_path_net(seed=6)
    p1.link, p2.link = Link(20e6, 64_000), Link(10e6, 64_000)  # both paths carry data
    server.config = MptcpConfig(checksum=True)
    bare: list[TcpSegment] = []

    def drop_checksum(seg: TcpSegment) -> None:
        if seg.src_port == 5001 or not seg.payload:
            return
        d = next((o for o in find_mptcp(seg.options) if isinstance(o, Dss)), None)
        if d is None or d.checksum is None:
            return
        seg.options = [
            o for o in seg.options if not (isinstance(o, UnknownOption) and o.kind == 30)
        ] + [to_tcp_option(dataclasses.replace(d, checksum=None))]
        bare.append(seg)

    p2.mutate = drop_checksum
    cfg = client_cfg()
    cfg.checksum = True
    conn = net.connect(client, C1, (S, 5001), cfg)
    net.run(1.0, stop=lambda: conn._connected)
    data = bytes(i % 229 for i in range(1_000_000))
    conn.send(data)
    conn.close(net.now)
    net.flush(client, conn)
    net.run(30.0, stop=lambda: len(server.rx[id(server.accepted[0])]) >= len(data))
    srv = server.accepted[0]
    assert bare, "the box never acted"
    assert bytes(server.rx[id(srv)]) == data
    reasons = [
        one(seg, TcpRst).reason
        for _t, src, _dst, seg in net.trace
        if src == S and seg.flags & RST and one(seg, TcpRst) is not None
    ]
    assert reasons and set(reasons) == {1}
    assert srv.mib["DataCsumErr"] == 0 and not srv.fallback


def test_plain_acks_after_the_peers_mp_fail_still_get_the_infinite_mapping():
    """After its MP_FAIL the peer's ACKs carry no DSS (it is falling back): they are the
    exchange under way, not a silent fallback (Subflow.PLAIN_ACKS_FALLBACK). With our next data
    held back (a full window or local queue) three of them acknowledged what was in flight
    before it: the infinite mapping must still go out (Linux counts InfiniteMapRx), not
    plain TCP without a word."""
    box, f = csum_server()
    conn = box.conn
    conn.send(b"x" * 4000)
    box.out()
    box.feed(f, f.seg(ACK, MpFail(dsn=conn.local_idsn + 1), data_ack(conn, 1001), ack=1001))
    for acked in (2001, 3001, 4001):
        box.feed(f, f.seg(ACK, ack=acked))
    # not followed as a silent fallback: the infinite mapping is still owed to the next data
    assert conn.mib["DssFallback"] == 0 and not conn.fallback
    assert conn.mib["MPFailTx"] == 1 and conn._infinite_map_pending


def test_infinite_mapping_waits_for_a_mapping_none_of_whose_bytes_has_left():
    """The infinite mapping starts a new mapping (Linux's mptcp_sendmsg_frag marks new data
    only). A Linux receiver reads the rest of a mapping it holds without looking at the DSS of
    the segments inside it: an infinite mapping there goes unseen, the segments after it carry
    no DSS and Linux falls back on missing DSS (DssFallback, no InfiniteMapRx). Before: the
    answer to MP_FAIL put it on the next segment with payload, here the RTO's retransmission
    from the middle of a mapping (live, with TCP small queues: the rest of a mapping held back
    by a full local queue)."""
    box, f = csum_server()
    conn = box.conn
    conn.send(b"x" * 6000)
    first = [s for s in box.out() if s.payload]
    (mapped,) = {(d.dsn, d.data_len) for d in map(dss_of, first)}
    assert mapped == (conn.local_idsn + 1, 6000) and len(first) > 2
    # the peer acknowledges two segments and sends MP_FAIL; the rest of its ACKs are lost
    upto = 1 + sum(len(s.payload) for s in first[:2])
    box.feed(f, f.seg(ACK, MpFail(dsn=conn.local_idsn + 1), data_ack(conn, 1), ack=upto))
    assert conn.mib["MPFailTx"] == 1 and conn._infinite_map_pending
    rxt = [s for s in box.advance(1.5) if s.payload]  # the RTO
    assert rxt and f.rel_seq(rxt[0]) == upto
    assert all((dss_of(s).dsn, dss_of(s).data_len) == mapped for s in rxt)
    assert conn.mib["InfiniteMapTx"] == 0 and not conn.fallback
    box.feed(f, f.seg(ACK, data_ack(conn, 6001), ack=6001))
    conn.send(b"y" * 3000)
    new = [s for s in box.out() if s.payload]
    d = dss_of(new[0])
    assert d.data_len == 0 and d.dsn == conn.local_idsn + 6001 and f.rel_seq(new[0]) == 6001
    assert conn.mib["InfiniteMapTx"] == 1 and conn.fallback
    assert all(not s.options or one(s, Dss) is None for s in new[1:])
