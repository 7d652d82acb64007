"""MPTCP v1 option codec (RFC 8684 section 3): pure functions over bytes.

Every MPTCP suboption travels as TCP option kind 30. The TCP core (``mptcp_impl.tcp.options``)
does not know MPTCP: it hands kind 30 over as ``UnknownOption(30, body)`` where ``body`` is
everything after the kind and length bytes, and it sends an ``UnknownOption`` verbatim. So:

* ``decode(body)`` takes exactly that ``body`` (first byte: subtype nibble + version/flags
  nibble) and returns one of the frozen dataclasses below, or raises ``MptcpOptionError``;
* ``encode(opt)`` returns the whole option (kind 30, length, body) for byte-level checks, and
  ``to_tcp_option(opt)`` wraps the same bytes as the ``UnknownOption`` the TCP core sends;
* ``find_mptcp(options)`` pulls all kind-30 options out of a decoded TCP option list.

Decoding is strict about lengths (a hostile or broken peer must not make us read garbage) and
lenient about reserved bits (RFC 8684: set to zero, ignored on receipt), so a decoded option
re-encodes to bytes that decode to an equal option. Where the RFC leaves a choice, this codec
follows Linux's ``mptcp_parse_option`` unless noted; semantic checks that depend on the
segment (SYN vs ACK, RST flag set) or on negotiation (checksums in use, flag B/H policy) are
left to the caller, which has that context.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..tcp.options import KIND_MPTCP, UnknownOption

MP_CAPABLE = 0
MP_JOIN = 1
DSS = 2
ADD_ADDR = 3
REMOVE_ADDR = 4
MP_PRIO = 5
MP_FAIL = 6
MP_FASTCLOSE = 7
MP_TCPRST = 8
MP_EXPERIMENTAL = 15

SUBTYPE_NAMES = {
    MP_CAPABLE: "MP_CAPABLE",
    MP_JOIN: "MP_JOIN",
    DSS: "DSS",
    ADD_ADDR: "ADD_ADDR",
    REMOVE_ADDR: "REMOVE_ADDR",
    MP_PRIO: "MP_PRIO",
    MP_FAIL: "MP_FAIL",
    MP_FASTCLOSE: "MP_FASTCLOSE",
    MP_TCPRST: "MP_TCPRST",
    MP_EXPERIMENTAL: "MP_EXPERIMENTAL",
}

MPTCP_VERSION = 1
MAX_OPTION_LEN = 40  # the whole TCP option space; one option can never be longer
MAX_BODY_LEN = MAX_OPTION_LEN - 2

# MP_CAPABLE flags byte (RFC 8684 3.1): A B C D E F G H, A the most significant bit.
MPC_FLAG_A = 0x80  # checksum required
MPC_FLAG_B = 0x40  # extensibility (no extension defined: Linux falls back to TCP when set)
MPC_FLAG_C = 0x20  # do not join to the source address of this SYN (Linux: deny_join_id0)
MPC_FLAGS_DG = 0x1E  # crypto negotiation bits not assigned; must be 0 for HMAC-SHA256 alone
MPC_FLAG_H = 0x01  # HMAC-SHA256

# DSS flags byte (RFC 8684 3.3): reserved(3) F m M a A
DSS_A = 0x01  # DATA_ACK present
DSS_a = 0x02  # DATA_ACK is 8 octets
DSS_M = 0x04  # mapping (DSN, subflow seq, data-level length, checksum) present
DSS_m = 0x08  # DSN is 8 octets
DSS_F = 0x10  # DATA_FIN

# MP_TCPRST flags nibble (RFC 8684 3.6): U V W T
RST_FLAG_U = 0x8
RST_FLAG_V = 0x4
RST_FLAG_W = 0x2
RST_FLAG_T = 0x1  # transient: the peer may retry this subflow later

# MP_TCPRST reason codes (RFC 8684 3.6)
RST_UNSPECIFIED = 0
RST_MPTCP_ERROR = 1
RST_NO_RESOURCES = 2
RST_ADMIN_PROHIBITED = 3
RST_TOO_MUCH_OUTSTANDING = 4
RST_UNACCEPTABLE_PERFORMANCE = 5
RST_MIDDLEBOX = 6

U16 = 0xFFFF
U32 = 0xFFFFFFFF
U64 = 0xFFFFFFFFFFFFFFFF

_H = struct.Struct("!H")
_I = struct.Struct("!I")
_Q = struct.Struct("!Q")
_II = struct.Struct("!II")
_QI = struct.Struct("!QI")


class MptcpOptionError(ValueError):
    """A kind-30 option that cannot be decoded. One class for every reason so that a caller
    can count malformed options (Linux silently ignores them) with a single ``except``;
    ``subtype`` tells which suboption it claimed to be, when the option was long enough."""

    def __init__(self, reason: str, subtype: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.subtype = subtype


def _check_uint(name: str, value: Any, bits: int) -> None:
    """Constructor check: dataclasses refuse out-of-range fields so ``encode`` never has to
    truncate silently (a bug in the layer above must not become a wrong option on the wire)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < (1 << bits):
        raise ValueError(f"{name}={value!r} is not a {bits}-bit unsigned integer")


