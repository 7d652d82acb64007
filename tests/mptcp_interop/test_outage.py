"""An interface outage under a single-path transfer to a Linux MPTCP server (issue 18,
defect 5), as a user would meet it: the client's wifi interface taken down in mid-transfer
(``ip link set dev X down``), for 3 s or for good.

Linux's own client (the control) rides out a 3 s outage: an interface going down ends no TCP
connection, the subflow retransmits and the transfer finishes once the interface is back. Ours
must do the same (before: its path manager closed the only subflow, the application got a clean
close with megabytes unsent, and the CLI never exited). When the interface never returns, our
client must give up after its close timeout (``--close-timeout``, net.mptcp.close_timeout) with
an error that says so, and exit non-zero.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from mptcp_impl.cli import pattern_sha256

from .conftest import MB, Bed, linux_client, linux_server, make_bed, ours_client
from .test_two_path import RATES

pytestmark = pytest.mark.net

ONE_PATH = ("--limits", "subflows=0,add_addr_accepted=0")
OUTAGE_S = 3.0  # the scenario's outage (what the user does), not a synchronisation


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    for b in make_bed("two_path", RATES, tmp_path_factory, "outage"):
        # one path each way: no endpoints, no joins accepted or made (Linux's client too)
        b.tb.kernel_mptcp("client", limits={"subflows": 0, "add_addr_accepted": 0}, endpoints=[])
        b.tb.kernel_mptcp("server", endpoints=[])
        yield b


@pytest.mark.parametrize("who", ["linux", "ours"])
def test_interface_down_3s_then_up_single_path_finishes_intact(bed: Bed, who: str) -> None:
    n = 8 * MB
    wifi, srv_ip = bed.addr("client", "wifi"), bed.addr("server", "server")
    port = 5710 if who == "linux" else 5711
    srv = linux_server(bed, "server", srv_ip, port, f"k_srv_out_{who}", "--progress", "1")
    if who == "linux":
        cli = linux_client(bed, "client", srv_ip, port, n, "k_cli_out", "--bind", wifi)
    else:
        cli = ours_client(bed, "client", srv_ip, port, n, "u_cli_out", "--bind", wifi, *ONE_PATH)
    try:
        srv.wait_for_line("^progress 2$", timeout=60)
        bed.tb.link_down("wifi", mode="interface")
        time.sleep(OUTAGE_S)
    finally:
        bed.tb.link_up("wifi", mode="interface")
    c = bed.result(cli, timeout=120)
    s = bed.result(srv, timeout=30)
    assert c["_rc"] == 0 and s["_rc"] == 0, (c.get("error"), c.get("_stderr"), s)
    assert c["sha256"] == s["sha256"] == pattern_sha256(n) and s["bytes_received"] == n
    if who == "ours":
        mp = c["mptcp"]
        print("outage 3 s:", c["goodput_mbit"], "Mbit/s", mp["subflows"])
        assert mp["fallback"] is False
        assert len(mp["subflows"]) == 1, mp["subflows"]  # the same subflow carried on


def test_interface_never_returns_our_client_gives_up_after_close_timeout(bed: Bed) -> None:
    n = 8 * MB
    grace = 3.0
    wifi, srv_ip = bed.addr("client", "wifi"), bed.addr("server", "server")
    srv = linux_server(bed, "server", srv_ip, 5712, "k_srv_gone", "--progress", "1")
    cli = ours_client(
        bed, "client", srv_ip, 5712, n, "u_cli_gone", "--bind", wifi, *ONE_PATH,
        "--close-timeout", str(grace),
    )  # fmt: skip
    try:
        srv.wait_for_line("^progress 2$", timeout=60)
        bed.tb.link_down("wifi", mode="interface")
        t_down = time.monotonic()
        try:
            cli.popen.wait(grace + 20)
        except subprocess.TimeoutExpired:
            pass
        waited = time.monotonic() - t_down
        c = bed.result(cli, timeout=1)
    finally:
        bed.tb.link_up("wifi", mode="interface")
        srv.stop()  # (the Linux server never hears of it: it waits in recv)
    print("gave up after", round(waited, 2), "s:", c.get("error"))
    assert c["_rc"] != 0, c
    err = c.get("error", "")
    assert "close timeout" in err and "not acknowledged" in err, (err, c["_stderr"])
    assert waited >= grace, f"gave up after {waited:.2f} s, before its close timeout {grace} s"
