"""MPTCP option codec: every suboption against byte layouts written out here from RFC 8684
section 3 (struct.pack by hand, never via the codec), real Linux option bytes from a kernel
capture, round trips, every wrong length refused, and 32->64 bit expansion around wraps."""

import ipaddress
import struct

import pytest

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
    MptcpOptionError,
    RemoveAddr,
    TcpRst,
    decode,
    encode,
    expand32,
    find_mptcp,
    to_tcp_option,
)
from mptcp_impl.tcp import MSS, Timestamps, UnknownOption, decode_options, encode_options

K1 = 0x0123456789ABCDEF
K2 = 0xFEDCBA9876543210
V4 = ipaddress.IPv4Address("10.0.2.2")
V6 = ipaddress.IPv6Address("2001:db8::7")


def mp(length, subtype, nibble, rest=b""):
    """Kind 30, length, subtype<<4|nibble, then the rest, per RFC 8684 Figure 3."""
    return struct.pack("!BBB", 30, length, (subtype << 4) | nibble) + rest


# (option, wire bytes built from the RFC layout)
CASES = [
    # MP_CAPABLE (RFC 8684 Figure 4): version 1, flags A..H, keys, data-level length, checksum
    (MpCapable(), mp(4, 0, 1, b"\x01")),
    (MpCapable(checksum_required=True), mp(4, 0, 1, b"\x81")),
    (
        MpCapable(extensibility=True, no_join_source=True, hmac_sha256=False, crypto_dg=0b1010),
        mp(4, 0, 1, bytes([0x40 | 0x20 | 0x10 | 0x04])),
    ),
    (MpCapable(version=2), mp(4, 0, 2, b"\x01")),  # a SYN may offer a later version
    (MpCapable(sender_key=K1), mp(12, 0, 1, b"\x01" + struct.pack("!Q", K1))),
    (
        MpCapable(sender_key=K1, receiver_key=K2),
        mp(20, 0, 1, b"\x01" + struct.pack("!QQ", K1, K2)),
    ),
    (
        MpCapable(sender_key=K1, receiver_key=K2, data_len=1400),
        mp(22, 0, 1, b"\x01" + struct.pack("!QQH", K1, K2, 1400)),
    ),
    (
        MpCapable(
            checksum_required=True, sender_key=K1, receiver_key=K2, data_len=7, checksum=0xBEEF
        ),
        mp(24, 0, 1, b"\x81" + struct.pack("!QQHH", K1, K2, 7, 0xBEEF)),
    ),
    # MP_JOIN (Figures 5-7)
    (
        MpJoinSyn(token=0xA1B2C3D4, nonce=0x01020304, addr_id=3),
        mp(12, 1, 0, b"\x03" + struct.pack("!II", 0xA1B2C3D4, 0x01020304)),
    ),
    (
        MpJoinSyn(token=1, nonce=2, addr_id=0, backup=True),
        mp(12, 1, 1, b"\x00" + struct.pack("!II", 1, 2)),
    ),
    (
        MpJoinSynAck(hmac64=K2, nonce=0xDEADBEEF, addr_id=9, backup=True),
        mp(16, 1, 1, b"\x09" + struct.pack("!QI", K2, 0xDEADBEEF)),
    ),
    (MpJoinAck(bytes(range(20))), mp(24, 1, 0, b"\x00" + bytes(range(20)))),
    # DSS (Figure 9): flags byte reserved(3) F m M a A
    (Dss(data_ack=5), mp(8, 2, 0, b"\x01" + struct.pack("!I", 5))),
    (Dss(data_ack=K1, data_ack64=True), mp(12, 2, 0, b"\x03" + struct.pack("!Q", K1))),
    (
        Dss(dsn=100, subflow_seq=1, data_len=1400),
        mp(14, 2, 0, b"\x04" + struct.pack("!IIH", 100, 1, 1400)),
    ),
    (
        Dss(dsn=K2, dsn64=True, subflow_seq=1, data_len=1400),
        mp(18, 2, 0, b"\x0c" + struct.pack("!QIH", K2, 1, 1400)),
    ),
    (
        Dss(dsn=100, subflow_seq=1, data_len=10, checksum=0x1234),
        mp(16, 2, 0, b"\x04" + struct.pack("!IIHH", 100, 1, 10, 0x1234)),
    ),
    (
        Dss(data_ack=7, dsn=100, subflow_seq=1, data_len=10),
        mp(18, 2, 0, b"\x05" + struct.pack("!IIIH", 7, 100, 1, 10)),
    ),
    (
        Dss(
            data_ack=K1,
            data_ack64=True,
            dsn=K2,
            dsn64=True,
            subflow_seq=2**32 - 1,
            data_len=65535,
            checksum=0,
        ),
        mp(28, 2, 0, b"\x0f" + struct.pack("!QQIHH", K1, K2, 2**32 - 1, 65535, 0)),
    ),
    (
        Dss(data_ack=K1, data_ack64=True, dsn=K2, dsn64=True, data_len=1, data_fin=True),
        mp(26, 2, 0, b"\x1f" + struct.pack("!QQIH", K1, K2, 0, 1)),
    ),
    (Dss(data_fin=True), mp(4, 2, 0, b"\x10")),
    (Dss(), mp(4, 2, 0, b"\x00")),
    (Dss(dsn=9, data_len=0), mp(14, 2, 0, b"\x04" + struct.pack("!IIH", 9, 0, 0))),  # infinite
    # ADD_ADDR (Figure 12): v1 has no IPVer, the length tells the family
    (AddAddr(1, V4, hmac=K1), mp(16, 3, 0, b"\x01" + V4.packed + struct.pack("!Q", K1))),
    (
        AddAddr(1, V4, port=8080, hmac=K1),
        mp(18, 3, 0, b"\x01" + V4.packed + struct.pack("!HQ", 8080, K1)),
    ),
    (AddAddr(200, V6, hmac=K2), mp(28, 3, 0, b"\xc8" + V6.packed + struct.pack("!Q", K2))),
    (
        AddAddr(2, V6, port=1, hmac=K2),
        mp(30, 3, 0, b"\x02" + V6.packed + struct.pack("!HQ", 1, K2)),
    ),
    (AddAddr(1, V4, echo=True), mp(8, 3, 1, b"\x01" + V4.packed)),
    (AddAddr(1, V4, port=0, echo=True), mp(10, 3, 1, b"\x01" + V4.packed + b"\x00\x00")),
    (AddAddr(5, V6, echo=True), mp(20, 3, 1, b"\x05" + V6.packed)),
    (
        AddAddr(5, V6, port=443, echo=True),
        mp(22, 3, 1, b"\x05" + V6.packed + struct.pack("!H", 443)),
    ),
    # REMOVE_ADDR (Figure 13)
    (RemoveAddr((7,)), mp(4, 4, 0, b"\x07")),
    (RemoveAddr((1, 2, 3, 255, 0, 9, 8, 4)), mp(11, 4, 0, bytes((1, 2, 3, 255, 0, 9, 8, 4)))),
    # MP_PRIO (Figure 11; length 4 is RFC 6824's form with an address id)
    (MpPrio(backup=True), mp(3, 5, 1)),
    (MpPrio(backup=False), mp(3, 5, 0)),
    (MpPrio(backup=True, addr_id=4), mp(4, 5, 1, b"\x04")),
    # MP_FAIL (Figure 16), MP_FASTCLOSE (Figure 14), MP_TCPRST (Figure 15)
    (MpFail(K2), mp(12, 6, 0, b"\x00" + struct.pack("!Q", K2))),
    (FastClose(K1), mp(12, 7, 0, b"\x00" + struct.pack("!Q", K1))),
    (TcpRst(reason=3, transient=True), mp(4, 8, 0b0001, b"\x03")),
    (TcpRst(reason=6, flag_u=True, flag_v=True, flag_w=True), mp(4, 8, 0b1110, b"\x06")),
]


