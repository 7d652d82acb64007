"""MP_JOIN against a scripted peer (packetdrill mp_join/): HMACs, 4th ACK, refusals and their
MP_TCPRST and counters, the joiner's wait for the 4th ACK."""

from __future__ import annotations

import ipaddress

from mptcp_impl.mptcp import crypto
from mptcp_impl.mptcp.connection import OpenSubflow
from mptcp_impl.mptcp.ctrl import Endpoint, Limits, MptcpConfig
from mptcp_impl.mptcp.options import (
    Dss,
    MpCapable,
    MpJoinAck,
    MpJoinSyn,
    MpJoinSynAck,
    TcpRst,
)

from .peer import ACK, PORT, PSH, RST, SYN, THEM, THEM2, US, Box, Flow, dss_of, mp, one, raw_lengths

KEY = 0x1111222233334444
RA = 0xA1A2A3A4
RB = 0xB1B2B3B4
US2 = "10.0.0.4"


def server(limits: Limits | None = None) -> tuple[Box, Flow]:
    box = Box(config=MptcpConfig(limits=limits or Limits()))
    f = Flow((THEM, 40000), (US, PORT), KEY)
    (synack,) = box.syn(f, f.seg(SYN, MpCapable()))
    lk = one(synack, MpCapable).sender_key
    box.feed(f, f.seg(ACK, MpCapable(sender_key=KEY, receiver_key=lk)))
    assert box.conn.fully_established
    return box, f


def join_syn(box: Box, port: int, nonce: int = RA, token: int | None = None):
    f2 = Flow((THEM2, port), (US, PORT), KEY, isn=0x30000000)
    tok = box.conn.local_token if token is None else token
    out = box.syn(f2, f2.seg(SYN, MpJoinSyn(token=tok, nonce=nonce, addr_id=1)))
    return f2, out


def test_server_join_hmacs_and_4th_ack_with_data_ack():
    box, f = server()
    conn = box.conn
    f2, out = join_syn(box, 40001)
    (synack,) = out
    assert synack.flags == SYN | ACK and raw_lengths(synack) == [16]
    ja = one(synack, MpJoinSynAck)
    assert ja.hmac64 == crypto.join_synack_hmac(conn.local_key, KEY, ja.nonce, RA)
    assert conn.mib["MPJoinSynRx"] == 1
    hm = crypto.join_ack_hmac(KEY, conn.local_key, RA, ja.nonce)
    third = f2.seg(ACK, MpJoinAck(hm))
    assert raw_lengths(third) == [24]
    out = box.feed(f2, third)
    assert conn.mib["MPJoinAckRx"] == 1
    (fourth,) = out
    assert fourth.flags == ACK and not fourth.payload
    assert one(fourth, MpJoinAck) is None
    d = dss_of(fourth)
    assert d is not None and d.data_ack == f.idsn + 1 and d.dsn is None
    sub2 = box.sub_for(f2)
    assert sub2.usable
    # the joined subflow carries data (64-bit DSN, its own subflow sequence from 1)
    box.feed(f2, f2.seg(ACK, Dss(data_ack=conn.local_idsn + 1, data_ack64=True), win=65535))
    conn.send(b"j" * 100_000)
    pairs = box.out_pairs()
    on2 = [s for sub, s in pairs if sub is sub2 and s.payload]
    assert on2, "no data on the joined subflow"
    d = dss_of(on2[0])
    assert d.dsn64 and d.subflow_seq == f2.rel_seq(on2[0])


def test_server_join_bad_ack_hmac_is_reset_and_counted():
    box, f = server()
    conn = box.conn
    f2, (synack,) = join_syn(box, 40001)
    ja = one(synack, MpJoinSynAck)
    bad = bytearray(crypto.join_ack_hmac(KEY, conn.local_key, RA, ja.nonce))
    bad[0] ^= 1
    out = box.feed(f2, f2.seg(ACK, MpJoinAck(bytes(bad))))
    (rst,) = out
    assert rst.flags & RST
    r = one(rst, TcpRst)
    assert r is not None and r.reason == 1
    assert conn.mib["MPJoinAckHMacFailure"] == 1 and conn.mib["MPJoinAckRx"] == 0
    assert conn.mib["MPRstTx"] == 1
    assert all(s.local != f2.remote or s.remote != f2.local for s in conn.subflows)
    assert not any(k == "Reset" for k in box.kinds())


