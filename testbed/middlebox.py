"""Middleboxes on links: what a link's `middlebox` setting does, set up on its router end.

In the router's namespace:

    nft table ip mptcplab_nat, chain postrouting (nat, srcnat):
        ip saddr SUBNET oifname != X counter masquerade        (nat: the link's far side)
    ... chain forward (filter): oifname X ip daddr SUBNET ct state new counter drop
                                           (and no connection opens from outside, as behind a NAT)
    iptables security FORWARD -> MPTCPLAB_MBOX:
        -p tcp -i X -j NFQUEUE --queue-num 100+2i            (what arrives on port i)
        -p tcp -o X -j NFQUEUE --queue-num 101+2i            (what leaves by it)

and, when some port has a kind other than nat, one `python -m testbed.mangle` process that
rewrites the queued packets (see testbed/mangle.py for what each kind does). The security table's
FORWARD hook comes after the delay emulator's (mangle and filter FORWARD, testbed/emulation.py),
so a packet is delayed first and rewritten on its way out; no queue bypass: without the process
the packets are dropped, never passed unchanged by a middlebox that silently vanished.

Why userspace for stripping options: nft can match TCP options but the nft 1.0.6 here cannot
reset them (`tcp option mptcp reset` does not parse), so the rewriter replaces them with NOPs.

Teardown is exact, like the emulator's: rules first, then the process (by its pid; every process
a Host starts is recorded for `./inv clean`), then the nft table and any iptables-nft table that
exists only because of us. Everything lives in the router's namespace, so a killed run's leftovers
go with the namespace that `./inv clean` removes.
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass
from ipaddress import IPv4Network

from testbed.emulation import RouterQueues, _collect, _run
from testbed.host import Host

NAT_TABLE = "mptcplab_nat"
CHAIN = "MPTCPLAB_MBOX"
QUEUE_BASE = 100  # the delay emulator's queues are 0..2*ports


@dataclass
class MiddleboxPort:
    """A router interface whose link has a middlebox."""

    link: str
    intf: str  # the router's interface on that link
    kind: str  # one of testbed.topology.MIDDLEBOXES but "none"
    subnet: IPv4Network  # the link's subnet (nat: what gets masqueraded)


class RouterMiddlebox(RouterQueues):
    """The middleboxes of the links attached to one router."""

    WORKER = "mangle"

    def __init__(
        self, host: Host, ports: list[MiddleboxPort], *, options: dict | None = None, **kw
    ):
        """kw: log_path, seed, ready_timeout (RouterQueues)."""
        super().__init__(host, **kw)
        self.ports = list(ports)
        self.options = dict(options or {})  # testbed.mangle settings: after_bytes, mss_clamp
        self._rules = False
        self._nat = False

    @property
    def mangled(self) -> list[tuple[int, MiddleboxPort]]:
        return [(i, p) for i, p in enumerate(self.ports) if p.kind != "nat"]

    def queues(self, i: int) -> tuple[int, int]:
        """Port i's queues: (what arrives on its interface, what leaves by it)."""
        return QUEUE_BASE + 2 * i, QUEUE_BASE + 2 * i + 1

    # -- setup ---------------------------------------------------------------------------------

    def _config(self) -> dict:
        queues = {}
        for i, p in self.mangled:
            for q in self.queues(i):
                queues[str(q)] = {"kind": p.kind, "port": i}
        return {"seed": self.seed, "queues": queues, **self.options}

    def _queue_rules(self) -> None:
        script = ["*security", f":{CHAIN} - [0:0]", f"-A FORWARD -j {CHAIN}"]
        for i, p in self.mangled:
            q_in, q_out = self.queues(i)
            script.append(f"-A {CHAIN} -p tcp -i {p.intf} -j NFQUEUE --queue-num {q_in}")
            script.append(f"-A {CHAIN} -p tcp -o {p.intf} -j NFQUEUE --queue-num {q_out}")
        script.append("COMMIT")
        _run(self.host, ["iptables-restore", "-w", "--noflush"], stdin="\n".join(script) + "\n")

    def _nat_script(self) -> str:
        lines = [
            f"table ip {NAT_TABLE} {{",
            "  chain postrouting { type nat hook postrouting priority srcnat; policy accept;",
        ]
        for p in self.ports:
            if p.kind == "nat":
                lines.append(f'    ip saddr {p.subnet} oifname != "{p.intf}" counter masquerade')
        lines += ["  }"]
        # like a NAT without port forwarding: nothing from outside opens a connection inside
        lines.append("  chain forward { type filter hook forward priority filter; policy accept;")
        for p in self.ports:
            if p.kind == "nat":
                lines.append(
                    f'    oifname "{p.intf}" ip daddr {p.subnet} ct state new counter drop'
                )
        lines += ["  }", "}"]
        return "\n".join(lines) + "\n"

    def _setup(self) -> None:
        """The process first (so no packet meets a queue without a listener), then the rules."""
        self._tables_before = self._tables()
        if self.mangled:
            self._start_process()
            self._rules = True
            self._queue_rules()
        if any(p.kind == "nat" for p in self.ports):
            self._nat = True
            _run(self.host, ["nft", "-f", "-"], stdin=self._nat_script())

    # -- use -----------------------------------------------------------------------------------

    def stats(self) -> dict[str, dict]:
        """Per link and direction ("in": arriving on the router's interface, "out": leaving by
        it): what the process did (packets, changed, and per kind options_stripped, flows,
        bytes_rewritten, merged, mss_clamped, split); nat: connections the masquerade rule
        translated (the nat hook sees a connection's first packet only) and packets of
        connections from outside dropped (inbound_refused)."""
        out: dict[str, dict] = {}
        if self.running:
            raw = self._command({"op": "stats"})["stats"]
            for i, p in self.mangled:
                q_in, q_out = self.queues(i)
                out[p.link] = {"kind": p.kind, "in": raw[str(q_in)], "out": raw[str(q_out)]}
        if self._nat:
            res = self.host.run(["nft", "-j", "list", "table", "ip", NAT_TABLE])
            rules = [r["rule"] for r in json.loads(res.stdout)["nftables"] if "rule" in r]

            def counts(chain: str) -> list[int]:  # one rule per nat port, in port order
                return [
                    next((e["counter"]["packets"] for e in r["expr"] if "counter" in e), 0)
                    for r in rules
                    if r["chain"] == chain
                ]

            nat_ports = [p for p in self.ports if p.kind == "nat"]
            for p, n, d in zip(nat_ports, counts("postrouting"), counts("forward"), strict=True):
                out[p.link] = {
                    "kind": "nat",
                    "masqueraded_connections": n,
                    "inbound_refused": d,
                }
        return out

    # -- teardown ------------------------------------------------------------------------------

    def _remove_rules(self) -> None:
        script = f"*security\n-D FORWARD -j {CHAIN}\n-F {CHAIN}\n-X {CHAIN}\nCOMMIT\n"
        _run(self.host, ["iptables-restore", "-w", "--noflush"], stdin=script)

    def stop(self, *, namespace_going: bool = False) -> None:
        """Rules, process, tables; idempotent, every step runs (the first error is raised).
        namespace_going: the caller deletes the router's namespace next, and the rules and
        tables with it: only the process is stopped (as when the node is gone already)."""
        alive = self.host.alive and not namespace_going
        errors: list[Exception] = []
        if self._rules:
            self._rules = False
            if alive:
                _collect(errors, self._remove_rules)
        if self.proc is not None:
            proc, self.proc = self.proc, None
            _collect(errors, proc.stop, signal.SIGTERM, 5)
        if self._nat:
            self._nat = False
            if alive:
                _collect(errors, _run, self.host, ["nft", "delete", "table", "ip", NAT_TABLE])
        if alive:
            _collect(errors, self._remove_new_tables, "security")
        if errors:
            raise errors[0]
