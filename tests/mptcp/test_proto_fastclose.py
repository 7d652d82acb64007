"""MP_FASTCLOSE and MP_TCPRST against a scripted peer (packetdrill fastclose/, mp_reset/): our
abort is Linux's fastclose (an RST per subflow with MP_FASTCLOSE carrying the peer's key, and
MP_TCPRST); the peer's MP_FASTCLOSE on an ACK or on an RST counts only with our key; every
RST we send on an MPTCP subflow carries MP_TCPRST; the peer's reason code is kept."""

from __future__ import annotations

from mptcp_impl.mptcp.options import FastClose, TcpRst

from .peer import ACK, RST, data_ack, one, raw_lengths
from .test_proto_join import KEY, server
from .test_proto_mp_prio import joined


def rsts(pairs) -> list:
    return [(sub, seg) for sub, seg in pairs if seg.flags & RST]


def test_abort_sends_fastclose_with_the_peers_key_on_every_subflow():
    box, f = server()
    conn = box.conn
    joined(box)
    conn.send(b"x" * 1000)
    box.out_pairs()
    conn.abort(box.now)
    out = rsts(box.out_pairs())
    assert len(out) == 2
    for _sub, seg in out:
        fc = one(seg, FastClose)
        assert fc is not None and fc.receiver_key == KEY  # the receiver's key
        assert one(seg, TcpRst) is not None
        assert sorted(raw_lengths(seg)) == [4, 12]
    assert conn.mib["MPFastcloseTx"] == 2 and conn.mib["MPRstTx"] == 2


def test_fastclose_on_ack_with_our_key_resets_every_subflow():
    box, f = server()
    conn = box.conn
    f2 = joined(box)
    box.feed(f, f.seg(ACK, FastClose(receiver_key=conn.local_key), data_ack(conn, 1)))
    pairs = box.sent[-4:]
    out = rsts(pairs)
    assert {sub.remote for sub, _ in out} == {f.local, f2.local}
    assert all(one(seg, TcpRst) is not None and one(seg, FastClose) is None for _, seg in out)
    assert conn.mib["MPFastcloseRx"] == 1
    assert "Reset" in box.kinds() and conn.state == "CLOSED"


def test_fastclose_with_a_wrong_key_is_ignored():
    box, f = server()
    conn = box.conn
    n = len(box.sent)
    box.feed(f, f.seg(ACK, FastClose(receiver_key=KEY), data_ack(conn, 1)))  # its own key
    box.feed(f, f.seg(ACK, FastClose(receiver_key=conn.local_key ^ 1), data_ack(conn, 1)))
    assert not rsts(box.sent[n:])
    assert conn.mib["MPFastcloseRx"] == 0 and "Reset" not in box.kinds()
    conn.send(b"still here")
    assert [s for _, s in box.out_pairs() if s.payload]


def test_fastclose_on_rst_closes_the_connection_and_resets_the_others():
    box, f = server()
    conn = box.conn
    f2 = joined(box)
    n = len(box.sent)
    box.feed(f2, f2.seg(RST | ACK, FastClose(receiver_key=conn.local_key), TcpRst(reason=0), ack=1))
    out = rsts(box.sent[n:])
    assert [sub.remote for sub, _ in out] == [f.local]  # no RST answers the RST
    assert conn.mib["MPFastcloseRx"] == 1 and conn.mib["MPRstRx"] == 1
    assert "Reset" in box.kinds() and conn.state == "CLOSED"


def test_rst_with_wrong_fastclose_key_closes_only_its_subflow():
    box, f = server()
    conn = box.conn
    f2 = joined(box)
    box.feed(f2, f2.seg(RST | ACK, FastClose(receiver_key=KEY), TcpRst(reason=5), ack=1))
    assert conn.mib["MPFastcloseRx"] == 0 and conn.mib["MPRstRx"] == 1
    assert box.sub_for(f2).peer_rst_reason == 5  # unacceptable performance
    assert len(conn.subflows) == 1 and "Reset" not in box.kinds()
    conn.send(b"on the initial subflow")
    assert [s for _, s in box.out_pairs() if s.payload]


def test_every_rst_of_ours_carries_mp_tcprst():
    """A subflow reset for any reason (here: the connection's abort before any data)."""
    b2, f = server()
    b2.conn.initial.tcp.abort(b2.now)
    (rst,) = [s for _, s in b2.out_pairs() if s.flags & RST]
    r = one(rst, TcpRst)
    assert r is not None and r.reason == 0 and one(rst, FastClose) is None
    assert b2.conn.mib["MPRstTx"] == 1


def test_abort_on_ack_form():
    """RFC 8684 3.5's other form: MP_FASTCLOSE on an ACK of one subflow, RSTs (MP_TCPRST, no
    MP_FASTCLOSE) on the others; the peer's RST ends it."""
    box, f = server()
    conn = box.conn
    f2 = joined(box)
    conn.abort(box.now, on_ack=True)
    pairs = box.out_pairs()
    fc = [(sub, s) for sub, s in pairs if one(s, FastClose) is not None]
    ((sub, seg),) = fc
    assert not seg.flags & RST and seg.flags & ACK and one(seg, FastClose).receiver_key == KEY
    others = rsts(pairs)
    assert [s for s, _ in others] == [x for x in (box.sub_for(f), box.sub_for(f2)) if x is not sub]
    assert one(others[0][1], FastClose) is None and one(others[0][1], TcpRst) is not None
    assert conn.mib["MPFastcloseTx"] == 1
    peer = f if sub is box.sub_for(f) else f2
    box.feed(peer, peer.seg(RST | ACK, TcpRst(reason=0), seq=1, ack=1))
    assert "Reset" in box.kinds() and conn.state == "CLOSED"


def test_abort_on_ack_form_reset_after_linger_without_answer():
    box, f = server()
    conn = box.conn
    conn.abort(box.now, on_ack=True)
    box.out_pairs()
    out = box.advance(2.0)
    (rst,) = [s for s in out if s.flags & RST]
    assert one(rst, FastClose) is not None and conn.mib["MPFastcloseTx"] == 2
