"""A userspace path-manager daemon for kernel MPTCP (``net.mptcp.pm_type = 1``): in one host's
namespace it listens to the kernel's mptcp_pm events and to its interfaces going up and down,
and drives the handover modes of Paasch et al. (CellNet 2012) with mptcp_pm commands
(testbed/mptcp_genl.py), as experiments/plugins/handover_modes.py does for our stack:

- full: a subflow from every other address as soon as the connection is established;
- backup: the same, opened with the backup flag (MP_JOIN with B=1);
- single-path: only the initial subflow; another address's subflow is opened once the current
  one is lost (its interface goes down, or its subflow closes), and the lost address is
  removed (REMOVE_ADDR) once the new subflow is up. When the first interface comes back, a
  subflow is opened there and the others are removed once it is up (one path at a time).

In every mode, when an interface goes down while another subflow is alive, its address is
removed at once (MPTCP_PM_CMD_REMOVE: REMOVE_ADDR to the peer, our subflows from it closed),
so the peer stops using the dead subflow instead of waiting for its retransmission timeouts
(what the Python managers do, for the same reason). When an interface comes back, a subflow is
opened from it again (backup mode: with the backup flag unless it is the first address), once
a route through a gateway on it is back (the testbed restores its routes just after the link).

    python -m testbed.uspm --mode backup --addr 10.0.1.1@client-eth0 --addr 10.0.2.1@client-eth1 OUT.jsonl

The first --addr is the address connections start from. It prints "monitoring" once it is
subscribed to both event sources and writes every event it saw and every command it issued
(with the kernel's answer) to OUT.jsonl, one JSON object a line in testbed/pmmonitor.py's
format, so the run's timeline shows them. It exits on SIGTERM/SIGINT and with its parent.

The decisions are a sans-I/O class (`Handover`: events in, commands out); `main` is the edge.
"""

from __future__ import annotations

import argparse
import json
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from testbed import mptcp_genl as genl
from testbed.signals import die_with_parent

MODES = ("full", "backup", "single-path")


@dataclass(frozen=True)
class Command:
    """One mptcp_pm command the manager wants issued: "subflow_create" or "remove"."""

    name: str
    token: str  # 8 hex digits, as in the events
    reason: str  # the event that led to it (for the timeline)
    saddr: str = ""
    daddr: str = ""
    dport: int = 0
    backup: bool = False
    loc_id: int | None = None

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": f"cmd_{self.name}", "token": self.token}
        if self.name == "subflow_create":
            out.update(daddr=self.daddr, dport=self.dport, backup=int(self.backup))
        out.update(saddr=self.saddr, loc_id=self.loc_id)
        out["reason"] = self.reason
        return out


@dataclass
class _Conn:
    token: str
    primary: str
    daddr: str
    dport: int
    subflows: set[tuple[str, int]] = field(default_factory=set)  # (saddr, sport) up
    loc_ids: dict[str, int] = field(default_factory=dict)  # local address -> its id
    pending: set[str] = field(default_factory=set)  # addresses asked for, not up yet
    remove_when_up: set[str] = field(default_factory=set)  # lost addresses to REMOVE later
    returning: str | None = None  # single-path: the address whose subflow replaces the others

    def addrs_up(self) -> set[str]:
        return {a for a, _ in self.subflows}


