"""Kernel MPTCP's userspace path manager over generic netlink ("mptcp_pm"): a sans-I/O codec
(bytes in, bytes out, no socket) and a thin socket edge (`PmSocket`).

Why our own: iproute2 6.1 (Debian 12) has no `ip mptcp subflow`/`announce`, and pyroute2's
`pyroute2.netlink.generic.mptcp` covers only the in-kernel PM's endpoint and limit commands
(no ANNOUNCE/REMOVE/SUBFLOW_CREATE/SUBFLOW_DESTROY, no token or remote-address attributes, no
events). The messages are small: a netlink header, a generic netlink header and a few
attributes. Numbers from the kernel's uapi (include/uapi/linux/mptcp_pm.h, generated from
Documentation/netlink/specs/mptcp_pm.yaml) and linux/genetlink.h.

Byte orders as the kernel reads them: an address attribute's ADDR4 is big-endian, its PORT host
order; an event's SADDR4/DADDR4 and SPORT/DPORT are big-endian.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

# netlink (linux/netlink.h)
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_CAPPED = 0x100
NLM_F_ACK_TLVS = 0x200
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF
NLMSGERR_ATTR_MSG = 1
SOL_NETLINK = 270
NETLINK_GENERIC = 16  # (Python's socket module does not name it)
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_EXT_ACK = 11
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_GENLHDR = struct.Struct("=BBH")  # cmd, version, reserved

# generic netlink controller (linux/genetlink.h)
GENL_ID_CTRL = 16
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
CTRL_ATTR_MCAST_GROUPS = 7
CTRL_ATTR_MCAST_GRP_NAME = 1
CTRL_ATTR_MCAST_GRP_ID = 2

# mptcp_pm (linux/mptcp_pm.h)
FAMILY_NAME = "mptcp_pm"
FAMILY_VERSION = 1
EVENTS_GROUP = "mptcp_pm_events"
CMD = {
    "add_addr": 1,
    "del_addr": 2,
    "get_addr": 3,
    "flush_addrs": 4,
    "set_limits": 5,
    "get_limits": 6,
    "set_flags": 7,
    "announce": 8,
    "remove": 9,
    "subflow_create": 10,
    "subflow_destroy": 11,
}
ATTR_ADDR, ATTR_TOKEN, ATTR_LOC_ID, ATTR_ADDR_REMOTE = 1, 4, 5, 6
ADDR_FAMILY, ADDR_ID, ADDR_ADDR4, ADDR_ADDR6, ADDR_PORT, ADDR_FLAGS, ADDR_IF_IDX = range(1, 8)
FLAG_SIGNAL, FLAG_SUBFLOW, FLAG_BACKUP, FLAG_FULLMESH = 1, 2, 4, 8

# events (mptcp_event_type) in pmmonitor's vocabulary (testbed/pmmonitor.py: our stack's names)
EVENTS = {
    1: "created",
    2: "established",
    3: "closed",
    6: "announced",
    7: "removed",
    10: "sub_established",
    11: "sub_closed",
    13: "priority",
    15: "listener_created",
    16: "listener_closed",
}
# mptcp_event_attr: number -> (our name, decoder)
_U8 = ("B", False)
_EVENT_ATTRS: dict[int, tuple[str, Any]] = {
    1: ("token", "token"),
    2: ("family", ("H", False)),
    3: ("loc_id", _U8),
    4: ("rem_id", _U8),
    5: ("saddr", "in4"),
    6: ("saddr", "in6"),
    7: ("daddr", "in4"),
    8: ("daddr", "in6"),
    9: ("sport", ("H", True)),
    10: ("dport", ("H", True)),
    11: ("backup", _U8),
    12: ("error", _U8),
    13: ("flags", ("H", False)),
    14: ("timeout", ("I", False)),
    15: ("ifindex", ("I", False)),
    16: ("reset_reason", ("I", False)),
    17: ("reset_flags", ("I", False)),
    18: ("server_side", _U8),
}


class NetlinkError(OSError):
    """The kernel refused a request: errno and its extended-ack message (what was wrong)."""

    def __init__(self, errno: int, message: str | None, request: str):
        self.message = message
        self.request = request
        super().__init__(errno, f"{request}: {message or 'refused'} (errno {errno})")


@dataclass(frozen=True)
class Message:
    """One netlink message: header fields and payload (after the 16-byte header)."""

    type: int
    flags: int
    seq: int
    payload: bytes


@dataclass(frozen=True)
class Addr:
    """An MPTCP PM address attribute (local or remote end): IPv4 or IPv6 by its text."""

    addr: str
    port: int = 0
    id: int | None = None
    flags: int = 0
    ifindex: int | None = None

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ipaddress.ip_address(self.addr).version == 6 else socket.AF_INET


@dataclass(frozen=True)
class Ack:
    """The kernel's answer to one request: errno 0 is success."""

    seq: int
    errno: int
    message: str | None = None


