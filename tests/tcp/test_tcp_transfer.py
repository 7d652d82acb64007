"""Two TcpConnections back to back through the in-test wire: handshake, bulk data, loss
recovery, reordering, duplication, flow control."""

import os
import random

import pytest
from tcp_wire import Wire
from test_tcp_states import FakeMptcp

from mptcp_impl.tcp import (
    ACK,
    Closed,
    Connected,
    PeerClosed,
    Sack,
    TcpConfig,
    TcpState,
    WindowScale,
)

S = TcpState


def transfer(w: Wire, n: int, side: str = "a", seed: int = 1) -> bytes:
    data = os.urandom(n)
    other = "b" if side == "a" else "a"
    w.received[other].clear()
    w.write(side, data)
    w.run(cond=lambda: len(w.received[other]) >= len(data))
    assert bytes(w.received[other]) == data
    return data


def drop_data_once(w: Wire, direction: str, indices: set[int]):
    """Drop the first transmission of the data segments with these indices (0 = the next data
    segment to be sent)."""
    conn = w.a if direction == "ab" else w.b
    base = conn.snd_nxt
    mss = conn.mss
    wanted = {(base + k * mss) & 0xFFFFFFFF for k in indices}
    dropped = set()

    def f(_w, _d, seg, _i):
        if seg.payload and seg.seq in wanted and seg.seq not in dropped:
            dropped.add(seg.seq)
            return []
        return [0.0]

    w.filters[direction] = f
    return dropped


def test_handshake_negotiates_options():
    w = Wire(TcpConfig(rcv_buf=1 << 20), TcpConfig(mss=1400))
    w.connect()
    a, b = w.a, w.b
    assert a.state is S.ESTABLISHED and b.state is S.ESTABLISHED
    assert w.events["a"] == [Connected()] and w.events["b"] == [Connected()]
    assert a.ts_ok and b.ts_ok and a.sack_ok and b.sack_ok
    assert a.rcv_wscale == 5 and b.snd_wscale == 5  # 1 MiB >> 5 fits 16 bits
    assert b.rcv_wscale == 7 and a.snd_wscale == 7  # 4 MiB
    assert a.peer_mss == 1400 and b.peer_mss == 1460
    assert a.mss == 1400 - 12 and b.mss == 1400 - 12  # min of both MSS, minus timestamps
    syn = w.log[0][2]
    assert syn.options[-1] == WindowScale(5)
    assert a.stats.srtt == pytest.approx(0.02, abs=0.002)


def test_options_off_when_one_side_declines():
    w = Wire(TcpConfig(), TcpConfig(sack=False, timestamps=False, window_scale=False))
    w.connect()
    for c in (w.a, w.b):
        assert not c.ts_ok and not c.sack_ok
        assert c.snd_wscale == 0 and c.rcv_wscale == 0
    synack = w.log[1][2]
    assert [type(o).__name__ for o in synack.options] == ["MSS"]
    transfer(w, 300_000)
    assert w.a.mss == 1460


@pytest.mark.parametrize("cc", ["reno", "cubic"])
def test_bulk_transfer_both_directions_and_close(cc):
    w = Wire(TcpConfig(cc=cc), TcpConfig(cc=cc))
    w.connect()
    transfer(w, 3_000_000, "a")
    transfer(w, 500_000, "b")
    w.a.close(w.now)
    w.run(cond=lambda: w.a.state is S.FIN_WAIT_2)
    assert w.b.state is S.CLOSE_WAIT
    assert PeerClosed() in w.events["b"]
    w.b.send(b"after half close")
    w.run(cond=lambda: bytes(w.received["a"]).endswith(b"after half close"))
    w.b.close(w.now)
    w.run(cond=lambda: w.a.state is S.TIME_WAIT)
    t_tw = w.now
    w.run(cond=lambda: w.b.state is S.CLOSED)
    assert w.events["b"][-1] == Closed()
    w.run(cond=lambda: w.a.state is S.CLOSED)
    assert w.now - t_tw == pytest.approx(w.cfg_a.time_wait, abs=1e-6)
    assert w.events["a"][-1] == Closed()
    for c in (w.a, w.b):
        st = c.stats
        assert st.retransmits == 0 and st.rto_count == 0 and st.malformed_dropped == 0


