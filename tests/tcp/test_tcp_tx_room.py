"""TCP small queues (issue 22): the edge tells a connection how many more bytes its host queue
takes now (``tx_room``); new data stops there and waits, cwnd or not."""

import os

from tcp_wire import Wire


def test_tx_room_bounds_new_data_and_none_lifts_it():
    """Before: a connection sent its whole window at once whatever the queue below held."""
    w = Wire()
    w.connect()
    w.run(until=w.now + 0.1)
    a = w.a
    assert a.send(os.urandom(100_000)) == 100_000
    a.tx_room = 3000
    segs = a.segments_to_send(w.now)
    sent = sum(len(s.payload) for s in segs)
    assert 3000 <= sent < 3000 + a.mss  # the last segment may go over, never a second one
    assert a.tx_room <= 0 and a.unsent == 100_000 - sent
    assert a.segments_to_send(w.now) == []  # nothing more until the edge gives room
    a.tx_room = None
    more = sum(len(s.payload) for s in a.segments_to_send(w.now))
    assert more > 0 and sent + more <= a.cwnd


def test_tx_room_does_not_hold_back_pure_acks():
    w = Wire()
    w.connect()
    w.run(until=w.now + 0.1)
    w.a.tx_room = 0
    w.b.send(b"x" * 2000)
    for s in w.b.segments_to_send(w.now):
        w.a.receive_segment(s, w.now)
    w.a.send_ack()
    out = w.a.segments_to_send(w.now)
    assert out and all(not s.payload for s in out)


def test_tx_room_counts_what_left_when_a_segment_stops_at_a_metadata_range():
    """A segment never spans two metadata ranges (MPTCP mappings). Before: the room was charged
    with the size asked for, the next range's bytes included, although the segment stopped at
    the range's end: a small range spent the room of the next one, which then waited (live:
    the rest of a mapping held back, data-level stalls, an infinite mapping in mid-mapping)."""
    w = Wire()
    w.connect()
    w.run(until=w.now + 0.1)
    a = w.a
    assert a.send(b"a" * 500, meta=1) == 500
    assert a.send(b"b" * 2000, meta=2) == 2000
    a.tx_room = 2500
    segs = a.segments_to_send(w.now)
    assert len(segs[0].payload) == 500 and sum(len(s.payload) for s in segs) == 2500
    assert a.tx_room == 0 and a.unsent == 0
