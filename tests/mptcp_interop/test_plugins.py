"""Research plug-ins in a real run: our client (``python -m mptcp_impl client``) with
``--scheduler``, ``--cc``, ``--pm`` and ``--opportunistic`` against a Linux MPTCP server over
two_path (wifi and lte): the stream arrives intact, and the choice shows in who carried what.
"""

from __future__ import annotations

import pytest

from mptcp_impl.cli import pattern_sha256

from .conftest import MB, Bed, linux_server, make_bed, ours_client

pytestmark = pytest.mark.net

RATES = {
    "links.wifi.rate_mbit": 40,
    "links.wifi.delay_ms": 10,
    "links.wifi.queue_pkts": 200,
    "links.lte.rate_mbit": 20,
    "links.lte.delay_ms": 25,
    "links.lte.queue_pkts": 200,
}

JOINED_ONLY = '''
class JoinedOnly:
    """Everything on joined subflows; the initial one only until a join is up."""

    def pick(self, candidates):
        joined = [s for s in candidates.all if not s.initial]
        if not joined:
            return candidates[0] if candidates else None
        room = [s for s in joined if s in candidates]
        return room[0] if room else None  # wait for the joined subflow
'''


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    for b in make_bed("two_path", RATES, tmp_path_factory, "plugins"):
        b.tb.kernel_mptcp("server", endpoints=[])
        yield b


def run(bed: Bed, port: int, n: int, name: str, *flags: str) -> dict:
    wifi = bed.addr("client", "wifi")
    srv_ip = bed.addr("server", "server")
    srv = linux_server(bed, "server", srv_ip, port, f"k_srv_{name}")
    cli = ours_client(bed, "client", srv_ip, port, n, f"u_cli_{name}", "--bind", wifi, *flags)
    c = bed.result(cli, timeout=120)
    s = bed.result(srv, timeout=30)
    assert c["_rc"] == 0 and s["_rc"] == 0, (c.get("error"), c["_stderr"], s)
    assert c["sha256"] == s["sha256"] == pattern_sha256(n) and s["bytes_received"] == n
    assert s["kernel"]["is_mptcp"] and c["mptcp"]["fallback"] is False
    print(name, c["goodput_mbit"], "Mbit/s", c["mptcp"]["plugins"], c["mptcp"]["subflows"])
    return c["mptcp"]


def sent_by(mp: dict, addr: str) -> int:
    return sum(s["bytes_sent"] for s in mp["subflows"] if s["local"].split(":")[0] == addr)


def test_user_scheduler_file_puts_the_data_on_the_joined_path(bed: Bed, tmp_path) -> None:
    f = tmp_path / "joined.py"
    f.write_text(JOINED_ONLY)
    n = 4 * MB
    mp = run(bed, 5401, n, "joined", "--scheduler", f"{f}:JoinedOnly")
    assert mp["plugins"]["scheduler"] == "JoinedOnly"
    lte = sent_by(mp, bed.addr("client", "lte"))
    wifi = sent_by(mp, bed.addr("client", "wifi"))
    # Before the join (one RTT after the first DATA_ACK) only wifi exists, and how long that
    # takes depends on the machine's load (wifi also carries reinjections): the default
    # scheduler would put about a third of the stream on lte (20 of 60 Mbit/s), this one most.
    assert lte >= 0.6 * n and lte > wifi, (wifi, lte)


def test_redundant_sends_the_stream_on_both_paths(bed: Bed) -> None:
    n = 3 * MB
    mp = run(bed, 5402, n, "redundant", "--scheduler", "redundant")
    lte = sent_by(mp, bed.addr("client", "lte"))
    wifi = sent_by(mp, bed.addr("client", "wifi"))
    # bulk: lte cannot keep up and skips what wifi's copies got acknowledged first (v0)
    assert wifi >= n and lte >= 0.3 * n, (wifi, lte)