@pytest.mark.parametrize(
    "opt,wire", CASES, ids=lambda x: type(x).__name__ if not isinstance(x, bytes) else ""
)
def test_encode_and_decode_match_rfc_layout(opt, wire):
    assert encode(opt) == wire
    assert opt.length == len(wire) == wire[1]
    assert decode(wire[2:]) == opt
    # through the TCP core's own option codec, as it travels in a segment
    tcp_opt = to_tcp_option(opt)
    assert tcp_opt == UnknownOption(30, wire[2:])
    with_ts = [Timestamps(1, 2), tcp_opt] if len(wire) <= 28 else [tcp_opt]
    back = decode_options(encode_options(with_ts))
    assert find_mptcp(back) == [opt]


# Option bytes Linux 6.18 sent (kernel MPTCP capture of this testbed, failover run).
LINUX = [
    ("1e040101", MpCapable()),
    ("1e0c0101044c86e9b46c937d", MpCapable(sender_key=309770812694238077)),
    (
        "1e1401015b3e7ba7d0a36e7b044c86e9b46c937d",
        MpCapable(sender_key=6574828466697629307, receiver_key=309770812694238077),
    ),
    (
        "1e1601015b3e7ba7d0a36e7b044c86e9b46c937d00a6",
        MpCapable(sender_key=6574828466697629307, receiver_key=309770812694238077, data_len=166),
    ),
    ("1e0c200390945f5ac0068968", Dss(data_ack=0x90945F5AC0068968, data_ack64=True)),
    (
        "1e1a200f90945f5ac0068968e89870474736d050000000017a08",
        Dss(0x90945F5AC0068968, True, 0xE89870474736D050, True, 1, 0x7A08),
    ),
    ("1e0c1001398d3bacfa1da668", MpJoinSyn(token=965557164, nonce=4196247144, addr_id=1)),
    ("1e101000394b6fa69f9a033dae0a8bd0", MpJoinSynAck(4128516244848116541, 2919926736, 0)),
    (
        "1e181000251a2edf2deab5eb2bc1c76e4d73b4586774f296",
        MpJoinAck(bytes.fromhex("251a2edf2deab5eb2bc1c76e4d73b4586774f296")),
    ),
    ("1e1030010a000202ffed265e239bd979", AddAddr(1, V4, hmac=18441438234918246777)),
    ("1e0831010a000202", AddAddr(1, V4, echo=True)),
]


