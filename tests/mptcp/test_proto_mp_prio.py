"""Backup subflows and MP_PRIO against a scripted peer (packetdrill mp_prio/): a join with the B
flag, the peer's MP_PRIO either way mid-connection, ours (MPPrioTx) on the subflow it concerns,
and Linux's rule that a backup subflow stays idle while another is active, however full."""

from __future__ import annotations

from mptcp_impl.mptcp import crypto
from mptcp_impl.mptcp.ctrl import Endpoint, Limits, MptcpConfig
from mptcp_impl.mptcp.options import Dss, MpJoinAck, MpJoinSyn, MpJoinSynAck, MpPrio

from .peer import ACK, PORT, RST, SYN, THEM2, Box, Flow, data_ack, one, raw_lengths
from .test_proto_join import KEY, RA, client_joining, server, start_join


def joined(box: Box, port: int = 40001, backup: bool = False, addr_id: int = 1) -> Flow:
    """The peer joins from its second address (MP_JOIN B flag = ``backup``); the join is
    complete and the subflow usable."""
    conn = box.conn
    f2 = Flow((THEM2, port), box.conn.initial.local, KEY, isn=0x30000000)
    (synack,) = box.syn(
        f2, f2.seg(SYN, MpJoinSyn(token=conn.local_token, nonce=RA, addr_id=addr_id, backup=backup))
    )
    ja = one(synack, MpJoinSynAck)
    box.feed(f2, f2.seg(ACK, MpJoinAck(crypto.join_ack_hmac(KEY, conn.local_key, RA, ja.nonce))))
    box.feed(f2, f2.seg(ACK, data_ack(conn, 1)))
    assert box.sub_for(f2).usable
    return f2


def carriers(box: Box, pairs) -> set[str]:
    return {sub.remote[0] for sub, seg in pairs if seg.payload}


def test_join_with_backup_flag_stays_idle_while_initial_is_usable():
    box, f = server()
    conn = box.conn
    f2 = joined(box, backup=True)
    sub2 = box.sub_for(f2)
    assert conn.mib["MPJoinSynBackupRx"] == 1 and sub2.peer_backup
    conn.send(b"d" * 300_000)  # more than the initial subflow's window: still not on the backup
    pairs = box.out_pairs()
    assert carriers(box, pairs) == {f.local[0]}
    assert sub2.bytes_sent == 0
    assert sub2.info()["backup"]


def test_peer_mp_prio_switches_both_ways_mid_connection():
    box, f = server()
    conn = box.conn
    f2 = joined(box)
    sub1, sub2 = box.sub_for(f), box.sub_for(f2)
    # the peer asks for the initial subflow to be backup: new data only on the join
    box.feed(f, f.seg(ACK, MpPrio(backup=True), data_ack(conn, 1)))
    assert conn.mib["MPPrioRx"] == 1 and sub1.peer_backup
    conn.send(b"a" * 50_000)
    pairs = box.out_pairs()
    assert carriers(box, pairs) == {THEM2}
    assert sub1.bytes_sent == 0
    # and back: the initial subflow normal again, the join backup
    box.feed(f, f.seg(ACK, MpPrio(backup=False), data_ack(conn, 1)))
    box.feed(f2, f2.seg(ACK, MpPrio(backup=True), data_ack(conn, 1)))
    assert conn.mib["MPPrioRx"] == 3 and sub2.peer_backup and not sub1.peer_backup
    # both subflows' data acknowledged: room on both, new data only on the initial one
    acked = conn.snd_nxt - conn.local_idsn
    n1, n2 = sub1.bytes_sent, sub2.bytes_sent
    box.feed(f2, f2.seg(ACK, data_ack(conn, acked), ack=1 + n2))
    box.feed(f, f.seg(ACK, data_ack(conn, acked), ack=1 + n1))
    assert sub1.bytes_sent > n1 and sub2.bytes_sent == n2
    ev = [e.as_dict() for e in iter(conn.next_pm_event, None) if e.type == "priority"]
    assert [e["backup"] for e in ev] == [1, 0, 1] and not any(e["local"] for e in ev)


def test_our_mp_prio_on_the_subflow_it_concerns():
    box, f = server()
    conn = box.conn
    f2 = joined(box)
    sub2 = box.sub_for(f2)
    assert conn.set_backup(sub2, True, box.now)
    pairs = box.out_pairs()
    prios = [(sub, seg) for sub, seg in pairs if one(seg, MpPrio) is not None]
    ((sub, seg),) = prios
    assert sub is sub2 and not seg.payload
    o = one(seg, MpPrio)
    assert o.backup and o.addr_id is None and 3 in raw_lengths(seg)  # length 3 (Linux's)
    assert conn.mib["MPPrioTx"] == 1
    conn.send(b"c" * 200_000)
    box.out_pairs()
    assert sub2.bytes_sent == 0  # our own backup: idle too
    assert conn.set_endpoint_backup(sub2.local[0], False, box.now) == 2  # both from our address
    pairs = box.out_pairs()
    assert sum(1 for _, s in pairs if one(s, MpPrio) is not None) == 2
    assert conn.mib["MPPrioTx"] == 3


def test_backup_takes_over_when_the_active_subflow_goes():
    box, f = server()
    conn = box.conn
    f2 = joined(box, backup=True)
    sub2 = box.sub_for(f2)
    conn.send(b"e" * 20_000)
    box.out_pairs()
    assert sub2.bytes_sent == 0
    # the initial subflow is reset by the peer: the backup carries everything
    box.feed(f, f.seg(RST | ACK, ack=1))
    assert sub2.bytes_sent > 0
    assert conn.state != "CLOSED"


def test_backup_takes_over_when_the_active_subflow_is_stale():
    cfg = MptcpConfig(limits=Limits(), stale_loss_cnt=2)
    box, f = server()
    box.conn.config = cfg
    conn = box.conn
    f2 = joined(box, backup=True)
    sub1, sub2 = box.sub_for(f), box.sub_for(f2)
    conn.send(b"f" * 30_000)
    box.out_pairs()
    for _ in range(40):  # the initial subflow's data is never acknowledged: RTOs
        box.advance(1.0)
        if sub1.stale:
            break
    assert sub1.stale and sub2.bytes_sent > 0


def test_our_backup_endpoint_joins_with_b_flag():
    box, f, ev = client_joining()
    assert not ev.backup
    cfg = MptcpConfig(endpoints=[Endpoint("10.0.0.4", frozenset({"subflow", "backup"}), 2)])
    box.conn.config = cfg
    ev.backup = True
    f2, js = start_join(box, ev)
    assert js.backup
    conn = box.conn
    sub2 = box.sub_for(f2)
    hm = crypto.join_synack_hmac(KEY, conn.local_key, 0xB1, js.nonce)
    box.feed(f2, f2.seg(SYN | ACK, MpJoinSynAck(hmac64=hm, nonce=0xB1, addr_id=0)))
    box.feed(f2, f2.seg(ACK, Dss(data_ack=conn.local_idsn + 11, data_ack64=True)))
    assert sub2.usable and sub2.backup
    conn.send(b"g" * 100_000)
    box.out_pairs()
    assert sub2.bytes_sent == 0
    assert PORT == f2.local[1]
