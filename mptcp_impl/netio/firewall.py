"""Keep the kernel's TCP away from the segments our userspace stack owns.

Our segments reach the kernel too (a packet socket only taps them); without a rule the kernel
would answer a SYN-ACK for a connection it does not know with a RST. Each process installs one
nft table named ``mptcplab_<pid>`` in its network namespace with an input drop per local
(address, port) it uses, and deletes the table at exit: the name says which process owns it, so
a cleanup tool can remove leftovers of dead processes and nothing else.

The port itself is reserved from the kernel with a plain bound socket that never listens, so that
no kernel socket is handed the same port while we use it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from dataclasses import dataclass, field

TABLE_PREFIX = "mptcplab_"


class FirewallError(RuntimeError):
    pass


def _nft(*args: str, input_text: str | None = None) -> str:
    cmd = ["nft", *args]
    if input_text is not None:
        cmd = ["nft", "-f", "-"]
    res = subprocess.run(cmd, input=input_text, capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        raise FirewallError(f"{' '.join(cmd)} failed: {res.stderr.strip()}")
    return res.stdout


@dataclass
class KernelFence:
    """The per-process nft table; rules are added and removed by handle."""

    table: str = field(default_factory=lambda: f"{TABLE_PREFIX}{os.getpid()}")
    _handles: dict[tuple[str | None, int], int] = field(default_factory=dict)
    _refs: dict[tuple[str | None, int], int] = field(default_factory=dict)
    _created: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _ensure_table(self) -> None:
        if self._created:
            return
        remove_stale_tables()
        # Priority -300 (raw): before conntrack, so fenced segments leave no conntrack state.
        _nft(
            input_text=(
                f"table ip {self.table} {{\n"
                f"  chain fence {{ type filter hook prerouting priority -300; policy accept; }}\n"
                f"}}\n"
            )
        )
        self._created = True

    def block(self, addr: str | None, port: int) -> None:
        """Drop incoming TCP to (addr, port) before the kernel's TCP sees it (refcounted)."""
        key = (addr if addr not in (None, "0.0.0.0") else None, port)
        with self._lock:
            if key in self._refs:
                self._refs[key] += 1
                return
            self._ensure_table()
            match = f"ip daddr {key[0]} " if key[0] else ""
            out = _nft(
                "-e",
                "-a",
                "add",
                "rule",
                "ip",
                self.table,
                "fence",
                *f"{match}tcp dport {port} drop".split(),
            )
            handle = _parse_handle(out)
            self._handles[key] = handle
            self._refs[key] = 1

    def unblock(self, addr: str | None, port: int) -> None:
        key = (addr if addr not in (None, "0.0.0.0") else None, port)
        with self._lock:
            if key not in self._refs:
                return
            self._refs[key] -= 1
            if self._refs[key] > 0:
                return
            del self._refs[key]
            handle = self._handles.pop(key)
            try:
                _nft("delete", "rule", "ip", self.table, "fence", "handle", str(handle))
            except FirewallError:
                pass
            if not self._refs:
                self.close()

    def close(self) -> None:
        """Delete the whole table (and with it every rule this process added)."""
        if self._created:
            try:
                _nft("delete", "table", "ip", self.table)
            except FirewallError:
                pass
            self._created = False
            self._handles.clear()
            self._refs.clear()


def _parse_handle(out: str) -> int:
    # `nft -e -a add rule ...` echoes the rule with "# handle N".
    for tok_line in out.splitlines():
        if "# handle" in tok_line:
            return int(tok_line.rsplit("# handle", 1)[1].split()[0])
    raise FirewallError(f"no handle in nft output: {out!r}")


def list_tables() -> list[str]:
    """Names of our tables in this namespace (used by tests to check cleanup)."""
    out = _nft("-j", "list", "tables")
    names = []
    for item in json.loads(out).get("nftables", []):
        t = item.get("table")
        if t and t["name"].startswith(TABLE_PREFIX):
            names.append(t["name"])
    return names


def remove_stale_tables() -> list[str]:
    """Delete this namespace's ``mptcplab_<pid>[_<purpose>]`` tables whose process is gone
    (SIGKILL, crash): the fence, and the proxy's redirect (mptcp_impl/proxy.py).

    Only tables of dead pids are touched: a live process's table is its own business.
    """
    removed = []
    try:
        names = list_tables()
    except (FirewallError, ValueError):
        return removed
    for name in names:
        pid = name[len(TABLE_PREFIX) :].split("_", 1)[0]  # mptcplab_<pid>[_<purpose>]
        if pid.isdigit() and int(pid) != os.getpid() and not os.path.exists(f"/proc/{pid}"):
            try:
                _nft("delete", "table", "ip", name)
                removed.append(name)
            except FirewallError:
                pass
    return removed


_FENCE: KernelFence | None = None


def process_fence() -> KernelFence:
    """The one fence of this process (one table per process, as its name promises)."""
    global _FENCE
    if _FENCE is None:
        _FENCE = KernelFence()
    return _FENCE


def reserve_port(addr: str, port: int) -> tuple[socket.socket, int]:
    """Bind a kernel TCP socket to (addr, port) without listening; port 0 picks an ephemeral one.

    Returns the socket (keep it open for as long as the port is ours) and the port.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((addr, port))
    except OSError:
        s.close()
        raise
    return s, s.getsockname()[1]
