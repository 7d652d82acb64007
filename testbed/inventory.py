"""Inventory files: the real machines an experiment may use, read from TOML, and checked.

An inventory names machines reached over SSH and what each one is for: a `[hosts.X]` plays a
host of the experiment (its `role`: "client", "server", ...) with its interfaces on named links;
a `[workers.X]` runs a share of a campaign (python -m experiments on that machine, each run on
its own Mininet testbed there). Passwords are never read from a file: keys only. Host keys are
checked against known_hosts; an unknown key is refused unless the caller says otherwise
(`--accept-new-host-keys`), a changed key always.

File format::

    known_hosts = "~/.ssh/known_hosts"    # the default
    [defaults]                            # for every machine below, each may override
    user = "root"
    key = "~/.ssh/id_ed25519"             # private key file (no passwords in files)
    port = 22
    python = "python3"                    # a worker's python must have the project's packages
    workdir = "/tmp/mptcp-lab"            # where the project is copied on the machine

    [hosts.laptop]
    address = "192.0.2.10"                # where to SSH to
    role = "client"                       # the experiment's host this machine plays
    [hosts.laptop.interfaces]             # link name -> device and address (with prefix)
    wifi = { dev = "wlan0", addr = "10.1.1.1/24" }
    lte = { dev = "wwan0", addr = "10.1.2.1/24" }

    [hosts.box]
    address = "192.0.2.20"
    role = "server"
    interfaces.wifi = { dev = "eth0", addr = "10.1.1.2/24" }

    [paths.wifi]                          # optional: named paths, nominal rate for the metrics
    from = "client"
    link = "wifi"
    to = "server"
    rate_mbit = 20

    [workers.w1]
    address = "192.0.2.30"

A link named by two hosts joins them (one subnet); a link only one host names is its access to
a network it reaches by routing (the far end is the pseudo-node "net"). The routing of real
machines is theirs: the testbed only reads it (and restores it after an interface goes down).
`check_machines` connects to each machine before anything runs and says, per machine, what is
wrong: unreachable, host key unknown or changed, key refused, not root, a command, an interface
or a Python package missing.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import threading
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko

from testbed.errors import FieldError
from testbed.topology import NAME_RE, LinkModel, LinkSpec, PathSpec, Segment, Topology

MACHINE_KEYS = {"address", "port", "user", "key", "python", "workdir", "role", "interfaces"}
DEFAULT_KEYS = MACHINE_KEYS - {"address", "role", "interfaces"}
TOP_KEYS = {"known_hosts", "defaults", "hosts", "workers", "paths", "description"}
PATH_KEYS = {"from", "link", "to", "rate_mbit", "rtt_ms"}
SECRET_KEYS = {"password", "passphrase", "secret"}
_known_hosts_lock = threading.Lock()  # accepting new keys writes the known_hosts file
NET = "net"  # the far end of a link only one host names
# What a host needs (commands), what a worker needs on top, and the Debian package of each.
HOST_COMMANDS = {"ip": "iproute2", "tcpdump": "tcpdump", "nstat": "iproute2", "tar": "tar"}
WORKER_COMMANDS = {
    **HOST_COMMANDS,
    "mnexec": "mininet",
    "nft": "nftables",
    "iptables": "iptables",
    "ethtool": "ethtool",
    "tshark": "tshark",
}
WORKER_MODULES = ("mininet", "pandas", "pyarrow", "matplotlib", "seaborn", "paramiko")


class InventoryError(FieldError):
    """An inventory file is wrong; the message names the file and the field."""


class MachineError(RuntimeError):
    """One or more machines are not usable; each line names the machine and what is missing."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("machines not ready:\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class Interface:
    link: str
    dev: str
    addr: str  # with prefix, "10.1.1.1/24"

    @property
    def ip(self) -> str:
        return str(ipaddress.ip_interface(self.addr).ip)


@dataclass(frozen=True)
class Machine:
    name: str
    kind: str  # "host" or "worker"
    address: str
    port: int = 22
    user: str = "root"
    key: str | None = None
    python: str = "python3"
    workdir: str = "/tmp/mptcp-lab"
    role: str | None = None
    interfaces: tuple[Interface, ...] = ()

    @property
    def where(self) -> str:
        return f"{self.kind} {self.name} ({self.user}@{self.address}:{self.port})"

    def interface(self, link: str) -> Interface:
        for i in self.interfaces:
            if i.link == link:
                return i
        raise KeyError(f"{self.name} has no interface on link {link!r}")