def test_server_join_third_ack_without_mp_join_is_reset():
    box, f = server()
    conn = box.conn
    f2, _ = join_syn(box, 40001)
    (rst,) = box.feed(f2, f2.seg(ACK))
    assert rst.flags & RST and one(rst, TcpRst) is not None
    assert conn.mib["MPJoinAckHMacFailure"] == 1


def test_server_join_unknown_token_rst_with_mp_tcprst():
    """packetdrill mp_join_server_bad_token: R. ack 1 <mp_reset 1>."""
    box, f = server()
    f2, out = join_syn(box, 40001, token=box.conn.local_token ^ 1)
    (rst,) = out
    assert rst.flags == RST | ACK and f2.rel_ack(rst) == 1
    r = one(rst, TcpRst)
    assert r is not None and r.reason == 1
    assert box.registry.mib["MPJoinNoTokenFound"] == 1


def test_server_join_refused_before_fully_established():
    box = Box()
    f = Flow((THEM, 40000), (US, PORT), KEY)
    box.syn(f, f.seg(SYN, MpCapable()))
    conn = box.conn
    assert not conn.fully_established
    f2, out = join_syn(box, 40001)
    (rst,) = out
    assert rst.flags & RST and one(rst, TcpRst).reason == 3  # Linux: MPTCP_RST_EPROHIBIT
    assert len(conn.subflows) == 1 and conn.mib["MPJoinRejected"] == 1


def third_ack(box: Box, f2: Flow, synack, nonce: int = RA):
    ja = one(synack, MpJoinSynAck)
    hm = crypto.join_ack_hmac(KEY, box.conn.local_key, nonce, ja.nonce)
    return box.feed(f2, f2.seg(ACK, MpJoinAck(hm)))


def test_server_join_limit():
    """Linux's rule: at the SYN only completed joins count (accept_subflow); the slot is taken
    by the valid third ACK (mptcp_finish_join), so of two concurrent joins with one slot left
    the second is refused at its third ACK (MPJoinRejected, RST 'administratively
    prohibited'), and once the limit is reached a SYN is refused at once."""
    box, f = server(Limits(subflows=1))
    conn = box.conn
    f2, (synack2,) = join_syn(box, 40001)
    assert synack2.flags == SYN | ACK
    f3, (synack3,) = join_syn(box, 40002)
    assert synack3.flags == SYN | ACK, "a join without its third ACK took the only slot"
    (fourth,) = third_ack(box, f2, synack2)
    assert dss_of(fourth).data_ack is not None
    (rst,) = third_ack(box, f3, synack3)
    assert rst.flags & RST and one(rst, TcpRst).reason == 3
    assert conn.mib["MPJoinRejected"] == 1 and conn.mib["MPJoinAckRx"] == 1
    f4, (rst4,) = join_syn(box, 40003)
    assert rst4.flags & RST and one(rst4, TcpRst).reason == 3
    assert conn.mib["MPJoinRejected"] == 2
    assert len([s for s in conn.subflows if s.usable]) == 2


def test_server_half_open_join_holds_no_slot():
    """A join SYN whose third ACK never comes (lost, or a SYN with a guessed token) must not
    keep the only slot for the minutes its SYN/ACK retries last: another join completes, and
    the half-open one timing out frees nothing it never took."""
    box, f = server(Limits(subflows=1))
    conn = box.conn
    f2, (synack2,) = join_syn(box, 40001)  # never completed
    f3, (synack3,) = join_syn(box, 40002)
    assert synack3.flags == SYN | ACK, "a half-open join holds the only slot"
    (fourth,) = third_ack(box, f3, synack3)
    assert box.sub_for(f3).usable
    box.advance(300.0)  # the half-open join's SYN/ACK retries run out
    assert all(s.local != f2.remote or s.remote != f2.local for s in conn.subflows)
    assert box.sub_for(f3).usable
    f4, (rst4,) = join_syn(box, 40003)  # the slot is still the completed join's
    assert rst4.flags & RST and one(rst4, TcpRst).reason == 3


