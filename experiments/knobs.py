"""The kernel's knobs as experiment factors: per-namespace sysctls, socket buffers and TCP
congestion control, checked against the running kernel when the file is read.

Three forms, all gridable and all recorded:

- ``[sysctl]`` (grid key ``"sysctl.<name>"``, ``--set sysctl.<name>=V``): any writable
  ``net.mptcp.*`` or ``net.ipv4.tcp_*`` sysctl, set in every host's namespace before the stacks
  are configured, for every stack of the run (they are the namespace's, not a stack's)::

      [sysctl]
      "net.mptcp.stale_loss_cnt" = 2
      "net.mptcp.add_addr_timeout" = 30
      [grid]
      "sysctl.net.mptcp.stale_loss_cnt" = [2, 4]

- ``tcp_rmem`` / ``tcp_wmem`` in ``[stack.tcp]``, ``[stack.kernel-mptcp]`` (the hosts'
  ``net.ipv4.tcp_rmem``/``tcp_wmem``), ``[stack.userspace]`` and ``[stack.userspace-proxy]``
  (our stack's fixed receive / send buffer, ``TcpConfig.rcv_buf``/``snd_buf``): a number of
  bytes N (the kernel: "4096 N N", a buffer that starts at N and never grows past it; ours has
  no autotuning) or, for the kernel stacks, the sysctl's three numbers [min, default, max].
- ``cc`` in ``[stack.tcp]`` and ``[stack.kernel-mptcp]``: a name from
  ``net.ipv4.tcp_available_congestion_control``, pinned on every host's routes (``congctl``,
  as the Mininet testbed pins cubic on them: a route's choice wins over a socket's at
  connect, and it reaches the subflows the kernel opens) and set on the traffic tool's
  sockets (TCP_CONGESTION, before connect and once connected or accepted; an MPTCP socket
  hands it to its subflows). Not ``net.ipv4.tcp_congestion_control``: outside the root
  namespace Linux lets the default be only one of ``tcp_allowed_congestion_control`` (EPERM
  otherwise; cubic is not allowed here), and that sysctl is refused for the others.

Names the kernel lacks, read-only ones and values outside what it offers are refused with the
file and the field before any namespace is made (the check reads this machine's /proc/sys).
Writing ``net.mptcp.checksum_enabled = 1`` is refused on a topology whose middlebox rewrites,
merges or splits payload: Linux 6.18 deadlocks after the MP_FAIL that follows (the client stuck
in D state until reboot; tests/middleboxes/test_middleboxes.py), a clean path is fine.
"""

from __future__ import annotations

import os
from typing import Any

from experiments.errors import ExperimentError
from testbed.sysctl import normalise, read_sysctls, set_sysctls, sysctl_file

SYSCTL = "sysctl"  # the experiment's table, and the grid / --set prefix "sysctl."
PER_NETNS = ("net.mptcp.", "net.ipv4.tcp_")
# a sysctl whose value must be one of those another lists
CHOICES = {
    "net.mptcp.scheduler": "net.mptcp.available_schedulers",
    "net.mptcp.path_manager": "net.mptcp.available_path_managers",
    # a namespace's default congestion control may only be an allowed one (see above)
    "net.ipv4.tcp_congestion_control": "net.ipv4.tcp_allowed_congestion_control",
}
FLAGS = (
    "net.mptcp.enabled",
    "net.mptcp.checksum_enabled",
    "net.mptcp.allow_join_initial_addr_port",
)
RANGES = {"net.mptcp.pm_type": (0, 1), **{f: (0, 1) for f in FLAGS}}
CHECKSUM = "net.mptcp.checksum_enabled"
# middleboxes after which a DSS checksum fails: MP_FAIL, then Linux 6.18's deadlock
PAYLOAD_MIDDLEBOXES = ("payload-rewrite", "coalesce", "split")
AVAILABLE_CC = "net.ipv4.tcp_available_congestion_control"
MIN_BUFFER = 4096


def _read(name: str) -> str | None:
    try:
        return normalise(sysctl_file(name).read_text())
    except OSError:
        return None


def sysctl_value(source: str, where: str, name: str, value: Any) -> str:
    """The text to write for `name` = `value`, refused (naming `where`) when this kernel has
    no such per-namespace sysctl, cannot write it, or does not offer the value."""
    if not name.startswith(PER_NETNS):
        raise ExperimentError(
            source,
            where,
            f"{name!r}: only per-namespace sysctls are set per host "
            f"({', '.join(p + '*' for p in PER_NETNS)})",
        )
    path = sysctl_file(name)
    if not path.is_file():
        raise ExperimentError(source, where, f"this kernel has no sysctl {name} ({path} missing)")
    if not os.stat(path).st_mode & 0o222:
        raise ExperimentError(source, where, f"{name} is read-only")
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, list):
        if not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ExperimentError(source, where, f"expected a list of integers, got {value!r}")
        text = " ".join(str(v) for v in value)
    elif isinstance(value, int | str):
        text = normalise(str(value))
    else:
        raise ExperimentError(
            source, where, f"expected a number, a string or a list of numbers, got {value!r}"
        )
    if not text:
        raise ExperimentError(source, where, "empty value")
    current = _read(name) or ""
    if len(current.split()) != len(text.split()):
        raise ExperimentError(
            source,
            where,
            f"{name} takes {len(current.split())} value(s) (now {current!r}), got {text!r}",
        )
    if current.split()[0].lstrip("-").isdigit() and not all(
        w.lstrip("-").isdigit() for w in text.split()
    ):
        raise ExperimentError(source, where, f"{name} is a number, got {value!r}")
    if name in RANGES:
        lo, hi = RANGES[name]
        if not lo <= int(text) <= hi:
            raise ExperimentError(source, where, f"{name} must be {lo}..{hi}, got {text}")
    if name in CHOICES:
        offered = (_read(CHOICES[name]) or "").split()
        if text not in offered:
            raise ExperimentError(
                source,
                where,
                f"{text!r} is not offered by this kernel ({CHOICES[name]}: {' '.join(offered)})"
                + (
                    "; a socket may still use any of tcp_available_congestion_control: "
                    "[stack.<stack>] cc"
                    if name == "net.ipv4.tcp_congestion_control"
                    else ""
                ),
            )
    return text


