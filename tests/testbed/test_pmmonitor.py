"""testbed/pmmonitor.py: ``ip mptcp monitor`` lines (as iproute2 6.1 prints them, captured on
this machine from a kernel MPTCP connection over loopback) in our stack's event vocabulary."""

from __future__ import annotations

from experiments.runner import pm_timeline
from testbed.pmmonitor import parse_line

LINES = """\
[UNKNOWN 15]
[       CREATED] token=981f6ed1 remid=0 locid=0 saddr4=127.0.0.1 daddr4=127.0.0.1 sport=58764 dport=45999
[   ESTABLISHED] token=8fa9b342 remid=0 locid=0 saddr4=127.0.0.1 daddr4=127.0.0.1 sport=45999 dport=58764 flags=2
[SF_ESTABLISHED] token=8fa9b342 remid=1 locid=0 saddr4=10.0.5.2 daddr4=10.0.2.1 sport=5201 dport=40001 backup=0
[     SF_CLOSED] token=8fa9b342 remid=1 locid=0 saddr4=10.0.5.2 daddr4=10.0.2.1 sport=5201 dport=40001 backup=0 error=104
[        CLOSED] token=981f6ed1

"""


def test_monitor_lines_become_our_events():
    evs = [e for e in map(parse_line, LINES.splitlines()) if e is not None]
    assert [e["type"] for e in evs] == [
        "unknown",
        "created",
        "established",
        "sub_established",
        "sub_closed",
        "closed",
    ]
    assert evs[0] == {"type": "unknown", "code": 15}
    assert evs[1] == {
        "type": "created",
        "token": "981f6ed1",
        "rem_id": 0,
        "loc_id": 0,
        "saddr": "127.0.0.1",
        "daddr": "127.0.0.1",
        "sport": 58764,
        "dport": 45999,
    }
    assert evs[4]["error"] == 104 and evs[4]["backup"] == 0
    assert evs[5] == {"type": "closed", "token": "981f6ed1"}


def test_both_hosts_on_one_timeline():
    t0 = 1_800_000_000.0
    by_host = {
        "server": [
            {"time": t0 + 0.2, "type": "established"},
            {"time": t0 + 0.1, "type": "created"},
        ],
        "client": [{"time": t0 + 0.15, "type": "created"}, {"type": "no time: dropped"}],
    }
    tl = pm_timeline(by_host, t0)
    assert [(e["t"], e["host"], e["type"]) for e in tl] == [
        (0.1, "server", "created"),
        (0.15, "client", "created"),
        (0.2, "server", "established"),
    ]
