"""Fixtures of the MPTCP interop suite: our MPTCP layer against Linux kernel MPTCP, for real.

Every test runs real processes in the testbed's Mininet namespaces: our stack through its CLI
(``python -m mptcp_impl``, MPTCP by default), Linux MPTCP or plain TCP peers from ``kmptcp.py``
(``socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP)``), Linux's path manager configured with ``ip
mptcp``, Linux's MPTCP counters read with ``nstat`` in the Linux host's namespace, captures
with tcpdump and checks with tshark. Testbeds are module-scoped: a module's tests share one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from testbed.capture import Capture
from testbed.net import Testbed
from testbed.topology import load_topology
from testkit import ENV, PY  # how tests run a peer: this checkout on PYTHONPATH
from testkit.transfer import drain, nstat, state_dump
from testkit.tshark import MPTCP_ANALYSIS_PREFS

HERE = Path(__file__).resolve().parent
MB = 1_000_000

# Linux counters that must stay 0 in every MPTCP scenario: a mapping contradicted, an infinite
# mapping (fallback in mid-connection), a checksum or HMAC failure, an MP_FAIL, a fallback.
LINUX_BAD = (
    "MPTcpExtDSSNotMatching",
    "MPTcpExtDSSCorruptionFallback",
    "MPTcpExtDSSCorruptionReset",
    "MPTcpExtInfiniteMapRx",
    "MPTcpExtInfiniteMapTx",
    "MPTcpExtDSSNoMatchTCP",
    "MPTcpExtDataCsumErr",
    "MPTcpExtMPJoinSynAckHMacFailure",
    "MPTcpExtMPJoinAckHMacFailure",
    "MPTcpExtMPJoinNoTokenFound",
    "MPTcpExtMPFailRx",
    "MPTcpExtMPFailTx",
    "MPTcpExtMPCapableFallbackACK",
    "MPTcpExtMPCapableFallbackSYNACK",
    "MPTcpExtMPCapableDataFallback",
    "MPTcpExtDssFallback",
    "MPTcpExtFallbackFailed",
    "MPTcpExtAddAddrDrop",
    "MPTcpExtMPRstRx",
    "MPTcpExtMPFastcloseRx",
)
# ... and the same in our MIB (names as Linux's, without the MPTcpExt prefix)
OURS_BAD = (
    "DSSNotMatching",
    "InfiniteMapRx",
    "DataCsumErr",
    "MPJoinSynAckHMacFailure",
    "MPJoinAckHMacFailure",
    "MPJoinNoTokenFound",
    "MPCapableFallbackACK",
    "MPCapableFallbackSYNACK",
    "MPFailRx",
    "AddAddrDrop",
    "OptionMalformed",
    "DataAckInvalid",
    # (not MPRstRx: Linux resets a subflow that gets a retransmission of ours after its close,
    # TCPAbortOnData, once the connection is done; it may arrive before our report)
    "MPJoinSynTxBindErr",
    "AddAddrTxDrop",
    "EchoAddTxDrop",
)


@dataclass
class Bed:
    """A running testbed, its work folder and the Linux counters last seen per host."""

    tb: object
    workdir: Path
    _names: set[str] = field(default_factory=set)

    def host(self, name: str):
        return self.tb.host(name)

    def addr(self, host: str, link: str) -> str:
        return self.tb.addr(host, link)

    def _unique(self, name: str) -> str:
        base, k = name, 1
        while name in self._names:
            k += 1
            name = f"{base}-{k}"
        self._names.add(name)
        return name

    def start(self, host: str, args: list[str], name: str):
        """``python args`` on ``host``: stdout to a file, stderr piped (wait_for_line)."""
        name = self._unique(name)
        out = self.workdir / f"{name}.out"
        proc = self.host(host).start([PY, *args], stdout=out, stderr=subprocess.PIPE, env=ENV)
        proc.out_path = out
        proc.name = name
        return proc

    def result(self, proc, timeout: float = 90) -> dict:
        """Wait for the process to exit and return the last JSON line it printed."""
        try:
            rc = proc.popen.wait(timeout)
            err = drain(proc)
            proc.wait(1)
        except subprocess.TimeoutExpired:
            dump = state_dump(proc)
            kernel = self._kernel_view()
            proc.stop()
            err = dump + drain(proc) + kernel
            path = self.workdir / f"{proc.name}.stalled.txt"
            path.write_text(err)
            pytest.fail(
                f"{proc.name}: no exit within {timeout}s; its state ({path}):\n{err[-8000:]}"
            )
        text = proc.out_path.read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith("{")]
        if not lines:
            pytest.fail(f"{proc.name} exited {rc} without JSON: {text[-1000:]} {err[-2000:]}")
        res = json.loads(lines[-1])
        res["_rc"] = rc
        res["_stderr"] = err[-4000:]
        return res

    def _kernel_view(self) -> str:
        """What the kernel of each host says during a stall: its MPTCP counters that are not
        zero, its TCP sockets (subflows) and its MPTCP sockets with their memory (``ss -timn``,
        ``ss -Mimn``: skmem r = receive memory in use, rb = receive buffer; an MPTCP socket whose
        out-of-order data holds r > rb takes nothing more from its subflows)."""
        out = []
        for name in ("client", "server"):
            try:
                host = self.host(name)
            except KeyError:
                continue
            mib = {k: v for k, v in nstat(host, "MPTcpExt").items() if v}
            ss = "".join(host.run(["ss", o], check=False).stdout for o in ("-timn", "-Mimn"))
            out.append(f"\nkernel {name}: {json.dumps(mib)}\n{ss}")
        return "".join(out)

    def nstat(self, host: str) -> dict[str, int]:
        """Absolute values of the host namespace's counters (``nstat -asz``: no history)."""
        return nstat(self.host(host))

    def capture(self, name: str, hosts: list[str]) -> Capture:
        """tcpdump (immediate mode) on every interface of ``hosts``; returns once it listens."""
        return self.tb.capture(self.workdir / self._unique(name), hosts=hosts)


