"""Pure pieces of the edge, without a network: header arithmetic, BPF assembly, GSO splitting."""

from __future__ import annotations

import hashlib
import random
import socket
import struct

from mptcp_impl.cli import BLOCK, pattern_block, pattern_sha256
from mptcp_impl.netio.base import _split
from mptcp_impl.netio.bpf import BPF_JMP, BPF_RET, tcp_dst_filter
from mptcp_impl.netio.packet import ipv4_base_sum, ipv4_header, ones_sum
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


def test_packet_receiver_drains_what_slipped_in_before_its_filter(monkeypatch) -> None:
    """Packets that reach the packet socket before its BPF filter are drained; with
    PACKET_VNET_HDR on, a read shorter than the virtio header fails with EINVAL, which made a
    join's endpoint fail now and then mid-transfer (MPJoinSynTxBindErr, "[Errno 22]").

    On loopback: a UDP datagram to the receiver's port reaches the socket before its filter;
    once the receiver exists, nothing of it is left, and of a UDP datagram, a SYN to another
    port and a SYN to its port, sent in that order, only the last comes up."""
    import os
    import select

    import pytest

    from mptcp_impl.netio import packet

    if os.geteuid() != 0:
        pytest.skip("needs root (AF_PACKET)")
    lo = socket.inet_aton("127.0.0.1")
    # two TCP ports held (bound, never listening: a SYN to them is answered with a reset)
    held = [socket.socket(), socket.socket()]
    for h in held:
        h.bind(("127.0.0.1", 0))
    port, other = (h.getsockname()[1] for h in held)
    real = packet.attach_filter
    before = []

    def slip_in_then_attach(sock, prog):
        # a datagram on loopback while the socket still sees everything
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.sendto(b"x" * 100, ("127.0.0.1", port))
        u.close()
        # the premise: it is queued on the socket before the filter (ready within 5 s)
        assert select.select([sock], [], [], 5)[0], "nothing reached the unfiltered socket"
        before.append(sock.recv(65535, socket.MSG_PEEK))
        real(sock, prog)

    monkeypatch.setattr(packet, "attach_filter", slip_in_then_attach)
    rx = packet.PacketReceiver("127.0.0.1", port)
    socks = []
    try:
        assert before and len(before[0]) > packet.ETH_HLEN + 20
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        socks.append(u)
        u.sendto(b"y" * 100, ("127.0.0.1", port))
        for dport in (other, port):
            t = socket.socket()
            socks.append(t)
            t.setblocking(False)
            t.connect_ex(("127.0.0.1", dport))
        assert select.select([rx], [], [], 5)[0], "the SYN to the receiver's port never came up"
        segs = rx.recv_batch()
        sport = socks[-1].getsockname()[1]
        got = [(s.src, s.dst, struct.unpack("!HH", s.tcp[:4]), s.tcp[13] & 0x3F) for s in segs]
        assert got == [(lo, lo, (sport, port), 0x02)]  # the SYN alone
        assert (rx.packets, rx.bad_ip) == (1, 0)
        assert rx.recv_batch() == []
    finally:
        rx.close()
        for s in socks + held:
            s.close()


# ---------------------------------------------------------------- IPv6 at the edge


def run_bpf(prog, pkt: bytes) -> int:
    """A classic BPF interpreter for what our filters use: the bytes the kernel would keep."""
    from mptcp_impl.netio import bpf as b

    a = x = 0
    pc = 0
    while True:
        i = prog[pc]
        cls, size, mode = i.code & 0x07, i.code & 0x18, i.code & 0xE0
        pc += 1
        if cls in (b.BPF_LD, b.BPF_LDX):
            if cls == b.BPF_LDX and mode == b.BPF_MSH:
                x = 4 * (pkt[i.k] & 0x0F)
                continue
            off = i.k + (x if mode == b.BPF_IND else 0)
            n = {b.BPF_W: 4, b.BPF_H: 2, b.BPF_B: 1}[size]
            if off + n > len(pkt):
                return 0  # a load past the end ends the program with 0
            a = int.from_bytes(pkt[off : off + n], "big")
        elif cls == b.BPF_ALU:
            assert i.code & 0xF0 == b.BPF_AND
            a &= i.k
        elif cls == b.BPF_JMP:
            op = i.code & 0xF0
            hit = a == i.k if op == b.BPF_JEQ else bool(a & i.k)
            pc += i.jt if hit else i.jf
        elif cls == b.BPF_RET:
            return i.k
        else:
            raise AssertionError(f"unexpected instruction {i}")


