"""IPv6, and IPv4 beside IPv6 in one MPTCP connection, with Linux, both ways.

The dual-homed server topology with IPv6 on every link (``ip = ["4", "6"]``): the client has
10.0.1.1 and fd00:0:1::1, the server 10.0.4.2 / fd00:0:4::2 on path a and 10.0.5.2 / fd00:0:5::2
on path b. Linux's side of a mixed connection is an AF_INET6 socket (on ``::``, or connected to
a v4-mapped address): Linux keeps an AF_INET socket's subflows IPv4.

- TCP alone over IPv6 (the edge without MPTCP), both ways.
- IPv6 only: a Linux server announces its second IPv6 address, our client joins it; our server
  announces its second IPv6 address with a port (ADD_ADDR of 30 bytes: on a pure ACK without
  timestamps), a Linux client joins it.
- Mixed: our client connects over IPv4 (to a v4-mapped address) and joins the IPv6 address a
  Linux server announces; our client connects over IPv6 and joins the IPv4 address Linux
  announces; a Linux client connects over IPv4 and joins the IPv6 address our dual-stack server
  announces; ours both sides with an IPv6 ADD_ADDR with a port, which goes without timestamps
  (Linux 6.18 does not send such an ADD_ADDR on a timestamp connection: it counts
  AddAddrTxDrop, shown by a test of its own).

Each run: sha256 of the stream intact, Linux's counters (nstat) show the ADD_ADDR and the join,
ours show their side, nothing counted as an error on either side.
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
    ours_client,
    ours_server,
    tshark,
)
from .test_two_path import check_linux, check_ours

pytestmark = pytest.mark.net

N = 2 * MB
SETTINGS = {
    "ip": ["4", "6"],
    "links.a.rate_mbit": 40,
    "links.a.queue_pkts": 200,
    "links.b.rate_mbit": 20,
    "links.b.queue_pkts": 200,
}


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    yield from make_bed("dual_homed_server", SETTINGS, tmp_path_factory, "ipv6")


def br(addr: str) -> str:
    """An address as HOST in HOST:PORT."""
    return f"[{addr}]" if ":" in addr else addr


def addr_of(endpoint: str) -> str:
    """The address of a subflow's "ADDR:PORT" (IPv6 unbracketed, as our JSON has it)."""
    return endpoint.rpartition(":")[0].strip("[]")


def families(mp: dict, key: str) -> list[str]:
    return sorted("6" if ":" in addr_of(s[key]) else "4" for s in mp["subflows"])


def check_transfer(c: dict, s: dict, n: int = N) -> None:
    assert c["_rc"] == 0 and s["_rc"] == 0, (c.get("error"), s.get("error"), c.get("_stderr"))
    assert c["sha256"] == s["sha256"] == pattern_sha256(n)


# ------------------------------------------------------------------------- TCP alone


def test_tcp_over_ipv6_ours_to_linux_and_back(bed: Bed) -> None:
    srv6 = bed.tb.addr6("server", "a")
    k = linux_server(bed, "server", "[::]", 5700, "k_srv_tcp6", "--tcp")
    c = bed.result(ours_client(bed, "client", br(srv6), 5700, N, "u_cli_tcp6", "--tcp-only"))
    s = bed.result(k)
    check_transfer(c, s)
    assert c["local"][0] == bed.tb.addr6("client", "client")
    assert c["stats"]["malformed_dropped"] == 0 and c["stats"]["edge"]["malformed_dropped"] == 0

    u = ours_server(bed, "server", br(srv6), 5701, "u_srv_tcp6", "--tcp-only")
    rules = bed.host("server").run(["nft", "list", "ruleset"]).stdout
    assert "table ip6 mptcplab_" in rules and f"ip6 daddr {srv6} tcp dport 5701 drop" in rules
    c = bed.result(linux_client(bed, "client", br(srv6), 5701, N, "k_cli_tcp6", "--tcp"))
    s = bed.result(u)
    check_transfer(c, s)
    assert s["peer"][0] == bed.tb.addr6("client", "client")
    # the fence (an ip6 table beside the ip one while IPv6 was in use) is gone with the process
    for host in ("client", "server"):
        assert "mptcplab_" not in bed.host(host).run(["nft", "list", "tables"]).stdout