@pytest.mark.parametrize("hexbytes,opt", LINUX)
def test_real_linux_options(hexbytes, opt):
    wire = bytes.fromhex(hexbytes)
    assert decode(wire[2:]) == opt
    assert encode(opt) == wire


def test_reserved_bits_are_ignored_and_dropped():
    # MP_JOIN ACK reserved 12 bits, MP_FAIL/FASTCLOSE reserved, DSS reserved flag bits,
    # REMOVE_ADDR/ADD_ADDR reserved nibble bits, 'a'/'m' flags without 'A'/'M'.
    assert decode(mp(24, 1, 0xF, b"\xff" + bytes(20))[2:]) == MpJoinAck(bytes(20))
    assert decode(mp(12, 6, 0xF, b"\xff" + bytes(8))[2:]) == MpFail(0)
    assert decode(mp(12, 7, 0xF, b"\xff" + bytes(8))[2:]) == FastClose(0)
    assert decode(mp(8, 2, 0xF, b"\xe1" + bytes(4))[2:]) == Dss(data_ack=0)
    assert decode(mp(4, 2, 0, b"\x0a")[2:]) == Dss()  # a and m alone mean nothing
    assert decode(mp(4, 4, 0xF, b"\x01")[2:]) == RemoveAddr((1,))
    assert decode(mp(8, 3, 0xF, b"\x01" + V4.packed)[2:]) == AddAddr(1, V4, echo=True)
    assert decode(mp(3, 5, 0xF)[2:]) == MpPrio(True)


LENGTHS_OK = {
    0: {4, 12, 20, 22, 24},
    1: {12, 16, 24},
    5: {3, 4},
    6: {12},
    7: {12},
    8: {4},
}


@pytest.mark.parametrize("subtype", sorted(LENGTHS_OK))
def test_every_wrong_length_refused_fixed_size_subtypes(subtype):
    for length in range(2, 41):
        body = bytes([(subtype << 4) | 1, 0x01]) + bytes(max(0, length - 4))
        body = body[: length - 2]
        if length in LENGTHS_OK[subtype]:
            decode(body)
        else:
            with pytest.raises(MptcpOptionError) as e:
                decode(body)
            assert e.value.subtype in (subtype, None)
            assert e.value.reason


