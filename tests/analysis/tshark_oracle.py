"""tshark as the oracle: its MPTCP dissector's fields next to ours, per frame.

The fields and the tshark command line are testkit.tshark's (the parse benchmark uses the same);
the comparisons are kept here so every test compares the same way: tshark's multi-valued fields (several MPTCP
options in one segment) are ';'-joined, in option order, which is also how we build ours.
"""

from __future__ import annotations

import pandas as pd

from testkit.tshark import MPTCP_OPTION_FIELDS, P, tshark_fields

__all__ = ["compare_dsn", "compare_options", "mpc_data_frames", "tshark_fields"]


def _s(v) -> str | None:
    if v is None or v is pd.NA or (isinstance(v, float) and v != v):
        return None
    if isinstance(v, bool):
        return "1" if v else "0"
    return str(v)


def expected_fields(row) -> dict[str, str]:
    """Our parsed row rendered as tshark would print its MPTCP option fields."""
    subs = [int(x) for x in str(row["mp_subtypes"]).split(",")]
    acc: dict[str, list[str]] = {}

    def add(field: str, v) -> None:
        s = _s(v)
        if s is not None:
            acc.setdefault(P + field, []).append(s)

    for st in subs:
        if st == 0:
            add("version", row["mpc_version"])
            add("sendkey", row["mpc_send_key"])
            add("recvkey", row["mpc_recv_key"])
            add("datalvllen", row["mpc_dll"])
            add("checksum", row["mpc_checksum"])
        elif st == 1:
            add("recvtok", row["join_token"])
            add("sendrand", row["join_nonce"])
            add("sendtrunchmac", row["join_hmac64"])
            add("sendhmac", row["join_hmac"])
            add("addrid", row["join_addr_id"])
            add("backup.flag", row["join_backup"])
        elif st == 2:
            add("rawdataseqno", row["dss_dsn"])
            add("rawdataack", row["dss_ack"])
            add("subflowseqno", row["dss_ssn"])
            add("datalvllen", row["dss_dll"])
            add("checksum", row["dss_checksum"])
            add("datafin.flag", row["dss_fin"])
        elif st == 3:
            add("echo", row["add_echo"])
            add("ipv4" if row["add_ipver"] == 4 else "ipv6", row["add_addr"])
            add("port", row["add_port"])
            add("addaddrtrunchmac", row["add_hmac"])
            add("addrid", row["add_addr_id"])
        elif st == 4:
            for a in str(row["rm_addr_ids"]).split(","):
                add("addrid", a)
        elif st == 5:
            add("backup.flag", row["prio_backup"])
            add("addrid", row["prio_addr_id"])
        elif st == 6:
            add("rawdataseqno", row["fail_dsn"])
        elif st == 7:
            add("recvkey", row["fastclose_key"])
        elif st == 8:
            fl = row["tcprst_flags"]
            for bit, name in ((8, "U"), (4, "V"), (2, "W"), (1, "T")):
                add(f"flag_{name}.flag", int(bool(fl & bit)))
            if _s(row["tcprst_reason"]) is not None:
                add("rst_reason", f"0x{int(row['tcprst_reason']):02x}")
    out = {k: ";".join(v) for k, v in acc.items()}
    out[P + "subtype"] = ";".join(str(s) for s in subs)
    return out


def _norm(field: str, v: str) -> str:
    """tshark prints FT_BOOLEAN flags as True/False and some as 0/1; and groups multi values."""
    return ";".join({"True": "1", "False": "0"}.get(x, x) for x in v.split(";")) if v else v