# ---------------------------------------------------------------------------------------------
# Suboptions


@dataclass(frozen=True, slots=True, kw_only=True)
class MpCapable:
    """MP_CAPABLE (RFC 8684 3.1). Which fields are present says which handshake packet it is:
    none on the SYN (length 4), ``sender_key`` on the SYN/ACK (12), both keys on the third ACK
    (20), plus ``data_len`` on the first data packet (22) and ``checksum`` when checksums were
    negotiated (24). On the third ACK and data packet, ``sender_key`` is the key of the host
    sending this ACK and ``receiver_key`` the peer's (both echo the handshake keys).

    Flags: ``checksum_required`` = A, ``extensibility`` = B, ``no_join_source`` = C,
    ``hmac_sha256`` = H; ``crypto_dg`` keeps the unassigned bits D..G (as the 4-bit number
    D<<3|E<<2|F<<1|G) because Linux refuses an MP_CAPABLE with any of them set: the caller
    decides, the codec only preserves them. Keyword-only: too many fields of the same type
    for positions to be read safely.
    """

    version: int = MPTCP_VERSION
    checksum_required: bool = False
    extensibility: bool = False
    no_join_source: bool = False
    hmac_sha256: bool = True
    crypto_dg: int = 0
    sender_key: int | None = None
    receiver_key: int | None = None
    data_len: int | None = None
    checksum: int | None = None

    def __post_init__(self) -> None:
        _check_uint("version", self.version, 4)
        _check_uint("crypto_dg", self.crypto_dg, 4)
        if self.sender_key is not None:
            _check_uint("sender_key", self.sender_key, 64)
        if self.receiver_key is not None:
            if self.sender_key is None:
                raise ValueError("MP_CAPABLE receiver_key needs sender_key")
            _check_uint("receiver_key", self.receiver_key, 64)
        if self.data_len is not None:
            if self.receiver_key is None:
                raise ValueError("MP_CAPABLE data_len needs both keys")
            _check_uint("data_len", self.data_len, 16)
        if self.checksum is not None:
            if self.data_len is None:
                raise ValueError("MP_CAPABLE checksum needs data_len")
            _check_uint("checksum", self.checksum, 16)

    @property
    def length(self) -> int:
        """Length of the encoded TCP option (the value of its length byte)."""
        if self.sender_key is None:
            return 4
        if self.receiver_key is None:
            return 12
        if self.data_len is None:
            return 20
        return 22 if self.checksum is None else 24

    @property
    def flags(self) -> int:
        """The flags byte on the wire."""
        return (
            (MPC_FLAG_A if self.checksum_required else 0)
            | (MPC_FLAG_B if self.extensibility else 0)
            | (MPC_FLAG_C if self.no_join_source else 0)
            | (self.crypto_dg << 1)
            | (MPC_FLAG_H if self.hmac_sha256 else 0)
        )


