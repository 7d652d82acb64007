"""Loss recovery and RTT estimation of the TCP core (RFC 6298 RTO, RFC 6675 SACK recovery with
PRR, RFC 8985 tail loss probes, NewReno's partial ACKs): the part of ``TcpConnection`` that
decides what to resend and when, split off the way aioquic keeps ``recovery.py`` apart from
its connection. A mixin: the methods run on the connection's own state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .options import Sack, Timestamps
from .segment import TcpSegment
from .state import (
    _SEND_DATA_STATES,
    HALF,
    MASK,
    WC_DEL_ACK,
    S,
    _unwrap,
)

if TYPE_CHECKING:
    pass


class LossRecovery:
    """Timers, the SACK scoreboard and the recovery state machine of ``TcpConnection``."""

    def _on_rto(self, now: float) -> None:
        st = self.state
        cfg = self.config
        self._retries += 1
        self._st.rto_count += 1
        self.rto = min(self.rto * 2, cfg.max_rto)
        self._st.rto = self.rto
        self._rtt_seq = None
        if st is S.SYN_SENT or st is S.SYN_RECEIVED:
            if self._retries > cfg.max_syn_retries:
                self._reset("timeout")
                return
            self._st.retransmits += 1
            self._send_syn(now, ack=st is S.SYN_RECEIVED)
            return
        if self.snd_una >= self.snd_max:
            return
        if self._retries > cfg.max_retries:
            self._reset("timeout")
            return
        # RFC 6298 5.5-5.7 and RFC 5681 (4): collapse cwnd and go back to snd_una. Only the
        # first timeout of an episode is a congestion signal: when data already resent by the
        # retransmission timer times out again (no ACK since, or an ACK that left snd_una
        # below the previous timeout's recovery point), ssthresh holds (RFC 5681 3.1) and
        # cwnd simply stays at one segment.
        # The same holds for a timeout during fast recovery: that window of data already had
        # its reduction (Linux's tcp_enter_loss: "reduce ssthresh if it has not yet been made
        # inside this window"), a second one would be 0.7 (or 0.5) of a cwnd PRR had lowered.
        if (
            self._retries == 1
            and self.snd_una >= self._rto_recover
            and not (self.in_recovery and self.snd_una < self._recover)
        ):
            self.cc.on_rto(self.snd_max - self.snd_una, now)
        elif self.cc.cwnd > self.mss:
            self.cc.cwnd = self.mss
        self.in_recovery = False
        self._dupacks = 0
        if self._retries > 1:
            # RFC 6675 5.1 keeps the scoreboard across a timeout so that go-back-N skips what
            # the receiver holds; but if the same data times out again the receiver may have
            # reneged (RFC 2018 8): forget the SACK information and resend everything.
            self._sacked.clear()
        self._rxt_log.clear()
        self._rec_rxt_high = 0
        self._force_rxt = None
        self._tlp_high_rxt = None
        self._rto_recover = self.snd_max
        self._high_rxt = self.snd_una
        self.snd_nxt = self.snd_una

    def _arm_tlp(self, now: float, restart: bool) -> None:
        """Probe timeout, RFC 8985 7.2: 2*SRTT, plus WCDelAckT (200 ms) when a single segment
        is out; a PTO past the RTO expiration is cut to it (the probe then goes first)."""
        if (
            self._tlp_sent
            or self.in_recovery
            or not self.sack_ok
            or not self.config.tlp
            or self.snd_max <= self.snd_una
            or self.srtt is None
            or not (self.state is S.ESTABLISHED or self.state in _SEND_DATA_STATES)
        ):
            self._tlp_deadline = None
            return
        if restart or self._tlp_deadline is None:
            pto = 2 * self.srtt
            if self.snd_max - self.snd_una <= self.mss:
                pto += WC_DEL_ACK
            if pto < 0.01:
                pto = 0.01
            t = now + pto
            if self._rto_deadline is not None and t > self._rto_deadline:
                t = self._rto_deadline
            self._tlp_deadline = t

    def _on_tlp(self, now: float) -> None:
        """Tail loss probe: send one segment so that a lost tail produces an ACK (and SACK or
        dupacks) well before the RTO: new data if the receiver window allows, else the last
        segment again."""
        if (
            self.in_recovery
            or self.snd_max <= self.snd_una
            or not (self.state is S.ESTABLISHED or self.state in _SEND_DATA_STATES)
        ):
            return
        self._tlp_sent = True
        self._st.tlp_probes += 1
        nxt = self.snd_nxt
        data_end = self._data_end()
        if nxt == self.snd_max and nxt < data_end and self.snd_una + self.snd_wnd > nxt:
            end = nxt + min(data_end - nxt, self.mss, self.snd_una + self.snd_wnd - nxt)
            if self._fin_queued and end == self._fin_seq:
                end += 1
            self._xmit(nxt, end, now)
        else:
            top = min(self.snd_max, data_end)
            start = max(self.snd_una, top - self.mss)
            if start >= top:
                start = self.snd_una
            self._xmit(start, self._seg_end(start, self.snd_max), now)
            self._tlp_high_rxt = self.snd_max  # a retransmission: watch for a repaired loss
        self._rto_deadline = now + self.rto

    def _holes_below(self, x: int) -> int:
        if x <= self.snd_una:
            return 0
        return (x - self.snd_una) - self._sacked.covered_below(x)

    def _lost_edge(self) -> int:
        """Holes below this point count as lost (RFC 6675 IsLost): above them more than
        (DupThresh - 1) * SMSS bytes are SACKed, or DupThresh discontiguous blocks."""
        dupthresh = self.config.dupthresh
        need = (dupthresh - 1) * self.mss
        sb = self._sacked
        starts = sb.starts
        ends = sb.ends
        acc = 0
        n = len(starts)
        for k in range(n - 1, -1, -1):
            acc += ends[k] - starts[k]
            if acc > need or n - k >= dupthresh:
                return starts[k]
        return self.snd_una

    def _una_lost(self) -> bool:
        """IsLost(HighACK + 1), RFC 6675 section 4."""
        sb = self._sacked
        dupthresh = self.config.dupthresh
        return sb.total > (dupthresh - 1) * self.mss or len(sb) >= dupthresh

    def _pipe(self, lost_edge: int) -> int:
        return (
            self.snd_max
            - self.snd_una
            - self._sacked.total
            - self._holes_below(lost_edge)
            + self._holes_below(min(self._high_rxt, self.snd_max))
        )

    def _next_hole(self, start: int, stop: int) -> tuple[int, int] | None:
        """First unSACKed range at or after start, below stop."""
        return self._sacked.next_gap(max(start, self.snd_una), stop)

    def _send_sack_recovery(self, now: float) -> None:
        """RFC 6675 6.1: while cwnd - pipe >= 1 SMSS, send what NextSeg() picks."""
        mss = self.mss
        cc = self.cc
        for _ in range(100_000):
            lost_edge = self._lost_edge()
            if cc.cwnd - self._pipe(lost_edge) < mss:
                break
            hole = self._relost()
            if hole is None:
                hole = self._next_hole(self._high_rxt, lost_edge)  # rule 1: holes deemed lost
            if hole is None:  # rule 2: new data, within the receiver's window
                nxt = self.snd_nxt
                if self._fin_queued and nxt == self._fin_seq:
                    self._xmit(nxt, nxt + 1, now)
                    continue
                n = min(self._data_end() - nxt, self.snd_una + self.snd_wnd - nxt, mss)
                if n > 0:
                    end = nxt + n
                    if self._fin_queued and end == self._fin_seq:
                        end += 1
                    self._xmit(nxt, end, now)
                    continue
                high_sacked = self._sacked.high if self._sacked else self.snd_una
                hole = self._next_hole(self._high_rxt, high_sacked)  # rule 3
                if hole is None:
                    break
            start, stop = hole
            self._xmit(start, self._seg_end(start, stop), now)

    def _relost(self) -> tuple[int, int] | None:
        """A retransmission that is still a hole although DupThresh segments sent after it have
        been SACKed was lost too (Linux's lost-retransmit detection, in the spirit of RACK);
        without this only the RTO could repair it."""
        log = self._rxt_log
        if not log or not self._sacked:
            return None
        limit = self._sacked.high - self.config.dupthresh * self.mss
        while log:
            start, end, mark = log[0]
            if end <= self.snd_una:
                log.popleft()
                continue
            if mark > limit:
                return None
            log.popleft()
            hole = self._next_hole(start, end)
            if hole is not None:
                self._st.lost_retransmits += 1
                return hole
        return None

    def _update_scoreboard(self, sack: Sack) -> None:
        una = self.snd_una
        smax = self.snd_max
        sb = self._sacked
        for lw, rw in sack.blocks:
            left = _unwrap(lw, una)
            right = _unwrap(rw, una)
            if right <= una or left >= right or right > smax:
                continue  # D-SACK, stale or bogus
            if left < una:
                left = una
            sb.add(left, right)

    def _rtt_from(self, seg: TcpSegment, now: float) -> None:
        if self.ts_ok:
            for o in seg.options:
                if type(o) is Timestamps:
                    if o.tsecr:
                        d = (self._ts_now(now) - o.tsecr) & MASK
                        if d < HALF:
                            self._rtt_sample(d / 1000.0)
                    return
        elif self._rtt_seq is not None and self.snd_una > self._rtt_seq:
            self._rtt_seq = None
            self._rtt_sample(now - self._rtt_time)

    def _rtt_sample(self, r: float) -> None:
        """RFC 6298 section 2."""
        cfg = self.config
        if self.min_rtt is None or r < self.min_rtt:
            self.min_rtt = r
        if self.srtt is None:
            self.srtt = r
            self.rttvar = r / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - r)
            self.srtt = 0.875 * self.srtt + 0.125 * r
        rto = self.srtt + max(0.001, 4 * self.rttvar)
        self.rto = min(max(rto, cfg.min_rto), cfg.max_rto)
        st = self._st
        st.srtt = self.srtt
        st.rttvar = self.rttvar
        st.rto = self.rto

    def _tlp_ack(
        self, seg: TcpSegment, ack: int, una: int, sack_opt: Sack | None, now: float
    ) -> None:
        """RFC 8985 7.4: did the probe retransmission repair a loss? A D-SACK for it, or a pure
        duplicate ACK at TLPHighRxt (original and probe both arrived), says no; an ACK beyond
        TLPHighRxt without either says the original was lost, and the loss gets the same
        congestion response as any other (a cwnd reduction, as Linux's CWR)."""
        high = self._tlp_high_rxt
        if sack_opt is not None and sack_opt.blocks:
            lw, rw = sack_opt.blocks[0]
            if _unwrap(rw, una) <= ack:  # D-SACK (RFC 2883): the probe was a duplicate
                self._tlp_high_rxt = None
                return
        if ack > high:
            self._tlp_high_rxt = None
            if not self.in_recovery and una >= self._rto_recover:
                self._st.tlp_repairs += 1
                cc = self.cc
                cc.enter_recovery(self.snd_max - una, now)
                cc.exit_recovery(self.snd_max - una, now)
        elif ack == una and not seg.payload and sack_opt is None:
            self._tlp_high_rxt = None  # the dupack of the second copy: nothing was lost

    def _enter_recovery(self, now: float) -> None:
        cc = self.cc
        st = self._st
        st.fast_retransmits += 1
        self.in_recovery = True
        self._recover = self.snd_max
        self._tlp_high_rxt = None  # this recovery is the congestion response
        cc.enter_recovery(self.snd_max - self.snd_una, now)
        # Retransmissions of the previous recovery still out above snd_una (a recovery right
        # after another one, holes it was repairing) are in flight: not resent at once (as
        # Linux keeps their SACKED_RETRANS mark); lost again, _relost finds them in the log.
        self._high_rxt = max(self.snd_una, self._rec_rxt_high)
        self._rec_rxt_high = 0
        self._force_rxt = self.snd_una
        self._rtt_seq = None
        if self.sack_ok:
            st.sack_recoveries += 1
            # PRR (RFC 6937): from here cwnd is recomputed on every ACK from what was delivered,
            # so the reduction to ssthresh is spread over one RTT instead of a pause and a burst.
            self._prr_delivered = 0
            self._prr_out = 0
            self._recover_fs = max(self.snd_max - self.snd_una, 1)
            cc.cwnd = max(self._pipe(self._lost_edge()), self.mss)
        else:
            cc.cwnd = cc.ssthresh + 3 * self.mss

    def _prr_update(self, acked: int, sacked_before: int) -> None:
        delivered = acked + self._sacked.total - sacked_before
        if delivered <= 0:
            return
        self._prr_delivered += delivered
        cc = self.cc
        pipe = self._pipe(self._lost_edge())
        ssthresh = cc.ssthresh
        if pipe > ssthresh:  # proportional part: sndcnt = ceil(delivered * ssthresh / RecoverFS)
            sndcnt = -(-self._prr_delivered * ssthresh // self._recover_fs) - self._prr_out
        else:  # slow-start reduction bound: grow back towards ssthresh, at most 1 MSS ahead
            limit = max(self._prr_delivered - self._prr_out, delivered) + self.mss
            sndcnt = min(ssthresh - pipe, limit)
        cc.cwnd = pipe + (sndcnt if sndcnt > 0 else 0)
