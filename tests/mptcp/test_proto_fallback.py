"""Fallback to plain TCP (RFC 8684 3.7): MPTCP options missing from the peer's first data (a
middlebox stripped them) before any DATA_ACK: the connection goes on as TCP, data intact,
counted."""

from __future__ import annotations

import ipaddress

from mptcp_impl.mptcp import crypto
from mptcp_impl.mptcp.options import AddAddr, Dss, MpCapable

from .peer import (
    ACK,
    PORT,
    PSH,
    SYN,
    THEM,
    US,
    Box,
    Flow,
    data_ack,
    established_server,
    mp,
    one,
)

KEY = 0x7777000011112222


def test_server_first_data_without_options_falls_back():
    box, f = established_server(key=KEY)
    conn = box.conn
    data = bytes(range(200)) * 5
    out = box.feed(f, f.seg(ACK | PSH, payload=data)) + box.advance(0.1)
    assert conn.fallback
    assert conn.mib["DssFallback"] + conn.mib["MPCapableDataFallback"] == 1
    assert conn.read() == data
    assert all(mp(s) == [] for s in out)
    assert any(f.rel_ack(s) == 1 + len(data) for s in out)
    conn.send(b"r" * 700)
    out = box.out()
    assert b"".join(bytes(s.payload) for s in out) == b"r" * 700
    assert all(mp(s) == [] for s in out)
    box.feed(f, f.seg(ACK | PSH, seq=1 + len(data), ack=701, payload=b"more"))
    box.advance(0.1)
    assert conn.read() == b"more"
    assert box.registry.get(conn.local_token) is None


def test_server_third_ack_lost_and_first_data_stripped():
    box = Box()
    f = Flow((THEM, 40000), (US, PORT), KEY)
    box.syn(f, f.seg(SYN, MpCapable()))
    box.feed(f, f.seg(ACK | PSH, payload=b"stripped"))
    box.advance(0.1)
    conn = box.conn
    assert conn.fallback and conn.read() == b"stripped"


def test_server_mapping_covering_later_segments_is_no_fallback():
    """A mapping may cover several segments; only the first needs to carry it."""
    box, f = established_server(key=KEY)
    conn = box.conn
    lk = conn.local_key
    first = MpCapable(sender_key=KEY, receiver_key=lk, data_len=2000)
    box.feed(f, f.seg(ACK | PSH, first, payload=b"a" * 1000))
    box.feed(f, f.seg(ACK | PSH, seq=1001, payload=b"b" * 1000))
    box.advance(0.1)
    assert not conn.fallback
    assert conn.read() == b"a" * 1000 + b"b" * 1000


def client() -> tuple[Box, Flow]:
    box = Box()
    f = Flow((THEM, PORT), (US, 40000), KEY)
    box.connect(f)
    box.feed(f, f.seg(SYN | ACK, MpCapable(sender_key=KEY)))
    return box, f


def test_client_server_data_without_dss_falls_back():
    box, f = client()
    conn = box.conn
    conn.send(b"q" * 300)
    box.out()
    out = box.feed(f, f.seg(ACK | PSH, ack=301, payload=b"plain reply"))
    out += box.advance(0.1)
    assert conn.fallback and conn.mib["MPCapableDataFallback"] == 1
    assert conn.read() == b"plain reply"
    conn.send(b"after")
    out += box.out()
    assert all(mp(s) == [] for s in out)
    assert b"after" in b"".join(bytes(s.payload) for s in out)


def test_client_server_first_ack_without_dss_falls_back():
    """Linux: the server's first segment must carry a DATA_ACK (or an ADD_ADDR)."""
    box, f = client()
    conn = box.conn
    conn.send(b"q" * 300)
    box.out()
    box.feed(f, f.seg(ACK, ack=301))
    assert conn.fallback and conn.mib["MPCapableDataFallback"] == 1
    conn.send(b"z" * 10)
    (seg,) = box.out()
    assert mp(seg) == [] and seg.payload == b"z" * 10


def test_client_server_first_segment_add_addr_keeps_mptcp():
    box, f = client()
    conn = box.conn
    a = ipaddress.IPv4Address("10.0.9.1")
    h = crypto.add_addr_hmac(KEY, conn.local_key, 1, a, None)
    box.feed(f, f.seg(ACK, AddAddr(1, a, hmac=h)))
    assert not conn.fallback and conn.fully_established


def test_client_stays_mptcp_after_data_ack_even_if_later_segment_lacks_dss():
    box, f = client()
    conn = box.conn
    conn.send(b"q" * 300)
    box.out()
    box.feed(f, f.seg(ACK, data_ack(conn, 301), ack=301))
    box.feed(f, f.seg(ACK, ack=301))  # a later bare ACK (options stripped once)
    assert not conn.fallback
    conn.send(b"w" * 10)
    (seg,) = box.out()
    assert one(seg, Dss) is not None


def test_server_second_data_stripped_after_mpc_data_falls_back_in_order():
    box, f = established_server(key=KEY)
    conn = box.conn
    lk = conn.local_key
    first = MpCapable(sender_key=KEY, receiver_key=lk, data_len=100)
    box.feed(f, f.seg(ACK | PSH, first, payload=b"1" * 100))
    box.feed(f, f.seg(ACK | PSH, seq=101, payload=b"2" * 100))
    box.feed(f, f.seg(ACK | PSH, seq=201, payload=b"3" * 100))
    box.advance(0.1)
    assert conn.fallback and conn.mib["DssFallback"] == 1
    assert conn.read() == b"1" * 100 + b"2" * 100 + b"3" * 100


def test_syn_retries_without_mp_capable_after_two_lost():
    """Linux (syn_retrans_before_tcp_fallback = 2, MPCapableSYNTXDrop): the first two SYNs
    carry MP_CAPABLE; once both are lost the third goes without it, and the connection is
    plain TCP from there (no MPCapableFallbackSYNACK for the answer without MP_CAPABLE)."""
    from mptcp_impl.mptcp.options import MpCapable

    from .peer import ACK, PORT, SYN, THEM, US, Box, Flow, one

    box = Box()
    f = Flow((THEM, PORT), (US, 40000), 0x77)
    syn1 = box.connect(f)
    syns = [syn1] + [s for s in box.advance(4.0) if s.flags & SYN]
    assert len(syns) >= 3
    assert [one(s, MpCapable) is not None for s in syns[:3]] == [True, True, False]
    conn = box.conn
    assert conn.fallback and conn.mib["MPCapableSYNTXDrop"] == 1
    assert all(not s.options or one(s, MpCapable) is None for s in syns[2:])
    box.feed(f, f.seg(SYN | ACK))
    assert conn.mib["MPCapableFallbackSYNACK"] == 0 and "Connected" in box.kinds()
