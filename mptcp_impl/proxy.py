"""Unmodified applications' TCP over our MPTCP: a proxy for each end.

    python -m mptcp_impl proxy --transparent [--ports 5201,80]        # client side
    python -m mptcp_impl proxy --listen 10.0.5.2:5201 --to 127.0.0.1:15201   # server side

Client side (``--transparent``): an nft table ``mptcplab_<pid>_proxy`` (type nat, hook output)
redirects this namespace's locally generated TCP connections (to the given destination ports,
or all of them) to a kernel listener of the proxy on 127.0.0.1; the proxy reads the original
destination (``SO_ORIGINAL_DST``) and opens an MPTCP connection to it with our stack, from the
address the application's connection came from. Whatever answers MPTCP there works: Linux
MPTCP servers, our own server-side proxy; anything else falls back to plain TCP.

Left alone by the redirect: destinations on this host and on loopback, and packets carrying
the proxy's mark (``SO_MARK`` ``MARK``: the raw IP sockets of our stack, and the proxy's own
kernel connections). Our default sender is AF_PACKET, which never passes netfilter at all.

Server side (``--listen ADDR:PORT --to HOST:PORT``, repeatable in pairs): our stack listens
(MPTCP and plain TCP clients alike) and each connection is carried over a kernel TCP connection
to the local application.

Bytes are copied both ways with back-pressure (a slow side closes the other side's window, no
unbounded buffer); a half-close is passed on as a FIN (DATA_FIN), a reset as a reset. One
process, one asyncio loop, one stack: both roles may run in the same process.

``-- COMMAND ...``: the proxy runs COMMAND (an application, unmodified) as its child and exits
with its status once the connections are done, as ``mptcpize run`` does for Linux MPTCP;
``--annotate FILE`` then adds the proxy's view to the command's JSON report (our traffic
tool's: per-subflow bytes every 100 ms, ``max_subflows``, ``mptcp_fallback``).

Output: stderr ``ready ...`` once every listener and rule is in place; with ``--json`` one
JSON line per finished connection (``"event": "conn"``: the application's and the network
side's addresses, bytes each way, duration, MPTCP subflows and MIB) and a ``"event":
"summary"`` line of the counters at exit, on stdout (stderr under a command; with ``--out
FILE`` in that file, and stdout carries only the ready line). SIGINT/SIGTERM: connections are
reset, the nft tables removed, the summary printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .api import get_stack, open_connection, start_server
from .netio.firewall import TABLE_PREFIX, FirewallError, _nft, remove_stale_tables
from .netio.packet import RawIpSender
from .netio.stack import StackConfig

log = logging.getLogger(__name__)

MARK = 0x4D50  # "MP": the proxy's own packets, never redirected
SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
CHUNK = 256 * 1024
KERNEL_LIMIT = 256 * 1024  # the kernel side's StreamReader buffer (reading pauses at twice)
# The kernel side's receive buffer (SO_RCVBUF; the kernel doubles it): without a bound,
# loopback autotuning lets an application queue megabytes in front of the MPTCP connection,
# which its own figures (iperf3's sender) would count as sent.
KERNEL_RCVBUF = 256 * 1024
CLOSE_WAIT_S = 10.0


def original_dst(sock: socket.socket) -> tuple[str, int]:
    """The destination a redirected connection was made to (conntrack's original tuple)."""
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack_from("!H", raw, 2)[0]
    return socket.inet_ntoa(raw[4:8]), port


class Redirect:
    """The nft table that sends this namespace's outgoing TCP to the proxy's listener."""

    def __init__(self, to_port: int, ports: list[int] | None, mark: int = MARK) -> None:
        self.table = f"{TABLE_PREFIX}{os.getpid()}_proxy"
        self.to_port = to_port
        self.ports = ports
        self.mark = mark
        self._created = False

    def rule(self) -> str:
        dports = ""
        if self.ports:
            dports = "tcp dport { " + ", ".join(str(p) for p in sorted(set(self.ports))) + " } "
        return (
            f"meta l4proto tcp meta mark != {self.mark:#x} ip daddr != 127.0.0.0/8 "
            f"fib daddr type != local {dports}redirect to :{self.to_port}"
        )

    def install(self) -> None:
        remove_stale_tables()
        # priority -100 (dstnat): the usual place of a redirect of locally generated packets
        _nft(
            input_text=(
                f"table ip {self.table} {{\n"
                f"  chain out {{ type nat hook output priority -100; policy accept;\n"
                f"    {self.rule()}\n"
                f"  }}\n"
                f"}}\n"
            )
        )
        self._created = True

    def close(self) -> None:
        if self._created:
            self._created = False
            with contextlib.suppress(FirewallError):
                _nft("delete", "table", "ip", self.table)


@dataclass
class Counters:
    accepted: int = 0  # connections from applications (client side) or the network (server)
    active: int = 0
    completed: int = 0  # both directions closed cleanly
    failed: int = 0  # refused upstream, reset, error
    mptcp: int = 0  # of the finished ones: MPTCP, no fallback
    fallback: int = 0  # ... fell back to plain TCP
    subflows: int = 0  # subflows of all finished MPTCP connections
    bytes_app_to_net: int = 0
    bytes_net_to_app: int = 0
    by_role: dict[str, int] = field(default_factory=dict)


def _mptcp_view(stats: dict[str, Any]) -> dict[str, Any] | None:
    mp = stats.get("mptcp") if isinstance(stats, dict) else None
    if not isinstance(mp, dict):
        return None
    mib = {k: v for k, v in (mp.get("mib") or {}).items() if v}
    return {
        "fallback": mp.get("fallback"),
        "fallback_reason": mp.get("fallback_reason"),
        "subflows": mp.get("subflows", []),
        "mib": mib,
    }


async def _pump(reader: Any, writer: Any, moved: list[int], i: int) -> None:
    """Copy until EOF, then pass the EOF on (a FIN, or our DATA_FIN) and return."""
    while True:
        data = await reader.read(CHUNK)
        if not data:
            break
        writer.write(data)
        moved[i] += len(data)
        await writer.drain()
    if not writer.is_closing():
        writer.write_eof()


async def _sample(mw: Any, samples: list[list[Any]], every: float = 0.1) -> None:
    """[wall time, {"local->remote": [bytes sent, bytes received]}] of each subflow."""
    while True:
        mp = mw.stats().get("mptcp")
        if isinstance(mp, dict):
            d = {
                f"{s['local']}->{s['remote']}": [s["bytes_sent"], s["bytes_received"]]
                for s in mp.get("subflows", [])
            }
            samples.append([time.time(), d])
        await asyncio.sleep(every)


def _kernel_abort(writer: asyncio.StreamWriter) -> None:
    """Reset the kernel connection (SO_LINGER 0), so the application sees the failure."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class Proxy:
    def __init__(self, args: argparse.Namespace, config: StackConfig) -> None:
        self.args = args
        self.config = config
        self.counters = Counters()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.redirect: Redirect | None = None
        self.servers: list[Any] = []
        # --annotate: each connection's record and its subflows' bytes every 100 ms
        self.sampled: list[tuple[dict[str, Any], list[list[Any]]]] = []
        self._json = args.json
        self.command: list[str] = list(args.command[1:])  # after the "--"
        # JSON lines: --out FILE, else stdout, or stderr when stdout is the application's
        self._stream = sys.stderr if self.command else sys.stdout
        # --out FILE: the JSON lines go there (stdout then carries the ready line alone)
        self._out = open(args.out, "a") if args.out else None  # noqa: SIM115 - closed in stop

    def _emit(self, rec: dict[str, Any]) -> None:
        if self._out is not None:
            self._out.write(json.dumps(rec) + "\n")
            self._out.flush()
        elif self._json:
            print(json.dumps(rec), file=self._stream, flush=True)
        else:
            keys = ("event", "role", "app", "net", "app_to_net", "net_to_app", "error")
            line = " ".join(f"{k}={rec[k]}" for k in keys if k in rec)
            print(line, file=self._stream, flush=True)

    # ------------------------------------------------------------------ the common part
    async def bridge(
        self,
        role: str,
        kr: asyncio.StreamReader,
        kw: asyncio.StreamWriter,
        mr: Any,
        mw: Any,
        rec: dict[str, Any],
        t0: float,
    ) -> None:
        """Copy both ways until both are closed; a failure on either side resets both."""
        moved = [0, 0]  # app -> net, net -> app
        up = asyncio.ensure_future(_pump(kr, mw, moved, 0))
        down = asyncio.ensure_future(_pump(mr, kw, moved, 1))
        sampler = None
        if self.args.annotate:
            samples: list[list[Any]] = []
            self.sampled.append((rec, samples))
            sampler = asyncio.ensure_future(_sample(mw, samples))
        err = None
        try:
            await asyncio.gather(up, down)
            kw.close()
            with contextlib.suppress(OSError):
                await kw.wait_closed()
            # Both ways are through; the MPTCP close (DATA_FINs acknowledged) only settles
            # the final counters, and must not hold the connection's record for long.
            try:
                await asyncio.wait_for(mw.wait_closed(), CLOSE_WAIT_S)
            except TimeoutError:
                rec["close_timeout"] = True
            except OSError:
                pass
        except (OSError, RuntimeError) as e:
            err = f"{type(e).__name__}: {e}"
        except asyncio.CancelledError:
            err = "cancelled (proxy stopping)"
            raise
        finally:
            for t in (up, down, sampler):
                if t is not None:
                    t.cancel()
            if err is not None:
                mw.abort()
                _kernel_abort(kw)
            self._finish(role, rec, moved, mw.stats(), t0, err)

    def _finish(
        self,
        role: str,
        rec: dict[str, Any],
        moved: list[int],
        stats: dict[str, Any],
        t0: float,
        err: str | None,
    ) -> None:
        c = self.counters
        c.active -= 1
        c.bytes_app_to_net += moved[0]
        c.bytes_net_to_app += moved[1]
        mp = _mptcp_view(stats)
        if mp is not None:
            if mp["fallback"]:
                c.fallback += 1
            else:
                c.mptcp += 1
                c.subflows += len(mp["subflows"])
        if err is None:
            c.completed += 1
        else:
            c.failed += 1
        dur = time.monotonic() - t0
        rec.update(
            app_to_net=moved[0],
            net_to_app=moved[1],
            duration_s=round(dur, 6),
            mptcp=mp,
        )
        if err is not None:
            rec["error"] = err
        self._emit(rec)

    def _accepted(self, role: str) -> None:
        c = self.counters
        c.accepted += 1
        c.active += 1
        c.by_role[role] = c.by_role.get(role, 0) + 1

    # ------------------------------------------------------------------ client side
    async def on_app(self, kr: asyncio.StreamReader, kw: asyncio.StreamWriter) -> None:
        t0 = time.monotonic()
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        sock = kw.get_extra_info("socket")
        app = list(kw.get_extra_info("peername") or [])
        try:
            dst = original_dst(sock)
        except OSError:
            # Not redirected (someone connected to the listener itself): nowhere to go.
            kw.close()
            return
        self._accepted("client")
        rec: dict[str, Any] = {"event": "conn", "role": "client", "app": app, "net": list(dst)}
        local = app[0] if app and not app[0].startswith("127.") else None
        try:
            mr, mw = await open_connection(dst[0], dst[1], local_addr=local, config=self.config)
        except (OSError, RuntimeError, asyncio.CancelledError) as e:
            if not isinstance(e, ConnectionError | asyncio.CancelledError):
                log.warning("connect to %s:%d failed", *dst, exc_info=True)
            _kernel_abort(kw)
            self._finish("client", rec, [0, 0], {}, t0, f"{type(e).__name__}: {e}")
            return
        rec["local"] = list(mw.get_extra_info("sockname") or [])
        with contextlib.suppress(asyncio.CancelledError):  # the proxy stops: already reported
            await self.bridge("client", kr, kw, mr, mw, rec, t0)

    async def start_transparent(self) -> str:
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.args.kernel_rcvbuf:  # before listen: accepted sockets inherit it
                ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.args.kernel_rcvbuf)
            ls.bind(("127.0.0.1", self.args.redirect_port))
        except BaseException:
            ls.close()
            raise
        srv = await asyncio.start_server(self.on_app, sock=ls, limit=KERNEL_LIMIT)
        self.servers.append(srv)
        port = srv.sockets[0].getsockname()[1]
        self.redirect = Redirect(port, self.args.ports)
        self.redirect.install()
        ports = ",".join(map(str, self.args.ports)) if self.args.ports else "all"
        return f"transparent 127.0.0.1:{port} ports={ports}"

    # ------------------------------------------------------------------ server side
    async def start_forward(self, listen: tuple[str, int], to: tuple[str, int]) -> str:
        async def on_peer(mr: asyncio.StreamReader, mw: Any) -> None:
            t0 = time.monotonic()
            task = asyncio.current_task()
            if task is not None:
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            self._accepted("server")
            peer = list(mw.get_extra_info("peername") or [])
            rec: dict[str, Any] = {
                "event": "conn",
                "role": "server",
                "net": peer,
                "listen": [listen[0], server.port],
                "app": list(to),
            }
            try:
                kr, kw = await _kernel_connect(to, self.args.kernel_rcvbuf)
            except (OSError, asyncio.CancelledError) as e:
                mw.abort()
                self._finish("server", rec, [0, 0], mw.stats(), t0, f"{type(e).__name__}: {e}")
                return
            with contextlib.suppress(asyncio.CancelledError):
                await self.bridge("server", kr, kw, mr, mw, rec, t0)

        server = await start_server(on_peer, listen[0], listen[1], config=self.config)
        self.servers.append(server)
        return f"listen {listen[0]}:{server.port} to {to[0]}:{to[1]}"

    # ------------------------------------------------------------------ lifetime
    async def run(self) -> int:
        get_stack(self.config)  # this loop's stack, with the proxy's settings
        parts = []
        for listen, to in zip(self.args.listen, self.args.to, strict=True):
            parts.append(await self.start_forward(listen, to))
        if self.args.transparent:
            parts.append(await self.start_transparent())
        ready = "ready " + " ".join(parts)
        print(ready, file=sys.stderr, flush=True)
        if self._out is not None:
            if not self.command:
                print(ready, flush=True)
            self._emit({"event": "ready", "pid": os.getpid(), "what": parts})
        try:
            if self.command:
                return await self.run_command()
            await asyncio.Event().wait()  # until SIGINT/SIGTERM cancels us
        finally:
            await self.stop()
        return 0

    async def run_command(self) -> int:
        """Run the application under the proxy; once it exits, let the connections finish
        (their last bytes may still be on their way) and return its exit status."""
        proc = await asyncio.create_subprocess_exec(*self.command)
        try:
            rc = await proc.wait()
        except asyncio.CancelledError:
            if proc.returncode is None:
                proc.terminate()
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(proc.wait(), 5)
            raise
        self._close_doors()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=self.args.drain_timeout)
        if self.args.annotate:
            self.annotate(self.args.annotate)
        return rc

    def annotate(self, path: str) -> None:
        """Add our view to the application's JSON report (our traffic tool's schema): the
        subflows of its busiest connection every 100 ms (on the tool's clock, from its
        ``start_wall``), their number, fallback, and every connection's record."""
        try:
            with open(path) as f:
                rep = json.load(f)
        except (OSError, ValueError) as e:
            log.warning("--annotate %s: no JSON report to annotate (%s)", path, e)
            return
        if not isinstance(rep, dict):
            return
        if self.sampled:
            rec, samples = max(
                self.sampled, key=lambda x: x[0].get("app_to_net", 0) + x[0].get("net_to_app", 0)
            )
            mp = rec.get("mptcp")
            if mp is not None:
                seen = max((len(d) for _, d in samples), default=len(mp["subflows"]))
                rep["max_subflows"] = max(int(rep.get("max_subflows") or 0), seen)
                rep["mptcp_fallback"] = bool(mp["fallback"])
                if not rep.get("subflow_samples"):
                    i = 1 if rep.get("bytes_received") else 0  # received, else sent
                    start = float(rep.get("start_wall") or 0.0)
                    rep["subflow_samples"] = [
                        [round(w - start, 4), {k: v[i] for k, v in d.items()}]
                        for w, d in samples
                        if w >= start
                    ]
        rep["proxy"] = {
            "counters": asdict(self.counters),
            "connections": [r for r, _ in self.sampled],
        }
        tmp = f"{path}.proxy.tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(rep) + "\n")
        os.replace(tmp, path)

    def _close_doors(self) -> None:
        """No new connection comes our way (the redirect goes first)."""
        if self.redirect is not None:
            self.redirect.close()
        for s in self.servers:
            s.close()

    async def stop(self) -> None:
        self._close_doors()
        for t in list(self.tasks):
            t.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=5)
        self.summary()

    def summary(self) -> None:
        rec = {"event": "summary", **asdict(self.counters)}
        if self._out is not None:
            self._emit(rec)
            self._out.close()
            self._out = None
        else:
            print(json.dumps(rec), file=self._stream, flush=True)


