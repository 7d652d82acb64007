"""Malformed and hostile MPTCP options from a scripted peer: dropped or answered as RFC 8684 and
Linux do, counted; nothing raises and no byte is corrupted."""

from __future__ import annotations

import ipaddress
import random

import pytest

from mptcp_impl.mptcp import crypto
from mptcp_impl.mptcp.options import (
    AddAddr,
    Dss,
    FastClose,
    MpCapable,
    MpFail,
    MpJoinAck,
    MpJoinSyn,
    MpJoinSynAck,
    MpPrio,
    RemoveAddr,
    TcpRst,
)
from mptcp_impl.tcp.options import UnknownOption

from .peer import (
    ACK,
    PORT,
    PSH,
    RST,
    SYN,
    THEM2,
    US,
    Box,
    Flow,
    data_ack,
    dss_of,
    established_server,
    mapping,
    one,
)

KEY = 0x0BAD0BAD0BAD0BAD


def join(box: Box, f: Flow) -> Flow:
    conn = box.conn
    f2 = Flow((THEM2, 40001), (US, PORT), f.key, isn=0x30000000)
    (synack,) = box.syn(f2, f2.seg(SYN, MpJoinSyn(token=conn.local_token, nonce=9, addr_id=1)))
    ja = one(synack, MpJoinSynAck)
    box.feed(f2, f2.seg(ACK, MpJoinAck(crypto.join_ack_hmac(f.key, conn.local_key, 9, ja.nonce))))
    return f2


MALFORMED = [
    pytest.param(b"", id="len2"),
    pytest.param(b"\x20", id="dss-truncated"),
    pytest.param(b"\x20\x01\x00\x00", id="dss-ack-short"),
    pytest.param(b"\x20\x05" + bytes(13), id="dss-map-bad-len"),
    pytest.param(b"\x20\x0f" + bytes(16), id="dss-flags-len-mismatch"),
    pytest.param(b"\x90\x00", id="subtype9"),
    pytest.param(b"\xe0\x00\x00", id="subtype14"),
    pytest.param(b"\xf0\x01\x02\x03", id="experimental"),
    pytest.param(b"\x30\x01\x0a\x00", id="addaddr-bad-len"),
    pytest.param(b"\x10\x01" + bytes(5), id="join-bad-len"),
    pytest.param(b"\x01\x01" + bytes(7), id="mpc-bad-len"),
    pytest.param(b"\x70\x00" + bytes(3), id="fastclose-bad-len"),
    pytest.param(b"\x40", id="rmaddr-empty"),
]


@pytest.mark.parametrize("body", MALFORMED)
def test_malformed_option_dropped_counted_data_still_mapped(body):
    """A malformed option is ignored (Linux: mptcp_parse_option skips it) and counted; a good
    DSS in the same segment still counts."""
    box, f = established_server(key=KEY)
    conn = box.conn
    data = b"m" * 500
    seg = f.seg(ACK | PSH, mapping(f, 1, 1, 500), payload=data, raw=[UnknownOption(30, body)])
    box.feed(f, seg)
    box.advance(0.1)
    assert conn.mib["OptionMalformed"] == 1
    assert conn.read() == data and not conn.fallback


def test_malformed_only_option_on_data_before_any_data_ack_falls_back_intact():
    box, f = established_server(key=KEY)
    conn = box.conn
    box.feed(f, f.seg(ACK | PSH, payload=b"x" * 100, raw=[UnknownOption(30, b"\x20\x05\x00")]))
    box.advance(0.1)
    assert conn.read() == b"x" * 100


def test_data_ack_beyond_what_was_sent_ignored_and_counted():
    box, f = established_server(key=KEY)
    conn = box.conn
    conn.send(b"s" * 1000)
    box.out()
    box.feed(f, f.seg(ACK, data_ack(conn, 5001), ack=1001))
    assert conn.mib["DataAckInvalid"] == 1
    assert conn.snd_una == conn.local_idsn + 1
    box.feed(f, f.seg(ACK, data_ack(conn, 1001), ack=1001))
    assert conn.snd_una == conn.local_idsn + 1001


def test_data_ack_far_behind_is_harmless():
    box, f = established_server(key=KEY)
    conn = box.conn
    conn.send(b"s" * 1000)
    box.out()
    box.feed(f, f.seg(ACK, data_ack(conn, 1001), ack=1001))
    box.feed(f, f.seg(ACK, data_ack(conn, -(1 << 40)), ack=1001))
    box.feed(f, f.seg(ACK, Dss(data_ack=0), ack=1001))
    assert conn.snd_una == conn.local_idsn + 1001
    conn.send(b"t" * 10)
    (seg,) = [s for s in box.out() if s.payload]
    assert dss_of(seg).dsn == conn.local_idsn + 1001