class Handover:
    """The handover modes' decisions for one host (client side): `on_event` for mptcp_pm
    events, `on_link` for its interfaces; each returns the commands to issue."""

    def __init__(self, mode: str, addrs: list[tuple[str, str]]):
        if mode not in MODES:
            raise ValueError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
        if not addrs:
            raise ValueError("addrs: at least the first address is needed")
        self.mode = mode
        self.addrs = [a for a, _ in addrs]
        self.dev_of = dict(addrs)
        self.down: set[str] = set()  # devices down
        self.conns: dict[str, _Conn] = {}

    def _usable(self, addr: str) -> bool:
        return self.dev_of.get(addr) not in self.down

    def _create(self, c: _Conn, addr: str, reason: str, *, backup: bool = False) -> Command:
        """A subflow from `addr` with an id of our choosing (its place in the address list;
        the first address, whose id 0 went with its removal, comes back as len(addrs)): the
        kernel reports a subflow it numbered itself as id 0, which REMOVE could not tell
        from the initial subflow's."""
        c.pending.add(addr)
        loc_id = self.addrs.index(addr) if addr != c.primary else len(self.addrs)
        c.loc_ids[addr] = loc_id
        return Command(
            "subflow_create", c.token, reason, addr, c.daddr, c.dport, backup=backup, loc_id=loc_id
        )

    def _remove(self, c: _Conn, addr: str, reason: str) -> Command | None:
        """REMOVE of `addr`'s id; its subflows are gone from then on (the kernel closes them
        without a SUB_CLOSED event)."""
        loc_id = c.loc_ids.pop(addr, 0 if addr == c.primary else None)
        if loc_id is None:
            return None
        c.subflows = {(a, p) for a, p in c.subflows if a != addr}
        return Command("remove", c.token, reason, saddr=addr, loc_id=loc_id)

    def _open_elsewhere(self, c: _Conn, lost: set[str], reason: str) -> list[Command]:
        """The connection has no subflow left but on `lost` addresses: one from the first
        usable other address (not as backup: it is the only path now)."""
        c.remove_when_up |= lost & ({c.primary} | set(c.loc_ids))
        for addr in self.addrs:
            if addr in lost or not self._usable(addr):
                continue
            if addr in c.pending:
                return []
            return [self._create(c, addr, reason)]
        return []

    def on_event(self, ev: dict[str, Any]) -> list[Command]:
        kind, token = ev.get("type"), ev.get("token")
        if kind == "established" and not ev.get("server_side") and ev.get("saddr") in self.dev_of:
            c = _Conn(token, ev["saddr"], ev["daddr"], ev["dport"])
            c.subflows.add((ev["saddr"], ev["sport"]))
            self.conns[token] = c
            if self.mode == "single-path":
                return []
            return [
                self._create(c, a, "established", backup=self.mode == "backup")
                for a in self.addrs
                if a != c.primary and self._usable(a)
            ]
        c = self.conns.get(token)  # type: ignore[arg-type]
        if c is None:
            return []
        if kind == "closed":
            del self.conns[token]  # type: ignore[arg-type]
            return []
        if kind == "sub_established":
            saddr = ev["saddr"]
            c.subflows.add((saddr, ev["sport"]))
            c.pending.discard(saddr)
            out = []
            for addr in sorted(c.remove_when_up - {saddr}):
                cmd = self._remove(c, addr, f"subflow from {saddr} up")
                out += [cmd] if cmd else []
            c.remove_when_up.clear()
            if c.returning == saddr:
                c.returning = None
                for addr in sorted(c.addrs_up() - {saddr}):
                    cmd = self._remove(c, addr, f"back on {saddr}")
                    out += [cmd] if cmd else []
            return out
        if kind == "sub_closed":
            saddr = ev.get("saddr", "")
            c.subflows.discard((saddr, ev.get("sport", 0)))
            c.pending.discard(saddr)
            if not c.subflows and not c.pending:
                return self._open_elsewhere(c, {saddr}, f"subflow from {saddr} closed")
        return []

    def on_link(self, dev: str, up: bool) -> list[Command]:
        was_down = dev in self.down
        if up == (not was_down):
            return []
        addrs = {a for a, d in self.dev_of.items() if d == dev}
        out: list[Command] = []
        if not up:
            self.down.add(dev)
            for c in list(self.conns.values()):
                lost = addrs & (c.addrs_up() | c.pending)
                if not lost:
                    continue
                if c.addrs_up() - lost:
                    for addr in sorted(lost):
                        cmd = self._remove(c, addr, f"{dev} down")
                        out += [cmd] if cmd else []
                else:
                    out += self._open_elsewhere(c, lost, f"{dev} down")
            return out
        self.down.discard(dev)
        for c in list(self.conns.values()):
            for addr in sorted(addrs - c.addrs_up() - c.pending):
                backup = self.mode == "backup" and addr != c.primary
                out.append(self._create(c, addr, f"{dev} up", backup=backup))
                if self.mode == "single-path":
                    c.returning = addr
        return out


# ---- rtnetlink: interfaces going up and down -----------------------------------------------

RTM_NEWLINK = 16
RTM_NEWROUTE = 24
RTMGRP_LINK = 1
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_ROUTE = 0x400
RTA_OIF, RTA_GATEWAY = 4, 5
IFF_UP = 0x1
_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst/src len, tos, table, proto, scope, type, flags


