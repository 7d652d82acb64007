"""Our encoder and crypto against Wireshark's MPTCP dissector and the analysis package's parser:
a pcap with every option shape ``encode`` makes, carried in real TCP segments, must dissect
without malformation expert infos, with tshark's field values equal to what we put in, and
tshark must tie the MP_JOIN subflow to its connection through our token and agree with our
IDSNs. (mptcp_impl never imports analysis; only this test puts the two side by side.)"""

from __future__ import annotations

import importlib.util
import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest

from mptcp_impl.mptcp.crypto import (
    add_addr_hmac,
    dss_checksum,
    idsn,
    join_ack_hmac,
    join_synack_hmac,
    token,
)
from mptcp_impl.mptcp.options import (
    AddAddr,
    Dss,
    FastClose,
    MpCapable,
    MpFail,
    MpJoinAck,
    MpJoinSyn,
    MpJoinSynAck,
    MpPrio,
    RemoveAddr,
    TcpRst,
    encode,
)

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")

_spec = importlib.util.spec_from_file_location(
    "mptcp_craft", Path(__file__).parents[1] / "analysis" / "mptcp_craft.py"
)
craft = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(craft)

CKEY, SKEY = 0x0102030405060708, 0x1122334455667788
C, C2, S = ("10.9.0.1", 40000), ("10.9.1.1", 40002), ("10.9.0.2", 5201)
SYN, ACK, RST, PSH = 0x02, 0x10, 0x04, 0x08
V4, V6 = ipaddress.IPv4Address("10.9.1.2"), ipaddress.IPv6Address("2001:db8::2")
RA, RB = 0xA1A2A3A4, 0xB1B2B3B4

BAD_FILTER = (
    "tcp.option.len.invalid || tcp.suboption_malformed || _ws.malformed"
    " || mptcp.connection.echoed_key_mismatch || mptcp.connection.missing_algorithm"
    " || mptcp.connection.unsupported_algorithm"
)


def _seg(frm, to, seq, ack, flags, opts, payload=0):
    return craft.segment(frm[0], to[0], frm[1], to[1], seq, ack, flags, opts, payload)