def frame4(dst="10.0.1.1", dport=5000, proto=6, frag=0x4000) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, frag, 64, proto, 0, bytes(4), b"")
    ip = ip[:16] + socket.inet_aton(dst)
    tcp = struct.pack("!HHIIHHHH", 1234, dport, 0, 0, 0x5000, 0, 0, 0)
    return b"\0" * 12 + b"\x08\x00" + ip + tcp


def frame6(dst="fd00:0:1::1", dport=5000, nxt=6) -> bytes:
    ip = struct.pack("!IHBB", 0x60000000, 20, nxt, 64) + bytes(16)
    ip += socket.inet_pton(socket.AF_INET6, dst)
    tcp = struct.pack("!HHIIHHHH", 1234, dport, 0, 0, 0x5000, 0, 0, 0)
    return b"\0" * 12 + b"\x86\xdd" + ip + tcp


def test_bpf_filters_for_ipv6_and_both_families_on_packets() -> None:
    from mptcp_impl.netio.bpf import tcp6_dst_filter, tcp_any_dst_filter

    v4 = tcp_dst_filter("10.0.1.1", 5000)
    v6 = tcp6_dst_filter("fd00:0:1::1", 5000)
    v6any = tcp6_dst_filter("::", 5000)
    both = tcp_any_dst_filter(5000)
    ok4, ok6 = frame4(), frame6()
    assert run_bpf(v4, ok4) and not run_bpf(v4, ok6)
    assert run_bpf(v6, ok6) and not run_bpf(v6, ok4)
    assert run_bpf(both, ok4) and run_bpf(both, ok6)
    assert run_bpf(v6any, frame6("fd00:9::9")) and not run_bpf(v6any, ok4)
    for bad in (
        frame6("fd00:0:1::2"),  # another address (each of the four words matters)
        frame6("fd01:0:1::1"),
        frame6("fd00:0:1:0:1::1"),
        frame6(dport=5001),
        frame6(nxt=17),  # UDP
        frame6(nxt=0),  # an extension header: not ours
    ):
        assert not run_bpf(v6, bad), bad
        assert not run_bpf(both, bad) or bad[14 + 24 : 14 + 40] != ok6[14 + 24 : 14 + 40]
    for bad in (frame4(dport=5001), frame4(proto=17), frame4(frag=0x2001)):
        assert not run_bpf(both, bad) and not run_bpf(v4, bad)
    assert run_bpf(both, frame4("10.9.9.9")) and not run_bpf(both, frame6(dport=80))
    arp = b"\0" * 12 + b"\x08\x06" + bytes(28)
    assert not run_bpf(both, arp) and not run_bpf(v6, arp)
    for prog in (v6, both):
        assert prog[-1].k == 0 and prog[-2].k > 65535
        for n, insn in enumerate(prog):
            if insn.code & 0x07 == BPF_JMP:
                assert n + 1 + insn.jt < len(prog) and n + 1 + insn.jf < len(prog)


def test_addresses_normalised_v4_mapped_to_ipv4() -> None:
    from mptcp_impl.cli import _hostport
    from mptcp_impl.netio.addr import join_hostport, normalize, packed, split_hostport, unpacked

    assert normalize("::ffff:10.0.1.1") == "10.0.1.1"
    assert normalize("[FD00:0:1:0::1]") == "fd00:0:1::1"
    assert normalize("10.0.1.1") == "10.0.1.1" and normalize("::") == "::"
    assert split_hostport("[::ffff:10.0.4.2]:5000") == ("10.0.4.2", 5000)
    assert split_hostport("[fd00::1]:80") == ("fd00::1", 80)
    assert (
        join_hostport("fd00::1", 80) == "[fd00::1]:80"
        and join_hostport("10.0.0.1", 1) == "10.0.0.1:1"
    )
    assert _hostport("[fd00::1]:5001") == ("fd00::1", 5001) and _hostport("[::]:1") == ("::", 1)
    assert len(packed("fd00::1")) == 16 and unpacked(packed("fd00::1")) == "fd00::1"
    assert unpacked(packed("10.0.0.1")) == "10.0.0.1"


