"""Classic BPF filters for packet sockets, assembled by hand (no libpcap, no tcpdump -dd).

A packet socket without a filter hands Python every frame on every interface; the filter makes
the kernel drop everything but our own TCP traffic before it is copied to user space, which is
what keeps the receive path cheap.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct
from dataclasses import dataclass

SO_ATTACH_FILTER = 26
SO_DETACH_FILTER = 27

# Instruction classes and modes (linux/filter.h).
BPF_LD, BPF_LDX, BPF_JMP, BPF_RET, BPF_ALU = 0x00, 0x01, 0x05, 0x06, 0x04
BPF_W, BPF_H, BPF_B = 0x00, 0x08, 0x10
BPF_ABS, BPF_IND, BPF_MSH, BPF_IMM = 0x20, 0x40, 0xA0, 0x00
BPF_JEQ, BPF_JSET = 0x10, 0x40
BPF_K = 0x00
BPF_AND = 0x50

ACCEPT_BYTES = 0x40000  # keep whole GSO super-packets (up to 64 KiB and then some)


@dataclass(frozen=True, slots=True)
class Insn:
    code: int
    jt: int
    jf: int
    k: int


def tcp_dst_filter(dst_ip: str | None, dst_port: int, l2: int = 14) -> list[Insn]:
    """``ip and tcp and dst host X and dst port P`` and not a non-first fragment.

    ``l2`` is the link-layer header length in front of the IPv4 header: 14 for SOCK_RAW packet
    sockets on Ethernet-like devices (veth, lo), 0 for SOCK_DGRAM ones.
    """
    prog: list[tuple[int, int, int, int]] = []
    # Labels are resolved at the end: "DROP" jumps are patched to the final instruction.
    if l2:
        prog.append((BPF_LD | BPF_H | BPF_ABS, 0, 0, l2 - 2))  # ethertype
        prog.append((BPF_JMP | BPF_JEQ | BPF_K, 0, -1, 0x0800))
    return _resolve(prog + _tcp4_checks(dst_ip, dst_port, l2))


def _tcp4_checks(dst_ip: str | None, dst_port: int, l2: int) -> list[tuple[int, int, int, int]]:
    """The IPv4 part, ending in the accept (jumps of -1: to DROP)."""
    prog = [
        (BPF_LD | BPF_B | BPF_ABS, 0, 0, l2),  # A = version/ihl
        (BPF_ALU | BPF_AND | BPF_K, 0, 0, 0xF0),
        (BPF_JMP | BPF_JEQ | BPF_K, 0, -1, 0x40),  # IPv4 only
        (BPF_LD | BPF_B | BPF_ABS, 0, 0, l2 + 9),  # protocol
        (BPF_JMP | BPF_JEQ | BPF_K, 0, -1, socket.IPPROTO_TCP),
    ]
    if dst_ip is not None and dst_ip != "0.0.0.0":
        prog.append((BPF_LD | BPF_W | BPF_ABS, 0, 0, l2 + 16))  # destination address
        prog.append((BPF_JMP | BPF_JEQ | BPF_K, 0, -1, int(ipaddress.IPv4Address(dst_ip))))
    prog.append((BPF_LD | BPF_H | BPF_ABS, 0, 0, l2 + 6))  # flags + fragment offset
    prog.append((BPF_JMP | BPF_JSET | BPF_K, -1, 0, 0x1FFF))
    prog.append((BPF_LDX | BPF_B | BPF_MSH, 0, 0, l2))  # X = 4 * ihl
    prog.append((BPF_LD | BPF_H | BPF_IND, 0, 0, l2 + 2))  # TCP destination port
    prog.append((BPF_JMP | BPF_JEQ | BPF_K, 0, -1, dst_port))
    prog.append((BPF_RET | BPF_K, 0, 0, ACCEPT_BYTES))
    return prog


def _resolve(prog: list[tuple[int, int, int, int]]) -> list[Insn]:
    """Append DROP (ret 0) and patch the -1 jump offsets to it."""
    drop = len(prog)
    prog = [*prog, (BPF_RET | BPF_K, 0, 0, 0)]
    out = []
    for i, (code, jt, jf, k) in enumerate(prog):
        # Jump offsets count from the next instruction.
        if jt == -1:
            jt = drop - i - 1
        if jf == -1:
            jf = drop - i - 1
        out.append(Insn(code, jt, jf, k))
    return out


def _tcp6_checks(dst_ip: str | None, dst_port: int, l2: int) -> list[tuple[int, int, int, int]]:
    """The IPv6 part: version 6, next header TCP (no extension headers: a segment behind one is
    not ours, as on this testbed's links), destination address, destination port."""
    prog = [
        (BPF_LD | BPF_B | BPF_ABS, 0, 0, l2),  # A = version << 4 | traffic class >> 4
        (BPF_ALU | BPF_AND | BPF_K, 0, 0, 0xF0),
        (BPF_JMP | BPF_JEQ | BPF_K, 0, -1, 0x60),
        (BPF_LD | BPF_B | BPF_ABS, 0, 0, l2 + 6),  # next header
        (BPF_JMP | BPF_JEQ | BPF_K, 0, -1, socket.IPPROTO_TCP),
    ]
    if dst_ip is not None and ipaddress.ip_address(dst_ip) != ipaddress.IPv6Address(0):
        raw = ipaddress.IPv6Address(dst_ip).packed
        for w in range(4):  # the destination address, one word at a time
            prog.append((BPF_LD | BPF_W | BPF_ABS, 0, 0, l2 + 24 + 4 * w))
            prog.append((BPF_JMP | BPF_JEQ | BPF_K, 0, -1, int.from_bytes(raw[4 * w : 4 * w + 4])))
    prog.append((BPF_LD | BPF_H | BPF_ABS, 0, 0, l2 + 40 + 2))  # TCP destination port
    prog.append((BPF_JMP | BPF_JEQ | BPF_K, 0, -1, dst_port))
    prog.append((BPF_RET | BPF_K, 0, 0, ACCEPT_BYTES))
    return prog


def tcp6_dst_filter(dst_ip: str | None, dst_port: int, l2: int = 14) -> list[Insn]:
    """``ip6 and tcp and dst host X and dst port P`` (``X`` None or ``::``: any address)."""
    prog: list[tuple[int, int, int, int]] = []
    if l2:
        prog.append((BPF_LD | BPF_H | BPF_ABS, 0, 0, l2 - 2))  # ethertype
        prog.append((BPF_JMP | BPF_JEQ | BPF_K, 0, -1, 0x86DD))
    return _resolve(prog + _tcp6_checks(dst_ip, dst_port, l2))


def tcp_any_dst_filter(dst_port: int, l2: int = 14) -> list[Insn]:
    """``tcp and dst port P`` over IPv4 or IPv6 (a dual-stack ``::`` endpoint): the IPv4 checks
    for ethertype 0x0800, the IPv6 ones for 0x86DD, each ending in its own accept."""
    v4 = _tcp4_checks(None, dst_port, l2)
    prog = [
        (BPF_LD | BPF_H | BPF_ABS, 0, 0, l2 - 2),  # ethertype
        (BPF_JMP | BPF_JEQ | BPF_K, len(v4) + 1, 0, 0x86DD),  # IPv6: past the IPv4 part
        (BPF_JMP | BPF_JEQ | BPF_K, 0, -1, 0x0800),
        *v4,
        *_tcp6_checks(None, dst_port, l2),
    ]
    return _resolve(prog)


def drop_all_filter() -> list[Insn]:
    return [Insn(BPF_RET | BPF_K, 0, 0, 0)]


def attach_filter(sock: socket.socket, prog: list[Insn]) -> None:
    """SO_ATTACH_FILTER with a struct sock_fprog built in a ctypes buffer (copied by the kernel)."""
    raw = b"".join(struct.pack("HBBI", i.code, i.jt, i.jf, i.k) for i in prog)
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = struct.pack("HL", len(prog), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
