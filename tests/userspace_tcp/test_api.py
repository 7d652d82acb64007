"""The application API (blocking facade, streams) and the CLI's lifecycle, on real namespaces."""

from __future__ import annotations

import re
import signal
import subprocess
import textwrap

import pytest

from mptcp_impl.cli import pattern_sha256

from .conftest import PY, Bed
from .test_interop import linux_client, linux_server, no_tables_left, ours_server

pytestmark = pytest.mark.net

MB = 1_000_000

FACADE = textwrap.dedent("""
    import hashlib, json, sys
    from mptcp_impl.api import UserspaceSocket
    host, port, local, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    data = bytes(range(256)) * (n // 256)
    back = bytearray()
    with UserspaceSocket(timeout=60) as s:
        s.connect((host, port), local_addr=local)
        s.sendall(data)
        s.shutdown_write()
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            back += chunk
        stats = s.stats()
    print(json.dumps({"sent": hashlib.sha256(data).hexdigest(),
                      "echoed": hashlib.sha256(back).hexdigest(), "n": len(back),
                      "stats": stats}))
""")


def test_blocking_facade_echo_through_linux(clean_bed: Bed) -> None:
    """UserspaceSocket: connect, sendall, half-close, recv to EOF, against a Linux echo server."""
    n = 2 * 1024 * 1024
    srv = linux_server(clean_bed, 5401, "k_echo", "--echo")
    cli = clean_bed.start(
        clean_bed.client,
        ["-c", FACADE, clean_bed.server_ip, "5401", clean_bed.client_ip, str(n)],
        "u_facade",
    )
    r = clean_bed.result(cli, timeout=60)
    s = clean_bed.result(srv)
    assert r["_rc"] == 0 and r["n"] == n == s["bytes_received"]
    assert r["sent"] == r["echoed"] == s["sha256"]
    assert r["stats"]["bytes_in"] == n
    assert no_tables_left(clean_bed.client)


def test_server_sigterm_removes_its_table_and_port(clean_bed: Bed) -> None:
    """A listening CLI server owns an nft table and a port; SIGTERM gives both back."""
    srv = ours_server(clean_bed, 5402, "u_term")
    tables = clean_bed.server.run(["nft", "list", "tables"]).stdout
    assert "mptcplab_" in tables
    # The port is reserved from the kernel while we listen on it.
    bind = [
        "-c",
        "import socket,sys; s=socket.socket(); s.bind((sys.argv[1], 5402))",
        clean_bed.server_ip,
    ]
    busy = clean_bed.server.run([clean_bed_py(), *bind], check=False)
    assert busy.returncode != 0 and "Address already in use" in busy.stderr
    srv.stop(signal.SIGTERM, timeout=10)
    assert no_tables_left(clean_bed.server)
    free = clean_bed.server.run([clean_bed_py(), *bind], check=False)
    assert free.returncode == 0, free.stderr


def clean_bed_py() -> str:
    return PY


def test_bpf_filter_lets_only_our_segments_up(clean_bed: Bed) -> None:
    """Kernel traffic to another port of the same host never reaches our packet socket."""
    srv = ours_server(clean_bed, 5403, "u_filt")
    # An unrelated Linux transfer to the same host while our server listens.
    other = linux_server(clean_bed, 5404, "k_other")
    clean_bed.result(linux_client(clean_bed, 5404, 4 * MB, "k_other_cli"))
    clean_bed.result(other)
    ours = linux_client(clean_bed, 5403, 1 * MB, "k_ours_cli")
    c = clean_bed.result(ours)
    s = clean_bed.result(srv)
    assert s["sha256"] == c["sha256"]
    edge = s["stats"]["edge"]
    assert edge["endpoint_syns"] == 1
    assert edge["endpoint_rx_packets"] == edge["segments_in"] + 1  # + the SYN, nothing else
    assert edge["endpoint_unknown_dropped"] == 0


LISTENER = textwrap.dedent("""
    import json, sys
    from mptcp_impl.api import UserspaceListener
    with UserspaceListener(sys.argv[1], int(sys.argv[2]), timeout=60) as ls:
        print("listening", file=sys.stderr, flush=True)
        conn, peer = ls.accept()
        n = 0
        with conn:
            while True:
                data = conn.recv(1 << 16)
                if not data:
                    break
                n += len(data)
                conn.sendall(data)   # echo
            stats = conn.stats()
    print(json.dumps({"n": n, "peer": list(peer), "stats": stats}))
""")


def test_blocking_listener_echoes_to_linux_client(clean_bed: Bed) -> None:
    """UserspaceListener.accept() + recv/sendall echo; the Linux client checks what comes back."""
    n = 2 * MB
    srv = clean_bed.start(
        clean_bed.server, ["-c", LISTENER, clean_bed.server_ip, "5405"], "u_listener"
    )
    srv.wait_for_line("^listening", timeout=20)
    c = clean_bed.result(linux_client(clean_bed, 5405, n, "k_echo_cli"))
    s = clean_bed.result(srv)
    assert s["_rc"] == 0 and s["n"] == n == c["bytes_back"]
    assert c["sha256_back"] == c["sha256"]
    assert s["peer"][0] == clean_bed.client_ip
    assert no_tables_left(clean_bed.server)


