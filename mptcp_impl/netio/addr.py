"""Addresses at the edge: IPv4 and IPv6, text and packed, v4-mapped IPv6 taken as IPv4.

The edge keys everything by address text in one canonical form (``str(ipaddress.ip_address())``:
dotted IPv4, compressed IPv6) and by packed bytes (4 or 16) on the packet path. An IPv4-mapped
IPv6 address (``::ffff:a.b.c.d``) is the IPv4 address: on the wire such a connection is IPv4
(as a dual-stack kernel socket sees it), so it is normalised before anything else sees it.
"""

from __future__ import annotations

import ipaddress
import socket
from functools import lru_cache

ANY4 = "0.0.0.0"
ANY6 = "::"


@lru_cache(maxsize=4096)
def normalize(addr: str) -> str:
    """Canonical text of an address; ``::ffff:a.b.c.d`` becomes ``a.b.c.d``; a ``[v6]`` literal
    loses its brackets and a zone (``%eth0``) is refused like any other malformed address."""
    a = addr.strip()
    if a.startswith("[") and a.endswith("]"):
        a = a[1:-1]
    ip = ipaddress.ip_address(a)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def is_v6(addr: str) -> bool:
    """Whether a (normalised) address is IPv6; ``::`` (any) included."""
    return ":" in addr


def family(addr: str) -> int:
    return socket.AF_INET6 if is_v6(addr) else socket.AF_INET


@lru_cache(maxsize=4096)
def packed(addr: str) -> bytes:
    """4 or 16 bytes of a normalised address (the key of the demux, as the receiver gives it)."""
    return socket.inet_pton(family(addr), addr)


@lru_cache(maxsize=4096)
def unpacked(raw: bytes) -> str:
    """The canonical text of 4 or 16 packed bytes (v4-mapped ones stay as they are: they never
    appear in an IPv6 header between real hosts)."""
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    return str(ipaddress.IPv6Address(raw))


def split_hostport(text: str) -> tuple[str, int]:
    """``ADDR:PORT``, ``[V6]:PORT`` or ``V6:PORT`` (the last colon separates the port) into a
    normalised address and a port."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected ADDR:PORT or [IPv6]:PORT, got {text!r}")
    return normalize(host), int(port)


def join_hostport(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if is_v6(addr) else f"{addr}:{port}"


def local_address_for(remote: str) -> str:
    """The source address the kernel would pick for ``remote`` (no packet is sent)."""
    with socket.socket(family(remote), socket.SOCK_DGRAM) as s:
        s.connect((remote, 9))
        return normalize(s.getsockname()[0])