def test_server_failed_join_does_not_use_up_the_limit():
    """Linux takes a subflow slot only when the third ACK's HMAC is valid (mptcp_finish_join)."""
    box, f = server(Limits(subflows=1))
    conn = box.conn
    f2, (synack,) = join_syn(box, 40001)
    (rst,) = box.feed(f2, f2.seg(ACK, MpJoinAck(bytes(20))))
    assert rst.flags & RST
    f3, (synack3,) = join_syn(box, 40002)
    assert synack3.flags == SYN | ACK, "a join refused for its HMAC still holds a slot"
    ja = one(synack3, MpJoinSynAck)
    (fourth,) = box.feed(
        f3, f3.seg(ACK, MpJoinAck(crypto.join_ack_hmac(KEY, conn.local_key, RA, ja.nonce)))
    )
    assert dss_of(fourth).data_ack is not None
    assert len(conn.subflows) == 2


def test_server_joined_subflow_third_ack_repeated_gets_4th_ack_again():
    box, f = server()
    conn = box.conn
    f2, (synack,) = join_syn(box, 40001)
    ja = one(synack, MpJoinSynAck)
    third = f2.seg(ACK, MpJoinAck(crypto.join_ack_hmac(KEY, conn.local_key, RA, ja.nonce)))
    box.feed(f2, third)
    out = box.feed(f2, third)  # our 4th ACK was lost: the joiner repeats its third ACK
    assert out and all(dss_of(s) is not None and dss_of(s).data_ack is not None for s in out)
    assert conn.mib["MPJoinAckHMacFailure"] == 0


# ------------------------------------------------------------------------------ we join
def client_joining(seed: int = 7) -> tuple[Box, Flow, OpenSubflow]:
    cfg = MptcpConfig(endpoints=[Endpoint(US2, frozenset({"subflow"}), 2)])
    box = Box(config=cfg, seed=seed)
    f = Flow((THEM, PORT), (US, 40000), KEY)
    box.connect(f)
    box.feed(f, f.seg(SYN | ACK, MpCapable(sender_key=KEY)))
    conn = box.conn
    conn.send(b"x" * 10)
    box.out()
    assert not [e for e in box.events if isinstance(e, OpenSubflow)], "join before fully est."
    box.feed(f, f.seg(ACK, Dss(data_ack=conn.local_idsn + 11, data_ack64=True), ack=11))
    (ev,) = [e for e in box.events if isinstance(e, OpenSubflow)]
    assert ev.local_addr == US2 and ev.remote == (THEM, PORT) and ev.local_id == 2
    return box, f, ev


def start_join(box: Box, ev: OpenSubflow) -> tuple[Flow, MpJoinSyn]:
    conn = box.conn
    conn.add_subflow(ev, (US2, 40001), box.now)
    f2 = Flow((THEM, PORT), (US2, 40001), KEY, isn=0x40000000)
    (syn,) = box.out()
    f2.irs = syn.seq
    assert syn.flags == SYN and raw_lengths(syn) == [12]
    js = one(syn, MpJoinSyn)
    assert js.token == crypto.token(KEY) and js.addr_id == 2
    assert conn.mib["MPJoinSynTx"] == 1
    return f2, js


def test_client_join_third_ack_repeated_no_data_before_4th_ack():
    box, f, ev = client_joining()
    conn = box.conn
    f2, js = start_join(box, ev)
    hm = crypto.join_synack_hmac(KEY, conn.local_key, RB, js.nonce)
    out = box.feed(f2, f2.seg(SYN | ACK, MpJoinSynAck(hmac64=hm, nonce=RB, addr_id=0)))
    assert conn.mib["MPJoinSynAckRx"] == 1
    (third,) = out
    assert raw_lengths(third) == [24]
    assert one(third, MpJoinAck).hmac160 == crypto.join_ack_hmac(conn.local_key, KEY, js.nonce, RB)
    sub2 = box.sub_for(f2)
    conn.send(b"y" * 200_000)
    pairs = box.out_pairs()
    for _ in range(5):
        box.now += 0.3
        conn.handle_timer(box.now)
        pairs += box.out_pairs()
    on2 = [s for sub, s in pairs if sub is sub2]
    assert not [s for s in on2 if s.payload], "data on a join before the 4th ACK"
    repeats = [s for s in on2 if one(s, MpJoinAck) is not None]
    assert len(repeats) >= 2, f"third ACK not repeated: {on2}"
    # the 4th ACK arrives: the subflow takes data, no more third ACKs
    n = len(box.sent)
    box.feed(f2, f2.seg(ACK, Dss(data_ack=conn.local_idsn + 11, data_ack64=True)))
    assert sub2.usable
    on2 = [s for sub, s in box.sent[n:] if sub is sub2]
    assert [s for s in on2 if s.payload], "no data on the joined subflow after its 4th ACK"
    assert all(one(s, MpJoinAck) is None for s in on2)


