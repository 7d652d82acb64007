"""Command line of the userspace stack, used by tests and experiments.

    python -m mptcp_impl client --connect HOST:PORT --bytes N [--bind ADDR] [--seed S] --json
    python -m mptcp_impl server --listen HOST:PORT [--once] --json   (IPv6: [ADDR]:PORT; [::]: both)
    python -m mptcp_impl proxy --transparent [--ports P,...] | --listen ADDR:PORT --to HOST:PORT

The client sends N bytes of a deterministic pseudo-random stream (a 1 MiB block from
``random.Random(seed)``, repeated: cheap to produce at Gbit/s, and any peer can recompute its
sha256) and reports what it sent; the server reads to the end of the stream and reports what it
got. The server prints ``listening HOST:PORT`` to stderr once its endpoint is in place, so that
callers can wait for that line instead of sleeping. Each process sets up and removes its own
nft table and port reservation (also on SIGINT/SIGTERM).

MPTCP is the default: with no flags a client opens a subflow from each of its other addresses
and accepts up to 8 announced addresses, and a server accepts up to 8 joins and announces
nothing. ``--endpoint ADDR[,subflow|signal|backup|fullmesh...]`` (repeatable) and ``--limits
subflows=N,add_addr_accepted=N`` say otherwise, in ``ip mptcp``'s vocabulary; ``--tcp-only``
is plain TCP. Research plug-ins: ``--scheduler``, ``--cc`` and ``--pm`` take a shipped name or
``FILE.py:Class`` (mptcp_impl/mptcp/README.md, "Plug-ins"). A server serves MPTCP and plain TCP clients alike. With ``--json`` the result
has ``"mptcp": {"fallback", "subflows": [...], "mib": {...}}``.

Control plane: ``--checksum`` asks for DSS checksums (``net.mptcp.checksum_enabled``);
``--add-addr-timeout S`` (``net.mptcp.add_addr_timeout``); ``--close-timeout S``
(``net.mptcp.close_timeout``: how long a connection waits for a subflow when none can carry
it); ``--allow-join-initial-addr-port 0`` (MP_CAPABLE flag C); ``--pm-events`` prints every
path-manager event (created, established, announced, removed, sub_established, sub_closed,
priority, closed: Linux's userspace-PM vocabulary) as a JSON line ``{"pm_event": {...}}`` on
stdout as it happens; ``--at BYTES:ACTION`` (repeatable) acts once BYTES have been written
(client) or read (server): ``backup=ADDR`` / ``nobackup=ADDR`` (MP_PRIO on the subflows from
ADDR, as ``ip mptcp endpoint change ... backup``), ``remove=ADDR`` (REMOVE_ADDR, its subflows
reset, as ``ip mptcp endpoint del``; the initial subflow's address is id 0), ``abort`` (reset
the connection: MP_FASTCLOSE on RSTs, as Linux's close with unread data), ``abort_ack``
(MP_FASTCLOSE on an ACK, RFC 8684's other form).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import resource
import signal
import sys
import time
from typing import Any

from . import proxy
from .api import close_stack, open_connection, start_server
from .mptcp import plugins
from .mptcp.coupled import CONTROLLERS
from .mptcp.ctrl import Endpoint, Limits, MptcpConfig
from .mptcp.pm import PATH_MANAGERS
from .mptcp.sched import SCHEDULERS
from .netio.addr import join_hostport
from .netio.firewall import process_fence
from .netio.stack import StackConfig
from .tcp.connection import TcpConfig

BLOCK = 1 << 20


def pattern_block(seed: int) -> bytes:
    return random.Random(seed).randbytes(BLOCK)


def pattern_sha256(nbytes: int, seed: int = 0) -> str:
    """sha256 of the first ``nbytes`` of the stream the client sends (for peers and tests)."""
    block = pattern_block(seed)
    h = hashlib.sha256()
    full, rest = divmod(nbytes, BLOCK)
    for _ in range(full):
        h.update(block)
    h.update(block[:rest])
    return h.hexdigest()


WRONG_BYTES_KEPT = 64  # --check-pattern: the first differing bytes a server reports


class PatternCheck:
    """Compares a received stream with the client's pattern (``--check-pattern``): where a
    sha256 only says that the stream differs, this says which bytes, so a test can tell a
    defect from what the DSS checksum cannot see (RFC 8684 3.3.1: a 16-bit ones' complement
    sum, blind to changes that cancel out in it). A memcmp per read while the bytes match."""

    def __init__(self, seed: int) -> None:
        self.block = pattern_block(seed)
        self.at = 0
        self.wrong: list[tuple[int, int, int]] = []  # (offset, sent, received)
        self.wrong_count = 0

    def update(self, data: bytes) -> None:
        block, at, i = self.block, self.at, 0
        while i < len(data):
            off = at % BLOCK
            n = min(len(data) - i, BLOCK - off)
            want, got = block[off : off + n], data[i : i + n]
            if want != got:
                for k in range(n):
                    if want[k] != got[k]:
                        self.wrong_count += 1
                        if len(self.wrong) < WRONG_BYTES_KEPT:
                            self.wrong.append((at + k, want[k], got[k]))
            at += n
            i += n
        self.at = at


def _hostport(s: str) -> tuple[str, int]:
    """``ADDR:PORT``, IPv6 as ``[ADDR]:PORT`` (``::`` listens on both families)."""
    host, _, port = s.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT or [IPv6]:PORT, got {s!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _limits(s: str) -> Limits:
    try:
        return Limits.parse(s)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _endpoint(s: str) -> str:
    try:
        Endpoint.parse(s, 1)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return s


AT_ACTIONS = ("abort", "abort_ack", "backup", "nobackup", "remove")
NO_ARG = ("abort", "abort_ack")


def _at(s: str) -> tuple[int, str, str]:
    n, sep, act = s.partition(":")
    name, _, arg = act.partition("=")
    if not sep or not n.isdigit() or name not in AT_ACTIONS or (name not in NO_ARG) != bool(arg):
        raise argparse.ArgumentTypeError(
            f"expected BYTES:abort|abort_ack or BYTES:backup|nobackup|remove=ADDR, got {s!r}"
        )
    return int(n), name, arg


def _do_at(writer: Any, name: str, arg: str) -> bool:
    """One ``--at`` action on the connection behind ``writer``; False: not possible yet (the
    subflow it names is not established)."""
    conn = writer._h.conn
    if name == "abort_ack" and hasattr(conn, "mconn"):
        conn.abort(on_ack=True)
        return True
    if name in NO_ARG:
        writer.abort()
        return True
    if not hasattr(conn, "mconn"):
        print(f"--at {name}: not an MPTCP connection", file=sys.stderr, flush=True)
        return True
    if name == "remove":
        return bool(conn.remove_address(arg))
    return bool(conn.set_backup(arg, name == "backup"))


def _acked(writer: Any, written: int) -> int:
    """Bytes of ours the peer has acknowledged (the data level's DATA_ACK), else written."""
    m = getattr(writer._h.conn, "mconn", None)
    if m is None or m.fallback:
        return written
    return max(0, m.snd_una - m.local_idsn - 1)


async def _run_at(writer: Any, at: list[tuple[int, str, str]], progress: Any, state: dict) -> None:
    """Run the ``--at`` actions in order once ``progress()`` reaches each one's byte count; an
    action not possible yet is tried again for up to 5 s."""
    for nbytes, name, arg in sorted(at):
        while progress() < nbytes:
            await asyncio.sleep(0.005)
        t_end = time.monotonic() + 5
        while not _do_at(writer, name, arg) and time.monotonic() < t_end:
            await asyncio.sleep(0.01)
        print(f"at {nbytes}: {name} {arg}".rstrip(), file=sys.stderr, flush=True)
        if name in NO_ARG:
            state["aborted"] = progress()
            return


def _pm_printer(e: Any) -> None:
    print(json.dumps({"pm_event": e.as_dict()}), flush=True)


def _plugin(registry: dict[str, Any], kind: str) -> Any:
    def parse(s: str) -> str:
        try:
            plugins.check(s, registry, kind)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return s

    return parse


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cpu_sys() -> float:
    """System CPU of this process (syscalls, and the kernel's software GSO and checksums of
    what we send when the interface does not offload them): the part Python code cannot cut."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def _config(args: argparse.Namespace) -> StackConfig:
    mptcp = None
    if not args.tcp_only:
        endpoints = None
        if args.endpoint:
            endpoints = [Endpoint.parse(e, i + 1) for i, e in enumerate(args.endpoint)]
        elif args.cmd == "server" or (args.cmd == "proxy" and not args.transparent):
            endpoints = []  # a server announces nothing unless told
        mptcp = MptcpConfig(
            endpoints=endpoints,
            limits=args.limits or Limits(),
            scheduler=args.scheduler,
            checksum=args.checksum,
            corrupt_checksum_at=args.corrupt_checksum_at,
            cc=args.cc,
            pm=args.pm,
            opportunistic=args.opportunistic,
        )
        if args.add_addr_timeout is not None:
            mptcp.add_addr_timeout = args.add_addr_timeout
        if args.close_timeout is not None:
            mptcp.close_timeout = args.close_timeout
        mptcp.allow_join_initial_addr_port = bool(args.allow_join_initial_addr_port)
    tcp = TcpConfig()
    if args.rcvbuf is not None:
        tcp.rcv_buf = args.rcvbuf
    if args.sndbuf is not None:
        tcp.snd_buf = args.sndbuf
    cfg = StackConfig(
        tcp=tcp,
        sender="raw" if args.no_gso else args.sender,
        mptcp=mptcp,
        seed=args.stack_seed,
        on_pm_event=_pm_printer if args.pm_events else None,
    )
    if args.tx_queue_ms is not None:
        cfg.tx_queue_time = args.tx_queue_ms / 1000
        if not args.tx_queue_ms:
            cfg.tx_queue_bytes = 0
    return cfg


def _with_mptcp(res: dict[str, Any]) -> dict[str, Any]:
    """Lift the connection's MPTCP view out of the stats to the top level of the result."""
    st = res.get("stats")
    if isinstance(st, dict) and "mptcp" in st:
        res["mptcp"] = st.pop("mptcp")
    return res


async def run_client(args: argparse.Namespace) -> dict[str, Any]:
    host, port = args.connect
    block = memoryview(pattern_block(args.seed))
    h = hashlib.sha256()
    cpu0, sys0 = _cpu(), _cpu_sys()
    t0 = time.monotonic()
    try:
        reader, writer = await open_connection(
            host, port, local_addr=args.bind, config=_config(args)
        )
    except OSError as e:
        return {
            "role": "client",
            "bytes_sent": 0,
            "error": f"{type(e).__name__}: {e}",
            "duration_s": round(time.monotonic() - t0, 6),
        }
    t_conn = time.monotonic()
    left = args.bytes
    err = None
    state: dict[str, int] = {}
    at_task = None
    if args.at:
        at_task = asyncio.ensure_future(
            _run_at(writer, args.at, lambda: _acked(writer, args.bytes - left), state)
        )
    try:
        while left > 0:
            if "aborted" in state:
                raise ConnectionAbortedError(f"aborted after {state['aborted']} bytes")
            pos = (args.bytes - left) % BLOCK
            chunk = block[pos : pos + min(left, BLOCK - pos, 1 << 18 if args.at else BLOCK)]
            h.update(chunk)
            writer.write(chunk)
            left -= len(chunk)
            await writer.drain()
        while at_task is not None and not at_task.done() and "aborted" not in state:
            await asyncio.sleep(0.01)  # the data is written: the actions still due go now
            if _acked(writer, args.bytes) >= args.bytes:
                break
        if "aborted" in state:
            raise ConnectionAbortedError(f"aborted after {state['aborted']} bytes")
        writer.close()
        # Our FIN is acknowledged and the peer has closed too: everything arrived.
        await reader.read()
        await writer.wait_closed()
    except OSError as e:
        err = f"{type(e).__name__}: {e}"
        if "aborted" in state:
            err = f"ConnectionAbortedError: aborted after {state['aborted']} bytes"
            await asyncio.sleep(1.0)  # our reset subflows answer a challenge ACK meanwhile
    if at_task is not None:
        at_task.cancel()
    t1 = time.monotonic()
    dur = t1 - t_conn
    res = {
        "role": "client",
        "bytes_sent": args.bytes,
        "sha256": h.hexdigest(),
        "duration_s": round(dur, 6),
        "connect_s": round(t_conn - t0, 6),
        "goodput_mbit": round(args.bytes * 8 / dur / 1e6, 3) if dur > 0 else None,
        "cpu_s": round(_cpu() - cpu0, 4),
        "cpu_sys_s": round(_cpu_sys() - sys0, 4),
        "local": list(writer.get_extra_info("sockname")),
        "stats": writer.stats(),
    }
    if err:
        res["error"] = err
        res["bytes_written"] = args.bytes - left
    return _with_mptcp(res)


async def run_server(args: argparse.Namespace) -> int:
    host, port = args.listen
    done: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def handle(reader: asyncio.StreamReader, writer: Any) -> None:
        h = hashlib.sha256()
        check = PatternCheck(args.seed) if args.check_pattern else None
        n = 0
        cpu0, sys0 = _cpu(), _cpu_sys()
        t0 = time.monotonic()
        t_first: float | None = None
        err = None
        at = sorted(args.at)
        step = int(args.progress * 1_000_000) if args.progress else 0
        mark = step
        # our stack's reader hands its buffer over (no copy); a kernel one reads a copy
        read_buffer = getattr(reader, "read_buffer", None)
        try:
            while True:
                if at or read_buffer is None:
                    data = await reader.read(1 << 16 if at else 1 << 20)
                else:
                    data = await read_buffer()
                if not data:
                    break
                if t_first is None:
                    t_first = time.monotonic()
                n += len(data)
                h.update(data)
                if check is not None:
                    check.update(data)
                while step and n >= mark:
                    print(f"progress {mark // step}", file=sys.stderr, flush=True)
                    mark += step
                while at and n >= at[0][0]:
                    _, name, arg = at.pop(0)
                    _do_at(writer, name, arg)
                    print(f"at {n}: {name} {arg}".rstrip(), file=sys.stderr, flush=True)
                    if name in NO_ARG:
                        await asyncio.sleep(1.0)  # a challenge ACK gets its RST meanwhile
                        raise ConnectionAbortedError(f"aborted after {n} bytes")
            writer.close()
            await writer.wait_closed()
        except OSError as e:
            err = f"{type(e).__name__}: {e}"
        t1 = time.monotonic()
        dur = t1 - t0
        res = {
            "role": "server",
            "bytes_received": n,
            "sha256": h.hexdigest(),
            "duration_s": round(dur, 6),
            "goodput_mbit": round(n * 8 / dur / 1e6, 3) if dur > 0 else None,
            "cpu_s": round(_cpu() - cpu0, 4),
            "cpu_sys_s": round(_cpu_sys() - sys0, 4),
            "peer": list(writer.get_extra_info("peername") or []),
            **(
                {"wrong_bytes": check.wrong_count, "wrong": check.wrong}
                if check is not None
                else {}
            ),
            "stats": writer.stats(),
        }
        if err:
            res["error"] = err
        await done.put(_with_mptcp(res))

    server = await start_server(handle, host, port, config=_config(args))
    print(f"listening {join_hostport(host, server.port)}", file=sys.stderr, flush=True)
    rc = 0
    try:
        while True:
            res = await done.get()
            if "error" in res:
                rc = 1
            print(json.dumps(res) if args.json else _human(res), flush=True)
            if args.once:
                break
    finally:
        server.close()
    return rc


def _human(res: dict[str, Any]) -> str:
    keys = ("role", "bytes_sent", "bytes_received", "sha256", "duration_s", "goodput_mbit")
    return " ".join(f"{k}={res[k]}" for k in keys if k in res)


def _dump_state() -> None:
    """SIGUSR1: print every connection's state to stderr (to see which side a stall is on)."""
    from .api import _STACKS

    for stack in _STACKS.values():
        conns = stack.debug_state()
        for d in conns:
            print("state " + json.dumps(d, default=str), file=sys.stderr, flush=True)
        # what the stack holds, for leak checks: connections, MPTCP tokens and connections,
        # endpoints, timers pending in the loop
        held = {
            "conns": [f"{d['local']}->{d['remote']} {d['state']}" for d in conns],
            "tokens": len(stack.registry),
            "mptcp_conns": len(stack._mptcp_conns),
            "endpoints": len(stack._endpoints),
            "timers": sum(1 for h in getattr(stack.loop, "_scheduled", ()) if not h.cancelled()),
        }
        print("held " + json.dumps(held, default=str), file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mptcp_impl", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON object per result")
    common.add_argument("--tcp-only", action="store_true", help="plain TCP instead of MPTCP")
    common.add_argument(
        "--endpoint",
        type=_endpoint,
        action="append",
        default=[],
        metavar="ADDR[,FLAG...]",
        help="an MPTCP endpoint as `ip mptcp endpoint` takes it (flags: subflow, signal, "
        "backup, fullmesh; default subflow); repeatable. Client default: every other local "
        "address with `subflow`; server default: none",
    )
    common.add_argument(
        "--limits",
        type=_limits,
        default=None,
        metavar="subflows=N,add_addr_accepted=N",
        help="as `ip mptcp limits` (default subflows=8,add_addr_accepted=8)",
    )
    common.add_argument(
        "--scheduler",
        type=_plugin(SCHEDULERS, "scheduler"),
        default="default",
        metavar="NAME|FILE.py:Class",
        help=f"MPTCP packet scheduler: {', '.join(SCHEDULERS)} (default: default), or a "
        "class with pick(candidates) in a Python file",
    )
    common.add_argument(
        "--cc",
        type=_plugin(CONTROLLERS, "congestion control"),
        default="uncoupled",
        metavar="NAME|FILE.py:Class",
        help=f"congestion control of the MPTCP connection: {', '.join(CONTROLLERS)} "
        "(default: uncoupled CUBIC), or a CcGroup subclass (coupled) or controller class "
        "in a Python file",
    )
    common.add_argument(
        "--pm",
        type=_plugin(PATH_MANAGERS, "path manager"),
        default="kernel",
        metavar="NAME|FILE.py:Class",
        help=f"path manager: {', '.join(PATH_MANAGERS)} (default: kernel, endpoints and "
        "limits), or a PathManager subclass in a Python file",
    )
    common.add_argument(
        "--opportunistic",
        choices=("off", "retransmit", "penalise"),
        default="off",
        help="opportunistic retransmission when the peer's window blocks new data, "
        "optionally penalising the slow subflow (Raiciu et al., NSDI 2012)",
    )
    common.add_argument(
        "--checksum", action="store_true", help="DSS checksums (net.mptcp.checksum_enabled)"
    )
    common.add_argument(
        "--rcvbuf",
        type=int,
        default=None,
        metavar="BYTES",
        help="each subflow's receive buffer, the window it offers (TcpConfig.rcv_buf; "
        "default 4 MiB, fixed: no autotuning)",
    )
    common.add_argument(
        "--sndbuf",
        type=int,
        default=None,
        metavar="BYTES",
        help="each subflow's send buffer (TcpConfig.snd_buf; default 4 MiB)",
    )
    common.add_argument(
        "--add-addr-timeout",
        type=float,
        default=None,
        metavar="S",
        help="resend an ADD_ADDR not echoed after S seconds (default 120, as Linux)",
    )
    common.add_argument(
        "--close-timeout",
        type=float,
        default=None,
        metavar="S",
        help="how long a connection with data outstanding waits for a subflow when it has none "
        "that can carry it (all closed, or on interfaces that are down) before it is reset "
        "(default 60, as net.mptcp.close_timeout)",
    )
    common.add_argument(
        "--allow-join-initial-addr-port",
        type=int,
        choices=(0, 1),
        default=1,
        metavar="0|1",
        help="0: MP_CAPABLE flag C, no joins to the initial address and port "
        "(net.mptcp.allow_join_initial_addr_port; default 1)",
    )
    common.add_argument(  # tests: a wrong DSS checksum on the mapping holding this offset
        "--corrupt-checksum-at", type=int, default=None, help=argparse.SUPPRESS
    )
    common.add_argument(
        "--pm-events", action="store_true", help='print path-manager events ({"pm_event": ...})'
    )
    common.add_argument(
        "--at",
        type=_at,
        action="append",
        default=[],
        metavar="BYTES:ACTION",
        help="after BYTES written (client) or read (server): abort, abort_ack, backup=ADDR, "
        "nobackup=ADDR or remove=ADDR",
    )
    common.add_argument(
        "--stack-seed", type=int, default=None, help="seed of MPTCP keys and nonces"
    )
    common.add_argument(
        "--sender",
        choices=("gso", "packet", "raw"),
        default="gso",
        help="gso: 64 KiB super-packets, checksum offload (default); packet: "
        "one MSS per send, checksum offload; raw: one MSS per send through "
        "an IPPROTO_RAW socket, checksum in Python",
    )
    common.add_argument("--no-gso", action="store_true", help="the same as --sender raw")
    common.add_argument(
        "--tx-queue-ms",
        type=float,
        default=None,
        metavar="MS",
        help="TCP small queues: each connection or subflow keeps at most MS of its pacing "
        "rate waiting in the host's queue (default 4; 0: no limit)",
    )
    common.add_argument("--seed", type=int, default=0, help="seed of the pseudo-random stream")
    c = sub.add_parser("client", parents=[common], help="send N bytes and report")
    c.add_argument("--connect", type=_hostport, required=True, metavar="HOST:PORT")
    c.add_argument("--bytes", type=int, required=True)
    c.add_argument("--bind", default=None, metavar="ADDR", help="local address")
    s = sub.add_parser("server", parents=[common], help="receive streams and report")
    s.add_argument("--listen", type=_hostport, required=True, metavar="HOST:PORT")
    s.add_argument("--once", action="store_true", help="exit after the first connection")
    s.add_argument(
        "--check-pattern",
        action="store_true",
        help="compare the stream with the client's pattern (--seed) and report the bytes that "
        f"differ: wrong_bytes (how many) and wrong (the first {WRONG_BYTES_KEPT}: offset, sent, "
        "received)",
    )
    s.add_argument(
        "--progress",
        type=float,
        default=0,
        metavar="MB",
        help='print "progress K" on stderr each time another MB megabytes have arrived (as the '
        "kernel peer of the tests does), so that a test or a benchmark can act mid-transfer",
    )
    x = sub.add_parser(
        "proxy",
        parents=[common],
        help="carry unmodified applications' TCP over our MPTCP (see mptcp_impl/proxy.py)",
    )
    proxy.add_arguments(x, _hostport)
    return p


async def _amain(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main.cancel)
    loop.add_signal_handler(signal.SIGUSR1, _dump_state)
    try:
        if args.cmd == "proxy":
            try:
                return await proxy.run_proxy(args, _config(args))
            except asyncio.CancelledError:
                return 0  # SIGINT/SIGTERM: the proxy's normal end
        if args.cmd == "client":
            res = await run_client(args)
            print(json.dumps(res) if args.json else _human(res), flush=True)
            if "error" in res:
                print(f"error: {res['error']}", file=sys.stderr)
                return 1
            return 0
        return await run_server(args)
    except asyncio.CancelledError:
        return 130
    except OSError as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        close_stack()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cmd == "proxy":
        proxy.check_arguments(parser, args)
    try:
        return asyncio.run(_amain(args))
    finally:
        process_fence().close()  # whatever happened above, the nft table goes
