"""MP_CAPABLE v1 against a scripted peer (Linux's packetdrill mp_capable/ and dss/mpc_with_data
scripts): lengths, keys, the implied first mapping, fallback on unusable options, tokens."""

from __future__ import annotations

import hashlib
import random

import pytest

from mptcp_impl.mptcp import crypto
from mptcp_impl.mptcp.connection import MptcpConnection
from mptcp_impl.mptcp.options import Dss, MpCapable
from mptcp_impl.mptcp.token import TokenRegistry
from mptcp_impl.tcp.options import UnknownOption

from .peer import ACK, PORT, PSH, SYN, THEM, US, Box, Flow, dss_of, mp, one, raw_lengths

KEY = 0x0102030405060708


def server_handshake(box: Box, f: Flow, third_ack: bool = True) -> MpCapable:
    (synack,) = box.syn(f, f.seg(SYN, MpCapable()))
    assert synack.flags == SYN | ACK
    mpc = one(synack, MpCapable)
    if third_ack:
        box.feed(f, f.seg(ACK, MpCapable(sender_key=f.key, receiver_key=mpc.sender_key)))
    return mpc


def test_crypto_token_idsn_from_sha256():
    h = hashlib.sha256(KEY.to_bytes(8, "big")).digest()
    assert crypto.token(KEY) == int.from_bytes(h[:4], "big")
    assert crypto.idsn(KEY) == int.from_bytes(h[-8:], "big")


def test_server_syn_gets_12_byte_synack_with_our_key():
    box = Box()
    f = Flow((THEM, 40000), (US, PORT), KEY)
    (synack,) = box.syn(f, f.seg(SYN, MpCapable()))
    assert synack.flags == SYN | ACK and f.rel_ack(synack) == 1
    assert raw_lengths(synack) == [12]
    mpc = one(synack, MpCapable)
    assert mpc.version == 1 and mpc.hmac_sha256 and not mpc.extensibility
    assert mpc.crypto_dg == 0 and not mpc.checksum_required
    conn = box.conn
    assert mpc.sender_key == conn.local_key
    assert conn.local_token == crypto.token(conn.local_key)
    assert box.registry.get(conn.local_token) is conn
    assert conn.mib["MPCapableSYNRX"] == 1


def test_server_third_ack_then_first_data_maps_idsn_plus_1():
    box = Box()
    f = Flow((THEM, 40000), (US, PORT), KEY)
    mpc = server_handshake(box, f)
    conn = box.conn
    assert conn.mib["MPCapableACKRX"] == 1 and conn.fully_established and not conn.fallback
    assert conn.remote_key == KEY and conn.remote_idsn == crypto.idsn(KEY)
    assert "Connected" in box.kinds()
    data = bytes(range(100))
    first = MpCapable(sender_key=KEY, receiver_key=mpc.sender_key, data_len=100)
    seg = f.seg(ACK | PSH, first, payload=data)
    assert raw_lengths(seg) == [22]
    out = box.feed(f, seg) + box.advance(0.2)
    assert conn.read() == data
    acks = [s for s in out if f.rel_ack(s) == 101]
    assert acks, out
    d = dss_of(acks[0])
    assert d is not None and d.data_ack == (f.idsn + 101) & (2**64 - 1) and d.data_ack64
    assert conn.mib["DSSNotMatching"] == 0


def test_server_third_ack_lost_keys_come_from_first_data():
    box = Box()
    f = Flow((THEM, 40000), (US, PORT), KEY)
    mpc = server_handshake(box, f, third_ack=False)
    conn = box.conn
    assert not conn.fully_established
    data = b"hello, lost third ACK" * 3
    first = MpCapable(sender_key=KEY, receiver_key=mpc.sender_key, data_len=len(data))
    out = box.feed(f, f.seg(ACK | PSH, first, payload=data)) + box.advance(0.2)
    assert conn.fully_established and not conn.fallback
    assert conn.remote_key == KEY
    assert conn.read() == data
    d = dss_of(next(s for s in out if f.rel_ack(s) == 1 + len(data)))
    assert d.data_ack == f.idsn + 1 + len(data)


