"""ADD_ADDR received by our client (packetdrill add_addr/add_addr_client): the HMAC (rightmost
64 bits), the echo without HMAC, the OpenSubflow that follows, the limit, bad HMACs dropped."""

from __future__ import annotations

import ipaddress

from mptcp_impl.mptcp import crypto
from mptcp_impl.mptcp.connection import OpenSubflow
from mptcp_impl.mptcp.ctrl import Endpoint, Limits, MptcpConfig
from mptcp_impl.mptcp.options import AddAddr, Dss, MpCapable

from .peer import (
    ACK,
    PORT,
    SYN,
    THEM,
    US,
    Box,
    Flow,
    data_ack,
    established_server,
    one,
    raw_lengths,
)

KEY = 0x5555666677778888
ADDR = ipaddress.IPv4Address("10.0.9.9")


def client(limits: Limits | None = None) -> tuple[Box, Flow]:
    box = Box(config=MptcpConfig(endpoints=[], limits=limits or Limits()))
    f = Flow((THEM, PORT), (US, 40000), KEY)
    box.connect(f)
    box.feed(f, f.seg(SYN | ACK, MpCapable(sender_key=KEY)))
    conn = box.conn
    conn.send(b"x" * 100)
    box.out()
    box.feed(f, f.seg(ACK, data_ack(conn, 101), ack=101))
    assert conn.fully_established and not conn.fallback
    return box, f


def announce(box: Box, f: Flow, addr_id=1, addr=ADDR, port=None, hmac=None, ack=101):
    conn = box.conn
    h = crypto.add_addr_hmac(KEY, conn.local_key, addr_id, addr, port) if hmac is None else hmac
    n = len(box.sent)
    box.feed(f, f.seg(ACK, AddAddr(addr_id, addr, port, h), data_ack(conn, ack), ack=ack))
    box.advance(0.05)
    return [s for _, s in box.sent[n:]]


def echoes(segs):
    return [(s, o) for s in segs for o in [one(s, AddAddr)] if o is not None]


def test_add_addr_echoed_then_open_subflow():
    box, f = client()
    conn = box.conn
    out = announce(box, f)
    ((seg, echo),) = echoes(out)
    assert echo.echo and echo.hmac is None and echo.addr_id == 1 and echo.address == ADDR
    assert 8 in raw_lengths(seg)
    assert conn.mib["AddAddr"] == 1 and conn.mib["EchoAddTx"] == 1
    assert one(seg, Dss) is not None  # the DATA_ACK rides along
    ev = [e for e in box.events if isinstance(e, OpenSubflow)]
    assert len(ev) == 1
    assert ev[0].remote == (str(ADDR), PORT) and ev[0].remote_id == 1


def test_add_addr_with_port():
    box, f = client()
    conn = box.conn
    out = announce(box, f, addr_id=3, port=6000)
    ((seg, echo),) = echoes(out)
    assert echo.echo and echo.port == 6000 and 10 in raw_lengths(seg)
    assert conn.mib["PortAdd"] == 1
    (ev,) = [e for e in box.events if isinstance(e, OpenSubflow)]
    assert ev.remote == (str(ADDR), 6000)


def test_add_addr_bad_hmac_dropped():
    box, f = client()
    conn = box.conn
    good = crypto.add_addr_hmac(KEY, conn.local_key, 1, ADDR, None)
    out = announce(box, f, hmac=good ^ (1 << 63))
    assert echoes(out) == []
    assert conn.mib["AddAddrDrop"] == 1 and conn.mib["AddAddr"] == 0
    assert not [e for e in box.events if isinstance(e, OpenSubflow)]


def test_add_addr_leftmost_bits_are_not_the_hmac():
    """The HMAC is the rightmost 64 bits: the leftmost ones are a bad HMAC."""
    box, f = client()
    conn = box.conn
    key = KEY.to_bytes(8, "big") + conn.local_key.to_bytes(8, "big")
    full = crypto.hmac_sha256(key, bytes([1]) + ADDR.packed + b"\0\0")
    out = announce(box, f, hmac=int.from_bytes(full[:8], "big"))
    assert echoes(out) == [] and conn.mib["AddAddrDrop"] == 1
    out = announce(box, f, hmac=int.from_bytes(full[-8:], "big"))
    assert len(echoes(out)) == 1


