"""Scripted two-host MPTCP exchanges through the real codecs, with a fake clock."""

from __future__ import annotations

import hashlib

from mptcp_impl.mptcp.ctrl import Endpoint, MptcpConfig

from .mptcp_sim import Net, kinds

C1, C2, S = "10.0.1.1", "10.0.2.1", "10.0.5.2"


def two_path_net(seed: int = 1, **path_kw):
    net = Net(seed)
    client = net.host("client", [C1, C2], seed=seed + 10)
    server = net.host("server", [S], seed=seed + 20, listen_port=5001)
    p1 = net.path(C1, S, delay=0.01, **path_kw)
    p2 = net.path(C2, S, delay=0.02, **path_kw)
    return net, client, server, p1, p2


def client_cfg() -> MptcpConfig:
    return MptcpConfig(endpoints=[Endpoint(C2, frozenset({"subflow"}), 1)])


def test_handshake_join_transfer_and_close():
    net, client, server, p1, p2 = two_path_net()
    conn = net.connect(client, C1, (S, 5001), client_cfg())
    data = bytes(range(256)) * 4000  # ~1 MB
    net.run(1.0, stop=lambda: conn._connected)
    assert conn._connected and not conn.fallback
    sent = conn.send(data)
    assert sent == len(data)
    conn.close(net.now)
    net.flush(client, conn)
    net.run(30.0)
    srv = server.accepted[0]
    assert not srv.fallback
    got = bytes(server.rx[id(srv)])
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    assert len(srv.all_subflows()) == 2
    assert all(s.bytes_received > 0 for s in srv.all_subflows())
    ev = kinds(server.events[id(srv)])
    assert "PeerClosed" in ev
    assert conn.mib["MPJoinSynAckRx"] == 1
    assert srv.mib["MPJoinAckRx"] == 1 and srv.mib["MPCapableACKRX"] == 1
    assert srv.mib["DSSNotMatching"] == 0