@pytest.mark.parametrize("decider", ["third_ack", "first_data"])
def test_server_data_overtaking_the_third_ack_waits_for_it(decider):
    """A data segment (DSS, no MP_CAPABLE) that overtook the third ACK and the first data, both
    of which carry the keys: any answer would be a plain-TCP ACK at the peer's first in-order
    byte, which a Linux client takes for our fallback (MPCapableDataFallback). The segment is
    dropped as if lost, unanswered; whichever key-carrier comes next decides, and the
    connection is MPTCP, the stream intact. (Found on a reordering link: issue 19's "rough".)"""
    box = Box()
    f = Flow((THEM, 40000), (US, PORT), KEY)
    mpc = server_handshake(box, f, third_ack=False)
    conn = box.conn
    lk = mpc.sender_key
    dack = (crypto.idsn(lk) + 1) & (2**64 - 1)
    a, b = bytes(range(250)) * 4, bytes(range(50, 250)) * 5
    mapping = Dss(
        data_ack=dack, data_ack64=True, dsn=f.idsn + 1, dsn64=True, subflow_seq=1, data_len=2000
    )
    ahead = f.seg(ACK | PSH, mapping, seq=1001, payload=b)
    assert box.feed(f, ahead) + box.advance(0.05) == []
    assert not conn.fallback and not conn.fully_established and "Connected" not in box.kinds()
    assert box.sub_for(f).tcp.stats.handshake_deferred == 1
    if decider == "third_ack":
        out = box.feed(f, f.seg(ACK, MpCapable(sender_key=KEY, receiver_key=lk)))
        out += box.feed(f, f.seg(ACK | PSH, mapping, payload=a))
    else:
        first = MpCapable(sender_key=KEY, receiver_key=lk, data_len=2000)
        out = box.feed(f, f.seg(ACK | PSH, first, payload=a))
    assert conn.fully_established and not conn.fallback
    out += box.feed(f, ahead) + box.advance(0.2)  # the peer resends it
    assert conn.read() == a + b
    assert out and all(dss_of(s) is not None for s in out), out
    assert any(dss_of(s).data_ack == (f.idsn + 2001) & (2**64 - 1) for s in out)
    assert conn.mib["MPCapableFallbackACK"] == conn.mib["DSSNotMatching"] == 0


def test_server_sends_64bit_dsn_from_idsn_plus_1():
    box = Box()
    f = Flow((THEM, 40000), (US, PORT), KEY)
    server_handshake(box, f)
    conn = box.conn
    assert conn.send(b"a" * 1000) == 1000
    out = box.out()
    (seg,) = [s for s in out if s.payload]
    d = dss_of(seg)
    assert d.dsn64 and d.dsn == conn.local_idsn + 1 and d.subflow_seq == 1 and d.data_len == 1000
    assert d.data_ack64 and d.data_ack == f.idsn + 1
    assert raw_lengths(seg) == [4 + 8 + 8 + 6]


@pytest.mark.parametrize(
    "opt",
    [
        pytest.param(MpCapable(extensibility=True), id="flagB"),
        pytest.param(MpCapable(hmac_sha256=False), id="noflagH"),
        pytest.param(MpCapable(crypto_dg=1), id="flagG"),
    ],
)
def test_server_unusable_syn_is_plain_tcp(opt):
    box = Box()
    f = Flow((THEM, 40000), (US, PORT), KEY)
    (synack,) = box.syn(f, f.seg(SYN, opt))
    assert mp(synack) == []
    conn = box.conn
    assert conn.fallback and box.registry.get(conn.local_token) is None
    box.feed(f, f.seg(ACK))
    data = b"plain" * 50
    out = box.feed(f, f.seg(ACK | PSH, payload=data)) + box.advance(0.2)
    assert conn.read() == data
    conn.send(b"r" * 300)
    out += box.out()
    assert all(mp(s) == [] for s in out)
    assert b"r" * 300 in b"".join(bytes(s.payload) for s in out)


