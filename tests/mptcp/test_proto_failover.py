"""Failover in the two-host sim: a path cut mid-transfer (its subflow goes stale, its data is
reinjected on the other one), then restored (the subflow recovers and carries data again)."""

from __future__ import annotations

import hashlib

import pytest

from testkit.mptcp_sim import C1, S, client_cfg, kinds, two_path_net

CHUNK = 40_000
PERIOD = 0.1


def _app_limited_transfer(seed: int, cut: float, restore: float | None, until: float):
    net, client, server, p1, p2 = two_path_net(seed=seed)
    conn = net.connect(client, C1, (S, 5001), client_cfg())
    net.run(1.0, stop=lambda: conn._connected)
    conn.send(b"start")  # the client joins once fully established: after the first DATA_ACK
    net.flush(client, conn)
    net.run(2.0, stop=lambda: len(conn.subflows) == 2 and all(s.usable for s in conn.subflows))
    assert len(conn.subflows) == 2
    data = b"start" + bytes(i % 251 for i in range(CHUNK * int(until / PERIOD)))
    off = 5
    t0 = net.now
    marks = {}
    while off < len(data):
        n = conn.send(data[off : off + CHUNK])
        off += n
        net.flush(client, conn)
        net.run(net.now + PERIOD)
        t = net.now - t0
        srv = server.accepted[0]
        if p1.up and "cut" not in marks and t >= cut:
            p1.up = False
            marks["cut"] = (net.now, len(server.rx[id(srv)]))
        if restore is not None and not p1.up and t >= restore:
            p1.up = True
            marks["restore"] = (
                net.now,
                len(server.rx[id(srv)]),
                {s.local: s.bytes_received for s in srv.all_subflows()},
            )
    srv = server.accepted[0]
    net.run(net.now + 60.0, stop=lambda: len(server.rx[id(srv)]) >= len(data))
    return net, client, server, conn, srv, data, marks, p1


@pytest.mark.parametrize("seed", [1, 2])
def test_cut_path_transfer_completes_on_the_other(seed):
    net, client, server, conn, srv, data, marks, p1 = _app_limited_transfer(
        seed, cut=1.0, restore=None, until=4.0
    )
    got = bytes(server.rx[id(srv)])
    assert len(got) == len(data)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert conn.mib["SubflowStale"] >= 1
    assert conn.mib["MPTCPRetrans"] >= 1  # what the cut path held went out on the other
    assert "Reset" not in kinds(client.events[id(conn)])
    assert srv.mib["DSSNotMatching"] == 0


@pytest.mark.parametrize("seed", [1, 3])
def test_restored_path_carries_data_again(seed):
    net, client, server, conn, srv, data, marks, p1 = _app_limited_transfer(
        seed, cut=1.0, restore=5.0, until=9.0
    )
    got = bytes(server.rx[id(srv)])
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert conn.mib["SubflowStale"] >= 1
    assert conn.mib["SubflowRecover"] >= 1
    _t, _n, before = marks["restore"]
    after = {s.local: s.bytes_received for s in srv.all_subflows()}
    on_path1 = [
        k
        for k in after
        if k[0] == S and any(s.remote[0] == C1 and s.local == k for s in srv.all_subflows())
    ]
    assert on_path1
    k = on_path1[0]
    assert after[k] > before.get(k, 0) + 100_000, "the restored path carries no new data"
    assert not any(s.stale for s in conn.subflows)


@pytest.mark.parametrize("seed", [1, 2])
def test_close_completes_with_the_cut_path_still_down(seed):
    # Both DATA_FINs must get through lte. The server (the receiver here) never sent data on
    # the cut path, so only the client knows it is dead: a DATA_FIN resent on the same dead
    # subflow, again and again, would hold the close for good.
    net, client, server, conn, srv, data, marks, p1 = _app_limited_transfer(
        seed, cut=1.0, restore=None, until=3.0
    )
    assert not p1.up and len(server.rx[id(srv)]) == len(data)
    srv.close(net.now)
    net.flush(server, srv)
    net.run(net.now + 20.0, stop=lambda: "PeerClosed" in kinds(client.events[id(conn)]))
    assert "PeerClosed" in kinds(client.events[id(conn)])
    conn.close(net.now)
    net.flush(client, conn)
    net.run(net.now + 20.0, stop=lambda: "PeerClosed" in kinds(server.events[id(srv)]))
    assert "PeerClosed" in kinds(server.events[id(srv)])
    net.run(net.now + 20.0, stop=lambda: conn._fin_acked and srv._fin_acked)
    assert conn._fin_acked and srv._fin_acked
