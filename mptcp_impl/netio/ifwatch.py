"""Local addresses coming and going (rtnetlink), for the MPTCP path manager's ``interface_up``
/ ``interface_down`` events.

One NETLINK_ROUTE socket per stack, subscribed to link and address changes (IPv4 and IPv6; IPv6
link-local addresses are left out), read by the
event loop. An address is up while it exists and its interface is up and running; a change of
either gives ``callback(address, up)``. The state at start is read with a dump and reported to
nobody (only changes are events).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable

RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR, RTM_GETLINK = (
    16,
    17,
    20,
    21,
    22,
    18,
)
RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x1, 0x10, 0x100
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_DONE = 3
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFF_UP, IFF_RUNNING = 0x1, 0x40


class InterfaceWatch:
    def __init__(
        self, loop: asyncio.AbstractEventLoop, callback: Callable[[str, bool], None]
    ) -> None:
        self.loop = loop
        self.callback = callback
        self.addrs: dict[int, set[str]] = {}  # ifindex -> addresses
        self.link_up: dict[int, bool] = {}
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
        self.sock.setblocking(False)
        self._started = False
        self._dump(RTM_GETLINK, struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0), 1)
        self._dump(RTM_GETADDR, struct.pack("=BBBBI", socket.AF_UNSPEC, 0, 0, 0, 0), 2)
        self.loop.add_reader(self.sock.fileno(), self._readable)

    def _dump(self, kind: int, body: bytes, seq: int) -> None:
        hdr = struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
        self.sock.setblocking(True)
        try:
            self.sock.send(hdr + body)
            done = False
            while not done:  # the dump's answers come before any event we report
                done = self._parse(self.sock.recv(1 << 16), report=False)
        finally:
            self.sock.setblocking(False)

    def close(self) -> None:
        try:
            self.loop.remove_reader(self.sock.fileno())
        except (ValueError, RuntimeError):
            pass
        self.sock.close()

    def up_addresses(self) -> set[str]:
        return {a for i, s in self.addrs.items() if self.link_up.get(i, True) for a in s}

    def _readable(self) -> None:
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # ENOBUFS: events were lost; the next ones still count
            self._parse(data, report=True)

    def _parse(self, data: bytes, report: bool) -> bool:
        """Apply every message; report changes if asked. True at the end of a dump."""
        done = False
        off = 0
        while off + 16 <= len(data):
            ln, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, off)
            if ln < 16:
                break
            body = data[off + 16 : off + ln]
            off += (ln + 3) & ~3
            if kind == NLMSG_DONE:
                done = True
            elif kind in (RTM_NEWLINK, RTM_DELLINK) and len(body) >= 16:
                _fam, _type, index, flags, _change = struct.unpack_from("=BxHiII", body)
                up = kind == RTM_NEWLINK and flags & IFF_UP != 0 and flags & IFF_RUNNING != 0
                was = self.link_up.get(index)
                self.link_up[index] = up
                if report and was is not None and was != up:
                    for a in sorted(self.addrs.get(index, ())):
                        self.callback(a, up)
            elif kind in (RTM_NEWADDR, RTM_DELADDR) and len(body) >= 8:
                fam, _plen, _fl, _scope, index = struct.unpack_from("=BBBBI", body)
                if fam not in (socket.AF_INET, socket.AF_INET6):
                    continue
                addr = _attr_addr(body[8:], fam)
                if addr is not None and addr.startswith("fe80:"):
                    continue
                if addr is None:
                    continue
                have = self.addrs.setdefault(index, set())
                live = self.link_up.get(index, True)
                if kind == RTM_NEWADDR and addr not in have:
                    have.add(addr)
                    if report and live:
                        self.callback(addr, True)
                elif kind == RTM_DELADDR and addr in have:
                    have.discard(addr)
                    if report and live:
                        self.callback(addr, False)
        return done


def _attr_addr(attrs: bytes, family: int = socket.AF_INET) -> str | None:
    size = 4 if family == socket.AF_INET else 16
    local = address = None
    off = 0
    while off + 4 <= len(attrs):
        ln, kind = struct.unpack_from("=HH", attrs, off)
        if ln < 4:
            break
        val = attrs[off + 4 : off + ln]
        if kind == IFA_LOCAL and len(val) == size:
            local = socket.inet_ntop(family, val)
        elif kind == IFA_ADDRESS and len(val) == size:
            address = socket.inet_ntop(family, val)
        off += (ln + 3) & ~3
    return local or address
