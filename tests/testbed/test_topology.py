"""Topology files and the routing plan: pure checks, no network."""

from pathlib import Path

import pytest

from testbed.routing import resolve_path, router_routes
from testbed.topology import TopologyError, list_topologies, load_topology

GOOD = """
description = "test"
[nodes]
c = "host"
r = "router"
s = "host"
[links.a]
ends = ["c", "r"]
delay_ms = 5
rate_mbit = 10
[links.b]
ends = ["r", "s"]
[paths.p]
from = "c"
link = "a"
to = "s"
"""


def write(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "topo.toml"
    f.write_text(text)
    return f


def test_shipped_topologies_load_and_resolve():
    names = {n for n, _ in list_topologies()}
    assert {"two_path", "n_path", "shared_bottleneck"} <= names
    for name in names:
        topo = load_topology(name)
        assert topo.description
        for p in topo.paths:
            resolve_path(topo, p)


def test_two_path_expectations():
    topo = load_topology("two_path")
    wifi, lte = resolve_path(topo, "wifi"), resolve_path(topo, "lte")
    assert (wifi.want_rtt_ms, wifi.want_mbit) == (20.0, 20)
    assert (lte.want_rtt_ms, lte.want_mbit) == (80.0, 10)
    assert wifi.links == ("wifi", "wifi-core", "server")
    assert wifi.src_addr != lte.src_addr and wifi.dst_addr == lte.dst_addr


def test_n_path_has_four_disjoint_paths():
    topo = load_topology("n_path")
    paths = [resolve_path(topo, p) for p in topo.paths]
    assert len(paths) == 4
    assert len({p.links[0] for p in paths}) == 4


def test_shared_bottleneck_routes_everyone_through_it():
    topo = load_topology("shared_bottleneck")
    for p in topo.paths:
        assert "bottleneck" in resolve_path(topo, p).links


def test_router_routes_cover_every_remote_subnet():
    topo = load_topology("two_path")
    routes = {r.dst: r for r in router_routes(topo, "core")}
    assert routes[str(topo.links["wifi"].subnet)].link == "wifi-core"
    assert routes[str(topo.links["lte"].subnet)].link == "lte-core"


def test_overrides_apply_and_are_validated(tmp_path):
    topo = load_topology("two_path", {"links.lte.delay_ms": 50})
    assert topo.links["lte"].model.delay_ms == 50
    topo = load_topology("two_path", ["links.wifi.rate_mbit=5", "links.wifi.loss_pct=1.5"])
    assert topo.links["wifi"].model.rate_mbit == 5 and topo.links["wifi"].model.loss_pct == 1.5
    with pytest.raises(TopologyError, match=r"links\.nope\.delay_ms.*lacks"):
        load_topology("two_path", {"links.nope.delay_ms": 5})
    with pytest.raises(TopologyError, match=r"links\.lte\.delay_ms: expected a number"):
        load_topology("two_path", ["links.lte.delay_ms=fast"])


@pytest.mark.parametrize(
    "change, field",
    [
        (('c = "host"', 'c = "switch"'), "nodes.c"),
        (('ends = ["c", "r"]', 'ends = ["c", "x"]'), "links.a.ends"),
        (('ends = ["c", "r"]', 'ends = ["c"]'), "links.a.ends"),
        (("delay_ms = 5", "delay_ms = -1"), "links.a.delay_ms"),
        (("rate_mbit = 10", 'rate_mbit = "ten"'), "links.a.rate_mbit"),
        (("delay_ms = 5", "delay_ms = 5\nspeed = 3"), "links.a.speed"),
        (('link = "a"', 'link = "b"'), "paths.p.link"),
        (('to = "s"', 'to = "r"'), "paths.p.to"),
        (('description = "test"', ""), "description"),
        (("[links.b]", '[links.b]\nsubnet = "10.0.1.0/24"'), "links.b.subnet"),
        (("[links.b]", "[links.B]"), "links.B"),
        (("rate_mbit = 10", "queue_pkts = 10"), "links.a.queue_pkts"),
        (("rate_mbit = 10", 'middlebox = "firewall"'), "links.a.middlebox"),
        (("rate_mbit = 10", "middlebox = 3"), "links.a.middlebox"),
    ],
)
def test_mistakes_name_the_file_and_field(tmp_path, change, field):
    old, new = change
    f = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(TopologyError) as info:
        load_topology(f)
    assert str(f) in str(info.value)
    assert info.value.field == field, str(info.value)


def test_delay_between_two_hosts_is_refused(tmp_path):
    text = GOOD.replace(
        '[links.b]\nends = ["r", "s"]', '[links.b]\nends = ["c", "s"]\ndelay_ms = 3'
    )
    with pytest.raises(TopologyError, match="never on an endpoint") as info:
        load_topology(write(tmp_path, text))
    assert info.value.field == "links.b"


def test_middlebox_setting(tmp_path):
    topo = load_topology("two_path", ["links.wifi.middlebox=strip-mptcp"])
    assert topo.links["wifi"].model.middlebox == "strip-mptcp"
    assert topo.links["lte"].model.middlebox == "none"
    with pytest.raises(TopologyError, match=r"links\.lte\.middlebox: unknown middlebox 'nap'"):
        load_topology("two_path", ["links.lte.middlebox=nap"])
    text = GOOD.replace(
        '[links.b]\nends = ["r", "s"]', '[links.b]\nends = ["c", "s"]\nmiddlebox = "nat"'
    )
    with pytest.raises(TopologyError, match="IPv4 only") as info:
        load_topology("two_path", ['ip=["4", "6"]', "links.wifi.middlebox=nat"])
    assert info.value.field == "links.wifi.middlebox"
    topo = load_topology(
        "two_path", ['ip=["4", "6"]', "links.wifi.middlebox=nat", "links.wifi.ipv6=false"]
    )
    assert topo.links["wifi"].model.middlebox == "nat"
    with pytest.raises(TopologyError, match="runs on a router") as info:
        load_topology(write(tmp_path, text))
    assert info.value.field == "links.b.middlebox"


def test_syntax_error_and_missing_file(tmp_path):
    with pytest.raises(TopologyError, match=r"\(syntax\)"):
        load_topology(write(tmp_path, "description = \n"))
    with pytest.raises(TopologyError, match="no such topology"):
        load_topology("does_not_exist")


BRIDGED = Path(__file__).with_name("bridged.toml")


def test_bridged_segment_shares_one_subnet():
    topo = load_topology(BRIDGED)
    lan = topo.links["la"].segment
    assert lan is topo.links["lb"].segment is topo.links["lr"].segment
    assert lan.addrs == {"a": "10.0.1.1", "b": "10.0.1.2", "r": "10.0.1.3"}
    p = resolve_path(topo, "a")
    assert p.links == ("la", "lr", "up") and p.want_rtt_ms == 10 and p.want_mbit == 10
    assert resolve_path(topo, "b").want_mbit is None


DUAL = """
description = "v6"
ip = ["4", "6"]
[nodes]
c = "host"
r1 = "router"
r2 = "router"
s = "host"
[links.a]
ends = ["c", "r1"]
[links.b]
ends = ["c", "r2"]
ipv6 = false
[links.x]
ends = ["r1", "s"]
[links.y]
ends = ["r2", "s"]
[paths.p]
from = "c"
link = "a"
to = "s"
"""


def test_ipv6_addressing_and_routing_plan(tmp_path):
    from testbed.routing import host_default, host_tables

    topo = load_topology(write(tmp_path, DUAL))
    assert topo.ipv6
    a, b, x = topo.links["a"], topo.links["b"], topo.links["x"]
    assert str(a.subnet6) == "fd00:0:1::/64" and a.addr6_of("c") == "fd00:0:1::1"
    assert a.addr6_of("r1") == "fd00:0:1::2" and x.addr6_of("s") == "fd00:0:3::2"
    assert b.subnet6 is None and b.addr_of("c") == "10.0.2.1"
    with pytest.raises(KeyError):
        b.addr6_of("c")
    # the IPv6 plan leaves out link b (no IPv6): r2 reaches c's network through no one
    assert [(r.dst, r.via) for r in router_routes(topo, "r1", 6)] == [
        ("fd00:0:4::/64", "fd00:0:3::2")
    ]
    assert [(r.dst, r.via) for r in router_routes(topo, "r2", 6)] == [
        ("fd00:0:3::/64", "fd00:0:4::2")
    ]
    assert ("10.0.1.0/24", "10.0.2.1") in [(r.dst, r.via) for r in router_routes(topo, "r2")]
    tabs = host_tables(topo, "c", 6)
    assert [(t.table, t.src) for t in tabs] == [(100, "fd00:0:1::1")]  # eth0's table number
    assert [t.table for t in host_tables(topo, "s", 6)] == [100, 101]
    assert host_default(topo, "s", 6).via == "fd00:0:3::1"
    # IPv4 untouched
    assert [t.src for t in host_tables(topo, "c")] == ["10.0.1.1", "10.0.2.1"]


def test_ipv4_only_topologies_have_no_ipv6():
    topo = load_topology("two_path")
    assert not topo.ipv6 and all(lk.subnet6 is None for lk in topo.links.values())
    topo = load_topology("two_path", {"links.wifi.ipv6": True})
    assert topo.ipv6 and topo.links["wifi"].subnet6 is not None
    assert topo.links["lte"].subnet6 is None


@pytest.mark.parametrize(
    "patch, field, msg",
    [
        ('ip = ["4", "6"]', None, None),
        ('ip = ["6"]', "ip", "IPv4 is always on"),
        ('ip = ["5"]', "ip", "IP versions"),
        ('ip = "4"', "ip", "IP versions"),
    ],
)
def test_ip_versions_field(tmp_path, patch, field, msg):
    f = write(tmp_path, GOOD.replace('description = "test"', f'description = "test"\n{patch}'))
    if field is None:
        assert load_topology(f).ipv6
        return
    with pytest.raises(TopologyError) as e:
        load_topology(f)
    assert e.value.field == field and msg in str(e.value) and str(f) in str(e.value)


def test_link_ipv6_must_be_a_boolean(tmp_path):
    f = write(tmp_path, GOOD.replace("delay_ms = 5", 'delay_ms = 5\nipv6 = "yes"'))
    with pytest.raises(TopologyError) as e:
        load_topology(f)
    assert e.value.field == "links.a.ipv6" and str(f) in str(e.value)


def test_link_conditions_are_read():
    topo = load_topology(
        "two_path",
        [
            "links.wifi.reorder_pct=2",
            "links.wifi.reorder_gap=3",
            "links.wifi.duplicate_pct=0.5",
            "links.lte.loss_model={p = 1, r = 20}",
            "links.lte.jitter_ms=5",
            "links.lte.delay_distribution=pareto",
            "links.lte.jitter_reorders=true",
            "links.wifi.corrupt_pct=1.5",
            "links.lte.corrupt_pct=2",
            "links.lte.corrupt_fix_checksum=true",
        ],
    )
    wifi, lte = topo.links["wifi"].model, topo.links["lte"].model
    assert (wifi.reorder_pct, wifi.reorder_gap, wifi.duplicate_pct) == (2.0, 3, 0.5)
    assert (wifi.corrupt_pct, wifi.corrupt_fix_checksum) == (1.5, False)  # netem's: left wrong
    assert (lte.corrupt_pct, lte.corrupt_fix_checksum) == (2.0, True)
    # corruption alone puts a link through the emulator
    alone = load_topology("two_path", ["links.wifi.delay_ms=0", "links.wifi.corrupt_pct=1"])
    assert alone.links["wifi"].model.delayed
    assert lte.loss_model is not None
    assert (lte.loss_model.p, lte.loss_model.r, lte.loss_model.h, lte.loss_model.k) == (
        1.0,
        20.0,
        0.0,
        100.0,
    )
    assert lte.loss_model.mean_burst == 5.0
    assert lte.loss_model.mean_loss_pct == pytest.approx(100 / 21)
    assert lte.delay_distribution == "pareto" and lte.jitter_reorders
    # gemodel with only p: r = 100 - p, plain random loss of p percent
    plain = load_topology("two_path", ["links.lte.loss_model={p = 3}"]).links["lte"].model
    assert plain.loss_model.mean_loss_pct == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("sets", "field", "words"),
    [
        (["links.wifi.delay_ms=0", "links.wifi.reorder_pct=5"], "links.wifi.reorder_pct", "delay"),
        (["links.wifi.reorder_pct=101"], "links.wifi.reorder_pct", "outside [0, 100]"),
        (["links.wifi.reorder_gap=0"], "links.wifi.reorder_gap", "outside"),
        (["links.wifi.reorder_gap=1.5"], "links.wifi.reorder_gap", "whole number"),
        (["links.wifi.duplicate_pct=-1"], "links.wifi.duplicate_pct", "outside [0, 100]"),
        (["links.wifi.loss_model={p = 120}"], "links.wifi.loss_model.p", "outside [0, 100]"),
        (["links.wifi.loss_model={p = 1, r = -3}"], "links.wifi.loss_model.r", "outside"),
        (["links.wifi.loss_model={p = 1, h = 'x'}"], "links.wifi.loss_model.h", "a number"),
        (["links.wifi.loss_model={r = 10}"], "links.wifi.loss_model.p", "required"),
        (["links.wifi.loss_model={p = 1, q = 2}"], "links.wifi.loss_model.q", "unknown"),
        (["links.wifi.loss_model=5"], "links.wifi.loss_model", "a table"),
        (["links.wifi.jitter_reorders=1"], "links.wifi.jitter_reorders", "true or false"),
        (["links.wifi.corrupt_pct=100.5"], "links.wifi.corrupt_pct", "outside [0, 100]"),
        (["links.wifi.corrupt_pct=-0.1"], "links.wifi.corrupt_pct", "outside [0, 100]"),
        (["links.wifi.corrupt_pct='1%'"], "links.wifi.corrupt_pct", "a number"),
        (["links.wifi.corrupt_fix_checksum=1"], "links.wifi.corrupt_fix_checksum", "true or"),
        (["links.wifi.corrupt_fix_checksum=yes"], "links.wifi.corrupt_fix_checksum", "true or"),
        (["links.wifi.jitter_reorders=true"], "links.wifi.jitter_reorders", "jitter_ms"),
        (["links.wifi.delay_distribution=normal"], "links.wifi.delay_distribution", "jitter"),
        (
            ["links.wifi.jitter_ms=2", "links.wifi.delay_distribution=gamma"],
            "links.wifi.delay_distribution",
            "paretonormal",
        ),
    ],
)
def test_bad_link_conditions_name_the_field(sets, field, words):
    with pytest.raises(TopologyError) as err:
        load_topology("two_path", sets)
    assert err.value.field == field, str(err.value)
    assert words in err.value.problem
    assert str(err.value).startswith(str(Path("topologies/two_path.toml").resolve()))
