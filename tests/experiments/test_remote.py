"""Experiments on "real machines" over SSH: two network namespaces, each with its own sshd (real
SSH, real host-key checks), joined by two veth links (wifi, lte). The project goes to them by
SFTP, the run captures on their interfaces, takes the client's wifi interface down and up, and
fetches pcaps and reports back into the usual results layout, analysis report included.

Bad input is refused before any run starts, naming the machine and what is wrong.
"""

import json
import subprocess
import sys

import pytest

from experiments.__main__ import main
from testkit.sshmachines import SSHD, SshMachines

PY = sys.executable
pytestmark = [
    pytest.mark.net,
    pytest.mark.skipif(not SSHD.exists(), reason="openssh-server (./inv installs it)"),
]

EXPERIMENT = """
name = "ssh_failover"
description = "real machines: the client's wifi interface down at 1.5 s, up at 3 s"
seed = 1
repetitions = 1
stacks = ["tcp", "kernel-mptcp"]
[topology]
name = "two_path"
[traffic]
client = "client"
server = "server"
kind = "bulk"
direction = "download"
duration_s = 4
timeout_s = 10
[[events]]
at = 1.5
link = "wifi"
action = "down"
mode = "interface"
[[events]]
at = 3.0
link = "wifi"
action = "up"
mode = "interface"
[stack.kernel-mptcp]
endpoints = [{ host = "client", link = "lte", flags = ["subflow"] }]
"""
PATHS = """
[paths.wifi]
from = "client"
link = "wifi"
to = "server"
rate_mbit = 50
[paths.lte]
from = "client"
link = "lte"
to = "server"
rate_mbit = 50
"""