def test_dss_every_flag_combination_and_length():
    for flags in range(32):
        base = 4
        if flags & 1:
            base += 8 if flags & 2 else 4
        if flags & 4:
            base += 14 if flags & 8 else 10
        ok = {base, base + 2} if flags & 4 else {base}
        for length in range(3, 41):
            body = bytes([0x20, flags]) + bytes(range(length - 4)) if length >= 4 else b"\x20"
            if length in ok:
                d = decode(body)
                assert d.data_fin == bool(flags & 16)
                assert (d.data_ack is not None) == bool(flags & 1)
                assert (d.dsn is not None) == bool(flags & 4)
                assert (d.checksum is not None) == (length == base + 2 and bool(flags & 4))
                assert d.length == length
                assert decode(encode(d)[2:]) == d
                meaningful = (
                    (flags & 16) | (flags & 1) | (flags & 4) | (flags & 2 if flags & 1 else 0)
                )
                assert encode(d)[3] == meaningful | (flags & 8 if flags & 4 else 0)
            else:
                with pytest.raises(MptcpOptionError, match="DSS"):
                    decode(body)


def test_add_addr_lengths_depend_on_echo():
    for echo, ok in ((0, {16, 18, 28, 30}), (1, {8, 10, 20, 22})):
        for length in range(3, 41):
            body = bytes([0x30 | echo, 1]) + bytes(length - 4) if length >= 4 else b"\x30"
            if length in ok:
                a = decode(body)
                assert a.echo == bool(echo) and a.length == length
                assert a.address.version == (4 if length in (8, 10, 16, 18) else 6)
            else:
                with pytest.raises(MptcpOptionError, match="ADD_ADDR"):
                    decode(body)


def test_remove_addr_lengths():
    with pytest.raises(MptcpOptionError, match="REMOVE_ADDR"):
        decode(b"\x40")
    for n in range(1, 37):
        assert decode(b"\x40" + bytes(range(n))) == RemoveAddr(tuple(range(n)))


@pytest.mark.parametrize(
    "body,why",
    [
        (b"", "truncated"),
        (bytes(39), "option space"),
        (b"\x90", "unknown subtype"),
        (b"\xf0\x00\x00", "unknown subtype"),  # MP_EXPERIMENTAL is not decoded
        (b"\x00\x01", "version 0"),  # RFC 6824
        (b"\x02\x01" + bytes(8), "version 2"),  # only a SYN may offer a later version
        (b"\x00\x01" + bytes(18), "version 0"),
    ],
)
def test_malformed(body, why):
    with pytest.raises(MptcpOptionError) as e:
        decode(body)
    assert why in e.value.reason
    assert isinstance(e.value, ValueError)


def test_constructors_refuse_what_cannot_be_encoded():
    for bad in (
        lambda: Dss(data_ack=2**32),  # 32-bit field
        lambda: Dss(data_ack64=True),
        lambda: Dss(subflow_seq=1),
        lambda: Dss(dsn=1, data_len=70000),
        lambda: MpCapable(receiver_key=1),
        lambda: MpCapable(sender_key=1, receiver_key=2, checksum=3),
        lambda: MpCapable(sender_key=2**64),
        lambda: AddAddr(1, V4),  # announcement without HMAC
        lambda: AddAddr(1, V4, hmac=1, echo=True),
        lambda: AddAddr(1, "10.0.0.1", hmac=1),
        lambda: RemoveAddr(()),
        lambda: RemoveAddr(tuple(range(38))),
        lambda: MpJoinAck(b"short"),
        lambda: MpJoinSyn(token=-1, nonce=0),
        lambda: TcpRst(reason=256),
    ):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(TypeError):
        encode(MSS(1460))


def test_find_mptcp_keeps_order_and_reports_malformed():
    opts = [
        MSS(1460),
        to_tcp_option(Dss(data_ack=1)),
        UnknownOption(30, b"\x20\x01\x00"),  # DSS with a truncated DATA_ACK
        UnknownOption(31, b"\x20\x01"),  # not MPTCP
        to_tcp_option(MpPrio(True)),
    ]
    got = find_mptcp(opts)
    assert got[0] == Dss(data_ack=1)
    assert isinstance(got[1], MptcpOptionError) and got[1].subtype == 2
    assert got[2] == MpPrio(True)
    assert len(got) == 3
    assert find_mptcp([]) == []