def parse_link(msg: genl.Message) -> tuple[int, bool] | None:
    """(ifindex, administratively up) of an RTM_NEWLINK message; None for other messages."""
    if msg.type != RTM_NEWLINK or len(msg.payload) < _IFINFO.size:
        return None
    _, _, index, flags, _ = _IFINFO.unpack_from(msg.payload)
    return index, bool(flags & IFF_UP)


def parse_gateway_route(msg: genl.Message) -> int | None:
    """The output interface of an RTM_NEWROUTE through a gateway (what a subflow to a remote
    peer needs from an interface that came back: the testbed puts its routes back just after
    the link is up, and a join tried before them fails); None for anything else."""
    if msg.type != RTM_NEWROUTE or len(msg.payload) < _RTMSG.size:
        return None
    attrs = dict(genl.parse_nlas(msg.payload[_RTMSG.size :]))
    if RTA_GATEWAY not in attrs or RTA_OIF not in attrs:
        return None
    return struct.unpack_from("=i", attrs[RTA_OIF])[0]


# ---- the edge -------------------------------------------------------------------------------


def _issue(pm: genl.PmSocket, cmd: Command) -> str:
    """Carry out one command; its result as the timeline shows it ("ok" or the kernel's
    refusal)."""
    token = int(cmd.token, 16)
    try:
        if cmd.name == "subflow_create":
            flags = genl.FLAG_BACKUP if cmd.backup else 0
            local = genl.Addr(cmd.saddr, id=cmd.loc_id, flags=flags)
            pm.request(genl.subflow_create, token, local, genl.Addr(cmd.daddr, port=cmd.dport))
        elif cmd.name == "remove":
            pm.request(genl.remove, token, cmd.loc_id)
        else:
            raise ValueError(f"unknown command {cmd.name}")
    except genl.NetlinkError as e:
        return f"errno {e.errno}: {e.message or 'refused'}"
    return "ok"


def _parse_addr(text: str) -> tuple[str, str]:
    addr, sep, dev = text.partition("@")
    if not sep or not addr or not dev:
        raise argparse.ArgumentTypeError(f"--addr: expected ADDR@DEV, got {text!r}")
    return addr, dev


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.uspm", description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=MODES, required=True)
    ap.add_argument("--addr", type=_parse_addr, action="append", required=True)
    ap.add_argument("out")
    args = ap.parse_args(argv)
    die_with_parent()
    manager = Handover(args.mode, args.addr)
    stop = False

    def _term(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    wake_r, wake_w = socket.socketpair()  # a signal wakes select (which Python would resume)
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    rt = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    rt.bind((0, RTMGRP_LINK | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE))
    waiting_route: set[str] = set()  # up again, no route through a gateway yet
    devs = {socket.if_nametoindex(d): d for _, d in args.addr}
    with genl.PmSocket() as pm, open(args.out, "a") as out:
        events = pm.subscribe()
        for d in devs.values():  # interfaces down already
            with open(f"/sys/class/net/{d}/flags") as f:
                if not int(f.read(), 16) & IFF_UP:
                    manager.down.add(d)
        print("monitoring", flush=True)

        def write(rec: dict[str, Any]) -> None:
            out.write(json.dumps({"time": time.time(), **rec}) + "\n")
            out.flush()

        def run(cmds: list[Command]) -> None:
            for cmd in cmds:
                write({**cmd.record(), "result": _issue(pm, cmd)})

        while not stop:
            try:
                ready, _, _ = select.select([events, rt, wake_r], [], [])
            except InterruptedError:
                continue
            if wake_r in ready:
                wake_r.recv(64)
            if events in ready:
                for ev in pm.read_events():
                    write(ev)
                    run(manager.on_event(ev))
            if rt in ready:
                for m in genl.parse_messages(rt.recv(65536)):
                    oif = parse_gateway_route(m)
                    if oif in devs and devs[oif] in waiting_route:
                        waiting_route.discard(devs[oif])
                        write({"type": "route_up", "dev": devs[oif]})
                        run(manager.on_link(devs[oif], True))
                    link = parse_link(m)
                    if link is None or link[0] not in devs:
                        continue
                    dev, up = devs[link[0]], link[1]
                    if up and dev in manager.down and dev not in waiting_route:
                        write({"type": "link_up", "dev": dev})
                        waiting_route.add(dev)  # acted on once a route through it is back
                    elif not up and dev not in manager.down:
                        waiting_route.discard(dev)
                        write({"type": "link_down", "dev": dev})
                        run(manager.on_link(dev, False))
    for s in (rt, wake_r, wake_w):
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
