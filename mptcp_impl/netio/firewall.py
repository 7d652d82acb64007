"""Keep the kernel's TCP away from the segments our userspace stack owns.

Our segments reach the kernel too (a packet socket only taps them); without a rule the kernel
would answer a SYN-ACK for a connection it does not know with a RST. Each process installs one
nft table named ``mptcplab_<pid>`` in its network namespace with an input drop per local
(address, port) it uses, and deletes the table at exit: the name says which process owns it, so
a cleanup tool can remove leftovers of dead processes and nothing else.

The port itself is reserved from the kernel with a plain bound socket that never listens, so that
no kernel socket is handed the same port while we use it.

IPv6: a table of the same name in the ``ip6`` family, made when the first IPv6 address (or the
dual-stack ``::``, fenced in both) is used; IPv4-only processes never make it.
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
    _handles: dict[tuple[str | None, int], list[tuple[str, int]]] = field(default_factory=dict)
    _refs: dict[tuple[str | None, int], int] = field(default_factory=dict)
    _families: set[str] = field(default_factory=set)  # "ip", "ip6": tables made
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def _created(self) -> bool:
        return bool(self._families)

    def _ensure_table(self, family: str = "ip") -> None:
        if family in self._families:
            return
        if not self._families:
            remove_stale_tables()
        # Priority -300 (raw): before conntrack, so fenced segments leave no conntrack state.
        _nft(
            input_text=(
                f"table {family} {self.table} {{\n"
                f"  chain fence {{ type filter hook prerouting priority -300; policy accept; }}\n"
                f"}}\n"
            )
        )
        self._families.add(family)

    def block(self, addr: str | None, port: int) -> None:
        """Drop incoming TCP to (addr, port) before the kernel's TCP sees it (refcounted).
        An IPv6 address goes to the ip6 table; ``::`` (dual stack) to both, for any address."""
        key = (addr if addr not in (None, "0.0.0.0") else None, port)
        with self._lock:
            if key in self._refs:
                self._refs[key] += 1
                return
            if key[0] is None:
                rules = [("ip", "")]
            elif key[0] == "::":
                rules = [("ip", ""), ("ip6", "")]
            elif ":" in key[0]:
                rules = [("ip6", f"ip6 daddr {key[0]} ")]
            else:
                rules = [("ip", f"ip daddr {key[0]} ")]
            handles = []
            for family, match in rules:
                self._ensure_table(family)
                out = _nft(
                    "-e",
                    "-a",
                    "add",
                    "rule",
                    family,
                    self.table,
                    "fence",
                    *f"{match}tcp dport {port} drop".split(),
                )
                handles.append((family, _parse_handle(out)))
            self._handles[key] = handles
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
            for family, handle in self._handles.pop(key):
                try:
                    _nft("delete", "rule", family, self.table, "fence", "handle", str(handle))
                except FirewallError:
                    pass
            if not self._refs:
                self.close()

    def close(self) -> None:
        """Delete the whole table (and with it every rule this process added)."""
        for family in sorted(self._families):
            try:
                _nft("delete", "table", family, self.table)
            except FirewallError:
                pass
        self._families.clear()
        self._handles.clear()
        self._refs.clear()


def _parse_handle(out: str) -> int:
    # `nft -e -a add rule ...` echoes the rule with "# handle N".
    for tok_line in out.splitlines():
        if "# handle" in tok_line:
            return int(tok_line.rsplit("# handle", 1)[1].split()[0])
    raise FirewallError(f"no handle in nft output: {out!r}")


def list_tables() -> list[str]:
    """Names of our tables in this namespace (used by tests to check cleanup); a process with
    both an ip and an ip6 table is named twice."""
    return [name for _, name in _family_tables()]


def _family_tables() -> list[tuple[str, str]]:
    out = _nft("-j", "list", "tables")
    tables = []
    for item in json.loads(out).get("nftables", []):
        t = item.get("table")
        if t and t["name"].startswith(TABLE_PREFIX):
            tables.append((t.get("family", "ip"), t["name"]))
    return tables


def remove_stale_tables() -> list[str]:
    """Delete this namespace's ``mptcplab_<pid>[_<purpose>]`` tables whose process is gone
    (SIGKILL, crash): the fence, and the proxy's redirect (mptcp_impl/proxy.py).

    Only tables of dead pids are touched: a live process's table is its own business.
    """
    removed = []
    try:
        tables = _family_tables()
    except (FirewallError, ValueError):
        return removed
    for family, name in tables:
        pid = name[len(TABLE_PREFIX) :].split("_", 1)[0]  # mptcplab_<pid>[_<purpose>]
        if pid.isdigit() and int(pid) != os.getpid() and not os.path.exists(f"/proc/{pid}"):
            try:
                _nft("delete", "table", family, name)
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

    Returns the socket (keep it open for as long as the port is ours) and the port. An IPv6
    address reserves it in IPv6; ``::`` in both families (as a dual-stack kernel socket does).
    """
    v6 = ":" in addr
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM)
    try:
        if v6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if addr == "::" else 1)
        s.bind((addr, port))
    except OSError:
        s.close()
        raise
    return s, s.getsockname()[1]
