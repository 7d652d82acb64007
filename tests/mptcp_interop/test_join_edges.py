"""MP_CAPABLE's flag C against Linux (issue 18, defect 8), on ctrl_plane (dual-homed client
and server): "the sender of this option will not accept additional MPTCP subflows to the source
address and port" (RFC 8684 3.1).

A Linux server with ``net.mptcp.allow_join_initial_addr_port=0`` (set in its namespace) puts
flag C on its MP_CAPABLE and announces a signal endpoint: our client, with a ``subflow``
endpoint that would otherwise join the server's initial address, must not join it and must
join the announced one. The same with the roles swapped: our server with
``--allow-join-initial-addr-port 0`` sends flag C, and a Linux client with a ``subflow``
endpoint joins only the address we announce. Each has its control without the flag (the
``subflow`` endpoint then joins the initial address too), so the flag is what differs.

Linux 6.18 itself accepts a join to its initial address even with the sysctl at 0 (before the
fix our client's c2 -> a join completed there and carried data: MPJoinAckRx 2): what the test
checks is that we never send it, as RFC 8684 says the receiver of flag C must not.
"""

from __future__ import annotations

import pytest

from mptcp_impl.cli import pattern_sha256

from .conftest import MB, Bed, linux_client, make_bed, ours_server
from .test_ctrl_plane import addrs, finish, linux, linux_pm, ours, run_ours_client

pytestmark = pytest.mark.net


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    yield from make_bed("ctrl_plane", {}, tmp_path_factory, "join_edges")


def pairs(res: dict) -> list[tuple[str, str]]:
    """(local address, remote address) of every subflow in our report, sorted."""
    return sorted(
        (x["local"].split(":")[0], x["remote"].split(":")[0]) for x in res["mptcp"]["subflows"]
    )


@pytest.mark.parametrize("case", ["c_flag", "c_flag_no_add_addr", "control"])
def test_linux_server_c_flag_our_client_joins_only_the_announced_address(
    bed: Bed, case: str
) -> None:
    """``c_flag_no_add_addr``: our client accepts no ADD_ADDR (Linux's default limits): as in
    Linux 6.18's C-flag case, that one announcement is taken anyway and our ``subflow``
    endpoint (c2) joins it, since it may not join the initial address."""
    A = addrs(bed)
    n = 2 * MB
    deny = case != "control"
    port = 5690 + ["c_flag", "c_flag_no_add_addr", "control"].index(case)
    extra = ["--limits", "subflows=2,add_addr_accepted=0"] if case == "c_flag_no_add_addr" else []
    h = bed.host("server")
    linux_pm(bed, "server", [("b", "signal")], subflows=2, accepted=2)
    h.run(["sysctl", "-qw", f"net.mptcp.allow_join_initial_addr_port={int(not deny)}"])
    try:
        srv, cli, before = run_ours_client(
            bed, port, n, case, "--endpoint", f"{A['c2']},subflow", *extra
        )
        c, s, d = finish(bed, "server", srv, cli, before)
    finally:
        h.run(["sysctl", "-qw", "net.mptcp.allow_join_initial_addr_port=1"])
    print("our client,", case, pairs(c))
    assert c["_rc"] == 0 and c["sha256"] == s["sha256"] == pattern_sha256(n), c.get("error")
    # the initial subflow and a join to b (from the initial address, as Linux's routing would
    # pick it; from c2 in the C-flag case); the c2 endpoint's join to a only without flag C
    want = {
        "c_flag": [(A["c1"], A["a"]), (A["c1"], A["b"])],
        "c_flag_no_add_addr": [(A["c1"], A["a"]), (A["c2"], A["b"])],
        "control": [(A["c1"], A["a"]), (A["c1"], A["b"]), (A["c2"], A["a"])],
    }[case]
    assert pairs(c) == sorted(want)
    joins = 1 if deny else 2
    linux(d, {"MPJoinSynRx": joins, "MPJoinAckRx": joins, "AddAddrTx": 1, "MPJoinRejected": 0})
    ours(c, {"MPJoinSynTx": joins, "MPJoinSynAckRx": joins, "AddAddr": 1, "MPRstRx": 0})


@pytest.mark.parametrize("deny", [True, False], ids=["c_flag", "control"])
def test_our_server_c_flag_linux_client_joins_only_the_announced_address(
    bed: Bed, deny: bool
) -> None:
    A = addrs(bed)
    n = 2 * MB
    linux_pm(bed, "client", [("c2", "subflow")], subflows=2, accepted=2)
    before = bed.nstat("client")
    srv = ours_server(
        bed, "server", A["a"], 5694 + deny, f"u_srv_cflag{int(deny)}",
        "--allow-join-initial-addr-port", str(int(not deny)), "--endpoint", f"{A['b']},signal",
    )  # fmt: skip
    cli = linux_client(bed, "client", A["a"], 5694 + deny, n, f"k_cli_cflag{int(deny)}")
    c, s, d = finish(bed, "client", srv, cli, before)
    print("our server, flag C" if deny else "control", pairs(s))
    assert s["_rc"] == 0 and c["sha256"] == s["sha256"] == pattern_sha256(n), s.get("error")
    # (our side's pairs: our address first) Linux's c2 endpoint joins a only without flag C
    want = [(A["a"], A["c1"]), (A["b"], A["c1"])] + ([] if deny else [(A["a"], A["c2"])])
    assert pairs(s) == sorted(want)
    joins = 1 if deny else 2
    ours(s, {"MPJoinSynRx": joins, "MPJoinAckRx": joins, "MPJoinRejected": 0, "AddAddrTx": 1})
    linux(d, {"MPJoinSynTx": joins, "AddAddr": 1})