def test_gso_sender_builds_ipv6_frames(monkeypatch) -> None:
    """The IPv6 header, ethertype and virtio header of the GSO sender (socket stubbed)."""
    from mptcp_impl.netio import packet

    sent = []

    class Sock:
        def __init__(self, *a):
            pass

        def setsockopt(self, *a):
            pass

        def bind(self, *a):
            pass

        def setblocking(self, *a):
            pass

        def sendmsg(self, parts):
            sent.append(b"".join(parts))

    monkeypatch.setattr(packet.socket, "socket", Sock)
    hop = packet.NextHop("x-eth0", 2, b"\x02" * 6, b"\x04" * 6, 1500)
    s = packet.GsoPacketSender("fd00:0:1::1", "fd00:0:4::2", hop)
    hdr = struct.pack("!HHIIHHHH", 1, 2, 3, 4, 0x5010, 5, s.tcp_checksum_field(20 + 3000), 0)
    s.send(hdr, b"z" * 3000, gso_size=1428)
    (f,) = sent
    flags, gso_type, hdr_len, gso_size, csum_start, csum_off = struct.unpack("=BBHHHH", f[:10])
    assert (gso_type, gso_size, csum_start, csum_off, hdr_len) == (4, 1428, 54, 16, 74)
    assert f[10 + 12 : 10 + 14] == b"\x86\xdd"
    ip = f[24:64]
    assert ip[0] >> 4 == 6 and struct.unpack("!H", ip[4:6])[0] == 3020 and ip[6] == 6
    assert ip[8:24] == socket.inet_pton(socket.AF_INET6, "fd00:0:1::1")
    assert ip[24:40] == socket.inet_pton(socket.AF_INET6, "fd00:0:4::2")
    # the checksum seed is the IPv6 pseudo-header sum (RFC 8200 8.1) without the data
    pseudo = ip[8:40] + struct.pack("!IxxxB", 3020, 6)
    assert s.tcp_checksum_field(3020) == ones_sum(pseudo)


def test_mptcp_edge_gives_a_join_slot_back_when_it_cannot_bind() -> None:
    """The path manager asked for a subflow (OpenSubflow, its slot taken) and the edge cannot
    bind a port on that address (EADDRNOTAVAIL: the address went away meanwhile): the edge
    tells the connection (``subflow_open_failed``), whose only slot is free again."""
    import errno

    from mptcp_impl.mptcp.connection import MptcpConnection, OpenSubflow
    from mptcp_impl.mptcp.ctrl import Endpoint, Limits, MptcpConfig
    from mptcp_impl.netio.mptcp_edge import MptcpConn

    conn = MptcpConnection(MptcpConfig(endpoints=[Endpoint("10.0.2.1")], limits=Limits(subflows=1)))
    conn.connect(("10.0.1.1", 40000), ("10.0.5.2", 5001), 0.0)
    conn.fully_established = True  # (what the handshake would have done)
    assert conn.pm.open_subflow("10.0.2.1")
    req = conn.next_event()
    assert isinstance(req, OpenSubflow) and not conn.pm.open_subflow("10.0.2.1")

    class NoBind:
        def new_endpoint(self, addr: str, port: int = 0) -> None:
            raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")

    edge = MptcpConn.__new__(MptcpConn)  # (no stack, no sockets: only its _open_subflow)
    edge.stack, edge.mconn, edge.links = NoBind(), conn, {}
    edge._open_subflow(req, 0.1)
    assert conn.mib["MPJoinSynTxBindErr"] == 1 and not edge.links
    assert conn.pm.open_subflow("10.0.2.1"), "the slot of the subflow never opened is lost"


def _wire(ack: int, ts: int = 5, dss=None, flags: int = ACK, payload: bytes = b"", sack=None):
    """A segment from the peer as it comes off the wire (Linux's option layout)."""
    from mptcp_impl.mptcp.options import to_tcp_option
    from mptcp_impl.tcp.options import Sack, Timestamps
    from mptcp_impl.tcp.segment import encode_segment

    opts = [Timestamps(ts, 1)]
    if sack:
        opts.append(Sack(sack))
    if dss is not None:
        opts.append(to_tcp_option(dss))
    seg = TcpSegment(5001, 40000, 77, ack, flags, 500, opts, payload)
    return encode_segment(seg, "10.0.0.2", "10.0.0.1")


