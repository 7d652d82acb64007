"""The data-level receive queue: in-order data stays in the pieces it arrived in (a subflow's
handed-over buffer, an out-of-order piece once reached), ``read_chunks`` hands them over as
they are, ``read`` joins them, ``read(n)`` cuts across them; the window counts them."""

from __future__ import annotations

from mptcp_impl.mptcp.options import Dss

from .peer import ACK, PSH, established_server

KEY = 0x5151000022223333


def _two_pieces_out_of_order():
    box, f = established_server(key=KEY)
    conn = box.conn
    dack = (conn.local_idsn + 1) & (2**64 - 1)
    a, b = bytes(range(200)) * 5, bytes(range(100, 200)) * 10
    # the second 1000 bytes of the stream first (subflow bytes 1-1000), then the first
    later = Dss(
        data_ack=dack, data_ack64=True, dsn=f.idsn + 1001, dsn64=True, subflow_seq=1, data_len=1000
    )
    first = Dss(
        data_ack=dack, data_ack64=True, dsn=f.idsn + 1, dsn64=True, subflow_seq=1001, data_len=1000
    )
    box.feed(f, f.seg(ACK | PSH, later, payload=b))
    assert conn.readable == 0 and conn.mib["OFOQueue"] == 1
    box.feed(f, f.seg(ACK | PSH, first, seq=1001, payload=a))
    box.advance(0.05)
    return conn, a + b


def test_read_chunks_hands_over_the_pieces_in_order():
    conn, stream = _two_pieces_out_of_order()
    assert conn.readable == len(stream)
    window = conn.rcv_window()
    pieces = conn.read_chunks()
    assert len(pieces) == 2 and b"".join(pieces) == stream
    assert conn.readable == 0 and conn.read_chunks() == []
    assert conn.rcv_window() == window + len(stream)


def test_read_joins_and_cuts_across_pieces():
    conn, stream = _two_pieces_out_of_order()
    assert conn.read(700) == stream[:700]
    assert conn.read(600) == stream[700:1300]  # the rest of one piece and part of the next
    assert conn.readable == len(stream) - 1300
    assert conn.read() == stream[1300:]
    assert conn.readable == 0 and conn.read() == b""


def test_read_chunks_up_to_a_count_cuts_with_views_and_keeps_the_rest():
    """What the application's reader takes when it has room for less than is queued."""
    conn, stream = _two_pieces_out_of_order()
    window = conn.rcv_window()
    pieces = conn.read_chunks(1500)  # all of one piece, a view of half the next
    assert b"".join(pieces) == stream[:1500] and type(pieces[-1]) is memoryview
    assert conn.readable == 500 and conn.rcv_window() == window + 1500
    assert conn.read_chunks(0) == [] and conn.readable == 500
    assert b"".join(conn.read_chunks(5000)) == stream[1500:] and conn.readable == 0
