"""Our parser and DSN inference against tshark on real kernel MPTCP captures."""

from __future__ import annotations

import pytest
from tshark_oracle import compare_dsn, compare_options

from analysis.frames import load_many
from analysis.mptcp import annotate
from analysis.pcap import parse_pcap
from testkit.tshark import tshark_fields

pytestmark = pytest.mark.net


def test_every_mptcp_option_agrees_with_tshark(all_pcaps, oracle):
    seen: set[int] = set()
    for pcap in all_pcaps:
        df = parse_pcap(pcap)
        assert len(df) > 0, pcap
        seen |= {int(x) for s in df["mp_subtypes"].dropna() for x in str(s).split(",")}
        assert compare_options(df, oracle[pcap]) == [], pcap
    # the fixture really produced MP_CAPABLE, MP_JOIN, DSS, ADD_ADDR, REMOVE_ADDR, MP_PRIO,
    # MP_FASTCLOSE and MP_TCPRST (MP_FAIL is only in the crafted capture)
    assert seen >= {0, 1, 2, 3, 4, 5, 7, 8}


def test_segment_fields_agree_with_tshark(runs):
    pcap = next((runs["bulk"] / "pcap").rglob("server-eth0.pcap"))
    df = parse_pcap(pcap)
    fields = [
        "frame.number",
        "tcp.seq_raw",
        "tcp.ack_raw",
        "tcp.len",
        "tcp.window_size_value",
        "tcp.flags",
        "tcp.srcport",
        "ip.src",
        "tcp.options.timestamp.tsval",
    ]
    theirs = tshark_fields(pcap, fields, analysis=False)
    ours = (
        df[["frame", "seq", "ack", "payload_len", "window", "flags", "sport", "src", "ts_val"]]
        .astype(str)
        .values.tolist()
    )
    assert len(theirs) == len(ours)
    for o in ours:
        o[5] = f"0x{int(o[5]):04x}"
        assert [theirs[int(o[0])][f] for f in fields] == o


def test_every_data_segment_gets_tshark_dsn(all_pcaps, oracle):
    total = 0
    for pcap in all_pcaps:
        df, _ = annotate(parse_pcap(pcap))
        n, bad = compare_dsn(df, oracle[pcap])
        assert bad == [], pcap
        # relative subflow sequence numbers (what mappings count in) are tshark's tcp.seq
        rel = df[["frame", "rel_seq"]].astype(str).itertuples(index=False)
        assert [f for f, r in rel if oracle[pcap][int(f)]["tcp.seq"] != r] == [], pcap
        data = df[df["payload_len"] > 0]
        assert data["dsn"].notna().all(), pcap  # none left without a DSN
        total += n
    assert total > 2000


def test_subflows_grouped_into_one_connection_per_run(runs):
    for variant, run in runs.items():
        if variant == "tcp":
            continue
        df, conns = annotate(load_many(sorted((run / "pcap").rglob("*.pcap"))))
        assert len(conns) == 1, variant
        c = conns.iloc[0]
        assert c["version"] == 1
        # both subflows (initial and MP_JOIN) belong to it, seen from both hosts
        assert df.loc[df["conn"] == 0, "subflow"].nunique() == 2, variant
        assert (df["conn"] == 0).all()
        assert df.loc[df["payload_len"] > 0, "dsn"].notna().all()
        # the client sent the upload: its DSNs start at its IDSN + 1
        up = df[(df["role"] == "client") & (df["payload_len"] > 0)]
        assert int(up["dsn"].min()) == c["client_idsn"] + 1
        # independent of tshark (which cannot place data after an MP_CAPABLE with data): the
        # server's cumulative DATA_ACKs land on the ends of our segments, on either subflow
        ends = set((up["dsn"].astype("uint64") + up["payload_len"].astype("uint64")).tolist())
        acks = df.loc[(df["role"] == "server") & df["data_ack"].notna(), "data_ack"]
        acks = set(acks.astype("uint64").tolist()) - {c["client_idsn"] + 1}
        fin = {max(acks)} if variant != "abort" else set()  # the DATA_FIN takes one more
        assert len(acks) > 100 and len((acks - fin) - ends) <= 0.01 * len(acks), variant
