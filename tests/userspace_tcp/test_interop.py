"""Our userspace TCP against Linux TCP, both directions, over the testbed's emulated paths.

Every transfer is checked end to end by sha256 of a deterministic stream, and on the wire by
tshark: no frame of the capture may be malformed.
"""

from __future__ import annotations

import pytest

from mptcp_impl.cli import pattern_sha256

from .conftest import Bed, _bed, capture, frames, tshark_fields, tshark_malformed

pytestmark = pytest.mark.net

MB = 1_000_000


def ours_client(bed: Bed, port: int, nbytes: int, name: str, extra: list[str] | None = None):
    return bed.start(
        bed.client,
        [
            "-m",
            "mptcp_impl",
            "client",
            "--connect",
            f"{bed.server_ip}:{port}",
            "--bind",
            bed.client_ip,
            "--bytes",
            str(nbytes),
            "--json",
            *(extra or []),
        ],
        name,
    )


def ours_server(bed: Bed, port: int, name: str):
    p = bed.start(
        bed.server,
        ["-m", "mptcp_impl", "server", "--listen", f"{bed.server_ip}:{port}", "--once", "--json"],
        name,
    )
    p.wait_for_line("^listening ", timeout=20)
    return p


def linux_server(bed: Bed, port: int, name: str, *extra: str):
    p = bed.start(
        bed.server,
        [
            "-m",
            "testkit.kpeer",
            "server",
            "--listen",
            f"{bed.server_ip}:{port}",
            *extra,
        ],
        name,
    )
    p.wait_for_line("^listening", timeout=20)
    return p


def linux_client(bed: Bed, port: int, nbytes: int, name: str, *extra: str, stdin=False):
    return bed.start(
        bed.client,
        [
            "-m",
            "testkit.kpeer",
            "client",
            "--connect",
            f"{bed.server_ip}:{port}",
            "--bytes",
            str(nbytes),
            *extra,
        ],
        name,
        stdin=stdin,
    )


def no_tables_left(host) -> bool:
    out = host.run(["nft", "list", "tables"]).stdout
    return "mptcplab_" not in out


def test_userspace_client_to_linux_server(clean_bed: Bed) -> None:
    n = 8 * MB
    srv = linux_server(clean_bed, 5101, "k_srv1")
    cap = capture(clean_bed, "cap1")
    cli = ours_client(clean_bed, 5101, n, "u_cli1")
    c = clean_bed.result(cli)
    s = clean_bed.result(srv)
    files = cap.stop()
    assert c["_rc"] == 0 and s["_rc"] == 0
    assert c["bytes_sent"] == s["bytes_received"] == n
    assert c["sha256"] == s["sha256"] == pattern_sha256(n)
    assert c["stats"]["malformed_dropped"] == 0
    assert frames(files[0]) > 100 and not tshark_malformed(files[0])
    assert no_tables_left(clean_bed.client)


def test_linux_client_to_userspace_server(clean_bed: Bed) -> None:
    n = 8 * MB
    srv = ours_server(clean_bed, 5102, "u_srv2")
    cap = capture(clean_bed, "cap2")
    cli = linux_client(clean_bed, 5102, n, "k_cli2")
    c = clean_bed.result(cli)
    s = clean_bed.result(srv)
    files = cap.stop()
    assert c["_rc"] == 0 and s["_rc"] == 0
    assert s["bytes_received"] == c["bytes_sent"] == n
    assert s["sha256"] == c["sha256"] == pattern_sha256(n)
    assert frames(files[0]) > 100 and not tshark_malformed(files[0])
    assert no_tables_left(clean_bed.server)


def test_linux_zero_window_and_window_updates(clean_bed: Bed) -> None:
    """A Linux receiver with a tiny SO_RCVBUF and a slow reader: zero windows, then updates."""
    n = 1 * MB
    srv = linux_server(clean_bed, 5103, "k_srv3", "--rcvbuf", "4096", "--stall-ms", "500")
    cap = capture(clean_bed, "cap3")
    cli = ours_client(clean_bed, 5103, n, "u_cli3")
    c = clean_bed.result(cli, timeout=120)
    s = clean_bed.result(srv)
    files = cap.stop()
    assert c["_rc"] == 0 and s["sha256"] == c["sha256"] == pattern_sha256(n)
    zero = tshark_fields(files[0], "tcp.srcport == 5103 and tcp.window_size == 0", "frame.number")
    assert zero, "the Linux side never advertised a zero window: the test did not test it"
    # After the zero window our sender probed or waited for the update, and then went on.
    assert c["stats"]["persist_probes"] > 0
    assert frames(files[0]) > 100 and not tshark_malformed(files[0])


