"""A network of real machines over SSH: testbed.network.Network over the SshHosts of an inventory.

The machines' links, addresses and routes are theirs (testbed.inventory describes them); this
network runs what the experiment needs on them through the Host interface: captures (tcpdump
over SSH, the files fetched back as `<role>-<dev>.pcap`), kernel MPTCP endpoints and limits (`ip
mptcp` over SSH), link events where a real machine can have them (`interface`: `ip link set dev
X down/up` on the link's host, the routes through X saved before and put back after; `blackhole`:
an nft table dropping everything on X). Link emulation (rate, delay, loss, `set` events) and
middleboxes are not there: a real link is what it is.

Leaving the network puts each machine back as it was: interfaces up, blackholes removed, the
MPTCP endpoints and limits it had before, processes stopped (by their own process group).

`SshNetworkFactory(inventory)` connects once per campaign (and checks every machine first,
testbed.inventory.check_machines), copies the project to each host through SFTP, and hands the
runner a fresh SshNetwork for every run.
"""

from __future__ import annotations

import io
import logging
import tarfile
import time
from pathlib import Path
from typing import Any

from testbed.capture import Capture
from testbed.clock import measure_offset
from testbed.events import EventRun, LinkEvent
from testbed.host import Host, Process
from testbed.inventory import Inventory, Machine, check_machines
from testbed.network import NetworkBase
from testbed.routing import ResolvedPath
from testbed.topology import Topology

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parent.parent
PROJECT_DIRS = ("testbed", "experiments", "analysis", "mptcp_impl", "topologies")
BLACKHOLE_TABLE = "mptcplab_bh"


