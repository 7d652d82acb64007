"""DATA_FIN and connection close (packetdrill dss/dss_fin_server, mpc_with_data_server), scripted
and in the two-host sim: both directions, and both sides closing at once."""

from __future__ import annotations

import hashlib

import pytest

from mptcp_impl.mptcp.options import Dss
from testkit.mptcp_sim import C1, Net, S, client_cfg, kinds, two_path_net

from .peer import ACK, FIN, RST, Flow, data_ack, dss_of, established_server


def data_fin(f: Flow, dsn_rel: int, ack: int) -> Dss:
    return Dss(
        data_ack=ack,
        data_ack64=True,
        dsn=(f.idsn + dsn_rel) & ((1 << 64) - 1),
        dsn64=True,
        subflow_seq=0,
        data_len=1,
        data_fin=True,
    )


def test_peer_closes_first_then_we_close():
    box, f = established_server()
    conn = box.conn
    li = conn.local_idsn
    # the peer's DATA_FIN on an empty segment: DSN of its next byte, length 1
    out = box.feed(f, f.seg(ACK, data_fin(f, 1, li + 1)))
    assert "PeerClosed" in box.kinds()
    out += box.advance(0.1)
    assert out and dss_of(out[-1]).data_ack == f.idsn + 2
    assert not any(s.flags & FIN for s in out), "subflow FIN before our DATA_FIN"
    # then its subflow FIN
    out = box.feed(f, f.seg(ACK | FIN, data_ack(conn, 1)))
    assert out and out[-1].flags == ACK and f.rel_ack(out[-1]) == 2
    # we close: our DATA_FIN, then (once it is acknowledged) our subflow FIN
    conn.close(box.now)
    out = box.out()
    fins = [s for s in out if dss_of(s) and dss_of(s).data_fin]
    assert fins, out
    d = dss_of(fins[0])
    assert d.dsn == li + 1 and d.data_len == 1 and d.subflow_seq == 0 and d.dsn64
    assert not fins[0].payload and not any(s.flags & FIN for s in out)
    out = box.feed(f, f.seg(ACK, data_ack(conn, 2), ack=1, seq=2))
    assert [s for s in out if s.flags & FIN], "no subflow FIN after the DATA_ACK of our DATA_FIN"
    box.feed(f, f.seg(ACK, data_ack(conn, 2), ack=2, seq=2))
    box.advance(0.1)
    assert "Closed" in box.kinds() and "Reset" not in box.kinds()


def test_we_close_first_data_fin_follows_data_and_is_resent():
    box, f = established_server()
    conn = box.conn
    li = conn.local_idsn
    conn.send(b"w" * 1000)
    conn.close(box.now)
    out = box.out()
    fins = [s for s in out if dss_of(s).data_fin]
    # the DATA_FIN may wait for the data to be acknowledged or ride right behind it
    box.feed(f, f.seg(ACK, data_ack(conn, 1001), ack=1001))
    out += box.out()
    fins = [s for s in out if dss_of(s).data_fin]
    if not fins:
        out += box.advance(1.0)
        fins = [s for s in out if dss_of(s).data_fin]
    assert fins
    d = dss_of(fins[0])
    assert d.dsn == li + 1001 and d.data_len == 1
    # not acknowledged: it is sent again
    again = [s for s in box.advance(3.0) if dss_of(s) and dss_of(s).data_fin]
    assert again and dss_of(again[0]).dsn == li + 1001
    assert not any(s.flags & FIN for _, s in box.sent), "subflow FIN before the DATA_FIN is acked"
    # acked (DATA_ACK = DSN + 1), and the peer's DATA_FIN: subflow FIN goes out
    out = box.feed(f, f.seg(ACK, data_fin(f, 1, li + 1002), ack=1001))
    out += box.advance(0.1)
    assert [s for s in out if s.flags & FIN]
    assert dss_of(out[-1]).data_ack == f.idsn + 2
    box.feed(f, f.seg(ACK | FIN, data_ack(conn, 1002), seq=1, ack=1002))
    box.advance(2.0)
    assert "Closed" in box.kinds() and "Reset" not in box.kinds()
    assert box.registry.get(conn.local_token) is None


def _transfer(net, client, conn, size):
    net.run(1.0, stop=lambda: conn._connected)
    data = bytes(i % 241 for i in range(size))
    assert conn.send(data) == len(data)
    net.flush(client, conn)
    return data