@dataclass(frozen=True, slots=True)
class MpJoinSyn:
    """MP_JOIN on a SYN (RFC 8684 3.2, length 12): the receiver's token names the connection,
    ``nonce`` is the sender's random R_A for the HMACs, ``addr_id`` the sender's address id."""

    token: int
    nonce: int
    addr_id: int = 0
    backup: bool = False

    def __post_init__(self) -> None:
        _check_uint("token", self.token, 32)
        _check_uint("nonce", self.nonce, 32)
        _check_uint("addr_id", self.addr_id, 8)

    @property
    def length(self) -> int:
        return 12


@dataclass(frozen=True, slots=True)
class MpJoinSynAck:
    """MP_JOIN on a SYN/ACK (length 16): ``hmac64`` is the leftmost 64 bits of the
    responder's HMAC (see ``crypto.join_synack_hmac``), ``nonce`` the responder's R_B."""

    hmac64: int
    nonce: int
    addr_id: int = 0
    backup: bool = False

    def __post_init__(self) -> None:
        _check_uint("hmac64", self.hmac64, 64)
        _check_uint("nonce", self.nonce, 32)
        _check_uint("addr_id", self.addr_id, 8)

    @property
    def length(self) -> int:
        return 16


@dataclass(frozen=True, slots=True)
class MpJoinAck:
    """MP_JOIN on the third ACK (length 24): the initiator's leftmost 160 HMAC bits."""

    hmac160: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.hmac160, bytes) or len(self.hmac160) != 20:
            raise ValueError(f"MP_JOIN ACK hmac160 must be 20 bytes, got {self.hmac160!r}")

    @property
    def length(self) -> int:
        return 24


MpJoin = MpJoinSyn | MpJoinSynAck | MpJoinAck


@dataclass(frozen=True, slots=True)
class Dss:
    """Data Sequence Signal (RFC 8684 3.3): an optional DATA_ACK and an optional mapping.

    ``data_ack``/``dsn`` are None when absent; when present they are the values as sent,
    which are 32-bit when ``data_ack64``/``dsn64`` is False (expand them with ``expand32``).
    ``subflow_seq`` is relative to the subflow's initial sequence number; ``data_len`` 0 with
    a mapping is the infinite mapping (fallback). ``checksum`` is present only with a mapping
    and only when checksums were negotiated; ``data_fin`` may be set with or without a mapping
    (Linux always sends it with one: DSN of the FIN, subflow_seq 0, data_len 1 when alone).
    """

    data_ack: int | None = None
    data_ack64: bool = False
    dsn: int | None = None
    dsn64: bool = False
    subflow_seq: int = 0
    data_len: int = 0
    checksum: int | None = None
    data_fin: bool = False

    def __post_init__(self) -> None:
        if self.data_ack is not None:
            _check_uint("data_ack", self.data_ack, 64 if self.data_ack64 else 32)
        elif self.data_ack64:
            raise ValueError("DSS data_ack64 without data_ack (the flag would be lost)")
        if self.dsn is not None:
            _check_uint("dsn", self.dsn, 64 if self.dsn64 else 32)
            _check_uint("subflow_seq", self.subflow_seq, 32)
            _check_uint("data_len", self.data_len, 16)
            if self.checksum is not None:
                _check_uint("checksum", self.checksum, 16)
        else:
            if self.dsn64:
                raise ValueError("DSS dsn64 without dsn (the flag would be lost)")
            if self.subflow_seq or self.data_len or self.checksum is not None:
                raise ValueError("DSS subflow_seq/data_len/checksum need a dsn (a mapping)")

    @property
    def flags(self) -> int:
        """The DSS flags byte on the wire."""
        f = DSS_F if self.data_fin else 0
        if self.data_ack is not None:
            f |= DSS_A | (DSS_a if self.data_ack64 else 0)
        if self.dsn is not None:
            f |= DSS_M | (DSS_m if self.dsn64 else 0)
        return f

    @property
    def length(self) -> int:
        n = 4
        if self.data_ack is not None:
            n += 8 if self.data_ack64 else 4
        if self.dsn is not None:
            n += (8 if self.dsn64 else 4) + 6 + (0 if self.checksum is None else 2)
        return n

    @property
    def infinite(self) -> bool:
        """An infinite mapping (RFC 8684 3.7): data_len 0 with a mapping."""
        return self.dsn is not None and self.data_len == 0


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class AddAddr:
    """ADD_ADDR (RFC 8684 3.4.1). A new announcement carries ``hmac`` (rightmost 64 bits,
    see ``crypto.add_addr_hmac``); the echo that acknowledges it has ``echo=True`` and no HMAC.
    The address family follows from ``address`` (and, on the wire, from the length: v1 has no
    IPVer field). ``port`` None means "same port as the initial subflow" and is not sent."""

    addr_id: int
    address: IPAddress
    port: int | None = None
    hmac: int | None = None
    echo: bool = False

    def __post_init__(self) -> None:
        _check_uint("addr_id", self.addr_id, 8)
        if not isinstance(self.address, ipaddress.IPv4Address | ipaddress.IPv6Address):
            raise ValueError(f"ADD_ADDR address must be an ipaddress object: {self.address!r}")
        if self.port is not None:
            _check_uint("port", self.port, 16)
        if self.echo:
            if self.hmac is not None:
                raise ValueError("ADD_ADDR echo carries no HMAC")
        elif self.hmac is None:
            raise ValueError("ADD_ADDR (not echo) needs its HMAC")
        else:
            _check_uint("hmac", self.hmac, 64)

    @property
    def length(self) -> int:
        return (
            4
            + len(self.address.packed)
            + (0 if self.port is None else 2)
            + (0 if self.hmac is None else 8)
        )