def test_infinite_mapping_with_a_join_resets_that_subflow_not_the_data():
    """RFC 8684 3.7 / Linux: no fallback once another subflow exists; the subflow carrying the
    infinite mapping is reset (MP_TCPRST), the data stays right."""
    box, f = established_server(key=KEY)
    conn = box.conn
    f2 = join(box, f)
    box.feed(f2, f2.seg(ACK, mapping(f, 1, 1, 1000), payload=b"1" * 1000))
    box.feed(f, f.seg(ACK, mapping(f, 2001, 1, 1000), payload=b"3" * 1000))
    n = len(box.sent)
    box.feed(
        f,
        f.seg(
            ACK,
            Dss(dsn=(f.idsn + 1) & 0xFFFFFFFF, subflow_seq=1001, data_len=0),
            seq=1001,
            payload=b"?" * 500,
        ),
    )
    box.advance(0.1)
    assert conn.mib["InfiniteMapRx"] == 1
    assert not conn.fallback
    rsts = [s for _, s in box.sent[n:] if s.flags & RST]
    assert rsts and one(rsts[0], TcpRst) is not None
    box.feed(f2, f2.seg(ACK, mapping(f, 1001, 1001, 1000), seq=1001, payload=b"2" * 1000))
    box.advance(0.1)
    assert conn.read() == b"1" * 1000 + b"2" * 1000 + b"3" * 1000


def test_infinite_mapping_single_subflow_falls_back_counted():
    box, f = established_server(key=KEY)
    conn = box.conn
    box.feed(f, f.seg(ACK, mapping(f, 1, 1, 100), payload=b"a" * 100))
    box.feed(
        f,
        f.seg(
            ACK,
            Dss(dsn=(f.idsn + 101) & 0xFFFFFFFF, subflow_seq=101, data_len=0),
            seq=101,
            payload=b"b" * 100,
        ),
    )
    box.advance(0.1)
    assert conn.mib["InfiniteMapRx"] == 1 and conn.fallback
    assert conn.read() == b"a" * 100 + b"b" * 100


def test_data_fin_in_the_past_ignored_and_data_after_fin_dropped():
    box, f = established_server(key=KEY)
    conn = box.conn
    box.feed(f, f.seg(ACK, mapping(f, 1, 1, 300), payload=b"a" * 300))
    # a DATA_FIN below what was received cannot be
    box.feed(
        f,
        f.seg(
            ACK, Dss(dsn=f.idsn + 50, dsn64=True, subflow_seq=0, data_len=1, data_fin=True), seq=301
        ),
    )
    box.feed(f, f.seg(ACK, mapping(f, 301, 301, 100), seq=301, payload=b"b" * 100))
    box.advance(0.1)
    assert conn.read() == b"a" * 300 + b"b" * 100
    assert "PeerClosed" not in box.kinds()
    # a DATA_FIN at 401; bytes claimed beyond it are not the stream
    box.feed(
        f,
        f.seg(
            ACK,
            Dss(dsn=f.idsn + 401, dsn64=True, subflow_seq=0, data_len=1, data_fin=True),
            seq=401,
        ),
    )
    box.feed(f, f.seg(ACK, mapping(f, 401, 401, 50), seq=401, payload=b"c" * 50))
    box.advance(0.1)
    assert "PeerClosed" in box.kinds()
    assert conn.read() == b""


@pytest.mark.parametrize(
    "opt",
    [
        pytest.param(FastClose(0x1234), id="fastclose-wrong-key"),
        pytest.param(MpFail(5), id="mp_fail"),
        pytest.param(RemoveAddr((7,)), id="remove-unknown"),
        pytest.param(MpPrio(True), id="prio"),
        pytest.param(MpJoinAck(bytes(20)), id="join-ack-on-established"),
        pytest.param(MpJoinSyn(1, 2), id="join-syn-on-ack"),
        pytest.param(MpCapable(sender_key=1, receiver_key=2), id="mpc-wrong-keys"),
        pytest.param(
            MpCapable(sender_key=1, receiver_key=2, data_len=100), id="mpc-data-wrong-keys"
        ),
        pytest.param(AddAddr(1, ipaddress.ip_address("1.2.3.4"), hmac=5), id="addaddr-bad"),
        pytest.param(TcpRst(1), id="tcprst-without-rst"),
    ],
)
def test_hostile_option_on_established_connection_is_harmless(opt):
    box, f = established_server(key=KEY)
    conn = box.conn
    box.feed(f, f.seg(ACK, mapping(f, 1, 1, 100), payload=b"a" * 100))
    box.feed(f, f.seg(ACK, opt, seq=101))  # on a pure ACK
    # and on a data segment, next to its (32-bit) mapping
    box.feed(
        f,
        f.seg(ACK | PSH, opt, mapping(f, 101, 101, 100, dsn64=False), seq=101, payload=b"b" * 100),
    )
    box.feed(f, f.seg(ACK, mapping(f, 201, 201, 100), seq=201, payload=b"c" * 100))
    box.advance(0.1)
    assert conn.read() == b"a" * 100 + b"b" * 100 + b"c" * 100
    assert "Reset" not in box.kinds() and not conn.fallback
    conn.send(b"ok")
    assert [s for s in box.out() if s.payload == b"ok"]


