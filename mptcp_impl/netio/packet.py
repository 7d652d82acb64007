"""Packet sockets: receive our segments with AF_PACKET, send them through the kernel.

Receive: one AF_PACKET/SOCK_RAW socket (Ethernet-like devices: veth, lo) per local (address, port), a BPF filter so that only
our segments are copied up, ``PACKET_VNET_HDR`` so that each packet carries the kernel's
checksum verdict (segments from a local or veth peer are often CHECKSUM_PARTIAL, i.e. their
checksum field is not yet filled in, and verifying them in Python would wrongly reject them), and
lengths taken from the IP header, so that GSO super-packets (TSO on veth) come up whole.

Send: either a raw IP socket bound to the source address (the kernel's routing, including the
testbed's source-based rules, picks the interface; one syscall per MSS segment), or an AF_PACKET
socket with ``PACKET_VNET_HDR`` that hands the kernel one GSO super-packet of up to 64 KiB with
checksum offload: the per-packet Python cost is then paid once per ~44 segments. The latter needs
the next hop's MAC address, resolved once at start from the routing and neighbour tables.

IPv6 the same way: a receiver on an IPv6 address (ethertype 0x86DD, no extension headers), one on
``::`` takes both families (dual stack, as a kernel socket on ``::``); the senders build an IPv6
header (GSO type TCPV6) or use a raw IPv6 socket that the kernel puts the header on.
"""

from __future__ import annotations

import errno
import fcntl
import json
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .addr import ANY6, is_v6, packed
from .bpf import attach_filter, drop_all_filter, tcp6_dst_filter, tcp_any_dst_filter, tcp_dst_filter

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_HLEN = 14
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
SIOCOUTQ = 0x5411  # (TIOCOUTQ) a packet or raw socket's bytes not yet freed: in the qdisc
_OUTQ_ARG = bytes(4)


def queued_bytes(sock: socket.socket) -> int:
    """Bytes this socket has handed to the kernel that the device has not taken yet (its
    sk_wmem_alloc, mostly what waits in the interface's qdisc; skb overhead included): the
    measure of Linux's TCP small queues. 0 if the socket cannot tell."""
    try:
        return int.from_bytes(fcntl.ioctl(sock.fileno(), SIOCOUTQ, _OUTQ_ARG), "little")
    except OSError:
        return 0


SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32

