"""Our MPTCP against Linux MPTCP over the two_path topology (wifi and lte), both ways.

Our client -> Linux MPTCP server (our client joins from its second address), and Linux MPTCP
client (an ``ip mptcp endpoint ... subflow`` on its second address) -> our server; on clean
paths, with 1% random loss on both, with delay jitter (the two paths' data arrive
interleaved out of data-sequence order, so both receivers reorder at the data level), and
"rough" (issue 19: 2% netem-style reordering, 1% duplication and 1% loss on both links, each
direction; a duplicated handshake packet may be counted twice, nothing else changes). Each run:
the stream arrives intact (sha256), neither side fell back, each path carried a share of the
data near its share of the capacity (`check_shares`), Linux's counters show MP_CAPABLE and
MP_JOIN accepted and nothing contradicted, and our MIB agrees.
"""

from __future__ import annotations

import pytest

from mptcp_impl.cli import pattern_sha256
from testkit.transfer import counters_delta

from .conftest import (
    LINUX_BAD,
    MB,
    OURS_BAD,
    Bed,
    linux_client,
    linux_server,
    make_bed,
    merged,
    ours_client,
    ours_server,
    wire_check,
)

pytestmark = pytest.mark.net

# Faster than two_path's defaults (20 and 10 Mbit/s) to keep runs short, same shape: a fast
# short path and a slower long one.
RATES = {
    "links.wifi.rate_mbit": 40,
    "links.wifi.delay_ms": 10,
    "links.wifi.queue_pkts": 200,
    "links.lte.rate_mbit": 20,
    "links.lte.delay_ms": 25,
    "links.lte.queue_pkts": 200,
}
# netem-style reordering (2% sent ahead of ~10-25 ms of data), 1% duplicated, 1% lost
ROUGH = {"reorder_pct": 2.0, "duplicate_pct": 1.0, "loss_pct": 1.0}
SCENARIOS = {
    "clean": ({}, {}, 10 * MB),
    "loss1pct": ({"loss_pct": 1.0}, {"loss_pct": 1.0}, 3 * MB),
    "jitter": ({"jitter_ms": 6.0}, {"jitter_ms": 15.0}, 10 * MB),
    # issue 19: a rough network, every direction of both access links at once
    "rough": (ROUGH, ROUGH, 3 * MB),
}
CLEAN = {"loss_pct": 0.0, "jitter_ms": 0.0, "reorder_pct": 0.0, "duplicate_pct": 0.0}


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    for b in make_bed("two_path", RATES, tmp_path_factory, "two_path"):
        tb = b.tb
        # The Linux client joins from its lte address; both hosts accept up to 8 subflows.
        tb.kernel_mptcp("client", endpoints=tb.default_endpoints("client"))
        tb.kernel_mptcp("server", endpoints=[])
        yield b


@pytest.fixture(params=list(SCENARIOS))
def scenario(request, bed: Bed):
    wifi, lte, n = SCENARIOS[request.param]
    if wifi:
        bed.tb.set_link("wifi", **wifi)
    if lte:
        bed.tb.set_link("lte", **lte)
    yield request.param, n
    if wifi or lte:
        bed.tb.set_link("wifi", **CLEAN)
        bed.tb.set_link("lte", **CLEAN)


PORTS = {"clean": 0, "loss1pct": 1, "jitter": 2, "rough": 3}


def conditions_met(bed: Bed) -> dict[str, int]:
    """What the emulators did on the access links so far (both directions): the rough
    scenario must really have reordered and duplicated, or it tested nothing."""
    out = {"reordered": 0, "duplicated": 0}
    for link in ("wifi", "lte"):
        st = bed.tb.emulators[bed.tb.link_router[link]].stats()[link]
        for key in out:
            out[key] += st["in"][key] + st["out"][key]
    return out


def addrs(bed: Bed) -> tuple[str, str, str]:
    return bed.addr("client", "wifi"), bed.addr("client", "lte"), bed.addr("server", "server")


def check_linux(delta: dict[str, int], expect: dict[str, int], dup: bool = False) -> None:
    """dup: the link duplicates packets, so a handshake packet may be counted twice."""
    got = {k: delta.get(k, 0) for k in expect}
    if dup:
        got = {k: min(v, expect[k]) if v <= 2 * expect[k] else v for k, v in got.items()}
    assert got == expect, f"Linux counters: {delta}"
    bad = {k: delta[k] for k in LINUX_BAD if delta.get(k)}
    assert not bad, f"Linux counted errors: {bad}; all: {delta}"


