"""The send side of the data level under compound faults (issue 18, defects 1-3), in the
simulator: data reinjected after one failure is reinjected again after a second, a mapping
already on the wire is never shortened, and a data-level retransmission timer and window probe
keep a connection going when no subflow-level timer would."""

from __future__ import annotations

import hashlib

from mptcp_impl.mptcp.ctrl import Endpoint, MptcpConfig
from testkit.mptcp_sim import Link, Net

C1, C2, C3, S = "10.0.1.1", "10.0.2.1", "10.0.3.1", "10.0.5.2"


def _three_path_transfer(seed: int) -> tuple:
    """A client on three rate-limited paths (20, 10, 10 Mbit/s) sending 3 MB; returns the net,
    both ends, the connection, its server side, the data and a pump that keeps the send
    buffer full."""
    net = Net(seed)
    client = net.host("client", [C1, C2, C3], seed=seed + 10)
    server = net.host("server", [S], seed=seed + 20, listen_port=5001)
    p1 = net.path(C1, S, delay=0.01, link=Link(20e6, 100_000))
    net.path(C2, S, delay=0.02, link=Link(10e6, 60_000))
    net.path(C3, S, delay=0.03, link=Link(10e6, 60_000))
    cfg = MptcpConfig(
        endpoints=[Endpoint(C2, frozenset({"subflow"}), 1), Endpoint(C3, frozenset({"subflow"}), 2)]
    )
    conn = net.connect(client, C1, (S, 5001), cfg)
    net.run(1.0, stop=lambda: conn._connected)
    conn.send(b"go")
    net.flush(client, conn)
    net.run(2.0, stop=lambda: len(conn.subflows) == 3 and all(s.usable for s in conn.subflows))
    assert len(conn.subflows) == 3
    data = b"go" + bytes((i * 7) % 251 for i in range(3_000_000))
    sent = [2]

    def pump() -> None:
        while sent[0] < len(data):
            n = conn.send(data[sent[0] : sent[0] + 200_000])
            if not n:
                break
            sent[0] += n
        net.flush(client, conn)

    return net, client, server, p1, conn, server.accepted[0], data, pump


def _run_until_delivered(net: Net, server, srv, data: bytes, pump, limit: float) -> None:
    end = net.now + limit
    while net.now < end and len(server.rx[id(srv)]) < len(data):
        pump()
        before = net.now
        net.run(net.now + 0.1)
        if net.now == before:
            break  # nothing in flight and no timer: stalled for good


def test_reinjected_data_is_reinjected_again_when_its_new_subflow_goes():
    # Path 1 is cut: its subflow's data is reinjected on another subflow. That subflow is then
    # removed before the resent copy is acknowledged: the copy must go out once more, on the
    # third path, or those bytes are on no live subflow and the DATA_ACK stops (before the
    # fix: 776,786 of 3,000,002 bytes, then nothing).
    net, client, server, p1, conn, srv, data, pump = _three_path_transfer(seed=1)
    pump()
    net.run(net.now + 0.25)
    pump()
    p1.up = False
    holders: list = []
    for _ in range(1000):
        pump()
        net.run(
            net.now + 0.01,
            stop=lambda: any(s.reinjected for s in conn.subflows if s.local[0] != C1),
        )
        holders = [s for s in conn.subflows if s.local[0] != C1 and s.reinjected]
        if holders:
            break
    assert holders, "path 1's data was never reinjected"
    assert len(server.rx[id(srv)]) < len(data) // 2
    assert conn.remove_address(holders[0].local[0], net.now)
    net.flush(client, conn)
    removed_at = net.now
    _run_until_delivered(net, server, srv, data, pump, limit=5.0)
    got = bytes(server.rx[id(srv)])
    assert len(got) == len(data), f"{len(got)} of {len(data)} bytes by {net.now - removed_at:.1f}s"
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert srv.mib["DSSNotMatching"] == 0
    assert holders[0] not in conn.subflows and not p1.up  # all of it over the third path
