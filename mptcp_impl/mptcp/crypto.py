"""MPTCP v1 cryptography (RFC 8684 3.1, 3.2, 3.3.1, 3.4.1): keys, tokens, IDSNs, HMACs and
the DSS checksum. Pure functions; only ``generate_key`` touches randomness, through the
generator it is given (tests pass a seeded ``random.Random``).

Byte order everywhere is network order, as on the wire: a 64-bit key is hashed as its 8
big-endian bytes, a 32-bit nonce as 4, which is what Linux does (``mptcp_crypto_key_sha``,
``mptcp_crypto_hmac_sha``, ``subflow_generate_hmac``).

Who is "A" and "B": in RFC 8684 3.2, host A initiates the *subflow* (sends the MP_JOIN SYN)
and B answers it, whichever of them opened the MPTCP connection. Each HMAC is keyed with the
*sender's* key first and hashes the *sender's* nonce first:

* SYN/ACK (sent by B): HMAC(Key-B || Key-A, R-B || R-A), leftmost 64 bits;
* third ACK (sent by A): HMAC(Key-A || Key-B, R-A || R-B), leftmost 160 bits;
* ADD_ADDR (sent by either): HMAC(sender's key || receiver's key, id || addr || port),
  rightmost 64 bits.

So every function below takes the *sender's* values first. To check a received HMAC, call the
same function with the peer's key and nonce in the "local"/"sender" slots.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import ipaddress
import secrets
import struct
from typing import Protocol

_Q = struct.Struct("!Q")
_II = struct.Struct("!II")
_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1


class RandomBits(Protocol):
    def getrandbits(self, k: int, /) -> int: ...


def generate_key(rng: RandomBits | None = None) -> int:
    """A random 64-bit key, never 0 (Linux never uses a zero key; 0 also reads as "no key
    yet" in the layer above). ``rng`` defaults to the OS CSPRNG. The caller must still retry
    when the key's token collides with one of its live connections (RFC 8684 3.1)."""
    r = rng if rng is not None else secrets.SystemRandom()
    while True:
        k = r.getrandbits(64)
        if k:
            return k


def key_bytes(key: int) -> bytes:
    """The 8 big-endian bytes of a 64-bit key, as hashed and as carried on the wire."""
    return _Q.pack(key & _U64)


def _sha256_key(key: int) -> bytes:
    return hashlib.sha256(key_bytes(key)).digest()


def token(key: int) -> int:
    """The 32-bit token naming a connection to the host that owns ``key`` (RFC 8684 3.2):
    the most significant 32 bits of SHA-256(key). MP_JOIN SYNs carry the receiver's token."""
    return int.from_bytes(_sha256_key(key)[:4], "big")


def idsn(key: int) -> int:
    """The initial data sequence number of the host that owns ``key`` (RFC 8684 3.1): the
    least significant 64 bits of SHA-256(key). Its first data byte has DSN idsn + 1."""
    return int.from_bytes(_sha256_key(key)[-8:], "big")


def token_and_idsn(key: int) -> tuple[int, int]:
    """Both from one hash (they are always needed together when a key is learned)."""
    d = _sha256_key(key)
    return int.from_bytes(d[:4], "big"), int.from_bytes(d[-8:], "big")


def hmac_sha256(key_bytes: bytes, msg: bytes) -> bytes:
    """HMAC-SHA256 (RFC 2104), the only MAC MPTCP v1 defines (flag H)."""
    return _hmac.new(key_bytes, msg, hashlib.sha256).digest()


def _join_hmac(key_local: int, key_remote: int, nonce_local: int, nonce_remote: int) -> bytes:
    return hmac_sha256(
        key_bytes(key_local) + key_bytes(key_remote),
        _II.pack(nonce_local & _U32, nonce_remote & _U32),
    )


def join_synack_hmac(key_local: int, key_remote: int, nonce_local: int, nonce_remote: int) -> int:
    """The 64-bit HMAC in an MP_JOIN SYN/ACK. "local" is the host *sending* the SYN/ACK (the
    join responder B): leftmost 64 bits of HMAC(Key-B || Key-A, R-B || R-A).

    Responder building it: ``join_synack_hmac(my_key, peer_key, my_nonce, peer_nonce)``.
    Initiator checking it: ``join_synack_hmac(peer_key, my_key, peer_nonce, my_nonce)``."""
    return int.from_bytes(_join_hmac(key_local, key_remote, nonce_local, nonce_remote)[:8], "big")


def join_ack_hmac(key_local: int, key_remote: int, nonce_local: int, nonce_remote: int) -> bytes:
    """The 20-byte HMAC in the MP_JOIN third ACK. "local" is the host *sending* the ACK (the
    join initiator A): leftmost 160 bits of HMAC(Key-A || Key-B, R-A || R-B).

    Initiator building it: ``join_ack_hmac(my_key, peer_key, my_nonce, peer_nonce)``.
    Responder checking it: ``join_ack_hmac(peer_key, my_key, peer_nonce, my_nonce)``."""
    return _join_hmac(key_local, key_remote, nonce_local, nonce_remote)[:20]


def add_addr_hmac(
    key_sender: int,
    key_receiver: int,
    addr_id: int,
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address,
    port: int | None = None,
) -> int:
    """The 64-bit HMAC of an ADD_ADDR announcement (RFC 8684 3.4.1): rightmost 64 bits of
    HMAC(sender's key || receiver's key, addr_id (1 byte) || address (4 or 16 bytes) ||
    port (2 bytes, big-endian, 0 when the option carries no port)). Linux builds the same
    message (``add_addr_generate_hmac``): the port is always hashed, as 0 when absent.

    To check a received ADD_ADDR, pass the peer's key as ``key_sender``."""
    msg = bytes((addr_id & 0xFF,)) + addr.packed + struct.pack("!H", (port or 0) & 0xFFFF)
    return int.from_bytes(
        hmac_sha256(key_bytes(key_sender) + key_bytes(key_receiver), msg)[-8:], "big"
    )


def _ones_complement_sum(data: bytes) -> int:
    """16-bit one's-complement sum with end-around carry (0 only for all-zero data, else
    1..0xffff). Reduces the whole buffer as one integer: 2**16 == 1 (mod 0xffff)."""
    v = int.from_bytes(data, "big")
    if len(data) & 1:
        v <<= 8
    if v == 0:
        return 0
    return v % 0xFFFF or 0xFFFF


def _pseudo_header(dsn64: int, subflow_seq_rel: int, data_len: int, csum: int) -> bytes:
    return struct.pack("!QIHH", dsn64 & _U64, subflow_seq_rel & _U32, data_len & 0xFFFF, csum)


def dss_checksum(dsn64: int, subflow_seq_rel: int, data_len: int, payload: bytes) -> int:
    """The DSS checksum of one mapping (RFC 8684 3.3.1): the Internet checksum (RFC 1071)
    over the pseudo-header (64-bit DSN, even when the option carries 32 bits; subflow
    sequence number relative to the subflow's ISN; data-level length; 16 zero bits) followed
    by all the mapped payload. Linux computes the same (``__mptcp_make_csum``), without the
    TCP rule that turns 0 into 0xffff."""
    s = _ones_complement_sum(_pseudo_header(dsn64, subflow_seq_rel, data_len, 0) + payload)
    return ~s & 0xFFFF


def payload_sum(payload: bytes | memoryview) -> int:
    """The one's-complement sum of a mapping's payload alone (a sender keeps it with the
    mapping, so that each segment carrying it needs only ``dss_checksum_of_sum``)."""
    return _ones_complement_sum(bytes(payload))


def dss_checksum_of_sum(dsn64: int, subflow_seq_rel: int, data_len: int, psum: int) -> int:
    """``dss_checksum`` from the payload's ``payload_sum`` (the pseudo-header has an even
    length, so the two sums add up)."""
    v = _ones_complement_sum(_pseudo_header(dsn64, subflow_seq_rel, data_len, 0)) + psum
    v = 0 if v == 0 else (v % 0xFFFF or 0xFFFF)
    return ~v & 0xFFFF


def dss_checksum_ok(
    dsn64: int, subflow_seq_rel: int, data_len: int, payload: bytes, checksum: int
) -> bool:
    """Verify a received DSS checksum the way Linux does (``validate_data_csum``): the sum
    over the pseudo-header *with* the received checksum plus the payload must fold to
    0xffff. This accepts both one's-complement zeros, unlike comparing with
    ``dss_checksum``."""
    data = _pseudo_header(dsn64, subflow_seq_rel, data_len, checksum & 0xFFFF) + payload
    return _ones_complement_sum(data) == 0xFFFF
