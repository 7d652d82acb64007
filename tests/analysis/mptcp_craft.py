"""Hand-built MPTCP segments for what the kernel will not send on demand (MP_FAIL, 32-bit DSNs that
wrap, ADD_ADDR with IPv6 and port, MP_PRIO with an address id, several REMOVE_ADDR ids).

These are real pcap files checked against the real tshark dissector, byte layouts from RFC 8684.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

MAC = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02"


def opt(subtype_byte: int, body: bytes) -> bytes:
    """An MPTCP option (kind 30): body starts after the subtype/flags nibble byte."""
    return bytes([30, 3 + len(body), subtype_byte]) + body


def mpc(
    flags: int = 0x01,
    send_key: int | None = None,
    recv_key: int | None = None,
    dll: int | None = None,
) -> bytes:
    body = bytes([flags])
    if send_key is not None:
        body += struct.pack("!Q", send_key)
    if recv_key is not None:
        body += struct.pack("!Q", recv_key)
    if dll is not None:
        body += struct.pack("!H", dll)
    return opt(0x01, body)  # subtype 0, version 1


def dss(
    ack: int | None = None,
    ack64: bool = False,
    dsn: int | None = None,
    dsn64: bool = False,
    ssn: int = 0,
    dll: int = 0,
    checksum: int | None = None,
    fin: bool = False,
) -> bytes:
    fl = (
        (1 if ack is not None else 0)
        | (2 if ack64 else 0)
        | (4 if dsn is not None else 0)
        | (8 if dsn64 else 0)
        | (16 if fin else 0)
    )
    body = bytes([fl])
    if ack is not None:
        body += struct.pack("!Q" if ack64 else "!I", ack)
    if dsn is not None:
        body += struct.pack("!Q" if dsn64 else "!I", dsn) + struct.pack("!IH", ssn, dll)
        if checksum is not None:
            body += struct.pack("!H", checksum)
    return opt(0x20, body)


def add_addr(
    addr_id: int, addr: str, port: int | None = None, hmac: int | None = None, echo: bool = False
) -> bytes:
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    body = bytes([addr_id]) + socket.inet_pton(fam, addr)
    if port is not None:
        body += struct.pack("!H", port)
    if hmac is not None:
        body += struct.pack("!Q", hmac)
    return opt(0x30 | (1 if echo else 0), body)


def remove_addr(*ids: int) -> bytes:
    return opt(0x40, bytes(ids))


def mp_prio(backup: bool, addr_id: int | None = None) -> bytes:
    return opt(0x50 | int(backup), b"" if addr_id is None else bytes([addr_id]))


def mp_fail(dsn: int) -> bytes:
    return opt(0x60, b"\x00" + struct.pack("!Q", dsn))


def fastclose(key: int) -> bytes:
    return opt(0x70, b"\x00" + struct.pack("!Q", key))


def tcprst(flags: int, reason: int) -> bytes:
    return opt(0x80 | flags, bytes([reason]))


def segment(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    options: bytes = b"",
    payload: int = 0,
) -> tuple[bytes, int]:
    """Ethernet/IPv4/TCP headers with `payload` bytes announced in the IP length (headers-only
    capture, like the testbed's snaplen). Returns (captured bytes, original length)."""
    options += b"\x01" * (-len(options) % 4)
    assert len(options) <= 40, len(options)
    thl = 20 + len(options)
    tcp = (
        struct.pack(
            "!HHIIHHHH",
            sport,
            dport,
            seq % 2**32,
            ack % 2**32,
            ((thl // 4) << 12) | flags,
            502,
            0,
            0,
        )
        + options
    )
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + thl + payload,
        0,
        0x4000,
        64,
        6,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    frame = MAC + b"\x08\x00" + ip + tcp
    return frame, len(frame) + payload


def write_pcap(path: Path, packets: list[tuple[float, bytes, int]]) -> Path:
    """Classic little-endian microsecond pcap, Ethernet link type."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for ts, data, orig in packets:
        out.append(struct.pack("<IIII", int(ts), int(round(ts % 1 * 1e6)), len(data), orig) + data)
    path.write_bytes(b"".join(out))
    return path
