"""iperf3 between two Mininet nodes, for the emulation tests and the emulator benchmark."""

from __future__ import annotations

import json
import subprocess


def iperf3_end(client, server, dst: str, seconds: float, *, flag: str = "", port: int) -> dict:
    """iperf3's JSON "end" section of one TCP run from `client` to `dst` (on `server`); `flag`
    is "", "-R" (server to client) or "--bidir". The client starts once the server says it
    listens; a server that exits without saying so is an error, not a run against nothing."""
    srv = server.popen(
        ["iperf3", "-s", "-1", "--forceflush", "-p", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        seen = []
        for line in srv.stdout:
            seen.append(line)
            if "Server listening" in line:
                break
        else:
            raise RuntimeError(f"iperf3 server on {server.name} did not start: {''.join(seen)}")
        out = client.cmd(f"iperf3 -c {dst} -p {port} -J -t {seconds} {flag}")
        return json.loads(out)["end"]
    finally:
        srv.kill()
        srv.wait()