@dataclass(frozen=True, slots=True)
class RemoveAddr:
    """REMOVE_ADDR (RFC 8684 3.4.2): one or more address ids (a list becomes a tuple).
    Linux accepts at most 8 ids per option; the codec allows what fits in the option space."""

    addr_ids: tuple[int, ...]

    def __post_init__(self) -> None:
        ids = tuple(self.addr_ids)
        object.__setattr__(self, "addr_ids", ids)
        if not 1 <= len(ids) <= MAX_OPTION_LEN - 3:
            raise ValueError(f"REMOVE_ADDR needs 1..{MAX_OPTION_LEN - 3} ids, got {len(ids)}")
        for i in ids:
            _check_uint("addr_id", i, 8)

    @property
    def length(self) -> int:
        return 3 + len(self.addr_ids)


@dataclass(frozen=True, slots=True)
class MpPrio:
    """MP_PRIO (RFC 8684 3.3.8): the sender asks the peer to treat this subflow as backup or
    not. RFC 8684 defines length 3 only; RFC 6824's optional address id (length 4) is still
    decoded (tshark does too) and kept in ``addr_id``, but Linux ignores a length-4 MP_PRIO,
    so a sender talking to Linux must leave ``addr_id`` None."""

    backup: bool
    addr_id: int | None = None

    def __post_init__(self) -> None:
        if self.addr_id is not None:
            _check_uint("addr_id", self.addr_id, 8)

    @property
    def length(self) -> int:
        return 3 if self.addr_id is None else 4


@dataclass(frozen=True, slots=True)
class MpFail:
    """MP_FAIL (RFC 8684 3.7, length 12): the 64-bit DSN at which checksum failure began."""

    dsn: int

    def __post_init__(self) -> None:
        _check_uint("dsn", self.dsn, 64)

    @property
    def length(self) -> int:
        return 12


@dataclass(frozen=True, slots=True)
class FastClose:
    """MP_FASTCLOSE (RFC 8684 3.5, length 12): carries the *receiver's* key, proving the
    sender knows the connection."""

    receiver_key: int

    def __post_init__(self) -> None:
        _check_uint("receiver_key", self.receiver_key, 64)

    @property
    def length(self) -> int:
        return 12


