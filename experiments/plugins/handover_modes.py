"""Path managers for the three handover modes of Paasch et al., "Exploring Mobile/WiFi
Handover with Multipath TCP" (ACM SIGCOMM CellNet 2012), for experiments/handover_modes.toml.
The client's lte address is a `subflow` endpoint in every mode; the manager decides how it is
used:

- FullMptcp: a subflow on every path from the start, all carrying data (the in-kernel PM).
- Backup: a subflow on every other path from the start, opened with the backup flag (MP_JOIN
  B=1): it carries data only while no non-backup subflow is usable.
- SinglePathThenJoin: only the initial subflow; the other path's subflow is opened once the
  current one is lost (its interface goes down, or it times out), and when the first path's
  interface comes back a subflow is opened there and the others are closed once it is up:
  one path at a time ("single-path mode").

In every mode, when a local interface goes down the client tells the server at once: a
REMOVE_ADDR for that address on a surviving subflow (as the v0 kernel's fullmesh path manager
did on an address deletion), so the server resets its subflows from the lost address instead
of waiting for their retransmission timeouts before it uses the backup. (Without it our
backup mode paused ~3 s in a first run: the server kept the dead wifi subflow as its active
one.) Single-path mode sends it once its new subflow is up (before, there is no path to carry it).
"""

from __future__ import annotations

from mptcp_impl.mptcp.pm import KernelPathManager, PathManager


def _lost(pm: PathManager, address: str) -> None:
    """A local address is gone: REMOVE_ADDR on a surviving subflow and our subflows from it
    reset; without a surviving subflow, just reset them."""
    if pm.is_client and any(s.local[0] != address and s.usable for s in pm.subflows):
        if pm.conn.remove_address(address):
            return
    for s in pm.subflows:
        if s.local[0] == address:
            pm.close_subflow(s)


class FullMptcp(KernelPathManager):
    name = "full-mptcp"

    def interface_down(self, address: str) -> None:
        _lost(self, address)

    def interface_up(self, address: str) -> None:  # the initial address too, not only endpoints
        if self.is_client and not any(s.local[0] == address for s in self.subflows):
            self.open_subflow(address)


class Backup(KernelPathManager):
    name = "backup"

    def established(self) -> None:
        if not self.is_client:
            super().established()
            return
        for addr in self.local_addresses[1:]:
            self.open_subflow(addr, backup=True)

    def interface_down(self, address: str) -> None:
        _lost(self, address)

    def interface_up(self, address: str) -> None:
        if self.is_client and not any(s.local[0] == address for s in self.subflows):
            self.open_subflow(address, backup=address != self.local_addresses[0])


class SinglePathThenJoin(PathManager):
    name = "single-path-then-join"

    def __init__(self) -> None:
        super().__init__()
        self._returning: str | None = None  # an address whose subflow replaces the others
        self._pending: set[str] = set()  # addresses asked for, not up yet
        self._gone: set[str] = set()  # lost addresses the server has not been told about

    def _open(self, address: str) -> bool:
        if address in self._pending:
            return True
        if self.open_subflow(address):
            self._pending.add(address)
            return True
        return False

    def _others(self, address: str) -> list[str]:
        return [a for a in self.local_addresses if a != address]

    def _move_away_from(self, address: str) -> None:
        if not self.is_client:
            return
        alive = [s for s in self.subflows if s.local[0] != address]
        if alive:
            return
        for addr in self._others(address):
            if self._open(addr):
                return

    def interface_down(self, address: str) -> None:
        for s in self.subflows:
            if s.local[0] == address:
                self.close_subflow(s)
        self._gone.add(address)
        self._move_away_from(address)

    def subflow_timeout(self, sub) -> None:  # a silent cut: the RTO is the only signal
        if len(self.subflows) == 1:
            for addr in self._others(sub.local[0]):
                if self._open(addr):
                    return

    def interface_up(self, address: str) -> None:
        self._gone.discard(address)
        if not self.is_client or any(s.local[0] == address for s in self.subflows):
            return
        if self._open(address):
            self._returning = address

    def subflow_up(self, sub) -> None:
        self._pending.discard(sub.local[0])
        for addr in sorted(self._gone - {sub.local[0]}):
            self.conn.remove_address(addr)  # the server's subflows from it go now
        self._gone.clear()
        if self._returning is not None and sub.local[0] == self._returning:
            self._returning = None
            for s in self.subflows:
                if s is not sub:
                    self.close_subflow(s)
