"""MPTCP counters named exactly like Linux's (``nstat -az | grep MPTcpExt``), so a run of this
stack and a kernel run can be compared counter by counter, and Linux selftest expectations
(mptcp_join.sh checks MPJoinSynRx, AddAddr, RmSubflow, ...) can be asserted unchanged.

Names and order are those of the Linux 6.18 kernel on these machines (/proc/net/netstat),
the same as ``mptcp_snmp_list`` in net/mptcp/mib.c. Every name is also a module constant
whose value is the name, so a typo is a NameError instead of a silently new counter; ``Mib``
refuses names it does not know for the same reason.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

PREFIX = "MPTcpExt"

MPCapableSYNRX = "MPCapableSYNRX"  # received SYN with MP_CAPABLE
MPCapableSYNTX = "MPCapableSYNTX"  # sent SYN with MP_CAPABLE
MPCapableSYNACKRX = "MPCapableSYNACKRX"  # received SYN/ACK with MP_CAPABLE
MPCapableACKRX = "MPCapableACKRX"  # received third ACK with MP_CAPABLE
MPCapableFallbackACK = "MPCapableFallbackACK"  # server-side fallback during the handshake
MPCapableFallbackSYNACK = "MPCapableFallbackSYNACK"  # client-side fallback during the handshake
MPCapableSYNTXDrop = "MPCapableSYNTXDrop"  # client fell back after MP_CAPABLE SYNs were lost
MPCapableSYNTXDisabled = "MPCapableSYNTXDisabled"  # MP_CAPABLE SYN not sent (blackhole)
MPCapableEndpAttempt = "MPCapableEndpAttempt"  # MP_CAPABLE SYN to a 'signal' endpoint
MPFallbackTokenInit = "MPFallbackTokenInit"  # could not allocate a token
MPTCPRetrans = "MPTCPRetrans"  # segments retransmitted at the MPTCP level
MPJoinNoTokenFound = "MPJoinNoTokenFound"  # MP_JOIN SYN with an unknown token
MPJoinSynRx = "MPJoinSynRx"  # received SYN + MP_JOIN
MPJoinSynBackupRx = "MPJoinSynBackupRx"  # ... with the backup flag
MPJoinSynAckRx = "MPJoinSynAckRx"  # received SYN/ACK + MP_JOIN
MPJoinSynAckBackupRx = "MPJoinSynAckBackupRx"  # ... with the backup flag
MPJoinSynAckHMacFailure = "MPJoinSynAckHMacFailure"  # wrong HMAC on SYN/ACK + MP_JOIN
MPJoinAckRx = "MPJoinAckRx"  # received third ACK + MP_JOIN
MPJoinAckHMacFailure = "MPJoinAckHMacFailure"  # wrong HMAC on ACK + MP_JOIN
MPJoinRejected = "MPJoinRejected"  # MP_JOIN refused by the path manager
MPJoinSynTx = "MPJoinSynTx"  # sent SYN + MP_JOIN
MPJoinSynTxCreatSkErr = "MPJoinSynTxCreatSkErr"  # could not create the subflow socket
MPJoinSynTxBindErr = "MPJoinSynTxBindErr"  # could not bind the subflow socket
MPJoinSynTxConnectErr = "MPJoinSynTxConnectErr"  # could not connect the subflow socket
DSSNotMatching = "DSSNotMatching"  # a new mapping contradicts the previous one
DSSCorruptionFallback = "DSSCorruptionFallback"  # DSS corruption handled by fallback
DSSCorruptionReset = "DSSCorruptionReset"  # DSS corruption handled by a subflow reset
InfiniteMapTx = "InfiniteMapTx"  # sent an infinite mapping
InfiniteMapRx = "InfiniteMapRx"  # received an infinite mapping
DSSNoMatchTCP = "DSSNoMatchTCP"  # mapping does not match the TCP sequence space
DataCsumErr = "DataCsumErr"  # DSS checksum failed
OFOQueueTail = "OFOQueueTail"  # segments added at the tail of the MPTCP out-of-order queue
OFOQueue = "OFOQueue"  # segments added to the MPTCP out-of-order queue
OFOMerge = "OFOMerge"  # segments merged in the out-of-order queue
NoDSSInWindow = "NoDSSInWindow"  # segments outside the MPTCP receive window
DuplicateData = "DuplicateData"  # segments dropped as duplicate data
AddAddr = "AddAddr"  # received ADD_ADDR, echo flag 0
AddAddrTx = "AddAddrTx"  # sent ADD_ADDR, echo flag 0
AddAddrTxDrop = "AddAddrTxDrop"  # ADD_ADDR not sent (no room / no ACK)
EchoAdd = "EchoAdd"  # received ADD_ADDR, echo flag 1
EchoAddTx = "EchoAddTx"  # sent ADD_ADDR, echo flag 1
EchoAddTxDrop = "EchoAddTxDrop"  # echo not sent
PortAdd = "PortAdd"  # received ADD_ADDR with a port
AddAddrDrop = "AddAddrDrop"  # received ADD_ADDR dropped (limits, bad HMAC)
MPJoinPortSynRx = "MPJoinPortSynRx"  # SYN + MP_JOIN to an announced port
MPJoinPortSynAckRx = "MPJoinPortSynAckRx"  # SYN/ACK + MP_JOIN from an announced port
MPJoinPortAckRx = "MPJoinPortAckRx"  # ACK + MP_JOIN on an announced port
MismatchPortSynRx = "MismatchPortSynRx"  # SYN + MP_JOIN to a port not announced
MismatchPortAckRx = "MismatchPortAckRx"  # ACK + MP_JOIN on a port not announced
RmAddr = "RmAddr"  # received REMOVE_ADDR
RmAddrDrop = "RmAddrDrop"  # received REMOVE_ADDR dropped
RmAddrTx = "RmAddrTx"  # sent REMOVE_ADDR
RmAddrTxDrop = "RmAddrTxDrop"  # REMOVE_ADDR not sent
RmSubflow = "RmSubflow"  # subflow removed
MPPrioTx = "MPPrioTx"  # sent MP_PRIO
MPPrioRx = "MPPrioRx"  # received MP_PRIO
MPFailTx = "MPFailTx"  # sent MP_FAIL
MPFailRx = "MPFailRx"  # received MP_FAIL
MPFastcloseTx = "MPFastcloseTx"  # sent MP_FASTCLOSE
MPFastcloseRx = "MPFastcloseRx"  # received MP_FASTCLOSE
MPRstTx = "MPRstTx"  # sent MP_TCPRST
MPRstRx = "MPRstRx"  # received MP_TCPRST
SubflowStale = "SubflowStale"  # subflow marked stale (no progress)
SubflowRecover = "SubflowRecover"  # stale subflow made progress again
SndWndShared = "SndWndShared"  # send window update shared across subflows
RcvWndShared = "RcvWndShared"  # receive window taken from the connection's
RcvWndConflictUpdate = "RcvWndConflictUpdate"  # receive window conflict, announced again
RcvWndConflict = "RcvWndConflict"  # receive window conflict while announcing
MPCurrEstab = "MPCurrEstab"  # gauge: connections currently established
Blackhole = "Blackhole"  # MPTCP blackhole detected
MPCapableDataFallback = "MPCapableDataFallback"  # fallback: data without MP_CAPABLE map
MD5SigFallback = "MD5SigFallback"  # fallback because of TCP MD5 signatures
DssFallback = "DssFallback"  # fallback because of a bad DSS
SimultConnectFallback = "SimultConnectFallback"  # fallback on simultaneous connect
FallbackFailed = "FallbackFailed"  # fallback was needed but impossible
WinProbe = "WinProbe"  # MPTCP-level zero window probes

# Linux 6.18's list, in its order.
LINUX_NAMES: tuple[str, ...] = (
    MPCapableSYNRX,
    MPCapableSYNTX,
    MPCapableSYNACKRX,
    MPCapableACKRX,
    MPCapableFallbackACK,
    MPCapableFallbackSYNACK,
    MPCapableSYNTXDrop,
    MPCapableSYNTXDisabled,
    MPCapableEndpAttempt,
    MPFallbackTokenInit,
    MPTCPRetrans,
    MPJoinNoTokenFound,
    MPJoinSynRx,
    MPJoinSynBackupRx,
    MPJoinSynAckRx,
    MPJoinSynAckBackupRx,
    MPJoinSynAckHMacFailure,
    MPJoinAckRx,
    MPJoinAckHMacFailure,
    MPJoinRejected,
    MPJoinSynTx,
    MPJoinSynTxCreatSkErr,
    MPJoinSynTxBindErr,
    MPJoinSynTxConnectErr,
    DSSNotMatching,
    DSSCorruptionFallback,
    DSSCorruptionReset,
    InfiniteMapTx,
    InfiniteMapRx,
    DSSNoMatchTCP,
    DataCsumErr,
    OFOQueueTail,
    OFOQueue,
    OFOMerge,
    NoDSSInWindow,
    DuplicateData,
    AddAddr,
    AddAddrTx,
    AddAddrTxDrop,
    EchoAdd,
    EchoAddTx,
    EchoAddTxDrop,
    PortAdd,
    AddAddrDrop,
    MPJoinPortSynRx,
    MPJoinPortSynAckRx,
    MPJoinPortAckRx,
    MismatchPortSynRx,
    MismatchPortAckRx,
    RmAddr,
    RmAddrDrop,
    RmAddrTx,
    RmAddrTxDrop,
    RmSubflow,
    MPPrioTx,
    MPPrioRx,
    MPFailTx,
    MPFailRx,
    MPFastcloseTx,
    MPFastcloseRx,
    MPRstTx,
    MPRstRx,
    SubflowStale,
    SubflowRecover,
    SndWndShared,
    RcvWndShared,
    RcvWndConflictUpdate,
    RcvWndConflict,
    MPCurrEstab,
    Blackhole,
    MPCapableDataFallback,
    MD5SigFallback,
    DssFallback,
    SimultConnectFallback,
    FallbackFailed,
    WinProbe,
)

# Counters of other kernel versions, kept so code written against them still counts.
RcvPruned = "RcvPruned"  # receive buffer pruned (named by other kernels, not by 6.18)
# Ours, with no Linux counterpart (Linux ignores these silently): kept apart so a reader of a
# snapshot knows they are not the kernel's.
OptionMalformed = "OptionMalformed"  # a kind-30 option that did not decode (dropped)
DataAckInvalid = "DataAckInvalid"  # a DATA_ACK beyond what was sent (ignored)
MPCapableFallbackSYN = "MPCapableFallbackSYN"  # server: SYN with an unusable MP_CAPABLE
MPRejoinMiddlebox = "MPRejoinMiddlebox"  # client: a path's subflow reopened after MP_TCPRST 6
# The scheduler's decisions (Linux counts none): whether BLEST or ECF ever waited, and how often
# a chunk went to the fastest subflow or a slower one, so a run shows what its scheduler did.
SchedWait = "SchedWait"  # data held back although a subflow had room (BLEST's / ECF's wait)
SchedPickMinRtt = "SchedPickMinRtt"  # a chunk to the lowest-RTT usable subflow (2+ usable)
SchedPickOther = "SchedPickOther"  # a chunk to a slower subflow (2+ usable)
SCHED_NAMES: tuple[str, ...] = (SchedWait, SchedPickMinRtt, SchedPickOther)
EXTRA_NAMES: tuple[str, ...] = (
    RcvPruned,
    OptionMalformed,
    DataAckInvalid,
    MPCapableFallbackSYN,
    MPRejoinMiddlebox,
    *SCHED_NAMES,
)

NAMES: tuple[str, ...] = LINUX_NAMES + EXTRA_NAMES
_KNOWN = frozenset(NAMES)


class Mib(Mapping[str, int]):
    """One set of counters (Linux keeps one per network namespace; here one per stack or per
    test). A read-only mapping from counter name (without prefix) to value, every counter
    present from the start at 0, like ``nstat -az``."""

    __slots__ = ("_c",)

    def __init__(self) -> None:
        self._c: dict[str, int] = dict.fromkeys(NAMES, 0)

    @staticmethod
    def _name(name: str) -> str:
        if name.startswith(PREFIX):
            name = name[len(PREFIX) :]
        if name not in _KNOWN:
            raise KeyError(f"unknown MPTCP counter {name!r}")
        return name

    def inc(self, name: str, n: int = 1) -> None:
        """Add ``n`` (negative for the one gauge, MPCurrEstab). Unknown names raise KeyError."""
        c = self._c
        if name in c:  # (a known name without the prefix: the checks below would pass)
            c[name] += n
        else:
            c[self._name(name)] += n

    def dec(self, name: str, n: int = 1) -> None:
        self.inc(name, -n)

    def __getitem__(self, name: str) -> int:
        return self._c[self._name(name)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._c)

    def __len__(self) -> int:
        return len(self._c)

    def snapshot(self) -> dict[str, int]:
        """Every counter with Linux's ``MPTcpExt`` prefix, zeros included: the keys nstat
        prints, so kernel and userspace snapshots compare directly."""
        return {PREFIX + k: v for k, v in self._c.items()}

    def nonzero(self) -> dict[str, int]:
        """Prefixed counters that are not 0 (what ``nstat -a`` without ``-z`` shows)."""
        return {PREFIX + k: v for k, v in self._c.items() if v}

    def reset(self) -> None:
        for k in self._c:
            self._c[k] = 0

    def __repr__(self) -> str:
        return f"Mib({self.nonzero()})"


def diff(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    """Counters that changed between two snapshots (of ``Mib`` or parsed from nstat),
    ``after - before``; a counter missing from ``before`` counts from 0."""
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