@dataclass(frozen=True, slots=True)
class TcpRst:
    """MP_TCPRST (RFC 8684 3.6, length 4, on a RST): why the subflow was reset. ``transient``
    is flag T; U, V and W are unassigned and only preserved. Linux ignores it without RST."""

    reason: int = RST_UNSPECIFIED
    transient: bool = False
    flag_u: bool = False
    flag_v: bool = False
    flag_w: bool = False

    def __post_init__(self) -> None:
        _check_uint("reason", self.reason, 8)

    @property
    def flags(self) -> int:
        return (
            (RST_FLAG_U if self.flag_u else 0)
            | (RST_FLAG_V if self.flag_v else 0)
            | (RST_FLAG_W if self.flag_w else 0)
            | (RST_FLAG_T if self.transient else 0)
        )

    @property
    def length(self) -> int:
        return 4


MptcpOption = (
    MpCapable
    | MpJoinSyn
    | MpJoinSynAck
    | MpJoinAck
    | Dss
    | AddAddr
    | RemoveAddr
    | MpPrio
    | MpFail
    | FastClose
    | TcpRst
)


# ---------------------------------------------------------------------------------------------
# Encoding


def _head(subtype: int, nibble: int, length: int) -> bytes:
    return bytes((KIND_MPTCP, length, (subtype << 4) | nibble))


def encode(opt: MptcpOption) -> bytes:
    """The whole TCP option: kind 30, length, subtype/nibble byte, fields. Its length byte
    always equals ``opt.length`` (asserted), and the result never exceeds the option space."""
    t = type(opt)
    if t is Dss:
        out = _head(DSS, 0, opt.length) + bytes((opt.flags,))
        if opt.data_ack is not None:
            out += (_Q if opt.data_ack64 else _I).pack(opt.data_ack)
        if opt.dsn is not None:
            out += (_Q if opt.dsn64 else _I).pack(opt.dsn)
            out += struct.pack("!IH", opt.subflow_seq, opt.data_len)
            if opt.checksum is not None:
                out += _H.pack(opt.checksum)
    elif t is MpCapable:
        out = _head(MP_CAPABLE, opt.version, opt.length) + bytes((opt.flags,))
        if opt.sender_key is not None:
            out += _Q.pack(opt.sender_key)
        if opt.receiver_key is not None:
            out += _Q.pack(opt.receiver_key)
        if opt.data_len is not None:
            out += _H.pack(opt.data_len)
        if opt.checksum is not None:
            out += _H.pack(opt.checksum)
    elif t is MpJoinSyn:
        out = _head(MP_JOIN, int(opt.backup), 12) + bytes((opt.addr_id,))
        out += _II.pack(opt.token, opt.nonce)
    elif t is MpJoinSynAck:
        out = _head(MP_JOIN, int(opt.backup), 16) + bytes((opt.addr_id,))
        out += _QI.pack(opt.hmac64, opt.nonce)
    elif t is MpJoinAck:
        out = _head(MP_JOIN, 0, 24) + b"\x00" + opt.hmac160
    elif t is AddAddr:
        out = _head(ADD_ADDR, int(opt.echo), opt.length) + bytes((opt.addr_id,))
        out += opt.address.packed
        if opt.port is not None:
            out += _H.pack(opt.port)
        if opt.hmac is not None:
            out += _Q.pack(opt.hmac)
    elif t is RemoveAddr:
        out = _head(REMOVE_ADDR, 0, opt.length) + bytes(opt.addr_ids)
    elif t is MpPrio:
        out = _head(MP_PRIO, int(opt.backup), opt.length)
        if opt.addr_id is not None:
            out += bytes((opt.addr_id,))
    elif t is MpFail:
        out = _head(MP_FAIL, 0, 12) + b"\x00" + _Q.pack(opt.dsn)
    elif t is FastClose:
        out = _head(MP_FASTCLOSE, 0, 12) + b"\x00" + _Q.pack(opt.receiver_key)
    elif t is TcpRst:
        out = _head(MP_TCPRST, opt.flags, 4) + bytes((opt.reason,))
    else:
        raise TypeError(f"not an MPTCP option: {opt!r}")
    assert len(out) == opt.length == out[1], (opt, out)
    if len(out) > MAX_OPTION_LEN:  # only a REMOVE_ADDR can get here, and its constructor stops it
        raise ValueError(f"MPTCP option of {len(out)} bytes does not fit the option space")
    return out