@dataclass
class Family:
    """What the controller says about a family: its message type and multicast groups."""

    id: int
    groups: dict[str, int] = field(default_factory=dict)


# ---- framing --------------------------------------------------------------------------------


def _pad(n: int) -> int:
    return (n + 3) & ~3


def nla(kind: int, data: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    raw = struct.pack("=HH", 4 + len(data), kind) + data
    return raw + b"\0" * (_pad(len(raw)) - len(raw))


def nla_nested(kind: int, attrs: list[bytes]) -> bytes:
    return nla(kind | NLA_F_NESTED, b"".join(attrs))


def parse_nlas(buf: bytes) -> list[tuple[int, bytes]]:
    """Attributes as (type without the nested/byte-order bits, data); a truncated one is an
    error (ValueError), not a silent stop."""
    out = []
    i = 0
    while i + 4 <= len(buf):
        length, kind = struct.unpack_from("=HH", buf, i)
        if length < 4 or i + length > len(buf):
            raise ValueError(f"netlink attribute at {i}: length {length} beyond {len(buf)} bytes")
        out.append((kind & NLA_TYPE_MASK, buf[i + 4 : i + length]))
        i += _pad(length)
    return out


def nlmsg(kind: int, flags: int, seq: int, payload: bytes) -> bytes:
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(payload), kind, flags, seq, 0) + payload


def genl(family: int, cmd: int, seq: int, attrs: list[bytes], *, version: int = 1) -> bytes:
    """A generic netlink request that asks for an acknowledgement."""
    body = _GENLHDR.pack(cmd, version, 0) + b"".join(attrs)
    return nlmsg(family, NLM_F_REQUEST | NLM_F_ACK, seq, body)


def parse_messages(buf: bytes) -> list[Message]:
    """Every netlink message in one datagram."""
    out = []
    i = 0
    while i + _NLMSGHDR.size <= len(buf):
        length, kind, flags, seq, _ = _NLMSGHDR.unpack_from(buf, i)
        if length < _NLMSGHDR.size or i + length > len(buf):
            raise ValueError(f"netlink message at {i}: length {length} beyond {len(buf)} bytes")
        out.append(Message(kind, flags, seq, buf[i + _NLMSGHDR.size : i + length]))
        i += _pad(length)
    return out


def parse_ack(msg: Message) -> Ack:
    """An NLMSG_ERROR message (errno 0: the acknowledgement) with its extended-ack text."""
    if msg.type != NLMSG_ERROR:
        raise ValueError(f"not an acknowledgement: message type {msg.type}")
    (err,) = struct.unpack_from("=i", msg.payload, 0)
    text = None
    if msg.flags & NLM_F_ACK_TLVS:
        # after the errno: the request's header, and its payload unless capped
        (orig_len,) = struct.unpack_from("=I", msg.payload, 4)
        skip = 4 + (_NLMSGHDR.size if msg.flags & NLM_F_CAPPED else _pad(orig_len))
        for kind, data in parse_nlas(msg.payload[skip:]):
            if kind == NLMSGERR_ATTR_MSG:
                text = data.rstrip(b"\0").decode(errors="replace")
    return Ack(msg.seq, -err, text)