def test_random_option_bytes_never_raise():
    rng = random.Random(99)
    box, f = established_server(key=KEY)
    conn = box.conn
    seq = 1
    data = b""
    for i in range(3000):
        body = rng.randbytes(rng.randrange(39))
        if body:
            body = bytes([(rng.randrange(16) << 4) | (body[0] & 0xF)]) + body[1:]
        chunk = bytes([i % 256]) * 10
        box.feed(
            f,
            f.seg(
                ACK,
                mapping(f, seq, seq, 10),
                seq=seq,
                payload=chunk,
                raw=[UnknownOption(30, body)][: 1 if len(body) <= 20 else 0],
            ),
        )
        box.feed(f, f.seg(ACK, seq=seq + 10, raw=[UnknownOption(30, body)]))
        data += chunk
        seq += 10
    box.advance(0.1)
    got = conn.read()
    assert data.startswith(got)


def test_fastclose_with_our_key_resets_everything():
    box, f = established_server(key=KEY)
    conn = box.conn
    f2 = join(box, f)
    box.feed(f, f.seg(ACK, mapping(f, 1, 1, 100), payload=b"a" * 100))
    n = len(box.sent)
    box.feed(f, f.seg(ACK, FastClose(conn.local_key), seq=101))
    rsts = [(sub, s) for sub, s in box.sent[n:] if s.flags & RST]
    assert {sub.remote for sub, _ in rsts} == {f.local, f2.local}
    assert conn.mib["MPFastcloseRx"] == 1
    assert "Reset" in box.kinds()
    assert box.registry.get(conn.local_token) is None
    assert conn.get_timer() is None


def test_fastclose_with_a_wrong_key_is_ignored():
    box, f = established_server(key=KEY)
    conn = box.conn
    box.feed(f, f.seg(ACK, FastClose(conn.local_key ^ 1)))
    assert conn.mib["MPFastcloseRx"] == 0 and "Reset" not in box.kinds()
    assert not [s for _, s in box.sent if s.flags & RST]


def test_out_of_order_data_beyond_the_window_is_not_buffered():
    """Linux drops out-of-order data past the window it advertised (NoDSSInWindow)."""
    from mptcp_impl.mptcp.ctrl import MptcpConfig

    box, f = established_server(key=KEY, config=MptcpConfig(rcv_buf=20_000))
    conn = box.conn
    box.feed(f, f.seg(ACK, mapping(f, 1, 1, 100), payload=b"a" * 100))
    box.advance(0.1)
    edge = conn._rcv_wnd_sent
    far = edge - f.idsn  # DSN offset of the first byte past the advertised edge
    box.feed(f, f.seg(ACK, mapping(f, far, 101, 1000), seq=101, payload=b"x" * 1000))
    assert conn._ooo_bytes == 0 and conn.mib["NoDSSInWindow"] == 1
    box.feed(f, f.seg(ACK, mapping(f, far - 500, 1101, 1000), seq=1101, payload=b"y" * 1000))
    assert conn._ooo_bytes == 500  # the part within the window only
    assert conn.read() == b"a" * 100


def test_the_same_out_of_order_bytes_again_and_again_use_no_more_memory():
    box, f = established_server(key=KEY)
    conn = box.conn
    ssn = 1
    for _ in range(200):  # a peer mapping fresh subflow bytes onto one DSN range, over and over
        box.feed(f, f.seg(ACK, mapping(f, 5001, ssn, 1000), seq=ssn, payload=b"o" * 1000))
        ssn += 1000
    assert conn._ooo_bytes <= 1000 and len(conn._ooo) == 1
    assert conn.mib["DuplicateData"] >= 199