def test_client_join_bad_synack_hmac_is_reset():
    box, f, ev = client_joining()
    conn = box.conn
    f2, js = start_join(box, ev)
    hm = crypto.join_synack_hmac(KEY, conn.local_key, RB, js.nonce) ^ 1
    out = box.feed(f2, f2.seg(SYN | ACK, MpJoinSynAck(hmac64=hm, nonce=RB, addr_id=0)))
    (rst,) = out
    assert rst.flags & RST
    r = one(rst, TcpRst)
    assert r is not None and r.reason == 1
    assert conn.mib["MPJoinSynAckHMacFailure"] == 1
    box.out()
    assert all(s.local[0] != US2 for s in conn.subflows)
    assert not conn.fallback and "Reset" not in box.kinds()


def test_client_join_synack_without_mp_join_is_reset():
    box, f, ev = client_joining()
    f2, js = start_join(box, ev)
    (rst,) = box.feed(f2, f2.seg(SYN | ACK))
    assert rst.flags & RST and one(rst, TcpRst) is not None


def test_data_ack_and_payload_never_on_join_syn():
    box, f, ev = client_joining()
    f2, js = start_join(box, ev)
    for s in box.sent:
        if s[1].flags & SYN:
            assert not s[1].payload
            assert all(not isinstance(o, Dss) for o in mp(s[1]))


def test_client_does_not_join_a_fallback_connection():
    cfg = MptcpConfig(endpoints=[Endpoint(US2, frozenset({"subflow"}), 2)])
    box = Box(config=cfg)
    f = Flow((THEM, PORT), (US, 40000), KEY)
    box.connect(f)
    box.feed(f, f.seg(SYN | ACK))
    box.conn.send(b"x" * 10)
    box.out()
    box.feed(f, f.seg(ACK | PSH, ack=11, payload=b"z"))
    assert box.conn.fallback
    assert not [e for e in box.events if isinstance(e, OpenSubflow)]


def test_client_join_bare_ack_instead_of_4th_ack_resets_the_subflow():
    """Linux's rule for a joiner: the peer's first segment must carry a DATA_ACK."""
    box, f, ev = client_joining()
    conn = box.conn
    f2, js = start_join(box, ev)
    hm = crypto.join_synack_hmac(KEY, conn.local_key, RB, js.nonce)
    box.feed(f2, f2.seg(SYN | ACK, MpJoinSynAck(hmac64=hm, nonce=RB, addr_id=0)))
    out = box.feed(f2, f2.seg(ACK))
    rsts = [s for s in out if s.flags & RST]
    assert rsts and one(rsts[0], TcpRst).reason == 1
    assert all(s.local[0] != US2 for s in conn.subflows)
    assert not conn.fallback and "Reset" not in box.kinds()
    conn.send(b"still here")
    assert [s for s in box.out() if s.payload == b"still here"]


