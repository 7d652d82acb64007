"""testbed.mangle without a network: what each kind does to crafted packets, checksums checked
against an independent implementation, verdicts recorded by a stand-in NFQUEUE socket."""

from __future__ import annotations

import socket
import struct

from testbed import mangle
from testbed.linkem import NF_ACCEPT, NF_DROP

SRC, DST = "10.0.1.1", "10.0.5.2"


def ones_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def checksums_ok(pkt: bytes) -> bool:
    ihl = (pkt[0] & 15) * 4
    pseudo = pkt[12:20] + struct.pack("!BBH", 0, 6, len(pkt) - ihl)
    return ones_sum(pkt[:ihl]) == 0xFFFF and ones_sum(pseudo + pkt[ihl:]) == 0xFFFF


def payload(pkt: bytes) -> bytes:
    ihl = (pkt[0] & 15) * 4
    return pkt[ihl + (pkt[ihl + 12] >> 4) * 4 :]


def tcp(seq, ack, flags, payload=b"", options=b"", src=SRC, dst=DST, sport=40000, dport=80):
    options += b"\x01" * (-len(options) % 4)
    th = (
        struct.pack(
            "!HHIIBBHHH", sport, dport, seq, ack, (20 + len(options)) // 4 << 4, flags, 65535, 0, 0
        )
        + options
    )
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(th) + len(payload),
        1,
        0x4000,
        63,
        6,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    pkt = bytearray(ip + th + payload)
    mangle.fix_checksums(pkt)
    return bytes(pkt)


MP_CAPABLE_SYN = bytes([30, 4, 0x01, 0x81])
DSS = bytes([30, 8, 0x20, 0x01]) + struct.pack("!I", 12345)  # DATA_ACK only
MSS = bytes([2, 4, 0x05, 0xB4])


class FakeNfq:
    def __init__(self):
        self.verdicts = []

    def verdict(self, queue, pid, verdict=NF_ACCEPT, payload=None):
        self.verdicts.append((pid, verdict, payload))


class FakeRaw:
    def __init__(self):
        self.sent = []

    def sendto(self, data, addr):
        self.sent.append((data, addr))


def mangler(kind, **cfg):
    m = mangle.Mangler.__new__(mangle.Mangler)
    m.seed, m.maxlen = 1, 10
    m.after_bytes = cfg.get("after_bytes", 1000)
    m.mss_clamp, m.hold = 700, 0.002
    m.queues = {100: mangle.QueueState(100, kind, 0), 101: mangle.QueueState(101, kind, 0)}
    import random

    m.rng = random.Random(1)
    m.nfq, m.raw = FakeNfq(), FakeRaw()
    m.offsets, m.seen, m.stdin_buf, m.stopping = {}, {}, b"", False
    return m


def test_checksum_matches_an_independent_one():
    pkt = tcp(1, 2, 0x18, b"hello world!x", DSS)
    assert checksums_ok(pkt)


def test_strip_mptcp_keeps_length_and_checksum():
    m = mangler("strip-mptcp")
    syn = tcp(100, 0, 0x02, options=MSS + MP_CAPABLE_SYN)
    m.handle(100, 1, syn, 0.0)
    ((pid, verdict, out),) = m.nfq.verdicts
    assert verdict == NF_ACCEPT and len(out) == len(syn) and checksums_ok(out)
    assert MP_CAPABLE_SYN not in out and MSS in out
    m2 = mangler("strip-mptcp-syn")
    data = tcp(101, 1, 0x10, b"x" * 10, DSS)
    m2.handle(100, 2, data, 0.0)
    assert m2.nfq.verdicts == [(2, NF_ACCEPT, None)]  # not a SYN: untouched


