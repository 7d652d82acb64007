"""``[stack.userspace]`` options for the userspace stack's research plug-ins, as its CLI takes
them (``--scheduler``, ``--cc``, ``--pm``, ``--opportunistic``)::

    [stack.userspace]
    scheduler = "blest"                     # or "plugins/my_sched.py:MySched"
    cc = "lia"                              # uncoupled cubic reno lia olia balia, or FILE.py:Class
    pm = "kernel"                           # kernel none backup-on-loss, or FILE.py:Class
    opportunistic = "penalise"              # off retransmit penalise

A ``FILE.py:Class`` path is relative to the experiment file's folder. Names and files are
checked when the experiment file is read (a missing file or class is an error naming the key).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.errors import ExperimentError

KEYS = ("scheduler", "cc", "pm", "opportunistic")
OPPORTUNISTIC = ("off", "retransmit", "penalise")


def _registries() -> dict[str, tuple[dict[str, Any], str]]:
    from mptcp_impl.mptcp.coupled import CONTROLLERS
    from mptcp_impl.mptcp.pm import PATH_MANAGERS
    from mptcp_impl.mptcp.sched import SCHEDULERS

    return {
        "scheduler": (SCHEDULERS, "scheduler"),
        "cc": (CONTROLLERS, "congestion control"),
        "pm": (PATH_MANAGERS, "path manager"),
    }


def validate(source: str, where: str, opts: dict[str, Any]) -> dict[str, Any]:
    """Checked options with file paths made absolute."""
    from mptcp_impl.mptcp import plugins

    out: dict[str, Any] = {}
    regs = _registries()
    for k, v in opts.items():
        if k not in KEYS:
            raise ExperimentError(
                source, f"{where}.{k}", f"unknown key (allowed: {', '.join(sorted(KEYS))})"
            )
        if not isinstance(v, str):
            raise ExperimentError(source, f"{where}.{k}", "expected a string")
        if k == "opportunistic":
            if v not in OPPORTUNISTIC:
                raise ExperimentError(
                    source, f"{where}.{k}", f"expected one of {', '.join(OPPORTUNISTIC)}"
                )
            out[k] = v
            continue
        if plugins.is_file_spec(v):
            path, _, cls = v.rpartition(":")
            p = Path(path).expanduser()
            if not p.is_absolute():
                p = Path(source).resolve().parent / p
            v = f"{p}:{cls}"
        reg, kind = regs[k]
        try:
            plugins.check(v, reg, kind)
        except ValueError as e:
            raise ExperimentError(source, f"{where}.{k}", str(e)) from None
        out[k] = v
    return out


def flags(opts: dict[str, Any]) -> list[str]:
    """The CLI flags for validated options."""
    out: list[str] = []
    for k in KEYS:
        if k in opts:
            out += [f"--{k}", str(opts[k])]
    return out