def packets():
    """(segment, the options in it) for a connection with checksums, one whose third ACK
    carries data, and an MP_JOIN subflow of the first."""
    ci, si = idsn(CKEY), idsn(SKEY)
    cs = dss_checksum(ci + 1, 1, 100, bytes(100))
    ahmac = add_addr_hmac(SKEY, CKEY, 7, V4)
    p = [
        (C, S, 1000, 0, SYN, [MpCapable(checksum_required=True)], 0),
        (S, C, 5000, 1001, SYN | ACK, [MpCapable(checksum_required=True, sender_key=SKEY)], 0),
        (
            C,
            S,
            1001,
            5001,
            ACK,
            [MpCapable(checksum_required=True, sender_key=CKEY, receiver_key=SKEY)],
            0,
        ),
        (
            C,
            S,
            1001,
            5001,
            ACK | PSH,
            [Dss(si + 1, True, ci + 1, True, 1, 100, cs)],
            100,
        ),
        (
            C,
            S,
            1101,
            5001,
            ACK,
            [Dss((si + 1) & 0xFFFFFFFF, False, (ci + 101) & 0xFFFFFFFF, False, 101, 100, 0x1234)],
            100,
        ),
        (S, C, 5001, 1201, ACK, [Dss(data_ack=(ci + 201) & 0xFFFFFFFF)], 0),
        (
            S,
            C,
            5001,
            1201,
            ACK,
            [Dss(data_ack=ci + 201, data_ack64=True), AddAddr(7, V4, hmac=ahmac)],
            0,
        ),
        (C, S, 1201, 5001, ACK, [AddAddr(7, V4, echo=True)], 0),
        (S, C, 5001, 1201, ACK, [AddAddr(8, V6, port=8080, hmac=0xA1B2C3D4E5F60718)], 0),
        (C, S, 1201, 5001, ACK, [AddAddr(8, V6, port=8080, echo=True)], 0),
        (S, C, 5001, 1201, ACK, [AddAddr(9, V6, hmac=1)], 0),
        (S, C, 5001, 1201, ACK, [AddAddr(10, V4, port=1, hmac=2)], 0),
        (S, C, 5001, 1201, ACK, [RemoveAddr((3, 4, 5)), MpPrio(True)], 0),
        (S, C, 5001, 1201, ACK, [MpPrio(False, addr_id=9)], 0),
        (C, S, 1201, 5001, ACK, [MpFail(ci + 150), Dss(data_ack=si + 1, data_ack64=True)], 0),
        # MP_JOIN subflow from the client's second address, joining the first connection
        (C2, S, 70, 0, SYN, [MpJoinSyn(token(SKEY), RA, addr_id=1, backup=True)], 0),
        (
            S,
            C2,
            90,
            71,
            SYN | ACK,
            [MpJoinSynAck(join_synack_hmac(SKEY, CKEY, RB, RA), RB, addr_id=0)],
            0,
        ),
        (C2, S, 71, 91, ACK, [MpJoinAck(join_ack_hmac(CKEY, SKEY, RA, RB))], 0),
        (C2, S, 71, 91, ACK, [Dss(si + 1, True, ci + 201, True, 1, 1, 0x55AA, data_fin=True)], 0),
        (S, C, 5001, 1201, ACK | RST, [FastClose(CKEY), TcpRst(3, transient=True)], 0),
        # second connection: MP_CAPABLE with data-level length, and 32-bit DSS with DATA_FIN
        ((C[0], 40001), S, 7, 0, SYN, [MpCapable()], 0),
        (S, (C[0], 40001), 9, 8, SYN | ACK, [MpCapable(sender_key=SKEY + 1)], 0),
        (
            (C[0], 40001),
            S,
            8,
            10,
            ACK | PSH,
            [MpCapable(sender_key=CKEY + 1, receiver_key=SKEY + 1, data_len=500)],
            500,
        ),
        (
            (C[0], 40001),
            S,
            508,
            10,
            ACK,
            [Dss(data_ack=5, dsn=7, subflow_seq=0, data_len=1, data_fin=True)],
            0,
        ),
        ((C[0], 40001), S, 508, 10, ACK, [Dss(data_fin=True)], 0),
        ((C[0], 40001), S, 508, 10, ACK | RST, [TcpRst(0, flag_u=True, flag_w=True)], 0),
    ]
    out = []
    for frm, to, seq, ack, flags, opts, plen in p:
        raw = b"".join(encode(o) for o in opts)
        out.append((_seg(frm, to, seq, ack, flags, raw, plen), opts))
    return out


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    pk = packets()
    path = tmp_path_factory.mktemp("enc") / "encoder.pcap"
    craft.write_pcap(path, [(1_700_000_000 + i * 0.01, d, o) for i, ((d, o), _) in enumerate(pk)])
    return path, [opts for _, opts in pk]


FIELDS = [
    "frame.number",
    "tcp.options.mptcp.subtype",
    "mptcp.stream",
    "tcp.options.mptcp.sendkey",
    "tcp.options.mptcp.recvkey",
    "mptcp.expected_token",
    "mptcp.expected_idsn",
    "tcp.options.mptcp.recvtok",
    "tcp.options.mptcp.sendrand",
    "tcp.options.mptcp.sendtrunchmac",
    "tcp.options.mptcp.sendhmac",
    "tcp.options.mptcp.rawdataack",
    "tcp.options.mptcp.rawdataseqno",
    "tcp.options.mptcp.subflowseqno",
    "tcp.options.mptcp.datalvllen",
    "tcp.options.mptcp.addrid",
    "tcp.options.mptcp.ipv4",
    "tcp.options.mptcp.ipv6",
    "tcp.options.mptcp.port",
    "tcp.options.mptcp.addaddrtrunchmac",
    "tcp.options.mptcp.rst_reason",
    "tcp.options.mptcp.flag_T.flag",
    "tcp.options.mptcp.flag_U.flag",
    "tcp.options.mptcp.flag_V.flag",
    "tcp.options.mptcp.flag_W.flag",
]


