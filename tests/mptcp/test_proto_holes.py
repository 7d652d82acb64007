"""A hole at the DATA_ACK held by a path that went silent (issue 18, defect 4): the sender must
keep the receiver's buffer from filling with data beyond the hole, and fill the hole before the
silent subflow's RTO. Without both, a Linux receiver whose out-of-order queue reaches its
receive buffer stops taking data from its subflows and the connection stalls for good (seen in
test_link_failure); our own receiver just waits for the RTO."""

from __future__ import annotations

import hashlib
from collections import deque

import pytest

from mptcp_impl.mptcp.ctrl import Endpoint, MptcpConfig
from mptcp_impl.mptcp.holes import chunks_at
from mptcp_impl.tcp.connection import TcpConfig
from testkit.mptcp_sim import C1, C2, Link, Net, S, kinds

MB = 1_000_000


def _two_path(
    wifi: tuple[float, float, int],
    lte: tuple[float, float, int],
    *,
    seed: int = 1,
    loss: float = 0.0,
    client_tcp: TcpConfig | None = None,
    server_tcp: TcpConfig | None = None,
    snd_buf: int | None = None,
):
    """Client (two addresses) and server, each path (one-way delay, rate, queue bytes) a
    bottleneck; the client's connection established, its join under way."""
    net = Net(seed)
    client = net.host("client", [C1, C2], seed=seed + 10, tcp_config=client_tcp)
    server = net.host("server", [S], seed=seed + 20, listen_port=5001, tcp_config=server_tcp)
    paths = [
        net.path(a, S, delay=d, link=Link(r, q), loss=loss)
        for a, (d, r, q) in ((C1, wifi), (C2, lte))
    ]
    cfg = MptcpConfig(endpoints=[Endpoint(C2, frozenset({"subflow"}), 1)], snd_buf=snd_buf)
    conn = net.connect(client, C1, (S, 5001), cfg)
    net.run(1.0, stop=lambda: conn._connected)
    return net, client, server, paths, conn


def _bulk_with_cut(rate: float, rcv_buf: int, cut_at: float, size: int = 8 * MB):
    """Two equal bottlenecked paths (10 ms one way, 20 ms of queue), a bulk transfer from the
    client; at ``cut_at`` the path that holds the byte at the DATA_ACK goes silent for good.
    Returns what the server got, the sent data, the largest out-of-order backlog the server
    held after the cut, the longest time the DATA_ACK stood still after it, and the client."""
    link = (0.01, rate, int(rate / 8 * 0.02))
    net, client, server, made, conn = _two_path(link, link, server_tcp=TcpConfig(rcv_buf=rcv_buf))
    paths = {C1: made[0], C2: made[1]}
    data = bytes(i % 251 for i in range(size))
    off = conn.send(data)
    net.flush(client, conn)
    t0 = net.now
    cut = None
    max_ooo = 0
    longest = 0.0
    una, moved = conn.snd_una, net.now
    while net.now < t0 + 30:
        if off < size:
            off += conn.send(data[off:])
            net.flush(client, conn)
        net.run(net.now + 0.002)
        srv = server.accepted[0]
        if cut is None and net.now - t0 >= cut_at:
            holder = next(ch[2] for ch in conn._chunks if ch[0] <= conn.snd_una < ch[0] + ch[1])
            paths[holder.local[0]].up = False
            cut = net.now
        if cut is not None:
            max_ooo = max(max_ooo, srv._ooo_bytes)
        if conn.snd_una != una:
            if cut is not None:
                longest = max(longest, net.now - moved)
            una, moved = conn.snd_una, net.now
        if len(server.rx[id(srv)]) >= size:
            break
    assert cut is not None, "the transfer ended before the cut"
    return bytes(server.rx[id(srv)]), data, max_ooo, longest, conn


