"""A sans-I/O TCP (RFC 9293) that knows nothing of MPTCP but offers hooks for it."""

from .connection import (
    Closed,
    Connected,
    DataReceived,
    Event,
    PeerClosed,
    Reset,
    SendBufferAvailable,
    TcpConfig,
    TcpConnection,
    TcpHooks,
    TcpState,
    TcpStats,
)
from .errors import MalformedSegment
from .options import (
    MSS,
    Option,
    Sack,
    SackPermitted,
    Timestamps,
    UnknownOption,
    WindowScale,
    decode_options,
    encode_options,
)
from .segment import (
    ACK,
    CWR,
    ECE,
    FIN,
    PSH,
    RST,
    SYN,
    URG,
    TcpSegment,
    decode_segment,
    encode_segment,
)

__all__ = [
    "ACK", "CWR", "ECE", "FIN", "MSS", "PSH", "RST", "SYN", "URG", "Closed", "Connected",
    "DataReceived", "Event", "MalformedSegment", "Option", "PeerClosed", "Reset", "Sack",
    "SackPermitted", "SendBufferAvailable", "TcpConfig", "TcpConnection", "TcpHooks", "TcpSegment",
    "TcpState", "TcpStats", "Timestamps", "UnknownOption", "WindowScale", "decode_options",
    "decode_segment", "encode_options", "encode_segment",
]
