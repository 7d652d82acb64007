"""Read pcap/pcapng files into one row per TCP segment, every TCP and MPTCP option decoded.

Why our own parser: tshark is the reference but exports ~20-40k packets/s; we need the whole table
anyway (pandas), and reading it ourselves is 20x+ faster. tshark stays the oracle in the tests.

How: the record chain is walked once (one read per record: only the lengths are sequential), then
the segments of the common layouts (Ethernet/SLL/SLL2/raw, IPv4 without options or IPv6 without
extension headers, TCP options [NOP NOP TS] [DSS] [NOPs]: nearly every data segment and ACK) are
read for all records at once with numpy at fixed offsets. Every other record (handshakes, SACK,
ADD_ADDR, VLANs, fragments, cut options, ...) goes through the per-segment path, which knows every
layout; `parse_buffer(..., fast=False)` sends everything there, and the tests check that both give
the same table.

Captures are headers-only (snaplen ~128), so lengths come from the IP and TCP headers, never from
the captured length.
"""

from __future__ import annotations

import os
import socket
import struct
from array import array as A
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa


class CaptureError(Exception):
    """A pcap that cannot be read: says which file, and where (frame number, byte offset)."""

    def __init__(
        self,
        path: str | os.PathLike,
        message: str,
        *,
        offset: int | None = None,
        frame: int | None = None,
    ) -> None:
        self.path = str(path)
        self.offset = offset
        self.frame = frame
        where = []
        if frame is not None:
            where.append(f"frame {frame}")
        if offset is not None:
            where.append(f"byte offset {offset}")
        loc = f" ({', '.join(where)})" if where else ""
        super().__init__(f"{self.path}: {message}{loc}")


# Link types we understand (pcap LINKTYPE_* values).
LINK_ETHERNET, LINK_NULL, LINK_RAW, LINK_LOOP = 1, 0, 101, 108
LINK_SLL, LINK_SLL2, LINK_IPV4, LINK_IPV6 = 113, 276, 228, 229
_KNOWN_LINKS = {
    LINK_ETHERNET,
    LINK_NULL,
    LINK_RAW,
    LINK_LOOP,
    LINK_SLL,
    LINK_SLL2,
    LINK_IPV4,
    LINK_IPV6,
    12,
    14,
}

_U16 = struct.Struct("!H").unpack_from
_U32 = struct.Struct("!I").unpack_from
_U64 = struct.Struct("!Q").unpack_from
_TCP = struct.Struct("!HHIIHH").unpack_from
_TS = struct.Struct("!II").unpack_from
# Ethernet type, IPv4 version/IHL, total length, fragment field, protocol, addresses, TCP header.
_ETH_IP4_TCP = struct.Struct("!12xHBxH2xHxB2x4s4sHHIIHH").unpack_from
_NOP_NOP_TS = struct.Struct("!III").unpack_from  # 01 01 08 0a, TSval, TSecr


# ---- records -----------------------------------------------------------------------------------
#
# Why columns: walking the record chain is the only part that must be sequential (each record's
# length says where the next one starts); everything else, timestamps included, is read for all
# records at once with numpy.


@dataclass
class Records:
    """Every frame of a capture as columns, in file order. A broken record (truncated, corrupt)
    ends the table: the frames before it are listed and `error` says what broke, to be raised
    once those frames have been parsed (so an earlier malformed packet is reported first)."""

    frame: np.ndarray  # int64, 1-based frame number
    offset: np.ndarray  # int64, byte offset of the record header (pcap) or block (pcapng)
    time: np.ndarray  # float64, seconds
    link: np.ndarray  # int64, link type
    start: np.ndarray  # int64, byte offset of the first captured byte
    caplen: np.ndarray  # int64
    orig: np.ndarray  # int64, length on the wire
    error: CaptureError | None = None

    def __len__(self) -> int:
        return len(self.frame)

    def rows(
        self, sel: np.ndarray | None = None
    ) -> Iterator[tuple[int, int, float, int, int, int, int]]:
        """(frame, offset, time, link, start, caplen, origlen) of the selected records."""
        cols = (self.frame, self.offset, self.time, self.link, self.start, self.caplen, self.orig)
        if sel is not None:
            cols = tuple(c[sel] for c in cols)
        return zip(*(c.tolist() for c in cols), strict=True)

    def head(self, k: int, error: CaptureError) -> Records:
        """The first k records, the rest replaced by `error`."""
        return Records(
            self.frame[:k],
            self.offset[:k],
            self.time[:k],
            self.link[:k],
            self.start[:k],
            self.caplen[:k],
            self.orig[:k],
            error,
        )


def _np(a: A, dtype) -> np.ndarray:
    return np.frombuffer(a, dtype=dtype) if len(a) else np.zeros(0, dtype=dtype)


