"""ADD_ADDR with Linux, both ways, on a dual-homed server (topologies/dual_homed_server.toml).

A Linux server with a ``signal`` endpoint on its second address announces it; our client echoes
the ADD_ADDR (after checking its HMAC) and joins that address. Our server with ``--endpoint
ADDR,signal`` announces its second address; a Linux client accepts it (HMAC checked by Linux)
and joins. Each run also goes through tshark (``wire_check``): every option we sent decoded,
no expert info on our segments, tshark's token of our key is ours, and the MP_JOIN tokens match.
"""

from __future__ import annotations

import pytest

from mptcp_impl.cli import pattern_sha256
from testkit.transfer import counters_delta

from .conftest import (
    MB,
    Bed,
    linux_client,
    linux_server,
    make_bed,
    merged,
    ours_client,
    ours_server,
    wire_check,
)
from .test_two_path import check_linux, check_ours

pytestmark = pytest.mark.net

RATES = {
    "links.a.rate_mbit": 40,
    "links.a.queue_pkts": 200,
    "links.b.rate_mbit": 20,
    "links.b.queue_pkts": 200,
}
MP_CAPABLE, MP_JOIN, DSS, ADD_ADDR = 0, 1, 2, 3


def carries_its_share(
    subflows: list[dict], link_of: dict[str, str], n: int, addr_key: str, bytes_key: str
) -> bool:
    """Each subflow carried at least half of its path's rate share of the ``n`` bytes (a join
    that came late or a scheduler that starves a path fails this; measured: 24-34% of 4 MB on
    the 20 Mbit/s path, whose share is 1/3)."""
    total = RATES["links.a.rate_mbit"] + RATES["links.b.rate_mbit"]
    for x in subflows:
        link = link_of[x[addr_key].rsplit(":", 1)[0]]
        if x[bytes_key] < 0.5 * n * (RATES[f"links.{link}.rate_mbit"] / total):
            return False
    return True


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    yield from make_bed("dual_homed_server", RATES, tmp_path_factory, "add_addr")


def test_linux_server_announces_ours_joins(bed: Bed) -> None:
    n = 4 * MB
    tb = bed.tb
    a, b = bed.addr("server", "a"), bed.addr("server", "b")
    tb.kernel_mptcp("server", endpoints=[(b, tb.intf("server", "b"), "signal")])
    before = bed.nstat("server")
    cap = bed.capture("cap_la", ["client"])
    srv = linux_server(bed, "server", "0.0.0.0", 5500, "k_srv_signal")
    cli = ours_client(bed, "client", a, 5500, n, "u_cli_join")
    c = bed.result(cli)
    s = bed.result(srv)
    files = cap.stop()
    delta = counters_delta(before, bed.nstat("server"))
    mp = c["mptcp"]
    print("linux announces:", c["goodput_mbit"], "Mbit/s", mp["subflows"], delta)
    assert c["_rc"] == 0 and s["_rc"] == 0, (c.get("error"), s)
    assert c["sha256"] == s["sha256"] == pattern_sha256(n)
    assert {x["remote"].split(":")[0] for x in mp["subflows"]} == {a, b}, c["_stderr"]
    assert carries_its_share(mp["subflows"], {a: "a", b: "b"}, n, "remote", "bytes_sent"), mp[
        "subflows"
    ]
    check_linux(
        delta,
        {
            "MPTcpExtMPCapableSYNRX": 1,
            "MPTcpExtMPCapableACKRX": 1,
            "MPTcpExtAddAddrTx": 1,
            "MPTcpExtEchoAdd": 1,
            "MPTcpExtMPJoinSynRx": 1,
            "MPTcpExtMPJoinAckRx": 1,
        },
    )
    check_ours(mp, {"AddAddr": 1, "EchoAddTx": 1, "MPJoinSynTx": 1, "MPJoinSynAckRx": 1})
    w = wire_check(files[0], {bed.addr("client", "client")}, mp["token"])
    assert {MP_CAPABLE, MP_JOIN, DSS, ADD_ADDR} <= w["subtypes"], w["subtypes"]
    assert w["our_join_tokens"] == w["peer_tokens"], w  # we named the peer's token
    print("tshark: missing_mapping excused (own DSS covers):", w["excused_missing_mapping"])


def test_ours_announces_linux_joins(bed: Bed) -> None:
    n = 4 * MB
    tb = bed.tb
    a, b = bed.addr("server", "a"), bed.addr("server", "b")
    tb.kernel_mptcp("client", limits={"subflows": 2, "add_addr_accepted": 2}, endpoints=[])
    before = bed.nstat("client")
    cap = bed.capture("cap_oa", ["server"])
    srv = ours_server(bed, "server", a, 5501, "u_srv_signal", "--endpoint", f"{b},signal")
    cli = linux_client(bed, "client", a, 5501, n, "k_cli_join")
    c = bed.result(cli)
    s = bed.result(srv)
    files = cap.stop()
    delta = counters_delta(before, bed.nstat("client"))
    mp = s["mptcp"]
    print("we announce:", c["goodput_mbit"], "Mbit/s", mp["subflows"], delta)
    assert c["_rc"] == 0 and s["_rc"] == 0, (c, s.get("error"))
    assert c["sha256"] == s["sha256"] == pattern_sha256(n)
    assert {x["local"].split(":")[0] for x in mp["subflows"]} == {a, b}
    assert carries_its_share(mp["subflows"], {a: "a", b: "b"}, n, "local", "bytes_received"), mp[
        "subflows"
    ]
    check_linux(
        delta,
        {
            "MPTcpExtMPCapableSYNTX": 1,
            "MPTcpExtMPCapableSYNACKRX": 1,
            "MPTcpExtAddAddr": 1,  # our ADD_ADDR's HMAC checked by Linux
            "MPTcpExtEchoAddTx": 1,
            "MPTcpExtMPJoinSynTx": 1,
            "MPTcpExtMPJoinSynAckRx": 1,
        },
    )
    check_ours(
        mp,
        {
            "MPCapableSYNRX": 1,
            "MPCapableACKRX": 1,
            "AddAddrTx": 1,
            "EchoAdd": 1,
            "MPJoinSynRx": 1,
            "MPJoinAckRx": 1,
        },
    )
    pcap = merged(files, bed.workdir / "oa_merged.pcap")
    w = wire_check(pcap, {a, b}, mp["token"])
    assert {MP_CAPABLE, MP_JOIN, DSS, ADD_ADDR} <= w["subtypes"], w["subtypes"]
    assert w["peer_join_tokens"] == {str(int(mp["token"], 16))}, w  # Linux named our token
    # We sent no data: our DATA_FIN is at IDSN + 1 of the key tshark saw.
    assert {d - 1 for d in w["data_fin_dsns"]} == {w["expected_idsn"]}, w
