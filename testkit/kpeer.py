"""Linux-kernel TCP peers and a segment injector, run inside test namespaces.

    python -m testkit.kpeer server --listen IP:PORT [--rcvbuf N] [--slow-ms MS] [--stall-ms MS] [--echo]
                                               [--reset-after N] [--shutdown-after N]
    python -m testkit.kpeer client --connect IP:PORT --bytes N [--pause-at N]
    python -m testkit.kpeer inject --local IP --peer IP:PORT --kinds K1,K2 --offset N

Each prints one JSON line on stdout; servers print "listening" on stderr when ready, a pausing
client prints "paused" and waits for a line on stdin, the injector prints "sniffing", then "observed"
once it has seen the peer's SYN-ACK, waits for a line on stdin, and prints "injected" when done.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import resource
import socket
import struct
import sys
import termios
import time

from mptcp_impl.cli import BLOCK, pattern_block
from mptcp_impl.tcp.segment import ACK, RST, SYN


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _hp(s: str) -> tuple[str, int]:
    h, _, p = s.rpartition(":")
    return h, int(p)


def server(a: argparse.Namespace) -> None:
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if a.rcvbuf:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, a.rcvbuf)
    ls.bind(_hp(a.listen))
    ls.listen(4)
    print("listening", file=sys.stderr, flush=True)
    c, peer = ls.accept()
    if a.stall_ms:
        time.sleep(a.stall_ms / 1000)  # an application busy elsewhere: the window fills up
    h = hashlib.sha256()
    n = 0
    t0 = time.monotonic()
    res: dict = {}
    while True:
        want = 1 << 16
        if a.reset_after:
            want = min(want, a.reset_after - n)
        if a.shutdown_after and "half_closed" not in res:
            want = min(want, a.shutdown_after - n)
        d = c.recv(want)
        if not d:
            break
        n += len(d)
        h.update(d)
        if a.echo:
            c.sendall(d)
        if a.slow_ms:
            time.sleep(a.slow_ms / 1000)  # a slow application, to close the window
        if a.reset_after and n >= a.reset_after:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            res["reset"] = True
            break
        if a.shutdown_after and n >= a.shutdown_after and "half_closed" not in res:
            c.shutdown(socket.SHUT_WR)  # our FIN while the peer still sends: a half-close
            res["half_closed"] = n
    c.close()
    ls.close()
    res.update(
        bytes_received=n,
        sha256=h.hexdigest(),
        duration_s=time.monotonic() - t0,
        peer=list(peer),
        cpu_s=_cpu(),
    )
    print(json.dumps(res), flush=True)


def _outq(s: socket.socket) -> int:
    buf = fcntl.ioctl(s.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")  # SIOCOUTQ
    return struct.unpack("i", buf)[0]


def client(a: argparse.Namespace) -> None:
    block = memoryview(pattern_block(a.seed))
    s = socket.create_connection(_hp(a.connect), timeout=60)
    h = hashlib.sha256()
    left = a.bytes
    sent = 0
    t0 = time.monotonic()
    paused = False
    while left > 0:
        pos = sent % BLOCK  # where in the repeated block the stream is
        chunk = block[pos : pos + min(left, BLOCK - pos)]
        if a.pause_at and not paused and sent + len(chunk) > a.pause_at:
            chunk = chunk[: a.pause_at - sent]
        s.sendall(chunk)
        h.update(chunk)
        sent += len(chunk)
        left -= len(chunk)
        if a.pause_at and not paused and sent >= a.pause_at:
            paused = True
            # Pause only once everything sent is acknowledged, so the peer's rcv.nxt is known
            # exactly. The kernel offers no event for that: poll SIOCOUTQ (unacked + unsent).
            deadline = time.monotonic() + 10
            while _outq(s):
                if time.monotonic() >= deadline:
                    raise SystemExit(
                        f"kpeer client: {_outq(s)} bytes still unacknowledged 10 s after "
                        f"sending {sent}: waited for SIOCOUTQ 0 before pausing"
                    )
                time.sleep(0.002)
            print(f"paused {s.getsockname()[0]}:{s.getsockname()[1]}", file=sys.stderr, flush=True)
            sys.stdin.readline()
    s.shutdown(socket.SHUT_WR)
    back = hashlib.sha256()
    nback = 0
    while d := s.recv(65536):  # whatever the peer sends back (an echo server)
        back.update(d)
        nback += len(d)
    dur = time.monotonic() - t0
    s.close()
    print(
        json.dumps(
            {
                "bytes_sent": sent,
                "sha256": h.hexdigest(),
                "duration_s": dur,
                "goodput_mbit": sent * 8 / dur / 1e6,
                "cpu_s": _cpu(),
                "bytes_back": nback,
                "sha256_back": back.hexdigest(),
            }
        ),
        flush=True,
    )


def _csum(data: bytes) -> int:
    if len(data) & 1:
        data += b"\0"
    s = int.from_bytes(data, "big") % 0xFFFF
    return 0xFFFF - s if s else 0xFFFF


def craft(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    options: bytes = b"",
    doff: int | None = None,
    payload: bytes = b"",
) -> bytes:
    """A TCP segment with a correct checksum, whatever nonsense its header says."""
    hlen = 20 + len(options)
    doff = hlen // 4 if doff is None else doff
    hdr = (
        struct.pack(
            "!HHIIHHHH",
            sport,
            dport,
            seq & 0xFFFFFFFF,
            ack & 0xFFFFFFFF,
            (doff << 12) | flags,
            65535,
            0,
            0,
        )
        + options
    )
    seg = hdr + payload
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(seg))
    c = _csum(pseudo + seg)
    return seg[:16] + struct.pack("!H", c) + seg[18:]


KINDS = (
    "rst_in_window",
    "syn_in_window",
    "bad_doff_small",
    "bad_doff_large",
    "optlen0",
    "optlen1",
    "opt_past_header",
    "trunc_opts",
    "bad_checksum",
)
CHALLENGED = ("rst_in_window", "syn_in_window")


def _tcp_of(pkt: bytes) -> tuple[str, str, int, int, int, int, int, int] | None:
    if len(pkt) < 40 or pkt[0] >> 4 != 4 or pkt[9] != 6:
        return None
    ihl = (pkt[0] & 15) * 4
    tot = int.from_bytes(pkt[2:4], "big")
    sport, dport, seq, ack, offfl = struct.unpack_from("!HHIIH", pkt, ihl)
    plen = tot - ihl - (offfl >> 12) * 4
    return (
        socket.inet_ntoa(pkt[12:16]),
        socket.inet_ntoa(pkt[16:20]),
        sport,
        dport,
        seq,
        ack,
        offfl & 0x1FF,
        plen,
    )


def inject(a: argparse.Namespace) -> None:
    """Learn the connection from the peer's SYN-ACK; on a stdin line, send crafted segments.

    Our side's sequence number at injection time is deterministic: the SYN-ACK acknowledges our
    ISN + 1, and the client has sent exactly ``--offset`` bytes when it pauses. After each
    segment that calls for a challenge ACK (RFC 5961), wait for the peer's ACK of exactly
    rcv.nxt on the wire and count it.
    """
    peer_ip, peer_port = _hp(a.peer)
    sniff = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
    sniff.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sniff.settimeout(20)
    print("sniffing", file=sys.stderr, flush=True)
    while True:
        t = _tcp_of(sniff.recv(65536))
        if (
            t
            and t[0] == peer_ip
            and t[2] == peer_port
            and t[1] == a.local
            and t[6] & (SYN | ACK) == SYN | ACK
        ):
            _, _, _, mine, peer_isn, ack, _, _ = t
            break
    print("observed", file=sys.stderr, flush=True)
    sys.stdin.readline()
    sniff.setblocking(False)
    while True:  # forget what flowed before the pause
        try:
            sniff.recv(65536)
        except BlockingIOError:
            break
    sniff.settimeout(3)
    rcv_nxt = (ack + a.offset) & 0xFFFFFFFF
    snd_nxt = (peer_isn + 1) & 0xFFFFFFFF
    base = dict(src=a.local, dst=peer_ip, sport=mine, dport=peer_port, ack=snd_nxt, flags=ACK)
    out = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    out.bind((a.local, 0))
    seen: dict[str, int] = {}
    for k in a.kinds.split(","):
        if k == "rst_in_window":
            raw = craft(**{**base, "seq": rcv_nxt + 1000, "flags": RST, "ack": 0})
        elif k == "syn_in_window":
            raw = craft(**{**base, "seq": rcv_nxt + 1000, "flags": SYN, "ack": 0})
        elif k == "bad_doff_small":
            raw = craft(seq=rcv_nxt, doff=3, payload=b"x" * 20, **base)
        elif k == "bad_doff_large":
            raw = craft(seq=rcv_nxt, doff=15, payload=b"x" * 8, **base)
        elif k == "optlen0":  # an option of length 0 (would loop forever if trusted)
            raw = craft(seq=rcv_nxt, options=b"\x08\x00" + b"\x01" * 10, payload=b"x", **base)
        elif k == "optlen1":  # length 1 cannot even cover kind and length
            raw = craft(seq=rcv_nxt, options=b"\x08\x01" + b"\x01" * 10, payload=b"x", **base)
        elif k == "opt_past_header":  # timestamps claiming 32 bytes in a 12-byte option area
            raw = craft(
                seq=rcv_nxt, options=b"\x01\x01\x08\x20" + b"\x00" * 8, payload=b"x", **base
            )
        elif k == "trunc_opts":  # kind 8 as the last byte, its length missing
            raw = craft(seq=rcv_nxt, options=b"\x01\x01\x01\x08", payload=b"x", **base)
        elif k == "bad_checksum":
            b = bytearray(craft(seq=rcv_nxt, payload=b"y" * 10, **base))
            b[16] ^= 0x55
            raw = bytes(b)
        else:
            raise SystemExit(f"unknown kind {k}")
        out.sendto(raw, (peer_ip, 0))
        if k in CHALLENGED:
            seen[k] = 0
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                try:
                    t = _tcp_of(sniff.recv(65536))
                except (TimeoutError, BlockingIOError):
                    break
                if (
                    t
                    and t[0] == peer_ip
                    and t[2] == peer_port
                    and t[3] == mine
                    and t[6] == ACK
                    and t[7] == 0
                    and t[5] == rcv_nxt
                ):
                    seen[k] += 1
                    break
    out.close()
    print("injected", file=sys.stderr, flush=True)
    print(
        json.dumps(
            {
                "kinds": a.kinds.split(","),
                "rcv_nxt": rcv_nxt,
                "port": mine,
                "challenge_acks_seen": seen,
            }
        ),
        flush=True,
    )


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server")
    s.add_argument("--listen", required=True)
    s.add_argument("--rcvbuf", type=int, default=0)
    s.add_argument("--slow-ms", type=float, default=0)
    s.add_argument("--stall-ms", type=float, default=0)
    s.add_argument("--echo", action="store_true", help="send back what arrives")
    s.add_argument("--reset-after", type=int, default=0)
    s.add_argument("--shutdown-after", type=int, default=0)
    c = sub.add_parser("client")
    c.add_argument("--connect", required=True)
    c.add_argument("--bytes", type=int, required=True)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--pause-at", type=int, default=0)
    i = sub.add_parser("inject")
    i.add_argument("--local", required=True)
    i.add_argument("--peer", required=True)
    i.add_argument("--kinds", required=True, help="comma-separated: " + ",".join(KINDS))
    i.add_argument("--offset", type=int, required=True, help="bytes we sent before pausing")
    a = p.parse_args()
    {"server": server, "client": client, "inject": inject}[a.cmd](a)


if __name__ == "__main__":
    main()