@pytest.fixture(scope="module")
def machines(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("machines")
    # 50 Mbit/s links, as PATHS says: a 4 s bulk transfer at a veth's several Gbit/s made
    # captures of hundreds of MB, and fetching and analysing them took most of the test's 50 s
    links = [("wifi", "c", "s"), ("lte", "c", "s")]
    with SshMachines(tmp, ["c", "s"], links=links, rate_mbit=50) as ms:
        # the client's lte address reaches the server's (wifi) address through lte
        ms.source_route("c", "lte", "s", 102)
        yield ms


@pytest.fixture
def experiment(tmp_path):
    p = tmp_path / "ssh_failover.toml"
    p.write_text(EXPERIMENT)
    return p


def run(args, capsys):
    rc = main(["run", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_a_run_on_two_machines_end_to_end(machines, experiment, tmp_path, capsys):
    inv = machines.inventory(
        tmp_path / "hosts.toml", hosts={"c": "client", "s": "server"}, python=PY, extra=PATHS
    )
    c = machines.machines["c"]
    routes_before = c.run("ip", "-4", "route", "show", "table", "all", "dev", "wific")
    results = tmp_path / "results"
    rc, out, err = run([experiment, "--inventory", inv, "--results", results], capsys)
    assert rc == 0, err + out
    (run_dir,) = (results / "ssh_failover").iterdir()
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert meta["complete"] and meta["network"]["kind"] == "ssh"
    assert meta["network"]["hosts"]["client"]["interfaces"]["wifi"] == ["wific", "10.91.1.1/24"]
    for label in ("tcp/rep1", "kernel-mptcp/rep1"):
        pcaps = sorted(p.name for p in (run_dir / "pcap" / label).glob("*.pcap"))
        assert pcaps == [
            "client-ltec.pcap",
            "client-wific.pcap",
            "server-ltes.pcap",
            "server-wifis.pcap",
        ]
        big = {p for p in pcaps if (run_dir / "pcap" / label / p).stat().st_size > 10_000}
        # TCP uses wifi only; MPTCP both links
        want = {"client-wific.pcap", "server-wifis.pcap"}
        assert big >= (want | {"client-ltec.pcap"} if label.startswith("kernel") else want), big
        for end in ("client", "server"):
            assert json.loads((run_dir / "traffic" / label / f"main-{end}.json").read_text())
    runs = {r["stack"]: r for r in json.loads((run_dir / "metrics.json").read_text())["runs"]}
    assert runs["tcp"]["intact"] and runs["kernel-mptcp"]["intact"]
    assert runs["kernel-mptcp"]["max_subflows"] == 2
    # the interface event happened, on the client's wifi, both times; TCP on wifi stalls until
    # it is back, MPTCP carries on over lte much sooner
    for r in runs.values():
        (f,) = r["failover"]
        assert f["link"] == "wifi"
    assert runs["kernel-mptcp"]["failover"][0]["gap_s"] < runs["tcp"]["failover"][0]["gap_s"]
    events = json.loads((run_dir / "events.json").read_text())
    assert [e["action"] for e in events[0]["events"]] == ["down", "up"]
    assert (run_dir / "analysis" / "report.html").stat().st_size > 10_000
    assert (run_dir / "summary.md").exists()
    # each machine's clock, measured before each run over its SSH connection: the namespaces
    # share this machine's clock, so ~0 within the bound; the run's report shows it, unflagged
    for label in ("tcp/rep1", "kernel-mptcp/rep1"):
        clocks = meta["machines"][label]["clock_offsets"]
        assert sorted(clocks) == ["client", "server"]
        assert all(abs(o["offset_s"]) <= o["uncertainty_s"] < 0.05 for o in clocks.values())
        view = (run_dir / "analysis" / label.replace("/", "-") / "report.html").read_text()
        assert "Clock offsets against the coordinator" in view and "CLOCK OFFSET" not in view
    # the machines are as they were: interface up, its routes back, no MPTCP endpoints left
    # (they had none), the project's copy gone
    assert "state UP" in c.run("ip", "link", "show", "dev", "wific")
    assert c.run("ip", "-4", "route", "show", "table", "all", "dev", "wific") == routes_before
    assert "default via 10.91.2.2 dev ltec" in c.run("ip", "-4", "route", "show", "table", "102")
    assert c.run("ip", "mptcp", "endpoint", "show").strip() == ""
    assert not list((machines.tmp / "remote").glob("project-*"))


def test_unknown_host_keys_are_refused_unless_accepted(machines, experiment, tmp_path, capsys):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    inv = machines.inventory(
        tmp_path / "hosts.toml",
        hosts={"c": "client", "s": "server"},
        python=PY,
        known_hosts=empty,
    )
    rc, _, err = run([experiment, "--inventory", inv, "--results", tmp_path / "r"], capsys)
    assert rc == 2
    for m in ("c", "s"):
        assert f"host {m} (root@{machines.machines[m].mgmt}:22): unknown host key" in err
    assert "--accept-new-host-keys" in err
    assert not (tmp_path / "r").exists()  # nothing ran, nothing was written
    # accepted on request, and recorded: the next check passes without the option
    from testbed.inventory import check_machines, load_inventory

    inv_ = load_inventory(inv)
    for h in check_machines(
        list(inv_.hosts.values()), str(empty), accept_new_host_keys=True
    ).values():
        h.close()
    assert machines.machines["c"].mgmt in empty.read_text()
    for h in check_machines(list(inv_.hosts.values()), str(empty)).values():
        h.close()


def test_bad_machines_are_named_before_anything_runs(machines, experiment, tmp_path, capsys):
    c, s = machines.machines["c"], machines.machines["s"]
    # s's line in known_hosts holds another key: a changed key is always refused
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    pub = (tmp_path / "other.pub").read_text().split()
    changed = tmp_path / "known_changed"
    changed.write_text(
        machines.known_hosts.read_text().replace(
            next(
                ln
                for ln in machines.known_hosts.read_text().splitlines()
                if ln.startswith(s.mgmt + " ")
            ),
            f"{s.mgmt} {pub[0]} {pub[1]}",
        )
    )
    inv = machines.inventory(
        tmp_path / "a.toml", hosts={"c": "client", "s": "server"}, python=PY, known_hosts=changed
    )
    rc, _, err = run([experiment, "--inventory", inv], capsys)
    assert rc == 2 and f"host s (root@{s.mgmt}:22): host key CHANGED" in err, err
    assert "host c" not in err  # c is fine

    # a key the machines do not accept
    inv = machines.inventory(tmp_path / "b.toml", hosts={"c": "client", "s": "server"}, python=PY)
    inv.write_text(inv.read_text().replace(str(machines.client_key), str(other)))
    rc, _, err = run([experiment, "--inventory", inv], capsys)
    assert rc == 2 and f"host c (root@{c.mgmt}:22): key {other} refused for user root" in err, err

    # no python; no such interface (a non-root login cannot be tried here: the machine's
    # only non-root accounts are locked; test_probe_says_not_root covers the message)
    inv = machines.inventory(
        tmp_path / "c.toml", hosts={"c": "client", "s": "server"}, python="/nonexistent/python3"
    )
    inv.write_text(inv.read_text().replace('"ltes"', '"nosuch0"'))
    rc, _, err = run([experiment, "--inventory", inv], capsys)
    assert rc == 2
    assert f"host c (root@{c.mgmt}:22): python /nonexistent/python3 missing" in err, err
    assert f"host s (root@{s.mgmt}:22): no interface nosuch0 (link lte)" in err, err
    # nobody listening
    inv = machines.inventory(tmp_path / "d.toml", hosts={"c": "client", "s": "server"}, python=PY)
    inv.write_text(
        inv.read_text().replace(f'address = "{s.mgmt}"', f'address = "{s.mgmt}"\nport = 2222')
    )
    rc, _, err = run([experiment, "--inventory", inv], capsys)
    assert rc == 2 and f"host s (root@{s.mgmt}:2222): unreachable" in err, err

    # the experiment asks what the machines cannot give
    inv = machines.inventory(tmp_path / "e.toml", hosts={"c": "laptop", "s": "server"}, python=PY)
    rc, _, err = run([experiment, "--inventory", inv], capsys)
    assert rc == 2 and "traffic.client is 'client', which no host plays" in err, err


def test_probe_says_not_root_and_what_is_missing():
    """What a machine lacks, from what its shell answers (a stand-in host: this machine has no
    unlocked non-root account to log in with)."""
    from testbed.inventory import Machine, _probe

    class Answers:
        def run(self, args, check=True, timeout=60, input=None):
            if args[0] == "sh":  # id -u, then each missing command
                return subprocess.CompletedProcess(
                    args, 0, "1000\nmissing tcpdump\nmissing mnexec\n", ""
                )
            return subprocess.CompletedProcess(args, 0, "pandas seaborn\n", "")

    m = Machine("w9", "worker", "192.0.2.9", user="lab", python="python3")
    problems = _probe(Answers(), m)
    assert problems == [
        "worker w9 (lab@192.0.2.9:22): user lab is not root (uid 1000); the testbed needs root "
        "(ip, tcpdump, namespaces): log in as root",
        "worker w9 (lab@192.0.2.9:22): missing commands: tcpdump, mnexec "
        "(apt-get install mininet tcpdump)",
        "worker w9 (lab@192.0.2.9:22): python python3 lacks the packages pandas seaborn "
        "(python3 -m pip install pandas seaborn)",
    ]


def test_our_userspace_stack_on_the_machines(machines, tmp_path, capsys):
    """`python -m mptcp_impl` from the project copied to the machines (PYTHONPATH set by the
    network), both links used."""
    exp = tmp_path / "ssh_userspace.toml"
    exp.write_text(
        EXPERIMENT.split("[[events]]")[0]
        .replace('stacks = ["tcp", "kernel-mptcp"]', 'stacks = ["userspace"]')
        .replace('direction = "download"\nduration_s = 4', 'direction = "upload"\nbytes = 3000000')
        # a port of its own: the earlier runs' connections on 5201 linger in TIME_WAIT on the
        # same machines, and our stack's port reservation (bind without SO_REUSEADDR) fails then
        .replace("timeout_s = 10", "timeout_s = 10\nport = 5301")
        .replace("ssh_failover", "ssh_userspace")
    )
    inv = machines.inventory(
        tmp_path / "hosts.toml", hosts={"c": "client", "s": "server"}, python=PY
    )
    results = tmp_path / "results"
    rc, out, err = run([exp, "--inventory", inv, "--results", results, "--no-analysis"], capsys)
    assert rc == 0, err + out
    (run_dir,) = (results / "ssh_userspace").iterdir()
    (r,) = json.loads((run_dir / "metrics.json").read_text())["runs"]
    assert r["intact"] and r["bytes"] == 3_000_000 and r["max_subflows"] == 2
    # from the project's copy on the machine, not from this checkout
    log = (run_dir / "logs" / "runner.log").read_text()
    assert f"--import-path {machines.tmp / 'remote'}/project-" in log


def test_a_blackhole_on_a_machine_and_nothing_left(machines, tmp_path, capsys):
    """mode = "blackhole": an nft table on the client drops all on its wifi interface, then
    goes; MPTCP moves to lte meanwhile."""
    exp = tmp_path / "ssh_blackhole.toml"
    exp.write_text(
        EXPERIMENT.replace('mode = "interface"', 'mode = "blackhole"')
        .replace('stacks = ["tcp", "kernel-mptcp"]', 'stacks = ["kernel-mptcp"]')
        .replace("ssh_failover", "ssh_blackhole")
    )
    inv = machines.inventory(
        tmp_path / "hosts.toml", hosts={"c": "client", "s": "server"}, python=PY
    )
    results = tmp_path / "results"
    rc, out, err = run([exp, "--inventory", inv, "--results", results, "--no-analysis"], capsys)
    assert rc == 0, err + out
    (run_dir,) = (results / "ssh_blackhole").iterdir()
    (r,) = json.loads((run_dir / "metrics.json").read_text())["runs"]
    (f,) = r["failover"]
    assert r["intact"] and f["cut_path_bytes_after"] == 0 and f["other_paths_bytes_after"] > 0
    assert "mptcplab_bh" not in machines.machines["c"].run("nft", "list", "tables")