# ---- the controller: family id and groups ---------------------------------------------------


def get_family(seq: int, name: str = FAMILY_NAME) -> bytes:
    return genl(
        GENL_ID_CTRL, CTRL_CMD_GETFAMILY, seq, [nla(CTRL_ATTR_FAMILY_NAME, name.encode() + b"\0")]
    )


def parse_family(msg: Message) -> Family:
    fam = Family(0)
    for kind, data in parse_nlas(msg.payload[_GENLHDR.size :]):
        if kind == CTRL_ATTR_FAMILY_ID:
            (fam.id,) = struct.unpack_from("=H", data)
        elif kind == CTRL_ATTR_MCAST_GROUPS:
            for _, grp in parse_nlas(data):
                g = dict(parse_nlas(grp))
                name = g[CTRL_ATTR_MCAST_GRP_NAME].rstrip(b"\0").decode()
                fam.groups[name] = struct.unpack_from("=I", g[CTRL_ATTR_MCAST_GRP_ID])[0]
    if not fam.id:
        raise ValueError("the controller's answer has no family id")
    return fam


# ---- mptcp_pm requests ----------------------------------------------------------------------


def encode_addr(kind: int, a: Addr) -> bytes:
    ip = ipaddress.ip_address(a.addr)
    attrs = [nla(ADDR_FAMILY, struct.pack("=H", a.family))]
    attrs.append(nla(ADDR_ADDR4 if ip.version == 4 else ADDR_ADDR6, ip.packed))
    if a.id is not None:
        attrs.append(nla(ADDR_ID, struct.pack("=B", a.id)))
    if a.port:
        attrs.append(nla(ADDR_PORT, struct.pack("=H", a.port)))  # host order (the kernel htons)
    if a.flags:
        attrs.append(nla(ADDR_FLAGS, struct.pack("=I", a.flags)))
    if a.ifindex is not None:
        attrs.append(nla(ADDR_IF_IDX, struct.pack("=i", a.ifindex)))
    return nla_nested(kind, attrs)


def _token(token: int) -> bytes:
    return nla(ATTR_TOKEN, struct.pack("=I", token))


def announce(family: int, seq: int, token: int, local: Addr) -> bytes:
    """ADD_ADDR of `local` (its id must be set, the kernel adds the signal flag's check)."""
    return genl(family, CMD["announce"], seq, [_token(token), encode_addr(ATTR_ADDR, local)])


def remove(family: int, seq: int, token: int, loc_id: int) -> bytes:
    """REMOVE_ADDR of a local address id, and the local subflows from it closed."""
    attrs = [_token(token), nla(ATTR_LOC_ID, struct.pack("=B", loc_id))]
    return genl(family, CMD["remove"], seq, attrs)


def subflow_create(family: int, seq: int, token: int, local: Addr, remote: Addr) -> bytes:
    """A new subflow (MP_JOIN) from `local` to `remote` (the remote port is required); the
    backup flag on `local` sends MP_JOIN with B=1."""
    attrs = [_token(token), encode_addr(ATTR_ADDR, local), encode_addr(ATTR_ADDR_REMOTE, remote)]
    return genl(family, CMD["subflow_create"], seq, attrs)


def subflow_destroy(family: int, seq: int, token: int, local: Addr, remote: Addr) -> bytes:
    """Close the subflow of these two ends (both ports required)."""
    attrs = [_token(token), encode_addr(ATTR_ADDR, local), encode_addr(ATTR_ADDR_REMOTE, remote)]
    return genl(family, CMD["subflow_destroy"], seq, attrs)


def set_flags(family: int, seq: int, token: int, local: Addr, remote: Addr) -> bytes:
    """MP_PRIO: `local.flags` backup or not, on the subflow to `remote`."""
    attrs = [_token(token), encode_addr(ATTR_ADDR, local), encode_addr(ATTR_ADDR_REMOTE, remote)]
    return genl(family, CMD["set_flags"], seq, attrs)


# ---- events ---------------------------------------------------------------------------------


