"""An accepted MP_FAIL closes the door to new subflows (Linux 6.18's mptcp_pm_mp_fail_received:
"after accepting the fail, we can't create any other subflows"), and an infinite mapping is
never sent once a second subflow exists (mptcp_update_infinite_map: FallbackFailed, reset).

Found by the stress fuzzer (tests/stress/segfuzz.py, seed 561): a forged MP_FAIL on a
single-subflow connection was answered, a join was accepted before the next data segment, and
the infinite mapping then put the connection into fallback with two subflows: the receiver took
the first subflow's bytes as the whole stream (duplicated and misplaced bytes)."""

from __future__ import annotations

from mptcp_impl.mptcp.ctrl import MptcpConfig
from mptcp_impl.mptcp.options import MpFail, find_mptcp
from testkit.mptcp_sim import C1, C2, S, two_path_net


def test_a_join_after_an_accepted_mp_fail_is_refused_and_the_stream_stays_intact():
    net, client, server, p1, p2 = two_path_net(seed=7)
    # the server's MP_FAIL answer never reaches the client, which therefore still joins
    p1.drop = lambda seg: (
        seg.src_port == 5001 and any(isinstance(o, MpFail) for o in find_mptcp(seg.options))
    )
    conn = net.connect(client, C1, (S, 5001), MptcpConfig(endpoints=[]))
    net.run(1.0, stop=lambda: conn._connected)
    up = bytes(range(256)) * 400
    conn.send(up[:50_000])
    net.flush(client, conn)
    net.run(net.now + 0.5)
    srv = server.accepted[0]
    conn.initial.queue_option(MpFail(dsn=0))  # (a forged one: no checksums here)
    net.flush(client, conn)
    net.run(net.now + 0.2)
    assert srv.mib["MPFailRx"] == 1 and srv.mib["MPFailTx"] == 1
    assert conn.pm.open_subflow(C2)  # the client has not heard of it: it joins
    net.flush(client, conn)  # (the OpenSubflow event: the subflow)
    net.flush(client, conn)  # (its SYN)
    net.run(net.now + 0.5)
    assert srv.mib["MPJoinSynRx"] == 1 and srv.mib["MPJoinRejected"] == 1
    assert len([s for s in srv.all_subflows() if not s.closed]) == 1
    # data both ways after it: the server's next data carries the infinite mapping; the
    # client, whose join was refused before it ever established (no byte of ours on it),
    # follows into fallback, as Linux does (it forgets such a join), and every byte arrives
    # in place both ways
    down = bytes(range(255, -1, -1)) * 300
    srv.send(down)
    srv.close(net.now)
    net.flush(server, srv)
    conn.send(up[50_000:])
    conn.close(net.now)
    net.flush(client, conn)
    net.run(net.now + 20)
    assert bytes(server.rx[id(srv)]) == up
    assert bytes(client.rx[id(conn)]) == down
    for c in (srv, conn):
        # fallen back: no join of that end ever established
        assert not (c.fallback and any(s.established for s in c.all_subflows() if not s.initial))


def test_no_join_once_an_mp_fail_was_answered_and_both_fall_back_intact():
    net, client, server, p1, p2 = two_path_net(seed=8)
    conn = net.connect(client, C1, (S, 5001), MptcpConfig(endpoints=[]))
    net.run(1.0, stop=lambda: conn._connected)
    up = bytes(range(256)) * 400
    conn.send(up[:50_000])
    net.flush(client, conn)
    net.run(net.now + 0.5)
    srv = server.accepted[0]
    srv.initial.queue_option(MpFail(dsn=0))  # the server fails a mapping (forged here)
    net.flush(server, srv)
    net.run(net.now + 0.2)
    assert conn.mib["MPFailRx"] >= 1 and conn.mib["MPFailTx"] == 1  # the client answered
    assert not conn.pm.open_subflow(C2) or conn.mib["MPJoinSynTx"] == 0
    net.flush(client, conn)
    net.flush(client, conn)
    down = bytes(range(255, -1, -1)) * 300
    srv.send(down)
    srv.close(net.now)
    net.flush(server, srv)
    conn.send(up[50_000:])
    conn.close(net.now)
    net.flush(client, conn)
    net.run(net.now + 20)
    assert conn.mib["MPJoinSynTx"] == 0
    assert conn.fallback and len(conn.all_subflows()) == 1
    assert bytes(server.rx[id(srv)]) == up
    assert bytes(client.rx[id(conn)]) == down