def make_bed(topology: str | Path, overrides: dict, tmp_path_factory, name: str) -> Iterator[Bed]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    topo = load_topology(topology, overrides=overrides)
    workdir = tmp_path_factory.mktemp(name)
    with Testbed(topo, workdir=workdir) as tb:
        yield Bed(tb, workdir)


# ---------------------------------------------------------------- peers


def ours_client(bed: Bed, host: str, dst: str, port: int, nbytes: int, name: str, *extra: str):
    return bed.start(
        host,
        [
            "-m",
            "mptcp_impl",
            "client",
            "--connect",
            f"{dst}:{port}",
            "--bytes",
            str(nbytes),
            "--json",
            *extra,
        ],
        name,
    )


def ours_server(bed: Bed, host: str, ip: str, port: int, name: str, *extra: str):
    p = bed.start(
        host,
        ["-m", "mptcp_impl", "server", "--listen", f"{ip}:{port}", "--once", "--json", *extra],
        name,
    )
    p.wait_for_line("^listening ", timeout=30)
    return p


def linux_server(bed: Bed, host: str, ip: str, port: int, name: str, *extra: str):
    p = bed.start(
        host,
        ["-m", "tests.mptcp_interop.kmptcp", "server", "--listen", f"{ip}:{port}", *extra],
        name,
    )
    p.wait_for_line("^listening", timeout=30)
    return p


def linux_client(bed: Bed, host: str, dst: str, port: int, nbytes: int, name: str, *extra: str):
    return bed.start(
        host,
        [
            "-m",
            "tests.mptcp_interop.kmptcp",
            "client",
            "--connect",
            f"{dst}:{port}",
            "--bytes",
            str(nbytes),
            *extra,
        ],
        name,
    )


# ---------------------------------------------------------------- tshark


def tshark(pcap: Path, filt: str, *fields: str, two_pass: bool = True) -> list[list[str]]:
    """Rows of ``fields`` (multi-valued fields joined by ';') for frames matching ``filt``,
    with Wireshark's MPTCP analysis on."""
    cmd = ["tshark", "-r", str(pcap), *(["-2"] if two_pass else []), *MPTCP_ANALYSIS_PREFS]
    if filt:
        cmd += ["-R" if two_pass else "-Y", filt]
    cmd += ["-T", "fields", "-E", "occurrence=a", "-E", "aggregator=;"]
    for f in fields:
        cmd += ["-e", f]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    return [ln.split("\t") for ln in res.stdout.splitlines() if ln.strip()]


def merged(files: list[Path], out: Path) -> Path:
    """One pcap of several interfaces' captures (mergecap, by time)."""
    subprocess.run(["mergecap", "-w", str(out), *map(str, files)], check=True, timeout=60)
    return out


def ip_of(text: str) -> str:
    m = re.match(r"^(\d+\.\d+\.\d+\.\d+)", text)
    assert m, text
    return m.group(1)