def check_ours(mp: dict, expect: dict[str, int], dup: bool = False) -> None:
    mib = {k.removeprefix("MPTcpExt"): v for k, v in mp["mib"].items()}
    assert mp["fallback"] is False, mp.get("fallback_reason")
    got = {k: mib.get(k, 0) for k in expect}
    if dup:
        got = {k: min(v, expect[k]) if v <= 2 * expect[k] else v for k, v in got.items()}
    assert got == expect, f"our MIB: { {k: v for k, v in mib.items() if v} }"
    bad = {k: mib[k] for k in OURS_BAD if mib.get(k)}
    assert not bad, f"our MIB counted errors: {bad}"


# What each path carries against its rate: on the clean and jittered paths (rate-limited)
# each path's share of the connection's bytes lies near its share of the capacity, rate / sum
# of rates (wifi 40 of 60 Mbit/s: 0.67, lte 0.33). The first subflow starts a round trip
# earlier and wifi's slow start is faster (20 against 50 ms), so slow start leans the share
# towards wifi; with 4 MB transfers (about 0.5 s, mostly slow start) Linux -> ours gave wifi
# 0.70 or 0.82 depending on where Linux's HyStart left slow start on each path (CI failed on
# 0.821). Hence 10 MB for clean and jitter: over 6 runs each (load ~1.5, 2026-12-07) wifi's
# share was clean 0.673-0.712 (Linux -> ours) and 0.646-0.695 (ours -> Linux), jitter
# 0.723-0.739. The band leans the same way with margin for a loaded machine: the faster
# path's share from 0.10 below its rate share to 0.12 above (clean: wifi 0.57-0.79) or 0.17
# above (jitter: wifi 0.57-0.84), the slower path's the mirror of it.
# Under 1% loss the paths are loss-limited (rate ~ 1/(RTT sqrt(p))), not rate-limited, and 3 MB
# see few losses: wifi's share varied 0.551-0.939; there each path must carry 2% of the data.
PATH_RATES = {"wifi": RATES["links.wifi.rate_mbit"], "lte": RATES["links.lte.rate_mbit"]}
SHARE_BELOW = 0.10  # the faster path's share at most this below its rate share
SHARE_ABOVE = {"clean": 0.12, "jitter": 0.17}  # ... and at most this above it
LOSS_FLOOR = 0.02


def path_shares(bed: Bed, mp: dict, key: str, end: str) -> dict[str, float]:
    """Each path's share of the bytes (`key` of its subflow over both), the path named by the
    client's address at the subflow's `end` ("local" on our client, "remote" on our server)."""
    wifi, lte, _ = addrs(bed)
    subs = mp["subflows"]
    assert len(subs) == 2, subs
    total = sum(s[key] for s in subs)
    by = {s[end].rpartition(":")[0]: s[key] / total for s in subs}
    assert set(by) == {wifi, lte}, subs
    return {"wifi": by[wifi], "lte": by[lte]}


def check_shares(name: str, shares: dict[str, float]) -> None:
    if name in ("loss1pct", "rough"):  # loss-limited paths: see above
        assert min(shares.values()) >= LOSS_FLOOR, shares
        return
    fast = max(PATH_RATES, key=PATH_RATES.get)
    for path, rate in PATH_RATES.items():
        want = rate / sum(PATH_RATES.values())
        band = (SHARE_BELOW, SHARE_ABOVE[name])
        below, above = band if path == fast else band[::-1]
        assert want - below <= shares[path] <= want + above, (path, round(want, 3), shares)


def test_ours_to_linux(bed: Bed, scenario) -> None:
    name, n = scenario
    wifi, lte, srv_ip = addrs(bed)
    port = 5300 + PORTS[name]
    before = bed.nstat("server")
    srv = linux_server(bed, "server", srv_ip, port, f"k_srv_{name}")
    cli = ours_client(bed, "client", srv_ip, port, n, f"u_cli_{name}", "--bind", wifi)
    c = bed.result(cli, timeout=120)
    s = bed.result(srv, timeout=30)
    delta = counters_delta(before, bed.nstat("server"))
    print(name, "ours->linux", c["goodput_mbit"], "Mbit/s", c["mptcp"]["subflows"], delta)
    assert c["_rc"] == 0 and s["_rc"] == 0, (c.get("error"), s)
    assert c["sha256"] == s["sha256"] == pattern_sha256(n) and s["bytes_received"] == n
    assert s["kernel"]["is_mptcp"], s["kernel"]
    mp = c["mptcp"]
    assert {x["local"].split(":")[0] for x in mp["subflows"]} == {wifi, lte}
    shares = path_shares(bed, mp, "bytes_sent", "local")
    print(name, "ours->linux shares", shares)
    check_shares(name, shares)
    check_linux(
        delta,
        {
            "MPTcpExtMPCapableSYNRX": 1,
            "MPTcpExtMPCapableACKRX": 1,
            "MPTcpExtMPJoinSynRx": 1,
            "MPTcpExtMPJoinAckRx": 1,
        },
        dup=name == "rough",
    )
    check_ours(
        mp, {"MPCapableSYNTX": 1, "MPCapableSYNACKRX": 1, "MPJoinSynAckRx": 1}, dup=name == "rough"
    )
    if name == "loss1pct":
        assert delta.get("TcpExtTCPOFOQueue", 0) > 0, "no loss seen by Linux: not tested"
    if name == "rough":
        assert all(conditions_met(bed).values()), conditions_met(bed)
    if name != "loss1pct":
        assert delta.get("MPTcpExtOFOQueue", 0) + delta.get("MPTcpExtOFOQueueTail", 0) > 0


