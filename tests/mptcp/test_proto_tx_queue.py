"""The sender's side of issue 22: mappings grown in place while unsent (Linux's
mptcp_sendmsg_frag), and the edge's local-queue room (TCP small queues, ``TcpConnection.tx_room``)
seen by the scheduler, so that data a full queue cannot take stays with the connection."""

from __future__ import annotations

from mptcp_impl.mptcp.ctrl import MptcpConfig

from .peer import ACK, data_ack, dss_of, established_server
from .test_proto_join import KEY
from .test_proto_mp_prio import joined


def _mappings(segs) -> list[tuple[int, int]]:
    out = []
    for s in segs:
        d = dss_of(s)
        if s.payload and d is not None and d.dsn is not None:
            if not out or out[-1] != (d.dsn, d.data_len):
                out.append((d.dsn, d.data_len))
    return out


def test_contiguous_pushes_grow_the_unsent_mapping():
    """Before: each push was a mapping of its own, and no segment or GSO batch crosses a
    mapping: 3 pushes of 1000 bytes left as 3 segments of 1000 bytes."""
    box, f = established_server(key=KEY)
    sub = box.sub_for(f)
    dsn = box.conn.snd_nxt
    for i in range(3):
        assert sub.push(dsn + 1000 * i, bytes([i]) * 1000) == 1000
    segs = [s for _x, s in box.out_pairs() if s.payload]
    assert _mappings(segs) == [(dsn, 3000)]
    assert sum(len(s.payload) for s in segs) == 3000 and len(segs) <= 3000 // sub.tcp.mss + 1
    # once a byte of it left, the mapping is frozen: the next push is a new mapping
    assert sub.push(dsn + 3000, b"x" * 500) == 500
    assert _mappings([s for _x, s in box.out_pairs()]) == [(dsn + 3000, 500)]


def test_a_mapping_grows_only_with_contiguous_dsns_and_up_to_max_mapping():
    box, f = established_server(key=KEY, config=MptcpConfig(max_mapping=2500))
    sub = box.sub_for(f)
    dsn = box.conn.snd_nxt
    sub.push(dsn, b"a" * 1000)
    sub.push(dsn + 5000, b"b" * 1000)  # not contiguous at the data level: a new mapping
    sub.push(dsn + 6000, b"c" * 1000)  # grows the second one
    sub.push(dsn + 7000, b"d" * 1000)  # 3000 > max_mapping: a new one
    assert _mappings([s for _x, s in box.out_pairs()]) == [
        (dsn, 1000),
        (dsn + 5000, 2000),
        (dsn + 7000, 1000),
    ]


def test_with_dss_checksums_each_push_keeps_its_own_mapping():
    """The checksum covers the mapping as recorded at the push: no growing."""
    box, f = established_server(key=KEY, config=MptcpConfig(checksum=True))
    assert box.conn.checksum
    sub = box.sub_for(f)
    dsn = box.conn.snd_nxt
    sub.push(dsn, b"a" * 1000)
    sub.push(dsn + 1000, b"b" * 1000)
    segs = [s for _x, s in box.out_pairs()]
    assert _mappings(segs) == [(dsn, 1000), (dsn + 1000, 1000)]
    assert all(dss_of(s).checksum is not None for s in segs if s.payload)


def test_a_full_local_queue_keeps_new_data_for_the_subflow_that_has_room():
    """The edge gives each subflow the room left in its host queue (``tx_room``). A subflow
    without room gets no new data from the scheduler and sends none; the other carries it.
    Before: a subflow's queue could take without bound (1000-packet shaping queues filled,
    RTT x10, tail drops), and what one subflow held blocked the connection's send buffer."""
    box, f = established_server(key=KEY)
    f2 = joined(box)
    conn = box.conn
    s1, s2 = box.sub_for(f), box.sub_for(f2)
    box.feed(f, f.seg(ACK, data_ack(conn, 1)))
    box.feed(f2, f2.seg(ACK, data_ack(conn, 1)))
    s1.tcp.tx_room = 0
    s2.tcp.tx_room = 4000
    assert s1.space <= 0 < s2.space <= 4000
    conn.send(bytes(50_000))
    pairs = box.out_pairs()
    by = {id(s1): 0, id(s2): 0}
    for x, s in pairs:
        by[id(x)] += len(s.payload)
    assert by[id(s1)] == 0
    # about the room given, never more than one segment over it
    assert 4000 <= by[id(s2)] < 4000 + s2.tcp.mss
    assert s1.tcp.unsent == 0  # nothing parked on the subflow that cannot send
    assert conn.snd_nxt - conn.snd_una == by[id(s2)]  # the rest waits at the connection