def compare_options(ours: pd.DataFrame, theirs: dict[int, dict[str, str]]) -> list[str]:
    """Every MPTCP option field of every frame: a list of human-readable mismatches."""
    bad: list[str] = []
    mp = ours[ours["mp_subtypes"].notna()]
    seen = set()
    for _, row in mp.iterrows():
        fr = int(row["frame"])
        seen.add(fr)
        t = theirs.get(fr)
        if t is None:
            bad.append(f"frame {fr}: not in tshark output")
            continue
        exp = expected_fields(row)
        for f in MPTCP_OPTION_FIELDS:
            if f == P + "dseqn8.flag":
                continue
            want, got = exp.get(f, ""), _norm(f, t.get(f, ""))
            if f == P + "checksum" and want and not got and "2" in exp[P + "subtype"]:
                continue  # tshark 4.0 never shows the DSS checksum (test_analysis_crafted checks ours)
            if want != got:
                bad.append(f"frame {fr} {f}: ours {want!r} tshark {got!r}")
    for fr, t in theirs.items():
        if t.get(P + "subtype") and fr not in seen:
            bad.append(f"frame {fr}: tshark sees MPTCP {t[P + 'subtype']}, we do not")
    return bad


def _own_mapping_dsn(t: dict[str, str]) -> int | None:
    """DSN of a segment from its own 64-bit DSS mapping when that covers it (tshark fields)."""
    try:
        dsn = int(t[P + "rawdataseqno"])
        ssn, dll = int(t[P + "subflowseqno"]), int(t[P + "datalvllen"])
        seq = int(t["tcp.seq"])
    except (KeyError, ValueError):
        return None
    if t.get(P + "dseqn8.flag") not in ("1", "True") or not ssn <= seq < ssn + max(dll, 1):
        return None
    return (dsn + seq - ssn) % 2**64


def mpc_data_frames(annotated: pd.DataFrame) -> set[int]:
    """Frames tshark 4.0 gets wrong: data on a subflow whose first data came with MP_CAPABLE
    (v1, data-level length) and the mapping after it. Its rawdsn64 there repeats or lags (e.g.
    +0, +0, +1424, +0 for four consecutive 1424-byte segments) while the receiver's DATA_ACKs
    advance by 1424 per segment, as ours do; test_analysis_parse_real checks ours against those ACKs."""
    out: set[int] = set()
    mpc = annotated[annotated["mpc_dll"].notna() & (annotated["payload_len"] > 0)]
    for sf, g in mpc.groupby("subflow"):
        dll = int(g["mpc_dll"].max())
        d = annotated[(annotated["subflow"] == sf) & (annotated["payload_len"] > 0)]
        isn = int(g["seq"].min()) - 1
        rel = (d["seq"].astype("int64") - isn) % 2**32
        out |= set(d.loc[rel < 2 * dll + 1, "frame"].astype(int))
    return out


def compare_dsn(
    annotated: pd.DataFrame, theirs: dict[int, dict[str, str]]
) -> tuple[int, list[str]]:
    """Our absolute DSN of every data segment against tshark's `mptcp.rawdsn64`, and our expanded
    data ACK against `mptcp.ack`. Returns (segments compared, mismatches)."""
    bad: list[str] = []
    n = 0
    skip = mpc_data_frames(annotated)
    for fr, plen, dsn, dack in annotated[["frame", "payload_len", "dsn", "data_ack"]].itertuples(
        index=False
    ):
        t = theirs[int(fr)]
        if int(fr) in skip:
            continue
        want = t.get("mptcp.rawdsn64")
        own = _own_mapping_dsn(t)
        if own is not None:
            # the segment carries the mapping that covers it: the DSN follows from the dissected
            # option alone (tshark's mapping analysis sometimes applies the previous mapping to
            # the first segment of a new one, e.g. when the DSN jumps back for a reinjection)
            want = str(own)
        if plen > 0 and want:
            n += 1
            if _s(dsn) != want:
                bad.append(f"frame {fr} dsn: ours {_s(dsn)} tshark {want}")
        if _s(dack) is not None and _s(dack) != t.get("mptcp.ack"):
            bad.append(f"frame {fr} data ack: ours {_s(dack)} tshark {t.get('mptcp.ack')}")
    return n, bad
