"""Sysctls of one host's network namespace: read them all, set some, read them back.

The kernel's MPTCP and TCP settings (net.mptcp.*, net.ipv4.tcp_*) are per network namespace, so
each Mininet host has its own copy, made with the namespace (net.mptcp.* at the kernel's
defaults, net.ipv4.tcp_* mostly copied from the root namespace). An experiment sets them per
host and records them as they were; both go through `Host.run` so a real machine over SSH is
handled alike.
"""

from __future__ import annotations

from pathlib import Path

from testbed.host import Host

RECORDED = ("net.mptcp.", "net.ipv4.tcp_")  # what a run records of each host


def sysctl_file(name: str, root: Path = Path("/proc/sys")) -> Path:
    """/proc/sys/net/mptcp/stale_loss_cnt for net.mptcp.stale_loss_cnt."""
    return root / name.replace(".", "/")


def normalise(value: str) -> str:
    """The kernel prints vectors with tabs ("4096\\t131072\\t6291456"); compare them by words."""
    return " ".join(str(value).split())


def parse_sysctl_output(text: str, prefixes: tuple[str, ...] = RECORDED) -> dict[str, str]:
    """`sysctl NAME...` output ("name = value" lines) as {name: value}, kept to `prefixes`."""
    out = {}
    for line in text.splitlines():
        name, sep, value = line.partition(" = ")
        if sep and name.startswith(prefixes):
            out[name.strip()] = normalise(value)
    return out


def read_sysctls(host: Host, prefixes: tuple[str, ...] = RECORDED) -> dict[str, str]:
    """Every sysctl of `host`'s namespace under `prefixes` (a missing tree reads as nothing:
    a kernel without MPTCP has no net.mptcp)."""
    trees = sorted({".".join(p.split(".")[:2]) for p in prefixes})  # net.mptcp, net.ipv4
    res = host.run(["sysctl", *trees], check=False)
    return parse_sysctl_output(res.stdout, prefixes)


def set_sysctls(host: Host, values: dict[str, str]) -> dict[str, str]:
    """Set `values` in `host`'s namespace and return them as read back (normalised), so the
    caller can tell a value the kernel changed or refused from one in force."""
    if not values:
        return {}
    host.run(["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in values.items())])
    res = host.run(["sysctl", *values], check=False)
    return parse_sysctl_output(res.stdout, tuple(values))


def set_route_congctl(host: Host, name: str) -> int:
    """Make every route of `host` that pins a congestion control (`congctl`, as the Mininet
    testbed pins one on all its routes so results do not depend on the machine's default) pin
    `name` instead; returns how many routes changed.

    A route's congctl wins over a socket's TCP_CONGESTION set before connect(), and it is how a
    namespace gets a congestion control that tcp_allowed_congestion_control does not list (the
    namespace's default may only be an allowed one): so a run's `cc` goes here too, and joins
    that the kernel opens (MPTCP subflows) get it as well."""
    changed = 0
    for family in ("-4", "-6"):
        res = host.run(["ip", family, "route", "show", "table", "all"], check=False)
        batch = []
        for line in res.stdout.splitlines():
            words = line.split()
            if "congctl" not in words:
                continue
            i = words.index("congctl")
            # "congctl lock NAME" keeps the lock
            j = i + 2 if words[i + 1 : i + 2] == ["lock"] else i + 1
            if words[j : j + 1] == [name]:
                continue
            words[j] = name
            batch.append("route replace " + " ".join(words))
        if batch:
            host.run(["ip", family, "-batch", "-"], input="\n".join(batch) + "\n")
            changed += len(batch)
    return changed
