"""Receive memory at the data level against a scripted peer (issue 18, defect 6): out-of-order
data is held once per byte whatever the peer's split points and overlaps, so in-order plus
out-of-order bytes stay within the receive buffer; nothing past the advertised window is kept,
in order or not; the held bytes come out intact once the hole fills."""

from __future__ import annotations

from mptcp_impl.mptcp.ctrl import MptcpConfig

from .peer import ACK, Box, Flow, data_ack, established_server, mapping

RBUF = 4 << 20  # 4 MiB


def stream(n: int) -> bytes:
    """Recognisable content: every 4-byte word is its own offset."""
    return b"".join(i.to_bytes(4, "big") for i in range(0, n, 4))[:n]


def feed_fast(box: Box, f: Flow, seg) -> None:
    """A peer segment straight into the subflow's TCP (no wire codec: 120 MB would be slow)."""
    box.sub_for(f).tcp.receive_segment(seg, box.now)
    box.out()


def held(conn) -> int:
    """Bytes really kept alive by the out-of-order queue (a chunk that is a view keeps the whole
    object it views)."""
    total = 0
    for c in conn._ooo_data.values():
        obj = getattr(c, "obj", c)
        total += len(obj)
    return total


def test_overlapping_out_of_order_pieces_hold_at_most_the_buffer():
    """2,000 pieces of 60 KB, each overlapping the previous by 58 KB, inside a 4 MiB window
    (before the fix: each stored whole, 120 MB held, and the advertised window closed)."""
    box, f = established_server(config=MptcpConfig(rcv_buf=RBUF), wscale=7)
    conn = box.conn
    piece, step, count = 60_000, 2_000, 2_000
    total = 1 + (count - 1) * step + piece  # DSN offsets 1 .. total; offset 1 is the hole
    data = stream(total)
    ssn = 1
    worst = 0
    for k in range(count):
        off = 2 + k * step
        payload = data[off - 1 : off - 1 + piece]
        feed_fast(
            box,
            f,
            f.seg(ACK, data_ack(conn, 1), mapping(f, off, ssn, piece), seq=ssn, payload=payload),
        )
        ssn += piece
        worst = max(worst, conn._ooo_bytes + conn.readable)
    assert worst <= RBUF, f"held {worst} bytes with a {RBUF}-byte buffer"
    assert held(conn) <= RBUF  # no chunk is a view keeping a whole 60 KB piece alive
    assert conn.readable == 0
    assert conn._ooo_bytes == total - 1  # every byte after the hole, once
    assert conn.mib["NoDSSInWindow"] == 0  # all of it was within the window
    assert conn.mib["OFOQueue"] == count and conn.mib["OFOMerge"] == count - 1
    # the hole fills: the whole stream comes out, in order, once
    feed_fast(
        box, f, f.seg(ACK, data_ack(conn, 1), mapping(f, 1, ssn, 1), seq=ssn, payload=data[:1])
    )
    got = bytearray()
    while conn.readable:
        got += conn.read(1 << 20)
    assert bytes(got) == data
    assert conn._ooo_bytes == 0 and not conn._ooo_data


def test_resends_cut_at_other_points_are_counted_once():
    """A reinjection or another subflow's copy cut at other split points: before the fix a piece
    spanning two held pieces was stored whole, counted twice and shrank the window."""
    rbuf = 100_000
    box, f = established_server(config=MptcpConfig(rcv_buf=rbuf))
    conn = box.conn
    data = stream(3_000)
    ssn = 1
    for off, n in ((1001, 500), (1501, 500), (1301, 400), (1201, 700), (1001, 1000)):
        box.feed(
            f,
            f.seg(ACK, mapping(f, off, ssn, n), seq=ssn, payload=data[off - 1 : off - 1 + n]),
        )
        ssn += n
    assert conn._ooo_bytes == 1000 and held(conn) == 1000
    assert conn.rcv_window() == rbuf - 1000
    assert conn.mib["DuplicateData"] == 3  # (1301, 400), (1201, 700) and (1001, 1000): held
    box.feed(f, f.seg(ACK, mapping(f, 1, ssn, 1000), seq=ssn, payload=data[:1000]))
    assert conn.read() == data[:2000]


def test_in_order_data_past_the_window_is_not_kept():
    """A peer that ignores our window while the application does not read: a segment that
    starts inside the window is taken by the subflow's TCP up to its own buffer; before the fix
    the connection kept all of it (60 KB in a 20 KB buffer)."""
    rbuf = 20_000
    box, f = established_server(config=MptcpConfig(rcv_buf=rbuf))
    conn = box.conn
    data = stream(120_000)
    for off in (1, 60_001):
        box.feed(
            f,
            f.seg(ACK, mapping(f, off, off, 60_000), seq=off, payload=data[off - 1 : off + 59_999]),
        )
    assert conn.readable <= rbuf
    assert conn.mib["NoDSSInWindow"] > 0
    assert conn.read() == data[: conn.rcv_nxt - f.idsn - 1]
