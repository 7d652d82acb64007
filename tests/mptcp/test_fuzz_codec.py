"""Seeded fuzzing of the MPTCP option decoder: a peer controls these bytes, so whatever arrives
the decoder may only raise MptcpOptionError, and anything it accepts must re-encode to bytes
that decode to an equal option (no information the codec shows is lost or invented)."""

import ipaddress
import random
import time

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
    find_mptcp,
)
from mptcp_impl.tcp import UnknownOption

N = 120_000


def seeds(rng: random.Random) -> list[bytes]:
    """Valid option bodies of every subtype and shape."""
    k = rng.getrandbits
    v4 = ipaddress.IPv4Address(k(32))
    v6 = ipaddress.IPv6Address(k(128))
    opts = [
        MpCapable(),
        MpCapable(sender_key=k(64)),
        MpCapable(sender_key=k(64), receiver_key=k(64)),
        MpCapable(sender_key=k(64), receiver_key=k(64), data_len=k(16)),
        MpCapable(
            checksum_required=True,
            sender_key=k(64),
            receiver_key=k(64),
            data_len=k(16),
            checksum=k(16),
        ),
        MpJoinSyn(k(32), k(32), k(8), True),
        MpJoinSynAck(k(64), k(32), k(8)),
        MpJoinAck(rng.randbytes(20)),
        AddAddr(k(8), v4, hmac=k(64)),
        AddAddr(k(8), v4, k(16), hmac=k(64)),
        AddAddr(k(8), v6, hmac=k(64)),
        AddAddr(k(8), v6, k(16), hmac=k(64)),
        AddAddr(k(8), v4, echo=True),
        AddAddr(k(8), v6, k(16), echo=True),
        RemoveAddr(tuple(rng.randbytes(rng.randint(1, 8)))),
        MpPrio(True),
        MpPrio(False, k(8)),
        MpFail(k(64)),
        FastClose(k(64)),
        TcpRst(k(8), True),
    ]
    for flags in range(32):
        ack = (k(64) if flags & 2 else k(32)) if flags & 1 else None
        dsn = (k(64) if flags & 8 else k(32)) if flags & 4 else None
        opts.append(
            Dss(
                ack,
                bool(flags & 2 and ack is not None),
                dsn,
                bool(flags & 8 and dsn is not None),
                k(32) if dsn is not None else 0,
                k(16) if dsn is not None else 0,
                k(16) if dsn is not None and rng.random() < 0.5 else None,
                bool(flags & 16),
            )
        )
    return [encode(o)[2:] for o in opts]


def mutate(rng: random.Random, base: list[bytes]) -> bytes:
    r = rng.random()
    if r < 0.2:
        return rng.randbytes(rng.randint(0, 42))
    b = bytearray(rng.choice(base))
    if r < 0.5:  # bit flips
        for _ in range(rng.randint(1, 4)):
            if b:
                i = rng.randrange(len(b))
                b[i] ^= 1 << rng.randrange(8)
        return bytes(b)
    if r < 0.65:  # truncation
        return bytes(b[: rng.randrange(len(b) + 1)])
    if r < 0.75:  # extension
        return bytes(b) + rng.randbytes(rng.randint(1, 6))
    if r < 0.9:  # another subtype or flag nibble on a valid body
        b[0] = rng.getrandbits(8) if rng.random() < 0.5 else (b[0] & 0xF0) | rng.getrandbits(4)
        if len(b) > 1 and rng.random() < 0.5:
            b[1] = rng.getrandbits(8)
        return bytes(b)
    # byte replacement
    if b:
        b[rng.randrange(len(b))] = rng.getrandbits(8)
    return bytes(b)


def test_decoder_only_raises_mptcp_option_error_and_round_trips():
    rng = random.Random(20261201)
    base = seeds(rng)
    for body in base:
        assert encode(decode(body))[2:] == body
    t0 = time.monotonic()
    accepted = refused = 0
    for _ in range(N):
        body = mutate(rng, base)
        try:
            opt = decode(body)
        except MptcpOptionError as e:
            assert e.reason
            refused += 1
            continue
        accepted += 1
        wire = encode(opt)
        assert wire[0] == 30 and wire[1] == len(wire) == len(body) + 2 == opt.length, body
        assert decode(wire[2:]) == opt, body
    # both branches exercised in earnest; and fast enough to keep in the suite
    assert accepted > N // 10 and refused > N // 10
    assert time.monotonic() - t0 < 20


def test_decoder_accepts_memoryview_and_bytearray():
    body = encode(Dss(data_ack=1))[2:]
    assert decode(memoryview(body)) == decode(bytearray(body)) == Dss(data_ack=1)


def test_find_mptcp_never_raises_on_garbage():
    rng = random.Random(5)
    opts = [UnknownOption(30, rng.randbytes(rng.randint(0, 38))) for _ in range(2000)]
    got = find_mptcp(opts)
    assert len(got) == len(opts)
