"""MPTCP counters: Linux's names (checked against this machine's kernel when it has MPTCP),
the MPTcpExt prefix in snapshots, and refusal of unknown names."""

import os
from pathlib import Path

import pytest

from mptcp_impl.mptcp import mib
from mptcp_impl.mptcp.mib import Mib, diff


def test_counting_and_snapshot():
    m = Mib()
    assert all(v == 0 for v in m.values()) and len(m) == len(mib.NAMES)
    m.inc(mib.MPJoinSynRx)
    m.inc("MPTcpExtMPJoinSynRx", 2)
    m.inc(mib.MPCurrEstab)
    m.dec(mib.MPCurrEstab)
    assert m[mib.MPJoinSynRx] == 3 == m["MPTcpExtMPJoinSynRx"]
    snap = m.snapshot()
    assert snap["MPTcpExtMPJoinSynRx"] == 3 and snap["MPTcpExtMPCurrEstab"] == 0
    assert all(k.startswith("MPTcpExt") for k in snap) and len(snap) == len(mib.NAMES)
    assert m.nonzero() == {"MPTcpExtMPJoinSynRx": 3}
    snap["MPTcpExtMPJoinSynRx"] = 100  # a copy
    assert m[mib.MPJoinSynRx] == 3
    before = m.snapshot()
    m.inc(mib.AddAddr)
    assert diff(m.snapshot(), before) == {"MPTcpExtAddAddr": 1}
    m.reset()
    assert m.nonzero() == {}


def test_unknown_names_refused():
    m = Mib()
    with pytest.raises(KeyError):
        m.inc("MPJoinSynRX")  # wrong case: Linux spells it MPJoinSynRx
    with pytest.raises(KeyError):
        m["nope"]


def test_every_name_is_a_constant_of_itself():
    for n in mib.NAMES:
        assert getattr(mib, n) == n
    assert len(set(mib.NAMES)) == len(mib.NAMES)


def test_names_match_running_kernel():
    p = Path("/proc/net/netstat")
    lines = [ln.split() for ln in p.read_text().splitlines()] if p.exists() else []
    heads = [ln[1:] for ln in lines if ln and ln[0] == "MPTcpExt:"]
    if not heads:
        pytest.skip("kernel without MPTCP counters")
    kernel = tuple(heads[0])
    if os.uname().release.startswith("6.18."):
        assert kernel == mib.LINUX_NAMES
    else:  # another kernel version: most of its names should still be ours
        missing = set(kernel) - set(mib.NAMES)
        assert len(missing) < 10, missing
