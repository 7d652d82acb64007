"""Capture files: cache beside the pcap, pcapng, and clear errors for broken files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from tshark_oracle import compare_dsn, compare_options

from analysis.frames import cache_path, find_pcaps, load_pcap
from analysis.mptcp import annotate
from analysis.pcap import CaptureError, host_intf, parse_pcap
from testkit.mptcp_pair import Pair, sh, start_capture, stop_captures
from testkit.tshark import tshark_fields

pytestmark = pytest.mark.net


@pytest.fixture
def pcap_copy(runs, tmp_path):
    src = next((runs["bulk"] / "pcap").rglob("client-eth0.pcap"))
    dst = tmp_path / "client-eth0.pcap"
    shutil.copy(src, dst)
    return dst


def test_unchanged_pcap_is_parsed_once(pcap_copy):
    first = load_pcap(pcap_copy)
    assert first.attrs["cache"] == "miss" and cache_path(pcap_copy).exists()
    mtime = cache_path(pcap_copy).stat().st_mtime_ns
    second = load_pcap(pcap_copy)
    assert second.attrs["cache"] == "hit"
    assert cache_path(pcap_copy).stat().st_mtime_ns == mtime  # not rewritten
    pd.testing.assert_frame_equal(first, second, check_categorical=False)
    # a changed capture is parsed again
    data = pcap_copy.read_bytes()
    pcap_copy.write_bytes(data[: 24 + 16 + int.from_bytes(data[32:36], "little")])
    third = load_pcap(pcap_copy)
    assert third.attrs["cache"] == "miss" and len(third) == 1


def test_pcapng_reads_like_pcap(pcap_copy, tmp_path):
    ng = tmp_path / "client-eth0.pcapng"
    subprocess.run(["editcap", "-F", "pcapng", str(pcap_copy), str(ng)], check=True)
    a, b = parse_pcap(pcap_copy), parse_pcap(ng)
    assert host_intf(ng) == ("client", "eth0")
    pd.testing.assert_frame_equal(a.drop(columns="time"), b.drop(columns="time"))
    assert (a["time"] - b["time"]).abs().max() < 1e-6


def test_truncated_pcap_names_file_frame_and_offset(pcap_copy):
    data = pcap_copy.read_bytes()
    # cut in the middle of the 11th record
    off, frame = 24, 1
    while frame < 11:
        off += 16 + int.from_bytes(data[off + 8 : off + 12], "little")
        frame += 1
    pcap_copy.write_bytes(data[: off + 20])
    with pytest.raises(CaptureError) as e:
        parse_pcap(pcap_copy)
    msg = str(e.value)
    assert str(pcap_copy) in msg and "frame 11" in msg and f"byte offset {off}" in msg
    assert e.value.frame == 11 and e.value.offset == off
    with pytest.raises(CaptureError, match="frame 11"):
        load_pcap(pcap_copy)


def test_garbage_and_empty_files_are_clear_errors(tmp_path):
    bad = tmp_path / "h-eth0.pcap"
    bad.write_bytes(b"this is not a capture at all")
    with pytest.raises(CaptureError, match="not a pcap file"):
        parse_pcap(bad)
    bad.write_bytes(b"")
    with pytest.raises(CaptureError, match="empty file"):
        parse_pcap(bad)
    with pytest.raises(CaptureError, match="no such file"):
        load_pcap(tmp_path / "missing-eth0.pcap")


def test_discovery_finds_the_runner_layout(runs):
    found = find_pcaps(runs["bulk"])
    assert [p.name for p in found] == [
        "client-eth0.pcap",
        "client-eth1.pcap",
        "server-eth0.pcap",
        "server-eth1.pcap",
    ]
    assert host_intf("my-host-2-eth1.pcap") == ("my-host-2", "eth1")


LOOPBACK_TRANSFER = r"""
import socket, threading
ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
ls.bind(("127.0.0.1", 5000)); ls.listen()
def serve():
    c, _ = ls.accept()
    while c.recv(65536):
        pass
    c.close()
t = threading.Thread(target=serve); t.start()
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
s.connect(("127.0.0.1", 5000)); s.sendall(b"x" * 300000); s.close(); t.join()
"""


def test_linux_cooked_v2_capture_on_any(tmp_path):
    """`tcpdump -i any` writes LINUX_SLL2 frames: same fields, checked against tshark."""
    ns = f"an{os.getpid()}-any"
    pair = Pair(ns, ns, ns, ())
    try:
        sh("ip", "netns", "add", ns)
        pair.ns(ns, "ip", "link", "set", "lo", "up")
        start_capture(pair, ns, "box", "any", tmp_path)
        pair.ns(ns, sys.executable, "-c", LOOPBACK_TRANSFER)
        stop_captures(pair)
    finally:
        for p in pair.captures:
            p.kill()
            p.wait()
        sh("ip", "netns", "del", ns, check=False)
    pcap = tmp_path / "box-any.pcap"
    assert pcap.read_bytes()[20:22] == (276).to_bytes(2, "little")  # LINKTYPE_LINUX_SLL2
    df = parse_pcap(pcap)
    assert host_intf(pcap) == ("box", "any") and df["mp_subtypes"].notna().any()
    theirs = tshark_fields(pcap)
    assert compare_options(df, theirs) == []
    n, bad = compare_dsn(annotate(df)[0], theirs)
    assert bad == [] and df.loc[df["payload_len"] > 0, "frame"].size > 0