VNET_HDR = struct.Struct("=BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_off
VNET_HDR_LEN = VNET_HDR.size  # 10
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_F_DATA_VALID = 2
VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
VIRTIO_NET_HDR_GSO_TCPV6 = 4

BASE = VNET_HDR_LEN + ETH_HLEN  # where the IPv4 header starts in a received buffer
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6_HEAD = struct.Struct("!IHBB")  # version/class/flow, payload length, next header, hops
_H = struct.Struct("!H")


@dataclass(slots=True)
class ReceivedSegment:
    """The TCP bytes of one received packet with its addresses (4 or 16 bytes, packed)."""

    src: bytes
    dst: bytes
    tcp: bytes
    csum_ok: bool  # the kernel verified it, or it is locally generated (partial) and trusted


class PacketReceiver:
    """An AF_PACKET socket that sees only TCP to (local_ip, port), checksum verdicts included.

    ``local_ip`` None or 0.0.0.0: any IPv4 address; an IPv6 address: that one; ``::``: any
    address of either family."""

    def __init__(
        self, local_ip: str | None, port: int, rcvbuf: int = 16 << 20, max_packet: int = 1 << 18
    ) -> None:
        # SOCK_RAW: the kernel allows PACKET_VNET_HDR only there. Python cannot bind a packet
        # socket to "all interfaces", so the protocol is given at creation; whatever arrives
        # before the filter is attached is drained below.
        if local_ip == ANY6:
            proto, prog = ETH_P_ALL, tcp_any_dst_filter(port, l2=ETH_HLEN)
        elif local_ip is not None and is_v6(local_ip):
            proto, prog = ETH_P_IPV6, tcp6_dst_filter(local_ip, port, l2=ETH_HLEN)
        else:
            proto, prog = ETH_P_IP, tcp_dst_filter(local_ip, port, l2=ETH_HLEN)
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
        try:
            attach_filter(s, prog)
            s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            try:
                s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            except OSError:
                pass  # older kernels: outgoing copies fail the dst filter anyway
            try:
                s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            except OSError:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            s.setblocking(False)
            while True:  # drain what slipped in before the filter
                try:
                    # not recv(1): with PACKET_VNET_HDR a read shorter than the virtio header
                    # fails with EINVAL (the rest of a longer packet is simply dropped)
                    s.recv(256)
                except BlockingIOError:
                    break
                except OSError as e:
                    # A packet of another flow whose GSO type the virtio header cannot express
                    # fails with EINVAL; the kernel has dequeued it: go on draining.
                    if e.errno != errno.EINVAL:
                        raise
        except BaseException:
            s.close()
            raise
        self.sock = s
        self._buf = bytearray(max_packet)
        self._view = memoryview(self._buf)
        self.packets = 0
        self.bytes = 0
        self.bad_ip = 0
        self._drops = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def kernel_drops(self) -> int:
        """Packets the kernel dropped because our socket queue was full (since creation).

        PACKET_STATISTICS resets on each read, so the counts are accumulated here.
        """
        try:
            raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        except OSError:
            return self._drops
        _packets, drops = struct.unpack("II", raw)
        self._drops += drops
        return self._drops

    def recv_batch(self, limit: int = 64) -> list[ReceivedSegment]:
        """Read up to ``limit`` packets without blocking; an empty list means nothing pending."""
        out: list[ReceivedSegment] = []
        recv_into = self.sock.recv_into
        buf = self._buf
        view = self._view
        for _ in range(limit):
            try:
                n = recv_into(buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                self.bad_ip += 1  # dequeued but not expressible with a virtio header
                continue
            self.packets += 1
            if n < BASE + 20:
                self.bad_ip += 1
                continue
            if buf[BASE] >> 4 == 6:
                seg6 = self._ipv6(view, n)
                if seg6 is not None:
                    out.append(seg6)
                continue
            flags = buf[0]
            ihl = (buf[BASE] & 0x0F) * 4
            tot = (buf[BASE + 2] << 8) | buf[BASE + 3]
            avail = n - BASE
            if tot == 0:  # BIG TCP super-packets leave the 16-bit length zero
                tot = avail
            if ihl < 20 or tot < ihl or tot > avail:
                self.bad_ip += 1
                continue
            base = BASE
            self.bytes += tot
            out.append(
                ReceivedSegment(
                    bytes(view[base + 12 : base + 16]),
                    bytes(view[base + 16 : base + 20]),
                    bytes(view[base + ihl : base + tot]),
                    bool(flags & (VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID)),
                )
            )
        return out

    def _ipv6(self, view: memoryview, n: int) -> ReceivedSegment | None:
        """One IPv6 packet (the filter let only next header TCP through)."""
        b = BASE
        avail = n - b - 40
        plen = (view[b + 4] << 8) | view[b + 5]
        if plen == 0:  # a BIG TCP super-packet (its jumbo option never reaches us: no ext hdr)
            plen = avail
        if avail < 20 or plen > avail or plen < 20:
            self.bad_ip += 1
            return None
        self.bytes += plen + 40
        return ReceivedSegment(
            bytes(view[b + 8 : b + 24]),
            bytes(view[b + 24 : b + 40]),
            bytes(view[b + 40 : b + 40 + plen]),
            bool(self._buf[0] & (VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID)),
        )

    def close(self) -> None:
        self.sock.close()


class _RawSender:
    """What both one-MSS-per-send senders share: a non-blocking raw socket bound to the source
    address and connected to the peer, so the kernel's routing (source-based rules included)
    picks the interface. A full send queue counts as a drop, which TCP repairs as after a loss."""

    gso = False

    def _open(self, family: int, proto: int, src: str, dst: str, prepare) -> None:
        s = socket.socket(family, socket.SOCK_RAW, proto)
        try:
            prepare(s)
            s.bind((src, 0))
            s.connect((dst, 0))
            try:
                s.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 4 << 20)
            except OSError:
                pass
            s.setblocking(False)
        except BaseException:
            s.close()
            raise
        self.sock = s
        self.packets = 0
        self.dropped = 0

    def _sendmsg(self, parts: tuple) -> None:
        try:
            self.sock.sendmsg(parts)
            self.packets += 1
        except OSError:  # BlockingIOError (queue full) included
            self.dropped += 1

    def queued(self) -> int:
        """Bytes sent that still wait in the host's queues (``queued_bytes``)."""
        return queued_bytes(self.sock)

    def close(self) -> None:
        self.sock.close()


class RawIp6Sender(_RawSender):
    """One IPv6 packet per segment through a raw IPv6 socket: the kernel writes the IPv6
    header; the TCP checksum is ours (``encode_segment``). The socket never receives: a drop-all
    filter keeps the copies of every TCP packet a raw socket would get out of its queue."""

    def __init__(self, src: str, dst: str) -> None:
        self._open(
            socket.AF_INET6,
            socket.IPPROTO_TCP,
            src,
            dst,
            lambda s: attach_filter(s, drop_all_filter()),
        )

    def send(self, header: bytes, payload: bytes | memoryview, gso_size: int = 0) -> None:
        """Send one segment: ``header`` is the TCP header with its checksum complete."""
        self._sendmsg((header, payload))


def raw_sender(src: str, dst: str) -> RawIpSender | RawIp6Sender:
    """A one-MSS-per-send sender through the kernel's routing, of the addresses' family."""
    return RawIp6Sender(src, dst) if is_v6(dst) else RawIpSender(src, dst)


class RawIpSender(_RawSender):
    """One IPv4 datagram per segment through a raw socket: IP_HDRINCL lets us set DF while the
    kernel fills in the checksum and the ID."""

    # SO_MARK of every raw socket of this process (0: none). Raw IP packets pass the kernel's
    # netfilter OUTPUT hook (AF_PACKET ones do not): the proxy marks its own so that its nat
    # redirect of local TCP leaves them alone.
    fwmark = 0

    def __init__(self, src: str, dst: str) -> None:
        self._open(socket.AF_INET, socket.IPPROTO_RAW, src, dst, self._mark)
        self._src = socket.inet_aton(src)
        self._dst = socket.inet_aton(dst)

    def _mark(self, s: socket.socket) -> None:
        if self.fwmark:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, self.fwmark)

    def send(self, header: bytes, payload: bytes | memoryview, gso_size: int = 0) -> None:
        """Send one segment: ``header`` is the TCP header with its checksum complete."""
        ip = _IPV4.pack(
            0x45,
            0,
            20 + len(header) + len(payload),
            0,
            0x4000,
            64,
            socket.IPPROTO_TCP,
            0,
            self._src,
            self._dst,
        )
        self._sendmsg((ip, header, payload))


