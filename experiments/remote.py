"""An experiment on real machines: the inventory checked against the experiment, then the
network of those machines (testbed.sshnet) handed to the runner in place of Mininet's.

Everything that can be known before a run is checked before the first one: the file (every
host the traffic uses is played by a machine, every link an event names is one of theirs, no
event needs link emulation) and the machines (testbed.inventory.check_machines: reachable, host
key known, key accepted, root, commands, interfaces). Each problem names its machine.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from experiments.config import Experiment
from testbed.inventory import InventoryError, MachineError, load_inventory

log = logging.getLogger(__name__)


class RemoteError(RuntimeError):
    """The inventory or its machines cannot run this experiment (says which and why)."""


def check_experiment(exp: Experiment, inv) -> list[str]:
    """What the experiment asks that the inventory's machines cannot give, in words."""
    problems = []
    flows = [("traffic", exp.traffic)] + [(f"background {b.name}", b) for b in exp.background]
    for what, f in flows:
        for end in ("client", "server"):
            if getattr(f, end) not in inv.hosts:
                problems.append(
                    f"{inv.source}: {what}.{end} is {getattr(f, end)!r}, which no host plays "
                    f"(roles: {', '.join(inv.hosts) or 'none'})"
                )
    links = {i.link for m in inv.hosts.values() for i in m.interfaces}
    for e in exp.events:
        if e.link not in links:
            problems.append(
                f"{inv.source}: event at {e.at}s names link {e.link!r}, which no host has "
                f"(links: {', '.join(sorted(links))})"
            )
        if e.action == "set":
            problems.append(
                f"event at {e.at}s: '{e.action}' needs link emulation, which real machines "
                "over SSH do not have (down/up only)"
            )
    if exp.grid and any(not k.startswith("traffic.") for k in exp.grid):
        problems.append(
            f"{exp.source}: the grid varies topology parameters "
            f"({', '.join(k for k in exp.grid if not k.startswith('traffic.'))}), which real "
            "links do not take"
        )
    if exp.topology_set:
        log.warning(
            "topology parameters %s are not applied: the machines' links are real",
            exp.topology_set,
        )
    return problems


@contextlib.contextmanager
def open_network(
    exp: Experiment, inventory: str | None, accept_new_host_keys: bool = False
) -> Iterator:
    """The network factory for the runner: Mininet's Testbed without an inventory, else the
    inventory's machines (checked, the project copied to them), closed afterwards."""
    from testbed.net import Testbed

    if not inventory:
        yield Testbed
        return
    from testbed.sshnet import SshNetworkFactory

    try:
        inv = load_inventory(inventory)
    except InventoryError as e:
        raise RemoteError(str(e)) from None
    problems = check_experiment(exp, inv)
    if problems:
        raise RemoteError(
            "the experiment cannot run on these machines:\n  " + "\n  ".join(problems)
        )
    factory = SshNetworkFactory(inv, accept_new_host_keys=accept_new_host_keys)
    try:
        factory.open()
    except MachineError as e:
        raise RemoteError(str(e)) from None
    try:
        yield factory
    finally:
        factory.close()
