"""IPv6 subflow endpoints with Linux: the multi-homed client of two_path with IPv6 on every link
(client fd00:0:1::1 on wifi and fd00:0:2::1 on lte, server fd00:0:5::2).

- Our client over IPv6 to a Linux server: its default endpoints (every other global address of
  its namespace, IPv4 ones too) join only from the other IPv6 address (Linux's family rule).
- A Linux client with an IPv6 ``subflow`` endpoint (``ip mptcp endpoint add fd00:0:2::1 dev
  client-eth1 subflow``) to our dual-stack server on ``::``: Linux joins from it.
"""

from __future__ import annotations

import pytest

from testkit.transfer import counters_delta

from .conftest import (
    Bed,
    linux_client,
    linux_server,
    make_bed,
    ours_client,
    ours_server,
)
from .test_ipv6 import N, addr_of, check_transfer
from .test_two_path import check_linux, check_ours

pytestmark = pytest.mark.net

SETTINGS = {
    "ip": ["4", "6"],
    "links.wifi.rate_mbit": 40,
    "links.wifi.delay_ms": 10,
    "links.wifi.queue_pkts": 200,
    "links.lte.rate_mbit": 20,
    "links.lte.delay_ms": 25,
    "links.lte.queue_pkts": 200,
}


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    yield from make_bed("two_path", SETTINGS, tmp_path_factory, "ipv6_two_path")


def test_ours_joins_from_its_other_ipv6_address(bed: Bed) -> None:
    tb = bed.tb
    w6, l6, s6 = tb.addr6("client", "wifi"), tb.addr6("client", "lte"), tb.addr6("server", "server")
    tb.kernel_mptcp("server", endpoints=[])
    before = bed.nstat("server")
    k = linux_server(bed, "server", "[::]", 5720, "k_srv_v6ep")
    c = bed.result(ours_client(bed, "client", f"[{s6}]", 5720, N, "u_cli_v6ep", "--bind", w6))
    s = bed.result(k)
    delta = counters_delta(before, bed.nstat("server"))
    mp = c["mptcp"]
    print("ours joins from its other v6:", mp["subflows"], delta)
    check_transfer(c, s)
    assert sorted(addr_of(x["local"]) for x in mp["subflows"]) == sorted([w6, l6]), mp
    assert {addr_of(x["remote"]) for x in mp["subflows"]} == {s6}
    check_linux(
        delta, {"MPTcpExtMPCapableSYNRX": 1, "MPTcpExtMPJoinSynRx": 1, "MPTcpExtMPJoinAckRx": 1}
    )
    check_ours(mp, {"MPJoinSynTx": 1, "MPJoinSynAckRx": 1, "MPJoinSynTxBindErr": 0})


def test_linux_ipv6_subflow_endpoint_joins_ours(bed: Bed) -> None:
    tb = bed.tb
    w6, l6, s6 = tb.addr6("client", "wifi"), tb.addr6("client", "lte"), tb.addr6("server", "server")
    tb.kernel_mptcp("client", endpoints=[(l6, tb.intf("client", "lte"), "subflow")])
    before = bed.nstat("client")
    u = ours_server(bed, "server", "[::]", 5721, "u_srv_v6ep")
    c = bed.result(linux_client(bed, "client", f"[{s6}]", 5721, N, "k_cli_v6ep", "--bind", w6))
    s = bed.result(u)
    delta = counters_delta(before, bed.nstat("client"))
    mp = s["mptcp"]
    print("linux joins from its v6 endpoint:", mp["subflows"], delta)
    check_transfer(c, s)
    assert sorted(addr_of(x["remote"]) for x in mp["subflows"]) == sorted([w6, l6]), mp
    check_linux(
        delta,
        {"MPTcpExtMPCapableSYNTX": 1, "MPTcpExtMPJoinSynTx": 1, "MPTcpExtMPJoinSynAckRx": 1},
    )
    check_ours(mp, {"MPCapableSYNRX": 1, "MPJoinSynRx": 1, "MPJoinAckRx": 1})