def test_linux_server_resets_mid_transfer(clean_bed: Bed) -> None:
    """The peer aborts with a RST: our client reports the reset and exits, cleaned up."""
    srv = linux_server(clean_bed, 5104, "k_srv4", "--reset-after", str(MB))
    cli = ours_client(clean_bed, 5104, 50 * MB, "u_cli4")
    s = clean_bed.result(srv)
    assert s.get("reset")
    c = clean_bed.result(cli, timeout=30)
    assert c["_rc"] != 0
    assert "reset" in c["error"].lower()
    assert no_tables_left(clean_bed.client)


def test_linux_server_half_closes_early(clean_bed: Bed) -> None:
    """The peer sends its FIN after 1 MB and keeps reading: we go on sending to the end."""
    n = 6 * MB
    srv = linux_server(clean_bed, 5105, "k_srv5", "--shutdown-after", str(MB))
    cap = capture(clean_bed, "cap5")
    cli = ours_client(clean_bed, 5105, n, "u_cli5")
    s = clean_bed.result(srv)
    c = clean_bed.result(cli, timeout=30)
    files = cap.stop()
    assert s["half_closed"] == MB
    assert c["_rc"] == 0 and s["sha256"] == c["sha256"] == pattern_sha256(n)
    fins = tshark_fields(files[0], "tcp.flags.fin == 1", "tcp.srcport", "tcp.seq")
    assert {f[0] for f in fins} == {"5105", str(c["local"][1])}
    assert no_tables_left(clean_bed.client)


@pytest.fixture(scope="module", params=[5, 40], ids=lambda d: f"owd{d}ms")
def lossy_bed(request, tmp_path_factory):
    """1% loss and jitter (hence reordering) on the wifi link, two one-way delays.

    Offload stays off (the testbed's default): the emulator drops per skb, and with offload
    one skb is a super-packet of up to 64 KiB, so "1%" would mean far fewer lost segments.
    """
    yield from _bed(
        {
            "links.wifi.delay_ms": request.param,
            "links.wifi.jitter_ms": 2,
            "links.wifi.loss_pct": 1,
            "links.wifi.rate_mbit": 100,
            "links.wifi.queue_pkts": 1000,
        },
        tmp_path_factory,
        f"lossy{request.param}",
    )


# 2 MB is ~1400 full segments: at 1% loss each way ~14 data segments lost (no loss at all has
# a chance of ~e^-14), and at 40 ms one-way the transfer is many loss-recovery rounds long; the
# checks are on integrity and on recovery having happened, not on a rate (4 MB took 14-18 s at
# 40 ms for the same checks)
LOSSY_BYTES = 2 * MB


def test_lossy_userspace_sender(lossy_bed: Bed) -> None:
    n = LOSSY_BYTES
    srv = linux_server(lossy_bed, 5201, "k_srvL")
    cap = capture(lossy_bed, "capL1")
    cli = ours_client(lossy_bed, 5201, n, "u_cliL")
    c = lossy_bed.result(cli, timeout=150)
    s = lossy_bed.result(srv)
    files = cap.stop()
    assert c["_rc"] == 0 and c["sha256"] == s["sha256"] == pattern_sha256(n)
    assert c["stats"]["retransmits"] > 0, "no loss seen: the test did not test recovery"
    assert frames(files[0]) > 100 and not tshark_malformed(files[0])


def test_lossy_userspace_receiver(lossy_bed: Bed) -> None:
    n = LOSSY_BYTES
    srv = ours_server(lossy_bed, 5202, "u_srvL")
    cap = capture(lossy_bed, "capL2")
    cli = linux_client(lossy_bed, 5202, n, "k_cliL")
    c = lossy_bed.result(cli, timeout=150)
    s = lossy_bed.result(srv)
    files = cap.stop()
    assert s["_rc"] == 0 and s["sha256"] == c["sha256"] == pattern_sha256(n)
    assert s["stats"]["ooo_segments"] > 0, "nothing arrived out of order: no loss was tested"
    assert frames(files[0]) > 100 and not tshark_malformed(files[0])


def test_connection_refused_by_linux(clean_bed: Bed) -> None:
    """No listener on the Linux side: its RST ends our handshake, the CLI says so and cleans up."""
    cli = ours_client(clean_bed, 5106, MB, "u_cli6")
    c = clean_bed.result(cli, timeout=30)
    assert c["_rc"] != 0 and "ConnectionRefused" in c["error"]
    assert no_tables_left(clean_bed.client)
