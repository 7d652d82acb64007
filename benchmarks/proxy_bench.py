"""Unmodified applications through the proxy against our CLI, on two_path: goodput both ways.

    python benchmarks/proxy_bench.py [--mbytes 40] [--reps 2] [--iperf-seconds 15] [--json]
    ./inv bench-proxy

Topology two_path as shipped (wifi 20 Mbit/s 10 ms, lte 10 Mbit/s 40 ms one-way: 30 Mbit/s
together). Each case moves the same number of bytes and is measured by its receiver, from the
moment its connection exists to the end of the stream, sha256 checked:

``cli``: our CLI at both ends (``python -m mptcp_impl client|server``). Upload: the client
host's CLI client sends to the server host's CLI server. Download: the client host runs the CLI
server (announcing its lte address, ``--endpoint LTE,signal``) and the server host's CLI client
sends to it, so the data flows server -> client over both paths.

``proxy``: plain kernel-TCP Python programs at both ends, unmodified, with the testbed's
deployment of the proxy (testbed/userspace.py): the client host's ``--transparent`` service
and the server host's ``--listen 0.0.0.0:P --to 127.0.0.1:P+10000``. Upload: the client
program sends; download: the server program sends.

Then iperf3 through the proxies (``-t``, both ways), its receiver's figure, for reference.
The ratio proxy/cli is printed per direction (the issue's bar: within 10%).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testbed.net import Testbed  # noqa: E402
from testbed.topology import load_topology  # noqa: E402
from testbed.userspace import Deployment, ProxyService  # noqa: E402
from testkit import ENV, PY  # noqa: E402

MB = 1_000_000

# Kernel-TCP programs (standard library only): the stream of our CLI (random.Random(0)'s 1 MiB
# block repeated) so every sha256 compares with mptcp_impl.cli.pattern_sha256.
KPEER = r"""
import hashlib, json, random, socket, sys, time
role, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
n = int(sys.argv[4]) if len(sys.argv) > 4 else 0
blk = memoryview(random.Random(0).randbytes(1 << 20))
def send(s):
    h = hashlib.sha256(); left = n
    while left:
        c = blk[: min(left, len(blk))]; s.sendall(c); h.update(c); left -= len(c)
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):
        pass
    return {"bytes_sent": n, "sha256": h.hexdigest()}
def recv(s, t0):
    h = hashlib.sha256(); k = 0
    while d := s.recv(1 << 18):
        k += len(d); h.update(d)
    dur = time.monotonic() - t0
    return {"bytes_received": k, "sha256": h.hexdigest(), "duration_s": dur,
            "goodput_mbit": k * 8 / dur / 1e6}
if role in ("sink", "source"):
    ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, port)); ls.listen(4)
    print("listening", file=sys.stderr, flush=True)
    c, _ = ls.accept(); t0 = time.monotonic()
    res = recv(c, t0) if role == "sink" else send(c)
else:
    c = socket.create_connection((addr, port)); t0 = time.monotonic()
    res = send(c) if role == "send" else recv(c, t0)