# ------------------------------------------------------------------------- IPv6 only


def test_ipv6_linux_server_announces_ours_joins(bed: Bed) -> None:
    tb = bed.tb
    a6, b6 = tb.addr6("server", "a"), tb.addr6("server", "b")
    tb.kernel_mptcp("server", endpoints=[(b6, tb.intf("server", "b"), "signal")])
    before = bed.nstat("server")
    k = linux_server(bed, "server", "[::]", 5702, "k_srv_v6")
    c = bed.result(ours_client(bed, "client", br(a6), 5702, N, "u_cli_v6"))
    s = bed.result(k)
    delta = counters_delta(before, bed.nstat("server"))
    mp = c["mptcp"]
    print("v6, linux announces:", c["goodput_mbit"], "Mbit/s", mp["subflows"], delta)
    check_transfer(c, s)
    assert {addr_of(x["remote"]) for x in mp["subflows"]} == {a6, b6}, c["_stderr"]
    assert families(mp, "local") == ["6", "6"]
    check_linux(
        delta,
        {
            "MPTcpExtMPCapableSYNRX": 1,
            "MPTcpExtAddAddrTx": 1,
            "MPTcpExtEchoAdd": 1,
            "MPTcpExtMPJoinSynRx": 1,
            "MPTcpExtMPJoinAckRx": 1,
        },
    )
    check_ours(mp, {"AddAddr": 1, "EchoAddTx": 1, "MPJoinSynTx": 1, "MPJoinSynAckRx": 1})


def test_ipv6_ours_announces_with_port_linux_joins(bed: Bed) -> None:
    """Our ADD_ADDR of an IPv6 address with port and HMAC is 30 bytes: beside timestamps (12)
    it does not fit, so it goes on a pure ACK without them; Linux takes it and joins."""
    tb = bed.tb
    a6, b6 = tb.addr6("server", "a"), tb.addr6("server", "b")
    tb.kernel_mptcp("client", limits={"subflows": 2, "add_addr_accepted": 2}, endpoints=[])
    before = bed.nstat("client")
    cap = bed.capture("cap_v6port", ["server"])
    u = ours_server(bed, "server", br(a6), 5703, "u_srv_v6", "--endpoint", f"{b6},signal,port=5713")
    c = bed.result(linux_client(bed, "client", br(a6), 5703, N, "k_cli_v6"))
    s = bed.result(u)
    files = cap.stop()
    delta = counters_delta(before, bed.nstat("client"))
    mp = s["mptcp"]
    print("v6, we announce with a port:", mp["subflows"], delta)
    check_transfer(c, s)
    assert {x["local"] for x in mp["subflows"]} == {f"{a6}:5703", f"{b6}:5713"}, mp["subflows"]
    check_linux(
        delta,
        {
            "MPTcpExtMPCapableSYNTX": 1,
            "MPTcpExtMPCapableSYNACKRX": 1,
            "MPTcpExtAddAddr": 1,  # our HMAC checked by Linux
            "MPTcpExtPortAdd": 1,
            "MPTcpExtEchoAddTx": 1,
            "MPTcpExtMPJoinSynTx": 1,
            "MPTcpExtMPJoinSynAckRx": 1,
        },
    )
    check_ours(mp, {"AddAddrTx": 1, "EchoAdd": 1, "MPJoinSynRx": 1, "MPJoinAckRx": 1})
    # on the wire (tshark): our ADD_ADDR carries the address and port, and no timestamps
    rows = [
        r
        for f in files
        for r in tshark(
            f,
            f"ipv6.src == {a6} && tcp.options.mptcp.subtype == 3",
            "tcp.options.mptcp.ipv6",
            "tcp.options.mptcp.port",
            "tcp.options.timestamp.tsval",
            "tcp.len",
            two_pass=False,
        )
    ]
    assert rows, "no ADD_ADDR of ours in the capture"
    assert [r[:2] for r in rows] == [[b6, "5713"]], rows
    assert rows[0][2] == "" and rows[0][3] == "0", rows  # a pure ACK without timestamps


