"""Hostile segments at our stack: RFC 5961 challenge ACKs, malformed headers and options.

A Linux client sends 1 MB to our server and pauses; an injector in the client's namespace, which
learned the connection's numbers from the SYN-ACK, sends crafted segments with the client's
address and port; then the client sends the rest. The connection must survive (sha256 of the
whole stream matches), malformed segments must be counted in the server's --json stats, and
blind RST/SYN in the window must get a challenge ACK on the wire.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mptcp_impl.cli import pattern_sha256
from testkit.kpeer import CHALLENGED, KINDS

from .conftest import Bed, _bed, capture, tshark_fields
from .test_interop import linux_client, ours_server

pytestmark = pytest.mark.net

MB = 1_000_000
MALFORMED = [k for k in KINDS if k not in CHALLENGED]  # every malformed kind kpeer sends


@pytest.fixture(scope="module")
def bed(tmp_path_factory) -> Iterator[Bed]:
    """A clean path; RX checksum offload off on the server, so a bad checksum reaches Python.

    (veth marks locally made packets without a checksum verdict as verified when RX
    checksumming is on, and a corrupted checksum would then never be looked at by anyone.)
    """
    for b in _bed({"links.wifi.delay_ms": 1}, tmp_path_factory, "robust"):
        for lk in b.tb.topo.links_of("server"):
            b.server.run(["ethtool", "-K", b.tb.intf("server", lk.name), "rx", "off"])
        yield b


def run_injection(
    bed: Bed, port: int, kinds: list[str], name: str
) -> tuple[dict, dict, dict, list]:
    n = 3 * MB
    srv = ours_server(bed, port, f"u_srv_{name}")
    cap = capture(bed, f"cap_{name}")
    inj = bed.start(
        bed.client,
        [
            "-m",
            "testkit.kpeer",
            "inject",
            "--local",
            bed.client_ip,
            "--peer",
            f"{bed.server_ip}:{port}",
            "--kinds",
            ",".join(kinds),
            "--offset",
            str(MB),
        ],
        f"inj_{name}",
        stdin=True,
    )
    inj.wait_for_line("^sniffing", timeout=20)
    cli = linux_client(bed, port, n, f"k_cli_{name}", "--pause-at", str(MB), stdin=True)
    cli.wait_for_line("^paused", timeout=30)
    inj.wait_for_line("^observed", timeout=10)
    inj.stdin.write(b"go\n")
    inj.stdin.flush()
    inj.wait_for_line("^injected", timeout=30)
    i = bed.result(inj)
    cli.stdin.write(b"go\n")
    cli.stdin.flush()
    c = bed.result(cli, timeout=60)
    s = bed.result(srv, timeout=30)
    files = cap.stop()
    assert c["_rc"] == 0 and s["_rc"] == 0, (c, s)
    assert s["sha256"] == c["sha256"] == pattern_sha256(n), "the connection did not survive"
    return i, c, s, files


def test_blind_rst_and_syn_get_challenge_acks(bed: Bed) -> None:
    i, c, s, files = run_injection(bed, 5301, ["rst_in_window", "syn_in_window"], "chal")
    assert i["challenge_acks_seen"] == {"rst_in_window": 1, "syn_in_window": 1}
    assert s["stats"]["challenge_acks"] >= 2
    # On the server's wire: each injected segment is followed by a pure ACK of exactly rcv.nxt.
    rows = tshark_fields(
        files[0],
        "tcp.port == 5301",
        "frame.number",
        "tcp.srcport",
        "tcp.flags.str",
        "tcp.seq_raw",
        "tcp.ack_raw",
        "tcp.len",
    )
    rcv_nxt = str(i["rcv_nxt"])
    injected_seq = str((i["rcv_nxt"] + 1000) & 0xFFFFFFFF)
    for flag in ("R", "S"):
        idx = next(
            k
            for k, r in enumerate(rows)
            if r[1] != "5301" and r[3] == injected_seq and r[2].strip("·") == flag
        )
        reply = next(r for r in rows[idx + 1 :] if r[1] == "5301")
        assert reply[4] == rcv_nxt and reply[5] == "0" and "R" not in reply[2], (flag, reply)


def test_malformed_segments_are_dropped_and_counted(bed: Bed) -> None:
    i, c, s, files = run_injection(bed, 5302, MALFORMED, "malf")
    assert s["stats"]["malformed_dropped"] == len(MALFORMED), s["stats"]
    assert s["stats"]["edge"]["malformed_dropped"] == len(MALFORMED)