def validate_sysctls(source: str, where: str, table: dict[str, Any]) -> dict[str, str]:
    """[sysctl] as {name: text}; TOML's nested form (net.mptcp.x = 1, unquoted) is flattened."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        for k, v in node.items():
            name = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict):
                walk(name, v)
            else:
                flat[name] = v

    walk("", table)
    return {k: sysctl_value(source, f"{where}.{k}", k, v) for k, v in flat.items()}


def congestion_control(source: str, where: str, value: Any) -> str:
    """A congestion control this kernel offers (tcp_available_congestion_control)."""
    offered = (_read(AVAILABLE_CC) or "").split()
    if not isinstance(value, str) or value not in offered:
        raise ExperimentError(
            source,
            where,
            f"{value!r} is not offered by this kernel ({AVAILABLE_CC}: {' '.join(offered)})",
        )
    return value


def kernel_buffer(source: str, where: str, value: Any) -> str:
    """tcp_rmem/tcp_wmem as the sysctl's text: N bytes -> "4096 N N", [min, default, max] as
    they are (min <= default <= max)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < MIN_BUFFER:
            raise ExperimentError(source, where, f"expected bytes >= {MIN_BUFFER}, got {value}")
        return f"{MIN_BUFFER} {value} {value}"
    if (
        isinstance(value, list)
        and len(value) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
        and value[0] <= value[1] <= value[2]
    ):
        return " ".join(str(v) for v in value)
    raise ExperimentError(
        source,
        where,
        f"expected bytes or [min, default, max] (min <= default <= max), got {value!r}",
    )


def userspace_buffer(source: str, where: str, value: Any) -> int:
    """Our stack's buffer: one size in bytes (it has no autotuning, so no [min, default, max])."""
    if isinstance(value, bool) or not isinstance(value, int) or value < MIN_BUFFER:
        raise ExperimentError(
            source,
            where,
            f"expected bytes >= {MIN_BUFFER} (our stack's buffers are fixed: one number), "
            f"got {value!r}",
        )
    return value


def check_checksum_path(source: str, where: str, sysctls: dict[str, str], topo: Any) -> None:
    """Refuse DSS checksums on a path whose middlebox touches payload (see the module doc)."""
    if sysctls.get(CHECKSUM) != "1":
        return
    for name, lk in topo.links.items():
        if lk.model.middlebox in PAYLOAD_MIDDLEBOXES:
            raise ExperimentError(
                source,
                where,
                f"net.mptcp.checksum_enabled = 1 with links.{name}.middlebox = "
                f"{lk.model.middlebox!r}: Linux 6.18 deadlocks after the MP_FAIL this causes "
                "(the client stuck in D state until reboot); use a clean path",
            )


def snapshot_diff(
    snap: dict[str, dict[str, str]], base: dict[str, str]
) -> dict[str, dict[str, str]]:
    """Per host, the sysctls whose value differs from `base` (the root namespace's)."""
    return {h: {k: v for k, v in vals.items() if base.get(k) != v} for h, vals in snap.items()}


def root_sysctls() -> dict[str, str]:
    """This machine's root-namespace values of the recorded sysctls (metadata.json's kernel)."""
    out = {}
    for prefix in PER_NETNS:
        tree = ".".join(prefix.split(".")[:2])  # net.mptcp, net.ipv4
        folder = sysctl_file(tree)
        for p in sorted(folder.iterdir()) if folder.is_dir() else []:
            name = f"{tree}.{p.name}"
            if p.is_file() and name.startswith(prefix):
                try:
                    out[name] = normalise(p.read_text())
                except OSError:  # entries the kernel refuses to read
                    continue
    return out


def apply(tb: Any, hosts: list[str], sysctls: dict[str, str]) -> None:
    """Set a run's sysctls in every host's namespace; a value the kernel does not read back
    as written stops the run (it would not be the run the file describes)."""
    for h in hosts if sysctls else []:
        got = set_sysctls(tb.host(h), sysctls)
        if got != sysctls:
            raise RuntimeError(f"sysctls on {h}: set {sysctls}, the kernel has {got}")


def snapshot(tb: Any, hosts: list[str]) -> dict[str, dict[str, str]]:
    """Per host, its namespace's net.mptcp.* and net.ipv4.tcp_* as they are now."""
    return {h: read_sysctls(tb.host(h)) for h in hosts}


def not_in_force(sysctls: dict[str, str], snap: dict[str, dict[str, str]]) -> list[str]:
    """The set values some host no longer had (in words), e.g. at the end of the traffic."""
    return [
        f"{h}: {k} = {vals.get(k)!r}, not {v!r} as set"
        for h, vals in snap.items()
        for k, v in sysctls.items()
        if vals.get(k) != v
    ]
