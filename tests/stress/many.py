"""Many concurrent MPTCP client connections from one process, for the stress suite.

    python -m tests.stress.many ours  --connect IP:PORT --conns N --bytes B [--bind IP] [--seed0 K]
    python -m tests.stress.many linux --connect IP:PORT --conns N --bytes B [--bind IP] [--seed0 K]

``ours``: N connections of our stack (``mptcp_impl.cli.run_client``, MPTCP, a subflow from each
other local address) in one asyncio loop. ``linux``: N Linux MPTCP sockets (protocol 262), one
thread each; the second subflow comes from the namespace's ``ip mptcp endpoint ... subflow``.
Connection k sends B bytes of the stream of seed ``seed0 + k`` (``mptcp_impl.cli.pattern_block``),
so a server's sha256s name their senders. All connect at once. A Linux client waits (at most
``--join-wait`` s) for its join to complete before it sends: Linux completes no join once the
connection is shut down, and a small stream is written and shut down at once. One JSON line per connection
(``seed``, ``sha256``, ``duration_s``, and ``subflows``: how many subflows the connection had),
then ``{"summary": ...}`` with the wall time and the process's CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import hashlib
import json
import resource
import socket
import struct
import sys
import threading
import time

from mptcp_impl.cli import BLOCK, build_parser, pattern_block, run_client
from tests.mptcp_interop.kmptcp import _hp, kernel_view


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _ours(a: argparse.Namespace) -> list[dict]:
    async def one(k: int) -> dict:
        argv = ["client", "--connect", a.connect, "--bytes", str(a.bytes), "--json"]
        argv += ["--seed", str(a.seed0 + k)] + (["--bind", a.bind] if a.bind else [])
        res = await run_client(build_parser().parse_args(argv))
        subs = res.get("mptcp", {}).get("subflows", [])
        return {
            "seed": a.seed0 + k,
            "sha256": res.get("sha256"),
            "duration_s": res.get("duration_s"),
            "connect_s": res.get("connect_s"),
            "subflows": len(subs),
            "fallback": res.get("mptcp", {}).get("fallback"),
            "error": res.get("error"),
            "mib": {k: v for k, v in res.get("mptcp", {}).get("mib", {}).items() if v},
            "subflow_info": subs,
        }

    return list(await asyncio.gather(*(one(k) for k in range(a.conns))))


def _linux_one(a: argparse.Namespace, k: int, out: list, go: threading.Event) -> None:
    seed = a.seed0 + k
    res: dict = {"seed": seed}
    try:
        block = memoryview(pattern_block(seed))
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
        s.settimeout(120)
        if a.bind:
            s.bind((a.bind, 0))
        go.wait()
        t0 = time.monotonic()
        s.connect(_hp(a.connect))
        h = hashlib.sha256()
        left = a.bytes
        first = min(left, 16384)  # the join comes once data flowed (fully established)
        waited = False
        while left > 0:
            pos = (a.bytes - left) % BLOCK
            chunk = block[pos : pos + min(left, BLOCK - pos, first if not waited else BLOCK)]
            s.sendall(chunk)
            h.update(chunk)
            left -= len(chunk)
            if not waited:
                # Linux completes no join once the connection is shut down, and a small stream
                # is written and shut down at once: wait for the join before the rest.
                waited = True
                t_join = time.monotonic()
                while _subflows(s) < 2 and time.monotonic() - t_join < a.join_wait:
                    time.sleep(0.005)
                res["join_wait_s"] = round(time.monotonic() - t_join, 4)
        view = kernel_view(s, False)  # before the close: subflows leave MPTCP_INFO then
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
        s.close()
        res.update(
            sha256=h.hexdigest(),
            duration_s=round(time.monotonic() - t0, 4),
            subflows=view.get("info", {}).get("subflows", -1) + 1,  # joins + the first
            fallback=not view["is_mptcp"],
        )
    except OSError as e:
        res["error"] = f"{type(e).__name__}: {e}"
    out[k] = res


_libc = ctypes.CDLL(None, use_errno=True)
MPTCP_TCPINFO = 2  # getsockopt(SOL_MPTCP): struct mptcp_subflow_data, then a tcp_info each
_SFD = struct.Struct("=IIII")  # size_subflow_data, num_subflows, size_kernel, size_user


def _subflows(s: socket.socket) -> int:
    """How many of the connection's subflows are ESTABLISHED (MPTCP_TCPINFO: tcpi_state)."""
    user = 8  # the first bytes of each struct tcp_info are enough: tcpi_state is the first
    buf = ctypes.create_string_buffer(_SFD.pack(_SFD.size, 0, 0, user) + bytes(8 * user))
    ln = ctypes.c_uint32(len(buf))
    if _libc.getsockopt(s.fileno(), 284, MPTCP_TCPINFO, buf, ctypes.byref(ln)) != 0:
        return 0
    _, num, _, size_user = _SFD.unpack_from(buf.raw)
    return sum(
        1 for i in range(min(num, 8)) if buf.raw[_SFD.size + i * size_user] == 1
    )  # TCP_ESTABLISHED


def _linux(a: argparse.Namespace) -> list[dict]:
    out: list = [None] * a.conns
    go = threading.Event()
    ts = [threading.Thread(target=_linux_one, args=(a, k, out, go)) for k in range(a.conns)]
    for t in ts:
        t.start()
    go.set()
    for t in ts:
        t.join()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="many")
    p.add_argument("who", choices=("ours", "linux"))
    p.add_argument("--connect", required=True)
    p.add_argument("--conns", type=int, required=True)
    p.add_argument("--bytes", type=int, required=True)
    p.add_argument("--bind", default=None)
    p.add_argument("--seed0", type=int, default=0)
    p.add_argument(
        "--join-wait", type=float, default=10.0, help="linux: at most this long for the join"
    )
    a = p.parse_args(argv)
    c0, t0 = _cpu(), time.monotonic()
    if a.who == "ours":
        from mptcp_impl.api import close_stack
        from mptcp_impl.netio.firewall import process_fence

        async def run() -> list[dict]:
            try:
                return await _ours(a)
            finally:
                close_stack()

        try:
            res = asyncio.run(run())
        finally:
            process_fence().close()
    else:
        res = _linux(a)
    for r in res:
        print(json.dumps(r), flush=True)
    summary = {"wall_s": round(time.monotonic() - t0, 3), "cpu_s": round(_cpu() - c0, 3)}
    print(json.dumps({"summary": summary}), flush=True)
    return 0 if all(not r.get("error") for r in res) else 1


if __name__ == "__main__":
    sys.exit(main())