def test_sequence_numbers_wrap_around():
    top = 2**32 - 5000
    w = Wire(TcpConfig(isn=top), TcpConfig(isn=top - 100_000))
    w.connect()
    transfer(w, 600_000, "a")
    transfer(w, 300_000, "b")
    assert w.a.snd_una > 2**32 and w.b.snd_una > 2**32  # internal numbers are unwrapped
    assert all(0 <= s.seq < 2**32 and 0 <= s.ack < 2**32 for _, _, s in w.log)
    assert w.a.stats.retransmits == 0


def test_fast_retransmit_and_newreno_partial_acks():
    w = Wire(TcpConfig(sack=False, cc="reno"), TcpConfig(sack=False))
    w.connect()
    drop_data_once(w, "ab", {20, 24, 30})
    transfer(w, 400_000)
    st = w.a.stats
    assert st.fast_retransmits == 1  # one recovery episode covers all three holes
    assert st.retransmits == 3 and st.rto_count == 0
    assert st.dupacks >= 3
    assert st.ssthresh < 64 * w.a.mss  # halved from the flight at the time of loss
    assert not w.a.in_recovery


def test_sack_recovery_retransmits_only_the_holes():
    w = Wire()
    w.connect()
    holes = {20, 23, 27, 28, 35}
    drop_data_once(w, "ab", holes)
    transfer(w, 400_000)
    st = w.a.stats
    assert st.sack_recoveries == 1 and st.rto_count == 0
    assert st.retransmits == len(holes)
    rexmit_seqs = []
    seen = set()
    for _, d, s in w.log:
        if d == "ab" and s.payload:
            if s.seq in seen:
                rexmit_seqs.append(s.seq)
            seen.add(s.seq)
    base = w.a.iss + 1
    assert sorted((q - base) % 2**32 // w.a.mss for q in rexmit_seqs) == sorted(holes)
    # the receiver reported the holes with SACK blocks
    sacks = [o for _, d, s in w.log if d == "ba" for o in s.options if isinstance(o, Sack)]
    assert sacks and all(len(o.blocks) <= 3 for o in sacks)
    assert w.b.stats.ooo_segments > 0


def test_sack_first_block_is_the_most_recent():
    w = Wire()
    w.connect()
    drop_data_once(w, "ab", {10, 14})
    transfer(w, 100_000)
    acks = [s for _, d, s in w.log if d == "ba" and any(isinstance(o, Sack) for o in s.options)]
    # once two blocks exist, the first block always covers the most recently received data
    two = [next(o for o in s.options if isinstance(o, Sack)).blocks for s in acks]
    two = [b for b in two if len(b) >= 2]
    assert two
    for blocks in two:
        assert blocks[0][0] >= blocks[1][1] or blocks[0][1] <= blocks[1][0]


@pytest.mark.parametrize("sack", [True, False])
def test_loss_of_the_first_data_segment_and_of_its_retransmission(sack):
    w = Wire(TcpConfig(sack=sack), TcpConfig(sack=sack))
    w.connect()
    count = {}

    def f(_w, _d, seg, _i):
        if seg.payload:
            k = count.get(seg.seq, 0)
            count[seg.seq] = k + 1
            if seg.seq == (w.a.iss + 1) & 0xFFFFFFFF and k < 2:
                return []  # first transmission and first retransmission lost
        return [0.0]

    w.filters["ab"] = f
    transfer(w, 200_000)
    st = w.a.stats
    if sack:  # SACKs for data sent after the retransmission reveal its loss
        assert st.lost_retransmits == 1 and st.rto_count == 0
    else:  # NewReno cannot tell: the timer repairs it
        assert st.rto_count == 1
    assert count[(w.a.iss + 1) & 0xFFFFFFFF] == 3


@pytest.mark.parametrize("sack", [True, False])
def test_reordering_and_duplication(sack):
    w = Wire(TcpConfig(sack=sack), TcpConfig(sack=sack))
    w.connect()

    def f(_w, _d, seg, i):
        if i % 7 == 3:
            return [0.004]  # held back: arrives after later segments
        if i % 11 == 5:
            return [0.0, 0.002]  # duplicated
        return [0.0]

    w.filters["ab"] = f
    w.filters["ba"] = lambda _w, _d, s, i: [0.0, 0.001] if i % 5 == 0 else [0.0]
    transfer(w, 1_000_000)
    assert w.b.stats.ooo_segments > 10
    assert w.a.stats.rto_count == 0


def test_random_loss_both_directions_with_bottleneck():
    rnd = random.Random(7)
    w = Wire(delay=0.005, rate=12.5e6, queue_limit=60)  # 100 Mbit/s, 10 ms RTT
    w.connect()
    lost_data = []

    def lossy(_w, d, seg, _i):
        if rnd.random() < 0.01:
            if d == "ab" and seg.payload:
                lost_data.append(seg.seq)
            return []
        return [0.0]

    w.filters["ab"] = w.filters["ba"] = lossy
    w.keep_log = False
    transfer(w, 2_000_000)
    st = w.a.stats
    assert st.fast_retransmits > 0 and lost_data
    # every data segment lost (randomly or at the full queue) was sent again
    assert st.retransmits >= len(lost_data) + w.links["ab"].drops
    assert st.rto_count <= 1


def test_delayed_ack_timer_and_every_second_segment():
    w = Wire()
    w.connect()
    transfer(w, 100_000)  # opens the receive window fully (the SYN-ACK's is unscaled)
    w.run(until=w.now + 1.0)
    w.received["b"].clear()
    t0 = w.now
    w.a.send(b"x" * 100)
    w.run(cond=lambda: len(w.received["b"]) == 100)
    t_data = w.now
    w.run(cond=lambda: any(d == "ba" and t > t_data for t, d, _ in w.log))
    ack_t = [t for t, d, _ in w.log if d == "ba" and t > t_data][0]
    assert ack_t - t_data == pytest.approx(w.cfg_b.delayed_ack, abs=1e-6)
    assert t_data - t0 == pytest.approx(0.01, abs=1e-6)
    # a burst of full-sized segments is acked every second segment
    w.run(until=w.now + 1.0)
    w.received["b"].clear()
    n_before = len([1 for _, d, _ in w.log if d == "ba"])
    transfer(w, 20 * w.a.mss)
    w.run(until=w.now + 0.001)
    acks = len([1 for _, d, _ in w.log if d == "ba"]) - n_before
    assert acks == 10


def test_gso_sized_segments():
    w = Wire(TcpConfig(max_segment_payload=65000), TcpConfig())
    w.connect()
    transfer(w, 2_000_000)
    sizes = [len(s.payload) for _, d, s in w.log if d == "ab" and s.payload]
    assert max(sizes) <= 65000 and max(sizes) > w.a.mss
    for _, d, s in w.log:
        if d == "ab" and len(s.payload) > w.a.mss:
            assert s.gso_size == w.a.mss


def test_zero_window_persist_probes_and_window_update():
    cfg_b = TcpConfig(rcv_buf=60_000, window_scale=False)
    w = Wire(TcpConfig(), cfg_b)
    w.connect()
    w.auto_read["b"] = False
    data = os.urandom(300_000)
    w.write("a", data)
    w.run(until=w.now + 5.0)
    assert w.b.readable == 60_000
    assert w.a.snd_wnd == 0
    probes = [
        t
        for t, d, s in w.log
        if d == "ab"
        and not s.payload
        and s.flags == ACK
        and (s.seq - w.a.iss) % 2**32 == (w.a.snd_una - 1 - w.a.iss)
    ]
    assert len(probes) >= 3
    gaps = [b - a for a, b in zip(probes, probes[1:], strict=False)]
    assert all(g2 > g1 * 1.5 for g1, g2 in zip(gaps, gaps[1:], strict=False))  # backoff
    # (one more "probe" may have been the SWS override sending the window's last 632 bytes)
    assert len(probes) <= w.a.stats.persist_probes <= len(probes) + 1
    assert w.a.stats.rto_count == 0
    # zero window: answers to probes keep the window closed
    wins = [s.window for t, d, s in w.log if d == "ba" and t > probes[0]]
    assert wins and all(x == 0 for x in wins)
    # the application reads: a window update reopens the flow
    w.auto_read["b"] = True
    w.received["b"] += w.b.read()
    w.run(cond=lambda: len(w.received["b"]) == len(data))
    assert bytes(w.received["b"]) == data
    assert w.b.stats.window_updates >= 1


def test_lost_window_update_is_recovered_by_the_persist_timer():
    w = Wire(TcpConfig(), TcpConfig(rcv_buf=32 * 1024))
    w.connect()
    w.auto_read["b"] = False
    data = os.urandom(100_000)
    w.write("a", data)
    w.run(until=w.now + 0.5)
    assert w.a.snd_wnd == 0
    lost = []

    def f(_w, _d, seg, _i):
        if not lost and seg.window > 0:
            lost.append(seg)
            return []
        return [0.0]

    w.filters["ba"] = f
    w.received["b"] += w.b.read()
    w.auto_read["b"] = True
    w.run(cond=lambda: len(w.received["b"]) == len(data))
    assert lost and w.a.stats.persist_probes >= 1
    assert bytes(w.received["b"]) == data


def test_small_receive_buffer_flow_control():
    w = Wire(TcpConfig(), TcpConfig(rcv_buf=5000))
    w.connect()
    transfer(w, 200_000)
    assert max(len(s.payload) for _, d, s in w.log if d == "ab") <= 5000


def test_prr_spreads_the_reduction_without_bursts():
    w = Wire(TcpConfig(cc="reno"), TcpConfig(), rate=12.5e6)  # ACKs spaced as in reality
    w.connect()
    drop_data_once(w, "ab", {30, 34, 38, 45})
    in_recovery_sends: dict[float, int] = {}
    data = os.urandom(600_000)
    w.write("a", data)
    while len(w.received["b"]) < len(data):
        before = len(w.log)
        rec = w.a.in_recovery
        assert w.step()
        if rec:
            for t, d, s in w.log[before:]:
                if d == "ab" and s.payload:
                    in_recovery_sends[t] = in_recovery_sends.get(t, 0) + 1
    assert w.a.stats.sack_recoveries == 1 and w.a.stats.rto_count == 0
    assert in_recovery_sends and max(in_recovery_sends.values()) <= 3


def test_sack_blocks_leave_room_for_hook_options():
    w = Wire(hooks_a=FakeMptcp(), hooks_b=FakeMptcp())
    w.connect()
    transfer(w, 50_000, "b")  # B learns how much room its data segments' hook options take
    transfer(w, 50_000, "a")  # and A how long its segments are
    drop_data_once(w, "ab", {5, 9, 13})
    transfer(w, 200_000, "a")
    sacks = [o for _, d, s in w.log if d == "ba" for o in s.options if isinstance(o, Sack)]
    assert sacks and max(len(o.blocks) for o in sacks) == 1
    assert all(any(getattr(o, "kind", 0) == 30 for o in s.options) for _, d, s in w.log)


def test_limited_transmit_rescues_a_small_window():
    w = Wire(TcpConfig(cc="reno"), TcpConfig())
    w.connect()
    w.a.cc.cwnd = 3 * w.a.mss  # three segments: one loss leaves only two dupacks
    w.a.cc.ssthresh = 3 * w.a.mss
    drop_data_once(w, "ab", {0})
    transfer(w, 40 * w.a.mss)
    st = w.a.stats
    assert st.fast_retransmits == 1 and st.rto_count == 0


def test_payload_views_carry_the_bytes_sent_while_segments_are_held():
    """``payload_views``: data segments carry views into the send buffer. Held in flight here
    (no codec: the receiver gets the very views), logged, lost and retransmitted while the
    sender's buffer grows and is released, each still carries the bytes it was sent with."""
    w = Wire(TcpConfig(payload_views=True, max_segment_payload=16_000), codec=False)
    w.connect()
    seen: list[int] = []

    def drop(_w, _d, seg, _i):  # the first sending of the 3rd and the 12th data segment
        if seg.payload and seg.seq not in seen:
            seen.append(seg.seq)
            if len(seen) in (3, 12):
                return []
        return [0.0]

    w.filters["ab"] = drop
    data = transfer(w, 600_000)
    segs = [s for _, d, s in w.log if d == "ab" and s.payload]
    assert any(type(s.payload) is memoryview for s in segs)
    iss = w.a.iss
    for s in segs:
        off = (s.seq - iss - 1) & 0xFFFFFFFF
        assert bytes(s.payload) == data[off : off + len(s.payload)]
    assert w.a.stats.retransmits >= 2
