"""analysis.middlebox: outcomes from counters, and handshakes/joins/traces from segments."""

from __future__ import annotations

import pandas as pd

from analysis.middlebox import capture_signals, outcome, signals_words

NA = pd.NA
C, S, NAT = "10.0.1.1", "10.0.5.2", "10.0.3.1"


def seg(
    host,
    src,
    sport,
    dst,
    dport,
    *,
    syn=False,
    ack=True,
    rst=False,
    seq=1,
    ts=None,
    mpc=False,
    join=False,
    join_ok=False,
    fail=False,
    dll=None,
    plen=0,
    mp=None,
):
    return {
        "host": host,
        "src": src,
        "sport": sport,
        "dst": dst,
        "dport": dport,
        "syn": syn,
        "ack_flag": ack,
        "rst": rst,
        "seq": seq,
        "ts_val": ts if ts is not None else NA,
        "mpc_version": 1 if mpc else NA,
        "join_token": 7 if join else NA,
        "join_hmac64": 9 if join_ok else NA,
        "fail_dsn": 5 if fail else NA,
        "tcprst_reason": NA,
        "fastclose_key": NA,
        "dss_dll": NA if dll is None else dll,
        "payload_len": plen,
        "mp_subtypes": mp if mp is not None else ("x" if mpc or join else NA),
    }


def frame(rows):
    df = pd.DataFrame(rows)
    for c in (
        "ts_val",
        "mpc_version",
        "join_token",
        "join_hmac64",
        "fail_dsn",
        "tcprst_reason",
        "fastclose_key",
        "dss_dll",
    ):
        df[c] = df[c].astype("Int64")
    df["mp_subtypes"] = df["mp_subtypes"].astype("category")
    return df


def test_fallback_join_refused_and_traces():
    rows = [
        # the client's SYN with MP_CAPABLE; at the server it arrives stripped (same TSval)
        seg("client", C, 4000, S, 80, syn=True, ack=False, ts=100, mpc=True),
        seg("server", C, 4000, S, 80, syn=True, ack=False, ts=100),
        seg("client", S, 80, C, 4000, syn=True),  # SYN/ACK without MP_CAPABLE
        # a join answered by a SYN/ACK without MP_JOIN, then the client's RST
        seg("client", "10.0.2.1", 4001, S, 80, syn=True, ack=False, ts=200, join=True),
        seg("client", S, 80, "10.0.2.1", 4001, syn=True),
        # another connection through a NAT: accepted handshake, MP_FAIL, an infinite mapping
        seg("client", C, 4002, S, 81, syn=True, ack=False, ts=300, seq=10, mpc=True),
        seg("server", NAT, 5002, S, 81, syn=True, ack=False, ts=300, seq=99, mpc=True),
        seg("client", S, 81, C, 4002, syn=True, mpc=True),
        seg("server", S, 81, NAT, 5002, syn=True, mpc=True),
        seg("server", S, 81, NAT, 5002, fail=True, mp="f"),
        seg("client", C, 4002, S, 81, dll=0, plen=100, mp="d"),
        seg("client", C, 4002, S, 81, plen=100),  # data without any MPTCP option
    ]
    sig = capture_signals(frame(rows))
    assert sig["handshakes"] == {"fallback": 1, "mptcp": 1}
    assert sig["joins"] == {"refused": 1}
    assert sig["mp_fail"] == 1 and sig["infinite_mappings"] == 1
    assert sig["data_without_mptcp"] == 1
    assert sig["middlebox_traces"] == [
        "MPTCP option removed",
        "sequence rewritten",
        "source translated",
    ]
    words = signals_words(sig)
    assert "handshake 1 fallback, 1 mptcp" in words and "joins 1 refused" in words
    assert "MP_FAIL ×1" in words


def test_outcome_words():
    kw = {"fallback": False, "subflows": 2, "finished": True, "intact": True}
    assert outcome(counters={}, **kw) == "MPTCP, 2 subflows; intact"
    c = {"client": {"MPCapableFallbackSYNACK": 1}}
    assert outcome(counters=c, **{**kw, "fallback": True}).startswith("fallback to TCP (SYN/ACK")
    c = {"client": {"MPJoinSynTx": 1, "MPTcpExtMPRstTx": 1}}
    assert outcome(counters=c, **kw) == "join refused (1 of 1); intact"
    c = {"server": {"DataCsumErr": 1, "MPFailTx": 1}, "client": {"MPFailRx": 1}}
    got = outcome(counters=c, **{**kw, "finished": False, "intact": False})
    assert got == "DSS checksum error; MP_FAIL sent; MP_FAIL received; STALLED"
    assert outcome(counters={}, **{**kw, "intact": False}).endswith("DATA CORRUPTED")
    assert outcome(counters={}, **{**kw, "fallback": None}) == "not MPTCP; intact"
