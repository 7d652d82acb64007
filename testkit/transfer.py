"""One client -> server transfer between two testbed hosts, and the kernel counters around it."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from pathlib import Path

from testkit import ENV, PY, json_tail


def client_server(
    server,
    sargs: list[str],
    client,
    cargs: list[str],
    stem: Path,
    *,
    timeout: float,
    server_timeout: float,
) -> tuple[dict, dict, float]:
    """``python sargs`` on host ``server`` until it prints "listening" on stderr, then ``python
    cargs`` on host ``client``; wait ``timeout`` s for the client, then ``server_timeout`` s for
    the server, and stop whichever still runs. Returns the JSON report each printed last (the
    client's, the server's) and the seconds from the client's start to both ends. Their output
    goes to ``stem``.srv, ``stem``.cli and ``stem``.cli.err."""
    s_out, c_out, c_err = (stem.with_name(stem.name + ext) for ext in (".srv", ".cli", ".cli.err"))
    srv = server.start([PY, *sargs], stdout=s_out, stderr=subprocess.PIPE, env=ENV)
    srv.wait_for_line("^listening", timeout=30)
    t0 = time.monotonic()
    cli = client.start([PY, *cargs], stdout=c_out, stderr=c_err, env=ENV)
    try:
        cli.wait(timeout)
        srv.wait(server_timeout)
    finally:
        for p in (cli, srv):
            if p.returncode is None:
                p.stop()
    wall = time.monotonic() - t0
    return json_tail(c_out), json_tail(s_out), wall


def nstat(host, prefix: str = "") -> dict[str, int]:
    """Absolute values of the host namespace's counters whose names start with ``prefix``
    (``nstat -asz``: no history file, zeros included)."""
    out = host.run(["nstat", "-asz"]).stdout
    vals = {}
    for ln in out.splitlines():
        parts = ln.split()
        if len(parts) >= 2 and parts[0].startswith(prefix) and parts[1].isdigit():
            vals[parts[0]] = int(parts[1])
    return vals


def counters_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The counters that changed from ``before`` to ``after``, by how much."""
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def state_dump(proc, timeout: float = 5.0) -> str:
    """SIGUSR1 (our CLI prints every connection's state, then a "held" line), and what the
    process printed on stderr up to that line; a Linux peer prints nothing and we go on."""
    proc.send_signal(signal.SIGUSR1)
    pipe = proc.popen.stderr
    if pipe is None or pipe.closed:
        return ""
    fd = pipe.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\nheld " not in b"\n" + buf:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        buf += chunk
    return buf.decode(errors="replace")


def drain(proc) -> str:
    """What is left on a (stopped) process's stderr pipe."""
    try:
        if proc.popen.stderr and not proc.popen.stderr.closed:
            return proc.popen.stderr.read().decode(errors="replace")
    except (OSError, ValueError):
        pass
    return ""