def test_pure_acks_superseded_in_a_batch_are_coalesced_and_nothing_else() -> None:
    from mptcp_impl.mptcp.options import Dss
    from mptcp_impl.netio.base import coalesce_acks, plain_ack

    def da(n, **kw):
        return Dss(data_ack=n, data_ack64=True, **kw)

    una = {"a": (1000, 9000), "b": (1000, 9000)}.get
    # a run of advancing pure ACKs (DATA_ACK only) of one subflow: the last stands for all
    run = [_wire(2000, dss=da(9)), _wire(3000, dss=da(10)), _wire(4000, ts=6, dss=da(11))]
    assert plain_ack(run[0]) == (2000, 5)
    assert coalesce_acks(["a"] * 3, run, una) == [0, 0, 3]
    # plain TCP (timestamps only) and 32-bit DATA_ACKs too; acks wrapping past 2**32
    w = [_wire(0xFFFFFF00), _wire(0x100), _wire(0x300, dss=Dss(data_ack=3))]
    assert coalesce_acks(["a"] * 3, w, lambda k: (0xFFFFF000, 0x1000)) == [0, 0, 3]
    # two subflows interleaved: each its own run
    ab = [_wire(2000), _wire(2000), _wire(3000), _wire(3000)]
    assert coalesce_acks(["a", "b", "a", "b"], ab, una) == [0, 0, 2, 2]
    # never: not allowed for the connection, one not above snd_una (a duplicate ACK), a later
    # one acking what was never sent, equal ACKs, an older timestamp, SACK blocks, a mapping,
    # a DATA_FIN, data, a FIN
    assert coalesce_acks(["a"] * 2, [_wire(2000), _wire(9001)], una) == [1, 1]
    assert coalesce_acks(["a"] * 2, [_wire(2000), _wire(9000)], una) == [0, 2]
    assert coalesce_acks(["a"] * 2, run[:2], lambda k: None) == [1, 1]
    assert coalesce_acks(["a"] * 2, [_wire(1000), _wire(3000)], una) == [1, 1]
    assert coalesce_acks(["a"] * 2, [_wire(2000), _wire(2000)], una) == [1, 1]
    assert coalesce_acks(["a"] * 2, [_wire(2000, ts=9), _wire(3000, ts=8)], una) == [1, 1]
    others = [
        _wire(2000, sack=[(5000, 6000)]),
        _wire(2000, dss=da(9, dsn=5, dsn64=True, subflow_seq=1, data_len=10)),
        _wire(2000, dss=da(9, dsn=5, dsn64=True, data_len=1, data_fin=True)),
        _wire(2000, payload=b"x"),
        _wire(2000, flags=ACK | FIN),
    ]
    for o in others:
        assert plain_ack(o) is None
        assert coalesce_acks(["a"] * 2, [o, _wire(3000)], una) == [1, 1]
        # and one in between ends the run: the ACK before it is processed too
        assert coalesce_acks(["a"] * 3, [_wire(1500), o, _wire(3000)], una) == [1, 1, 1]


def test_small_queue_limit_follows_the_pacing_rate_and_asks_the_kernel_only_near_it() -> None:
    """TCP small queues at the edge (issue 22): the limit is ``time`` of the connection's
    pacing rate between a floor and a cap (Linux's tcp_small_queue_check), and the host's
    queue (SIOCOUTQ, here of a real raw socket that sent nothing: 0) is asked only once the
    bytes TCP sent since the last answer could fill half of it. Before: a fixed 256 KiB, and
    an ioctl per subflow on every flush (unshaped CPU 0.29 -> 0.35 s/Gbit)."""
    from mptcp_impl.netio.base import SmallQueue
    from mptcp_impl.netio.packet import RawIpSender
    from tests.tcp.tcp_wire import Wire

    w = Wire()
    w.connect()
    w.run(until=w.now + 0.1)
    a = w.a
    sender = RawIpSender("127.0.0.1", "127.0.0.1")
    try:
        q = SmallQueue(sender, a, time=0.004, floor=100_000, cap=1_000_000)
        assert a.pacing_rate * 0.004 < 100_000 and q.limit() == 100_000  # the floor
        q.time = 10.0
        assert q.limit() == 1_000_000  # the cap
        q.time = 100_000 / a.pacing_rate  # a limit between the two
        assert abs(q.limit() - 100_000) <= 1
        q.time, q.floor = 0.0, 20_000
        assert q.room() == 20_000 and q.reads == 0  # nothing sent: nothing to ask
        a.send(bytes(5000))
        a.segments_to_send(w.now)
        assert q.room() == 15_000 and q.reads == 0  # under half: the bound, no ioctl
        a.send(bytes(100_000))
        a.tx_room = q.room()
        assert sum(len(s.payload) for s in a.segments_to_send(w.now)) > 5000
        assert q.room() == 20_000 and q.reads == 1  # past half: asked; nothing queued here
    finally:
        sender.close()