@pytest.mark.parametrize("rcv_buf", [1 * MB, 2 * MB])
def test_silent_holder_hole_is_repaired_early_and_the_receiver_keeps_room(rcv_buf):
    """Before: 95% of a 1 MB receive buffer out of order and the DATA_ACK still for 254 ms (the
    holder's RTO). After: at most 3/4 of it (the cap leaves a quarter for the repair and what is
    in flight), and the hole filled within a few RTTs of the path's silence."""
    got, data, max_ooo, longest, conn = _bulk_with_cut(40e6, rcv_buf, cut_at=1.0)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert max_ooo <= 0.75 * rcv_buf, (max_ooo, rcv_buf)
    assert longest < 0.15, longest  # the silent subflow's first RTO comes at about 0.25 s
    assert conn.mib["MPTCPRetrans"] >= 1


def test_no_repair_and_no_cap_without_a_fault():
    """Paths of different RTTs and rates, a window that binds: the DATA_ACK waits for the slow
    path all the time, yet nothing is sent twice (a repair only follows a silent holder)."""
    net, client, server, _paths, conn = _two_path(
        (0.005, 20e6, 125_000), (0.04, 10e6, 62_500), server_tcp=TcpConfig(rcv_buf=500_000)
    )
    data = bytes(i % 251 for i in range(4 * MB))
    off = conn.send(data)
    net.flush(client, conn)
    while net.now < 60:
        off += conn.send(data[off:])
        net.flush(client, conn)
        net.run(net.now + 0.05)
        srv = server.accepted[0]
        if len(server.rx[id(srv)]) >= len(data):
            break
    assert bytes(server.rx[id(srv)]) == data
    assert conn.mib["MPTCPRetrans"] == 0
    assert all(s.bytes_sent > 0.15 * len(data) for s in conn.all_subflows())


def test_close_after_a_cut_avoids_the_silent_subflow():
    """The wifi path is cut for good mid-transfer; once all the data is through, the DATA_FIN
    goes on the subflow that still answers and the silent one is reset rather than sent a FIN:
    our end is closed within a few RTTs of the peer's DATA_FIN. Before: the DATA_FIN went first
    on the cut subflow (the lower srtt) and waited for its backed-off RTO, then its FIN for the
    2 s linger: 2.2 s after the data."""
    net, client, server, (wifi, _lte), conn = _two_path(
        (0.005, 40e6, 151_400), (0.015, 20e6, 151_400)
    )
    data = bytes(i % 251 for i in range(4 * MB))
    assert conn.send(data) == len(data)
    conn.close(net.now)
    net.flush(client, conn)
    srv = server.accepted[0]
    net.run(net.now + 5, stop=lambda: len(server.rx[id(srv)]) >= MB)
    wifi.up = False
    net.run(net.now + 30, stop=lambda: kinds(server.events[id(srv)]).count("PeerClosed"))
    assert bytes(server.rx[id(srv)]) == data
    srv.close(net.now)
    net.flush(server, srv)
    t_fin = net.now
    net.run(net.now + 30, stop=lambda: "Closed" in kinds(client.events[id(conn)]))
    assert "Closed" in kinds(client.events[id(conn)])
    assert "Reset" not in kinds(client.events[id(conn)])
    assert net.now - t_fin < 0.5, net.now - t_fin
    assert conn._fin_tries == 0  # the first DATA_FIN went where it was answered


def test_chunks_never_exceed_a_subflows_send_buffer():
    """Subflows with a 64 KB TCP send buffer under a larger congestion window: the scheduler
    gave a subflow its window's room, the subflow took what its buffer held, and the rest was
    recorded as sent there but never was: a hole only the data-level timer (or a failure)
    would fill (found by the compound-fault harness, seed 132). Now a subflow's room includes
    its send buffer, and a clean transfer needs no data-level retransmission."""
    net, client, server, _paths, conn = _two_path(
        (0.01, 100e6, 400_000),
        (0.02, 50e6, 400_000),
        client_tcp=TcpConfig(snd_buf=64 * 1024),
        snd_buf=4 * MB,
    )
    data = bytes(i % 251 for i in range(3 * MB))
    assert conn.send(data) == len(data)
    net.flush(client, conn)
    srv = server.accepted[0]
    t0 = net.now
    net.run(t0 + 30, stop=lambda: len(server.rx[id(srv)]) >= len(data))
    assert bytes(server.rx[id(srv)]) == data
    assert conn.mib["MPTCPRetrans"] == 0
    assert net.now - t0 < 3.0, net.now - t0