def project_tarball(root: Path = REPO) -> bytes:
    """The project's code and data files (no caches, results or venv) as a .tar.gz."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in ("pyproject.toml",):
            if (root / name).exists():
                tar.add(root / name, arcname=name)
        for d in PROJECT_DIRS:
            for f in sorted((root / d).rglob("*")):
                rel = f.relative_to(root)
                if f.is_file() and "__pycache__" not in rel.parts and f.suffix != ".parquet":
                    tar.add(f, arcname=str(rel))
    return buf.getvalue()


def deploy_project(host: Host, remote_dir: str, tarball: bytes | None = None) -> str:
    """Copy the project to `remote_dir` on the host (SFTP, then tar there); returns the dir."""
    import tempfile

    data = tarball if tarball is not None else project_tarball()
    with tempfile.NamedTemporaryFile(suffix=".tar.gz") as f:
        f.write(data)
        f.flush()
        remote_tar = f"{remote_dir}.tar.gz"
        host.run(["mkdir", "-p", remote_dir])
        host.put(Path(f.name), Path(remote_tar))
    host.run(["tar", "-xzf", remote_tar, "-C", remote_dir])
    host.run(["rm", "-f", remote_tar])
    return remote_dir


class RemoteCapture(Capture):
    """tcpdump on remote interfaces, each into a folder on its host (targets: host, device,
    file name, folder); stop() fetches the files and removes them and their folders there."""

    def __init__(self, targets: list[tuple[Host, str, str, str]], outdir: Path, **kw):
        super().__init__([(h, dev) for h, dev, _, _ in targets], outdir, **kw)
        self.names = [name for _, _, name, _ in targets]
        self.dirs = [d for _, _, _, d in targets]

    def start(self, timeout: float = 30.0) -> None:
        self.outdir.mkdir(parents=True, exist_ok=True)
        for (host, dev), name, d in zip(self.targets, self.names, self.dirs, strict=True):
            host.run(["mkdir", "-p", d])
            self._tcpdump(host, dev, f"{d}/{name}")
        self._wait_listening(timeout)

    def stop(self) -> list[Path]:
        super().stop()  # the tcpdumps; the files are fetched here
        for (host, _), name, d in zip(self.targets, self.names, self.dirs, strict=True):
            local = self.outdir / name
            if local in self.files:
                continue
            try:
                host.get(Path(f"{d}/{name}"), local)
                self.files.append(local)
            except OSError as e:
                log.warning("capture %s on %s not fetched: %s", name, host.name, e)
            host.run(["rm", "-f", f"{d}/{name}"], check=False)
            host.run(["rmdir", "--ignore-fail-on-non-empty", d], check=False)
        return list(self.files)


class SshNetwork(NetworkBase):
    """The inventory's machines as a testbed.network.Network, for one run."""

    def __init__(
        self,
        inventory: Inventory,
        hosts: dict[str, Any],
        project: dict[str, str],
        *,
        workdir: Path | None = None,
        seed: int | None = None,
    ):
        self.inventory = inventory
        self.topo: Topology = inventory.topology()
        self.hosts = hosts  # role -> SshHost (connected by the factory)
        self.project = project  # role -> the project's folder on that machine
        self.workdir = Path(workdir) if workdir else None
        self.seed = seed
        self.paths: list[ResolvedPath] = [self._resolve(n) for n in inventory.paths]
        self._saved: dict[str, dict[str, Any]] = {}  # role -> mptcp endpoints/limits before
        self._routes: dict[tuple[str, str], list[str]] = {}  # (role, dev) -> its routes
        self._down: set[tuple[str, str]] = set()  # interfaces we took down
        self._blackholed: set[tuple[str, str]] = set()
        self._captures: list[Capture] = []
        self._events: list[EventRun] = []

    # ---- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> SshNetwork:
        for role, h in self.hosts.items():
            if not h.alive:
                raise ConnectionError(f"host {role} ({self._m(role).address}): connection lost")
            lim = h.run(["ip", "mptcp", "limits", "show"], check=False).stdout
            eps = h.run(["ip", "mptcp", "endpoint", "show"], check=False).stdout
            self._saved[role] = {"limits": lim, "endpoints": eps}
            for i in self._m(role).interfaces:
                self._routes[(role, i.dev)] = self._read_routes(h, i.dev)
        if self.workdir:
            self.workdir.mkdir(parents=True, exist_ok=True)
            (self.workdir / "machines.txt").write_text(
                "".join(
                    f"{r}: {self._m(r).where}\n{self._saved[r]['limits']}"
                    f"{self._saved[r]['endpoints']}"
                    for r in self.hosts
                )
            )
        return self

    def __exit__(self, *exc: object) -> None:
        for ev in self._events:
            _quietly(ev.cancel)
        for cap in self._captures:
            _quietly(cap.stop)
        for h in self.hosts.values():
            _quietly(h.stop_all)
        for role, dev in sorted(self._down):
            _quietly(lambda r=role, d=dev: self._set_interface(r, d, up=True))
        for role, dev in sorted(self._blackholed):
            _quietly(lambda r=role, d=dev: self._blackhole(r, d, on=False))
        for role, saved in self._saved.items():
            _quietly(lambda r=role, s=saved: self._restore_mptcp(r, s))
        self._captures.clear()

    # ---- what the runner asks ----------------------------------------------------------------

    def _m(self, role: str) -> Machine:
        return self.inventory.hosts[role]

    def host(self, name: str) -> Host:
        if name not in self.hosts:
            raise KeyError(f"no host plays {name!r} in {self.inventory.source}")
        return self.hosts[name]

    def project_dir(self, host: str) -> str:
        """Where the project was copied on that machine (its mptcp_impl, its tools)."""
        return self.project[host]

    def python(self, host: str) -> str:
        """The python to run the project's programs with on that machine."""
        return self._m(host).python

    def addr(self, host: str, link: str) -> str:
        return self._m(host).interface(link).ip

    def intf(self, node: str, link: str) -> str:
        return self._m(node).interface(link).dev

    def describe(self) -> dict[str, Any]:
        return {"kind": "ssh", **self.inventory.describe()}

    def clock_offsets(self) -> dict[str, dict[str, Any]]:
        """Each machine's clock against this one (testbed.clock, over its SSH connection),
        measured now: the run's captures are timestamped by their machines' clocks and its
        events by ours. A machine whose probe fails says why instead."""
        out: dict[str, dict[str, Any]] = {}
        for role, h in self.hosts.items():
            try:
                out[role] = measure_offset(h.client, self.python(role)).as_dict()
            except Exception as e:  # noqa: BLE001 - a run is not refused for it; it is recorded
                out[role] = {"error": f"{type(e).__name__}: {e}"}
        return out

    def _resolve(self, name: str) -> ResolvedPath:
        p = self.inventory.paths[name]
        dst = self._m(p["to"])
        return ResolvedPath(
            name=name,
            src=p["from"],
            dst=p["to"],
            src_addr=self.addr(p["from"], p["link"]),
            dst_addr=dst.interfaces[0].ip,
            links=(p["link"],),
            want_rtt_ms=float(p.get("rtt_ms", 0.0)),
            want_mbit=p.get("rate_mbit"),
        )

    def capture(self, outdir: Path, hosts: list[str] | None = None, snaplen: int = 128) -> Capture:
        """tcpdump on every interface of the chosen hosts (roles), fetched back on stop()."""
        targets = []
        for role in hosts or list(self.hosts):
            for i in self._m(role).interfaces:
                # <host>-<intf>.pcap, as analysis/ reads it: no dash inside the device name
                name = f"{role}-{i.dev.replace('-', '_')}.pcap"
                targets.append((self.hosts[role], i.dev, name, f"{self.project[role]}/pcap"))
        cap = RemoteCapture(targets, Path(outdir), snaplen=snaplen)
        self._captures.append(cap)
        cap.start()
        return cap

    def default_endpoints(self, host: str, flags: str = "subflow") -> list[tuple[str, str, str]]:
        return [(i.ip, i.dev, flags) for i in self._m(host).interfaces[1:]]

    # ---- link events -------------------------------------------------------------------------

    def _link_end(self, link: str) -> str:
        spec = self.topo.links[link]
        return spec.a  # always a host: a one-host link's other end is the pseudo-node "net"

    def apply(self, ev: LinkEvent) -> None:
        role = self._link_end(ev.link)
        dev = self.intf(role, ev.link)
        if ev.action not in ("down", "up"):
            raise ValueError(
                f"link {ev.link}: a '{ev.action}' event needs link emulation, which real "
                "machines over SSH do not have (only down/up)"
            )
        if ev.mode == "interface":
            self._set_interface(role, dev, up=ev.action == "up")
        else:
            self._blackhole(role, dev, on=ev.action == "down")

    def schedule(self, events: list[LinkEvent], t0: float | None = None) -> EventRun:
        for ev in events:
            if ev.link not in self.topo.links:
                raise ValueError(f"event at {ev.at}s names link {ev.link!r}, not in the inventory")
            if ev.action == "set":
                raise ValueError(
                    f"event at {ev.at}s: 'set' needs link emulation; real machines over SSH "
                    "take down/up only"
                )
        run = EventRun(self.apply, events, t0 if t0 is not None else time.monotonic())
        self._events.append(run)
        run.start()
        return run

    @staticmethod
    def _read_routes(h: Host, dev: str) -> list[str]:
        """The IPv4 routes through dev in every table, as `ip route` arguments."""
        out = h.run(["ip", "-4", "-o", "route", "show", "table", "all", "dev", dev], check=False)
        routes = []
        for line in out.stdout.splitlines():
            words = [w for w in line.split() if w not in ("linkdown", "dead")]
            if words:
                routes.append(" ".join(words))
        return routes

    def _set_interface(self, role: str, dev: str, *, up: bool) -> None:
        h = self.hosts[role]
        batch = [f"link set dev {dev} {'up' if up else 'down'}"]
        if up:  # going down flushed the routes through it: put them back
            batch += [f"route replace {r} dev {dev}" for r in self._routes.get((role, dev), [])]
        h.run(["ip", "-force", "-batch", "-"], input="\n".join(batch) + "\n")
        (self._down.discard if up else self._down.add)((role, dev))

    def _blackhole(self, role: str, dev: str, *, on: bool) -> None:
        table = f"{BLACKHOLE_TABLE}_{dev.replace('-', '_').replace('.', '_')}"
        h = self.hosts[role]
        if on:
            rules = (
                f"table inet {table} {{\n"
                f"  chain in {{ type filter hook input priority -300; iifname {dev!r} drop; }}\n"
                f"  chain out {{ type filter hook output priority -300; oifname {dev!r} drop; }}\n"
                "}\n"
            ).replace("'", '"')
            h.run(["nft", "-f", "-"], input=rules)
            self._blackholed.add((role, dev))
        else:
            h.run(["nft", "delete", "table", "inet", table], check=False)
            self._blackholed.discard((role, dev))

    def _restore_mptcp(self, role: str, saved: dict[str, Any]) -> None:
        batch = ["mptcp endpoint flush"]
        lim = saved["limits"].split()
        if "subflows" in lim or "add_addr_accepted" in lim:
            batch.append("mptcp limits set " + " ".join(lim))
        for line in saved["endpoints"].splitlines():
            if line.strip():
                batch.append("mptcp endpoint add " + line.strip())
        self.hosts[role].run(["ip", "-force", "-batch", "-"], input="\n".join(batch) + "\n")


