"""Stand-in "real machines" for the SSH tests: network namespaces on this machine, each with its
own sshd (its own host key, an authorized key), reached from the root namespace over a
management veth, joined to each other by veth "links" with addresses.

Real SSH, real key checks: a test gets a known_hosts file with the machines' host keys and the
client key they accept, and writes an inventory for them. Everything is removed on exit: the
sshd processes (by pid, whatever they started in the namespace with them) and the namespaces.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from testbed.host import LocalProcess

SSHD = Path("/usr/sbin/sshd")


def sh(*args: str, input: str | None = None) -> str:
    return subprocess.run(
        list(args), check=True, capture_output=True, text=True, input=input
    ).stdout


@dataclass
class Machine:
    name: str
    ns: str
    mgmt: str  # its address on the management veth (where sshd listens)
    hostkey: Path
    sshd: LocalProcess | None = None
    interfaces: dict[str, tuple[str, str]] = field(default_factory=dict)  # link -> (dev, addr/p)

    def run(self, *args: str, input: str | None = None) -> str:
        return sh("ip", "netns", "exec", self.ns, *args, input=input)

    def pids(self) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def kill_sshd(self) -> None:
        """The machine's sshd and its sessions go away at once (a worker lost mid-campaign):
        SIGKILL to the listener we started and to the sessions it forked (its children)."""
        assert self.sshd is not None
        children = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.sshd.pid)], capture_output=True, text=True
        ).stdout.split()
        for pid in [self.sshd.pid, *map(int, children)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.sshd.wait(10)


# The root namespace's end of each machine's management link: "mr", the 4 hex digits of the
# SshMachines' tag, the machine's name. The only links these machines put in the root namespace
# (tests/testbed/test_net.py tells them from a testbed's, since ./inv test runs the SSH tests
# beside it).
MGMT_PREFIX = "mr"
MGMT_LINK = re.compile(rf"^{MGMT_PREFIX}[0-9a-f]{{4}}")


class SshMachines:
    """`with SshMachines(tmp, ["c", "s"], links=[("wifi", "c", "s"), ...]) as ms:` ..."""

    def __init__(
        self,
        tmp: Path,
        names: list[str],
        links: list[tuple[str, str, str]] = (),
        linger: float = 5.0,
        rate_mbit: float | None = None,
    ):
        """linger: on exit, how long what runs in the namespaces (started through their sshd)
        may take to end by itself before it is killed. rate_mbit: each link's rate, both ways
        (a tbf on each end), as a real machine's link has one; None: a veth's, several Gbit/s
        (a bulk transfer then fills its captures with hundreds of MB to fetch and analyse)."""
        self.linger = linger
        self.rate_mbit = rate_mbit
        self.tmp = Path(tmp)
        self.names = names
        self.links = list(links)
        self.tag = secrets.token_hex(2)
        self.octet = random.randint(200, 250)
        self.machines: dict[str, Machine] = {}
        self.client_key = self.tmp / "client_key"
        self.known_hosts = self.tmp / "known_hosts"
        self._made_privsep = False
        self.authdir: Path | None = None

    def __enter__(self) -> SshMachines:
        try:
            self._build()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _build(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.client_key))
        # sshd reads a user's authorized keys as that user: a folder any user may read (the
        # test's own tmp folder is root's only), so a non-root login can be tried too
        self.authdir = Path(tempfile.mkdtemp(prefix="mlab-auth-"))
        self.authdir.chmod(0o755)
        self.authorized = self.authdir / "authorized_keys"
        self.authorized.write_text(Path(f"{self.client_key}.pub").read_text())
        self.authorized.chmod(0o644)
        privsep = Path("/run/sshd")
        self._made_privsep = not privsep.exists()
        privsep.mkdir(mode=0o755, exist_ok=True)
        known = []
        for k, name in enumerate(self.names, start=1):
            ns = f"mlab{self.tag}{name}"
            m = Machine(name, ns, f"10.{self.octet}.{k}.2", self.tmp / f"hostkey-{name}")
            self.machines[name] = m
            sh("ip", "netns", "add", ns)
            outer, inner = f"{MGMT_PREFIX}{self.tag}{name}"[:15], "mgmt0"
            sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns)
            sh("ip", "addr", "add", f"10.{self.octet}.{k}.1/24", "dev", outer)
            sh("ip", "link", "set", outer, "up")
            m.run("ip", "addr", "add", f"{m.mgmt}/24", "dev", inner)
            m.run("ip", "link", "set", inner, "up")
            m.run("ip", "link", "set", "lo", "up")
            m.run(
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
            )
            sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(m.hostkey))
            cfg = self.tmp / f"sshd-{name}.conf"
            cfg.write_text(
                f"Port 22\nListenAddress {m.mgmt}\nHostKey {m.hostkey}\n"
                f"PidFile {self.tmp / f'sshd-{name}.pid'}\n"
                f"AuthorizedKeysFile {self.authorized}\n"
                "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
                "PasswordAuthentication no\nSubsystem sftp internal-sftp\nMaxSessions 50\n"
                "MaxStartups 50\n"
            )
            popen = subprocess.Popen(
                ["ip", "netns", "exec", ns, str(SSHD), "-D", "-e", "-f", str(cfg)],
                stderr=subprocess.PIPE,
            )
            m.sshd = LocalProcess(name, ["sshd"], popen)
            pub = Path(f"{m.hostkey}.pub").read_text().split()
            known.append(f"{m.mgmt} {pub[0]} {pub[1]}\n")
        for m in self.machines.values():
            m.sshd.wait_for_line("Server listening on", timeout=15)
        self.known_hosts.write_text("".join(known))
        for j, (link, a, b) in enumerate(self.links, start=1):
            ma, mb = self.machines[a], self.machines[b]
            da, db = f"{link[:4]}{a}"[:15], f"{link[:4]}{b}"[:15]
            sh(
                "ip",
                "link",
                "add",
                "tmp" + self.tag + "a",
                "netns",
                ma.ns,
                "type",
                "veth",
                "peer",
                "name",
                "tmp" + self.tag + "b",
                "netns",
                mb.ns,
            )
            ma.run("ip", "link", "set", "tmp" + self.tag + "a", "name", da)
            mb.run("ip", "link", "set", "tmp" + self.tag + "b", "name", db)
            for m, dev, host_id in ((ma, da, 1), (mb, db, 2)):
                addr = f"10.91.{j}.{host_id}/24"
                m.run("ip", "addr", "add", addr, "dev", dev)
                m.run("ip", "link", "set", dev, "up")
                m.run("ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off")
                if self.rate_mbit:
                    m.run(
                        "tc", "qdisc", "replace", "dev", dev, "root", "tbf",
                        "rate", f"{self.rate_mbit}mbit", "burst", "64kb", "latency", "100ms",
                    )  # fmt: skip
                m.interfaces[link] = (dev, addr)

    def source_route(self, name: str, link: str, via_peer: str, table: int) -> None:
        """Packets from the machine's address on `link` leave by that link, to anywhere
        (through its peer there): how a multi-homed host reaches a server's other address."""
        m = self.machines[name]
        dev, addr = m.interfaces[link]
        peer_ip = self.machines[via_peer].interfaces[link][1].split("/")[0]
        m.run("ip", "route", "add", "default", "via", peer_ip, "dev", dev, "table", str(table))
        m.run("ip", "rule", "add", "from", addr.split("/")[0], "lookup", str(table))

    def inventory(
        self,
        path: Path,
        *,
        hosts: dict[str, str] | None = None,  # machine -> role
        workers: list[str] = (),
        python: str | None = None,
        user: str = "root",
        known_hosts: Path | None = None,
        extra: str = "",
    ) -> Path:
        lines = [
            f'known_hosts = "{known_hosts or self.known_hosts}"',
            "[defaults]",
            f'user = "{user}"',
            f'key = "{self.client_key}"',
            f'python = "{python or os.environ.get("MLAB_PYTHON", "python3")}"',
            f'workdir = "{self.tmp / "remote"}"',
        ]
        for name, role in (hosts or {}).items():
            m = self.machines[name]
            lines += [f"[hosts.{name}]", f'address = "{m.mgmt}"', f'role = "{role}"']
            lines += [f"[hosts.{name}.interfaces]"]
            lines += [
                f'{lk} = {{ dev = "{d}", addr = "{a}" }}' for lk, (d, a) in m.interfaces.items()
            ]
        for name in workers:
            lines += [f"[workers.{name}]", f'address = "{self.machines[name].mgmt}"']
        path.write_text("\n".join(lines) + "\n" + extra)
        return path

    def __exit__(self, *exc: object) -> None:
        for m in self.machines.values():
            if m.sshd is not None and m.sshd.returncode is None:
                m.sshd.stop(signal.SIGTERM, timeout=5)
            # what our sshd started in the namespace (sessions, their programs): let them end,
            # then insist (all of it was started by this fixture, through its sshd)
            deadline = time.monotonic() + self.linger
            while m.pids() and time.monotonic() < deadline:
                time.sleep(0.5)
            for pid in m.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            subprocess.run(["ip", "netns", "del", m.ns], capture_output=True)
        if self.authdir is not None:
            shutil.rmtree(self.authdir, ignore_errors=True)
        if self._made_privsep:
            try:
                Path("/run/sshd").rmdir()
            except OSError:
                pass