def test_a_sender_that_wrote_everything_and_closed_still_accepts_joins():
    """A download whose bytes all fit the server's send buffer: the server writes them and
    closes at once, before the client's join arrives. The join is accepted (Linux does) and
    the second path carries part of the rest; only when both directions are done are joins
    refused."""
    from testkit.mptcp_sim import C1, C2, Net, S, client_cfg

    net = Net(7)
    client = net.host("client", [C1, C2], seed=17)
    server = net.host("server", [S], seed=27, listen_port=5001)
    net.path(C1, S, delay=0.01)
    net.path(C2, S, delay=0.02)
    conn = net.connect(client, C1, (S, 5001), client_cfg())
    conn.send(b"get")
    net.flush(client, conn)
    net.run(5.0, stop=lambda: bool(server.accepted))
    srv = server.accepted[0]
    data = bytes(range(256)) * 8000  # 2 MB, all in the send buffer at once
    assert srv.send(data) == len(data)
    srv.close(net.now)
    net.flush(server, srv)
    net.run(net.now + 20.0, stop=lambda: len(client.rx[id(conn)]) >= len(data))
    assert bytes(client.rx[id(conn)]) == data
    assert srv.mib["MPJoinRejected"] == 0 and srv.mib["MPJoinAckRx"] == 1
    joined = [s for s in srv.all_subflows() if not s.initial]
    assert joined and joined[0].bytes_sent > 0


def test_client_open_failure_gives_the_slot_back():
    """The edge could not open the subflow an OpenSubflow asked for (no port, no route):
    ``subflow_open_failed`` frees its slot (once), so a later join still fits the limit."""
    cfg = MptcpConfig(
        endpoints=[Endpoint(US2, frozenset({"subflow"}), 2)], limits=Limits(subflows=1)
    )
    box = Box(config=cfg)
    f = Flow((THEM, PORT), (US, 40000), KEY)
    box.connect(f)
    box.feed(f, f.seg(SYN | ACK, MpCapable(sender_key=KEY)))
    conn = box.conn
    conn.send(b"x" * 10)
    box.out()
    box.feed(f, f.seg(ACK, Dss(data_ack=conn.local_idsn + 11, data_ack64=True), ack=11))
    (ev,) = [e for e in box.events if isinstance(e, OpenSubflow)]
    assert not conn.pm.open_subflow(US2), "the limit (1) is taken by the pending request"
    conn.subflow_open_failed(ev, box.now)
    conn.subflow_open_failed(ev, box.now)  # (twice: freed once)
    assert conn.mib["MPJoinSynTxBindErr"] == 1
    assert conn.pm.open_subflow(US2), "the failed request still holds the only slot"
    box.out()
    assert len([e for e in box.events if isinstance(e, OpenSubflow)]) == 2
    assert not conn.pm.open_subflow(US2)  # (and the new request holds it again)


def client_with_c_flag(deny: bool) -> tuple[Box, Flow]:
    """Our client with a subflow endpoint; the peer's SYN/ACK has MP_CAPABLE flag C or not."""
    cfg = MptcpConfig(endpoints=[Endpoint(US2, frozenset({"subflow"}), 2)])
    box = Box(config=cfg)
    f = Flow((THEM, PORT), (US, 40000), KEY)
    box.connect(f)
    box.feed(f, f.seg(SYN | ACK, MpCapable(sender_key=KEY, no_join_source=deny)))
    conn = box.conn
    conn.send(b"x" * 10)
    box.out()
    box.feed(f, f.seg(ACK, Dss(data_ack=conn.local_idsn + 11, data_ack64=True), ack=11))
    return box, f


def test_client_honours_the_servers_c_flag():
    """RFC 8684 3.1: flag C says the sender accepts no more subflows to its source address and
    port. Our client then never joins the initial address (neither from a subflow endpoint nor
    when an interface comes back), but joins an address the server announces (Linux's
    remote_deny_join_id0). Without the flag it joins the initial address as before."""
    from mptcp_impl.mptcp.connection import add_addr_hmac
    from mptcp_impl.mptcp.options import AddAddr

    box, f = client_with_c_flag(False)
    assert [(e.local_addr, e.remote) for e in box.events if isinstance(e, OpenSubflow)] == [
        (US2, (THEM, PORT))
    ]
    box, f = client_with_c_flag(True)
    conn = box.conn
    assert conn.remote_deny_join_id0
    assert not [e for e in box.events if isinstance(e, OpenSubflow)], "joined the C address"
    assert not conn.pm.open_subflow(US2)  # a path manager's own request is refused too
    conn.interface_down(US2, box.now)
    conn.interface_up(US2, box.now)
    box.out()
    assert not [e for e in box.events if isinstance(e, OpenSubflow)]
    # an announced address is joined (another port of the initial address would be too)
    addr = ipaddress.ip_address(THEM2)
    h = add_addr_hmac(KEY, conn.local_key, 5, addr, None)
    box.feed(f, f.seg(ACK, AddAddr(addr_id=5, address=addr, hmac=h), ack=11))
    opens = [e for e in box.events if isinstance(e, OpenSubflow)]
    assert [(e.remote, e.remote_id) for e in opens] == [((THEM2, PORT), 5)]


