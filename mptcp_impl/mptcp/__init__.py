"""The MPTCP layer (RFC 8684) above mptcp_impl.tcp; subflows are ordinary TCP connections.

Wire level so far: ``options`` (codec of every MPTCP v1 suboption, carried as the TCP core's
``UnknownOption(30, body)``), ``crypto`` (keys, tokens, IDSNs, HMACs, DSS checksum) and
``mib`` (counters with Linux's names).
"""

from .mib import Mib
from .options import (
    AddAddr,
    Dss,
    FastClose,
    MpCapable,
    MpFail,
    MpJoin,
    MpJoinAck,
    MpJoinSyn,
    MpJoinSynAck,
    MpPrio,
    MptcpOption,
    MptcpOptionError,
    RemoveAddr,
    TcpRst,
    decode,
    encode,
    expand32,
    find_mptcp,
    to_tcp_option,
)

__all__ = [
    "AddAddr",
    "Dss",
    "FastClose",
    "Mib",
    "MpCapable",
    "MpFail",
    "MpJoin",
    "MpJoinAck",
    "MpJoinSyn",
    "MpJoinSynAck",
    "MpPrio",
    "MptcpOption",
    "MptcpOptionError",
    "RemoveAddr",
    "TcpRst",
    "decode",
    "encode",
    "expand32",
    "find_mptcp",
    "to_tcp_option",
]
