"""Path managers: which subflows a connection opens and closes, and which addresses it
announces (Linux's pm.c; the in-kernel manager is pm_kernel.c).

A path manager is a class with event handlers; the connection creates one per connection
(``MptcpConfig.pm``: a name of ``PATH_MANAGERS``, ``FILE.py:Class`` or a class) and calls:

- ``established()``: the connection is fully established (joins are possible from now on);
- ``subflow_up(sub)`` / ``subflow_down(sub, reason)``: a join completed / a subflow closed
  (``reason`` is the TCP reset reason, None for an orderly close);
- ``subflow_timeout(sub)``: a retransmission timeout on a subflow (a loss signal);
- ``address_announced(addr_id, address, port)`` / ``address_removed(addr_id)``: the peer's
  ADD_ADDR (HMAC checked, already echoed) / REMOVE_ADDR;
- ``interface_up(address)`` / ``interface_down(address)``: a local address came or went (the
  edge or an experiment calls ``MptcpConnection.interface_up/down``).

Handlers act through the base class: ``open_subflow(local_address, remote=None, backup=False)``
(within ``limits.subflows``), ``close_subflow(sub)`` (its data goes on the others),
``announce(address, addr_id, port=None)`` (ADD_ADDR), ``set_backup(sub, flag)`` (local
priority), and read ``subflows``, ``local_addresses``, ``down_addresses``, ``remote``,
``is_client``, ``conn``.
A manager that opens a backup path only after a loss (the whole class)::

    class BackupOnLoss(PathManager):
        def subflow_timeout(self, sub):
            used = {s.local[0] for s in self.subflows}
            for addr in self.local_addresses:
                if addr not in used:
                    self.open_subflow(addr, backup=True)
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from .options import RST_MIDDLEBOX, AddAddr

if TYPE_CHECKING:
    from .connection import MptcpConnection
    from .subflow import Subflow


class PathManager:
    """Base class: every handler does nothing; the actions are methods."""

    name = "none"

    def __init__(self) -> None:
        self.conn: MptcpConnection = None  # type: ignore[assignment]  # set by attach

    def attach(self, conn: MptcpConnection) -> None:
        self.conn = conn

    # ----------------------------------------------------------------- events
    def established(self) -> None:
        pass

    def subflow_up(self, sub: Subflow) -> None:
        pass

    def subflow_down(self, sub: Subflow, reason: str | None) -> None:
        pass

    def subflow_timeout(self, sub: Subflow) -> None:
        pass

    def address_announced(self, addr_id: int, address: str, port: int | None) -> None:
        pass

    def address_removed(self, addr_id: int) -> None:
        pass

    def interface_up(self, address: str) -> None:
        pass

    def interface_down(self, address: str) -> None:
        pass

    # ----------------------------------------------------------------- what a manager sees
    @property
    def subflows(self) -> list[Subflow]:
        """The connection's open subflows (joins in their handshake included)."""
        return list(self.conn.subflows)

    @property
    def is_client(self) -> bool:
        init = self.conn.initial
        return init is not None and init.active

    @property
    def remote(self) -> tuple[str, int] | None:
        """The peer's address and port of the initial subflow."""
        init = self.conn.initial
        return init.remote if init is not None else None

    @property
    def down_addresses(self) -> frozenset[str]:
        """Local addresses the edge reported down (``interface_down``) and not back yet."""
        return self.conn.down_addresses

    @property
    def local_addresses(self) -> list[str]:
        """The initial subflow's address, then every configured endpoint's."""
        out: list[str] = []
        init = self.conn.initial
        if init is not None:
            out.append(init.local[0])
        for ep in self.conn.config.endpoints or ():
            if ep.address not in out:
                out.append(ep.address)
        return out

    # ----------------------------------------------------------------- actions
    def open_subflow(
        self,
        local_address: str,
        remote: tuple[str, int] | None = None,
        backup: bool = False,
        remote_id: int = 0,
    ) -> bool:
        """Ask the edge for a subflow (an ``OpenSubflow`` event); False when the connection is
        not fully established, has fallen back, ``limits.subflows`` is reached, or it would go
        to the peer's initial address and port after the peer's MP_CAPABLE said no (flag C)."""
        c = self.conn
        rem = remote or self.remote
        if rem is None or c.fallback or not c.fully_established or c._data_done():
            return False
        if c._joins >= c.config.limits.subflows:
            return False
        return c._request_subflow(
            local_address, rem, self._address_id(local_address), remote_id, backup
        )

    def _address_id(self, address: str) -> int:
        """The endpoint's id; 0 for the initial subflow's address; a new id (above every
        endpoint's) for an address no endpoint names: id 0 means the initial address."""
        c = self.conn
        init = c.initial
        if init is not None and init.local[0] == address:
            return 0
        eps = list(c.config.endpoints or ())
        for ep in eps:
            if ep.address == address:
                return ep.id
        ids = getattr(self, "_extra_ids", None)
        if ids is None:
            ids = self._extra_ids = {}
        if address not in ids:
            ids[address] = max([ep.id for ep in eps] + list(ids.values()) + [0]) % 255 + 1
        return ids[address]

    def close_subflow(self, sub: Subflow) -> None:
        """Reset the subflow (RST); what it held beyond the DATA_ACK goes on the others."""
        self.conn.reset_subflow(sub)

    def announce(self, address: str, addr_id: int, port: int | None = None) -> bool:
        """Send ADD_ADDR (on the first usable subflow); False before full establishment."""
        c = self.conn
        subs = [s for s in c.subflows if s.usable]
        if c.fallback or not c.fully_established or not subs:
            return False
        from .connection import add_addr_hmac

        addr = ipaddress.ip_address(address)
        h = add_addr_hmac(c.local_key, c.remote_key, addr_id, addr, port)
        subs[0].queue_option(AddAddr(addr_id=addr_id, address=addr, port=port, hmac=h))
        return True

    def set_backup(self, sub: Subflow, backup: bool = True) -> None:
        """Priority: our scheduler sends on a backup subflow only when no other is usable, and
        MP_PRIO asks the peer the same (``MptcpConnection.set_backup``; before the subflow is
        usable only our side changes)."""
        if not self.conn.set_backup(sub, backup):
            sub.backup = backup


