"""IPv6 in the MPTCP layer: the path manager by address family (as Linux's), v4-mapped ADD_ADDR,
and an IPv6 ADD_ADDR with port and HMAC (30 bytes), which fits only on a pure ACK without
timestamps."""

from __future__ import annotations

import ipaddress

from mptcp_impl.mptcp import crypto
from mptcp_impl.mptcp.connection import OpenSubflow
from mptcp_impl.mptcp.ctrl import Endpoint, MptcpConfig
from mptcp_impl.mptcp.options import AddAddr, Dss, MpCapable
from mptcp_impl.tcp import Timestamps

from .peer import ACK, PORT, SYN, THEM, US, Box, Flow, one

KEY = 0x5555666677778888
V6 = ipaddress.IPv6Address("fd00:0:5::2")


def client(endpoints: list[Endpoint]) -> tuple[Box, Flow]:
    box = Box(config=MptcpConfig(endpoints=endpoints))
    f = Flow((THEM, PORT), (US, 40000), KEY)
    box.connect(f)
    box.feed(f, f.seg(SYN | ACK, MpCapable(sender_key=KEY)))
    conn = box.conn
    conn.send(b"x" * 100)
    box.out()
    box.feed(f, f.seg(ACK, Dss(data_ack=(conn.local_idsn + 101), data_ack64=True), ack=101))
    assert conn.fully_established and not conn.fallback
    return box, f


def announce(box: Box, f: Flow, addr, port=None, addr_id=1) -> None:
    conn = box.conn
    h = crypto.add_addr_hmac(KEY, conn.local_key, addr_id, addr, port)
    opts = [AddAddr(addr_id, addr, port, h)]
    if opts[0].length <= 28:  # (a DATA_ACK beside it when it fits, as Linux)
        opts.append(Dss(data_ack=conn.local_idsn + 101, data_ack64=True))
    box.feed(f, f.seg(ACK, *opts, ack=101))
    box.advance(0.05)


def opens(box: Box) -> list[OpenSubflow]:
    return [e for e in box.events if isinstance(e, OpenSubflow)]


def test_subflow_endpoints_join_only_an_address_of_their_family():
    box, _ = client(
        [
            Endpoint("10.0.0.7", frozenset({"subflow"}), 1),
            Endpoint("fd00:0:2::1", frozenset({"subflow"}), 2),
        ]
    )
    assert [(e.local_addr, e.remote) for e in opens(box)] == [("10.0.0.7", (THEM, PORT))]


def test_ipv6_address_announced_on_an_ipv4_connection_is_joined_from_any_ipv6_address():
    """Linux: an announced address of another family than the initial subflow's is joined
    from the "any" local address of its family (routing picks it)."""
    box, f = client([Endpoint("10.0.0.7", frozenset({"fullmesh"}), 1)])
    announce(box, f, V6, port=6000)
    got = [(e.local_addr, e.remote, e.remote_id) for e in opens(box)]
    assert got == [("", (str(V6), 6000), 1)]
    assert box.conn.mib["AddAddr"] == 1 and box.conn.mib["PortAdd"] == 1


def test_ipv6_address_announced_on_an_ipv4_connection_joined_by_ipv6_fullmesh_endpoints():
    """... unless fullmesh endpoints of that family are there: they join it instead."""
    box, f = client(
        [
            Endpoint("10.0.0.7", frozenset({"fullmesh"}), 1),
            Endpoint("fd00:0:2::1", frozenset({"fullmesh"}), 2),
        ]
    )
    announce(box, f, V6)
    got = [(e.local_addr, e.remote, e.local_id) for e in opens(box)]
    assert got == [("fd00:0:2::1", (str(V6), PORT), 2)]


def test_v4_mapped_add_addr_is_the_ipv4_address():
    box, f = client([])
    announce(box, f, ipaddress.IPv6Address("::ffff:10.0.9.9"))
    assert [(e.local_addr, e.remote) for e in opens(box)] == [(US, ("10.0.9.9", PORT))]
    assert box.conn.mib["AddAddr"] == 1  # the HMAC was checked over the address as sent


def _server_with_timestamps(ep: Endpoint):
    box = Box(config=MptcpConfig(endpoints=[ep]))
    f = Flow((THEM, 40000), (US, PORT), KEY)
    (synack,) = box.syn(f, f.seg(SYN, MpCapable(), raw=[Timestamps(1000, 0)]))
    assert any(isinstance(o, Timestamps) for o in synack.options)
    lk = one(synack, MpCapable).sender_key
    mpc = MpCapable(sender_key=KEY, receiver_key=lk)
    (ts,) = [o for o in synack.options if isinstance(o, Timestamps)]
    box.feed(f, f.seg(ACK, mpc, raw=[Timestamps(1001, ts.tsval)]))
    assert box.conn.fully_established and box.conn.subflows[0].tcp.ts_ok
    box.advance(0.01)
    return box, [s for _, s in box.sent if one(s, AddAddr) is not None]


def test_ipv6_add_addr_with_port_goes_on_a_pure_ack_without_timestamps():
    box, (seg,) = _server_with_timestamps(Endpoint(str(V6), frozenset({"signal"}), 3, 6000))
    a = one(seg, AddAddr)
    assert (a.address, a.port, a.echo) == (V6, 6000, False) and a.length == 30
    assert not seg.payload and seg.flags == ACK
    assert not any(isinstance(o, Timestamps) for o in seg.options)
    assert one(seg, Dss) is None  # alone: 30 bytes + a DSS would not fit either
    assert a.hmac == crypto.add_addr_hmac(box.conn.local_key, KEY, 3, V6, 6000)
    assert box.conn.mib["AddAddrTx"] == 1 and box.conn.mib["AddAddrTxDrop"] == 0
    # the segments after it carry timestamps again
    box.conn.send(b"y" * 10)
    later = box.out()
    assert later and all(any(isinstance(o, Timestamps) for o in s.options) for s in later)


def test_ipv6_add_addr_without_port_fits_beside_timestamps():
    _, (seg,) = _server_with_timestamps(Endpoint(str(V6), frozenset({"signal"}), 3))
    assert one(seg, AddAddr).length == 28
    assert any(isinstance(o, Timestamps) for o in seg.options)  # 12 + 28 = 40