# ------------------------------------------------------------------------- IPv4 and IPv6


def test_mixed_ours_v4_joins_linux_v6(bed: Bed) -> None:
    """Our client connects to a v4-mapped address (IPv4 on the wire), Linux announces an IPv6
    address (28 bytes: beside timestamps, alone on a pure ACK), we join it over IPv6 from the
    address routing picks."""
    tb = bed.tb
    a4, b6 = tb.addr("server", "a"), tb.addr6("server", "b")
    tb.kernel_mptcp("server", endpoints=[(b6, tb.intf("server", "b"), "signal")])
    before = bed.nstat("server")
    k = linux_server(bed, "server", "[::]", 5704, "k_srv_mixed")
    c = bed.result(ours_client(bed, "client", f"[::ffff:{a4}]", 5704, N, "u_cli_mixed"))
    s = bed.result(k)
    delta = counters_delta(before, bed.nstat("server"))
    mp = c["mptcp"]
    print("mixed, linux announces v6:", mp["subflows"], delta)
    check_transfer(c, s)
    assert {x["remote"] for x in mp["subflows"]} == {f"{a4}:5704", f"{b6}:5704"}, mp["subflows"]
    assert families(mp, "local") == ["4", "6"]
    assert s["kernel"]["is_mptcp"], s["kernel"]
    check_linux(
        delta,
        {
            "MPTcpExtMPCapableSYNRX": 1,
            "MPTcpExtAddAddrTx": 1,
            "MPTcpExtEchoAdd": 1,
            "MPTcpExtMPJoinSynRx": 1,
            "MPTcpExtMPJoinAckRx": 1,
        },
    )
    check_ours(mp, {"AddAddr": 1, "EchoAddTx": 1, "MPJoinSynTx": 1, "MPJoinSynAckRx": 1})


def test_linux_does_not_send_an_ipv6_add_addr_with_port_beside_timestamps(bed: Bed) -> None:
    """What Linux (6.18) does with a signal endpoint of an IPv6 address and a port on a
    connection with timestamps: ADD_ADDR (30 bytes) + timestamps (12) exceed 40, and Linux
    does not send it (AddAddrTxDrop); the connection goes on over its first subflow. So the
    ADD_ADDR without timestamps is only ever ours (the next test: our client takes it)."""
    tb = bed.tb
    a4, b6 = tb.addr("server", "a"), tb.addr6("server", "b")
    tb.kernel_mptcp("server", endpoints=[(b6, tb.intf("server", "b"), "port 5714 signal")])
    before = bed.nstat("server")
    k = linux_server(bed, "server", "[::]", 5708, "k_srv_port")
    c = bed.result(ours_client(bed, "client", a4, 5708, N, "u_cli_port"))
    s = bed.result(k)
    delta = counters_delta(before, bed.nstat("server"))
    print("linux, v6 signal endpoint with a port:", c["mptcp"]["subflows"], delta)
    check_transfer(c, s)
    assert delta.get("MPTcpExtAddAddrTx", 0) == 0 and delta.get("MPTcpExtAddAddrTxDrop", 0) >= 1
    assert len(c["mptcp"]["subflows"]) == 1