def test_dss_infinite_mapping_flag():
    assert Dss(dsn=1, data_len=0).infinite
    assert not Dss(dsn=1, data_len=1).infinite
    assert not Dss(data_ack=1).infinite


@pytest.mark.parametrize(
    "value32,ref,want",
    [
        (5, 5, 5),
        (10, 2**32 - 10, 2**32 + 10),  # wrapped forward
        (2**32 - 10, 2**32 + 10, 2**32 - 10),  # a little behind, across the wrap
        (2**32 - 1, 2**40, 2**40 - 1),
        (0, 2**40 - 1, 2**40),
        (0x80000000, 0, 2**64 - 2**31),  # exactly 2**31 away: taken behind (mod 2**64)
        (0x7FFFFFFF, 0, 0x7FFFFFFF),
        (0xFFFFFFF0, 5, 2**64 - 16),  # behind 0: the 64-bit space wraps too
        (3, 2**64 - 2, 3),  # ahead of the 64-bit wrap
        (123, 7 * 2**32 + 2**31 + 200, 8 * 2**32 + 123),
        (2**31 + 300, 7 * 2**32 + 100, 6 * 2**32 + 2**31 + 300),
    ],
)
def test_expand32(value32, ref, want):
    got = expand32(value32, ref)
    assert got == want
    assert got & 0xFFFFFFFF == value32
    d = (got - ref) % 2**64
    assert d < 2**31 or d >= 2**64 - 2**31


def test_expand32_exhaustive_neighbourhood():
    for ref in (0, 2**31, 2**32 - 1, 2**32, 5 * 2**32 + 17, 2**64 - 1):
        for delta in (-(2**31), -(2**31) + 1, -1000, -1, 0, 1, 1000, 2**31 - 1):
            true = (ref + delta) % 2**64
            assert expand32(true & 0xFFFFFFFF, ref) == true


def test_dss_option_fast_form_is_the_generic_encoding():
    """``dss_option`` builds the DATA_ACK-only DSS of every pure ACK without the generic
    encoder: the same bytes, and every other DSS form still goes through it."""
    import random

    from mptcp_impl.mptcp.options import Dss, dss_option, to_tcp_option

    rnd = random.Random(7)
    acks = [0, 1, (1 << 64) - 1, 1 << 63] + [rnd.getrandbits(64) for _ in range(500)]
    for ack in acks:
        d = Dss(data_ack=ack, data_ack64=True)
        assert dss_option(d) == to_tcp_option(d)
    for d in (
        Dss(data_ack=5),
        Dss(data_ack=5, data_ack64=True, dsn=7, dsn64=True, subflow_seq=1, data_len=9),
        Dss(data_ack=5, data_ack64=True, dsn=7, dsn64=True, data_len=1, data_fin=True),
        Dss(dsn=7, subflow_seq=1, data_len=9, checksum=3),
    ):
        assert dss_option(d) == to_tcp_option(d)


def test_dss_map_option_is_the_generic_encoding():
    """``dss_map_option`` (every data segment's DSS, packed at once) gives the bytes of the
    generic encoder, which decode back to the same mapping, at every field's extremes."""
    import random

    from mptcp_impl.mptcp.options import Dss, decode, dss_map_option, to_tcp_option

    rnd = random.Random(11)
    edge64 = [0, 1, (1 << 64) - 1, 1 << 63]
    cases = [
        (a, d, s, n)
        for a in edge64
        for d in edge64
        for s in (0, (1 << 32) - 1)
        for n in (1, 0xFFFF)
    ]
    cases += [
        (rnd.getrandbits(64), rnd.getrandbits(64), rnd.getrandbits(32), rnd.randrange(1, 1 << 16))
        for _ in range(500)
    ]
    for ack, dsn, ssn, n in cases:
        d = Dss(data_ack=ack, data_ack64=True, dsn=dsn, dsn64=True, subflow_seq=ssn, data_len=n)
        o = dss_map_option(ack, dsn, ssn, n)
        assert o == to_tcp_option(d)
        assert decode(o.data) == d
