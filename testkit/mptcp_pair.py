"""Two network namespaces joined by two veth paths, kernel MPTCP on both, tcpdump on every interface.

Plain `ip netns` on purpose, independent of the testbed package: the analysis tests need real
captures of real kernel MPTCP, and the benchmark reuses this to make a large one.

Layout: <prefix>-c (client) and <prefix>-s (server); path i is client eth<i> 10.0.<i+1>.1 <->
server eth<i> 10.0.<i+1>.2. The server announces its second address (ADD_ADDR), the client accepts
it and opens the second subflow. Each path is shaped with tbf on both egresses so transfers last
long enough to have a timeline.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

PORT = 5201

SERVER = r"""
import json, select, socket, sys
mode, total, proto = sys.argv[1], int(sys.argv[2]), int(sys.argv[4])
marks = [int(x) for x in sys.argv[3].split(",")]  # report progress when passing each
ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("0.0.0.0", PORT)); ls.listen(1)
print("ready", flush=True)
c, _ = ls.accept()
n = 0
while True:
    d = c.recv(65536)
    if not d:
        break
    n += len(d)
    if marks and n >= marks[0]:
        print("progress", n, flush=True); marks.pop(0)
        if mode == "abort":
            sys.stdin.readline()          # harness says: close now, with unread data -> MP_FASTCLOSE
            select.select([c], [], [], 10)  # unread data waiting: close() must abort, not FIN
            break
if mode != "abort":
    c.sendall(b"r" * 100000)
c.close()
print(json.dumps({"received": n}), flush=True)
""".replace("PORT", str(PORT))

CLIENT = r"""
import json, socket, sys
dst, total, proto = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
s.connect((dst, PORT))
buf, sent, back = b"x" * 65536, 0, 0
try:
    while sent < total:
        sent += s.send(buf[: min(65536, total - sent)])
    s.shutdown(socket.SHUT_WR)
    while d := s.recv(65536):
        back += len(d)
    err = None
except OSError as e:
    err = str(e)
