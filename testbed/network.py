"""The network an experiment runs on, as the runner sees it: the one seam between experiments
and the machines.

`testbed.net.Testbed` (Mininet namespaces on this machine) is one implementation; a set of real
machines reached over SSH (testbed.ssh.SshHost as their Host) is another (testbed.sshnet.SshNetwork, from an inventory). The runner
only ever holds a `Network`, made by a `NetworkFactory` it is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from testbed.capture import Capture
from testbed.events import EventRun, LinkEvent
from testbed.host import Host
from testbed.routing import ResolvedPath
from testbed.topology import Topology


@runtime_checkable
class Network(Protocol):
    """A running topology: its hosts, paths and addresses, captures, link events and the
    kernel MPTCP setup of its hosts. A context manager: leaving it tears everything down."""

    topo: Topology
    paths: list[ResolvedPath]  # the topology's named paths, resolved to addresses and links

    def __enter__(self) -> Network: ...

    def __exit__(self, *exc: object) -> None: ...

    def host(self, name: str) -> Host: ...

    def addr(self, host: str, link: str) -> str:
        """The host's IPv4 address on a link."""
        ...

    def intf(self, node: str, link: str) -> str:
        """The node's interface name on a link."""
        ...

    def capture(
        self, outdir: Path, hosts: list[str] | None = None, snaplen: int = 128
    ) -> Capture: ...

    def schedule(self, events: list[LinkEvent], t0: float | None = None) -> EventRun:
        """Apply link events at t0 + their times (t0 a time.monotonic() value)."""
        ...

    def kernel_mptcp(
        self,
        host: str,
        *,
        limits: dict[str, int] | None = None,
        endpoints: list[tuple[str, str, str]] | None = None,
    ) -> None: ...

    def default_endpoints(self, host: str, flags: str = "subflow") -> list[tuple[str, str, str]]:
        """(address, device, flags) for each extra address of a multi-homed host."""
        ...


class NetworkBase:
    """What the Network implementations (testbed.net.Testbed, testbed.sshnet.SshNetwork) do
    alike; they have `hosts`, host name -> Host."""

    hosts: dict[str, Host]

    def kernel_mptcp(
        self,
        host: str,
        *,
        limits: dict[str, int] | None = None,
        endpoints: list[tuple[str, str, str]] | None = None,
    ) -> None:
        """Configure Linux MPTCP in one host: limits, then its endpoint list replaced.

        endpoints: (address, device, flags) with flags like "subflow", "signal", "backup",
        "fullmesh" or combinations ("subflow backup").
        """
        limits = limits or {"subflows": 8, "add_addr_accepted": 8}
        batch = [
            "mptcp limits set " + " ".join(f"{k} {v}" for k, v in limits.items()),
            "mptcp endpoint flush",
        ]
        for addr, dev, flags in endpoints or []:
            batch.append(f"mptcp endpoint add {addr} dev {dev} {flags}")
        self.hosts[host].run(["ip", "-batch", "-"], input="\n".join(batch) + "\n")


class NetworkFactory(Protocol):
    """How the runner gets a fresh network for one run (testbed.net.Testbed is one)."""

    def __call__(self, topo: Topology, *, workdir: Path, seed: int | None) -> Network: ...
