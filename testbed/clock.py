"""A machine's clock offset against this one, NTP-style, over an SSH connection already open.

On real machines a run's event times mix clocks: the coordinator's (link events, t0) and each
machine's (its captures' timestamps). An offset larger than the run's smallest RTT reorders what
the analysis lines up, so every run records the offset it had, measured just before it.

The exchange: this machine notes t0 and sends a line, the remote replies with its clock, this
machine notes t1 when the reply is in. With a symmetric delay the remote read its clock at
(t0 + t1) / 2 of ours, so offset = remote - (t0 + t1) / 2, and whatever the delays, the true
offset lies within (t1 - t0) / 2 of that (the remote read its clock somewhere in [t0, t1]).
Of several exchanges the one with the shortest round trip is kept: the tightest bound.

The remote end is one python process reading lines on stdin for the whole exchange, so each
sample is one round trip on an open channel, not a process start (tens of ms).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

# The remote end: one clock reading per line received; ``add`` shifts it (a test hook: the
# way to show what a wrong clock looks like on machines that share one).
PROBE = (
    "import sys, time\n"
    "add = float(sys.argv[1])\n"
    "for line in sys.stdin:\n"
    "    sys.stdout.write(repr(time.time() + add) + '\\n'); sys.stdout.flush()\n"
)


@dataclass(frozen=True)
class ClockSample:
    """One exchange: our clock when the request left (t0) and the reply arrived (t1), the
    remote's clock in between."""

    t0: float
    remote: float
    t1: float

    @property
    def offset_s(self) -> float:
        return self.remote - (self.t0 + self.t1) / 2

    @property
    def uncertainty_s(self) -> float:
        return (self.t1 - self.t0) / 2


@dataclass(frozen=True)
class ClockOffset:
    """The best sample's offset (remote minus ours, seconds) and its bound; how many taken."""

    offset_s: float
    uncertainty_s: float
    samples: int
    measured_at: float  # our clock, epoch seconds

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def best_offset(samples: list[ClockSample]) -> ClockOffset:
    """The offset of the sample with the shortest round trip (its bound is the tightest)."""
    if not samples:
        raise ValueError("no clock samples")
    best = min(samples, key=lambda s: s.t1 - s.t0)
    return ClockOffset(
        offset_s=best.offset_s,
        uncertainty_s=best.uncertainty_s,
        samples=len(samples),
        measured_at=best.t0,
    )


def exceeds_rtt(offset: dict[str, Any] | None, min_rtt_s: float | None) -> bool:
    """Whether a recorded offset is larger than the run's smallest RTT: then event times from
    two clocks can be out of order by more than a round trip (analysis.report.clock_problems
    applies the same rule to a run's metadata, the analysis package standing alone)."""
    if not offset or min_rtt_s is None:
        return False
    return abs(float(offset["offset_s"])) > min_rtt_s


def measure_offset(
    client: Any, python: str = "python3", samples: int = 8, add_s: float = 0.0, timeout: float = 20
) -> ClockOffset:
    """The offset of the machine behind `client` (a connected paramiko.SSHClient: SshHost's
    or a Fabric Connection's) against this one, best of `samples` exchanges."""
    import shlex

    cmd = shlex.join([python, "-u", "-c", PROBE, repr(float(add_s))])
    stdin, stdout, _ = client.exec_command(cmd, timeout=timeout)
    taken = []
    try:
        for _ in range(samples):
            t0 = time.time()
            stdin.write("?\n")
            stdin.flush()
            line = stdout.readline()
            t1 = time.time()
            if not line:
                raise OSError(f"the clock probe ended ({stdout.channel.recv_exit_status()})")
            taken.append(ClockSample(t0, float(line), t1))
    finally:
        stdin.close()
        stdout.channel.close()
    return best_offset(taken)
