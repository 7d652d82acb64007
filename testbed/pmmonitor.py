"""Kernel MPTCP path-manager events with times: ``ip mptcp monitor`` in a host's namespace,
each line stamped on arrival and written as one JSON object per line, in our stack's event
vocabulary (``MptcpConnection`` path-manager events: Linux's userspace-PM names), so a kernel
run's events and our stack's sit on one timeline.

    python -m testbed.pmmonitor OUT.jsonl     # until SIGTERM; prints "monitoring" once started

``ip mptcp monitor`` prints no time of its own; a line is stamped when it is read, which is
within a scheduling delay of the kernel's event (its stdout is a pipe read line by line).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

from testbed.signals import die_with_parent

# ip mptcp monitor's names -> ours (MptcpConnection._pm_event kinds)
EVENTS = {
    "CREATED": "created",
    "ESTABLISHED": "established",
    "CLOSED": "closed",
    "ANNOUNCED": "announced",
    "REMOVED": "removed",
    "SF_ESTABLISHED": "sub_established",
    "SF_CLOSED": "sub_closed",
    "SF_PRIORITY": "priority",
    "LISTENER_CREATED": "listener_created",
    "LISTENER_CLOSED": "listener_closed",
}
# its attribute names -> ours
ATTRS = {
    "saddr4": "saddr",
    "saddr6": "saddr",
    "daddr4": "daddr",
    "daddr6": "daddr",
    "locid": "loc_id",
    "remid": "rem_id",
}
_LINE = re.compile(r"^\[\s*([A-Z_]+(?: \d+)?)\]\s*(.*)$")


def parse_line(line: str) -> dict[str, Any] | None:
    """One line of ``ip mptcp monitor`` as {"type", attrs...}; None for what is not an event
    (a blank line). An event this iproute2 cannot name (``[UNKNOWN 15]``) keeps its number."""
    m = _LINE.match(line.strip())
    if m is None:
        return None
    name, rest = m.groups()
    if name.startswith("UNKNOWN"):
        out: dict[str, Any] = {"type": "unknown", "code": int(name.split()[1])}
    else:
        out = {"type": EVENTS.get(name, name.lower())}
    for item in rest.split():
        k, sep, v = item.partition("=")
        if not sep:
            continue
        key = ATTRS.get(k, k)
        out[key] = int(v) if v.isdigit() and key not in ("token", "saddr", "daddr") else v
    return out


def _wait_subscribed(pid: int, timeout: float = 5.0) -> None:
    """Until ``ip mptcp monitor`` holds its netlink socket (it joins the MPTCP events group
    right after opening it, and says nothing when it has): events from then on reach it."""
    deadline = time.monotonic() + timeout
    fd_dir = f"/proc/{pid}/fd"
    while time.monotonic() < deadline:
        try:
            if any(
                os.readlink(f"{fd_dir}/{fd}").startswith("socket:") for fd in os.listdir(fd_dir)
            ):
                return
        except OSError:
            return  # (it exited: its error shows in the empty log)
        time.sleep(0.005)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m testbed.pmmonitor OUT.jsonl", file=sys.stderr)
        return 2
    proc = subprocess.Popen(
        ["ip", "mptcp", "monitor"],
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
        preexec_fn=die_with_parent,
    )
    stop = False

    def _term(*_: Any) -> None:
        nonlocal stop
        stop = True
        proc.terminate()

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    _wait_subscribed(proc.pid)
    print("monitoring", flush=True)
    with open(argv[0], "a") as out:
        assert proc.stdout is not None
        for line in proc.stdout:
            ev = parse_line(line)
            if ev is not None:
                out.write(json.dumps({"time": time.time(), **ev}) + "\n")
                out.flush()
            if stop:
                break
    proc.wait(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
