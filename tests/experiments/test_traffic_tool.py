"""The traffic tool: data integrity end to end (sha256 at both ends), for every traffic kind.

The network tests run the tool exactly as the runner does: copied to the hosts of a real
two_path testbed through the Host interface, started there, the server's "listening" line
awaited. The expected hash is also computed here, independently of both ends.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.metrics import run_metrics
from experiments.traffic import Payload, TrafficSpec
from testbed.net import Testbed
from testbed.topology import load_topology

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "experiments" / "traffic.py"
# Our stack through the same tool: mptcp_impl imported from this checkout.
US = ["--import-path", str(REPO), "--limits", "subflows=2,add_addr_accepted=2"]


def test_payload_is_deterministic_and_slicing_independent():
    whole = Payload(42).take(300_000)
    p = Payload(42)
    parts = b"".join(p.take(n) for n in (1, 65535, 70000, 3, 164461))
    assert parts == whole and len(whole) == 300_000
    assert Payload(43).take(1000) != whole[:1000]


def test_spec_validation():
    with pytest.raises(ValueError):
        TrafficSpec(kind="bulk").validate()  # neither bytes nor duration
    with pytest.raises(ValueError):
        TrafficSpec(kind="stream", duration_s=1).validate()  # no rate


def test_tampered_data_is_not_intact():
    ok = {"bytes_received": 10, "received_sha256": "a", "sent_sha256": "e3", "bytes_sent": 0}
    srv = {"bytes_sent": 10, "sent_sha256": "a", "received_sha256": "e3", "bytes_received": 0}
    kw = dict(
        label="x",
        stack="tcp",
        point=0,
        point_values={},
        rep=1,
        direction="download",
        events=[],
        event_times=[],
        path_rates={},
        warmup_s=0.0,
        window_s=1.0,
    )
    assert run_metrics(client=ok, server=srv, **kw).intact
    assert not run_metrics(client={**ok, "received_sha256": "b"}, server=srv, **kw).intact
    assert not run_metrics(client=ok, server={**srv, "bytes_sent": 11}, **kw).intact


@pytest.fixture(scope="module")
def testbed(tmp_path_factory):
    work = tmp_path_factory.mktemp("traffic")
    with Testbed(load_topology("two_path"), workdir=work / "tb") as tb:
        tb.kernel_mptcp(
            "client", endpoints=[(tb.addr("client", "lte"), tb.intf("client", "lte"), "subflow")]
        )
        tb.kernel_mptcp("server")
        yield tb, work


def exchange(
    tb, work: Path, name: str, proto: str, client_args: list[str], extra: list[str] = ()
) -> tuple[dict, dict]:
    """extra: arguments for both ends (our stack's options)."""
    server, client = tb.host("server"), tb.host("client")
    # Our stack listens on the server's own address (a packet endpoint, not a kernel socket).
    listen = tb.addr("server", "server") if proto == "userspace" else "0.0.0.0"
    # Its own port: the kernel tests' connections leave TIME-WAIT sockets on 5301, and our
    # stack reserves its port with a kernel socket bound to it.
    port = 5311 if proto == "userspace" else 5301
    tool_s, tool_c = work / name / "s" / "traffic.py", work / name / "c" / "traffic.py"
    server.put(TOOL, tool_s)
    client.put(TOOL, tool_c)
    out_s, out_c = work / name / "server.json", work / name / "client.json"
    srv = server.start(
        [
            sys.executable,
            str(tool_s),
            "server",
            "--listen",
            f"{listen}:{port}",
            "--proto",
            proto,
            "--once",
            "--out",
            str(out_s),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=work / name / "server.stderr",
    )
    try:
        srv.wait_for_line(r"^listening ", stream="stdout", timeout=15)
        res = client.run(
            [
                sys.executable,
                str(tool_c),
                "client",
                "--connect",
                f"{tb.addr('server', 'server')}:{port}",
                "--proto",
                proto,
                "--out",
                str(out_c),
                *client_args,
                *extra,
            ],
            timeout=60,
        )
        assert srv.wait(timeout=20) == 0
    finally:
        if srv.returncode is None:
            srv.stop()
    assert res.returncode == 0, res.stderr
    return json.loads(out_c.read_text()), json.loads(out_s.read_text())


@pytest.mark.net
@pytest.mark.parametrize("proto", ["tcp", "mptcp"])
def test_bulk_upload_integrity(testbed, proto):
    tb, work = testbed
    n = 3_000_000
    c, s = exchange(
        tb,
        work,
        f"bulk-{proto}",
        proto,
        ["--kind", "bulk", "--direction", "upload", "--bytes", str(n), "--seed", "9"],
    )
    expected = hashlib.sha256(Payload(9).take(n)).hexdigest()
    assert c["bytes_sent"] == s["bytes_received"] == n
    assert c["sent_sha256"] == s["received_sha256"] == expected
    assert not c["error"] and not s["error"]
    assert s["samples"] and s["goodput_mbit"] > 1
    if proto == "mptcp":
        assert s["mptcp_fallback"] is False and s["max_subflows"] == 2
        assert sender_cwnd(c) == 2 and not s["cwnd_samples"]  # the kernel's, per subflow


@pytest.mark.net
def test_reqresp_and_stream_integrity(testbed):
    tb, work = testbed
    c, s = exchange(
        tb,
        work,
        "rr",
        "mptcp",
        [
            "--kind",
            "reqresp",
            "--req-bytes",
            "500",
            "--resp-bytes",
            "20000",
            "--count",
            "5",
            "--seed",
            "4",
        ],
    )
    # Each end has its own generator with the same seed: the client's requests, the server's
    # responses, each in exchange order.
    creq, sresp = Payload(4), Payload(4)
    want_req = hashlib.sha256(b"".join(creq.take(500) for _ in range(5))).hexdigest()
    want_resp = hashlib.sha256(b"".join(sresp.take(20000) for _ in range(5))).hexdigest()
    assert c["sent_sha256"] == s["received_sha256"] == want_req
    assert s["sent_sha256"] == c["received_sha256"] == want_resp
    assert len(c["latencies_ms"]) == 5 and min(c["latencies_ms"]) >= 19  # >= one wifi RTT

    c, s = exchange(
        tb,
        work,
        "stream",
        "tcp",
        ["--kind", "stream", "--rate-mbit", "4", "--duration", "2", "--seed", "5"],
    )
    assert c["received_sha256"] == s["sent_sha256"] and c["bytes_received"] == s["bytes_sent"]
    # Pacing never sends ahead of 4 Mbit/s (plus its 10 ms slice), however idle the machine; a
    # loaded one may send less, so the receiver is compared with what this sender managed.
    sent_mbit = s["bytes_sent"] * 8 / 1e6 / 2.0
    assert sent_mbit <= 4.0 * 2.01 / 2.0 + 1e-9, sent_mbit
    assert 0.75 * sent_mbit <= c["goodput_mbit"] <= 4.6, (c["goodput_mbit"], sent_mbit)


def sender_cwnd(report: dict) -> int:
    """How many subflows the sender's congestion-window samples show, checked to be windows
    a TCP can have (at least one segment, at most the 64 MB no test here comes near)."""
    samples = report["cwnd_samples"]
    assert samples, "no cwnd sample from the sender"
    for _, by_sf in samples:
        assert all(1000 <= w <= 64 << 20 for w in by_sf.values()), by_sf
    return max(len(by_sf) for _, by_sf in samples)


def both_subflows(report: dict) -> dict[str, int]:
    """The receiver's last per-subflow byte counts, by the client's address."""
    _, last = report["subflow_samples"][-1]
    by_addr: dict[str, int] = {}
    for key, n in last.items():
        a, b = (end.rsplit(":", 1)[0] for end in key.split("->"))
        addr = a if a.startswith(("10.0.1.", "10.0.2.")) else b
        by_addr[addr] = by_addr.get(addr, 0) + n
    return by_addr


@pytest.mark.net
@pytest.mark.parametrize("direction", ["upload", "download"])
def test_userspace_bulk_integrity_over_both_paths(testbed, direction):
    # Our stack at both ends, measured by the same code as the kernel's: 2 s each way, the
    # client joining from lte on its own (the default: every other address). By duration, not
    # by bytes: a few MB fit in our stack's buffers at once, the sender's close follows at
    # once, and a connection that is closing refuses joins (as Linux's mptcp_finish_join).
    tb, work = testbed
    c, s = exchange(
        tb,
        work,
        f"us-bulk-{direction}",
        "userspace",
        ["--kind", "bulk", "--direction", direction, "--duration", "2", "--seed", "6"],
        US,
    )
    sender, receiver = (c, s) if direction == "upload" else (s, c)
    n = sender["bytes_sent"]
    expected = hashlib.sha256(Payload(6).take(n)).hexdigest()
    assert not c["error"] and not s["error"], (c["error"], s["error"])
    assert n > 2_000_000 and receiver["bytes_received"] == n
    assert sender["sent_sha256"] == receiver["received_sha256"] == expected
    assert receiver["mptcp_fallback"] is False and receiver["max_subflows"] == 2
    assert receiver["samples"] and receiver["goodput_mbit"] > 1
    by_addr = both_subflows(receiver)
    assert set(by_addr) == {"10.0.1.1", "10.0.2.1"}, by_addr
    # Every byte over one subflow or the other (the client's header rides along upstream, and
    # data sent again on the other subflow is counted on both, as the kernel's counters do).
    assert all(v > 50_000 for v in by_addr.values()), by_addr
    assert n <= sum(by_addr.values()) <= n * 1.05 + 1000, by_addr
    # The connection's own view rides along: the MIB of a real MP_CAPABLE + MP_JOIN.
    mib = receiver["stack_info"]["mptcp"]["mib"]
    assert mib.get("MPTcpExtMPJoinSynTx", 0) + mib.get("MPTcpExtMPJoinSynRx", 0) == 1, mib
    # our stack's own congestion windows, per subflow, from the sender only
    assert sender_cwnd(sender) == 2 and not receiver["cwnd_samples"]


@pytest.mark.net
def test_userspace_reqresp_and_stream_integrity(testbed):
    tb, work = testbed
    c, s = exchange(
        tb,
        work,
        "us-rr",
        "userspace",
        ["--kind", "reqresp", "--req-bytes", "500", "--resp-bytes", "20000", "--count", "5"],
        US,
    )
    creq, sresp = Payload(1), Payload(1)
    assert c["sent_sha256"] == s["received_sha256"]
    assert c["sent_sha256"] == hashlib.sha256(creq.take(2500)).hexdigest()
    assert s["sent_sha256"] == c["received_sha256"]
    assert c["received_sha256"] == hashlib.sha256(sresp.take(100_000)).hexdigest()
    assert len(c["latencies_ms"]) == 5 and min(c["latencies_ms"]) >= 19

    c, s = exchange(
        tb,
        work,
        "us-stream",
        "userspace",
        ["--kind", "stream", "--rate-mbit", "4", "--duration", "2", "--direction", "upload"],
        US,
    )
    assert c["sent_sha256"] == s["received_sha256"] and c["bytes_sent"] == s["bytes_received"]
    sent_mbit = c["bytes_sent"] * 8 / 1e6 / 2.0
    assert sent_mbit <= 4.0 * 2.01 / 2.0 + 1e-9, sent_mbit
    assert 0.75 * sent_mbit <= s["goodput_mbit"] <= 4.6, (s["goodput_mbit"], sent_mbit)
