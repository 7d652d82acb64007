"""One client -> server transfer between two testbed hosts, and the kernel counters around it."""

from __future__ import annotations

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