@dataclass
class Inventory:
    source: str
    known_hosts: str
    hosts: dict[str, Machine] = field(default_factory=dict)  # by role
    workers: dict[str, Machine] = field(default_factory=dict)  # by name
    paths: dict[str, dict[str, Any]] = field(default_factory=dict)
    text: str = ""

    def topology(self) -> Topology:
        """The machines' network as a Topology: their roles as hosts, their links, paths."""
        nodes = {role: "host" for role in self.hosts}
        ends: dict[str, list[tuple[str, Interface]]] = {}
        for role, m in self.hosts.items():
            for i in m.interfaces:
                ends.setdefault(i.link, []).append((role, i))
        links: dict[str, LinkSpec] = {}
        for name, members in ends.items():
            net = ipaddress.ip_interface(members[0][1].addr).network
            a = members[0][0]
            b = members[1][0] if len(members) > 1 else NET
            if b == NET:
                nodes[NET] = "router"
            seg = Segment(
                subnet=net,
                links=(name,),
                addrs={role: i.ip for role, i in members},
            )
            links[name] = LinkSpec(name=name, a=a, b=b, model=LinkModel(), segment=seg)
        paths = {
            n: PathSpec(name=n, src=p["from"], link=p["link"], dst=p["to"])
            for n, p in self.paths.items()
        }
        return Topology(
            name=Path(self.source).stem,
            description=f"machines of {self.source}",
            source=self.source,
            nodes=nodes,
            links=links,
            paths=paths,
        )

    def describe(self) -> dict[str, Any]:
        """What metadata.json records about the machines (no key contents, no secrets)."""
        return {
            "inventory": self.source,
            "known_hosts": self.known_hosts,
            "hosts": {
                r: {
                    "machine": m.name,
                    "address": m.address,
                    "user": m.user,
                    "interfaces": {i.link: [i.dev, i.addr] for i in m.interfaces},
                }
                for r, m in self.hosts.items()
            },
            "workers": {n: {"address": m.address, "user": m.user} for n, m in self.workers.items()},
        }


def _expand(path: str, base: Path) -> str:
    p = Path(os.path.expanduser(path))
    return str(p if p.is_absolute() else (base / p))


