"""Scripted two-host MPTCP exchanges through the real codecs, with a fake clock."""

from __future__ import annotations

import hashlib
import ipaddress

from mptcp_impl.mptcp.connection import add_addr_hmac
from mptcp_impl.mptcp.ctrl import Endpoint, MptcpConfig
from mptcp_impl.mptcp.options import AddAddr, find_mptcp
from testkit.mptcp_sim import C1, C2, Net, S, client_cfg, kinds, two_path_net


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


S2 = "10.0.6.2"


def test_add_addr_echo_leaves_while_data_flows_and_a_repeat_opens_no_second_join():
    """The client is busy sending: its data segments have no room left for the ADD_ADDR echo,
    so the echo needs a pure ACK of its own (as Linux sends), not the next idle moment (Linux
    resent its ADD_ADDR after 225 ms and counted a second AddAddrTx). A repeated ADD_ADDR of a
    known address is echoed again but opens no second subflow (Linux: lookup_subflow_by_daddr).
    """
    net = Net(3)
    client = net.host("client", [C1], seed=13)
    scfg = MptcpConfig(endpoints=[Endpoint(S2, frozenset({"signal"}), 1)])
    server = net.host("server", [S, S2], seed=23, listen_port=5001, config=scfg)
    net.path(C1, S, delay=0.01)
    net.path(C1, S2, delay=0.02)
    conn = net.connect(client, C1, (S, 5001), MptcpConfig(endpoints=[]))
    net.run(1.0, stop=lambda: conn._connected)
    conn.send(bytes(6_000_000))
    net.flush(client, conn)
    net.run(2.0, stop=lambda: server.accepted and server.accepted[0].mib["EchoAdd"])
    srv = server.accepted[0]
    assert srv.mib["EchoAdd"] == 1

    def sent_with(src: str, echo: bool) -> list[float]:
        return [
            t
            for t, a, _b, seg in net.trace
            if a == src
            and any(isinstance(o, AddAddr) and o.echo == echo for o in find_mptcp(seg.options))
        ]

    announced = sent_with(S, False)[0] + 0.01  # when it reached the client
    assert sent_with(C1, True)[0] - announced < 1e-6, "the echo waited for an idle moment"
    net.run(net.now + 0.3)
    assert len(conn.all_subflows()) == 2
    # the peer announces the same address again
    addr = ipaddress.ip_address(S2)
    h = add_addr_hmac(srv.local_key, srv.remote_key, 1, addr, None)
    srv.initial.queue_option(AddAddr(addr_id=1, address=addr, port=None, hmac=h))
    net.flush(server, srv)
    net.run(net.now + 0.5)
    assert conn.mib["AddAddr"] == 2 and conn.mib["EchoAddTx"] == 2
    # mid-transfer, the announcement came on an ACK that let new data out: still echoed at once
    announced = sent_with(S, False)[1] + 0.01
    assert sent_with(C1, True)[1] - announced < 1e-6, "the echo waited for an idle moment"
    assert len(conn.all_subflows()) == 2, [s.name for s in conn.all_subflows()]
    assert conn.mib["MPJoinSynTx"] == 1


def test_queued_option_leaves_in_the_same_flush_as_the_data_an_ack_released():
    """An option queued while an ACK lets new data out (the ADD_ADDR echo in practice) goes
    out in that very flush, on a pure ACK of its own: data segments have no room for it."""
    import ipaddress

    from mptcp_impl.mptcp.options import AddAddr, find_mptcp

    net, client, server, p1, p2 = two_path_net(seed=5)
    conn = net.connect(client, C1, (S, 5001), MptcpConfig(endpoints=[]))
    net.run(1.0, stop=lambda: conn._connected)
    conn.send(bytes(4_000_000))
    net.flush(client, conn)
    tcp = conn.initial.tcp
    orig = tcp.receive_segment
    marks: list[tuple[float, int]] = []
    echo = AddAddr(addr_id=9, address=ipaddress.ip_address("10.9.9.9"), port=None, echo=True)

    def receive(seg, now):
        una = tcp.snd_una
        orig(seg, now)
        if not marks and tcp.snd_una != una and now > 0.05 and conn._sbuf:
            conn.initial.queue_option(echo)
            marks.append((now, len(net.trace)))

    tcp.receive_segment = receive
    net.run(0.5, stop=lambda: bool(marks) and net.now > marks[0][0])
    t, i = marks[0]
    burst = [seg for tt, a, _b, seg in net.trace[i:] if tt == t and a == C1]
    assert any(seg.payload for seg in burst), "the ACK released no data: the test tests nothing"
    with_echo = [s for s in burst if any(o == echo for o in find_mptcp(s.options))]
    assert with_echo and not with_echo[0].payload, [len(s.payload) for s in burst]


def test_peer_backup_subflow_carries_nothing_while_the_other_works():
    # The client joins from C2 as a backup endpoint (MP_JOIN's B flag): the server, which
    # sends here, must keep it idle while the initial subflow works (the handover experiment:
    # our server sent 19 MB on the client's backup lte subflow, Linux's sent nothing).
    net, client, server, p1, p2 = two_path_net(seed=5)
    cfg = MptcpConfig(endpoints=[Endpoint(C2, frozenset({"subflow", "backup"}), 1)])
    conn = net.connect(client, C1, (S, 5001), cfg)
    net.run(1.0, stop=lambda: conn._connected)
    conn.send(b"go")
    net.flush(client, conn)
    net.run(2.0, stop=lambda: server.accepted and len(server.accepted[0].subflows) == 2)
    srv = server.accepted[0]
    assert len(srv.subflows) == 2
    data = bytes(range(256)) * 4000
    srv.send(data)
    net.flush(server, srv)
    net.run(net.now + 20.0, stop=lambda: len(client.rx[id(conn)]) >= len(data))
    assert bytes(client.rx[id(conn)]) == data
    by_local = {s.local[0]: s.bytes_sent for s in srv.all_subflows()}
    backup = [s for s in srv.all_subflows() if s.remote[0] == C2]
    assert backup and backup[0].peer_backup, by_local
    assert backup[0].bytes_sent == 0, [(s.remote, s.bytes_sent) for s in srv.all_subflows()]
