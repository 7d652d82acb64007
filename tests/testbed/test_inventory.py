"""Inventory files of real machines: what they say, and every mistake named by file and field."""

import pytest

from testbed.inventory import NET, InventoryError, load_inventory

GOOD = """
known_hosts = "kh"
[defaults]
key = "id_test"
[hosts.laptop]
address = "192.0.2.10"
role = "client"
[hosts.laptop.interfaces]
wifi = { dev = "wlan0", addr = "10.1.1.1/24" }
lte = { dev = "wwan0", addr = "10.1.2.1/24" }
[hosts.box]
address = "192.0.2.20"
role = "server"
port = 2222
interfaces.wifi = { dev = "eth0", addr = "10.1.1.2/24" }
[paths.wifi]
from = "client"
link = "wifi"
to = "server"
rate_mbit = 20
[workers.w1]
address = "192.0.2.30"
user = "lab"
"""


def write(tmp_path, text):
    p = tmp_path / "hosts.toml"
    p.write_text(text)
    return p


def test_a_good_inventory(tmp_path):
    inv = load_inventory(write(tmp_path, GOOD))
    assert inv.known_hosts == str(tmp_path / "kh")  # relative to the file
    assert set(inv.hosts) == {"client", "server"}
    box = inv.hosts["server"]
    assert (box.name, box.port, box.user, box.key) == (
        "box",
        2222,
        "root",
        str(tmp_path / "id_test"),
    )
    assert inv.workers["w1"].user == "lab" and inv.workers["w1"].kind == "worker"
    topo = inv.topology()
    assert topo.hosts == ["client", "server"]
    assert (topo.links["wifi"].a, topo.links["wifi"].b) == ("client", "server")
    assert topo.links["wifi"].addr_of("server") == "10.1.1.2"
    # lte: only the laptop names it; it reaches the server by routing ("net" is its far end)
    assert topo.links["lte"].b == NET and topo.nodes[NET] == "router"
    assert [lk.name for lk in topo.links_of("client")] == ["wifi", "lte"]
    assert inv.describe()["hosts"]["client"]["interfaces"]["lte"] == ["wwan0", "10.1.2.1/24"]


@pytest.mark.parametrize(
    ("edit", "field", "says"),
    [
        (lambda t: t + 'password = "x"\n', "workers.w1.password", "passwords are not read"),
        (
            lambda t: t.replace('key = "id_test"', 'password = "hunter2"'),
            "defaults.password",
            "passwords",
        ),
        (
            lambda t: t.replace('role = "server"', 'role = "client"'),
            "hosts.box.role",
            "already played",
        ),
        (lambda t: t.replace('address = "192.0.2.20"\n', ""), "hosts.box.address", "missing"),
        (lambda t: t.replace("port = 2222", "port = 0"), "hosts.box.port", "port number"),
        (lambda t: t.replace("10.1.1.2/24", "10.1.9.2/24"), "interfaces.wifi", "different subnets"),
        (
            lambda t: t.replace("10.1.1.2/24", "10.1.1.2"),
            "hosts.box.interfaces.wifi.addr",
            "/prefix",
        ),
        (lambda t: t.replace('link = "wifi"', 'link = "dsl"'), "paths.wifi.link", "no interface"),
        (lambda t: t.replace('to = "server"', 'to = "nobody"'), "paths.wifi.to", "no host plays"),
        (
            lambda t: t.replace("[workers.w1]", "[workers.w1]\nrole = 'x'"),
            "workers.w1.role",
            "unknown",
        ),
    ],
)
def test_mistakes_name_the_field(tmp_path, edit, field, says):
    with pytest.raises(InventoryError) as e:
        load_inventory(write(tmp_path, edit(GOOD)))
    assert field in str(e.value) and says in str(e.value), str(e.value)


def test_the_shipped_example_reads():
    from pathlib import Path

    inv = load_inventory(Path(__file__).resolve().parents[2] / "hosts.example.toml")
    assert set(inv.hosts) == {"client", "server"} and set(inv.workers) == {"w1", "w2"}
    assert inv.topology().links["lte"].b == NET
