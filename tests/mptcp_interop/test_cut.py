"""A silent cut of one path in mid-transfer (the wifi link blackholed on its router, then
restored), our MPTCP against Linux MPTCP both ways.

The transfer must go on over lte while wifi is cut (the test waits for the receiver's progress
during the cut: no sleeping), arrive intact, and after the link comes back the wifi subflow must
carry new data again: in the capture on the client's wifi interface, data with data sequence
numbers above everything sent before the link came back, acknowledged by the peer on wifi.
"""

from __future__ import annotations

import time

import pytest

from mptcp_impl.cli import pattern_sha256
from testkit.transfer import counters_delta

from .conftest import (
    LINUX_BAD,
    MB,
    Bed,
    linux_client,
    linux_server,
    make_bed,
    ours_client,
    ours_server,
    tshark,
)
from .test_two_path import RATES

pytestmark = pytest.mark.net


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    for b in make_bed("two_path", RATES, tmp_path_factory, "cut"):
        b.tb.kernel_mptcp("client", endpoints=b.tb.default_endpoints("client"))
        b.tb.kernel_mptcp("server", endpoints=[])
        yield b


def wifi_after(pcap, sender: str, t_up: float) -> tuple[int, int]:
    """(bytes of new data the sender put on this interface's subflow after t_up, of which the
    peer acknowledged on that subflow)."""
    rows = tshark(
        pcap,
        "tcp.len > 0 || tcp.flags.ack == 1",
        "frame.time_epoch",
        "ip.src",
        "tcp.seq_raw",
        "tcp.len",
        "tcp.ack_raw",
        "tcp.options.mptcp.rawdataseqno",
        two_pass=False,
    )
    hi_dsn_before = 0
    new: list[tuple[int, int]] = []  # (seq, end) of segments with DSNs never sent before t_up
    ack = None
    for t, src, seq, ln, ackn, dsn in rows:
        t, ln = float(t), int(ln or 0)
        if src == sender and ln and dsn:
            d = int(dsn.split(";")[0])
            if t < t_up:
                hi_dsn_before = max(hi_dsn_before, d)
            elif d > hi_dsn_before:
                new.append((int(seq), int(seq) + ln))
        elif src != sender and t >= t_up and ackn:
            a = int(ackn)
            ack = a if ack is None or (a - ack) % (1 << 32) < (1 << 31) else ack
    sent = sum(e - s for s, e in new)
    acked = sum(e - s for s, e in new if ack is not None and (ack - e) % (1 << 32) < (1 << 31))
    return sent, acked


@pytest.mark.parametrize("direction", ["ours_to_linux", "linux_to_ours"])
def test_wifi_cut_and_back(bed: Bed, direction: str) -> None:
    n = 12 * MB  # (longer than the rest: room for the path to come back into use)
    wifi, srv_ip = bed.addr("client", "wifi"), bed.addr("server", "server")
    port = 5400 if direction == "ours_to_linux" else 5401
    linux_host = "server" if direction == "ours_to_linux" else "client"
    before = bed.nstat(linux_host)
    cap = bed.capture(f"cap_cut_{direction}", ["client-eth0"])
    if direction == "ours_to_linux":
        srv = linux_server(bed, "server", srv_ip, port, "k_srv_cut", "--progress", "1")
        cli = ours_client(bed, "client", srv_ip, port, n, "u_cli_cut", "--bind", wifi)
        watch, marks = srv, (2, 5)
    else:
        srv = ours_server(bed, "server", srv_ip, port, "u_srv_cut")
        cli = linux_client(
            bed, "client", srv_ip, port, n, "k_cli_cut", "--bind", wifi, "--progress", "1"
        )
        watch, marks = cli, (3, 6)  # a client's progress runs ahead by its send buffer
    try:
        watch.wait_for_line(f"^progress {marks[0]}$", timeout=60)
        bed.tb.link_down("wifi")
        t_down = time.time()
        watch.wait_for_line(f"^progress {marks[1]}$", timeout=60)  # lte alone carries on
        t_up = time.time()
    finally:
        bed.tb.link_up("wifi")
    c = bed.result(cli, timeout=120)
    s = bed.result(srv, timeout=30)
    files = cap.stop()
    delta = counters_delta(before, bed.nstat(linux_host))
    ours = c if direction == "ours_to_linux" else s
    mp = ours["mptcp"]
    print(
        direction,
        f"cut {t_up - t_down:.2f}s",
        mp["subflows"],
        {k: v for k, v in mp["mib"].items() if v},
        delta,
    )
    assert c["_rc"] == 0 and s["_rc"] == 0, (c, s)
    assert c["sha256"] == s["sha256"] == pattern_sha256(n) and s["bytes_received"] == n
    assert mp["fallback"] is False
    bad = {k: delta[k] for k in LINUX_BAD if delta.get(k)}
    assert not bad, delta
    if direction == "ours_to_linux":
        # what the cut subflow held went out again on lte (reinjection), counted as Linux does
        assert mp["mib"].get("MPTcpExtMPTCPRetrans", 0) > 0, mp["mib"]
    sender = wifi  # the client sends in both directions
    sent, acked = wifi_after(files[0], sender, t_up)
    print("new data on wifi after the link came back:", sent, "acknowledged:", acked)
    assert acked >= 256 * 1024, (sent, acked)