# ---------------------------------------------------------------- what tshark says of our segments

EXPERT = (
    "mptcp.connection.echoed_key_mismatch",
    "mptcp.dss.missing_mapping",
    "tcp.option.len.invalid",
    "tcp.suboption_malformed",
    "_ws.malformed",
)
WIRE_FIELDS = (
    "frame.number",
    "ip.src",
    "tcp.stream",
    "mptcp.stream",
    "tcp.seq",
    "tcp.len",
    "tcp.option_kind",
    "tcp.options.mptcp.subtype",
    "tcp.options.mptcp.sendkey",
    "mptcp.expected_token",
    "mptcp.expected_idsn",
    "tcp.options.mptcp.recvtok",
    "tcp.options.mptcp.rawdataseqno",
    "tcp.options.mptcp.subflowseqno",
    "tcp.options.mptcp.datalvllen",
    "tcp.options.mptcp.datafin.flag",
)


def _vals(x: str) -> list[str]:
    return [v for v in x.split(";") if v != ""] if x else []


def wire_check(pcap: Path, ours: set[str], our_token: str) -> dict:
    """tshark (MPTCP analysis and mapping analysis on) over a capture taken on our host.

    Checks every segment our stack sent: each MPTCP option (TCP kind 30) is decoded (as many
    MPTCP subtypes as kind-30 options), no expert info of ``EXPERT``, our mappings on a subflow
    never contradict each other, tshark ties every subflow to one MPTCP connection, and
    tshark's token of the key we sent (``mptcp.expected_token``) is the token we report.
    Returns what it saw: subtypes sent, the key's expected IDSN, our DSS mappings and the
    peer's MP_JOIN tokens, for the caller's own checks.

    One exception, with its proof: Wireshark 4.0 reports ``mptcp.dss.missing_mapping`` on some
    data segments of long subflows although the segment itself carries the DSS mapping of its
    bytes (its interval tree of mappings loses entries: the same frames are clean when the
    capture is cut down around them). Such a frame passes only if its own DSS covers it, and
    (three of them) if tshark calls it mapped in a capture of every SYN and the 200 frames
    before it.
    """
    rows = tshark(pcap, "tcp", *WIRE_FIELDS)
    frames = {}
    for r in rows:
        frames[int(r[0])] = dict(
            zip(WIRE_FIELDS, r + [""] * (len(WIRE_FIELDS) - len(r)), strict=True)
        )
    mine = {k: f for k, f in frames.items() if f["ip.src"] in ours}
    assert len(mine) > 50, f"only {len(mine)} of our segments in {pcap}"
    # every kind-30 option decoded as an MPTCP subtype
    undecoded = [
        k
        for k, f in mine.items()
        if _vals(f["tcp.option_kind"]).count("30") != len(_vals(f["tcp.options.mptcp.subtype"]))
    ]
    assert not undecoded, f"MPTCP options tshark did not decode in frames {undecoded[:20]}"
    subtypes = {int(v) for f in mine.values() for v in _vals(f["tcp.options.mptcp.subtype"])}
    # expert infos on our frames
    others = [e for e in EXPERT if e != "mptcp.dss.missing_mapping"]
    wrong = [
        (int(r[0]), r[1:])
        for r in tshark(pcap, " || ".join(others), "frame.number", "_ws.expert.message")
        if int(r[0]) in mine
    ]
    assert not wrong, f"tshark expert infos on our segments: {wrong[:20]}"
    unmapped = [
        int(r[0])
        for r in tshark(pcap, "mptcp.dss.missing_mapping", "frame.number")
        if int(r[0]) in mine
    ]
    wrong = [k for k in unmapped if not _own_mapping_covers(mine[k])]
    assert not wrong, f"our data segments without a mapping: {wrong[:20]}"
    still = _flagged_when_cut_down(pcap, unmapped[:3])
    assert not still, f"tshark flags frames {still} even in a capture cut down around them"
    excused = len(unmapped)
    # our mappings: one subflow's mappings never contradict each other
    maps: dict[str, set[tuple[int, int, int]]] = {}
    for f in mine.values():
        for ssn, ln, dsn in zip(
            _vals(f["tcp.options.mptcp.subflowseqno"]),
            _vals(f["tcp.options.mptcp.datalvllen"]),
            _vals(f["tcp.options.mptcp.rawdataseqno"]),
            strict=False,
        ):
            if int(ln) and int(ssn):  # (a DATA_FIN on an empty segment has ssn 0)
                maps.setdefault(f["tcp.stream"], set()).add((int(ssn), int(ln), int(dsn)))
    for st, ms in maps.items():
        ms = sorted(ms)
        for a, b in zip(ms, ms[1:], strict=False):
            assert b[0] >= a[0] + a[1] or b[2] - b[0] == a[2] - a[0], (st, a, b)
            assert b[0] != a[0], f"two mappings from subflow seq {a[0]} on stream {st}: {a} {b}"
    # one MPTCP connection in tshark's view, holding every subflow
    streams = {f["mptcp.stream"] for f in mine.values() if f["mptcp.stream"]}
    assert len(streams) == 1, streams
    # the key we sent: tshark's token of it is ours
    keyed = [
        f
        for f in mine.values()
        if "0" in _vals(f["tcp.options.mptcp.subtype"]) and _vals(f["tcp.options.mptcp.sendkey"])
    ]
    assert keyed, "no MP_CAPABLE with our key"
    exp_tokens = {_vals(f["mptcp.expected_token"])[0] for f in keyed}
    exp_idsns = {_vals(f["mptcp.expected_idsn"])[0] for f in keyed}
    assert exp_tokens == {str(int(our_token, 16))}, (exp_tokens, our_token)
    assert len(exp_idsns) == 1, exp_idsns
    peer_join_tokens = {
        v
        for f in frames.values()
        if f["ip.src"] not in ours
        for v in _vals(f["tcp.options.mptcp.recvtok"])
    }
    our_join_tokens = {v for f in mine.values() for v in _vals(f["tcp.options.mptcp.recvtok"])}
    peer_keyed = [
        f
        for f in frames.values()
        if f["ip.src"] not in ours
        and "0" in _vals(f["tcp.options.mptcp.subtype"])
        and _vals(f["tcp.options.mptcp.sendkey"])
    ]
    peer_tokens = {_vals(f["mptcp.expected_token"])[0] for f in peer_keyed}
    fins = [
        int(_vals(f["tcp.options.mptcp.rawdataseqno"])[0])
        for f in mine.values()
        if "1" in _vals(f["tcp.options.mptcp.datafin.flag"])
    ]
    return {
        "subtypes": subtypes,
        "expected_idsn": int(exp_idsns.pop()),
        "maps": maps,
        "our_join_tokens": our_join_tokens,  # MP_JOIN SYNs we sent: the peer's token
        "peer_join_tokens": peer_join_tokens,  # MP_JOIN SYNs the peer sent: our token
        "peer_tokens": peer_tokens,  # tshark's token of the peer's key
        "data_fin_dsns": fins,
        "excused_missing_mapping": excused,
    }


