"""The last subflow gone, or only on an interface that is down (issue 18, defect 5): the
connection lives on for the close timeout (Linux's net.mptcp.close_timeout), so that a
returning interface or a new join carries the transfer to its end; if none comes, the
application hears a Reset that says what was lost, never a clean close. In the simulator."""

from __future__ import annotations

import hashlib

from mptcp_impl.mptcp.ctrl import Limits, MptcpConfig
from mptcp_impl.mptcp.pm import PathManager
from testkit.mptcp_sim import (
    C1,
    C2,
    Closed,
    Link,
    Net,
    Reset,
    S,
    client_cfg,
    kinds,
    two_path_net,
)

N = 3_000_000


def payload() -> bytes:
    return hashlib.sha256(b"outage").digest() * (N // 32)


def single_path(cfg: MptcpConfig):
    """Our client on C1 only (no joins: limits 0, as ``--limits subflows=0,add_addr_accepted=0``)
    with 3 MB written, 0.1 s into the transfer (most of it still unsent)."""
    net, client, server, p1, _p2 = two_path_net(1)
    conn = net.connect(client, C1, (S, 5001), cfg)
    data = payload()
    assert conn.send(data) == len(data)
    net.flush(client, conn)
    net.run(0.1)
    unsent = conn.snd_una + len(conn._sbuf) - conn.snd_nxt
    assert unsent > 2_000_000, unsent
    return net, client, server, p1, conn, data


def test_single_path_client_rides_out_an_interface_outage():
    """Interface down for 3 s, then up (as ``ip link set dev X down; sleep 3; ... up``): the
    kernel path manager keeps the only subflow (Linux keeps a TCP connection over an interface
    outage), it retransmits once the interface is back and the 3 MB arrive intact. Before:
    the subflow was closed at once and the application got a clean Closed with 2.6 MB unsent."""
    cfg = MptcpConfig(endpoints=[], limits=Limits(subflows=0, add_addr_accepted=0))
    net, client, server, p1, conn, data = single_path(cfg)
    p1.up = False
    conn.interface_down(C1, net.now)
    net.flush(client, conn)
    net.run(net.now + 3.0, exact=True)
    assert kinds(client.events[id(conn)]) == ["Connected"], "gave up during the outage"
    p1.up = True
    conn.interface_up(C1, net.now)
    net.flush(client, conn)
    conn.close(net.now)
    net.flush(client, conn)
    srv = server.accepted[0]
    net.run(net.now + 30.0, stop=lambda: len(server.rx[id(srv)]) >= len(data))
    assert hashlib.sha256(server.rx[id(srv)]).digest() == hashlib.sha256(data).digest()
    assert not any(isinstance(e, Reset) for e in client.events[id(conn)])
    assert [s.initial for s in conn.all_subflows()] == [True]  # the same subflow carried on


def test_interface_that_never_returns_resets_after_the_close_timeout():
    """The interface never comes back: the connection waits ``close_timeout`` seconds (5 here,
    60 by default as Linux), then the application gets a Reset naming the close timeout and
    the bytes left, and only then Closed."""
    cfg = MptcpConfig(endpoints=[], limits=Limits(0, 0), close_timeout=5.0)
    net, client, server, p1, conn, data = single_path(cfg)
    p1.up = False
    t0 = net.now
    conn.interface_down(C1, net.now)
    net.flush(client, conn)
    ev = client.events[id(conn)]
    net.run(t0 + 4.9, exact=True)
    assert kinds(ev) == ["Connected"], "reset before the close timeout"
    net.run(t0 + 5.1, exact=True)
    app = [k for k in kinds(ev) if k not in ("SubflowClosed", "OpenSubflow")]
    assert app == ["Connected", "Reset", "Closed"], kinds(ev)
    reason = next(e for e in ev if isinstance(e, Reset)).reason
    assert "close timeout" in reason and "not acknowledged" in reason, reason
    assert conn.state == "CLOSED"


class HardBreak(PathManager):
    """Closes every subflow of an interface that goes down (even the last one) and joins from
    it again when it returns: the connection itself must survive the gap."""

    def interface_down(self, address: str) -> None:
        for s in self.subflows:
            if s.local[0] == address:
                self.close_subflow(s)

    def interface_up(self, address: str) -> None:
        self.open_subflow(address)


def test_connection_outlives_its_last_subflow_until_a_join_carries_on():
    """No subflow at all for 2 s (ours reset, the server's too: our RST reached it): both ends
    keep the connection (Linux: an established connection starts its close timeout when the
    last subflow closes), the join from the returning interface is accepted and carries the
    rest. Before: the client got a clean Closed, the server a Reset, the data was cut."""
    cfg = MptcpConfig(endpoints=[], limits=Limits(subflows=1, add_addr_accepted=0), pm=HardBreak)
    net, client, server, p1, conn, data = single_path(cfg)
    srv = server.accepted[0]
    conn.interface_down(C1, net.now)
    net.flush(client, conn)
    net.run(net.now + 2.0, exact=True)
    assert not conn.subflows and not srv.subflows, "a subflow survived the hard break"
    assert kinds(client.events[id(conn)]).count("Closed") == 0
    assert not [e for e in server.events[id(srv)] if isinstance(e, (Reset, Closed))]
    conn.interface_up(C1, net.now)
    net.flush(client, conn)
    conn.close(net.now)
    net.flush(client, conn)
    net.run(net.now + 30.0, stop=lambda: len(server.rx[id(srv)]) >= len(data))
    assert hashlib.sha256(server.rx[id(srv)]).digest() == hashlib.sha256(data).digest()
    assert srv.mib["MPJoinAckRx"] == 1
    assert not any(isinstance(e, Reset) for e in client.events[id(conn)])


def test_no_close_timeout_the_cut_is_a_reset():
    """``close_timeout=0`` (no make-after-break): the last subflow closed locally with data
    outstanding ends the connection at once, as a Reset, not a clean Closed."""
    cfg = MptcpConfig(endpoints=[], limits=Limits(0, 0), pm=HardBreak, close_timeout=0)
    net, client, server, p1, conn, data = single_path(cfg)
    conn.interface_down(C1, net.now)
    net.flush(client, conn)
    net.run(net.now + 0.5)
    app = [k for k in kinds(client.events[id(conn)]) if k not in ("SubflowClosed",)]
    assert app == ["Connected", "Reset", "Closed"], app


def test_both_interfaces_down_then_the_other_one_returns():
    """Two paths: lte (C2) goes down (its subflow closed: wifi still carries), then wifi (C1)
    too (kept: the last path); lte comes back first: the kernel path manager joins from it
    again and that join carries the rest while wifi is still down."""
    net = Net(2)
    client = net.host("client", [C1, C2], seed=12)
    server = net.host("server", [S], seed=22, listen_port=5001)
    # 10 Mbit/s each way up: 3 MB take over a second, so the outages hit mid-transfer
    p1 = net.path(C1, S, delay=0.01, link=Link(10e6, 100_000))
    p2 = net.path(C2, S, delay=0.02, link=Link(10e6, 100_000))
    conn = net.connect(client, C1, (S, 5001), client_cfg())
    data = payload()
    assert conn.send(data) == len(data)
    net.flush(client, conn)
    net.run(0.4)
    assert sorted(s.local[0] for s in conn.subflows) == [C1, C2]
    assert conn.snd_una - conn.local_idsn < 1_500_000  # (half of it at most is through)
    p2.up = False
    conn.interface_down(C2, net.now)
    net.flush(client, conn)
    assert [s.local[0] for s in conn.subflows if not s.closed] == [C1]
    p1.up = False
    conn.interface_down(C1, net.now)
    net.flush(client, conn)
    net.run(net.now + 2.0, exact=True)
    assert [s.local[0] for s in conn.subflows] == [C1], "the last path's subflow was closed"
    p2.up = True
    conn.interface_up(C2, net.now)
    net.flush(client, conn)
    conn.close(net.now)
    net.flush(client, conn)
    srv = server.accepted[0]
    net.run(net.now + 30.0, stop=lambda: len(server.rx[id(srv)]) >= len(data))
    assert hashlib.sha256(server.rx[id(srv)]).digest() == hashlib.sha256(data).digest()
    assert not any(isinstance(e, Reset) for e in client.events[id(conn)])
    rejoined = [s for s in conn.all_subflows() if s.local[0] == C2][-1]
    assert len([s for s in conn.all_subflows() if s.local[0] == C2]) == 2
    assert rejoined.bytes_sent > 1_000_000, rejoined.bytes_sent  # the rest went there
