"""MPTCP crypto: tokens, IDSNs, HMACs and the DSS checksum, against values computed here with
hashlib/hmac, Linux's own KUnit vectors (net/mptcp/crypto_test.c), and known answers taken from
a real Linux 6.18 capture on this testbed (keys, tokens, join and ADD_ADDR HMACs that Linux
sent and accepted; the token/IDSN also match tshark's mptcp.expected_token/expected_idsn)."""

import hashlib
import hmac
import ipaddress
import random
import struct

import pytest

from mptcp_impl.mptcp.crypto import (
    add_addr_hmac,
    dss_checksum,
    dss_checksum_ok,
    generate_key,
    hmac_sha256,
    idsn,
    join_ack_hmac,
    join_synack_hmac,
    key_bytes,
    token,
    token_and_idsn,
)


def test_token_and_idsn_from_sha256():
    for key in (1, 0x0123456789ABCDEF, 2**64 - 1):
        d = hashlib.sha256(key.to_bytes(8, "big")).digest()
        assert token(key) == struct.unpack("!I", d[:4])[0]
        assert idsn(key) == struct.unpack("!Q", d[24:])[0]
        assert token_and_idsn(key) == (token(key), idsn(key))


# From a kernel MPTCP capture (client 10.0.1.1 / 10.0.2.1, server 10.0.5.2): the MP_CAPABLE
# keys, the token Linux put in its MP_JOIN SYN, tshark's expected token and IDSN.
SERVER_KEY = 309770812694238077
CLIENT_KEY = 6574828466697629307


def test_known_answers_from_linux_capture():
    assert token(SERVER_KEY) == 965557164  # the MP_JOIN SYN's receiver token, sent by Linux
    assert idsn(SERVER_KEY) == 16760269464699064399
    assert token(CLIENT_KEY) == 2903691705
    assert idsn(CLIENT_KEY) == 10418056681388148929


def test_join_hmacs_known_answer_from_linux_capture():
    # Subflow 2: the client (A) sent the MP_JOIN SYN with R_A, the server (B) answered.
    r_a, r_b = 4196247144, 2919926736
    assert join_synack_hmac(SERVER_KEY, CLIENT_KEY, r_b, r_a) == 4128516244848116541
    assert join_ack_hmac(CLIENT_KEY, SERVER_KEY, r_a, r_b) == bytes.fromhex(
        "251a2edf2deab5eb2bc1c76e4d73b4586774f296"
    )
    # swapping the perspective gives something else
    assert join_synack_hmac(CLIENT_KEY, SERVER_KEY, r_a, r_b) != 4128516244848116541


def test_add_addr_hmac_known_answer_from_linux_capture():
    # Another kernel run: the server (key below) announced id 1 = 10.0.2.2, no port.
    server, client = 9187777210586409660, 12523900425238896672
    addr = ipaddress.IPv4Address("10.0.2.2")
    assert add_addr_hmac(server, client, 1, addr) == 18441438234918246777
    assert add_addr_hmac(server, client, 1, addr, None) == add_addr_hmac(server, client, 1, addr, 0)
    assert add_addr_hmac(client, server, 1, addr) != 18441438234918246777


@pytest.mark.parametrize(
    "key,msg,result",
    [
        # net/mptcp/crypto_test.c: the hex strings' ASCII characters are the key and message
        # (key1 = first 8 characters, key2 = next 8, nonces the 2x4 message characters).
        (
            "0b0b0b0b0b0b0b0b",
            "48692054",
            "8385e24fb4235ac37556b6b886db106284a1da671699f46db1f235ec622dcafa",
        ),
        (
            "aaaaaaaaaaaaaaaa",
            "dddddddd",
            "2c5e219164ff1dca1c4a92318d847bb6b9d44492984e1eb71aff9022f71046e9",
        ),
        (
            "0102030405060708",
            "cdcdcdcd",
            "e73b9ba9969969cefb04aa0d6df18ec2fcc075b6f23b4d8c4da736a5dbbc6e7d",
        ),
    ],
)
def test_linux_kunit_vectors(key, msg, result):
    k = key.encode()
    m = msg.encode()
    assert hmac_sha256(k, m).hex() == result
    k1, k2 = (int.from_bytes(k[:8], "big"), int.from_bytes(k[8:], "big"))
    n1, n2 = (int.from_bytes(m[:4], "big"), int.from_bytes(m[4:], "big"))
    assert join_ack_hmac(k1, k2, n1, n2).hex() == result[:40]
    assert join_synack_hmac(k1, k2, n1, n2) == int(result[:16], 16)