def tshark(path: Path, *args: str) -> str:
    p = subprocess.run(
        ["tshark", "-r", str(path), "-2", "-o", "mptcp.analyze_mptcp:TRUE", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    return p.stdout


def fields(path: Path) -> dict[int, dict[str, str]]:
    args = ["-T", "fields", "-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=;"]
    out = tshark(path, "-o", "mptcp.relative_sequence_numbers:FALSE", *args,
                 *[a for f in FIELDS for a in ("-e", f)])  # fmt: skip
    rows = {}
    for line in out.splitlines():
        vals = line.split("\t")
        rows[int(vals[0])] = dict(zip(FIELDS, vals, strict=True))
    return rows


def test_no_malformed_option_and_the_filter_would_see_one(crafted, tmp_path):
    path, _ = crafted
    assert tshark(path, "-Y", BAD_FILTER) == ""
    # the check is not vacuous: a DSS, an MP_FAIL and an MP_FASTCLOSE cut short are seen
    # (tshark 4.0 only flags options whose fixed fields run out; a 9-byte ADD_ADDR passes)
    broken = [
        _seg(C, S, 1, 1, ACK, bytes([30, 7, 0x20, 0x01, 0, 0, 0])),
        _seg(C, S, 1, 1, ACK, bytes([30, 11, 0x60, 0]) + bytes(7)),
        _seg(C, S, 1, 1, ACK, bytes([30, 10, 0x70, 0]) + bytes(6)),
    ]
    bad = craft.write_pcap(tmp_path / "bad.pcap", [(1.0, d, o) for d, o in broken])
    assert len(tshark(bad, "-Y", BAD_FILTER).splitlines()) == 3


def test_tshark_reads_back_what_we_encoded(crafted):
    path, opts = crafted
    rows = fields(path)
    assert len(rows) == len(opts)
    for fr, os_ in enumerate(opts, start=1):
        r = rows[fr]
        want = ";".join(str(encode(o)[2] >> 4) for o in os_)
        assert r["tcp.options.mptcp.subtype"] == want, (fr, r)
        for o in os_:
            check(fr, o, r)


def _has(r: dict[str, str], field: str, value) -> bool:
    return str(value) in r[field].split(";")


def check(fr: int, o, r: dict[str, str]) -> None:
    ctx = (fr, o, r)
    if isinstance(o, MpCapable):
        if o.sender_key is not None:
            assert _has(r, "tcp.options.mptcp.sendkey", o.sender_key), ctx
        if o.receiver_key is not None:
            assert _has(r, "tcp.options.mptcp.recvkey", o.receiver_key), ctx
        if o.data_len is not None:
            assert _has(r, "tcp.options.mptcp.datalvllen", o.data_len), ctx
    elif isinstance(o, MpJoinSyn):
        assert _has(r, "tcp.options.mptcp.recvtok", o.token), ctx
        assert _has(r, "tcp.options.mptcp.sendrand", o.nonce), ctx
        assert _has(r, "tcp.options.mptcp.addrid", o.addr_id), ctx
    elif isinstance(o, MpJoinSynAck):
        assert _has(r, "tcp.options.mptcp.sendtrunchmac", o.hmac64), ctx
        assert _has(r, "tcp.options.mptcp.sendrand", o.nonce), ctx
    elif isinstance(o, MpJoinAck):
        assert r["tcp.options.mptcp.sendhmac"].replace(":", "") == o.hmac160.hex(), ctx
    elif isinstance(o, Dss):
        if o.data_ack is not None:
            assert _has(r, "tcp.options.mptcp.rawdataack", o.data_ack), ctx
        if o.dsn is not None:
            assert _has(r, "tcp.options.mptcp.rawdataseqno", o.dsn), ctx
            assert _has(r, "tcp.options.mptcp.subflowseqno", o.subflow_seq), ctx
            assert _has(r, "tcp.options.mptcp.datalvllen", o.data_len), ctx
        # tshark 4.0 never shows the DSS checksum: the analysis parser checks it below
    elif isinstance(o, AddAddr):
        assert _has(r, "tcp.options.mptcp.addrid", o.addr_id), ctx
        fam = "tcp.options.mptcp.ipv4" if o.address.version == 4 else "tcp.options.mptcp.ipv6"
        assert _has(r, fam, o.address), ctx
        if o.port is not None:
            assert _has(r, "tcp.options.mptcp.port", o.port), ctx
        if o.hmac is not None:
            assert _has(r, "tcp.options.mptcp.addaddrtrunchmac", o.hmac), ctx
    elif isinstance(o, TcpRst):
        assert _has(r, "tcp.options.mptcp.rst_reason", f"0x{o.reason:02x}"), ctx
        for flag, mine in (("T", o.transient), ("U", o.flag_u), ("V", o.flag_v), ("W", o.flag_w)):
            assert r[f"tcp.options.mptcp.flag_{flag}.flag"] == str(int(mine)), ctx
    elif isinstance(o, FastClose):
        assert _has(r, "tcp.options.mptcp.recvkey", o.receiver_key), ctx
    elif isinstance(o, MpPrio) and o.addr_id is not None:
        assert _has(r, "tcp.options.mptcp.addrid", o.addr_id), ctx


def test_tshark_agrees_with_our_tokens_and_idsns(crafted):
    path, _ = crafted
    rows = fields(path)
    # tshark derives token and IDSN from the sender's key of each MP_CAPABLE
    for fr, key in ((2, SKEY), (3, CKEY), (22, SKEY + 1), (23, CKEY + 1)):
        assert rows[fr]["mptcp.expected_token"] == str(token(key)), fr
        assert rows[fr]["mptcp.expected_idsn"] == str(idsn(key)), fr
    # the MP_JOIN subflow (frames 16-19) is tied to connection 0 through our token
    stream0 = rows[1]["mptcp.stream"]
    assert all(rows[f]["mptcp.stream"] == stream0 for f in (16, 17, 18, 19)), [
        rows[f]["mptcp.stream"] for f in (16, 17, 18, 19)
    ]
    assert rows[21]["mptcp.stream"] != stream0


def test_analysis_parser_reads_back_what_we_encoded(crafted):
    parse_pcap = pytest.importorskip("analysis.pcap").parse_pcap
    path, opts = crafted
    df = parse_pcap(path).set_index("frame")
    assert df.loc[3, "mpc_send_key"] == CKEY and df.loc[3, "mpc_recv_key"] == SKEY
    assert df.loc[16, "join_token"] == token(SKEY) and df.loc[16, "join_backup"]
    assert df.loc[17, "join_hmac64"] == opts[16][0].hmac64
    assert df.loc[18, "join_hmac"] == opts[17][0].hmac160.hex()
    assert df.loc[7, "add_hmac"] == opts[6][1].hmac and df.loc[7, "add_addr"] == "10.9.1.2"
    assert df.loc[9, "add_port"] == 8080 and df.loc[10, "add_echo"]
    assert df.loc[13, "rm_addr_ids"] == "3,4,5" and df.loc[14, "prio_addr_id"] == 9
    assert df.loc[15, "fail_dsn"] == idsn(CKEY) + 150
    assert df.loc[20, "fastclose_key"] == CKEY and df.loc[20, "tcprst_reason"] == 3
    assert df.loc[23, "mpc_dll"] == 500
    assert df.loc[4, "dss_checksum"] == opts[3][0].checksum and df.loc[4, "dss_dsn64"]
    assert df.loc[5, "dss_checksum"] == 0x1234 and not df.loc[5, "dss_dsn64"]
    mptcp = pytest.importorskip("analysis.mptcp")
    for k in (CKEY, SKEY, 1, 2**64 - 1):
        assert mptcp.key_token(k) == token(k) and mptcp.key_idsn(k) == idsn(k)
