"""Linux-kernel MPTCP (or plain TCP) peers, run inside the testbed's namespaces.

    python -m tests.mptcp_interop.kmptcp server --listen IP:PORT [--tcp] [--progress MB]
                                               [--close-unread MB]
    python -m tests.mptcp_interop.kmptcp client --connect IP:PORT --bytes N [--tcp] [--bind IP]
                                               [--progress MB]

Both speak the stream of ``mptcp_impl.cli`` (``pattern_block``) so sha256s compare. A server
prints "listening" on stderr once it listens and, with ``--progress MB``, "progress K" each time
another MB megabytes have arrived (a client: have been written; so that tests can act mid-transfer without sleeping). A server with ``--close-unread MB`` stops reading after MB megabytes
and closes with data still unread: Linux's MPTCP then resets the connection with MP_FASTCLOSE
(``__mptcp_close``). Each
prints one JSON line on stdout at the end, with ``mptcp``: what the kernel says of the socket
(TCP_IS_MPTCP and MPTCP_INFO, read before close).
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

IPPROTO_MPTCP = 262
SOL_MPTCP = 284
MPTCP_INFO = 1
TCP_IS_MPTCP = 43

# struct mptcp_info (include/uapi/linux/mptcp.h), the fields up to mptcpi_bytes_acked
_INFO = struct.Struct("=6B2xIIQQQBBBxIQQQQ")
_INFO_NAMES = (
    "subflows",
    "add_addr_signal",
    "add_addr_accepted",
    "subflows_max",
    "add_addr_signal_max",
    "add_addr_accepted_max",
    "flags",
    "token",
    "write_seq",
    "snd_una",
    "rcv_nxt",
    "local_addr_used",
    "local_addr_max",
    "csum_enabled",
    "retransmits",
    "bytes_retrans",
    "bytes_sent",
    "bytes_received",
    "bytes_acked",
)


def _hp(s: str) -> tuple[str, int]:
    """IP:PORT or [IPv6]:PORT."""
    h, _, p = s.rpartition(":")
    return h.strip("[]"), int(p)


def _sock(tcp: bool, host: str = "0.0.0.0") -> socket.socket:
    """An AF_INET socket, or AF_INET6 for an IPv6 address (on "::": dual stack, so that an
    IPv4 subflow and IPv6 ones meet one listener)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM, 0 if tcp else IPPROTO_MPTCP)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    return s


def kernel_view(s: socket.socket, tcp: bool) -> dict:
    """What Linux says of the connection: MPTCP or fallen back, and its MPTCP_INFO."""
    if tcp:
        return {"is_mptcp": False}
    out: dict = {"is_mptcp": bool(s.getsockopt(socket.IPPROTO_TCP, TCP_IS_MPTCP))}
    try:
        raw = s.getsockopt(SOL_MPTCP, MPTCP_INFO, 256)
    except OSError as e:  # a fallen-back socket has no MPTCP_INFO
        out["info_error"] = str(e)
        return out
    if len(raw) >= _INFO.size:
        info = dict(zip(_INFO_NAMES, _INFO.unpack_from(raw), strict=True))
        info["token"] = f"{info['token']:08x}"
        out["info"] = info
    return out


def server(a: argparse.Namespace) -> None:
    ls = _sock(a.tcp, _hp(a.listen)[0])
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(_hp(a.listen))
    ls.listen(4)
    print("listening", file=sys.stderr, flush=True)
    c, peer = ls.accept()
    h = hashlib.sha256()
    n = 0
    step = int(a.progress * 1_000_000) if a.progress else 0
    next_mark = step
    t0 = time.monotonic()
    stop_at = int(a.close_unread * 1_000_000) if a.close_unread else 0
    err = None
    while True:
        try:
            d = c.recv(1 << 16)
        except OSError as e:  # reset by the peer (a test's fastclose)
            err = f"{type(e).__name__}: {e}"
            break
        if not d:
            break
        n += len(d)
        h.update(d)
        while step and n >= next_mark:
            print(f"progress {next_mark // step}", file=sys.stderr, flush=True)
            next_mark += step
        if stop_at and n >= stop_at:
            time.sleep(0.3)  # more arrives and stays unread
            break
    dur = time.monotonic() - t0
    view = kernel_view(c, a.tcp)
    c.close()
    ls.close()
    res = {
        "bytes_received": n,
        "sha256": h.hexdigest(),
        "duration_s": dur,
        "goodput_mbit": n * 8 / dur / 1e6 if dur > 0 else None,
        "peer": list(peer),
        "kernel": view,
    }
    if err:
        res["error"] = err
    print(json.dumps(res), flush=True)


def client(a: argparse.Namespace) -> None:
    block = memoryview(pattern_block(a.seed))
    s = _sock(a.tcp, _hp(a.connect)[0])
    s.settimeout(120)
    if a.bind:
        s.bind((a.bind, 0))
    t0 = time.monotonic()
    s.connect(_hp(a.connect))
    h = hashlib.sha256()
    left = a.bytes
    step = int(a.progress * 1_000_000) if a.progress else 0
    next_mark = step
    while left > 0:
        pos = (a.bytes - left) % BLOCK  # where in the repeated block the stream is
        chunk = block[pos : pos + min(left, BLOCK - pos, step or BLOCK)]
        s.sendall(chunk)
        h.update(chunk)
        left -= len(chunk)
        while step and a.bytes - left >= next_mark:
            print(f"progress {next_mark // step}", file=sys.stderr, flush=True)
            next_mark += step
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):  # until the peer's FIN: everything we sent has arrived
        pass
    dur = time.monotonic() - t0
    view = kernel_view(s, a.tcp)
    s.close()
    res = {
        "bytes_sent": a.bytes,
        "sha256": h.hexdigest(),
        "duration_s": dur,
        "goodput_mbit": a.bytes * 8 / dur / 1e6,
        "kernel": view,
    }
    print(json.dumps(res), flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="kmptcp")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server")
    s.add_argument("--listen", required=True)
    s.add_argument("--tcp", action="store_true", help="plain TCP instead of MPTCP")
    s.add_argument("--progress", type=float, default=0, help="report every N MB on stderr")
    s.add_argument(
        "--close-unread", type=float, default=0, help="close with unread data after N MB"
    )
    c = sub.add_parser("client")
    c.add_argument("--connect", required=True)
    c.add_argument("--bytes", type=int, required=True)
    c.add_argument("--bind", default=None)
    c.add_argument("--tcp", action="store_true", help="plain TCP instead of MPTCP")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--progress", type=float, default=0, help="report every N MB written")
    a = p.parse_args(argv)
    server(a) if a.cmd == "server" else client(a)


if __name__ == "__main__":
    main()
