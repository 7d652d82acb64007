"""Peers and capture builders that the tests and the benchmarks share.

Dependency direction: tests/ and benchmarks/ import testkit; testkit may import the product
packages (testbed, analysis, mptcp_impl); no product package imports testkit or tests/.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# How tests and benchmarks run a peer program (python -m testkit.kpeer, python -m mptcp_impl) on
# a host: the project's venv when there is one, and the checkout on PYTHONPATH.
PY = (
    str(REPO / ".venv" / "bin" / "python")
    if (REPO / ".venv" / "bin" / "python").exists()
    else sys.executable
)
ENV = {"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


def json_tail(path: Path) -> dict:
    """The JSON report a peer printed last (its last line starting with "{") in its output file."""
    text = path.read_text()
    lines = [ln for ln in text.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"{path} has no JSON result: {text[-800:]}")
    return json.loads(lines[-1])