def load_inventory(path: str | Path) -> Inventory:
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise InventoryError(source, "", f"cannot read the inventory: {e}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InventoryError(source, "", f"not valid TOML: {e}") from None
    base = path.resolve().parent
    for k in raw:
        if k in SECRET_KEYS:
            raise InventoryError(source, k, "passwords are not read from files: use a key")
        if k not in TOP_KEYS:
            raise InventoryError(source, k, f"unknown key (allowed: {', '.join(sorted(TOP_KEYS))})")
    known = raw.get("known_hosts", "~/.ssh/known_hosts")
    if not isinstance(known, str):
        raise InventoryError(source, "known_hosts", "expected a path")
    defaults = raw.get("defaults", {})
    if not isinstance(defaults, dict):
        raise InventoryError(source, "defaults", "expected a table")
    for k in defaults:
        if k in SECRET_KEYS:
            raise InventoryError(source, f"defaults.{k}", "passwords are not read from files")
        if k not in DEFAULT_KEYS:
            raise InventoryError(
                source, f"defaults.{k}", f"unknown key (allowed: {', '.join(sorted(DEFAULT_KEYS))})"
            )
    inv = Inventory(source=source, known_hosts=_expand(known, base), text=text)
    seen_roles: dict[str, str] = {}
    for kind, section in (("host", "hosts"), ("worker", "workers")):
        table = raw.get(section, {})
        if not isinstance(table, dict):
            raise InventoryError(source, section, "expected a table of machines")
        for name, m in table.items():
            machine = _machine(source, f"{section}.{name}", name, kind, {**defaults, **m}, base)
            if kind == "host":
                if machine.role in seen_roles:
                    raise InventoryError(
                        source,
                        f"{section}.{name}.role",
                        f"role {machine.role!r} is already played by {seen_roles[machine.role]}",
                    )
                seen_roles[machine.role] = name
                inv.hosts[machine.role] = machine
            else:
                inv.workers[name] = machine
    links: dict[str, list[Interface]] = {}
    for m in inv.hosts.values():
        for i in m.interfaces:
            links.setdefault(i.link, []).append(i)
    for link, members in links.items():
        if len(members) > 2:
            raise InventoryError(source, f"interfaces.{link}", "a link joins at most two hosts")
        nets = {ipaddress.ip_interface(i.addr).network for i in members}
        if len(nets) > 1:
            raise InventoryError(
                source,
                f"interfaces.{link}",
                f"its two ends are in different subnets: {', '.join(map(str, sorted(nets)))}",
            )
    paths = raw.get("paths", {})
    if not isinstance(paths, dict):
        raise InventoryError(source, "paths", "expected a table of paths")
    for name, p in paths.items():
        where = f"paths.{name}"
        if not isinstance(p, dict):
            raise InventoryError(source, where, "expected a table {from, link, to}")
        for k in p:
            if k not in PATH_KEYS:
                raise InventoryError(source, f"{where}.{k}", "unknown key")
        for k in ("from", "to"):
            if p.get(k) not in inv.hosts:
                raise InventoryError(source, f"{where}.{k}", f"no host plays {p.get(k)!r}")
        if p.get("link") not in {i.link for i in inv.hosts[p["from"]].interfaces}:
            raise InventoryError(
                source, f"{where}.link", f"{p['from']} has no interface on {p.get('link')!r}"
            )
        inv.paths[name] = dict(p)
    return inv


def _machine(source: str, where: str, name: str, kind: str, m: Any, base: Path) -> Machine:
    if not isinstance(m, dict):
        raise InventoryError(source, where, "expected a table")
    allowed = MACHINE_KEYS if kind == "host" else MACHINE_KEYS - {"role", "interfaces"}
    for k in m:
        if k in SECRET_KEYS:
            raise InventoryError(
                source, f"{where}.{k}", "passwords are not read from files: use key"
            )
        if k not in allowed:
            raise InventoryError(
                source, f"{where}.{k}", f"unknown key (allowed: {', '.join(sorted(allowed))})"
            )
    for k in ("address", "user", "python", "workdir"):
        if k in m and not isinstance(m[k], str):
            raise InventoryError(source, f"{where}.{k}", "expected a string")
    if "address" not in m:
        raise InventoryError(source, f"{where}.address", "missing: where to SSH to")
    port = m.get("port", 22)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise InventoryError(source, f"{where}.port", f"expected a port number, got {port!r}")
    key = m.get("key")
    if key is not None and not isinstance(key, str):
        raise InventoryError(source, f"{where}.key", "expected a path to a private key")
    interfaces: list[Interface] = []
    role = None
    if kind == "host":
        role = m.get("role")
        if not isinstance(role, str) or not NAME_RE.match(role):
            raise InventoryError(
                source, f"{where}.role", f"expected a host name of the experiment, got {role!r}"
            )
        intfs = m.get("interfaces", {})
        if not isinstance(intfs, dict) or not intfs:
            raise InventoryError(
                source, f"{where}.interfaces", "expected at least one link = {dev, addr}"
            )
        for link, spec in intfs.items():
            w = f"{where}.interfaces.{link}"
            if not isinstance(spec, dict) or set(spec) != {"dev", "addr"}:
                raise InventoryError(source, w, 'expected { dev = "eth0", addr = "10.1.1.1/24" }')
            try:
                ifc = ipaddress.ip_interface(spec["addr"])
            except ValueError:
                raise InventoryError(
                    source, f"{w}.addr", f"not an address with prefix: {spec['addr']!r}"
                ) from None
            if ifc.version != 4 or "/" not in spec["addr"]:
                raise InventoryError(source, f"{w}.addr", "expected an IPv4 address with /prefix")
            interfaces.append(Interface(link=link, dev=str(spec["dev"]), addr=spec["addr"]))
    return Machine(
        name=name,
        kind=kind,
        address=m["address"],
        port=port,
        user=m.get("user", "root"),
        key=_expand(key, base) if key else None,
        python=m.get("python", "python3"),
        workdir=m.get("workdir", "/tmp/mptcp-lab"),
        role=role,
        interfaces=tuple(interfaces),
    )


# ---------------------------------------------------------------------------------------------
# Connecting and checking


def connect(
    m: Machine,
    known_hosts: str,
    *,
    accept_new_host_keys: bool = False,
    timeout: float = 10.0,
    env: dict[str, str] | None = None,
):
    """An SshHost for the machine; MachineError naming it and saying what failed."""
    from testbed.ssh import SshHost

    if m.key and not Path(m.key).exists():
        raise MachineError([f"{m.where}: key file {m.key} does not exist"])
    if not accept_new_host_keys and not Path(known_hosts).exists():
        raise MachineError(
            [
                f"{m.where}: known_hosts file {known_hosts} does not exist, so its host key "
                f"cannot be checked (add it: ssh-keyscan -p {m.port} {m.address} >> "
                f"{known_hosts}, after checking the fingerprint; or pass --accept-new-host-keys)"
            ]
        )
    lock = _known_hosts_lock if accept_new_host_keys else contextlib.nullcontext()
    try:
        with lock:
            return SshHost(
                m.role or m.name,
                m.address,
                port=m.port,
                username=m.user,
                key_filename=m.key,
                connect_timeout=timeout,
                known_hosts=known_hosts,
                accept_new_host_key=accept_new_host_keys,
                env=env,
            )
    except paramiko.BadHostKeyException as e:
        problem = (
            f"host key CHANGED: the server offers {e.key.get_name()} "
            f"{e.key.get_fingerprint().hex()} but {known_hosts} has another key for it; "
            "refusing (remove the old line only if you know why it changed)"
        )
    except paramiko.AuthenticationException:
        problem = f"key {m.key or '(none given)'} refused for user {m.user}"
    except paramiko.SSHException as e:
        if "not found in known_hosts" in str(e):
            problem = (
                f"unknown host key (not in {known_hosts}); check its fingerprint and add it "
                f"(ssh-keyscan -p {m.port} {m.address} >> {known_hosts}), "
                "or pass --accept-new-host-keys"
            )
        else:
            problem = f"SSH failed: {e}"
    except TimeoutError:
        problem = f"unreachable: no answer within {timeout:.0f} s"
    except OSError as e:
        problem = f"unreachable: {e.strerror or e}"
    raise MachineError([f"{m.where}: {problem}"])


def _probe(host, m: Machine) -> list[str]:
    """What this machine lacks, in words (empty: ready)."""
    problems = []
    commands = WORKER_COMMANDS if m.kind == "worker" else HOST_COMMANDS
    script = (
        "id -u; for c in "
        + " ".join(commands)
        + '; do command -v "$c" >/dev/null 2>&1 || echo "missing $c"; done'
    )
    res = host.run(["sh", "-c", script], check=False, timeout=30)
    lines = res.stdout.splitlines()
    if res.returncode != 0 or not lines or not lines[0].strip().isdigit():
        return [f"{m.where}: cannot run commands: {(res.stderr or res.stdout).strip()[:200]}"]
    uid = int(lines[0])
    if uid != 0:
        problems.append(
            f"{m.where}: user {m.user} is not root (uid {uid}); the testbed needs root "
            "(ip, tcpdump, namespaces): log in as root"
        )
    missing = [ln.split()[1] for ln in lines[1:] if ln.startswith("missing ")]
    if missing:
        pkgs = sorted({commands[c] for c in missing})
        problems.append(
            f"{m.where}: missing commands: {', '.join(missing)} (apt-get install {' '.join(pkgs)})"
        )
    modules = WORKER_MODULES if m.kind == "worker" else ()
    code = (
        "import importlib.util, sys\n"
        "assert sys.version_info >= (3, 11), sys.version\n"
        f"print(' '.join(n for n in {modules!r} if importlib.util.find_spec(n) is None))\n"
    )
    res = host.run([m.python, "-c", code], check=False, timeout=60)
    if res.returncode != 0:
        why = (res.stderr or res.stdout).strip().splitlines()
        problems.append(
            f"{m.where}: python {m.python} missing or older than 3.11 "
            f"({why[-1] if why else 'exit ' + str(res.returncode)})"
        )
    elif res.stdout.strip():
        problems.append(
            f"{m.where}: python {m.python} lacks the packages {res.stdout.strip()} "
            f"({m.python} -m pip install {res.stdout.strip()})"
        )
    if m.interfaces:
        res = host.run(["ip", "-o", "-4", "addr", "show"], check=False)
        have = {
            (ln.split()[1], ln.split()[3]) for ln in res.stdout.splitlines() if len(ln.split()) > 3
        }
        devs = {d for d, _ in have}
        for i in m.interfaces:
            if i.dev not in devs and res.returncode == 0:
                problems.append(f"{m.where}: no interface {i.dev} (link {i.link}) with IPv4")
            elif (i.dev, i.addr) not in have and res.returncode == 0:
                problems.append(f"{m.where}: {i.dev} (link {i.link}) does not have {i.addr}")
    return problems


def check_machines(
    machines: list[Machine],
    known_hosts: str,
    *,
    accept_new_host_keys: bool = False,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Connect to every machine and probe it (in parallel); return their SshHosts by role/name,
    or raise MachineError listing every problem found, each naming its machine."""
    hosts: dict[str, Any] = {}
    problems: list[str] = []

    def one(m: Machine) -> tuple[Machine, Any, list[str]]:
        try:
            h = connect(m, known_hosts, accept_new_host_keys=accept_new_host_keys, env=env)
        except MachineError as e:
            return m, None, e.problems
        return m, h, _probe(h, m)

    with ThreadPoolExecutor(max_workers=max(1, len(machines))) as pool:
        for m, h, probs in pool.map(one, machines):
            problems += probs
            if h is not None:
                hosts[m.role or m.name] = h
    if problems:
        for h in hosts.values():
            h.close()
        raise MachineError(problems)
    return hosts
