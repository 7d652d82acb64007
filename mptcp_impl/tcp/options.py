"""TCP option codec (RFC 9293 3.1, RFC 7323, RFC 2018): pure functions over bytes.

Options this stack understands become small slotted dataclasses; anything else (notably MPTCP,
kind 30) passes through as ``UnknownOption`` so that the layer above can decode it without
this module knowing about it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import MalformedSegment

KIND_EOL = 0
KIND_NOP = 1
KIND_MSS = 2
KIND_WSCALE = 3
KIND_SACK_PERM = 4
KIND_SACK = 5
KIND_TIMESTAMPS = 8
KIND_MPTCP = 30

MAX_OPTIONS_LEN = 40

_TS = struct.Struct("!II")
_TS_FULL = struct.Struct("!BBBBII")  # NOP NOP kind len tsval tsecr: the common 12-byte layout
_TS_PREFIX = b"\x01\x01\x08\x0a"
_H = struct.Struct("!H")


@dataclass(slots=True)
class MSS:
    value: int


@dataclass(slots=True)
class WindowScale:
    shift: int


@dataclass(slots=True)
class SackPermitted:
    pass


@dataclass(slots=True)
class Sack:
    """SACK blocks as (left, right) wire sequence numbers, right edge exclusive."""

    blocks: list[tuple[int, int]]


@dataclass(slots=True)
class Timestamps:
    tsval: int
    tsecr: int


@dataclass(slots=True)
class UnknownOption:
    kind: int
    data: bytes


Option = MSS | WindowScale | SackPermitted | Sack | Timestamps | UnknownOption


def decode_options(buf: bytes) -> list[Option]:
    """Parse the options area of a TCP header. EOL ends parsing; NOPs are dropped."""
    n = len(buf)
    # Fast path: the segments of a timestamp-enabled connection start with NOP NOP TS (Linux's
    # layout); an MPTCP subflow's ACKs then carry one DSS after it.
    if n >= 12 and buf[:4] == _TS_PREFIX:
        ts = Timestamps(*_TS.unpack_from(buf, 4))
        if n == 12:
            return [ts]
        if n >= 14 and buf[12] == KIND_MPTCP and buf[13] == n - 12:
            return [ts, UnknownOption(KIND_MPTCP, bytes(buf[14:]))]
        out: list[Option] = [ts]
        i = 12
    else:
        out = []
        i = 0
    while i < n:
        kind = buf[i]
        if kind == KIND_EOL:
            break
        if kind == KIND_NOP:
            i += 1
            continue
        if i + 1 >= n:
            raise MalformedSegment(f"option kind {kind} truncated before its length")
        length = buf[i + 1]
        if length < 2:
            raise MalformedSegment(f"option kind {kind} has length {length}")
        if i + length > n:
            raise MalformedSegment(f"option kind {kind} length {length} runs past the header")
        body = buf[i + 2 : i + length]
        out.append(_decode_one(kind, bytes(body)))
        i += length
    return out


def _decode_one(kind: int, body: bytes) -> Option:
    blen = len(body)
    if kind == KIND_TIMESTAMPS:
        if blen != 8:
            raise MalformedSegment(f"timestamps option length {blen + 2}")
        return Timestamps(*_TS.unpack(body))
    if kind == KIND_SACK:
        if blen == 0 or blen % 8:
            raise MalformedSegment(f"SACK option length {blen + 2}")
        vals = struct.unpack(f"!{blen // 4}I", body)
        return Sack([(vals[j], vals[j + 1]) for j in range(0, len(vals), 2)])
    if kind == KIND_MSS:
        if blen != 2:
            raise MalformedSegment(f"MSS option length {blen + 2}")
        return MSS(_H.unpack(body)[0])
    if kind == KIND_WSCALE:
        if blen != 1:
            raise MalformedSegment(f"window scale option length {blen + 2}")
        return WindowScale(body[0])
    if kind == KIND_SACK_PERM:
        if blen != 0:
            raise MalformedSegment(f"SACK-permitted option length {blen + 2}")
        return SackPermitted()
    return UnknownOption(kind, body)


def option_length(opt: Option) -> int:
    """Encoded size in bytes, before padding (timestamps and SACK include their 2 NOPs)."""
    t = type(opt)
    if t is Timestamps:
        return 12
    if t is Sack:
        return 4 + 8 * len(opt.blocks)
    if t is MSS:
        return 4
    if t is WindowScale:
        return 3
    if t is SackPermitted:
        return 2
    return 2 + len(opt.data)


def encoded_length(opts: list[Option]) -> int:
    """Size of ``encode_options(opts)``, padding included."""
    if len(opts) == 1 and type(opts[0]) is Timestamps:
        return 12
    n = 0
    for o in opts:
        n += option_length(o)
    return (n + 3) & ~3


def _encode_one(o: Option) -> bytes:
    t = type(o)
    if t is Timestamps:
        return _TS_FULL.pack(1, 1, 8, 10, o.tsval & 0xFFFFFFFF, o.tsecr & 0xFFFFFFFF)
    if t is Sack:
        flat = [v & 0xFFFFFFFF for b in o.blocks for v in b]
        return struct.pack(f"!BBBB{len(flat)}I", 1, 1, KIND_SACK, 2 + 8 * len(o.blocks), *flat)
    if t is MSS:
        return struct.pack("!BBH", KIND_MSS, 4, o.value)
    if t is WindowScale:
        return bytes((KIND_WSCALE, 3, o.shift))
    if t is SackPermitted:
        return b"\x04\x02"
    if t is UnknownOption:
        if len(o.data) > 38:
            raise ValueError(f"option kind {o.kind} too long ({len(o.data)} bytes of data)")
        return bytes((o.kind, 2 + len(o.data))) + bytes(o.data)
    raise TypeError(f"not a TCP option: {o!r}")


def encode_options(opts: list[Option]) -> bytes:
    """Encode options, NOP-aligning timestamps/SACK (as Linux does) and EOL-padding to 4 bytes."""
    if len(opts) == 1 and type(opts[0]) is Timestamps:
        o = opts[0]
        return _TS_FULL.pack(1, 1, 8, 10, o.tsval & 0xFFFFFFFF, o.tsecr & 0xFFFFFFFF)
    out = b"".join([_encode_one(o) for o in opts])
    pad = -len(out) & 3
    if pad:
        out += b"\x00" * pad
    if len(out) > MAX_OPTIONS_LEN:
        raise ValueError(f"options take {len(out)} bytes, more than {MAX_OPTIONS_LEN}")
    return out