@pytest.mark.parametrize("who", ["client", "server", "both"])
def test_sim_close_is_clean(who):
    net, client, server, p1, p2 = two_path_net(seed=3)
    conn = net.connect(client, C1, (S, 5001), client_cfg())
    up = _transfer(net, client, conn, 300_000)
    net.run(5.0, stop=lambda: server.accepted and len(server.rx[id(server.accepted[0])]) >= len(up))
    srv = server.accepted[0]
    down = bytes(range(256)) * 400
    srv.send(down)
    net.flush(server, srv)
    net.run(net.now + 5.0, stop=lambda: len(client.rx[id(conn)]) >= len(down))
    if who in ("client", "both"):
        conn.close(net.now)
    if who in ("server", "both"):
        srv.close(net.now)
    net.flush(client, conn)
    net.flush(server, srv)

    def peer_closed(h, c):
        return "PeerClosed" in kinds(h.events[id(c)])

    net.run(net.now + 5.0, stop=lambda: peer_closed(server, srv) or peer_closed(client, conn))
    if who == "client":
        assert peer_closed(server, srv)
        srv.close(net.now)
        net.flush(server, srv)
    elif who == "server":
        assert peer_closed(client, conn)
        conn.close(net.now)
        net.flush(client, conn)
    net.run(net.now + 20.0)
    ce, se = kinds(client.events[id(conn)]), kinds(server.events[id(srv)])
    assert "Closed" in ce and "Closed" in se, (ce, se)
    assert "Reset" not in ce and "Reset" not in se
    assert "PeerClosed" in ce and "PeerClosed" in se
    assert hashlib.sha256(bytes(server.rx[id(srv)])).digest() == hashlib.sha256(up).digest()
    assert bytes(client.rx[id(conn)]) == down
    assert conn.state == "CLOSED" and srv.state == "CLOSED"
    assert len(client.registry) == 0 and len(server.registry) == 0


def test_sim_close_single_path_no_join():
    net = Net(4)
    client = net.host("client", [C1], seed=14)
    server = net.host("server", [S], seed=24, listen_port=5001)
    net.path(C1, S, delay=0.005)
    conn = net.connect(client, C1, (S, 5001))
    up = _transfer(net, client, conn, 50_000)
    conn.close(net.now)
    net.flush(client, conn)
    net.run(
        5.0,
        stop=lambda: (
            server.accepted and "PeerClosed" in kinds(server.events[id(server.accepted[0])])
        ),
    )
    srv = server.accepted[0]
    srv.close(net.now)
    net.flush(server, srv)
    net.run(net.now + 10.0)
    assert bytes(server.rx[id(srv)]) == up
    for h, c in ((client, conn), (server, srv)):
        ev = kinds(h.events[id(c)])
        assert "Closed" in ev and "Reset" not in ev, ev


def test_simultaneous_data_fins():
    """Both sides close at once: the DATA_FINs cross, each acknowledges the other's (DSN+1),
    then the subflow FINs; Closed, no Reset."""
    box, f = established_server()
    conn = box.conn
    li = conn.local_idsn
    conn.close(box.now)
    out = box.out()
    ours = [s for s in out if dss_of(s).data_fin]
    assert ours and dss_of(ours[0]).dsn == li + 1
    # the peer's DATA_FIN crossed ours: it does not acknowledge ours yet
    out = box.feed(f, f.seg(ACK, data_fin(f, 1, li + 1))) + box.advance(0.05)
    assert "PeerClosed" in box.kinds()
    assert dss_of(out[-1]).data_ack == f.idsn + 2
    assert not any(s.flags & FIN for s in out)
    # now it acknowledges ours (DATA_ACK = DSN + 1): subflow FINs, both ways
    out = box.feed(f, f.seg(ACK, data_ack(conn, 2)))
    out += box.advance(0.05)
    assert [s for s in out if s.flags & FIN]
    box.feed(f, f.seg(ACK | FIN, data_ack(conn, 2), ack=2))
    box.advance(2.0)
    assert "Closed" in box.kinds() and "Reset" not in box.kinds()


def test_data_fin_riding_on_the_last_data_segment():
    """A DATA_FIN may share the mapping of the last bytes (data_len = bytes + 1)."""
    box, f = established_server()
    conn = box.conn
    d = Dss(
        data_ack=conn.local_idsn + 1,
        data_ack64=True,
        dsn=f.idsn + 1,
        dsn64=True,
        subflow_seq=1,
        data_len=101,
        data_fin=True,
    )
    out = box.feed(f, f.seg(ACK, d, payload=b"L" * 100)) + box.advance(0.1)
    assert conn.read() == b"L" * 100
    assert "PeerClosed" in box.kinds()
    assert dss_of(out[-1]).data_ack == f.idsn + 102
    assert conn.mib["DSSNotMatching"] == 0


