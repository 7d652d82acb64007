"""The receive side's steady-state round (``MptcpConnection.data_round``), as the packet edge
takes it in the middle of a batch, against the whole round (``segments_to_send``) at the
batch's end: the same stream, through loss, reordering, a subflow reset, DSS checksums and the
close, on a simulated two-path network whose senders' bursts arrive as batches."""

from __future__ import annotations

import hashlib

import pytest

from mptcp_impl.mptcp.ctrl import Endpoint, MptcpConfig
from testkit.mptcp_sim import C2, S, two_path_net

DATA = bytes(range(251)) * 8000  # ~2 MB, a period prime to every segment size


def transfer(batch: bool, checksum: bool, reset_at: float | None, **path_kw):
    net, client, server, _p1, _p2 = two_path_net(seed=7, **path_kw)
    server.batch_rounds = batch
    cfg = MptcpConfig(endpoints=[Endpoint(C2, frozenset({"subflow"}), 1)], checksum=checksum)
    server.config = MptcpConfig(checksum=checksum)
    conn = net.connect(client, "10.0.1.1", (S, 5001), cfg)
    net.run(1.0, stop=lambda: conn._connected)
    assert conn.send(DATA) == len(DATA)
    conn.close(net.now)
    net.flush(client, conn)
    if reset_at is not None:
        net.run(reset_at)
        assert net.reset_subflow(S, C2) == 1  # the server resets its second subflow
    net.run(60.0)
    srv = server.accepted[0]
    return server, srv, bytes(server.rx[id(srv)])


@pytest.mark.parametrize(
    "checksum, reset_at, path_kw",
    [
        (False, None, {}),
        (False, None, {"loss": 0.01, "reorder": 0.05, "reorder_delay": 0.004}),
        (False, 0.3, {"loss": 0.01}),
        (True, None, {"loss": 0.01, "reorder": 0.05, "reorder_delay": 0.004}),
    ],
)
def test_batched_rounds_deliver_the_same_stream(checksum, reset_at, path_kw):
    server, srv, got = transfer(True, checksum, reset_at, **path_kw)
    assert server.data_rounds > 100  # the steady-state round is what ran mid-batch
    assert hashlib.sha256(got).digest() == hashlib.sha256(DATA).digest()
    assert "PeerClosed" in [type(e).__name__ for e in server.events[id(srv)]]
    assert srv.checksum is checksum and not srv.fallback