class KernelPathManager(PathManager):
    """The in-kernel path manager (Linux's pm_kernel.c): endpoints and limits as ``ip mptcp``
    sets them. A client joins from each ``subflow`` endpoint once fully established and to
    each announced address (``add_addr_accepted``; ``fullmesh`` endpoints join it too); a
    server announces its ``signal`` endpoints. A REMOVE_ADDR closes the joined subflows to
    that address; an interface going down closes the subflows on its address while another
    path is up (the last path's subflows stay, as with Linux, and carry on when it returns);
    one coming back opens the endpoint's subflow again."""

    name = "kernel"

    def established(self) -> None:
        self.conn._pm_established()

    def address_announced(self, addr_id: int, address: str, port: int | None) -> None:
        self.conn._pm_add_addr(addr_id, address, port)

    def address_removed(self, addr_id: int) -> None:
        # Linux (mptcp_pm_nl_rm_addr_received): the subflows to that address go
        for s in self.subflows:
            if s.remote_id == addr_id and not s.initial:
                self.close_subflow(s)

    def subflow_down(self, sub: Subflow, reason: str | None) -> None:
        """A subflow reset for middlebox interference (a DSS checksum failed, MP_TCPRST 6,
        sent by either end) is opened again on the same path. The box damaged one segment,
        not the path: the reset only discards that subflow's unchecked data, which the
        others carry again, and without a new subflow a connection whose every path saw one
        damaged segment has nothing left to send on and stalls until its close timeout."""
        if not self.is_client or RST_MIDDLEBOX not in (sub.rst_reason, sub.peer_rst_reason):
            return
        if sub.local[0] in self.down_addresses:
            return
        if any(s.local[0] == sub.local[0] and s.remote == sub.remote for s in self.subflows):
            return
        if self.open_subflow(sub.local[0], sub.remote, sub.backup, sub.remote_id or 0):
            self.conn.mib.inc("MPRejoinMiddlebox")

    def interface_down(self, address: str) -> None:
        going = [s for s in self.subflows if s.local[0] == address]
        down = self.down_addresses
        if not any(s.local[0] not in down and not s.closed for s in self.subflows):
            # The last path: keep its subflows, as Linux keeps any TCP connection when an
            # interface goes down (its PM does not even hear of it); they retransmit and carry
            # on when the interface returns, which a join could not do when no slot is left
            # (limits.subflows=0). The connection's close timeout bounds the wait.
            return
        for s in going:
            self.close_subflow(s)

    def interface_up(self, address: str) -> None:
        if not self.is_client:
            return
        if any(s.local[0] == address for s in self.subflows):
            return
        init = self.conn.initial
        if init is not None and init.local[0] == address:
            # the first subflow's address is back (its subflow was closed when it went
            # away): join from it again, or the connection stays on the others for good
            self.open_subflow(address)
            return
        for ep in self.conn.config.endpoints or ():
            if ep.address == address and "subflow" in ep.flags:
                self.open_subflow(address, backup="backup" in ep.flags)


class BackupOnLoss(PathManager):
    """Only the initial subflow until it times out; then a backup subflow from every other
    local address (an example of a manager in a few lines)."""

    name = "backup-on-loss"

    def subflow_timeout(self, sub: Subflow) -> None:
        used = {s.local[0] for s in self.subflows}
        for addr in self.local_addresses:
            if addr not in used:
                self.open_subflow(addr, backup=True)


PATH_MANAGERS: dict[str, Any] = {
    "kernel": KernelPathManager,
    "default": KernelPathManager,
    "none": PathManager,
    "backup-on-loss": BackupOnLoss,
}


def make_pm(spec: Any) -> PathManager:
    from .plugins import load

    return load(spec, PATH_MANAGERS, "path manager", lambda o: hasattr(o, "attach"))
