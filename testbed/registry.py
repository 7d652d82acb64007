"""A record, on disk, of every process and namespace this project creates.

Teardown normally happens in-process (context managers, signal handlers). The record exists for
the other case: a run killed with SIGKILL, or a crashed interpreter. `./inv clean` reads it and
removes exactly what was recorded, matching each pid with its start time so that a recycled pid
is never touched, and never looking processes up by name.

Files live in /run/mptcp-lab (tmpfs: a reboot clears them together with what they describe),
one per owning Python process: `<owner pid>-<owner start ticks>.json`.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import threading
from pathlib import Path

STATE_DIR = Path(os.environ.get("MPTCP_LAB_STATE", "/run/mptcp-lab"))
_lock = threading.Lock()
_state: dict | None = None


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def netns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def _file() -> Path:
    me = os.getpid()
    return STATE_DIR / f"{me}-{start_ticks(me)}.json"


def _load() -> dict:
    global _state
    if _state is None or _state.get("owner") != os.getpid():
        _state = {
            "owner": os.getpid(),
            "owner_start": start_ticks(os.getpid()),
            "pids": {},
            "netns": {},
            "dirs": {},
        }
    return _state


def _save() -> None:
    assert _state is not None
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    f = _file()
    if not _state["pids"] and not _state["netns"] and not _state["dirs"]:
        f.unlink(missing_ok=True)
        return
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps(_state))
    tmp.replace(f)


def record_pid(pid: int) -> str | None:
    """Remember a process we started; returns a token for forget_pid."""
    ticks = start_ticks(pid)
    if ticks is None:
        return None
    token = f"{pid}:{ticks}"
    with _lock:
        _load()["pids"][token] = True
        _save()
    return token


def forget_pid(token: str) -> None:
    with _lock:
        _load()["pids"].pop(token, None)
        _save()


def record_netns(label: str, pid: int) -> str | None:
    """Remember a namespace (held by process `pid`, e.g. a Mininet node's shell)."""
    ino = netns_inode(pid)
    ticks = start_ticks(pid)
    if ino is None or ticks is None:
        return None
    token = f"{pid}:{ticks}"
    with _lock:
        _load()["netns"][token] = {"label": label, "inode": ino}
        _save()
    return token


def forget_netns(token: str) -> None:
    with _lock:
        _load()["netns"].pop(token, None)
        _save()


def record_dir(path: Path) -> str:
    """Remember a temporary folder we made (a Testbed's own work folder): a run killed before
    it could remove it leaves it to ./inv clean. Returns a token for forget_dir."""
    token = str(Path(path).resolve())
    with _lock:
        _load()["dirs"][token] = True
        _save()
    return token


def forget_dir(token: str) -> None:
    with _lock:
        _load()["dirs"].pop(token, None)
        _save()


@atexit.register
def _forget_the_dead() -> None:
    """At exit, drop records of processes that are gone, so a clean exit leaves no file even
    if some caller never waited for a process it started; live ones stay for ./inv clean."""
    with _lock:
        if _state is None or _state.get("owner") != os.getpid():
            return
        for key in ("pids", "netns"):
            for token in [t for t in _state[key] if not _alive(t)]:
                del _state[key][token]
        _save()


def _alive(token: str) -> bool:
    pid, ticks = (int(x) for x in token.split(":"))
    return start_ticks(pid) == ticks


def _pids_in_netns(inode: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and netns_inode(int(entry.name)) == inode:
            out.append(int(entry.name))
    return out


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def clean_leftovers(state_dir: Path | None = None) -> list[str]:
    """Remove what dead owners left: recorded processes and everything inside recorded
    namespaces (which makes the namespaces and their interfaces go away). Returns a report."""
    state_dir = state_dir or STATE_DIR
    report: list[str] = []
    if not state_dir.exists():
        return ["nothing recorded: clean"]
    for f in sorted(state_dir.glob("*.json")):
        try:
            state = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as e:
            report.append(f"{f}: unreadable ({e}); removed")
            f.unlink(missing_ok=True)
            continue
        owner = f"{state['owner']}:{state['owner_start']}"
        if _alive(owner) and state["owner"] != os.getpid():
            report.append(f"{f.name}: owner pid {state['owner']} is still running; left alone")
            continue
        for token in state.get("pids", {}):
            if _alive(token):
                pid = int(token.split(":")[0])
                _kill(pid)
                report.append(f"killed process {pid}")
        for token, ns in state.get("netns", {}).items():
            if not _alive(token):
                continue
            pids = _pids_in_netns(ns["inode"])
            for pid in pids:
                _kill(pid)
            report.append(f"removed namespace of {ns['label']} ({len(pids)} processes)")
        for d in state.get("dirs", {}):
            if Path(d).is_dir():
                shutil.rmtree(d, ignore_errors=True)
                report.append(f"removed folder {d}")
        f.unlink(missing_ok=True)
    if not report:
        report.append("nothing left behind: clean")
    return report
