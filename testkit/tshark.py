"""tshark's field export: the one list of fields and the one command line that the oracle
tests (tests/analysis/tshark_oracle.py) and the parse benchmark both use."""

from __future__ import annotations

import csv
import io
import subprocess
from pathlib import Path

# Wireshark's MPTCP analysis, fully on (absolute DSNs, mappings, cross-subflow retransmissions).
MPTCP_ANALYSIS_PREFS = [
    "-o",
    "tcp.analyze_sequence_numbers:TRUE",
    "-o",
    "mptcp.analyze_mptcp:TRUE",
    "-o",
    "mptcp.relative_sequence_numbers:FALSE",
    "-o",
    "mptcp.analyze_mappings:TRUE",
    "-o",
    "mptcp.intersubflows_retransmission:TRUE",
]
ANALYSIS_OPTS = ["-2", *MPTCP_ANALYSIS_PREFS]  # two passes: the analysis sees later frames too
NO_ANALYSIS_OPTS = ["-o", "mptcp.analyze_mptcp:FALSE", "-o", "tcp.analyze_sequence_numbers:FALSE"]

# Per segment: what analysis.pcap gives every row, as tshark names it.
SEGMENT_FIELDS = [
    "frame.number",
    "frame.time_epoch",
    "ip.src",
    "ip.dst",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.seq_raw",
    "tcp.ack_raw",
    "tcp.flags",
    "tcp.len",
    "tcp.window_size_value",
    "tcp.options.timestamp.tsval",
    "tcp.options.timestamp.tsecr",
]

P = "tcp.options.mptcp."
# Every MPTCP option field we decode (no MPTCP analysis needed for these).
MPTCP_OPTION_FIELDS = [
    P + "dseqn8.flag",
    P + "subtype",
    P + "version",
    P + "sendkey",
    P + "recvkey",
    P + "recvtok",
    P + "sendrand",
    P + "sendtrunchmac",
    P + "sendhmac",
    P + "rawdataseqno",
    P + "rawdataack",
    P + "subflowseqno",
    P + "datalvllen",
    P + "checksum",
    P + "datafin.flag",
    P + "addrid",
    P + "backup.flag",
    P + "echo",
    P + "ipv4",
    P + "ipv6",
    P + "port",
    P + "addaddrtrunchmac",
    P + "rst_reason",
    P + "flag_U.flag",
    P + "flag_V.flag",
    P + "flag_W.flag",
    P + "flag_T.flag",
]
# What tshark's MPTCP analysis adds: the 64-bit DSN of each data segment, and the stream.
MPTCP_ANALYSIS_FIELDS = ["mptcp.rawdsn64", "mptcp.ack", "mptcp.stream"]


def fields_command(pcap: Path, fields: list[str], *, analysis: bool = True) -> list[str]:
    """`tshark -T fields` over a capture: a header line, then one CSV row per frame, several
    values of one field (several MPTCP options in a segment) ';'-joined in option order."""
    cmd = [
        "tshark",
        "-r",
        str(pcap),
        *(ANALYSIS_OPTS if analysis else NO_ANALYSIS_OPTS),
        "-T",
        "fields",
        "-E",
        "header=y",
        "-E",
        "separator=,",
        "-E",
        "quote=d",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=;",
    ]
    for f in fields:
        cmd += ["-e", f]
    return cmd


def tshark_fields(
    pcap: Path, fields: list[str] | None = None, *, analysis: bool = True
) -> dict[int, dict[str, str]]:
    """frame number -> {field: value} from one tshark pass (MPTCP analysis on by default)."""
    if fields is None:
        fields = ["frame.number", "tcp.len", "tcp.seq", *MPTCP_OPTION_FIELDS]
        fields += MPTCP_ANALYSIS_FIELDS
    if "frame.number" not in fields:
        fields = ["frame.number", *fields]
    p = subprocess.run(
        fields_command(pcap, fields, analysis=analysis), capture_output=True, text=True, check=True
    )
    return {int(r["frame.number"]): r for r in csv.DictReader(io.StringIO(p.stdout))}