s.close()
print(json.dumps({"sent": sent, "received": back, "error": err}), flush=True)
""".replace("PORT", str(PORT))


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command, fail loudly with its stderr (setup errors must name the command)."""
    p = subprocess.run(list(args), capture_output=True, text=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: rc={p.returncode} {p.stderr.strip()}")
    return p


@dataclass
class Pair:
    """The two namespaces and where captures go."""

    prefix: str
    client: str
    server: str
    rates_mbit: tuple[int, int]
    captures: list[subprocess.Popen] = field(default_factory=list)

    def ns(self, ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", ns, *cmd, check=check)


def _setup(pair: Pair) -> None:
    for ns in (pair.client, pair.server):
        sh("ip", "netns", "add", ns)
        pair.ns(ns, "ip", "link", "set", "lo", "up")
        pair.ns(ns, "sysctl", "-qw", "net.mptcp.enabled=1")
        pair.ns(ns, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0")
        pair.ns(ns, "ip", "mptcp", "limits", "set", "subflows", "4", "add_addr_accepted", "4")
    for i, rate in enumerate(pair.rates_mbit):
        sh(
            "ip",
            "link",
            "add",
            f"eth{i}",
            "netns",
            pair.client,
            "type",
            "veth",
            "peer",
            "name",
            f"eth{i}",
            "netns",
            pair.server,
        )
        for ns, host in ((pair.client, 1), (pair.server, 2)):
            pair.ns(ns, "ip", "addr", "add", f"10.0.{i + 1}.{host}/24", "dev", f"eth{i}")
            pair.ns(ns, "ip", "link", "set", f"eth{i}", "up")
            pair.ns(ns, "ethtool", "-K", f"eth{i}", "tso", "off", "gso", "off", "gro", "off")
            pair.ns(
                ns,
                "tc",
                "qdisc",
                "add",
                "dev",
                f"eth{i}",
                "root",
                "tbf",
                "rate",
                f"{rate}mbit",
                "burst",
                "16kb",
                "latency",
                "40ms",
            )
    pair.ns(pair.server, "ip", "mptcp", "endpoint", "add", "10.0.2.2", "dev", "eth1", "signal")


@contextmanager
def mptcp_pair(prefix: str, rates_mbit: tuple[int, int] = (20, 10)) -> Iterator[Pair]:
    """Create the namespaces, yield, then delete exactly them (and stop our captures)."""
    pair = Pair(prefix, f"{prefix}-c", f"{prefix}-s", rates_mbit)
    try:
        _setup(pair)
        yield pair
    finally:
        for p in pair.captures:
            if p.poll() is None:
                p.kill()
                p.wait()
        for ns in (pair.client, pair.server):
            sh("ip", "netns", "del", ns, check=False)


def _readline(p: subprocess.Popen, stream, timeout: float) -> str:
    """Read one line from a child's pipe, with a deadline (a hung peer must fail the test).

    Byte by byte from the pipe itself, never through the file object's buffer: its readline()
    takes whatever the pipe holds, so a second line written with the first (tcpdump -i any's
    "data link type LINUX_SLL2" and "listening on", the server's "progress" lines) would wait
    in that buffer where select() cannot see it, until the child wrote more or the deadline
    passed. The file object is left with nothing buffered (communicate() reads the rest)."""
    fd = stream.fileno()
    deadline = time.monotonic() + timeout
    line = bytearray()
    while True:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise TimeoutError(f"no output from {p.args} within {timeout}s")
        byte = os.read(fd, 1)
        line += byte
        if not byte or byte == b"\n":
            return line.decode(errors="replace")


def start_capture(pair: Pair, ns: str, host: str, intf: str, out_dir: Path) -> subprocess.Popen:
    """tcpdump -U -s 128 into <host>-<intf>.pcap; returns once tcpdump says it is listening."""
    out_dir.mkdir(parents=True, exist_ok=True)
    p = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            ns,
            "tcpdump",
            "-i",
            intf,
            "-U",
            "--immediate-mode",
            "-s",
            "128",
            "-Z",
            "root",
            "-w",
            str(out_dir / f"{host}-{intf}.pcap"),
            "tcp",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    pair.captures.append(p)
    said: list[str] = []
    while True:
        # a deadline, not a measurement: at a load of ~10 on two cores tcpdump took over 10 s,
        # and once (CI, `-i any`) over 30 s; the error says where it was waiting
        try:
            line = _readline(p, p.stderr, 60)
        except TimeoutError as e:
            raise TimeoutError(f"{e}; it said {said}; {_where_waiting(p.pid)}") from None
        if not line:
            raise RuntimeError(f"tcpdump on {ns}/{intf} exited: rc={p.wait()}; it said {said}")
        said.append(line.strip())
        if "listening on" in line:
            return p


def _where_waiting(pid: int) -> str:
    """A hung child's state, kernel wait channel and stack, and the load: enough to tell a
    starved process from one blocked in the kernel."""
    parts = []
    for name in ("stat", "wchan", "stack"):
        try:
            text = Path(f"/proc/{pid}/{name}").read_text().strip()
        except OSError as e:
            text = f"unreadable ({e.strerror})"
        parts.append(f"{name}: {text}")
    parts.append(f"loadavg: {Path('/proc/loadavg').read_text().strip()}")
    return "; ".join(parts)


def wait_quiet(pair: Pair, timeout: float = 5.0) -> None:
    """Wait until no TCP socket is mid-conversation in either namespace (the last FIN/ACKs are on
    the wire before the captures stop). There is no event for this, so poll ss with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        busy = [
            pair.ns(ns, "ss", "-taH", "exclude", "time-wait", "exclude", "listening").stdout
            for ns in (pair.client, pair.server)
        ]
        if not any(b.strip() for b in busy):
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"TCP sockets still mid-conversation after {timeout} s (waited for none but "
                f"time-wait and listening ones): {' | '.join(b.strip() for b in busy if b.strip())}"
            )
        time.sleep(0.02)


def stop_captures(pair: Pair) -> list[str]:
    """SIGINT and wait: tcpdump flushes its file (started with -U) and prints its counters.

    Returns tcpdump's closing lines (packets captured / dropped by kernel), one string per capture.
    """
    for p in pair.captures:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    stats = []
    for p in pair.captures:
        _, err = p.communicate(timeout=10)
        stats.append(" ".join(err.split()))
    pair.captures.clear()
    return stats


def _cut(pair: Pair) -> None:
    """Path 0 fails: drop everything on the client's eth0 in both directions (nft, no netem)."""
    rules = (
        "table inet cut {\n chain i { type filter hook input priority 0; iifname eth0 drop; }\n"
        " chain o { type filter hook output priority 0; oifname eth0 drop; }\n}\n"
    )
    subprocess.run(
        ["ip", "netns", "exec", pair.client, "nft", "-f", "-"], input=rules, text=True, check=True
    )
    # what already sat in eth0's shaper queue (past netfilter) is lost with the link too: without
    # this, that data still arrives, and the cut may cost the connection nothing to notice
    pair.ns(pair.client, "tc", "qdisc", "del", "dev", "eth0", "root")
    pair.ns(
        pair.client,
        "tc",
        "qdisc",
        "add",
        "dev",
        "eth0",
        "root",
        "tbf",
        "rate",
        f"{pair.rates_mbit[0]}mbit",
        "burst",
        "16kb",
        "latency",
        "40ms",
    )


def run_transfer(pair: Pair, out_dir: Path, variant: str, total: int) -> dict:
    """One MPTCP upload client->server with captures on all four interfaces.

    variant: "bulk" (server switches its second path to backup mid-way: MP_PRIO), "failover" (path 0
    cut at 1/5, back at 3/5), "abort" (server closes with unread data: MP_FASTCLOSE),
    "tcp" (plain TCP over path 0, nothing happens).
    Returns a summary with the wall-clock times of link events.
    """
    for ns, host in ((pair.client, "client"), (pair.server, "server")):
        for i in range(len(pair.rates_mbit)):
            start_capture(pair, ns, host, f"eth{i}", out_dir)
    t0 = time.time()
    mode = "abort" if variant == "abort" else "drain"
    proto = "6" if variant == "tcp" else "262"  # plain TCP, or IPPROTO_MPTCP
    # the failover run cuts path 0 at 1/5 of the transfer and restores it at 3/5 (to see the
    # goodput come back); the others act at 1/3
    marks = f"{total // 5},{3 * total // 5}" if variant == "failover" else str(total // 3)
    srv = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            pair.server,
            sys.executable,
            "-c",
            SERVER,
            mode,
            str(total),
            marks,
            proto,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    cli = None
    events: list[dict] = []
    try:
        assert _readline(srv, srv.stdout, 10).strip() == "ready"
        cli = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                pair.client,
                sys.executable,
                "-c",
                CLIENT,
                "10.0.1.2",
                str(total),
                proto,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = _readline(srv, srv.stdout, 60)
        assert line.startswith("progress"), line
        now = time.time()
        if variant == "failover":
            _cut(pair)
            events.append({"at": now - t0, "actual": now, "link": "path0", "action": "down"})
            line = _readline(srv, srv.stdout, 60)
            assert line.startswith("progress"), line
            pair.ns(pair.client, "nft", "delete", "table", "inet", "cut")
            now = time.time()
            events.append({"at": now - t0, "actual": now, "link": "path0", "action": "up"})
        elif variant == "bulk":
            pair.ns(pair.server, "ip", "mptcp", "endpoint", "change", "id", "1", "backup")
            events.append({"at": now - t0, "actual": now, "link": "path1", "action": "set"})
        elif variant == "abort":  # REMOVE_ADDR for the second path, then MP_FASTCLOSE
            pair.ns(pair.server, "ip", "mptcp", "endpoint", "delete", "id", "1")
            events.append({"at": now - t0, "actual": now, "link": "path1", "action": "down"})
            srv.stdin.write("close\n")
            srv.stdin.flush()
        server_out = json.loads(_readline(srv, srv.stdout, 60))
        client_out = json.loads(_readline(cli, cli.stdout, 60))
        srv.wait(10)
        cli.wait(10)
    finally:
        for p in (srv, cli):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        try:
            wait_quiet(pair)
        finally:
            stats = stop_captures(pair)
    return {
        "t0": t0,
        "events": events,
        "server": server_out,
        "client": client_out,
        "tcpdump": stats,
    }


if __name__ == "__main__":
    out = Path(sys.argv[1])
    variant = sys.argv[2] if len(sys.argv) > 2 else "bulk"
    with mptcp_pair(f"ap{os.getpid()}") as pr:
        print(json.dumps(run_transfer(pr, out, variant, 3_000_000)))