def test_close_with_a_path_cut_just_before_does_not_wait_for_its_subflow():
    """Both DATA_FINs go through on the working path while the other path was cut a moment
    before (no RTO has told us yet): the connection closes within seconds, the cut subflow's
    FIN is not retransmitted for minutes (a client process would hang on exit)."""
    net, client, server, p1, p2 = two_path_net(seed=5)
    conn = net.connect(client, C1, (S, 5001), client_cfg())
    up = _transfer(net, client, conn, 200_000)
    net.run(5.0, stop=lambda: server.accepted and len(server.rx[id(server.accepted[0])]) >= len(up))
    srv = server.accepted[0]
    assert len(conn.subflows) == 2
    p2.up = False
    t_cut = net.now
    conn.close(net.now)
    srv.close(net.now)
    net.flush(client, conn)
    net.flush(server, srv)
    net.run(net.now + 60.0, stop=lambda: conn.state == "CLOSED" and srv.state == "CLOSED")
    assert conn.state == "CLOSED" and srv.state == "CLOSED"
    assert net.now - t_cut < 10.0, net.now - t_cut
    assert hashlib.sha256(bytes(server.rx[id(srv)])).digest() == hashlib.sha256(up).digest()


def test_our_last_data_ack_outlives_a_cut_on_the_path_that_carries_it():
    """Compound-fault seed 8111: the client removes two of its three addresses and its last path
    is cut just as the server acknowledges the client's DATA_FIN; that DATA_ACK (and the server's
    subflow FINs carrying it) die in the cut, which ends 2.4 s later. The server must keep
    retrying those FINs past the cut (Linux retries an orphan's FIN for about a minute), not
    reset its subflow after 2 s: then the client, its DATA_FIN never acknowledged, would sit
    out its 60 s close timeout and report a reset although every byte arrived."""
    from testkit.faults import run_seed

    r = run_seed(8111)
    assert r.ok, (r.details, r.diagnosis)
    assert r.sim_time < 10.0, r.sim_time  # closed soon after the cut ended (3.57 s)


def test_a_subflow_still_delivering_its_tail_is_not_reset_when_the_close_lingers():
    """Both DATA_FINs are through, and one subflow still has its own copy of data the other
    carried in flight, its ACKs coming slowly but steadily (a loaded peer, a backed-off
    recovery). Before: at the linger deadline (2 s) it was reset anyway; the peer had every
    byte of it, so our RST landed on its rcv_nxt and was taken: MP_TCPRST, the peer's MPRstRx
    (the 100-connection stress test, 1 run in ~19 under load, our clients' RSTs). A subflow
    making progress now finishes with its FIN; only a silent one is reset."""
    from .test_proto_join import KEY
    from .test_proto_mp_prio import joined

    box, f = established_server(key=KEY)
    f2 = joined(box)
    conn = box.conn
    s1, s2 = box.sub_for(f), box.sub_for(f2)
    box.feed(f, f.seg(ACK, data_ack(conn, 1)))
    s1.backup = True  # (the data goes on s2)
    mss = s2.tcp.mss
    n = 10 * mss
    conn.send(bytes(n))
    got = sum(len(seg.payload) for sub, seg in box.out_pairs() if sub is s2)
    assert got == n
    s1.backup = False
    # the peer has it all at the data level, its DATA_FIN too; s2's ACKs lag behind
    box.feed(f, f.seg(ACK, data_fin(f, 1, conn.local_idsn + 1 + n)))
    conn.close(box.now)
    box.out()
    box.feed(f, f.seg(ACK, data_ack(conn, n + 2)))
    assert conn._subflows_closing
    box.feed(f, f.seg(ACK | FIN, data_ack(conn, n + 2), ack=2))  # s1 ends cleanly
    assert s1.tcp.state.value == "TIME-WAIT"
    # s2's path: 300 ms of RTT (a loaded peer), its ACKs one segment per 300 ms
    s2.tcp.srtt, s2.tcp.rttvar = 0.3, 0.1
    t0 = box.now
    acked = 1
    while acked < n + 1:
        box.advance(0.3)
        acked = min(n + 1, acked + mss)
        box.feed(f2, f2.seg(ACK, data_ack(conn, n + 2), ack=acked))
    assert box.now - t0 > 2.5  # well past the 2 s linger
    box.advance(0.1)
    box.feed(f2, f2.seg(ACK | FIN, data_ack(conn, n + 2), ack=n + 2))
    box.advance(5.0)
    rst2 = [seg for sub, seg in box.sent if sub is s2 and seg.flags & RST]
    assert not rst2, rst2
    assert "Reset" not in box.kinds() and "Closed" in box.kinds()
    assert conn.mib["MPRstTx"] == 0
