"""Options the kernel will not send on demand, hand-built and checked against tshark's dissector;
and 32-bit DSNs that wrap, expanded against the IDSN."""

from __future__ import annotations

import pandas as pd
import pytest
from mptcp_craft import (
    add_addr,
    dss,
    fastclose,
    mp_fail,
    mp_prio,
    mpc,
    remove_addr,
    segment,
    tcprst,
    write_pcap,
)
from tshark_oracle import compare_dsn, compare_options, tshark_fields

from analysis.mptcp import annotate, key_idsn, key_token
from analysis.pcap import parse_pcap

CKEY = 252322  # its IDSN's low 32 bits are 0xfffffa5a: the DSN wraps 1446 bytes in
SKEY = 0x1122334455667788
C, S = ("10.9.0.1", 40000), ("10.9.0.2", 5201)
SYN, ACK, RST, FIN = 0x02, 0x10, 0x04, 0x01


def _seg(frm, to, seq, ack, flags, options=b"", payload=0):
    return segment(frm[0], to[0], frm[1], to[1], seq, ack, flags, options, payload)


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    idsn, sack = key_idsn(CKEY), (key_idsn(SKEY) + 1) & 0xFFFFFFFF
    d32 = lambda off: (idsn + off) & 0xFFFFFFFF  # noqa: E731
    cisn, sisn = 1000, 5000
    pk = [
        # checksums negotiated (flag A), HMAC-SHA256 (flag H)
        _seg(C, S, cisn, 0, SYN, mpc(0x81)),
        _seg(S, C, sisn, cisn + 1, SYN | ACK, mpc(0x81, send_key=SKEY)),
        _seg(C, S, cisn + 1, sisn + 1, ACK, mpc(0x81, send_key=CKEY, recv_key=SKEY)),
        # 32-bit DSNs with checksums; the second mapping's DSN has wrapped past 2^32
        _seg(
            C,
            S,
            cisn + 1,
            sisn + 1,
            ACK,
            dss(ack=sack, dsn=d32(1), ssn=1, dll=2000, checksum=0xBEEF),
            1000,
        ),
        _seg(
            C,
            S,
            cisn + 1001,
            sisn + 1,
            ACK,
            dss(ack=sack, dsn=d32(1), ssn=1, dll=2000, checksum=0xBEEF),
            1000,
        ),
        _seg(
            C,
            S,
            cisn + 2001,
            sisn + 1,
            ACK,
            dss(ack=sack, dsn=d32(2001), ssn=2001, dll=1000, checksum=0x1234),
            1000,
        ),
        # several options in one segment: data ACK + ADD_ADDR (IPv6, port, HMAC)
        _seg(
            S,
            C,
            sisn + 1,
            cisn + 3001,
            ACK,
            dss(ack=d32(3001)) + add_addr(7, "2001:db8::2", port=8080, hmac=0xA1B2C3D4E5F60718),
        ),
        _seg(S, C, sisn + 1, cisn + 3001, ACK, remove_addr(3, 4, 5) + mp_prio(True, addr_id=9)),
        _seg(C, S, cisn + 3001, sisn + 1, ACK, add_addr(7, "10.9.1.2", port=8080, echo=True)),
        _seg(C, S, cisn + 3001, sisn + 1, ACK, mp_fail(idsn + 1500) + dss(ack=sack)),
        _seg(S, C, sisn + 1, cisn + 3001, ACK | RST, fastclose(CKEY) + tcprst(0x1, 3)),
        # a second connection whose third ACK carries data (MP_CAPABLE with data-level length)
        _seg(("10.9.0.1", 40001), S, 7, 0, SYN, mpc()),
        _seg(S, ("10.9.0.1", 40001), 9, 8, SYN | ACK, mpc(send_key=SKEY + 1)),
        _seg(
            ("10.9.0.1", 40001),
            S,
            8,
            10,
            ACK,
            mpc(send_key=CKEY + 1, recv_key=SKEY + 1, dll=500),
            500,
        ),
    ]
    path = tmp_path_factory.mktemp("crafted") / "craft-eth0.pcap"
    return write_pcap(path, [(1_700_000_000 + i * 0.01, d, o) for i, (d, o) in enumerate(pk)])


def test_every_crafted_option_matches_tshark(crafted):
    df = parse_pcap(crafted)
    subtypes = {int(x) for s in df["mp_subtypes"].dropna() for x in str(s).split(",")}
    assert subtypes == {0, 2, 3, 4, 5, 6, 7, 8}
    assert compare_options(df, tshark_fields(crafted)) == []


def test_crafted_fields_decode_as_built(crafted):
    df = parse_pcap(crafted).set_index("frame")
    assert df.loc[4, "dss_checksum"] == 0xBEEF and not df.loc[4, "dss_dsn64"]
    assert df.loc[7, "add_addr"] == "2001:db8::2" and df.loc[7, "add_port"] == 8080
    assert df.loc[7, "add_hmac"] == 0xA1B2C3D4E5F60718 and not df.loc[7, "add_echo"]
    assert df.loc[8, "rm_addr_ids"] == "3,4,5" and df.loc[8, "prio_addr_id"] == 9
    assert df.loc[9, "add_echo"] and pd.isna(df.loc[9, "add_hmac"])
    assert df.loc[10, "fail_dsn"] == key_idsn(CKEY) + 1500
    assert df.loc[11, "fastclose_key"] == CKEY and df.loc[11, "tcprst_reason"] == 3
    assert df.loc[11, "tcprst_flags"] == 1
    assert df.loc[14, "mpc_dll"] == 500


def test_32bit_dsn_wrap_is_expanded_against_the_idsn(crafted):
    df, conns = annotate(parse_pcap(crafted))
    idsn = key_idsn(CKEY)
    assert conns.loc[0, "client_token"] == key_token(CKEY)
    assert (idsn & 0xFFFFFFFF) + 2001 > 2**32  # the test data really wraps
    data = df[(df["payload_len"] > 0) & (df["conn"] == 0)].set_index("frame")
    assert [int(data.loc[f, "dsn"]) - idsn for f in (4, 5, 6)] == [1, 1001, 2001]
    assert int(df.set_index("frame").loc[7, "data_ack"]) == idsn + 3001
    second = df.set_index("frame").loc[14]
    assert int(second["dsn"]) == key_idsn(CKEY + 1) + 1  # implicit mapping of MP_CAPABLE data
    # tshark 4.0 does not carry a wrapped 32-bit DSN into the upper half: past the wrap its
    # values are exactly 2^32 short of ours; everywhere else they agree
    theirs = tshark_fields(crafted)
    for fr, field in ((6, "mptcp.rawdsn64"), (7, "mptcp.ack")):
        ours = int(df.set_index("frame").loc[fr, "dsn" if fr == 6 else "data_ack"])
        assert int(theirs[fr][field]) == ours - 2**32
        theirs[fr][field] = str(ours)
    n, bad = compare_dsn(df, theirs)
    assert n >= 3 and bad == []  # (frame 14, MP_CAPABLE data, is checked above)
