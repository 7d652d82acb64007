"""Settings of the MPTCP layer, in the vocabulary of ``ip mptcp endpoint`` and ``ip mptcp limits``
(Linux's ctrl.c and pm_netlink.c), so that one experiment file can describe both stacks."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

ENDPOINT_FLAGS = frozenset({"subflow", "signal", "backup", "fullmesh"})


@dataclass(frozen=True)
class Endpoint:
    """A local address the path manager may use: ``subflow`` opens a subflow from it (client),
    ``signal`` announces it with ADD_ADDR, ``backup`` marks its subflows as backup, ``fullmesh``
    joins from it to every announced address. ``id`` is its MPTCP address id (0 is reserved for
    the initial subflow's address)."""

    address: str
    flags: frozenset[str] = frozenset({"subflow"})
    id: int = 0
    port: int | None = None

    @classmethod
    def parse(cls, text: str, id: int) -> Endpoint:
        """``ADDR[,FLAG...][,port=N]`` as the CLI's ``--endpoint`` takes it (``port``: a signal
        endpoint announced with that port, as ``ip mptcp endpoint add ADDR port N signal``)."""
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not parts:
            raise ValueError("empty endpoint")
        port = None
        for p in parts[1:]:
            if p.startswith("port="):
                try:
                    port = int(p[5:])
                except ValueError:
                    raise ValueError(f"endpoint {text!r}: {p!r} is not port=N") from None
                if not 0 < port < 65536:
                    raise ValueError(f"endpoint {text!r}: port {port} is out of range")
        parts = [p for p in parts if not p.startswith("port=")]
        addr, flags = parts[0], frozenset(parts[1:]) or frozenset({"subflow"})
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            raise ValueError(f"endpoint {text!r}: {addr!r} is not an IP address") from None
        bad = flags - ENDPOINT_FLAGS
        if bad:
            raise ValueError(
                f"endpoint {text!r}: unknown flag(s) {sorted(bad)} (have {sorted(ENDPOINT_FLAGS)})"
            )
        return cls(addr, flags, id, port)


@dataclass(frozen=True)
class Limits:
    """``ip mptcp limits``: extra subflows per connection and ADD_ADDRs accepted."""

    subflows: int = 8
    add_addr_accepted: int = 8

    @classmethod
    def parse(cls, text: str) -> Limits:
        vals: dict[str, int] = {}
        for item in text.split(","):
            if not item.strip():
                continue
            k, sep, v = item.partition("=")
            k = k.strip()
            if not sep or k not in ("subflows", "add_addr_accepted"):
                raise ValueError(
                    f"limits {text!r}: expected subflows=N,add_addr_accepted=N, got {item!r}"
                )
            try:
                vals[k] = int(v)
            except ValueError:
                raise ValueError(f"limits {text!r}: {k} must be an integer, got {v!r}") from None
            if not 0 <= vals[k] <= 8:
                raise ValueError(f"limits {text!r}: {k} must be 0..8 (as Linux)")
        return cls(**vals)


@dataclass
class MptcpConfig:
    """One connection's MPTCP settings. ``endpoints=None`` lets the edge fill in the host's
    other addresses (a client then joins from each, as the CLI's default)."""

    enabled: bool = True
    endpoints: list[Endpoint] | None = None
    limits: Limits = field(default_factory=Limits)
    checksum: bool = False  # net.mptcp.checksum_enabled
    # research plug-ins: a name, FILE.py:Class, or (from Python) a class; see sched.py,
    # coupled.py, pm.py and plugins.py
    scheduler: Any = "default"  # default minrtt roundrobin redundant blest ecf
    cc: Any = "uncoupled"  # uncoupled (TcpConfig.cc, CUBIC) cubic reno lia olia balia
    pm: Any = "kernel"  # kernel (endpoints and limits) none backup-on-loss
    # opportunistic retransmission when the peer's window blocks new data (Raiciu et al.,
    # NSDI 2012): "off", "retransmit", or "penalise" (also halve the slow subflow's cwnd)
    opportunistic: str = "off"
    stale_loss_cnt: int = 4  # net.mptcp.stale_loss_cnt: RTOs without progress before "stale"
    # Connection-level buffers; None: the subflows' TCP setting (TcpConfig.rcv_buf/snd_buf), as
    # the socket's buffer sizes apply to an MPTCP socket in Linux.
    rcv_buf: int | None = None
    snd_buf: int | None = None
    max_mapping: int = 64 * 1024 - 1024  # bytes per DSS mapping (data_len is 16 bits)
    add_addr_timeout: float = 120.0  # resend an ADD_ADDR not echoed (net.mptcp.add_addr_timeout)
    # MP_CAPABLE SYNs lost before the next SYN goes without it
    # (net.mptcp.syn_retrans_before_tcp_fallback)
    syn_retrans_before_tcp_fallback: int = 2
    # net.mptcp.close_timeout: how long a connection whose streams are not finished lives on
    # with no subflow that can carry it (none left, or only ones on local addresses that are
    # down) before it is reset: the time a returning interface or a new join has to take
    # the transfer on ("make-after-break"). 0: reset at once.
    close_timeout: float = 60.0
    # net.mptcp.allow_join_initial_addr_port: False sends MP_CAPABLE's C flag ("no more
    # subflows to this address and port") and refuses joins to the initial address and port
    allow_join_initial_addr_port: bool = True
    # tests only: the DSS checksum of the mapping holding this data offset is wrong, once
    corrupt_checksum_at: int | None = None
