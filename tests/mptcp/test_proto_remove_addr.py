"""REMOVE_ADDR against a scripted peer (packetdrill remove_addr/): the peer removes an address
(its join's id, or id 0: the initial subflow) and we reset our subflows to it (RmAddr), the
data they held going on the others; we remove one of ours (RmAddrTx on a subflow that stays,
RmSubflow for each of ours reset); an unknown id is counted and changes nothing."""

from __future__ import annotations

from mptcp_impl.mptcp import crypto
from mptcp_impl.mptcp.options import Dss, MpJoinSynAck, RemoveAddr, TcpRst

from .peer import ACK, RST, SYN, data_ack, one
from .test_proto_join import KEY, client_joining, server, start_join
from .test_proto_mp_prio import joined


def test_peer_removes_its_joined_address():
    box, f = server()
    conn = box.conn
    f2 = joined(box, addr_id=1)
    sub2 = box.sub_for(f2)
    conn.send(b"r" * 40_000)
    box.out_pairs()
    held = sub2.bytes_sent
    assert held > 0
    n = len(box.sent)
    box.feed(f, f.seg(ACK, RemoveAddr((1,)), data_ack(conn, 1)))
    out = box.sent[n:]
    rst = [(s, seg) for s, seg in out if seg.flags & RST]
    assert [s for s, _ in rst] == [sub2] and one(rst[0][1], TcpRst) is not None
    assert conn.mib["RmAddr"] == 1 and conn.mib["RmSubflow"] == 0
    assert conn.subflows == [box.sub_for(f)]
    # what the removed subflow held goes on the initial one, once it has room
    box.feed(f, f.seg(ACK, data_ack(conn, 1), ack=1 + box.sub_for(f).bytes_sent))
    assert conn.mib["MPTCPRetrans"] >= 1
    ev = [e.as_dict() for e in iter(conn.next_pm_event, None)]
    assert [e["rem_id"] for e in ev if e["type"] == "removed"] == [1]
    assert [e["error"] for e in ev if e["type"] == "sub_closed"] == [None]


def test_peer_removes_address_id_0_the_initial_subflow():
    box, f = server()
    conn = box.conn
    f2 = joined(box, addr_id=1)
    n = len(box.sent)
    box.feed(f2, f2.seg(ACK, RemoveAddr((0,)), data_ack(conn, 1)))
    rst = [(s, seg) for s, seg in box.sent[n:] if seg.flags & RST]
    assert [s for s, _ in rst] == [box.sub_for(f)]
    assert conn.subflows == [box.sub_for(f2)] and conn.mib["RmAddr"] == 1
    conn.send(b"on the join")
    assert [s for s, seg in box.out_pairs() if seg.payload] == [box.sub_for(f2)]
    assert "Reset" not in box.kinds()


def test_peer_removes_an_unknown_id():
    box, f = server()
    conn = box.conn
    joined(box, addr_id=1)
    n = len(box.sent)
    box.feed(f, f.seg(ACK, RemoveAddr((7, 8)), data_ack(conn, 1)))
    assert not [s for _, s in box.sent[n:] if s.flags & RST]
    assert conn.mib["RmAddr"] == 2 and len(conn.subflows) == 2


def test_we_remove_our_endpoint_rm_addr_then_its_subflow_reset():
    box, f, ev = client_joining()
    conn = box.conn
    f2, js = start_join(box, ev)
    hm = crypto.join_synack_hmac(KEY, conn.local_key, 0xB2, js.nonce)
    box.feed(f2, f2.seg(SYN | ACK, MpJoinSynAck(hmac64=hm, nonce=0xB2, addr_id=0)))
    box.feed(f2, f2.seg(ACK, Dss(data_ack=conn.local_idsn + 11, data_ack64=True)))
    sub1, sub2 = box.sub_for(f), box.sub_for(f2)
    assert sub2.usable and sub2.local_id == 2
    n = len(box.sent)
    assert conn.remove_address("10.0.0.4", box.now)
    out = box.out_pairs()
    rm = [(s, seg) for s, seg in box.sent[n:] if one(seg, RemoveAddr) is not None]
    assert [s for s, _ in rm] == [sub1]  # on the subflow that stays
    assert one(rm[0][1], RemoveAddr).addr_ids == (2,)
    assert [s for s, seg in out if seg.flags & RST] == [sub2]
    assert conn.mib["RmAddrTx"] == 1 and conn.mib["RmSubflow"] == 1
    assert conn.subflows == [sub1]


def test_we_flush_several_ids_in_one_option():
    box, f = server()
    conn = box.conn
    joined(box, addr_id=1)
    n = len(box.sent)
    assert conn.remove_addresses([3, 4, 5], box.now)
    box.out_pairs()
    (opt,) = [o for _, s in box.sent[n:] for o in [one(s, RemoveAddr)] if o is not None]
    assert opt.addr_ids == (3, 4, 5) and conn.mib["RmAddrTx"] == 1
    assert len(conn.subflows) == 2  # no subflow of ours had those ids