def test_linux_to_ours(bed: Bed, scenario) -> None:
    name, n = scenario
    wifi, lte, srv_ip = addrs(bed)
    port = 5310 + PORTS[name]
    before = bed.nstat("client")
    srv = ours_server(bed, "server", srv_ip, port, f"u_srv_{name}")
    cli = linux_client(bed, "client", srv_ip, port, n, f"k_cli_{name}", "--bind", wifi)
    c = bed.result(cli, timeout=120)
    s = bed.result(srv, timeout=30)
    delta = counters_delta(before, bed.nstat("client"))
    print(name, "linux->ours", c["goodput_mbit"], "Mbit/s", s["mptcp"]["subflows"], delta)
    assert c["_rc"] == 0 and s["_rc"] == 0, (c, s.get("error"))
    assert c["sha256"] == s["sha256"] == pattern_sha256(n) and s["bytes_received"] == n
    assert c["kernel"]["is_mptcp"], c["kernel"]
    mp = s["mptcp"]
    assert {x["remote"].split(":")[0] for x in mp["subflows"]} == {wifi, lte}
    shares = path_shares(bed, mp, "bytes_received", "remote")
    print(name, "linux->ours shares", shares)
    check_shares(name, shares)
    check_linux(
        delta,
        {
            "MPTcpExtMPCapableSYNTX": 1,
            "MPTcpExtMPCapableSYNACKRX": 1,
            "MPTcpExtMPJoinSynTx": 1,
            "MPTcpExtMPJoinSynAckRx": 1,
        },
        dup=name == "rough",
    )
    check_ours(
        mp,
        {"MPCapableSYNRX": 1, "MPCapableACKRX": 1, "MPJoinSynRx": 1, "MPJoinAckRx": 1},
        dup=name == "rough",
    )
    if name == "loss1pct":
        assert delta.get("TcpRetransSegs", 0) > 0, "no loss seen by Linux: not tested"
    if name == "rough":
        assert all(conditions_met(bed).values()), conditions_met(bed)
    if name != "loss1pct":
        assert mp["mib"].get("MPTcpExtOFOQueue", 0) > 0, "no data-level reordering: not tested"


# ---------------------------------------------------------------- fallback to plain TCP


def test_ours_to_linux_plain_tcp(bed: Bed) -> None:
    """A Linux plain-TCP server answers our MP_CAPABLE SYN without it: we fall back, send the
    stream as plain TCP on one subflow and never try to join."""
    n = 2 * MB
    wifi, _, srv_ip = addrs(bed)
    before = bed.nstat("server")
    srv = linux_server(bed, "server", srv_ip, 5320, "k_tcpsrv", "--tcp")
    cli = ours_client(bed, "client", srv_ip, 5320, n, "u_cli_fb", "--bind", wifi)
    c = bed.result(cli)
    s = bed.result(srv)
    delta = counters_delta(before, bed.nstat("server"))
    assert c["_rc"] == 0 and s["_rc"] == 0, (c.get("error"), s)
    assert c["sha256"] == s["sha256"] == pattern_sha256(n) and s["bytes_received"] == n
    mp = c["mptcp"]
    assert mp["fallback"] is True, mp
    assert len(mp["subflows"]) == 1, mp["subflows"]
    mib = {k.removeprefix("MPTcpExt"): v for k, v in mp["mib"].items() if v}
    assert mib.get("MPCapableSYNTX") == 1 and mib.get("MPCapableFallbackSYNACK") == 1, mib
    assert not mib.get("MPJoinSynTx"), mib
    assert not {k: v for k, v in delta.items() if k.startswith("MPTcpExt")}, delta