c.close()
print(json.dumps(res), flush=True)
"""


def _json_tail(text: str) -> dict:
    lines = [ln for ln in text.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"no JSON result in: {text[-800:]}")
    return json.loads(lines[-1])


def _pair(server_host, server_argv, client_host, client_argv, work: Path, tag: str):
    """Start the receiver-or-sender listening side, wait for it, run the other side; both
    results."""
    sout = work / f"{tag}-server.out"
    srv = server_host.start(server_argv, stdout=sout, stderr=subprocess.PIPE, env=ENV)
    try:
        srv.wait_for_line("listening", timeout=30)
        res = client_host.run(client_argv, timeout=300, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"{tag}: client failed: {res.stdout[-800:]} {res.stderr[-800:]}")
        srv.wait(60)
    finally:
        srv.stop()
    return _json_tail(sout.read_text()), _json_tail(res.stdout)


def cli_case(tb, direction: str, n: int, port: int, work: Path) -> float | None:
    cli, srv = tb.host("client"), tb.host("server")
    srv_ip, wifi, lte = (
        tb.addr("server", "server"),
        tb.addr("client", "wifi"),
        tb.addr("client", "lte"),
    )
    mod = [PY, "-m", "mptcp_impl"]
    if direction == "upload":
        receiver, sender, dst, extra = srv, cli, srv_ip, []
    else:
        receiver, sender, dst, extra = cli, srv, wifi, ["--endpoint", f"{lte},signal"]
    r, s = _pair(
        receiver,
        [*mod, "server", "--listen", f"{dst}:{port}", "--once", "--json", *extra],
        sender,
        [*mod, "client", "--connect", f"{dst}:{port}", "--bytes", str(n), "--json"],
        work,
        f"cli-{direction}-{port}",
    )
    assert r["bytes_received"] == n and r["sha256"] == s["sha256"], (r, s)
    subs = [x for x in r["mptcp"]["subflows"] if x["bytes_received"] > n // 20]
    if len(subs) != 2:
        # seen on download: the client never joined the announced address (our ADD_ADDR is
        # not retransmitted); a one-path run is no baseline, the caller runs it again
        print(f"cli {direction}: {len(subs)} path(s) carried data, again", file=sys.stderr)
        return None
    return r["goodput_mbit"]


def cli_runs(tb, direction: str, n: int, reps: int, work: Path) -> list[float]:
    out: list[float] = []
    base = 7000 if direction == "upload" else 7100
    for attempt in range(reps + 3):
        if len(out) == reps:
            break
        g = cli_case(tb, direction, n, base + attempt, work)
        if g is not None:
            out.append(g)
    return out


def proxy_case(tb, direction: str, n: int, port: int, work: Path) -> float:
    cli, srv = tb.host("client"), tb.host("server")
    srv_ip = tb.addr("server", "server")
    k = [PY, "-c", KPEER]
    app = port + 10000
    if direction == "upload":
        r, s = _pair(
            srv,
            [*k, "sink", "127.0.0.1", str(app)],
            cli,
            [*k, "send", srv_ip, str(port), str(n)],
            work,
            f"proxy-{direction}-{port}",
        )
    else:
        s, r = _pair(
            srv,
            [*k, "source", "127.0.0.1", str(app), str(n)],
            cli,
            [*k, "recv", srv_ip, str(port)],
            work,
            f"proxy-{direction}-{port}",
        )
    assert r["bytes_received"] == n and r["sha256"] == s["sha256"], (r, s)
    return r["goodput_mbit"]


def iperf3(tb, direction: str, seconds: float, port: int, work: Path) -> dict:
    cli, srv = tb.host("client"), tb.host("server")
    p = srv.start(
        ["iperf3", "-s", "-1", "-p", str(port + 10000), "--forceflush"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        p.wait_for_line("Server listening", stream="stdout", timeout=15)
        flag = ["-R"] if direction == "download" else []
        res = cli.run(
            ["iperf3", "-c", tb.addr("server", "server"), "-p", str(port), "-t", str(seconds)]
            + ["-J", *flag],
            timeout=seconds + 60,
            check=False,
        )
        p.wait(30)
    finally:
        p.stop()
    (work / f"iperf3-{direction}.json").write_text(res.stdout)
    end = json.loads(res.stdout)["end"]
    return {
        "received_mbit": round(end["sum_received"]["bits_per_second"] / 1e6, 2),
        "sent_mbit": round(end["sum_sent"]["bits_per_second"] / 1e6, 2),
        "retransmits": end["sum_sent"].get("retransmits"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mbytes", type=float, default=40)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--iperf-seconds", type=float, default=15)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    n = int(a.mbytes * MB)
    out: dict = {"mbytes": a.mbytes, "reps": a.reps, "cli": {}, "proxy": {}, "iperf3": {}}
    work = Path(tempfile.mkdtemp(prefix="proxy-bench-"))
    ports = [6001, 6002]
    services = [
        ProxyService("client", transparent=True, ports=tuple(ports)),
        ProxyService(
            "server", forwards=tuple((f"0.0.0.0:{p}", f"127.0.0.1:{p + 10000}") for p in ports)
        ),
    ]
    with Testbed(load_topology("two_path"), workdir=work / "tb") as tb:
        for d in ("upload", "download"):
            out["cli"][d] = cli_runs(tb, d, n, a.reps, work)
        with Deployment(tb, services, work / "logs", python=PY, env=ENV) as dep:
            for d in ("upload", "download"):
                out["proxy"][d] = [proxy_case(tb, d, n, ports[0], work) for _ in range(a.reps)]
            for d in ("upload", "download"):
                out["iperf3"][d] = iperf3(tb, d, a.iperf_seconds, ports[1], work)
        out["proxy_summary"] = {h: r["summary"] for h, r in dep.results.items()}
    out["ratio"] = {
        d: round(statistics.median(out["proxy"][d]) / statistics.median(out["cli"][d]), 3)
        for d in ("upload", "download")
    }
    out["work"] = str(work)
    if a.json:
        print(json.dumps(out))
    else:
        print(f"two_path, {a.mbytes:g} MB per transfer, {a.reps} reps, receiver goodput Mbit/s")
        for d in ("upload", "download"):
            c = ", ".join(f"{x:.2f}" for x in out["cli"][d])
            p = ", ".join(f"{x:.2f}" for x in out["proxy"][d])
            print(f"  {d:8} cli {c:20} proxy {p:20} ratio {out['ratio'][d]:.3f}")
        for d, r in out["iperf3"].items():
            print(f"  iperf3 {d} through the proxies: {r}")
        print(f"  work: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
