"""Linux-kernel TCP peers and a segment injector, run inside test namespaces.

    python -m tests.userspace_tcp.kpeer server --listen IP:PORT [--rcvbuf N] [--slow-ms MS] [--stall-ms MS]
                                               [--reset-after N] [--shutdown-after N]
    python -m tests.userspace_tcp.kpeer client --connect IP:PORT --bytes N [--pause-at N]
    python -m tests.userspace_tcp.kpeer inject --local IP --peer IP:PORT --kind KIND

Each prints one JSON line on stdout; servers print "listening" on stderr when ready, a pausing
client prints "paused" and waits for a line on stdin, the injector prints "observed" once it has
seen a segment of the connection and "injected" after sending.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import struct
import sys
import time

from mptcp_impl.cli import BLOCK, pattern_block
from mptcp_impl.tcp.segment import ACK, RST, SYN


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
    res.update(bytes_received=n, sha256=h.hexdigest(), duration_s=time.monotonic() - t0,
               peer=list(peer))
    print(json.dumps(res), flush=True)


def client(a: argparse.Namespace) -> None:
    block = memoryview(pattern_block(a.seed))
    s = socket.create_connection(_hp(a.connect), timeout=60)
    h = hashlib.sha256()
    left = a.bytes
    sent = 0
    t0 = time.monotonic()
    paused = False
    while left > 0:
        chunk = block[: min(left, BLOCK)]
        if a.pause_at and not paused and sent + len(chunk) > a.pause_at:
            chunk = chunk[: a.pause_at - sent]
        s.sendall(chunk)
        h.update(chunk)
        sent += len(chunk)
        left -= len(chunk)
        if a.pause_at and not paused and sent >= a.pause_at:
            paused = True
            print(f"paused {s.getsockname()[0]}:{s.getsockname()[1]}", file=sys.stderr,
                  flush=True)
            sys.stdin.readline()
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):
        pass
    dur = time.monotonic() - t0
    s.close()
    print(json.dumps({"bytes_sent": sent, "sha256": h.hexdigest(), "duration_s": dur,
                      "goodput_mbit": sent * 8 / dur / 1e6}), flush=True)


def _csum(data: bytes) -> int:
    if len(data) & 1:
        data += b"\0"
    s = int.from_bytes(data, "big") % 0xFFFF
    return 0xFFFF - s if s else 0xFFFF


def craft(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int,
          options: bytes = b"", doff: int | None = None, payload: bytes = b"") -> bytes:
    """A TCP segment with a correct checksum, whatever nonsense its header says."""
    hlen = 20 + len(options)
    doff = hlen // 4 if doff is None else doff
    hdr = struct.pack("!HHIIHHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                      (doff << 12) | flags, 65535, 0, 0) + options
    seg = hdr + payload
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(seg))
    c = _csum(pseudo + seg)
    return seg[:16] + struct.pack("!H", c) + seg[18:]


KINDS = ("rst_in_window", "syn_in_window", "bad_doff_small", "bad_doff_large", "optlen0",
         "optlen1", "opt_past_header", "trunc_opts", "bad_checksum")


def inject(a: argparse.Namespace) -> None:
    """Observe one segment from the peer to us, then send a crafted segment back at the peer."""
    peer_ip, peer_port = _hp(a.peer)
    sniff = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
    sniff.settimeout(10)
    while True:
        pkt = sniff.recv(65536)
        if len(pkt) < 40 or pkt[9] != 6:
            continue
        ihl = (pkt[0] & 15) * 4
        src, dst = socket.inet_ntoa(pkt[12:16]), socket.inet_ntoa(pkt[16:20])
        sport, dport, seq, ack = struct.unpack_from("!HHII", pkt, ihl)
        if src == peer_ip and sport == peer_port and dst == a.local:
            break
    sniff.close()
    print("observed", file=sys.stderr, flush=True)
    # The peer's segment says: its rcv.nxt is `ack`; our sending port is `dport`.
    mine, rcv_nxt = dport, ack
    k = a.kind
    args = dict(src=a.local, dst=peer_ip, sport=mine, dport=peer_port, ack=seq, flags=ACK)
    if k == "rst_in_window":
        raw = craft(seq=rcv_nxt + 1000, **{**args, "flags": RST})
    elif k == "syn_in_window":
        raw = craft(seq=rcv_nxt + 1000, **{**args, "flags": SYN})
    elif k == "bad_doff_small":
        raw = craft(seq=rcv_nxt, doff=3, payload=b"x" * 20, **args)
    elif k == "bad_doff_large":
        raw = craft(seq=rcv_nxt, doff=15, payload=b"x" * 8, **args)
    elif k == "optlen0":
        raw = craft(seq=rcv_nxt, options=b"\x08\x00" + b"\x01" * 10, **args)
    elif k == "optlen1":
        raw = craft(seq=rcv_nxt, options=b"\x08\x01" + b"\x01" * 10, **args)
    elif k == "opt_past_header":
        raw = craft(seq=rcv_nxt, options=b"\x01\x01\x08\x20" + b"\x00" * 8, **args)
    elif k == "trunc_opts":
        raw = craft(seq=rcv_nxt, options=b"\x01\x01\x01\x08", **args)  # kind 8 with no length
    elif k == "bad_checksum":
        raw = bytearray(craft(seq=rcv_nxt, payload=b"y" * 10, **args))
        raw[16] ^= 0x55
        raw = bytes(raw)
    else:
        raise SystemExit(f"unknown kind {k}")
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    s.bind((a.local, 0))
    for _ in range(a.count):
        s.sendto(raw, (peer_ip, 0))
    s.close()
    print("injected", file=sys.stderr, flush=True)
    print(json.dumps({"kind": k, "rcv_nxt": rcv_nxt, "seq_seen": seq, "port": mine}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server")
    s.add_argument("--listen", required=True)
    s.add_argument("--rcvbuf", type=int, default=0)
    s.add_argument("--slow-ms", type=float, default=0)
    s.add_argument("--stall-ms", type=float, default=0)
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
    i.add_argument("--kind", required=True, choices=KINDS)
    i.add_argument("--count", type=int, default=1)
    a = p.parse_args()
    {"server": server, "client": client, "inject": inject}[a.cmd](a)


if __name__ == "__main__":
    main()