_DSS_ACK64_HEAD = bytes(((DSS << 4), DSS_A | DSS_a))


def dss_option(d: Dss) -> UnknownOption:
    """``to_tcp_option`` of a DSS, the DATA_ACK-only form (every pure ACK of a subflow, at a
    few tens of thousands a second on a receiver) built without the generic encoder."""
    if d.dsn is None and d.data_ack64 and not d.data_fin and d.data_ack is not None:
        return UnknownOption(KIND_MPTCP, _DSS_ACK64_HEAD + d.data_ack.to_bytes(8, "big"))
    return to_tcp_option(d)


_DSS_MAP64 = struct.Struct("!BBQQIH")
_DSS_MAP64_FLAGS = DSS_A | DSS_a | DSS_M | DSS_m


def dss_map_option(data_ack: int, dsn: int, subflow_seq: int, data_len: int) -> UnknownOption:
    """``to_tcp_option(Dss(data_ack, True, dsn, True, subflow_seq, data_len))``, the DSS of
    every data segment (64-bit DATA_ACK and DSN, no checksum, no DATA_FIN), in one pack: no
    dataclass, no validation, no generic encoder. The caller's values must be in range
    (64, 64, 32 and 16 bits)."""
    return UnknownOption(
        KIND_MPTCP,
        _DSS_MAP64.pack(DSS << 4, _DSS_MAP64_FLAGS, data_ack, dsn, subflow_seq, data_len),
    )


def to_tcp_option(opt: MptcpOption) -> UnknownOption:
    """The form the TCP core sends (and ``decode_options`` yields): ``UnknownOption(30, body)``."""
    return UnknownOption(KIND_MPTCP, encode(opt)[2:])


# ---------------------------------------------------------------------------------------------
# Decoding


def _bad(subtype: int | None, reason: str) -> MptcpOptionError:
    name = SUBTYPE_NAMES.get(subtype, f"subtype {subtype}") if subtype is not None else "MPTCP"
    return MptcpOptionError(f"{name}: {reason}", subtype)


def decode(raw: bytes | bytearray | memoryview) -> MptcpOption:
    """Decode one MPTCP option from its body: the bytes after kind and length, exactly
    ``UnknownOption.data`` from the TCP codec. The option's length is ``len(raw) + 2``.
    Raises ``MptcpOptionError`` for anything malformed; never any other exception."""
    body = bytes(raw)
    blen = len(body)
    if blen == 0:
        raise _bad(None, "option truncated before its subtype (length 2)")
    if blen > MAX_BODY_LEN:
        raise _bad(None, f"length {blen + 2} exceeds the TCP option space")
    subtype = body[0] >> 4
    nibble = body[0] & 0x0F
    olen = blen + 2
    if subtype == DSS:
        return _decode_dss(body, olen)
    if subtype == MP_CAPABLE:
        return _decode_mpc(body, nibble, olen)
    if subtype == MP_JOIN:
        if olen == 12:
            token, nonce = _II.unpack_from(body, 2)
            return MpJoinSyn(token, nonce, body[1], bool(nibble & 1))
        if olen == 16:
            hmac64, nonce = _QI.unpack_from(body, 2)
            return MpJoinSynAck(hmac64, nonce, body[1], bool(nibble & 1))
        if olen == 24:
            return MpJoinAck(body[2:22])
        raise _bad(subtype, f"bad length {olen} (SYN 12, SYN/ACK 16, ACK 24)")
    if subtype == ADD_ADDR:
        return _decode_add_addr(body, nibble, olen)
    if subtype == REMOVE_ADDR:
        if olen < 4:
            raise _bad(subtype, f"bad length {olen}: no address id")
        return RemoveAddr(tuple(body[1:]))
    if subtype == MP_PRIO:
        if olen == 3:
            return MpPrio(bool(nibble & 1))
        if olen == 4:
            return MpPrio(bool(nibble & 1), body[1])
        raise _bad(subtype, f"bad length {olen} (3, or 4 with an RFC 6824 address id)")
    if subtype == MP_FAIL:
        if olen != 12:
            raise _bad(subtype, f"bad length {olen} (12)")
        return MpFail(_Q.unpack_from(body, 2)[0])
    if subtype == MP_FASTCLOSE:
        if olen != 12:
            raise _bad(subtype, f"bad length {olen} (12)")
        return FastClose(_Q.unpack_from(body, 2)[0])
    if subtype == MP_TCPRST:
        if olen != 4:
            raise _bad(subtype, f"bad length {olen} (4)")
        return TcpRst(
            body[1],
            transient=bool(nibble & RST_FLAG_T),
            flag_u=bool(nibble & RST_FLAG_U),
            flag_v=bool(nibble & RST_FLAG_V),
            flag_w=bool(nibble & RST_FLAG_W),
        )
    raise _bad(subtype, "unknown subtype")