@pytest.mark.parametrize("version", [0, 2])
def test_server_syn_version(version):
    """Linux: a v0 SYN is plain TCP; a SYN with a later version gets a v1 answer."""
    box = Box()
    f = Flow((THEM, 40000), (US, PORT), KEY)
    raw = UnknownOption(30, bytes([(0 << 4) | version, 0x01]))
    (synack,) = box.syn(f, f.seg(SYN, raw=[raw]))
    if version == 0:
        assert mp(synack) == [] and box.conn.fallback
    else:
        mpc = one(synack, MpCapable)
        assert mpc.version == 1 and not box.conn.fallback


@pytest.mark.parametrize(
    "third",
    [
        pytest.param({"extensibility": True}, id="flagB"),
        pytest.param({"hmac_sha256": False}, id="noflagH"),
        pytest.param({"version": 0}, id="wrongver"),
    ],
)
def test_server_unusable_third_ack_falls_back(third):
    """packetdrill v1_bind_tcpfallback_*_3rd_ack: the server goes on as plain TCP."""
    box = Box()
    f = Flow((THEM, 40000), (US, PORT), KEY)
    (synack,) = box.syn(f, f.seg(SYN, MpCapable()))
    lk = one(synack, MpCapable).sender_key
    if third.get("version") == 0:
        body = bytes([0x00, 0x01]) + KEY.to_bytes(8, "big") + lk.to_bytes(8, "big")
        box.feed(f, f.seg(ACK, raw=[UnknownOption(30, body)]))
    else:
        box.feed(f, f.seg(ACK, MpCapable(sender_key=KEY, receiver_key=lk, **third)))
    conn = box.conn
    assert conn.fallback
    conn.send(b"x" * 1000)
    out = box.out()
    (seg,) = [s for s in out if s.payload]
    assert mp(seg) == [] and len(seg.payload) == 1000
    box.feed(f, f.seg(ACK | PSH, ack=1001, payload=b"y" * 500))
    assert conn.read() == b"y" * 500


# ------------------------------------------------------------------------------ client side
def client_handshake(box: Box, f: Flow) -> None:
    syn = box.connect(f)
    assert raw_lengths(syn) == [4]
    mpc = one(syn, MpCapable)
    assert mpc.version == 1 and mpc.hmac_sha256 and mpc.sender_key is None
    out = box.feed(f, f.seg(SYN | ACK, MpCapable(sender_key=f.key)))
    (third,) = out
    assert third.flags == ACK and raw_lengths(third) == [20]
    mpc = one(third, MpCapable)
    assert mpc.sender_key == box.conn.local_key and mpc.receiver_key == f.key


def test_client_first_data_carries_mpc_with_data_len_then_dss_keeps_mptcp():
    box = Box()
    f = Flow((THEM, PORT), (US, 40000), KEY)
    client_handshake(box, f)
    conn = box.conn
    assert "Connected" in box.kinds()
    conn.send(b"d" * 1000)
    (seg,) = box.out()
    assert raw_lengths(seg) == [22]
    mpc = one(seg, MpCapable)
    assert mpc.data_len == 1000 and mpc.receiver_key == KEY and f.rel_seq(seg) == 1
    # the server's first segment carries a DATA_ACK: we stay MPTCP
    box.feed(f, f.seg(ACK, Dss(data_ack=conn.local_idsn + 1001, data_ack64=True), ack=1001))
    assert not conn.fallback and conn.fully_established
    conn.send(b"e" * 500)
    (seg,) = box.out()
    d = dss_of(seg)
    assert d is not None and d.dsn == conn.local_idsn + 1001 and d.subflow_seq == 1001
    assert d.data_len == 500 and d.data_ack is not None
    assert one(seg, MpCapable) is None
    # data from the server (32-bit DATA_ACK, 64-bit DSN as Linux sends)
    out = box.feed(
        f,
        f.seg(
            ACK | PSH,
            Dss(
                data_ack=(conn.local_idsn + 1501) & 0xFFFFFFFF,
                dsn=f.idsn + 1,
                dsn64=True,
                subflow_seq=1,
                data_len=200,
            ),
            ack=1501,
            payload=b"s" * 200,
        ),
    )
    out += box.advance(0.2)
    assert conn.read() == b"s" * 200
    assert out and all(dss_of(s) is not None and dss_of(s).data_ack is not None for s in out)
    assert dss_of(out[-1]).data_ack == f.idsn + 201
    assert conn.snd_una == conn.local_idsn + 1501