@pytest.mark.parametrize("cc", ["lia", "olia", "balia"])
def test_coupled_cc_with_blest_and_penalisation(bed: Bed, cc: str) -> None:
    n = 4 * MB
    port = 5410 + ["lia", "olia", "balia"].index(cc)
    mp = run(bed, port, n, cc, "--cc", cc, "--scheduler", "blest", "--opportunistic", "penalise")
    assert mp["plugins"]["cc"] == cc and mp["plugins"]["scheduler"] == "blest"
    assert len(mp["subflows"]) == 2


def test_pm_none_opens_no_subflow(bed: Bed) -> None:
    mp = run(bed, 5420, 2 * MB, "pm_none", "--pm", "none")
    assert mp["plugins"]["pm"] == "none"
    assert len(mp["subflows"]) == 1


def test_backup_on_loss_opens_lte_when_wifi_is_cut(bed: Bed) -> None:
    """``--pm backup-on-loss``: wifi alone until it times out (cut on its router), then a
    backup subflow from lte that carries the rest."""
    n = 8 * MB
    wifi, lte = bed.addr("client", "wifi"), bed.addr("client", "lte")
    srv_ip = bed.addr("server", "server")
    srv = linux_server(bed, "server", srv_ip, 5430, "k_srv_bol", "--progress", "1")
    cli = ours_client(
        bed, "client", srv_ip, 5430, n, "u_cli_bol", "--bind", wifi, "--pm", "backup-on-loss"
    )
    try:
        srv.wait_for_line("^progress 2$", timeout=60)
        bed.tb.link_down("wifi")
        srv.wait_for_line("^progress 4$", timeout=60)  # lte, opened after the loss, carries on
    finally:
        bed.tb.link_up("wifi")
    c = bed.result(cli, timeout=120)
    s = bed.result(srv, timeout=30)
    assert c["_rc"] == 0 and s["_rc"] == 0, (c.get("error"), c["_stderr"], s)
    assert c["sha256"] == s["sha256"] == pattern_sha256(n) and s["bytes_received"] == n
    mp = c["mptcp"]
    print("backup-on-loss", mp["subflows"], {k: v for k, v in mp["mib"].items() if v})
    assert mp["plugins"]["pm"] == "backup-on-loss"
    subs = {x["local"].split(":")[0]: x for x in mp["subflows"]}
    assert set(subs) == {wifi, lte}
    assert subs[lte]["backup"] is True and subs[lte]["bytes_sent"] >= 2 * MB


def test_kernel_pm_follows_the_lte_interface_down_and_up(bed: Bed) -> None:
    """The edge watches local addresses (rtnetlink): the client's lte interface going down
    closes its subflow at once (no waiting for timeouts), coming back opens a new one that
    carries data."""
    n = 12 * MB
    wifi, lte = bed.addr("client", "wifi"), bed.addr("client", "lte")
    srv_ip = bed.addr("server", "server")
    srv = linux_server(bed, "server", srv_ip, 5440, "k_srv_if", "--progress", "1")
    cli = ours_client(bed, "client", srv_ip, 5440, n, "u_cli_if", "--bind", wifi)
    try:
        srv.wait_for_line("^progress 2$", timeout=60)
        bed.tb.link_down("lte", mode="interface")
        srv.wait_for_line("^progress 5$", timeout=60)
    finally:
        bed.tb.link_up("lte", mode="interface")
    c = bed.result(cli, timeout=120)
    s = bed.result(srv, timeout=30)
    assert c["_rc"] == 0 and s["_rc"] == 0, (c.get("error"), c["_stderr"], s)
    assert c["sha256"] == s["sha256"] == pattern_sha256(n) and s["bytes_received"] == n
    mp = c["mptcp"]
    print("interface down/up", mp["subflows"], {k: v for k, v in mp["mib"].items() if v})
    on_lte = [x for x in mp["subflows"] if x["local"].split(":")[0] == lte]
    assert len(on_lte) == 2, mp["subflows"]  # the first closed at once, a second after up
    assert mp["mib"].get("MPTcpExtSubflowStale", 0) == 0  # closed before any timeout streak
    assert on_lte[1]["bytes_sent"] > 0