def _decode_mpc(body: bytes, version: int, olen: int) -> MpCapable:
    if olen not in (4, 12, 20, 22, 24):
        raise _bad(MP_CAPABLE, f"bad length {olen} (4, 12, 20, 22 or 24)")
    # Like Linux: a SYN (length 4) may announce a later version (we answer with 1); any
    # other MP_CAPABLE must be version 1. Version 0 (RFC 6824) is not spoken at all.
    if version == 0 or (olen != 4 and version != MPTCP_VERSION):
        raise _bad(MP_CAPABLE, f"unsupported version {version} at length {olen}")
    flags = body[1]
    sender_key = _Q.unpack_from(body, 2)[0] if olen >= 12 else None
    receiver_key = _Q.unpack_from(body, 10)[0] if olen >= 20 else None
    data_len = _H.unpack_from(body, 18)[0] if olen >= 22 else None
    checksum = _H.unpack_from(body, 20)[0] if olen == 24 else None
    return MpCapable(
        version=version,
        checksum_required=bool(flags & MPC_FLAG_A),
        extensibility=bool(flags & MPC_FLAG_B),
        no_join_source=bool(flags & MPC_FLAG_C),
        hmac_sha256=bool(flags & MPC_FLAG_H),
        crypto_dg=(flags & MPC_FLAGS_DG) >> 1,
        sender_key=sender_key,
        receiver_key=receiver_key,
        data_len=data_len,
        checksum=checksum,
    )


def _dss_layout(flags: int, checksum: bool) -> struct.Struct:
    """The fields after a DSS's flags byte, for the flag bits A, a, M, m (one unpack_from)."""
    fmt = "!"
    if flags & DSS_A:
        fmt += "Q" if flags & DSS_a else "I"
    if flags & DSS_M:
        fmt += ("Q" if flags & DSS_m else "I") + "IH" + ("H" if checksum else "")
    return struct.Struct(fmt)


_new_dss = object.__new__
_DSS_SLOTS = [
    getattr(Dss, f).__set__
    for f in (
        "data_ack",
        "data_ack64",
        "dsn",
        "dsn64",
        "subflow_seq",
        "data_len",
        "checksum",
        "data_fin",
    )
]
_DSS_LAYOUT = {(f, c): _dss_layout(f, c) for f in range(16) for c in (False, True)}