def _gather(buf: bytes, pos: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Rows of the structured `dtype` read at byte positions `pos` (each pos + itemsize must be
    within buf): a window view with a stride of one byte, fancy-indexed as opaque bytes (a
    memcpy per row, several times faster than indexing the structured view) and viewed back."""
    n = len(buf) - dtype.itemsize + 1
    if n <= 0 or len(pos) == 0:
        return np.zeros(len(pos), dtype=dtype)
    view = np.ndarray(shape=(n,), dtype=f"V{dtype.itemsize}", buffer=buf, strides=(1,))
    return view[pos].view(dtype)


def _rows(a: np.ndarray, sel: np.ndarray) -> np.ndarray:
    """a[sel] for a structured array, copied as opaque bytes (see _gather)."""
    return a.view(f"V{a.dtype.itemsize}")[sel].view(a.dtype)


def _pcap_table(buf: bytes, path: str) -> Records:
    magic = buf[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise CaptureError(path, f"not a pcap file (magic {magic.hex()})", offset=0)
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    if len(buf) < 24:
        raise CaptureError(path, "truncated pcap file header", offset=len(buf))
    link = struct.unpack_from(endian + "I", buf, 20)[0] & 0x0FFFFFFF
    if link not in _KNOWN_LINKS:
        raise CaptureError(path, f"unsupported link type {link}", offset=20)
    # the chain walk, as lean as Python allows (one read and one append per record); the
    # lengths are checked afterwards, with numpy, and the table ends at the first bad one
    incl_at = struct.Struct(endian + "I").unpack_from
    offs = A("q")
    add = offs.append
    off, n = 24, len(buf)
    lim = n - 16
    while off <= lim:
        add(off)
        off += 16 + incl_at(buf, off + 8)[0]
    o = _np(offs, np.int64)
    u4 = endian + "u4"
    hdr = _gather(buf, o, np.dtype([("sec", u4), ("frac", u4), ("incl", u4), ("orig", u4)]))
    incl = hdr["incl"].astype(np.int64)
    bad = np.flatnonzero((incl > 262144) | (o + 16 + incl > n))
    error = None
    if len(bad):
        k = int(bad[0])
        error = CaptureError(
            path,
            f"truncated or corrupt record: {incl[k]} captured bytes "
            f"announced, {n - o[k] - 16} left",
            offset=int(o[k]),
            frame=k + 1,
        )
        o, hdr, incl = o[:k], hdr[:k], incl[:k]
    elif off < n:
        error = CaptureError(
            path,
            f"truncated record header ({n - off} of 16 bytes)",
            offset=off,
            frame=len(o) + 1,
        )
    div = 1e-9 if nano else 1e-6
    return Records(
        frame=np.arange(1, len(o) + 1, dtype=np.int64),
        offset=o,
        # as Python computes sec + frac * div: the same IEEE operations, the same doubles
        time=hdr["sec"].astype(np.float64) + hdr["frac"].astype(np.float64) * div,
        link=np.full(len(o), link, dtype=np.int64),
        start=o + 16,
        caplen=incl,
        orig=hdr["orig"].astype(np.int64),
        error=error,
    )


def _pcapng_table(buf: bytes, path: str) -> Records:
    n, off = len(buf), 0
    endian = "<"
    ifaces: list[tuple[int, float]] = []  # (link type, seconds per unit), every section's
    base = 0  # index in ifaces of the current section's interface 0
    blocks, kinds, bases, nifs, bigs = A("q"), A("b"), A("q"), A("q"), A("b")
    error = None
    while off < n:
        if off + 12 > n:
            error = CaptureError(
                path, "truncated pcapng block header", offset=off, frame=len(blocks) + 1
            )
            break
        if buf[off : off + 4] == b"\x0a\x0d\x0d\x0a":
            endian = "<" if buf[off + 8 : off + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            base = len(ifaces)
        btype, blen = struct.unpack_from(endian + "II", buf, off)
        if blen < 12 or blen % 4 or off + blen > n:
            error = CaptureError(
                path,
                f"truncated or corrupt pcapng block (length {blen})",
                offset=off,
                frame=len(blocks) + 1,
            )
            break
        if btype == 1:  # interface description
            link = struct.unpack_from(endian + "H", buf, off + 8)[0]
            res = 1e-6
            o = off + 16
            while o + 4 <= off + blen - 4:
                code, olen = struct.unpack_from(endian + "HH", buf, o)
                if code == 0:
                    break
                if code == 9 and olen >= 1:
                    v = buf[o + 4]
                    res = 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0**-v
                o += 4 + ((olen + 3) & ~3)
            ifaces.append((link, res))
        elif btype in (6, 3):
            blocks.append(off)
            kinds.append(btype)
            bases.append(base)
            nifs.append(len(ifaces) - base)
            bigs.append(endian == ">")
        off += blen
    o = _np(blocks, np.int64)
    big = _np(bigs, np.int8).astype(bool)
    # an EPB's fixed part (an SPB uses the first three); a short block at the very end of the
    # file is read from a zero-padded copy
    names = ("btype", "blen", "iid", "hi", "lo", "incl", "orig")
    le_dt = np.dtype([(f, "<u4") for f in names])
    gbuf = buf if not len(o) or o[-1] + le_dt.itemsize <= n else buf + bytes(le_dt.itemsize)
    le = _gather(gbuf, o, le_dt)
    if big.any():  # a big-endian section
        be = _gather(gbuf, o, np.dtype([(f, ">u4") for f in names])).astype(le_dt)
        le = np.where(big, be, le)
    blen = le["blen"].astype(np.int64)
    epb = _np(kinds, np.int8) == 6
    # a simple packet block: no timestamp, interface 0, its length where the EPB has iid
    iid = np.where(epb, le["iid"], 0).astype(np.int64)
    orig = np.where(epb, le["orig"], le["iid"]).astype(np.int64)
    incl = np.where(epb, le["incl"].astype(np.int64), np.minimum(orig, blen - 16))
    start = o + np.where(epb, 28, 12)
    ticks = np.where(epb, (le["hi"].astype(np.uint64) << np.uint64(32)) | le["lo"], 0)
    links = np.array([i[0] for i in ifaces] + [0], dtype=np.int64)
    resol = np.array([i[1] for i in ifaces] + [0.0], dtype=np.float64)
    undeclared = iid >= _np(nifs, np.int64)
    overrun = start + incl > o + blen
    ix = np.where(undeclared, len(ifaces), _np(bases, np.int64) + iid)
    recs = Records(
        frame=np.arange(1, len(o) + 1, dtype=np.int64),
        offset=o,
        time=ticks.astype(np.float64) * resol[ix],
        link=links[ix],
        start=start,
        caplen=incl,
        orig=orig,
        error=error,
    )
    bad = np.flatnonzero(undeclared | overrun)
    if len(bad):
        k = int(bad[0])
        msg = (
            f"packet on undeclared interface {iid[k]}"
            if undeclared[k]
            else "packet data overruns its block"
        )
        recs = recs.head(k, CaptureError(path, msg, offset=int(o[k]), frame=k + 1))
    return recs


def records(buf: bytes, path: str) -> Records:
    """The frames of a pcap or pcapng held in memory, as columns (see Records)."""
    if buf[:4] == b"\x0a\x0d\x0d\x0a":
        return _pcapng_table(buf, path)
    return _pcap_table(buf, path)


def iter_records(buf: bytes, path: str) -> Iterator[tuple[int, int, float, int, int, int, int]]:
    """(frame, offset, time, link, start, caplen, origlen) for every frame of a pcap or pcapng;
    raises CaptureError at the first broken record."""
    recs = records(buf, path)
    yield from recs.rows()
    if recs.error is not None:
        raise recs.error


# ---- columns -----------------------------------------------------------------------------------

# Rare options are collected as (row, name, value) and spread into nullable columns afterwards.
RARE_COLUMNS: dict[str, str] = {
    "opt_mss": "Int64",
    "opt_wscale": "Int64",
    "opt_sack_perm": "boolean",
    "opt_sack": "string",
    "mpc_version": "Int64",
    "mpc_flags": "Int64",
    "mpc_send_key": "UInt64",
    "mpc_recv_key": "UInt64",
    "mpc_dll": "Int64",
    "mpc_checksum": "Int64",
    "join_backup": "boolean",
    "join_addr_id": "Int64",
    "join_token": "UInt64",
    "join_nonce": "UInt64",
    "join_hmac64": "UInt64",
    "join_hmac": "string",
    "add_echo": "boolean",
    "add_ipver": "Int64",
    "add_addr_id": "Int64",
    "add_addr": "string",
    "add_port": "Int64",
    "add_hmac": "UInt64",
    "rm_addr_ids": "string",
    "prio_backup": "boolean",
    "prio_addr_id": "Int64",
    "fail_dsn": "UInt64",
    "fastclose_key": "UInt64",
    "tcprst_flags": "Int64",
    "tcprst_reason": "Int64",
    "mp_unknown": "string",
}


def _mptcp_rare(row: int, o: bytes, rare: list) -> int:
    """Decode one non-DSS MPTCP option (bytes of the whole option). Returns its subtype."""
    ln = len(o)
    st = o[2] >> 4
    r = rare.append
    if st == 0:  # MP_CAPABLE
        r((row, "mpc_version", o[2] & 0x0F))
        r((row, "mpc_flags", o[3]))
        if ln >= 12:
            r((row, "mpc_send_key", _U64(o, 4)[0]))
        if ln >= 20:
            r((row, "mpc_recv_key", _U64(o, 12)[0]))
        if ln >= 22:
            r((row, "mpc_dll", _U16(o, 20)[0]))
        if ln >= 24:
            r((row, "mpc_checksum", _U16(o, 22)[0]))
    elif st == 1:  # MP_JOIN
        if ln == 12:
            r((row, "join_backup", bool(o[2] & 1)))
            r((row, "join_addr_id", o[3]))
            r((row, "join_token", _U32(o, 4)[0]))
            r((row, "join_nonce", _U32(o, 8)[0]))
        elif ln == 16:
            r((row, "join_backup", bool(o[2] & 1)))
            r((row, "join_addr_id", o[3]))
            r((row, "join_hmac64", _U64(o, 4)[0]))
            r((row, "join_nonce", _U32(o, 12)[0]))
        elif ln >= 24:
            r((row, "join_hmac", o[4:24].hex()))
    elif st == 3:  # ADD_ADDR: v0 has the IP version in the low nibble, v1 the echo bit
        low = o[2] & 0x0F
        if low in (4, 6):
            ipver, echo, hmac = low, False, False
        else:
            echo = bool(low & 1)
            ipver = 4 if ln in (8, 10, 16, 18) else 6
            hmac = not echo
        alen = 4 if ipver == 4 else 16
        r((row, "add_ipver", ipver))
        r((row, "add_echo", echo))
        r((row, "add_addr_id", o[3]))
        if ln >= 4 + alen:
            fam = socket.AF_INET if ipver == 4 else socket.AF_INET6
            r((row, "add_addr", socket.inet_ntop(fam, o[4 : 4 + alen])))
        rest = ln - 4 - alen - (8 if hmac else 0)
        if rest >= 2:
            r((row, "add_port", _U16(o, 4 + alen)[0]))
        if hmac and ln >= 4 + alen + 8:
            r((row, "add_hmac", _U64(o, ln - 8)[0]))
    elif st == 4:  # REMOVE_ADDR
        r((row, "rm_addr_ids", ",".join(str(b) for b in o[3:])))
    elif st == 5:  # MP_PRIO
        r((row, "prio_backup", bool(o[2] & 1)))
        if ln >= 4:
            r((row, "prio_addr_id", o[3]))
    elif st == 6:  # MP_FAIL
        if ln >= 12:
            r((row, "fail_dsn", _U64(o, 4)[0]))
    elif st == 7:  # MP_FASTCLOSE
        if ln >= 12:
            r((row, "fastclose_key", _U64(o, 4)[0]))
    elif st == 8:  # MP_TCPRST
        r((row, "tcprst_flags", o[2] & 0x0F))
        if ln >= 4:
            r((row, "tcprst_reason", o[3]))
    else:
        r((row, "mp_unknown", o.hex()))
    return st


def _nullable(n: int, idx: list[int], vals: list, dtype: str) -> pd.api.extensions.ExtensionArray:
    """Spread sparse (row, value) pairs into a nullable column of length n."""
    mask = np.ones(n, dtype=bool)
    ix = np.asarray(idx, dtype=np.int64)
    mask[ix] = False
    if dtype == "string":  # built in arrow: the few values taken to their rows, nulls elsewhere
        pos = np.full(n, -1, dtype=np.int64)
        pos[ix] = np.arange(len(ix))
        text = pa.array(vals, type=pa.large_string())
        return pd.arrays.ArrowStringArray(text.take(pa.array(pos, mask=pos < 0)))
    if dtype == "boolean":
        arr = np.zeros(n, dtype=bool)
        arr[ix] = np.asarray(vals, dtype=bool)
        return pd.arrays.BooleanArray(arr, mask)
    npdt = np.uint64 if dtype == "UInt64" else np.int64
    arr = np.zeros(n, dtype=npdt)
    arr[ix] = np.asarray(vals, dtype=npdt)
    return pd.arrays.IntegerArray(arr, mask)


def _slow_segments(buf: bytes, path: str, recs: Records, sel: np.ndarray | None) -> dict:
    """The per-segment path: every link type, IP option, extension header and TCP option layout,
    one record at a time, for the records `sel` (all when None). Dense columns of its rows."""
    # typed arrays: appends as cheap as a list's, and numpy reads them without a copy
    frames, times, ipv, srcs, dsts = A("q"), A("d"), A("B"), A("i"), A("i")
    sports, dports, seqs, acks = A("H"), A("H"), A("I"), A("I")
    flagsl, wins, plens = A("H"), A("H"), A("q")
    ts_i, ts_v, ts_e = A("q"), A("I"), A("I")
    d_i, d_flags, d_ack, d_dsn, d_ssn, d_dll, d_csum = (
        A("q"),
        A("B"),
        A("Q"),
        A("Q"),
        A("I"),
        A("I"),
        A("i"),
    )
    mp_i, mp_sub = A("q"), A("i")
    rare: list = []
    addr_cache: dict[bytes, int] = {}  # address bytes -> category code
    addr_names: list[str] = []
    sub_cache: dict[str, int] = {}  # "2,5" -> category code
    sub_names: list[str] = []
    ntoa4, ntop = socket.inet_ntoa, socket.inet_ntop
    u16, u32, u64, tcp_unpack, ts_unpack = _U16, _U32, _U64, _TCP, _TS
    eth_ip4_tcp = _ETH_IP4_TCP
    nop_nop_ts = _NOP_NOP_TS
    row = frame = off = 0
    try:
        for frame, off, ts, link, start, caplen, orig in recs.rows(sel):  # noqa: B007
            fast = False
            if link == 1 and caplen >= 54:  # Ethernet + IPv4 without options: one unpack
                (et, b0, iplen, frag, proto, sb, db, sp, dp, sq, ak, offfl, win) = eth_ip4_tcp(
                    buf, start
                )
                if et == 0x0800 and b0 == 0x45 and proto == 6 and not frag & 0x1FFF:
                    fast = True
                    end = start + caplen
                    l4 = start + 34
                    payload = (iplen or orig - 14) - 20
                    v = 4
            if not fast:
                end = start + caplen
                # -- link layer
                if link == LINK_ETHERNET:
                    if caplen < 14:
                        continue
                    et = u16(buf, start + 12)[0]
                    l3 = start + 14
                    while et in (0x8100, 0x88A8) and l3 + 4 <= end:
                        et = u16(buf, l3 + 2)[0]
                        l3 += 4
                elif link == LINK_SLL:
                    if caplen < 16:
                        continue
                    et, l3 = u16(buf, start + 14)[0], start + 16
                elif link == LINK_SLL2:
                    if caplen < 20:
                        continue
                    et, l3 = u16(buf, start)[0], start + 20
                elif link in (LINK_NULL, LINK_LOOP):
                    if caplen < 4:
                        continue
                    fam = buf[start] if buf[start] else buf[start + 3]
                    et, l3 = (0x0800 if fam == 2 else 0x86DD), start + 4
                else:  # raw IP
                    if caplen < 1:
                        continue
                    et, l3 = (0x0800 if buf[start] >> 4 == 4 else 0x86DD), start
                l2len = l3 - start
                # -- IP
                if et == 0x0800:
                    if l3 + 20 > end:
                        continue
                    b0 = buf[l3]
                    ihl = (b0 & 15) * 4
                    if b0 >> 4 != 4 or ihl < 20 or buf[l3 + 9] != 6 or u16(buf, l3 + 6)[0] & 0x1FFF:
                        continue
                    iplen = u16(buf, l3 + 2)[0] or (orig - l2len)
                    l4 = l3 + ihl
                    payload = iplen - ihl
                    sb, db = buf[l3 + 12 : l3 + 16], buf[l3 + 16 : l3 + 20]
                    v = 4
                elif et == 0x86DD:
                    if l3 + 40 > end:
                        continue
                    nh, l4 = buf[l3 + 6], l3 + 40
                    payload = u16(buf, l3 + 4)[0] or (orig - l2len - 40)
                    while nh in (0, 43, 60) and l4 + 2 <= end:
                        nh, ext = buf[l4], (buf[l4 + 1] + 1) * 8
                        l4 += ext
                        payload -= ext
                    if nh != 6:
                        continue
                    sb, db = buf[l3 + 8 : l3 + 24], buf[l3 + 24 : l3 + 40]
                    v = 6
                else:
                    continue
            if not fast:
                # -- TCP
                if l4 + 20 > end:
                    continue
                sp, dp, sq, ak, offfl, win = tcp_unpack(buf, l4)
            # address bytes -> category code, the text made once per address (4 or 16 bytes:
            # the two families never share a key); only for segments kept (no category of an
            # address whose only packet had its TCP header cut off)
            s = addr_cache.get(sb)
            if s is None:
                s = addr_cache[sb] = len(addr_names)
                addr_names.append(ntoa4(sb) if v == 4 else ntop(socket.AF_INET6, sb))
            d = addr_cache.get(db)
            if d is None:
                d = addr_cache[db] = len(addr_names)
                addr_names.append(ntoa4(db) if v == 4 else ntop(socket.AF_INET6, db))
            thl = (offfl >> 12) * 4
            frames.append(frame)
            times.append(ts)
            ipv.append(v)
            srcs.append(s)
            dsts.append(d)
            sports.append(sp)
            dports.append(dp)
            seqs.append(sq)
            acks.append(ak)
            flagsl.append(offfl & 0x1FF)
            wins.append(win)
            plens.append(payload - thl)
            if thl > 20:
                o = l4 + 20
                oend = min(l4 + thl, end)
                subs = None
                # Linux puts NOP NOP TS first on nearly every segment: one unpack for all three
                if o + 12 <= oend:
                    lead, tv, te = nop_nop_ts(buf, o)
                    if lead == 0x0101080A:
                        ts_i.append(row)
                        ts_v.append(tv)
                        ts_e.append(te)
                        o += 12
                while o < oend:
                    kind = buf[o]
                    if kind == 1:
                        o += 1
                        continue
                    if kind == 0 or o + 1 >= oend:
                        break
                    olen = buf[o + 1]
                    if olen < 2 or o + olen > oend:
                        break
                    if kind == 8 and olen == 10:
                        tv, te = ts_unpack(buf, o + 2)
                        ts_i.append(row)
                        ts_v.append(tv)
                        ts_e.append(te)
                    elif kind == 30 and olen >= 3:
                        st = buf[o + 2] >> 4
                        if st == 2 and olen >= 4:  # DSS, the hot path
                            fl = buf[o + 3]
                            p = o + 4
                            if fl & 1:
                                if fl & 2:
                                    da = u64(buf, p)[0]
                                    p += 8
                                else:
                                    da = u32(buf, p)[0]
                                    p += 4
                            else:
                                da = 0
                            if fl & 4:
                                if fl & 8:
                                    dsn = u64(buf, p)[0]
                                    p += 8
                                else:
                                    dsn = u32(buf, p)[0]
                                    p += 4
                                ssn = u32(buf, p)[0]
                                dll = u16(buf, p + 4)[0]
                                cs = u16(buf, p + 6)[0] if o + olen - (p + 6) >= 2 else -1
                            else:
                                dsn = ssn = dll = 0
                                cs = -1
                            d_i.append(row)
                            d_flags.append(fl)
                            d_ack.append(da)
                            d_dsn.append(dsn)
                            d_ssn.append(ssn)
                            d_dll.append(dll)
                            d_csum.append(cs)
                        else:
                            st = _mptcp_rare(row, buf[o : o + olen], rare)
                        subs = str(st) if subs is None else f"{subs},{st}"
                    elif kind == 2 and olen == 4:
                        rare.append((row, "opt_mss", u16(buf, o + 2)[0]))
                    elif kind == 3 and olen == 3:
                        rare.append((row, "opt_wscale", buf[o + 2]))
                    elif kind == 4:
                        rare.append((row, "opt_sack_perm", True))
                    elif kind == 5:
                        blocks = [
                            f"{u32(buf, q)[0]}-{u32(buf, q + 4)[0]}"
                            for q in range(o + 2, o + olen - 7, 8)
                        ]
                        rare.append((row, "opt_sack", ",".join(blocks)))
                    o += olen
                if subs is not None:
                    mp_i.append(row)
                    code = sub_cache.get(subs)
                    if code is None:
                        code = sub_cache[subs] = len(sub_names)
                        sub_names.append(subs)
                    mp_sub.append(code)
            row += 1
    except (struct.error, IndexError) as e:
        raise CaptureError(path, f"malformed packet ({e})", offset=off, frame=frame) from None
    acc = {
        "frames": frames,
        "times": times,
        "ipv": ipv,
        "srcs": srcs,
        "dsts": dsts,
        "sports": sports,
        "dports": dports,
        "seqs": seqs,
        "acks": acks,
        "flagsl": flagsl,
        "wins": wins,
        "plens": plens,
        "ts_i": ts_i,
        "ts_v": ts_v,
        "ts_e": ts_e,
        "d_i": d_i,
        "d_flags": d_flags,
        "d_ack": d_ack,
        "d_dsn": d_dsn,
        "d_ssn": d_ssn,
        "d_dll": d_dll,
        "d_csum": d_csum,
        "mp_i": mp_i,
        "mp_sub": mp_sub,
        "sub_names": sub_names,
        "addr_names": addr_names,
        "rare": rare,
    }
    return _slow_columns(row, acc, addr_cache)


# ---- the fast path -----------------------------------------------------------------------------
#
# Nearly every segment of a capture has the same shape: Ethernet/SLL/SLL2/raw, IPv4 without options
# or IPv6 without extension headers, TCP whose options are [NOP NOP TS] [DSS] [NOPs]. For those
# every field sits at an offset known from a few bytes, so all of them are read at once with numpy;
# everything else (SYNs with MSS/MP_CAPABLE, SACK, ADD_ADDR, VLANs, fragments, snaplen-cut options,
# ...) goes down the per-segment path above. Both give the same dense columns (see _DENSE).

V6_BASE = 1 << 32  # address keys: an IPv4 address is its 32-bit value, IPv6 ones count from here

_DENSE: dict[str, type] = {
    "frame": np.int64,
    "time": np.float64,
    "ipv": np.uint8,
    "src": np.int64,  # address key (V6_BASE)
    "dst": np.int64,
    "sport": np.uint16,
    "dport": np.uint16,
    "seq": np.uint32,
    "ack": np.uint32,
    "flags": np.uint16,
    "window": np.uint16,
    "payload_len": np.int64,
    "ts_has": np.bool_,
    "ts_val": np.uint32,
    "ts_ecr": np.uint32,
    "dss_has": np.bool_,
    "dss_flags": np.uint8,
    "dss_ack": np.uint64,
    "dss_dsn": np.uint64,
    "dss_ssn": np.uint32,
    "dss_dll": np.uint32,
    "dss_csum": np.int32,  # -1: none
    "mp_sub": np.int32,  # index in sub_names, -1: no MPTCP option
}

_IP4 = np.dtype(
    [
        ("vihl", "u1"),
        ("tos", "u1"),
        ("len", ">u2"),
        ("id", ">u2"),
        ("frag", ">u2"),
        ("ttl", "u1"),
        ("proto", "u1"),
        ("csum", ">u2"),
        ("src", ">u4"),
        ("dst", ">u4"),
    ]
)
_IP6 = np.dtype(
    [("vtf", ">u4"), ("plen", ">u2"), ("nh", "u1"), ("hop", "u1"), ("src", "V16"), ("dst", "V16")]
)
_TCPH = np.dtype(
    [
        ("sport", ">u2"),
        ("dport", ">u2"),
        ("seq", ">u4"),
        ("ack", ">u4"),
        ("offfl", ">u2"),
        ("win", ">u2"),
        ("csum", ">u2"),
        ("urg", ">u2"),
        ("opt", "u1", (40,)),
    ]
)


def _be(m: np.ndarray) -> np.ndarray:
    """Big-endian unsigned integers from the byte columns of m (rows x 1, 2, 4 or 8 bytes)."""
    w = m.shape[1]
    return np.ascontiguousarray(m).view(f">u{w}")[:, 0].astype(f"u{w}")


def _v6_keys(vals: np.ndarray, names: list[str], index: dict[bytes, int]) -> np.ndarray:
    """Address keys of 16-byte addresses, their text added to names once per address."""
    out = np.empty(len(vals), dtype=np.int64)
    for i, b in enumerate(vals.tolist()):
        k = index.get(b)
        if k is None:
            k = index[b] = len(names)
            names.append(socket.inet_ntop(socket.AF_INET6, b))
        out[i] = V6_BASE + k
    return out


def _fast_segments(buf: bytes, recs: Records) -> tuple[np.ndarray, dict]:
    """(records taken, dense columns of their rows) for the records of the common layouts."""
    n, nrec = len(buf), len(recs)
    link, start, caplen, orig = recs.link, recs.start, recs.caplen, recs.orig
    raw = ~np.isin(link, (LINK_ETHERNET, LINK_SLL, LINK_SLL2, LINK_NULL, LINK_LOOP))
    l2 = np.select(
        [link == LINK_ETHERNET, link == LINK_SLL, link == LINK_SLL2, raw], [14, 16, 20, 0], -1
    )
    l3 = start + l2
    cand = np.flatnonzero((l2 >= 0) & (caplen >= l2 + 40))  # room for IPv4 + TCP at least
    u8 = np.frombuffer(buf, np.uint8)
    # the EtherType (Ethernet, SLL, SLL2) or the IP version nibble (raw), inside the record
    et_pos = start[cand] + np.select(
        [link[cand] == LINK_ETHERNET, link[cand] == LINK_SLL], [12, 14], 0
    )
    et = (u8[et_pos].astype(np.uint16) << 8) | u8[et_pos + 1]
    ver = u8[l3[cand]] >> 4
    is_raw = raw[cand]
    i4 = cand[np.where(is_raw, ver == 4, et == 0x0800)]
    i6 = cand[np.where(is_raw, ver == 6, et == 0x86DD)]
    ip4 = _gather(buf, l3[i4], _IP4)
    keep = (ip4["vihl"] == 0x45) & (ip4["proto"] == 6) & ((ip4["frag"] & 0x1FFF) == 0)
    i4, ip4 = i4[keep], _rows(ip4, keep)
    i6 = i6[caplen[i6] >= l2[i6] + 60]
    ip6 = _gather(buf, l3[i6], _IP6)
    keep = ip6["nh"] == 6
    i6, ip6 = i6[keep], _rows(ip6, keep)
    # per record (only the IPv4/IPv6 TCP ones are read further)
    l4 = np.zeros(nrec, dtype=np.int64)
    ipv = np.zeros(nrec, dtype=np.uint8)
    src = np.zeros(nrec, dtype=np.int64)
    dst = np.zeros(nrec, dtype=np.int64)
    ip_payload = np.zeros(nrec, dtype=np.int64)  # IP payload length from the headers
    l4[i4], ipv[i4] = l3[i4] + 20, 4
    src[i4], dst[i4] = ip4["src"], ip4["dst"]
    tot = ip4["len"].astype(np.int64)
    ip_payload[i4] = np.where(tot != 0, tot, orig[i4] - l2[i4]) - 20
    l4[i6], ipv[i6] = l3[i6] + 40, 6
    v6_names: list[str] = []
    if len(i6):
        index: dict[bytes, int] = {}
        both = np.empty(2 * len(i6), dtype="V16")
        both[0::2], both[1::2] = ip6["src"], ip6["dst"]  # first seen, first named
        keys = _v6_keys(both, v6_names, index)
        src[i6], dst[i6] = keys[0::2], keys[1::2]
    plen = ip6["plen"].astype(np.int64)
    ip_payload[i6] = np.where(plen != 0, plen, orig[i6] - l2[i6] - 40)
    rows = np.sort(np.concatenate([i4, i6])) if len(i6) and len(i4) else (i4 if len(i4) else i6)
    # TCP header and 40 bytes of options (a window running past the file's end: per segment)
    last = n - _TCPH.itemsize
    tcp = _gather(buf, np.minimum(l4[rows], max(last, 0)), _TCPH)
    thl = (tcp["offfl"] >> 12).astype(np.int64) * 4
    good = (l4[rows] <= last) & (thl >= 20) & (l4[rows] + thl <= start[rows] + caplen[rows])
    opt = tcp["opt"]
    optlen = thl - 20
    m = len(rows)
    r = np.arange(m)
    has_ts = (optlen >= 12) & (opt[:, 0] == 1) & (opt[:, 1] == 1) & (opt[:, 2] == 8)
    has_ts &= opt[:, 3] == 10
    p = np.where(has_ts, 12, 0)
    ln = opt[r, p + 1].astype(np.int64)
    fl = opt[r, p + 3].astype(np.int64)
    want = 4 + np.where(fl & 1, np.where(fl & 2, 8, 4), 0)
    want += np.where(fl & 4, np.where(fl & 8, 8, 4) + 6, 0)
    has_dss = (p + 4 <= optlen) & (opt[r, p] == 30) & ((opt[r, p + 2] >> 4) == 2)
    has_dss &= (ln == want) | (((fl & 4) != 0) & (ln == want + 2))
    has_dss &= p + ln <= optlen
    end = p + np.where(has_dss, ln, 0)
    # after them only NOPs, up to the end of the options or an end-of-option-list: scanned a
    # byte at a time over the segments still in their padding (Linux pads a DSS with 2 NOPs)
    at = np.flatnonzero(good & (end < optlen))
    pos = end[at]
    while len(at):
        b = opt[at, pos]
        good[at[(b != 1) & (b != 0)]] = False
        go = (b == 1) & (pos + 1 < optlen[at])
        at, pos = at[go], pos[go] + 1
    gi = np.flatnonzero(good)  # the fast rows, as positions in rows/tcp
    fr = rows[gi]
    taken = np.zeros(nrec, dtype=bool)
    taken[fr] = True
    k = len(fr)
    cols: dict[str, np.ndarray] = {
        "frame": recs.frame[fr],
        "time": recs.time[fr],
        "ipv": ipv[fr],
        "src": src[fr],
        "dst": dst[fr],
    }
    for name, field, dt in (
        ("sport", "sport", np.uint16),
        ("dport", "dport", np.uint16),
        ("seq", "seq", np.uint32),
        ("ack", "ack", np.uint32),
        ("window", "win", np.uint16),
    ):
        cols[name] = tcp[field][gi].astype(dt)
    cols["flags"] = (tcp["offfl"][gi] & 0x1FF).astype(np.uint16)
    cols["payload_len"] = ip_payload[fr] - thl[gi]
    has_ts, has_dss, p, fl, ln = (x[gi] for x in (has_ts, has_dss, p, fl, ln))
    cols["ts_has"] = has_ts
    ts = opt[gi, 4:12]
    cols["ts_val"] = np.where(has_ts, _be(ts[:, :4]), 0).astype(np.uint32)
    cols["ts_ecr"] = np.where(has_ts, _be(ts[:, 4:]), 0).astype(np.uint32)
    d = {
        name: np.zeros(k, dtype=_DENSE[name])
        for name in ("dss_ack", "dss_dsn", "dss_ssn", "dss_dll")
    }
    csum = np.full(k, -1, dtype=np.int32)
    di = np.flatnonzero(has_dss)
    layout = p[di] * 4096 + (fl[di] & 0x0F) * 256 + ln[di]
    for lay in np.unique(layout).tolist():
        g = di[layout == lay]
        og = gi[g]  # the same segments' rows in opt
        p0, f, olen = lay // 4096, (lay // 256) % 16, lay % 256
        q = p0 + 4
        if f & 1:
            w = 8 if f & 2 else 4
            d["dss_ack"][g] = _be(opt[og, q : q + w])
            q += w
        if f & 4:
            w = 8 if f & 8 else 4
            d["dss_dsn"][g] = _be(opt[og, q : q + w])
            q += w
            d["dss_ssn"][g] = _be(opt[og, q : q + 4])
            d["dss_dll"][g] = _be(opt[og, q + 4 : q + 6])
            if p0 + olen - (q + 6) >= 2:
                csum[g] = _be(opt[og, q + 6 : q + 8])
    cols.update(d)
    cols["dss_has"] = has_dss
    cols["dss_flags"] = np.where(has_dss, fl, 0).astype(np.uint8)
    cols["dss_csum"] = csum
    cols["mp_sub"] = np.where(has_dss, 0, -1).astype(np.int32)
    cols["sub_names"] = ["2"]
    cols["v6_names"] = v6_names
    cols["rare"] = []
    return taken, cols


def _slow_columns(n: int, c: dict, addr_cache: dict[bytes, int]) -> dict:
    """The per-segment path's accumulators as the dense columns of _DENSE."""
    v6_names: list[str] = []
    key_of = np.zeros(len(c["addr_names"]), dtype=np.int64)
    for b, code in addr_cache.items():
        if len(b) == 4:
            key_of[code] = int.from_bytes(b, "big")
        else:
            key_of[code] = V6_BASE + len(v6_names)
            v6_names.append(c["addr_names"][code])
    out: dict = {
        "frame": _np(c["frames"], np.int64),
        "time": _np(c["times"], np.float64),
        "ipv": _np(c["ipv"], np.uint8),
        "src": key_of[_np(c["srcs"], np.int32)],
        "dst": key_of[_np(c["dsts"], np.int32)],
        "sport": _np(c["sports"], np.uint16),
        "dport": _np(c["dports"], np.uint16),
        "seq": _np(c["seqs"], np.uint32),
        "ack": _np(c["acks"], np.uint32),
        "flags": _np(c["flagsl"], np.uint16),
        "window": _np(c["wins"], np.uint16),
        "payload_len": _np(c["plens"], np.int64),
    }

    def spread(idx: A, vals: A | None, src_dt, name: str, fill=0) -> None:
        arr = np.full(n, fill, dtype=_DENSE[name])
        arr[_np(idx, np.int64)] = True if vals is None else _np(vals, src_dt)
        out[name] = arr

    spread(c["ts_i"], None, None, "ts_has", False)
    spread(c["ts_i"], c["ts_v"], np.uint32, "ts_val")
    spread(c["ts_i"], c["ts_e"], np.uint32, "ts_ecr")
    spread(c["d_i"], None, None, "dss_has", False)
    spread(c["d_i"], c["d_flags"], np.uint8, "dss_flags")
    spread(c["d_i"], c["d_ack"], np.uint64, "dss_ack")
    spread(c["d_i"], c["d_dsn"], np.uint64, "dss_dsn")
    spread(c["d_i"], c["d_ssn"], np.uint32, "dss_ssn")
    spread(c["d_i"], c["d_dll"], np.uint32, "dss_dll")
    spread(c["d_i"], c["d_csum"], np.int32, "dss_csum", -1)
    spread(c["mp_i"], c["mp_sub"], np.int32, "mp_sub", -1)
    out["sub_names"] = c["sub_names"]
    out["v6_names"] = v6_names
    out["rare"] = c["rare"]
    return out


def _union(names: list[str], more: list[str]) -> tuple[list[str], np.ndarray]:
    """names + those of more not in it, and where each of more landed."""
    where = {s: i for i, s in enumerate(names)}
    out = list(names)
    pos = np.empty(len(more), dtype=np.int64)
    for j, s in enumerate(more):
        i = where.get(s)
        if i is None:
            i = where[s] = len(out)
            out.append(s)
        pos[j] = i
    return out, pos


def _merge(a: dict, b: dict) -> dict:
    """Dense columns of two disjoint sets of rows, interleaved in frame order."""
    if len(b["frame"]) == 0:
        return a
    if len(a["frame"]) == 0:
        return b
    fa, fb = a["frame"], b["frame"]
    pa_ = np.arange(len(fa)) + np.searchsorted(fb, fa)
    pb = np.arange(len(fb)) + np.searchsorted(fa, fb)
    v6, v6_pos = _union(a["v6_names"], b["v6_names"])
    subs, sub_pos = _union(a["sub_names"], b["sub_names"])
    for name in ("src", "dst"):  # b's IPv6 keys renumbered into the union
        k = b[name]
        six = k >= V6_BASE
        if six.any():
            k = k.copy()
            k[six] = V6_BASE + v6_pos[k[six] - V6_BASE]
            b[name] = k
    sub = b["mp_sub"]
    if (sub >= 0).any():
        b["mp_sub"] = np.where(sub >= 0, sub_pos[np.maximum(sub, 0)], -1)
    out: dict = {}
    for name, dt in _DENSE.items():
        arr = np.empty(len(fa) + len(fb), dtype=dt)
        arr[pa_] = a[name]
        arr[pb] = b[name]
        out[name] = arr
    out["v6_names"], out["sub_names"] = v6, subs
    out["rare"] = [(int(pa_[r]), k, v) for r, k, v in a["rare"]] + [
        (int(pb[r]), k, v) for r, k, v in b["rare"]
    ]
    out["rare"].sort(key=lambda x: x[0])
    return out


def _assemble(d: dict) -> pd.DataFrame:
    """Dense columns (_DENSE) into the DataFrame: categories in order of first appearance,
    nullable columns where an option is absent."""
    n = len(d["frame"])
    flags = d["flags"]
    # addresses: source before destination, row by row, so categories come in order of appearance
    both = np.empty(2 * n, dtype=np.int64)
    both[0::2], both[1::2] = d["src"], d["dst"]
    codes, keys = pd.factorize(both)
    v6 = d["v6_names"]
    names = [
        socket.inet_ntoa(k.to_bytes(4, "big")) if k < V6_BASE else v6[k - V6_BASE]
        for k in keys.tolist()
    ]
    addrs = pd.Index(names, dtype=object)
    cols: dict[str, object] = {
        "frame": d["frame"],
        "time": d["time"],
        "ip_version": d["ipv"],
        "src": pd.Categorical.from_codes(codes[0::2], categories=addrs),
        "dst": pd.Categorical.from_codes(codes[1::2], categories=addrs),
        "sport": d["sport"],
        "dport": d["dport"],
        "seq": d["seq"],
        "ack": d["ack"],
        "flags": flags,
        "syn": (flags & 0x02) != 0,
        "fin": (flags & 0x01) != 0,
        "rst": (flags & 0x04) != 0,
        "ack_flag": (flags & 0x10) != 0,
        "window": d["window"],
        "payload_len": d["payload_len"],
    }
    no_ts = ~d["ts_has"]
    cols["ts_val"] = pd.arrays.IntegerArray(d["ts_val"].astype(np.uint64), no_ts)
    cols["ts_ecr"] = pd.arrays.IntegerArray(d["ts_ecr"].astype(np.uint64), no_ts.copy())
    sub = d["mp_sub"]
    has_sub = sub >= 0
    sub_codes = np.full(n, -1, dtype=np.int32)
    c, u = pd.factorize(sub[has_sub])
    sub_codes[has_sub] = c
    cols["mp_subtypes"] = pd.Categorical.from_codes(
        sub_codes, categories=pd.Index([d["sub_names"][i] for i in u.tolist()], dtype=object)
    )
    # DSS: presence from its flags (A=1 a=2 M=4 m=8 F=16)
    has = d["dss_has"]
    fl = d["dss_flags"].astype(np.int64)
    has_ack = has & ((fl & 1) != 0)
    has_map = has & ((fl & 4) != 0)
    csum = d["dss_csum"]
    cols["dss_flags"] = pd.arrays.IntegerArray(fl, ~has)
    cols["dss_ack"] = pd.arrays.IntegerArray(d["dss_ack"], ~has_ack)
    cols["dss_ack64"] = pd.arrays.BooleanArray((fl & 2) != 0, ~has_ack)
    cols["dss_dsn"] = pd.arrays.IntegerArray(d["dss_dsn"], ~has_map)
    cols["dss_dsn64"] = pd.arrays.BooleanArray((fl & 8) != 0, ~has_map)
    cols["dss_ssn"] = pd.arrays.IntegerArray(d["dss_ssn"].astype(np.int64), ~has_map)
    cols["dss_dll"] = pd.arrays.IntegerArray(d["dss_dll"].astype(np.int64), ~has_map)
    cols["dss_checksum"] = pd.arrays.IntegerArray(np.maximum(csum, 0).astype(np.int64), csum < 0)
    cols["dss_fin"] = pd.arrays.BooleanArray((fl & 16) != 0, ~has)
    by_name: dict[str, tuple[list, list]] = {k: ([], []) for k in RARE_COLUMNS}
    for r, name, val in d["rare"]:
        ix, vs = by_name[name]
        if ix and ix[-1] == r:  # a second option of the same kind in one segment: keep the first
            continue
        ix.append(r)
        vs.append(val)
    for name, dtype in RARE_COLUMNS.items():
        ix, vs = by_name[name]
        cols[name] = _nullable(n, ix, vs, dtype)
    # the arrays are ours alone: no copy into the frame
    return pd.DataFrame(cols, copy=False)


def parse_buffer(buf: bytes, path: str = "<buffer>", *, fast: bool = True) -> pd.DataFrame:
    """One row per IPv4/IPv6 TCP segment of a capture held in memory (see module docstring).

    `fast=False` sends every record down the per-segment path (the tests compare the two)."""
    recs = records(buf, path)
    if fast:
        taken, cols = _fast_segments(buf, recs)
        rest = np.flatnonzero(~taken)
    else:
        cols, rest = None, None
    slow = _slow_segments(buf, path, recs, rest)
    df = _assemble(slow if cols is None else _merge(cols, slow))
    if recs.error is not None:  # after the frames before it: an earlier malformed one comes first
        raise recs.error
    return df


def parse_pcap(path: str | os.PathLike) -> pd.DataFrame:
    """Parse one capture file; host and interface come from its name `<host>-<intf>.pcap`."""
    path = Path(path)
    try:
        buf = path.read_bytes()
    except OSError as e:
        raise CaptureError(path, f"cannot read: {e.strerror}") from None
    if not buf:
        raise CaptureError(path, "empty file", offset=0)
    df = parse_buffer(buf, str(path))
    host, intf = host_intf(path)
    zeros = np.zeros(len(df), dtype=np.int8)
    df.insert(2, "host", pd.Categorical.from_codes(zeros, categories=[host]))
    df.insert(3, "intf", pd.Categorical.from_codes(zeros, categories=[intf]))
    return df


def host_intf(path: str | os.PathLike) -> tuple[str, str]:
    """`client-eth0.pcap` -> ("client", "eth0"); host names may contain dashes, the last one
    separates the interface. A name without a dash is a host with interface ""."""
    stem = Path(path).name
    for ext in (".pcapng", ".pcap"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
            break
    host, sep, intf = stem.rpartition("-")
    return (host, intf) if sep else (stem, "")
