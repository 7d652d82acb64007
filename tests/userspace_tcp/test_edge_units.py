"""Pure pieces of the edge, without a network: header arithmetic, BPF assembly, GSO splitting."""

from __future__ import annotations

import hashlib
import random
import socket
import struct

from mptcp_impl.cli import BLOCK, pattern_block, pattern_sha256
from mptcp_impl.netio.bpf import BPF_JMP, BPF_RET, tcp_dst_filter
from mptcp_impl.netio.packet import ipv4_base_sum, ipv4_header, ones_sum
from mptcp_impl.netio.stack import _split
from mptcp_impl.tcp.segment import ACK, FIN, PSH, TcpSegment


def test_ipv4_header_checksum_is_valid_for_any_length_and_id() -> None:
    rnd = random.Random(1)
    for _ in range(2000):
        src = bytes(rnd.randrange(256) for _ in range(4))
        dst = bytes(rnd.randrange(256) for _ in range(4))
        total, ip_id = rnd.randrange(40, 65536), rnd.randrange(65536)
        hdr = ipv4_header(ipv4_base_sum(src, dst), total, ip_id, src, dst)
        assert len(hdr) == 20
        # A correct header sums to 0xffff (0 modulo 0xffff) in one's complement.
        assert ones_sum(hdr) == 0, (src, dst, total, ip_id)
        assert struct.unpack("!H", hdr[2:4])[0] == total and hdr[12:16] == src


def test_bpf_filter_jumps_stay_inside_and_end_in_accept_then_drop() -> None:
    for host in ("10.0.1.1", None):
        prog = tcp_dst_filter(host, 5000)
        assert prog[-1].code == BPF_RET and prog[-1].k == 0
        assert prog[-2].code == BPF_RET and prog[-2].k > 65535  # whole GSO super-packets
        for i, insn in enumerate(prog):
            if insn.code & 0x07 == BPF_JMP:
                assert i + 1 + insn.jt < len(prog) and i + 1 + insn.jf < len(prog)
        ks = {insn.k for insn in prog}
        assert 5000 in ks and socket.IPPROTO_TCP in ks
        assert (int.from_bytes(socket.inet_aton("10.0.1.1"), "big") in ks) == (host is not None)


def test_split_of_a_gso_segment_keeps_fin_and_psh_on_the_last_piece() -> None:
    payload = bytes(range(256)) * 20  # 5120 bytes
    seg = TcpSegment(1, 2, 0xFFFFFF00, 7, ACK | PSH | FIN, 100, [], payload, gso_size=1448)
    pieces = _split(seg)
    assert [len(p.payload) for p in pieces] == [1448, 1448, 1448, 776]
    assert b"".join(bytes(p.payload) for p in pieces) == payload
    assert [p.seq for p in pieces] == [(0xFFFFFF00 + i * 1448) & 0xFFFFFFFF for i in range(4)]
    assert all(p.flags == ACK for p in pieces[:-1]) and pieces[-1].flags == ACK | PSH | FIN
    assert all(p.gso_size == 0 for p in pieces)


def test_pattern_sha256_matches_the_stream_the_client_writes() -> None:
    block = pattern_block(3)
    n = 2 * BLOCK + 12345
    h = hashlib.sha256(block + block + block[:12345])
    assert pattern_sha256(n, seed=3) == h.hexdigest()
    assert pattern_block(3) == block and pattern_block(4) != block