def test_linux_plain_tcp_to_ours(bed: Bed) -> None:
    """A Linux plain-TCP client: our MPTCP server serves it as plain TCP."""
    n = 2 * MB
    wifi, _, srv_ip = addrs(bed)
    srv = ours_server(bed, "server", srv_ip, 5321, "u_srv_fb")
    cli = linux_client(bed, "client", srv_ip, 5321, n, "k_tcpcli", "--tcp", "--bind", wifi)
    c = bed.result(cli)
    s = bed.result(srv)
    assert c["_rc"] == 0 and s["_rc"] == 0, (c, s.get("error"))
    assert c["sha256"] == s["sha256"] == pattern_sha256(n) and s["bytes_received"] == n
    mp = s["mptcp"]
    assert mp["fallback"] is True and len(mp["subflows"]) == 1, mp
    assert not any(v for k, v in mp["mib"].items() if "MPCapable" in k or "MPJoin" in k), mp


def test_ours_tcp_only_to_linux_mptcp(bed: Bed) -> None:
    """Our --tcp-only client (no MP_CAPABLE) to a Linux MPTCP server: Linux falls back."""
    n = 2 * MB
    wifi, _, srv_ip = addrs(bed)
    before = bed.nstat("server")
    srv = linux_server(bed, "server", srv_ip, 5322, "k_srv_tcpcli")
    cli = ours_client(bed, "client", srv_ip, 5322, n, "u_tcpcli", "--bind", wifi, "--tcp-only")
    c = bed.result(cli)
    s = bed.result(srv)
    delta = counters_delta(before, bed.nstat("server"))
    assert c["_rc"] == 0 and s["_rc"] == 0
    assert c["sha256"] == s["sha256"] == pattern_sha256(n)
    assert s["kernel"]["is_mptcp"] is False, s["kernel"]
    assert not delta.get("MPTcpExtMPCapableSYNRX"), delta


def test_linux_mptcp_to_ours_tcp_only(bed: Bed) -> None:
    """A Linux MPTCP client to our --tcp-only server (no MP_CAPABLE in the SYN/ACK): Linux
    falls back and counts it."""
    n = 2 * MB
    wifi, _, srv_ip = addrs(bed)
    before = bed.nstat("client")
    srv = ours_server(bed, "server", srv_ip, 5323, "u_tcpsrv", "--tcp-only")
    cli = linux_client(bed, "client", srv_ip, 5323, n, "k_cli_tcpsrv", "--bind", wifi)
    c = bed.result(cli)
    s = bed.result(srv)
    delta = counters_delta(before, bed.nstat("client"))
    assert c["_rc"] == 0 and s["_rc"] == 0
    assert c["sha256"] == s["sha256"] == pattern_sha256(n)
    assert c["kernel"]["is_mptcp"] is False, c["kernel"]
    assert delta.get("MPTcpExtMPCapableSYNTX") == 1, delta
    assert delta.get("MPTcpExtMPCapableFallbackSYNACK") == 1, delta
    assert not delta.get("MPTcpExtMPJoinSynTx"), delta


# ---------------------------------------------------------------- tshark's view of our segments


def test_wire_ours_to_linux(bed: Bed) -> None:
    """Capture on our (client) host: tshark decodes every option we send, flags nothing on our
    segments, derives our token from our key, and our data starts at the IDSN of that key."""
    n = 3 * MB
    wifi, lte, srv_ip = addrs(bed)
    cap = bed.capture("cap_wire_c", ["client"])
    srv = linux_server(bed, "server", srv_ip, 5330, "k_srv_wire")
    cli = ours_client(bed, "client", srv_ip, 5330, n, "u_cli_wire", "--bind", wifi)
    c = bed.result(cli)
    s = bed.result(srv)
    files = cap.stop()
    assert c["_rc"] == 0 and c["sha256"] == s["sha256"] == pattern_sha256(n)
    w = wire_check(merged(files, bed.workdir / "wire_c.pcap"), {wifi, lte}, c["mptcp"]["token"])
    assert {0, 1, 2} <= w["subtypes"], w["subtypes"]  # MP_CAPABLE, MP_JOIN, DSS
    assert w["our_join_tokens"] == w["peer_tokens"] and len(w["peer_tokens"]) == 1, w
    first = min(d for ms in w["maps"].values() for _s, _n, d in ms)
    # our first mapping is within the first 64 KB of the stream that starts at IDSN + 1
    assert 0 <= first - (w["expected_idsn"] + 1) < 1 << 16, (first, w["expected_idsn"])
    print("missing_mapping excused (own DSS covers):", w["excused_missing_mapping"])