def test_client_every_segment_carries_a_data_ack():
    box = Box()
    f = Flow((THEM, PORT), (US, 40000), KEY)
    client_handshake(box, f)
    conn = box.conn
    conn.send(b"d" * 10)
    box.out()
    box.feed(f, f.seg(ACK, Dss(data_ack=conn.local_idsn + 11, data_ack64=True), ack=11))
    conn.send(b"z" * 5000)
    out = box.out()
    box.feed(f, f.seg(ACK, Dss(data_ack=conn.local_idsn + 5011, data_ack64=True), ack=5011))
    conn.close(box.now)
    out += box.out() + box.advance(0.5)
    assert out
    for s in out:
        d = dss_of(s)
        assert d is not None and d.data_ack is not None, s


@pytest.mark.parametrize(
    "kw",
    [
        pytest.param({"extensibility": True}, id="flagB"),
        pytest.param({"hmac_sha256": False}, id="noflagH"),
    ],
)
def test_client_unusable_synack_is_plain_tcp(kw):
    """packetdrill v1_connect_tcpfallback_flag{B,H}: third ACK without MPTCP, data plain."""
    box = Box()
    f = Flow((THEM, PORT), (US, 40000), KEY)
    box.connect(f)
    (third,) = box.feed(f, f.seg(SYN | ACK, MpCapable(sender_key=KEY, **kw)))
    assert mp(third) == []
    conn = box.conn
    assert conn.fallback and conn.mib["MPCapableFallbackSYNACK"] == 1
    conn.send(b"q" * 1000)
    (seg,) = box.out()
    assert mp(seg) == [] and len(seg.payload) == 1000


def test_client_synack_without_mptcp_is_plain_tcp():
    box = Box()
    f = Flow((THEM, PORT), (US, 40000), KEY)
    box.connect(f)
    (third,) = box.feed(f, f.seg(SYN | ACK))
    assert mp(third) == [] and box.conn.fallback


# ------------------------------------------------------------------------------ tokens
class _Rng(random.Random):
    """Keys in a given order (then random): to force a token collision."""

    def __init__(self, keys):
        super().__init__(5)
        self.keys = list(keys)

    def getrandbits(self, k):
        if k == 64 and self.keys:
            return self.keys.pop(0)
        return super().getrandbits(k)


def test_tokens_unique_per_host():
    reg = TokenRegistry(_Rng([KEY, KEY, KEY, KEY + 1]))
    a = MptcpConnection(registry=reg)
    a.connect(("10.0.0.1", 1), ("10.0.0.2", 2), 0.0)
    b = MptcpConnection(registry=reg)
    b.connect(("10.0.0.1", 3), ("10.0.0.2", 2), 0.0)
    assert a.local_key == KEY and b.local_key == KEY + 1
    assert a.local_token != b.local_token
    assert reg.get(a.local_token) is a and reg.get(b.local_token) is b


def test_tokens_unique_for_accepted_connections():
    box = Box(registry=TokenRegistry(_Rng([KEY, KEY, KEY + 7])))
    f1 = Flow((THEM, 40000), (US, PORT), 11)
    f2 = Flow((THEM, 40001), (US, PORT), 12)
    box.syn(f1, f1.seg(SYN, MpCapable()))
    c1 = box.conn
    box.syn(f2, f2.seg(SYN, MpCapable()))
    c2 = box.conn
    assert c1 is not c2 and c1.local_token != c2.local_token
    assert box.registry.get(c1.local_token) is c1 and box.registry.get(c2.local_token) is c2