@dataclass(frozen=True, slots=True)
class NextHop:
    dev: str
    ifindex: int
    src_mac: bytes
    dst_mac: bytes
    mtu: int


def _ip_json(*args: str) -> list[dict]:
    res = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, timeout=10)
    if res.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {res.stderr.strip()}")
    return json.loads(res.stdout or "[]")


def _arp_lookup(addr: str, dev: str) -> bytes | None:
    for line in Path("/proc/net/arp").read_text().splitlines()[1:]:
        f = line.split()
        if len(f) >= 6 and f[0] == addr and f[5] == dev and int(f[2], 16) & 0x2:
            return bytes.fromhex(f[3].replace(":", ""))
    return None


def _neigh6_lookup(addr: str, dev: str) -> bytes | None:
    for n in _ip_json("-6", "neigh", "show", addr, "dev", dev):
        state = set(n.get("state", []))
        if n.get("lladdr") and state & {"REACHABLE", "STALE", "DELAY", "PROBE", "PERMANENT"}:
            return bytes.fromhex(n["lladdr"].replace(":", ""))
    return None


def resolve_next_hop(src: str, dst: str, timeout: float = 3.0) -> NextHop:
    """Interface and MAC addresses to reach ``dst`` from ``src``, as the kernel routes it.

    When the neighbour is not yet resolved, a UDP datagram to the discard port makes the kernel
    resolve it; the table has no change notification we can wait on cheaply, so this polls.
    """
    route = _ip_json("route", "get", dst, "from", src)[0]
    dev = route["dev"]
    nh = route.get("gateway", dst)
    sysfs = Path("/sys/class/net") / dev
    src_mac = bytes.fromhex(sysfs.joinpath("address").read_text().strip().replace(":", ""))
    mtu = int(sysfs.joinpath("mtu").read_text())
    ifindex = int(sysfs.joinpath("ifindex").read_text())
    if dev == "lo":
        return NextHop(dev, ifindex, src_mac, b"\0" * 6, mtu)
    v6 = is_v6(dst)
    lookup = _neigh6_lookup if v6 else _arp_lookup
    mac = lookup(nh, dev)
    deadline = time.monotonic() + timeout
    while mac is None:
        with socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((src, 0))
            u.sendto(b"", (nh, 9))
        time.sleep(0.01)
        mac = lookup(nh, dev)
        if mac is None and time.monotonic() > deadline:
            raise OSError(f"no neighbour entry for {nh} on {dev}")
    return NextHop(dev, ifindex, src_mac, mac, mtu)


def ipv4_base_sum(src: bytes, dst: bytes) -> int:
    """Sum of the IPv4 header words that never change for a (src, dst) pair: version/IHL, DF,
    TTL 64/protocol TCP and the addresses. Per packet only total length and ID are added."""
    words = 0x4500 + 0x4000 + ((64 << 8) | socket.IPPROTO_TCP)
    for a in (src, dst):
        words += (a[0] << 8 | a[1]) + (a[2] << 8 | a[3])
    return words


