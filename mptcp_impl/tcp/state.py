"""What every part of the TCP core shares: sequence-space constants, the state machine's
states, the events a connection reports, and unwrapping of 32-bit sequence numbers.

Its own module so that the connection and the parts split off it (``recovery.py``,
``reassembly.py``) import it without importing each other.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

MASK = 0xFFFFFFFF
HALF = 1 << 31
DEFAULT_PEER_MSS = 536  # RFC 9293 3.7.1: assumed when the SYN carries no MSS option
DUPTHRESH = 3
WC_DEL_ACK = 0.2  # RFC 8985 7.2 WCDelAckT: worst-case delayed ACK a lone segment may wait for


class TcpState(enum.Enum):
    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSING = "CLOSING"
    TIME_WAIT = "TIME-WAIT"
    CLOSE_WAIT = "CLOSE-WAIT"
    LAST_ACK = "LAST-ACK"


S = TcpState
_SYNCHRONIZED = frozenset(
    {S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSING, S.TIME_WAIT, S.CLOSE_WAIT, S.LAST_ACK}
)
_SEND_DATA_STATES = frozenset({S.ESTABLISHED, S.CLOSE_WAIT, S.FIN_WAIT_1, S.CLOSING, S.LAST_ACK})
_RECV_DATA_STATES = frozenset({S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2})


# --------------------------------------------------------------------------- events


@dataclass(slots=True)
class Connected:
    pass


@dataclass(slots=True)
class DataReceived:
    nbytes: int


@dataclass(slots=True)
class SendBufferAvailable:
    pass


@dataclass(slots=True)
class PeerClosed:
    pass


@dataclass(slots=True)
class Closed:
    pass


@dataclass(slots=True)
class Reset:
    reason: str
    # The options of the RST that caused it (MPTCP's MP_TCPRST and MP_FASTCLOSE ride on RSTs).
    options: list | None = field(default=None, compare=False)


Event = Connected | DataReceived | SendBufferAvailable | PeerClosed | Closed | Reset


def _unwrap(x: int, ref: int) -> int:
    """The unwrapped number nearest to ``ref`` whose low 32 bits are ``x``."""
    return ref + ((x - ref + HALF) & MASK) - HALF