def test_our_server_sends_c_flag_and_refuses_joins_to_its_initial_address():
    """``allow_join_initial_addr_port=False`` (net.mptcp.allow_join_initial_addr_port=0): our
    MP_CAPABLE carries flag C on the SYN/ACK, and a join to the initial address and port is
    refused (RST 'administratively prohibited', MPJoinRejected); a join to another local
    address of ours (an announced one) is accepted."""
    box = Box(config=MptcpConfig(allow_join_initial_addr_port=False))
    f = Flow((THEM, 40000), (US, PORT), KEY)
    (synack,) = box.syn(f, f.seg(SYN, MpCapable()))
    mpc = one(synack, MpCapable)
    assert mpc.no_join_source and synack.options  # flag C on the wire
    box.feed(f, f.seg(ACK, MpCapable(sender_key=KEY, receiver_key=mpc.sender_key)))
    conn = box.conn
    assert conn.fully_established
    f2, (rst,) = join_syn(box, 40001)
    assert rst.flags & RST and one(rst, TcpRst).reason == 3
    assert conn.mib["MPJoinRejected"] == 1
    f3 = Flow((THEM2, 40002), (US2, PORT), KEY, isn=0x30000000)
    (synack3,) = box.syn(f3, f3.seg(SYN, MpJoinSyn(token=conn.local_token, nonce=RA, addr_id=1)))
    assert synack3.flags == SYN | ACK
    (fourth,) = third_ack(box, f3, synack3)
    assert dss_of(fourth).data_ack is not None and box.sub_for(f3).usable
    # the default: no flag C
    box2 = Box()
    (synack,) = box2.syn(f, f.seg(SYN, MpCapable()))
    assert not one(synack, MpCapable).no_join_source


def test_client_c_flag_case_takes_one_add_addr_for_its_subflow_endpoints():
    """Linux 6.18's C-flag case: flag C from the server and add_addr_accepted 0 on our side
    (Linux's default limits): the server's first ADD_ADDR is still taken, and our ``subflow``
    endpoint joins it (not from the initial address); a second one is not. Without flag C,
    add_addr_accepted 0 means no join."""
    from mptcp_impl.mptcp.connection import add_addr_hmac
    from mptcp_impl.mptcp.options import AddAddr

    def run(deny: bool) -> list[tuple[str, tuple[str, int], int]]:
        cfg = MptcpConfig(
            endpoints=[Endpoint(US2, frozenset({"subflow"}), 2)],
            limits=Limits(subflows=2, add_addr_accepted=0),
        )
        box = Box(config=cfg)
        f = Flow((THEM, PORT), (US, 40000), KEY)
        box.connect(f)
        box.feed(f, f.seg(SYN | ACK, MpCapable(sender_key=KEY, no_join_source=deny)))
        conn = box.conn
        conn.send(b"x" * 10)
        box.out()
        box.feed(f, f.seg(ACK, Dss(data_ack=conn.local_idsn + 11, data_ack64=True), ack=11))
        for addr_id, a in ((5, THEM2), (6, "10.0.0.9")):
            addr = ipaddress.ip_address(a)
            h = add_addr_hmac(KEY, conn.local_key, addr_id, addr, None)
            box.feed(f, f.seg(ACK, AddAddr(addr_id=addr_id, address=addr, hmac=h), ack=11))
        return [
            (e.local_addr, e.remote, e.remote_id) for e in box.events if isinstance(e, OpenSubflow)
        ]

    assert run(True) == [(US2, (THEM2, PORT), 5)]
    assert run(False) == [(US2, (THEM, PORT), 0)]  # (no ADD_ADDR taken: the limit is 0)