def parse_event(msg: Message) -> dict[str, Any]:
    """An mptcp_pm_events message as pmmonitor writes one ({"type", "token", "saddr", ...};
    the token as the 8 hex digits `ip mptcp monitor` prints). An unknown event keeps its
    number; an unknown attribute is left out."""
    cmd = msg.payload[0]
    out: dict[str, Any] = (
        {"type": EVENTS[cmd]} if cmd in EVENTS else {"type": "unknown", "code": cmd}
    )
    for kind, data in parse_nlas(msg.payload[_GENLHDR.size :]):
        if kind not in _EVENT_ATTRS:
            continue
        name, how = _EVENT_ATTRS[kind]
        if how == "token":
            out[name] = f"{struct.unpack_from('=I', data)[0]:08x}"
        elif how == "in4":
            out[name] = str(ipaddress.IPv4Address(data[:4]))
        elif how == "in6":
            out[name] = str(ipaddress.IPv6Address(data[:16]))
        else:
            fmt, big = how
            out[name] = struct.unpack_from(("!" if big else "=") + fmt, data)[0]
    return out


# ---- the socket edge ------------------------------------------------------------------------


class PmSocket:
    """Requests to mptcp_pm and its events, in the calling process's network namespace.

    Two sockets: one for requests (each answered by an acknowledgement, matched by sequence
    number) and, after `subscribe()`, one joined to the events group, so an event never sits
    between a request and its answer."""

    def __init__(self) -> None:
        self.sock = self._open()
        self.seq = 0
        self.family = self._resolve()
        self.events: socket.socket | None = None

    @staticmethod
    def _open() -> socket.socket:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        s.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        s.bind((0, 0))
        return s

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def _resolve(self) -> Family:
        seq = self._next()
        self.sock.send(get_family(seq))
        fam: Family | None = None
        while True:
            for m in parse_messages(self.sock.recv(65536)):
                if m.seq != seq:
                    continue
                if m.type == NLMSG_ERROR:
                    ack = parse_ack(m)
                    if ack.errno:
                        raise NetlinkError(
                            ack.errno, ack.message or "no mptcp_pm family here", "getfamily"
                        )
                    if fam is not None:
                        return fam
                elif m.type == GENL_ID_CTRL:
                    fam = parse_family(m)

    def request(self, build: Any, *args: Any, name: str = "") -> Ack:
        """Send one request (a codec function's bytes, given family and seq) and wait for its
        acknowledgement; NetlinkError when the kernel refuses it."""
        seq = self._next()
        self.sock.send(build(self.family.id, seq, *args))
        while True:
            for m in parse_messages(self.sock.recv(65536)):
                if m.type == NLMSG_ERROR and m.seq == seq:
                    ack = parse_ack(m)
                    if ack.errno:
                        raise NetlinkError(ack.errno, ack.message, name or build.__name__)
                    return ack

    def send_raw(self, data: bytes) -> Ack:
        """Bytes as they are (a test's malformed request): the kernel's answer, not raised."""
        (seq,) = struct.unpack_from("=I", data, 8)
        self.sock.send(data)
        while True:
            for m in parse_messages(self.sock.recv(65536)):
                if m.type == NLMSG_ERROR and m.seq == seq:
                    return parse_ack(m)

    def subscribe(self) -> socket.socket:
        """A socket joined to the mptcp_pm_events group (events from then on reach it)."""
        if self.events is None:
            grp = self.family.groups.get(EVENTS_GROUP)
            if grp is None:
                raise NetlinkError(2, f"no {EVENTS_GROUP} group", "subscribe")
            self.events = self._open()
            self.events.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, grp)
        return self.events

    def read_events(self) -> list[dict[str, Any]]:
        """The events of one datagram from the events socket (blocks until one comes)."""
        assert self.events is not None
        data = self.events.recv(65536)
        return [parse_event(m) for m in parse_messages(data) if m.type == self.family.id]

    def close(self) -> None:
        for s in (self.sock, self.events):
            if s is not None:
                s.close()

    def __enter__(self) -> PmSocket:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
