"""The client side's nft redirect, alone in a namespace of its own.

Our raw IP sender's packets pass the kernel's OUTPUT hook: unmarked, a SYN of ours to a
redirected port would come back to the proxy itself. With the proxy's mark it goes out as sent;
an application's (unmarked) SYN is redirected. What reaches 127.0.0.1:PORT is seen on lo with
our own packet receiver. The table goes at close, and a dead pid's table at the next start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from testkit import ENV, PY

pytestmark = pytest.mark.net

SCRIPT = textwrap.dedent(
    """
    import json, os, socket, subprocess, time
    run = lambda *a: subprocess.run(list(a), check=True, capture_output=True, text=True).stdout
    run("ip", "link", "set", "lo", "up")
    run("ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
    run("ip", "link", "set", "v0", "up"); run("ip", "link", "set", "v1", "up")
    run("ip", "addr", "add", "10.9.0.1/24", "dev", "v0")
    from mptcp_impl.netio.firewall import list_tables, remove_stale_tables
    from mptcp_impl.netio.packet import PacketReceiver, RawIpSender
    from mptcp_impl.proxy import MARK, Redirect

    r = Redirect(4444, [80])
    r.install()
    seen = PacketReceiver("127.0.0.1", 4444)

    def raw_syn(mark, sport):
        RawIpSender.fwmark = mark
        s = RawIpSender("10.9.0.1", "10.9.0.2")
        hdr = bytearray(20)
        hdr[0:2] = sport.to_bytes(2, "big"); hdr[2:4] = (80).to_bytes(2, "big")
        hdr[12] = 0x50; hdr[13] = 0x02; hdr[14:16] = (1000).to_bytes(2, "big")
        s.send(bytes(hdr), b"")
        time.sleep(0.2)
        return len(seen.recv_batch())

    out = {"marked": raw_syn(MARK, 1111), "unmarked": raw_syn(0, 2222)}
    # an application's connect to port 80 elsewhere lands on 127.0.0.1:4444
    ls = socket.socket(); ls.bind(("127.0.0.1", 4444)); ls.listen()
    c = socket.socket(); c.settimeout(5); c.connect(("10.9.0.2", 80))
    a, _ = ls.accept()
    raw = a.getsockopt(socket.SOL_IP, 80, 16)
    out["original_dst"] = [socket.inet_ntoa(raw[4:8]), int.from_bytes(raw[2:4], "big")]
    out["tables_open"] = list_tables()
    r.close()
    out["tables_closed"] = list_tables()
    # a table left by a dead pid goes at the next start
    run("nft", "add", "table", "ip", "mptcplab_999999_proxy")
    out["stale_removed"] = remove_stale_tables()
    print(json.dumps(out))
    """
)


def test_redirect_marks_and_original_destination() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    res = subprocess.run(
        ["unshare", "-n", PY, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **ENV},
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    print(out, file=sys.stderr)
    assert out["marked"] == 0 and out["unmarked"] == 1, out
    assert out["original_dst"] == ["10.9.0.2", 80], out
    assert len(out["tables_open"]) == 1 and out["tables_open"][0].endswith("_proxy"), out
    assert out["tables_closed"] == [] and out["stale_removed"] == ["mptcplab_999999_proxy"], out