def test_join_hmacs_against_hmac_module():
    rng = random.Random(7)
    for _ in range(20):
        ka, kb = rng.getrandbits(64), rng.getrandbits(64)
        ra, rb = rng.getrandbits(32), rng.getrandbits(32)
        mac_b = hmac.new(
            struct.pack("!QQ", kb, ka), struct.pack("!II", rb, ra), hashlib.sha256
        ).digest()
        mac_a = hmac.new(
            struct.pack("!QQ", ka, kb), struct.pack("!II", ra, rb), hashlib.sha256
        ).digest()
        assert join_synack_hmac(kb, ka, rb, ra) == int.from_bytes(mac_b[:8], "big")
        assert join_ack_hmac(ka, kb, ra, rb) == mac_a[:20]


@pytest.mark.parametrize(
    "addr,port",
    [("10.1.2.3", None), ("10.1.2.3", 8080), ("2001:db8::1", None), ("fe80::1:2", 65535)],
)
def test_add_addr_hmac_message_layout(addr, port):
    a = ipaddress.ip_address(addr)
    ka, kb = 0x1111222233334444, 0x5555666677778888
    msg = bytes([9]) + a.packed + struct.pack("!H", port or 0)
    assert len(msg) == (7 if a.version == 4 else 19)
    want = hmac.new(struct.pack("!QQ", ka, kb), msg, hashlib.sha256).digest()[-8:]
    assert add_addr_hmac(ka, kb, 9, a, port) == int.from_bytes(want, "big")


def test_generate_key_nonzero_64bit_and_seeded():
    class Zeros:
        def __init__(self):
            self.n = 0

        def getrandbits(self, k):
            self.n += 1
            return 0 if self.n < 3 else 42

    assert generate_key(Zeros()) == 42
    a = [generate_key(random.Random(1)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    ks = {generate_key() for _ in range(100)}
    assert len(ks) == 100 and all(0 < k < 2**64 for k in ks)
    assert key_bytes(1) == b"\0" * 7 + b"\1"


def ref_csum(data: bytes) -> int:
    """RFC 1071 word by word with end-around carry, then complemented."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def test_dss_checksum_against_word_by_word_reference():
    rng = random.Random(3)
    for plen in (0, 1, 2, 3, 1399, 1400):
        for _ in range(10):
            dsn, ssn, dlen = rng.getrandbits(64), rng.getrandbits(32), rng.getrandbits(16)
            payload = rng.randbytes(plen)
            pseudo = struct.pack("!QIHH", dsn, ssn, dlen, 0)
            c = dss_checksum(dsn, ssn, dlen, payload)
            assert c == ref_csum(pseudo + payload)
            assert dss_checksum_ok(dsn, ssn, dlen, payload, c)
            assert not dss_checksum_ok(dsn, ssn, dlen, payload, c ^ 0x0100)
            if payload:
                bad = bytes([payload[0] ^ 1]) + payload[1:]
                assert not dss_checksum_ok(dsn, ssn, dlen, bad, c)


def test_dss_checksum_zero_edge_cases():
    # all-zero pseudo-header and payload: sum +0, checksum 0xffff (Linux csum_fold(0))
    assert dss_checksum(0, 0, 0, b"\0\0") == 0xFFFF
    assert dss_checksum_ok(0, 0, 0, b"", 0xFFFF)
    # data whose sum is 0xffff (-0): checksum 0, and the receiver accepts it
    assert dss_checksum(0, 0, 0, b"\xff\xff") == 0
    assert dss_checksum_ok(0, 0, 0, b"\xff\xff", 0)
    # a checksum of 0xffff where 0 was computed is the other zero: accepted, like Linux
    assert dss_checksum_ok(0, 0, 0, b"\xff\xff", 0xFFFF)