@pytest.mark.parametrize("seed", [6, 18, 20])
def test_server_data_fin_leaves_when_the_cut_subflow_puts_sack_blocks_on_its_acks(seed):
    """1% loss on both paths, then the wifi path cut for good while the client sends. The
    server's wifi subflow still holds out-of-order data, so its ACKs carry SACK blocks that
    left no room for a DATA_FIN, and that subflow (the lower srtt) was picked for it every
    time, with no timer to try another: the server's DATA_FIN never left and the close hung
    for good (seen live against a Linux client, loss_cut family: 2 of 20). Now the SACK
    blocks give way to the DATA_FIN, and an unsent DATA_FIN tries the next subflow."""
    net, client, server, (wifi, _lte), conn = _two_path(
        (0.005, 40e6, 151_400), (0.015, 20e6, 151_400), seed=seed, loss=0.01
    )
    data = bytes(i % 251 for i in range(4 * MB))
    assert conn.send(data) == len(data)
    conn.close(net.now)
    net.flush(client, conn)
    srv = server.accepted[0]
    net.run(net.now + 10, stop=lambda: len(server.rx[id(srv)]) >= MB)
    wifi.up = False
    net.run(net.now + 60, stop=lambda: "PeerClosed" in kinds(server.events[id(srv)]))
    assert bytes(server.rx[id(srv)]) == data
    srv.close(net.now)
    net.flush(server, srv)
    t0 = net.now

    def both() -> bool:
        return all("Closed" in kinds(h.events[id(c)]) for h, c in ((client, conn), (server, srv)))

    net.run(net.now + 60, stop=both)
    assert both() and srv._fin_acked
    assert net.now - t0 < 5.0, net.now - t0


class _CountingDeque(deque):
    """A chunk list that counts the entries a lookup walks through."""

    visited = 0

    def __iter__(self):
        for ch in super().__iter__():
            _CountingDeque.visited += 1
            yield ch


def test_chunks_at_the_data_ack_are_found_without_walking_every_chunk_in_flight():
    """``holes.chunks_at`` (called on every scheduling pass) agrees with a scan of every chunk,
    through a cut that makes the other subflow reinject and repair (chunks out of DSN order),
    and walks only a few of the hundreds in flight."""
    link = (0.01, 50e6, int(50e6 / 8 * 0.02))
    net, client, server, made, conn = _two_path(link, link)
    conn._chunks = _CountingDeque(conn._chunks)
    data = bytes(i % 251 for i in range(6 * MB))
    off = conn.send(data)
    net.flush(client, conn)
    checks = walked = most = 0
    late_seen = False
    cut = False
    while net.now < 20 and len(server.rx[id(server.accepted[0])]) < len(data):
        if off < len(data):
            off += conn.send(data[off:])
            net.flush(client, conn)
        net.run(net.now + 0.003)
        if not cut and conn.snd_una - conn.local_idsn > 2 * MB:
            made[0].up = False  # the holder's path goes silent: reinjection, early repair
            cut = True
        late_seen |= bool(conn._late)
        most = max(most, len(conn._chunks))
        for dsn in (conn.snd_una, (conn.snd_una + conn.snd_nxt) // 2):
            if dsn >= conn.snd_nxt:
                continue
            want = [ch for ch in list(conn._chunks) if ch[0] <= dsn < ch[0] + ch[1]]
            before = _CountingDeque.visited
            got = chunks_at(conn, dsn)
            if dsn == conn.snd_una:
                walked += _CountingDeque.visited - before
                checks += 1
            assert sorted(map(id, got)) == sorted(map(id, want)), dsn
    assert bytes(server.rx[id(server.accepted[0])]) == data
    assert cut and late_seen and checks > 100 and most > 100
    # the DATA_ACK's chunks lie at the front: a few entries walked, not the whole deque
    assert walked / checks < most / 4, (walked / checks, most)