def test_mixed_ours_v4_joins_ours_v6_announced_without_timestamps(bed: Bed) -> None:
    """Ours both sides: the server on :: announces an IPv6 address with a port (a pure ACK
    without timestamps on a timestamp connection), the client (connected over IPv4) takes it
    as Linux takes ours, echoes it and joins that address and port over IPv6. The server sends
    through raw sockets (IPv4 and IPv6) instead of AF_PACKET."""
    tb = bed.tb
    a4, b6 = tb.addr("server", "a"), tb.addr6("server", "b")
    u = ours_server(
        bed,
        "server",
        "[::]",
        5707,
        "u_srv_port",
        "--endpoint",
        f"{b6},signal,port=5717",
        "--sender",
        "raw",  # (the raw IPv4 and IPv6 senders, one MSS per send)
    )
    c = bed.result(ours_client(bed, "client", a4, 5707, N, "u_cli_port6"))
    s = bed.result(u)
    print("ours both, v6 announced with a port:", c["mptcp"]["subflows"])
    check_transfer(c, s)
    mp = c["mptcp"]
    assert {x["remote"] for x in mp["subflows"]} == {f"{a4}:5707", f"{b6}:5717"}, mp["subflows"]
    assert families(mp, "local") == ["4", "6"]
    check_ours(
        mp,
        {"AddAddr": 1, "PortAdd": 1, "EchoAddTx": 1, "MPJoinSynTx": 1, "MPJoinSynAckRx": 1},
    )
    check_ours(s["mptcp"], {"AddAddrTx": 1, "EchoAdd": 1, "MPJoinSynRx": 1, "MPJoinAckRx": 1})
    assert c["stats"]["paws_dropped"] == 0
    assert s["stats"]["sender"] == "raw" and s["stats"]["edge"]["send_dropped"] == 0


def test_mixed_ours_v6_joins_linux_v4(bed: Bed) -> None:
    """The initial subflow over IPv6, the join over IPv4 (Linux announces its IPv4 address)."""
    tb = bed.tb
    a6, b4 = tb.addr6("server", "a"), tb.addr("server", "b")
    tb.kernel_mptcp("server", endpoints=[(b4, tb.intf("server", "b"), "signal")])
    before = bed.nstat("server")
    k = linux_server(bed, "server", "[::]", 5705, "k_srv_mixed6")
    c = bed.result(ours_client(bed, "client", br(a6), 5705, N, "u_cli_mixed6"))
    s = bed.result(k)
    delta = counters_delta(before, bed.nstat("server"))
    mp = c["mptcp"]
    print("mixed, v6 first, linux announces v4:", mp["subflows"], delta)
    check_transfer(c, s)
    assert {addr_of(x["remote"]) for x in mp["subflows"]} == {a6, b4}, mp["subflows"]
    assert families(mp, "local") == ["4", "6"]
    check_linux(delta, {"MPTcpExtAddAddrTx": 1, "MPTcpExtMPJoinSynRx": 1, "MPTcpExtMPJoinAckRx": 1})
    check_ours(mp, {"AddAddr": 1, "MPJoinSynTx": 1, "MPJoinSynAckRx": 1})


def test_mixed_linux_v4_joins_ours_v6(bed: Bed) -> None:
    """A Linux client (AF_INET6 socket, v4-mapped destination: IPv4 on the wire) joins the IPv6
    address our dual-stack server (on ::) announces."""
    tb = bed.tb
    a4, b6 = tb.addr("server", "a"), tb.addr6("server", "b")
    tb.kernel_mptcp("client", limits={"subflows": 2, "add_addr_accepted": 2}, endpoints=[])
    before = bed.nstat("client")
    u = ours_server(bed, "server", "[::]", 5706, "u_srv_mixed", "--endpoint", f"{b6},signal")
    c = bed.result(linux_client(bed, "client", f"[::ffff:{a4}]", 5706, N, "k_cli_mixed"))
    s = bed.result(u)
    delta = counters_delta(before, bed.nstat("client"))
    mp = s["mptcp"]
    print("mixed, we announce v6:", mp["subflows"], delta)
    check_transfer(c, s)
    assert {addr_of(x["local"]) for x in mp["subflows"]} == {a4, b6}, mp["subflows"]
    assert families(mp, "remote") == ["4", "6"]
    check_linux(
        delta,
        {
            "MPTcpExtMPCapableSYNTX": 1,
            "MPTcpExtMPCapableSYNACKRX": 1,
            "MPTcpExtAddAddr": 1,
            "MPTcpExtEchoAddTx": 1,
            "MPTcpExtMPJoinSynTx": 1,
            "MPTcpExtMPJoinSynAckRx": 1,
        },
    )
    check_ours(mp, {"AddAddrTx": 1, "EchoAdd": 1, "MPJoinSynRx": 1, "MPJoinAckRx": 1})