def _flagged_when_cut_down(pcap: Path, nums: list[int], before: int = 200) -> list[int]:
    """Which of ``nums`` tshark still calls unmapped in a capture of every SYN and the
    ``before`` frames up to each one (the same segment, the same mapping, less history)."""
    if not nums:
        return []
    syns = [int(r[0]) for r in tshark(pcap, "tcp.flags.syn == 1", "frame.number", two_pass=False)]
    still = []
    for k in nums:
        keep = sorted({*syns, *range(max(1, k - before), k + 1)})
        keep = [x for x in keep if x <= k]
        cut = pcap.with_suffix(f".cut{k}.pcap")
        ranges = [str(x) for x in keep]
        subprocess.run(["editcap", "-r", str(pcap), str(cut), *ranges], check=True, timeout=60)
        new_num = len(keep)  # frame k is the last one kept
        flagged = {int(r[0]) for r in tshark(cut, "mptcp.dss.missing_mapping", "frame.number")}
        if new_num in flagged:
            still.append(k)
    return still


def _own_mapping_covers(f: dict) -> bool:
    """The segment's own DSS maps every byte it carries (or it carries none)."""
    ln = int(f["tcp.len"] or 0)
    if ln == 0:
        return True
    seq = int(f["tcp.seq"])
    ssns = _vals(f["tcp.options.mptcp.subflowseqno"])
    lens = _vals(f["tcp.options.mptcp.datalvllen"])
    if not ssns and lens and "0" in _vals(f["tcp.options.mptcp.subtype"]):
        ssns = ["1"]  # MP_CAPABLE with data: the mapping starts at subflow sequence 1
    for ssn, dl in zip(ssns, lens, strict=False):
        if int(ssn) <= seq and seq + ln <= int(ssn) + int(dl):
            return True
    return False