async def _kernel_connect(to: tuple[str, int], rcvbuf: int) -> tuple[asyncio.StreamReader, Any]:
    """A kernel TCP connection to the local application, marked so no redirect takes it."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, MARK)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.setblocking(False)
        await asyncio.get_running_loop().sock_connect(s, to)
    except BaseException:
        s.close()
        raise
    return await asyncio.open_connection(sock=s, limit=KERNEL_LIMIT)


def _ports(s: str) -> list[int]:
    try:
        ports = [int(p) for p in s.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PORT[,PORT...], got {s!r}") from None
    if not ports or any(not 0 < p < 65536 for p in ports):
        raise argparse.ArgumentTypeError(f"expected ports in 1..65535, got {s!r}")
    return ports


def add_arguments(p: argparse.ArgumentParser, hostport: Any) -> None:
    p.add_argument(
        "--transparent",
        action="store_true",
        help="client side: redirect this namespace's outgoing TCP (nft, output hook) to the "
        "proxy, which carries it over MPTCP to the original destination",
    )
    p.add_argument(
        "--ports",
        type=_ports,
        default=None,
        metavar="P[,P...]",
        help="with --transparent: only connections to these destination ports (default: all)",
    )
    p.add_argument(
        "--redirect-port",
        type=int,
        default=0,
        metavar="PORT",
        help="with --transparent: the local listener's port on 127.0.0.1 (default: any)",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="with a command: how long its connections may take to finish after it exits",
    )
    p.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="-- COMMAND ...",
        help="run COMMAND under the proxy and exit with its status once its connections are "
        "done (JSON lines then go to stderr, its stdout is the command's)",
    )
    p.add_argument(
        "--annotate",
        default=None,
        metavar="FILE",
        help="with a command: once it is done, add the proxy's view (subflow samples every "
        "100 ms, max_subflows, mptcp_fallback, every connection) to its JSON report FILE "
        "(our traffic tool's schema)",
    )
    p.add_argument(
        "--kernel-rcvbuf",
        type=int,
        default=KERNEL_RCVBUF,
        metavar="BYTES",
        help="SO_RCVBUF of the proxy's kernel sockets (default %(default)s; 0: the kernel's "
        "autotuning, which lets applications queue megabytes in front of the proxy)",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="FILE",
        help="append the JSON lines (ready, one per connection, summary) to FILE; stdout "
        "then carries only the ready line",
    )
    p.add_argument(
        "--listen",
        type=hostport,
        action="append",
        default=[],
        metavar="ADDR:PORT",
        help="server side: accept MPTCP and TCP here with our stack (repeatable, with --to)",
    )
    p.add_argument(
        "--to",
        type=hostport,
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="server side: the local application each --listen forwards to (kernel TCP)",
    )


def check_arguments(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.command and args.command[0] != "--":
        p.error(f"proxy: unknown arguments {args.command} (a command to run follows --)")
    if len(args.listen) != len(args.to):
        p.error("proxy: every --listen needs its --to (in the same order)")
    if not args.transparent and not args.listen:
        p.error("proxy: nothing to do (--transparent and/or --listen ADDR:PORT --to HOST:PORT)")
    if args.annotate and not args.command:
        p.error("proxy: --annotate applies to a command run under the proxy (-- COMMAND)")
    if args.ports and not args.transparent:
        p.error("proxy: --ports applies to --transparent")


async def run_proxy(args: argparse.Namespace, config: StackConfig) -> int:
    RawIpSender.fwmark = MARK  # our raw IP packets pass the redirect untouched
    return await Proxy(args, config).run()