def test_seq_rewrite_translates_both_ways():
    m = mangler("seq-rewrite")
    sack = bytes([5, 10]) + struct.pack("!II", 1500, 2500)
    m.handle(100, 1, tcp(1000, 0, 0x02), 0.0)  # SYN from the client: a new flow
    m.handle(101, 2, tcp(5000, 1001, 0x12, src=DST, dst=SRC, sport=80, dport=40000), 0.0)
    m.handle(100, 3, tcp(1001, 5001, 0x10, b"a" * 100, sack), 0.0)
    out = [v[2] for v in m.nfq.verdicts]
    assert all(checksums_ok(p) for p in out)
    dc, ds = (
        m.offsets[(0, frozenset({(socket.inet_aton(SRC), 40000), (socket.inet_aton(DST), 80)}))][k]
        for k in ((socket.inet_aton(SRC), 40000), (socket.inet_aton(DST), 80))
    )
    seq_ack = [struct.unpack_from("!II", p, 24) for p in out]
    assert seq_ack[0][0] == (1000 + dc) % 2**32
    assert seq_ack[1] == ((5000 + ds) % 2**32, (1001 - dc) % 2**32)
    assert seq_ack[2] == ((1001 + dc) % 2**32, (5001 - ds) % 2**32)
    assert struct.unpack_from("!II", out[2], 42) == ((1500 - ds) % 2**32, (2500 - ds) % 2**32)


def test_payload_rewrite_changes_one_byte_once():
    m = mangler("payload-rewrite", after_bytes=150)
    pkts = [tcp(1 + 100 * i, 1, 0x10, bytes(100)) for i in range(4)]
    for i, p in enumerate(pkts):
        m.handle(100, i, p, 0.0)
    changed = [(pid, out) for pid, _, out in m.nfq.verdicts if out is not None]
    assert [pid for pid, _ in changed] == [1]  # the segment that crosses 150 bytes, only it
    out = changed[0][1]
    assert checksums_ok(out)
    diff = [i for i, (a, b) in enumerate(zip(out, pkts[1], strict=True)) if a != b]
    assert len([i for i in diff if i >= 40]) == 1  # one payload byte
    assert all(i in (36, 37) for i in diff if i < 40)  # and the TCP checksum


def test_split_cuts_in_two():
    m = mangler("split")
    p = tcp(1000, 7, 0x19, bytes(range(200)), DSS)  # ACK|PSH|FIN
    m.handle(100, 5, p, 0.0)
    ((pid, verdict, first),) = m.nfq.verdicts
    ((second, addr),) = m.raw.sent
    assert addr == (DST, 0) and checksums_ok(first) and checksums_ok(second)
    assert first[33] == 0x10 and second[33] == 0x19  # FIN and PSH go with the second half
    assert struct.unpack_from("!I", second, 24)[0] == 1100
    assert payload(first) + payload(second) == bytes(range(200))


def test_coalesce_merges_contiguous_pairs_and_clamps_mss():
    m = mangler("coalesce")
    m.handle(100, 1, tcp(1, 0, 0x02, options=MSS), 0.0)
    ((_, _, syn),) = m.nfq.verdicts
    assert struct.unpack_from("!H", syn, 42)[0] == 700 and checksums_ok(syn)
    a, b = tcp(2, 9, 0x10, b"A" * 300, DSS), tcp(302, 11, 0x18, b"B" * 300, DSS)
    m.handle(100, 2, a, 0.0)  # held back
    assert len(m.nfq.verdicts) == 1
    m.handle(100, 3, b, 0.0001)
    assert m.nfq.verdicts[1] == (2, NF_DROP, None)
    pid, verdict, merged = m.nfq.verdicts[2]
    assert (pid, verdict) == (3, NF_ACCEPT) and checksums_ok(merged)
    assert payload(merged) == b"A" * 300 + b"B" * 300
    assert struct.unpack_from("!II", merged, 24) == (2, 11) and merged[33] == 0x18
    c = tcp(902, 11, 0x10, b"C" * 300, DSS)  # not contiguous (a gap): the held one goes on
    m.handle(100, 4, tcp(602, 11, 0x10, b"D" * 10), 0.001)  # held
    m.handle(100, 5, c, 0.002)
    assert m.nfq.verdicts[3] == (4, NF_ACCEPT, None)
    assert m.flush_due(1.0) is None and m.nfq.verdicts[-1] == (5, NF_ACCEPT, None)