def ipv4_header(base_sum: int, total: int, ip_id: int, src: bytes, dst: bytes) -> bytes:
    """A 20-byte IPv4 header (DF, TTL 64, TCP) with its checksum, from ``ipv4_base_sum``."""
    c = base_sum + total + ip_id
    c = (c & 0xFFFF) + (c >> 16)
    c = (c & 0xFFFF) + (c >> 16)
    return _IPV4.pack(0x45, 0, total, ip_id, 0x4000, 64, socket.IPPROTO_TCP, c ^ 0xFFFF, src, dst)


def ones_sum(data: bytes) -> int:
    """One's-complement sum modulo 0xffff (2**16 == 1 mod 0xffff, so one bigint mod does it)."""
    return int.from_bytes(data, "big") % 0xFFFF


class GsoPacketSender:
    """Ethernet frames with a virtio_net_hdr: checksum offload and GSO super-packets.

    The TCP checksum field carries only the pseudo-header sum (as the kernel's own TCP leaves
    it for CHECKSUM_PARTIAL); the kernel or the device completes it, and cuts a super-packet of
    ``len(payload) > gso_size`` into ``gso_size`` pieces with the TCP and IP headers fixed up.
    """

    gso = True

    def __init__(self, src: str, dst: str, hop: NextHop | None = None) -> None:
        self.hop = hop or resolve_next_hop(src, dst)
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: never receives
        try:
            s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            try:
                s.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 8 << 20)
            except OSError:
                pass
            s.bind((self.hop.dev, 0))
            s.setblocking(False)
        except BaseException:
            s.close()
            raise
        self.sock = s
        self._src = packed(src)
        self._dst = packed(dst)
        self.v6 = is_v6(dst)
        self._eth = self.hop.dst_mac + self.hop.src_mac + (b"\x86\xdd" if self.v6 else b"\x08\x00")
        # Pseudo-header sum without the length: src, dst, protocol (IPv6's 32-bit length and
        # next header sum the same way for lengths below 64 KiB).
        self._pseudo = int.from_bytes(self._src + self._dst, "big") + socket.IPPROTO_TCP
        self._ip_sum = ipv4_base_sum(self._src, self._dst) if not self.v6 else 0
        if self.v6:
            self.send = self._send6  # type: ignore[method-assign]
        self._vnet_plain: dict[tuple[int, int], bytes] = {}
        self._ip_id = 0
        self.packets = 0
        self.dropped = 0

    def tcp_checksum_field(self, tcp_len: int) -> int:
        """The value to put in the checksum field for offload: the folded pseudo-header sum."""
        s = (self._pseudo + tcp_len) % 0xFFFF
        return s

    def send(self, header: bytes, payload: bytes | memoryview, gso_size: int = 0) -> None:
        """``header``'s checksum field must hold ``tcp_checksum_field(len(header)+len(payload))``."""
        hlen = len(header)
        plen = len(payload)
        total = 20 + hlen + plen
        if total > 0xFFFF:
            total = 0
        self._ip_id = ip_id = (self._ip_id + 1) & 0xFFFF
        ip = ipv4_header(self._ip_sum, total, ip_id, self._src, self._dst)
        self._emit(ip, header, payload, gso_size, VIRTIO_NET_HDR_GSO_TCPV4)

    def _send6(self, header: bytes, payload: bytes | memoryview, gso_size: int = 0) -> None:
        """IPv6: a 40-byte header (hop limit 64); the same checksum offload and GSO."""
        hlen = len(header)
        plen = len(payload)
        ip = (
            _IPV6_HEAD.pack(0x60000000, hlen + plen, socket.IPPROTO_TCP, 64) + self._src + self._dst
        )
        self._emit(ip, header, payload, gso_size, VIRTIO_NET_HDR_GSO_TCPV6)

    def _emit(
        self, ip: bytes, header: bytes, payload: bytes | memoryview, gso_size: int, gso_type: int
    ) -> None:
        """The virtio header (checksum offload, and GSO when the payload is longer than one
        segment) in front of Ethernet, IP and TCP; one sendmsg. A full queue or a vanished
        device counts a drop: TCP retransmits."""
        l4 = 14 + len(ip)  # where TCP starts: Ethernet + IP header
        hlen = len(header)
        if gso_size and len(payload) > gso_size:
            vnet = VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type, l4 + hlen, gso_size, l4, 16)
        else:
            key = (l4, hlen)
            vnet = self._vnet_plain.get(key)
            if vnet is None:
                vnet = self._vnet_plain[key] = VNET_HDR.pack(
                    VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, l4 + hlen, 0, l4, 16
                )
        try:
            self.sock.sendmsg((vnet, self._eth, ip, header, payload))
            self.packets += 1
        except OSError:
            self.dropped += 1

    def queued(self) -> int:
        """Bytes sent that still wait in the host's queues (``queued_bytes``)."""
        return queued_bytes(self.sock)

    def close(self) -> None:
        self.sock.close()