class SshNetworkFactory:
    """Builds an SshNetwork for each run of a campaign over one set of SSH connections.

    `open()` (or `with`) checks every machine (testbed.inventory.check_machines: MachineError
    names each machine and what it lacks) and copies the project to each through SFTP."""

    def __init__(
        self,
        inventory: Inventory,
        *,
        accept_new_host_keys: bool = False,
        roles: list[str] | None = None,
    ):
        self.inventory = inventory
        self.accept_new_host_keys = accept_new_host_keys
        self.roles = roles or list(inventory.hosts)
        self.hosts: dict[str, Any] = {}
        self.project: dict[str, str] = {}

    def open(self) -> SshNetworkFactory:
        machines = [self.inventory.hosts[r] for r in self.roles]
        self.hosts = check_machines(
            machines,
            self.inventory.known_hosts,
            accept_new_host_keys=self.accept_new_host_keys,
        )
        tarball = project_tarball()
        stamp = f"{int(time.time())}"
        for role, h in self.hosts.items():
            m = self.inventory.hosts[role]
            remote = deploy_project(h, f"{m.workdir}/project-{stamp}", tarball)
            self.project[role] = remote
            h.env["PYTHONPATH"] = remote
            log.info("project copied to %s:%s", m.name, remote)
        return self

    def close(self) -> None:
        for role, h in self.hosts.items():
            if role in self.project and h.alive:
                _quietly(lambda h=h, d=self.project[role]: h.run(["rm", "-rf", d], check=False))
            _quietly(h.close)
        self.hosts.clear()

    def __enter__(self) -> SshNetworkFactory:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, topo: Topology, *, workdir: Path, seed: int | None) -> SshNetwork:
        return SshNetwork(self.inventory, self.hosts, self.project, workdir=workdir, seed=seed)

    def describe(self) -> dict[str, Any]:
        return {"kind": "ssh", **self.inventory.describe(), "project": dict(self.project)}


def _quietly(fn) -> None:
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - teardown goes on whatever one step says
        log.warning("teardown step failed: %s", e)


__all__ = ["SshNetwork", "SshNetworkFactory", "RemoteCapture", "deploy_project", "Process"]