def test_wire_linux_to_ours(bed: Bed) -> None:
    """Capture on our (server) host: the same, and Linux's MP_JOIN names our token; we send
    no data, so our DATA_FIN is at IDSN + 1."""
    n = 3 * MB
    wifi, _, srv_ip = addrs(bed)
    cap = bed.capture("cap_wire_s", ["server"])
    srv = ours_server(bed, "server", srv_ip, 5331, "u_srv_wire")
    cli = linux_client(bed, "client", srv_ip, 5331, n, "k_cli_wire", "--bind", wifi)
    c = bed.result(cli)
    s = bed.result(srv)
    files = cap.stop()
    assert s["_rc"] == 0 and c["sha256"] == s["sha256"] == pattern_sha256(n)
    token = s["mptcp"]["token"]
    w = wire_check(files[0], {srv_ip}, token)
    assert {0, 1, 2} <= w["subtypes"], w["subtypes"]
    assert w["peer_join_tokens"] == {str(int(token, 16))}, w
    assert {d - 1 for d in w["data_fin_dsns"]} == {w["expected_idsn"]}, w


# ---------------------------------------------------------------- joins refused by the limits


def test_linux_refuses_our_join(bed: Bed) -> None:
    """Linux server with ``limits subflows 0``: it rejects our MP_JOIN (RST with MP_TCPRST);
    the connection goes on over the first subflow, still MPTCP, intact."""
    n = 2 * MB
    wifi, lte, srv_ip = addrs(bed)
    bed.tb.kernel_mptcp("server", limits={"subflows": 0, "add_addr_accepted": 0}, endpoints=[])
    try:
        before = bed.nstat("server")
        srv = linux_server(bed, "server", srv_ip, 5340, "k_srv_nojoin")
        cli = ours_client(bed, "client", srv_ip, 5340, n, "u_cli_nojoin", "--bind", wifi)
        c = bed.result(cli)
        s = bed.result(srv)
        delta = counters_delta(before, bed.nstat("server"))
    finally:
        bed.tb.kernel_mptcp("server", endpoints=[])
    mp = c["mptcp"]
    mib = {k.removeprefix("MPTcpExt"): v for k, v in mp["mib"].items() if v}
    print("linux refuses:", mp["subflows"], mib, delta)
    assert c["_rc"] == 0 and c["sha256"] == s["sha256"] == pattern_sha256(n)
    assert mp["fallback"] is False and s["kernel"]["is_mptcp"]
    assert delta.get("MPTcpExtMPJoinSynRx") == 1 and delta.get("MPTcpExtMPJoinRejected") == 1
    # Linux answers the SYN and rejects at the third ACK (subflow_syn_recv_sock): its RST
    # carries MP_TCPRST, which we count
    assert mib.get("MPJoinSynTx") == 1 and mib.get("MPRstRx") == 1, mib
    assert [x["bytes_sent"] for x in mp["subflows"] if x["local"].startswith(lte)] == [0]
    assert not {k: delta[k] for k in LINUX_BAD if delta.get(k)}, delta


def test_we_refuse_a_linux_join(bed: Bed) -> None:
    """Our server with ``--limits subflows=0``: Linux's MP_JOIN gets an RST with MP_TCPRST
    (tshark decodes it); Linux carries on over the first subflow, still MPTCP, intact."""
    n = 2 * MB
    wifi, _, srv_ip = addrs(bed)
    before = bed.nstat("client")
    cap = bed.capture("cap_refuse", ["server"])
    srv = ours_server(bed, "server", srv_ip, 5341, "u_srv_nojoin", "--limits", "subflows=0")
    cli = linux_client(bed, "client", srv_ip, 5341, n, "k_cli_nojoin", "--bind", wifi)
    c = bed.result(cli)
    s = bed.result(srv)
    files = cap.stop()
    delta = counters_delta(before, bed.nstat("client"))
    mp = s["mptcp"]
    mib = {k.removeprefix("MPTcpExt"): v for k, v in mp["mib"].items() if v}
    print("we refuse:", mp["subflows"], mib, delta)
    assert s["_rc"] == 0 and c["sha256"] == s["sha256"] == pattern_sha256(n)
    assert mp["fallback"] is False and c["kernel"]["is_mptcp"]
    assert len(mp["subflows"]) == 1
    assert mib.get("MPJoinSynRx") == 1 and mib.get("MPRstTx") == 1, mib
    assert delta.get("MPTcpExtMPJoinSynTx") == 1 and not delta.get("MPTcpExtMPJoinSynAckRx")
    w = wire_check(files[0], {srv_ip}, mp["token"])
    assert 8 in w["subtypes"], w["subtypes"]  # MP_TCPRST