SLOW_STREAM_SERVER = textwrap.dedent("""
    import asyncio, hashlib, json, sys
    from mptcp_impl.api import close_stack, start_server
    from mptcp_impl.netio.stack import StackConfig
    from mptcp_impl.mptcp.ctrl import MptcpConfig
    from mptcp_impl.tcp import TcpConfig

    LIMIT = int(sys.argv[4])  # the StreamReader pauses the connection above 2 * LIMIT

    async def main():
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        async def go_ahead():  # the test's word, one line on stdin, when it saw what it waits for
            await loop.run_in_executor(None, sys.stdin.readline)

        async def handle(reader, writer):
            await go_ahead()  # 1: our window is closed on the wire; take what the reader holds
            first = await reader.readexactly(2 * LIMIT)
            await go_ahead()  # 2: the peer's FIN is in and acknowledged; the reader never moved
            in_stack = writer.stats()["bytes_in"]
            h, n = hashlib.sha256(first), len(first)
            while data := await reader.read(1 << 16):
                h.update(data)
                n += len(data)
            writer.close()
            await writer.wait_closed()
            done.set_result({"n": n, "sha256": h.hexdigest(), "bytes_in_at_fin": in_stack})

        buf = int(sys.argv[3])
        mptcp = MptcpConfig(rcv_buf=buf) if sys.argv[5] == "mptcp" else None
        config = StackConfig(tcp=TcpConfig(rcv_buf=buf), mptcp=mptcp)
        server = await start_server(handle, sys.argv[1], int(sys.argv[2]), limit=LIMIT, config=config)
        print("listening", file=sys.stderr, flush=True)
        res = await asyncio.wait_for(done, 60)
        server.close()
        close_stack()
        print(json.dumps(res))

    asyncio.run(main())
""")


# tcp: a plain TCP listener; mptcp: the API's default, an MPTCP listener whose connection falls
# back to TCP with this plain Linux client (its window once stayed open with the reader paused)
@pytest.mark.parametrize("listener", ["tcp", "mptcp"])
def test_streams_eof_after_all_bytes_when_reader_paused(clean_bed: Bed, listener: str) -> None:
    """start_server and a handler that does not read: the receive window closes; reading lets
    it reopen; the peer's FIN then arrives while the StreamReader is paused with bytes still in
    the connection, and EOF must come after them (regression: feed_data after feed_eof).

    Every step waits for the event on the wire (tcpdump -l, line by line), not for time."""
    port, limit, rcv_buf = {"tcp": 5406, "mptcp": 5407}[listener], 1 << 16, 1 << 18
    # Unread: 2 * limit to 3 * limit in the reader (then it pauses; the connection hands over at
    # most 3 * limit, _Reader.room) + rcv_buf in the connection (then the window is 0). After the
    # handler takes 2 * limit the reader resumes; the rest (< rcv_buf) and the FIN fit in the
    # reopened window while the reader is paused again.
    n = 2 * limit + rcv_buf + rcv_buf // 2
    server_ip, client_ip = clean_bed.server_ip, clean_bed.client_ip
    link = clean_bed.tb.topo.links_of("server")[0].name
    dump = clean_bed.server.start(
        ["tcpdump", "-l", "-n", "-S", "-i", clean_bed.tb.intf("server", link), f"tcp port {port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    procs = [dump]
    try:
        dump.wait_for_line("listening on", timeout=10)
        srv = clean_bed.start(
            clean_bed.server,
            ["-c", SLOW_STREAM_SERVER, server_ip, str(port), str(rcv_buf), str(limit), listener],
            f"u_slow_{listener}",
            stdin=True,
        )
        procs.append(srv)
        srv.wait_for_line("^listening", timeout=20)
        cli = linux_client(clean_bed, port, n, f"k_slow_cli_{listener}")
        procs.append(cli)
        ours = re.escape(f"{server_ip}.{port} > ")
        # 2 * limit + rcv_buf arrive in milliseconds on this path: 15 s is for a loaded machine
        dump.wait_for_line(rf"IP {ours}.*, win 0,", stream="stdout", timeout=15)
        srv.write_stdin(b"go\n")
        # the window reopens (the next of our segments on the wire after the zero ones)
        dump.wait_for_line(rf"IP {ours}.*, win [1-9]\d*,", stream="stdout", timeout=30)
        fin = dump.wait_for_line(
            rf"IP {re.escape(client_ip)}\.\d+ > {re.escape(server_ip)}\.{port}: Flags \[F",
            stream="stdout",
            timeout=30,
        )
        fin_end = int(re.search(r"seq (?:\d+:)?(\d+)", fin).group(1))
        dump.wait_for_line(rf"IP {ours}.*, ack {fin_end + 1},", stream="stdout", timeout=30)
        srv.write_stdin(b"go\n")
        c = clean_bed.result(cli)
        s = clean_bed.result(srv)
    finally:
        for p in procs:  # a failed wait leaves them running; the test bed is shared
            if p.returncode is None:
                p.stop()
    assert s["_rc"] == 0 and s["n"] == n and s["sha256"] == c["sha256"] == pattern_sha256(n)
    # every byte was in the connection when the FIN was acknowledged, the reader still paused
    assert s["bytes_in_at_fin"] == n