def test_add_addr_beyond_limit_echoed_without_subflow():
    box, f = client(Limits(subflows=8, add_addr_accepted=1))
    conn = box.conn
    announce(box, f, addr_id=1)
    out = announce(box, f, addr_id=2, addr=ipaddress.IPv4Address("10.0.9.10"))
    assert len(echoes(out)) == 1  # Linux echoes it anyway
    ev = [e for e in box.events if isinstance(e, OpenSubflow)]
    assert [e.remote_id for e in ev] == [1]
    assert conn.mib["AddAddr"] == 2


def test_add_addr_zero_accepted_like_linux_default():
    box, f = client(Limits(subflows=2, add_addr_accepted=0))
    out = announce(box, f)
    assert len(echoes(out)) == 1
    assert not [e for e in box.events if isinstance(e, OpenSubflow)]


def test_add_addr_echo_received_is_not_answered():
    box, f = client()
    conn = box.conn
    n = len(box.sent)
    box.feed(f, f.seg(ACK, AddAddr(1, ADDR, echo=True), data_ack(conn, 101), ack=101))
    box.advance(0.05)
    assert echoes([s for _, s in box.sent[n:]]) == []
    assert conn.mib["EchoAdd"] == 1
    assert not [e for e in box.events if isinstance(e, OpenSubflow)]


def test_server_announces_signal_endpoint_with_rightmost_hmac():
    cfg = MptcpConfig(endpoints=[Endpoint("10.0.0.5", frozenset({"signal"}), 4)])
    box, f = established_server(key=KEY, config=cfg)
    conn = box.conn
    box.advance(0.01)
    ann = [o for _, s in box.sent for o in [one(s, AddAddr)] if o is not None]
    assert len(ann) == 1
    a = ann[0]
    assert not a.echo and a.addr_id == 4 and str(a.address) == "10.0.0.5"
    assert a.hmac == crypto.add_addr_hmac(conn.local_key, KEY, 4, a.address, None)
    assert conn.mib["AddAddrTx"] == 1


def _signal_server(timeout: float = 1.0):
    cfg = MptcpConfig(
        endpoints=[Endpoint("10.0.0.5", frozenset({"signal"}), 4)], add_addr_timeout=timeout
    )
    return established_server(key=KEY, config=cfg)


def _announced(box: Box) -> list[AddAddr]:
    return [o for _, s in box.sent for o in [one(s, AddAddr)] if o is not None and not o.echo]


def test_add_addr_resent_until_echoed():
    """Linux's add_addr_timeout: not echoed, the ADD_ADDR goes again after the timeout."""
    box, f = _signal_server()
    conn = box.conn
    box.advance(0.5)
    assert len(_announced(box)) == 1
    box.advance(0.6)  # 1.1 s: resent once
    assert len(_announced(box)) == 2 and conn.mib["AddAddrTx"] == 2
    a = _announced(box)[0]
    box.feed(f, f.seg(ACK, AddAddr(a.addr_id, a.address, echo=True), data_ack(conn, 1)))
    assert conn.mib["EchoAdd"] == 1
    box.advance(5.0)
    assert len(_announced(box)) == 2, "resent after its echo"


def test_add_addr_resent_three_times_at_most():
    """mptcp_join.sh 'signal address, ADD_ADDR timeout': 4 ADD_ADDRs in all, no echo."""
    box, f = _signal_server()
    conn = box.conn
    box.advance(10.0)
    assert len(_announced(box)) == 4 and conn.mib["AddAddrTx"] == 4
    assert conn.get_timer() is None or conn.get_timer() > box.now  # nothing pending forever


def test_add_addr_not_resent_after_remove():
    box, f = _signal_server()
    conn = box.conn
    box.advance(0.5)
    conn.remove_addresses([4], box.now)
    box.advance(5.0)
    assert len(_announced(box)) == 1 and conn.mib["RmAddrTx"] == 1


def test_add_addr_echo_of_another_id_does_not_stop_resending():
    box, f = _signal_server()
    conn = box.conn
    box.advance(0.2)
    box.feed(f, f.seg(ACK, AddAddr(9, ADDR, echo=True), data_ack(conn, 1)))
    box.advance(1.0)
    assert len(_announced(box)) == 2