def _decode_dss(body: bytes, olen: int) -> Dss:
    if olen < 4:
        raise _bad(DSS, f"bad length {olen}: truncated before its flags")
    flags = body[1]
    has_ack = bool(flags & DSS_A)
    ack64 = has_ack and bool(flags & DSS_a)  # 'a' means nothing without 'A': ignored
    has_map = bool(flags & DSS_M)
    dsn64 = has_map and bool(flags & DSS_m)
    expected = 4 + (8 if ack64 else 4 if has_ack else 0) + ((14 if dsn64 else 10) if has_map else 0)
    checksum_present = has_map and olen == expected + 2
    # Linux also tolerates 2 stray bytes after a DATA_ACK without mapping; the RFC puts the
    # checksum in the mapping only, so that is malformed here.
    if olen != expected and not checksum_present:
        raise _bad(
            DSS,
            f"bad length {olen} for flags 0x{flags:02x} (expected {expected}"
            + (f" or {expected + 2} with checksum)" if has_map else ")"),
        )
    vals = _DSS_LAYOUT[flags & 0x0F, checksum_present].unpack_from(body, 2)
    data_ack = vals[0] if has_ack else None
    if has_map:
        m = 1 if has_ack else 0
        dsn, ssn, dlen = vals[m], vals[m + 1], vals[m + 2]
        checksum = vals[m + 3] if checksum_present else None
    else:
        dsn = checksum = None
        ssn = dlen = 0
    d = _new_dss(Dss)  # fields unpacked from fixed widths: in range, no __post_init__ check
    vals = (data_ack, ack64, dsn, dsn64, ssn, dlen, checksum, bool(flags & DSS_F))
    for put, v in zip(_DSS_SLOTS, vals, strict=True):
        put(d, v)
    return d


# ADD_ADDR length -> (address bytes, port present), separately for echo and announcement.
_ADD_ADDR_ECHO = {8: (4, False), 10: (4, True), 20: (16, False), 22: (16, True)}
_ADD_ADDR_HMAC = {16: (4, False), 18: (4, True), 28: (16, False), 30: (16, True)}


def _decode_add_addr(body: bytes, nibble: int, olen: int) -> AddAddr:
    echo = bool(nibble & 1)
    table = _ADD_ADDR_ECHO if echo else _ADD_ADDR_HMAC
    shape = table.get(olen)
    if shape is None:
        raise _bad(
            ADD_ADDR,
            f"bad length {olen} for {'an echo' if echo else 'an announcement'} "
            f"(expected one of {sorted(table)})",
        )
    alen, has_port = shape
    raw_addr = body[2 : 2 + alen]
    address: IPAddress = (
        ipaddress.IPv4Address(raw_addr) if alen == 4 else ipaddress.IPv6Address(raw_addr)
    )
    i = 2 + alen
    port = None
    if has_port:
        port = _H.unpack_from(body, i)[0]
        i += 2
    hmac = None if echo else _Q.unpack_from(body, i)[0]
    return AddAddr(body[1], address, port, hmac, echo)


# ---------------------------------------------------------------------------------------------
# Helpers


def find_mptcp(options: Iterable[object]) -> list[MptcpOption | MptcpOptionError]:
    """Decode every kind-30 option in a TCP core option list, in order. Malformed ones come
    back as their ``MptcpOptionError`` instead of raising, so that one bad option neither hides
    the good ones of the same segment nor goes uncounted (Linux ignores it and goes on)."""
    out: list[MptcpOption | MptcpOptionError] = []
    for o in options:
        if isinstance(o, UnknownOption) and o.kind == KIND_MPTCP:
            try:
                out.append(decode(o.data))
            except MptcpOptionError as e:
                out.append(e)
    return out


def expand32(value32: int, reference64: int) -> int:
    """The 64-bit sequence number whose low 32 bits are ``value32`` and which lies nearest to
    ``reference64`` (RFC 8684 3.3.1: 32-bit DSNs and DATA_ACKs are the low bits of the 64-bit
    space, the high bits are inferred). The result lies in [reference - 2**31, reference +
    2**31), modulo 2**64 (the DSN space wraps too): Linux's ``__mptcp_expand_seq`` rule (it
    breaks the tie at exactly 2**31 differently; that case is ambiguous anyway). Use the last
    DATA_ACK as reference for DATA_ACKs and the end of the previous mapping for DSNs (Linux's
    ``expand_seq`` for DSNs keeps the high bits of that end + 1 instead, which agrees as long
    as mappings follow each other closely).
    """
    value32 &= U32
    reference64 &= U64
    cand = (reference64 & ~U32) | value32
    diff = cand - reference64
    if diff >= 1 << 31:
        cand -= 1 << 32
    elif diff < -(1 << 31):
        cand += 1 << 32
    return cand & U64
