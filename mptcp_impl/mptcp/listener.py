"""Where a SYN to a listening port goes (Linux's subflow_v4_conn_request + token lookup).

A SYN with MP_JOIN belongs to the connection whose token it names; an unknown token, or a
connection that refuses, is answered with an RST carrying MP_TCPRST (and counted). Any other
SYN starts a new connection, MPTCP or plain TCP as its options say. Sans-I/O: the edge calls
``route_syn`` and sends what comes back.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..tcp.connection import TcpConfig, TcpConnection
from ..tcp.segment import TcpSegment
from .connection import MptcpConnection, _Refuser
from .ctrl import MptcpConfig
from .options import MpJoinSyn, MptcpOptionError, find_mptcp
from .subflow import Subflow
from .token import TokenRegistry

RST_MPTCP_ERROR = 1


@dataclass
class Routed:
    conn: MptcpConnection | None  # None: refused, send ``refusal``'s segments
    subflow: Subflow | None
    new: bool  # a new connection (accept) rather than a join
    refusal: TcpConnection | None = None


def route_syn(
    syn: TcpSegment,
    local: tuple[str, int],
    remote: tuple[str, int],
    now: float,
    registry: TokenRegistry,
    config: MptcpConfig,
    tcp_config: TcpConfig,
) -> Routed:
    join = None
    if config.enabled and syn.options:
        for o in find_mptcp(syn.options):
            if isinstance(o, MptcpOptionError):
                registry.mib.inc("OptionMalformed")
            elif isinstance(o, MpJoinSyn):
                join = o
    if join is not None:
        conn = registry.get(join.token)
        if conn is None:
            registry.mib.inc("MPJoinNoTokenFound")
            return Routed(None, None, False, _refuse(syn, local, remote, now, registry, tcp_config))
        sub = conn.accept_join(syn, local, remote, now)
        if sub.closed:
            return Routed(None, None, False, sub.tcp)
        return Routed(conn, sub, False)
    conn = MptcpConnection.accept(config, tcp_config, registry, syn, local, remote, now)
    return Routed(conn, conn.initial, True)


def _refuse(
    syn: TcpSegment,
    local: tuple[str, int],
    remote: tuple[str, int],
    now: float,
    registry: TokenRegistry,
    tcp_config: TcpConfig,
) -> TcpConnection:
    stub = MptcpConnection(MptcpConfig(), tcp_config, registry)
    registry.remove(stub.local_token, stub)
    sub = Subflow(stub, local, remote, initial=False, active=False)
    sub.rst_reason = RST_MPTCP_ERROR
    return TcpConnection.accept_syn(tcp_config, syn, local, remote, now, hooks=_Refuser(sub))
