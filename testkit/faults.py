"""The compound-fault harness (issue 18, "Prove it"): seeded scenarios played in the simulator,
each checked against the invariants a data level that never stalls must keep.

A ``Scenario`` comes from a seed alone (``Scenario.from_seed``): a multi-homed client with 2-4
paths to a single-homed server (random rates, delays and queues, both directions shaped), a few
fault families drawn at once (compound faults: lossy and bursty paths, reordering, duplication,
silent cuts and returns, interface down/up, REMOVE_ADDR, MP_PRIO flips, subflow resets, a slow
reader, both ends sending) and a timeline of fault events. ``run`` plays it and returns a
``Result`` naming every invariant that failed and the command that replays the seed:

- ``exception``: nothing raised out of the stack;
- ``data``: what each receiver got is a prefix of what its peer sent (no byte twice, none out of
  order, none changed; sha256 compared once complete);
- ``incomplete`` / ``close``: everything delivered both ways, and both DATA_FINs through, by
  the deadline (every fault has ended long before: each path that was cut comes back; three
  times the transfer's time over the paths left at the end, each loss-limited one at the
  Mathis et al. rate of one TCP, plus 30 s);
- ``stall``: the longest time with a usable path, data outstanding and no DATA_ACK progress
  stays within ``STALL_BOUND`` (a path counts as usable while it carries an established
  subflow and has been back long enough for a backed-off RTO to fire, ``2 * outage + 1 s``,
  a Bad state of bursty loss that lasts ``GE_OUTAGE`` counting as an outage; a backup path
  only once the others have been gone long enough to turn stale);
- ``rcv_memory`` / ``snd_memory``: bytes held stay within the buffers plus one mapping (the
  connection's reassembly counted from what is stored, each subflow's TCP queues, the send
  buffer), and the stored out-of-order bytes match their accounting;
- ``mib``: counters that none of these faults can justify stay zero (DSSNotMatching: nothing
  here rewrites a mapping; DataCsumErr, DataAckInvalid, InfiniteMapRx). A fallback to TCP is
  noted in the result, not failed: reordering can legally cause one at the handshake;
- ``seq``: a DATA_ACK never covers more than the receiver has.

The test suite runs a few hundred seeds (``tests/mptcp/test_fault_harness.py``), the benchmark
thousands (``benchmarks/fault_bench.py``, which also replays one seed with a state dump).
"""

from __future__ import annotations

import hashlib
import random
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any

from mptcp_impl.mptcp.connection import MptcpConnection
from mptcp_impl.mptcp.ctrl import Endpoint, MptcpConfig
from mptcp_impl.tcp.connection import TcpConfig
from testkit.mptcp_sim import GilbertElliott, Host, Link, Net

# Families of faults. Path conditions (for the whole run, on some paths): loss, bursty,
# reorder, dup. Timed events: cut, ifdown, rmaddr, prio, reset. The application: slowread,
# bidir.
FAMILIES = (
    "loss",
    "bursty",
    "reorder",
    "dup",
    "cut",
    "ifdown",
    "rmaddr",
    "prio",
    "reset",
    "slowread",
    "bidir",
)
INVARIANTS = (
    "exception",
    "data",
    "incomplete",
    "close",
    "stall",
    "rcv_memory",
    "snd_memory",
    "mib",
    "seq",
)
SERVER = "10.0.9.2"
PORT = 5001
TICK = 0.02  # how often the applications write and the invariants are sampled (s)
STALL_BOUND = 4.0  # s without DATA_ACK progress while a path is usable and data outstanding
STALE_GRACE = 6.0  # a backup path carries data only once the others are stale (4 RTOs)
GE_MAX_BAD = 0.5  # s: a burst of bursty loss ends by then (netem's could last for as long as
# the flow sends little: see GilbertElliott.max_bad)
GE_OUTAGE = 0.2  # s in a Gilbert-Elliott Bad state before the harness counts a path as cut
GIVE_UP = 20.0  # s of stall (a usable path, no progress): stuck for good, stop the run
MIB_ZERO = ("DSSNotMatching", "DataCsumErr", "DataAckInvalid", "InfiniteMapRx")


def client_addr(i: int) -> str:
    """The client's address on path ``i`` (path 0 carries the initial subflow)."""
    return f"10.0.{i + 1}.1"


@dataclass
class PathSpec:
    """One path, client to server: shaped both ways at ``rate_mbit`` with a drop-tail queue of
    ``queue_pkts`` full-sized packets, ``delay_ms`` one way, and its whole-run conditions."""

    rate_mbit: float
    delay_ms: float
    queue_pkts: int
    loss: float = 0.0
    ge: tuple[float, float, float, float] | None = None  # Gilbert-Elliott p, r, h, k
    reorder: float = 0.0
    reorder_ms: float = 0.0
    dup: float = 0.0

    def loss_share(self) -> float:
        """The share of packets this path loses on average: independent loss, then the
        Gilbert-Elliott chain's (its Bad state ``p / (p + r)`` of the time)."""
        lost = self.loss
        if self.ge is not None:
            p, r, h, k = self.ge
            bad = p / (p + r) if p + r else 0.0
            lost += (1 - lost) * (bad * (1 - h) + (1 - bad) * (1 - k))
        return lost

    def tcp_rate(self) -> float:
        """What one TCP can carry here (bytes/s): the rate, or the Mathis et al. bound
        ``MSS / RTT * 1.22 / sqrt(loss)`` when the path loses packets (a loss-limited path
        is slower than its rate, whatever the stack)."""
        rate = self.rate_mbit * 1e6 / 8
        lost = self.loss_share()
        if lost > 0:
            rtt = 2 * self.delay_ms / 1000
            rate = min(rate, 1420 / rtt * 1.22 / lost**0.5)
        return rate


@dataclass
class Fault:
    """A timed fault on path ``path`` at ``t`` (s): ``cut`` (silent, both ways) and ``ifdown``
    (the client's interface) last ``duration``; ``prio`` makes the client's subflows on the
    path backup for ``duration`` (MP_PRIO both times); ``rmaddr`` (the client's REMOVE_ADDR)
    and ``reset`` (an RST from ``side``'s subflow) are for good."""

    t: float
    kind: str
    path: int
    duration: float = 0.0
    side: str = "client"


@dataclass
class Scenario:
    """Everything one run needs, drawn from ``seed`` (and the families allowed)."""

    seed: int
    families: tuple[str, ...]
    paths: list[PathSpec]
    rcv_buf: int
    snd_buf: int
    up_bytes: int  # client -> server
    down_bytes: int  # server -> client (0 unless bidir)
    slow_reader: tuple[str, float] | None  # ("server" | "client", bytes/s)
    faults: list[Fault] = field(default_factory=list)
    deadline: float = 60.0  # simulated s: every fault is long over by then

    @classmethod
    def from_seed(cls, seed: int, allowed: tuple[str, ...] = FAMILIES) -> Scenario:
        """The scenario of ``seed``: 2-4 paths and 2-4 families of ``allowed`` at once."""
        rng = random.Random(seed)
        allowed = tuple(f for f in FAMILIES if f in allowed)
        if not allowed:
            raise ValueError("no fault family allowed")
        n = rng.randint(2, 4)
        fams = tuple(sorted(rng.sample(allowed, min(len(allowed), rng.randint(2, 4)))))
        paths = [
            PathSpec(
                rate_mbit=round(rng.uniform(1.0, 8.0), 2),
                delay_ms=round(rng.uniform(5.0, 60.0), 1),
                queue_pkts=rng.randint(10, 80),
            )
            for _ in range(n)
        ]

        def some() -> list[PathSpec]:
            return rng.sample(paths, rng.randint(1, n))

        if "loss" in fams:
            for p in some():
                p.loss = round(rng.uniform(0.005, 0.03), 4)
        if "bursty" in fams:
            for p in some():
                p.ge = (
                    round(rng.uniform(0.005, 0.03), 4),
                    round(rng.uniform(0.2, 0.6), 3),
                    round(rng.uniform(0.0, 0.3), 3),
                    1.0,
                )
        if "reorder" in fams:
            for p in some():
                p.reorder = round(rng.uniform(0.05, 0.25), 3)
                p.reorder_ms = round(rng.uniform(5.0, 30.0), 1)
        if "dup" in fams:
            for p in some():
                p.dup = round(rng.uniform(0.01, 0.1), 3)
        rcv_buf = rng.choice((64, 128, 256, 1024)) * 1024
        snd_buf = rng.choice((64, 128, 256, 1024)) * 1024
        up = rng.randint(200, 2000) * 1000
        down = rng.randint(200, 2000) * 1000 if "bidir" in fams else 0
        slow = None
        if "slowread" in fams:
            side = rng.choice(("server", "client")) if down else "server"
            slow = (side, float(rng.randint(50, 400) * 1000))
        # the faults happen while the transfer runs: within its time without faults
        rate = sum(p.rate_mbit for p in paths) * 1e6 / 8
        span = max(0.5, max(up, down) / rate)
        if slow is not None:
            span = max(span, (up if slow[0] == "server" else down) / slow[1])
        faults: list[Fault] = []
        gone: set[int] = set()  # paths removed or reset for good: one always stays

        def when() -> float:
            return round(rng.uniform(0.05, span), 3)

        if "cut" in fams:
            for _ in range(rng.randint(1, 2)):
                faults.append(
                    Fault(when(), "cut", rng.randrange(n), round(rng.uniform(0.3, 4.0), 3))
                )
        if "ifdown" in fams:
            for _ in range(rng.randint(1, 2)):
                faults.append(
                    Fault(when(), "ifdown", rng.randrange(n), round(rng.uniform(0.3, 3.0), 3))
                )
        if "prio" in fams:
            for _ in range(rng.randint(1, 3)):
                faults.append(
                    Fault(when(), "prio", rng.randrange(n), round(rng.uniform(0.2, 3.0), 3))
                )
        for kind in ("rmaddr", "reset"):
            if kind in fams:
                for _ in range(rng.randint(1, 2)):
                    left = [i for i in range(n) if i not in gone]
                    if len(left) < 2:
                        break
                    i = rng.choice(left)
                    gone.add(i)
                    side = rng.choice(("client", "server")) if kind == "reset" else "client"
                    faults.append(Fault(when(), kind, i, side=side))
        faults.sort(key=lambda f: (f.t, f.kind, f.path))
        end = max((f.t + f.duration for f in faults), default=0.0)
        total = max(up, down)
        slow_time = total / slow[1] if slow is not None else 0.0
        # the whole transfer over what is left at the end (paths removed or reset for good
        # are gone), each loss-limited path at what one TCP gets there (seed 1438: one path
        # left losing ~12% in bursts carries ~0.4 Mbit/s, not its 6.3)
        left = [p for i, p in enumerate(paths) if i not in gone]
        carry = total / sum(p.tcp_rate() for p in left)
        deadline = round(end + 3 * max(span, carry) + 2 * slow_time + 30.0, 3)
        return cls(seed, fams, paths, rcv_buf, snd_buf, up, down, slow, faults, deadline)


@dataclass
class Result:
    """What one run found. ``failed``: the invariants broken (empty: it passed), each
    explained in ``details``; ``replay``: the command that plays it again with a state dump."""

    seed: int
    families: tuple[str, ...]
    failed: list[str]
    details: list[str]
    replay: str
    sim_time: float
    cpu: float
    longest_stall: float
    delivered_up: int
    delivered_down: int
    peak_rcv_mem: int
    peak_snd_mem: int
    mib: dict[str, int]
    diagnosis: list[str] = field(default_factory=list)  # diagnose() per unfinished direction
    fallback: list[str] = field(default_factory=list)  # each end's reason, if it fell back
    state: dict[str, Any] | None = None  # both ends' debug_state() at the end (verbose)

    @property
    def ok(self) -> bool:
        return not self.failed

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def replay_command(seed: int, families: tuple[str, ...] = FAMILIES) -> str:
    """The one line that replays ``seed`` (with the same family filter) and dumps the state."""
    cmd = f".venv/bin/python -m benchmarks.fault_bench --replay {seed}"
    if tuple(families) != FAMILIES:
        cmd += " --families " + ",".join(families)
    return cmd


class _Run:
    """One scenario in play: the network, the applications at both ends, the fault timeline
    and the invariant bookkeeping sampled every ``TICK``."""

    def __init__(self, sc: Scenario, verbose: bool = False) -> None:
        self.sc = sc
        self.verbose = verbose
        self.log: list[str] = []
        self.net = net = Net(sc.seed, trace=False, rst_unknown=True)
        n = len(sc.paths)
        self.addrs = [client_addr(i) for i in range(n)]
        tcp_c = TcpConfig(rcv_buf=sc.rcv_buf, snd_buf=sc.snd_buf, rng=random.Random(sc.seed + 1))
        tcp_s = TcpConfig(rcv_buf=sc.rcv_buf, snd_buf=sc.snd_buf, rng=random.Random(sc.seed + 2))
        self.client = net.host("client", self.addrs, seed=sc.seed + 10, tcp_config=tcp_c)
        self.server = net.host(
            "server", [SERVER], seed=sc.seed + 20, listen_port=PORT, tcp_config=tcp_s
        )
        self.paths = []
        for a, ps in zip(self.addrs, sc.paths, strict=True):
            rate = ps.rate_mbit * 1e6
            q = ps.queue_pkts * 1514
            self.paths.append(
                net.path(
                    a,
                    SERVER,
                    delay=ps.delay_ms / 1000,
                    loss=ps.loss,
                    link=Link(rate, q),
                    rev_link=Link(rate, q),
                    ge=GilbertElliott(*ps.ge, max_bad=GE_MAX_BAD) if ps.ge else None,
                    reorder=ps.reorder,
                    reorder_delay=ps.reorder_ms / 1000,
                    dup=ps.dup,
                )
            )
        data_rng = random.Random(sc.seed ^ 0x5EED)
        self.up = data_rng.randbytes(sc.up_bytes)
        self.down = data_rng.randbytes(sc.down_bytes)
        self.up_off = self.down_off = 0
        cfg = MptcpConfig(
            endpoints=[Endpoint(a, frozenset({"subflow"}), i) for i, a in enumerate(self.addrs)][1:]
        )
        self.conn = net.connect(self.client, self.addrs[0], (SERVER, PORT), cfg)
        self.srv: MptcpConnection | None = None
        # path usability for the stall measure (as the harness knows it, not the stack)
        self.cut = [0] * n  # faults of the kind in force on each path (they may overlap)
        self.if_down = [0] * n
        self.backup = [0] * n
        # a bursty path whose Gilbert-Elliott state stays Bad (it moves per packet: sparse
        # traffic, as RTO backoff makes it, can keep it there for seconds) is a cut for as
        # long; a burst seen for GE_OUTAGE s on is counted as one
        self.ge_bad_since: list[float | None] = [None] * n
        self.ge_down = [False] * n
        self.usable_from = [0.0] * n
        self.down_since: list[float | None] = [None] * n
        self.nonbackup_gone_since: float | None = None
        # measures
        self.longest_stall = 0.0
        self.stall_start: dict[str, float | None] = {"up": None, "down": None}
        self.last_mark: dict[str, int] = {"up": -1, "down": -1}
        self.verified: dict[str, int] = {"up": 0, "down": 0}  # bytes compared with the sent
        self.peak_rcv = self.peak_snd = 0
        self.failed: dict[str, str] = {}
        self.why: list[str] = []  # diagnose() of each direction that did not finish
        self.fallback: list[str] = []  # why a connection fell back to TCP, if one did
        self.done = False
        self.finished_at: float | None = None

    # ----------------------------------------------------------------- faults
    def schedule(self) -> None:
        for f in self.sc.faults:
            self.net.at(f.t, lambda f=f: self._fault_on(f))
            if f.duration and f.kind in ("cut", "ifdown", "prio"):
                self.net.at(f.t + f.duration, lambda f=f: self._fault_off(f))
        self.net.at(TICK, self._tick)

    def _note(self, text: str) -> None:
        if self.verbose:
            self.log.append(f"{self.net.now:9.3f} {text}")

    def _down(self, i: int) -> None:
        if self.down_since[i] is None:
            self.down_since[i] = self.net.now

    def _up(self, i: int) -> None:
        if self.cut[i] or self.if_down[i] or self.ge_down[i]:
            return
        since = self.down_since[i]
        outage = self.net.now - since if since is not None else 0.0
        self.down_since[i] = None
        self.usable_from[i] = self.net.now + 2 * outage + 1.0

    def _fault_on(self, f: Fault) -> None:
        net, i, a = self.net, f.path, self.addrs[f.path]
        self._note(f"fault {f.kind} path {i} ({a}) duration {f.duration} side {f.side}")
        if f.kind == "cut":
            self.cut[i] += 1
            self._down(i)
            self.paths[i].up = False
        elif f.kind == "ifdown":
            self.if_down[i] += 1
            self._down(i)
            if self.if_down[i] == 1:
                net.interface_down(a)
        elif f.kind == "prio":
            self.backup[i] += 1
            if self.backup[i] == 1:
                net.set_backup(a, True)
        elif f.kind in ("rmaddr", "reset") and not self._another_subflow(i):
            self._note(f"{f.kind} skipped: no other established subflow would remain")
        elif f.kind == "rmaddr":
            net.remove_address(a)
        elif f.kind == "reset":
            if f.side == "client":
                net.reset_subflow(a, SERVER)
            else:
                net.reset_subflow(SERVER, a)

    def _another_subflow(self, i: int) -> bool:
        """Whether the client has an established subflow on a path other than ``i`` (cut or
        not): removing or resetting path ``i`` then leaves the connection a way on. Without
        one, the fault is skipped: Linux too resets a connection whose last subflow is reset,
        which is no stall."""
        a = self.addrs[i]
        return any(s.local[0] != a and s.usable for s in self.conn.subflows)

    def _fault_off(self, f: Fault) -> None:
        net, i, a = self.net, f.path, self.addrs[f.path]
        self._note(f"end of {f.kind} path {i} ({a})")
        if f.kind == "cut":
            self.cut[i] -= 1
            if not self.cut[i]:
                self.paths[i].up = True
                self._up(i)
        elif f.kind == "ifdown":
            self.if_down[i] -= 1
            if not self.if_down[i]:
                net.interface_up(a)
                self._up(i)
        elif f.kind == "prio":
            self.backup[i] -= 1
            if not self.backup[i]:
                net.set_backup(a, False)

    # ----------------------------------------------------------------- the applications
    def _write(self, h: Host, conn: MptcpConnection, data: bytes, off: int) -> int:
        if off < len(data) and not conn._close_requested and conn.state != "CLOSED":
            n = conn.send(memoryview(data)[off : off + 256 * 1024])
            off += n
            if off >= len(data):
                conn.close(self.net.now)
            self.net.flush(h, conn)
        elif off >= len(data) and not conn._close_requested and conn.state != "CLOSED":
            conn.close(self.net.now)
            self.net.flush(h, conn)
        return off

    def _tick(self) -> None:
        net, sc = self.net, self.sc
        if self.srv is None and self.server.accepted:
            self.srv = self.server.accepted[0]
            if sc.slow_reader is not None:
                side, rate = sc.slow_reader
                h, c = (self.server, self.srv) if side == "server" else (self.client, self.conn)
                net.slow_reader(h, c, rate)
        if self.conn._connected:
            self.up_off = self._write(self.client, self.conn, self.up, self.up_off)
        if self.srv is not None and self.srv._connected:
            self.down_off = self._write(self.server, self.srv, self.down, self.down_off)
        self._check()
        if not self.done:
            net.at(net.now + TICK, self._tick)

    # ----------------------------------------------------------------- invariants
    def _fail(self, name: str, why: str) -> None:
        if name not in self.failed:
            self.failed[name] = f"t={self.net.now:.3f}s {why}"
            self._note(f"FAILED {name}: {why}")

    def _bursts(self) -> None:
        """Long Bad states of bursty paths, sampled every tick, as outages."""
        now = self.net.now
        for i, p in enumerate(self.paths):
            if p.ge is None:
                continue
            if any(p.ge.bad.values()):
                since = self.ge_bad_since[i]
                if since is None:
                    self.ge_bad_since[i] = now
                elif not self.ge_down[i] and now - since >= GE_OUTAGE:
                    self.ge_down[i] = True
                    self._down(i)
                    self.down_since[i] = min(self.down_since[i] or since, since)
            else:
                self.ge_bad_since[i] = None
                if self.ge_down[i]:
                    self.ge_down[i] = False
                    self._up(i)

    def _usable_paths(self) -> list[int]:
        """The paths the connection can use now, as far as the scenario goes: up (not cut, the
        interface up) long enough for a backed-off RTO to have fired, and carrying an
        established subflow of the client's (a path never joined, or whose subflow was reset
        or removed and not joined again, is no way on: Linux joins only after the handshake
        and does not rejoin a reset subflow either)."""
        now = self.net.now
        joined = {s.local[0] for s in self.conn.subflows if s.established and not s.closed}
        up = [
            i
            for i, a in enumerate(self.addrs)
            if not (self.cut[i] or self.if_down[i] or self.ge_down[i])
            and now >= self.usable_from[i]
            and a in joined
        ]
        if any(not self.backup[i] for i in up):
            self.nonbackup_gone_since = None
            return [i for i in up if not self.backup[i]]
        if self.nonbackup_gone_since is None:
            self.nonbackup_gone_since = now
        return up if now - self.nonbackup_gone_since >= STALE_GRACE else []

    def _received(self, side: str) -> bytearray:
        if side == "up":
            return self.server.rx.get(id(self.srv), bytearray()) if self.srv else bytearray()
        return self.client.rx.get(id(self.conn), bytearray())

    def _check(self) -> None:
        now = self.net.now
        conn, srv = self.conn, self.srv
        pairs = [("up", conn, srv, self.up, self.up_off)]
        if srv is not None:
            pairs.append(("down", srv, conn, self.down, self.down_off))
        self._bursts()
        usable = self._usable_paths()
        complete = srv is not None
        for name, snd, rcv, data, off in pairs:
            got = self._received(name)
            seen = self.verified[name]
            if len(got) > seen:  # only what arrived since the last tick is compared
                if (
                    len(got) > len(data)
                    or memoryview(got)[seen:] != memoryview(data)[seen : len(got)]
                ):
                    self._fail("data", f"{name}: {len(got)} bytes received differ from those sent")
                self.verified[name] = len(got)
            if len(got) < len(data) or (rcv is not None and not rcv._eof):
                complete = False
            # the DATA_ACK never covers what the receiver does not have
            if (
                rcv is not None
                and rcv.fully_established
                and not (rcv.fallback or snd.fallback)
                and snd.snd_una > rcv.rcv_nxt + 1
            ):
                self._fail("seq", f"{name}: DATA_ACK {snd.snd_una} beyond rcv_nxt {rcv.rcv_nxt}")
            # stall: data outstanding, the receiver has room, a path usable, no progress
            mark = snd.snd_una + (1 if snd._fin_acked else 0)
            outstanding = (off < len(data) or snd.snd_una < snd.snd_nxt or len(snd._sbuf) > 0) or (
                snd._close_requested and not snd._fin_acked
            )
            room = rcv is None or rcv.readable < rcv.rcv_buf // 2
            if mark != self.last_mark[name] or not (outstanding and room and usable):
                self.stall_start[name] = None
            elif self.stall_start[name] is None:
                self.stall_start[name] = now - TICK
            else:
                stall = now - self.stall_start[name]
                if stall > self.longest_stall:
                    self.longest_stall = stall
                if stall > STALL_BOUND and "stall" not in self.failed:
                    self.why.append(f"{name} stall: {diagnose(snd, rcv)}")
                    self._fail(
                        "stall",
                        f"{name}: no DATA_ACK progress for {stall:.2f}s with path(s) {usable} "
                        f"usable (snd_una {snd.snd_una - snd.local_idsn - 1} of {len(data)})",
                    )
            self.last_mark[name] = mark
        for c in (conn, srv):
            if c is not None:
                self._memory(c)
        if complete and conn._fin_acked and srv is not None and srv._fin_acked:
            self.done = True
            self.finished_at = now
        elif any(st is not None and now - st > GIVE_UP for st in self.stall_start.values()) or all(
            c is None or (c.state == "CLOSED" and not c.readable) for c in (conn, srv)
        ):
            self.done = True  # stuck for good: the final checks tell what is missing

    def _memory(self, c: MptcpConnection) -> None:
        slack = c.config.max_mapping
        stored = sum(len(d) for d in c._ooo_data.values())
        if stored != c._ooo_bytes:
            self._fail(
                "rcv_memory", f"out-of-order bytes stored {stored} but counted {c._ooo_bytes}"
            )
        queued = sum(len(x) for x in c._rq)
        if queued != c.readable:
            self._fail("rcv_memory", f"in-order pieces hold {queued} bytes but count {c.readable}")
        rcv = queued + stored
        sub_rcv = 0
        snd = len(c._sbuf)
        for s in c.subflows:
            t = s.tcp
            if sum(len(x) for x in t._rq) != t._rlen:
                self._fail(
                    "rcv_memory", f"subflow {s.name}'s in-order pieces disagree with its count"
                )
            held = t._rlen + sum(len(v) for v in t._ooo_data.values())
            sub_rcv += held
            if held > t.config.rcv_buf + slack:
                self._fail("rcv_memory", f"subflow {s.name} holds {held} received bytes")
            if len(t._sbuf) > t.config.snd_buf + slack:
                self._fail("snd_memory", f"subflow {s.name} holds {len(t._sbuf)} to send")
            snd += len(t._sbuf)
        if rcv > c.rcv_buf + slack:
            self._fail(
                "rcv_memory",
                f"connection holds {rcv} received bytes (in order {queued}, "
                f"out of order {stored}) with rcv_buf {c.rcv_buf}",
            )
        if len(c._sbuf) > c.snd_buf:
            self._fail("snd_memory", f"send buffer {len(c._sbuf)} > snd_buf {c.snd_buf}")
        self.peak_rcv = max(self.peak_rcv, rcv + sub_rcv)
        self.peak_snd = max(self.peak_snd, snd)

    def _final(self) -> None:
        sc = self.sc
        for name, data in (("up", self.up), ("down", self.down)):
            got = self._received(name)
            if len(got) < len(data):
                self._fail(
                    "incomplete",
                    f"{name}: {len(got)} of {len(data)} bytes delivered by {self.net.now:.1f}s "
                    f"(deadline {sc.deadline:.1f}s; a {GIVE_UP:.0f}s stall stops a run)",
                )
            elif hashlib.sha256(got).digest() != hashlib.sha256(data).digest():
                self._fail("data", f"{name}: sha256 of the {len(got)} bytes delivered differs")
        for name, snd, rcv, data in (
            ("up", self.conn, self.srv, self.up),
            ("down", self.srv, self.conn, self.down),
        ):
            if snd is not None and (len(self._received(name)) < len(data) or not snd._fin_acked):
                self.why.append(f"{name}: {diagnose(snd, rcv)}")
        if self.finished_at is None and "incomplete" not in self.failed:
            c, s = self.conn, self.srv
            self._fail(
                "close",
                "all data delivered but the close did not finish: "
                f"client fin_acked={c._fin_acked} eof={c._eof}, server "
                f"fin_acked={s._fin_acked if s else None} eof={s._eof if s else None}",
            )
        for c in (self.conn, self.srv):
            if c is None:
                continue
            if c.fallback:
                # RFC 8684 allows it (Linux too falls back when the segment completing the
                # handshake has no MP_CAPABLE, as reordering can make it): noted, not failed
                self.fallback.append(c.fallback_reason)
            for k in MIB_ZERO:
                if c.mib[k]:
                    self._fail("mib", f"{k} = {c.mib[k]}")


def diagnose(snd: MptcpConnection, rcv: MptcpConnection | None) -> str:
    """A short label for why one direction did not finish, read off the sender's data level
    (and the receiver's): what the bench and the report group failures by. A reading of the
    state, not a proof: ``debug_state()`` in a replay has the rest."""
    if rcv is not None and any(
        _acks_dropped_both_ways(x, rcv) for x in snd.subflows if x.tcp is not None
    ):
        return (
            "both ends rewound snd_nxt after RTOs: each drops the other's pure ACKs as old "
            "(tcp core)"
        )
    if snd.fallback or (rcv is not None and rcv.fallback):
        c = snd if snd.fallback else rcv
        return f"fallback ({c.fallback_reason})"
    if snd.mib["DSSNotMatching"] or (rcv is not None and rcv.mib["DSSNotMatching"]):
        return "mapping changed on the wire (DSSNotMatching)"
    live = [x for x in snd.subflows if x.usable]
    pending = bool(snd._sbuf) or not snd._close_requested or not snd._fin_acked
    if snd.state == "CLOSED":
        return "connection closed with data outstanding" if pending else "closed"
    if not snd.subflows:
        return "no subflow left, none opened again"
    if not live:
        return "no usable subflow"
    una = snd.snd_una
    if snd._sbuf and snd.snd_edge <= una and snd.snd_nxt == una:
        return "data-level window closed, no probe (receiver has room)"
    if snd.snd_nxt > una:
        holders = [ch for ch in snd._chunks if ch[0] <= una < ch[0] + ch[1]]
        alive = [ch for ch in holders if ch[2] in snd.subflows and not ch[2].closed]
        queued = any(d <= una < d + n for d, n, _b in snd._reinject)
        if not alive and not queued:
            return "DATA_ACK hole held by no live subflow (reinjected data not reinjected again)"
        if queued:
            return "reinjection queued but not sent"
        if all(ch[2].stale for ch in alive):
            return "DATA_ACK hole held by stale subflows only"
        idle = [
            ch for ch in alive if ch[2].tcp.snd_una == ch[2].tcp.snd_max and not ch[2].tcp.unsent
        ]
        if len(idle) == len(alive):
            # the chunk is booked on a subflow whose TCP holds nothing: it never took it
            return "DATA_ACK hole booked on a subflow that never sent it (push truncated)"
        return "DATA_ACK hole on a live subflow, not repaired"
    if not snd._sbuf and snd._close_requested and not snd._fin_acked:
        return "DATA_FIN not acknowledged"
    return "other"


def _before(a: int, b: int) -> bool:
    return a != b and ((b - a) & 0xFFFFFFFF) < (1 << 31)


def _acks_dropped_both_ways(sub: Any, peer_conn: MptcpConnection) -> bool:
    """Whether ``sub`` and its peer subflow each have a sequence number below what the other
    already received: after go-back-N on both ends, their pure ACKs (sent at snd_nxt) are
    old segments to the other, dropped with the ACK they carry (RFC 9293 3.10.7.4)."""
    for p in peer_conn.subflows:
        if p.local == sub.remote and p.remote == sub.local and p.tcp is not None:
            a, b = sub.tcp, p.tcp
            return _before(a.snd_nxt, b.rcv_nxt) and _before(b.snd_nxt, a.rcv_nxt)
    return False


def _mib_summary(r: _Run) -> dict[str, int]:
    out: dict[str, int] = {}
    for side, c in (("c", r.conn), ("s", r.srv)):
        if c is None:
            continue
        for k, v in c.mib.nonzero().items():
            out[f"{side}.{k}"] = v
    return out


def run(
    sc: Scenario,
    verbose: bool = False,
    families: tuple[str, ...] = FAMILIES,
    setup: Any = None,
    tamper: Any = None,
) -> Result:
    """Play ``sc`` and check every invariant. ``verbose`` keeps a timeline and both ends'
    ``debug_state()``. The harness's own tests break things behind its back to show that it
    can fail: ``setup(run)`` is called before the play (to add a fault the scenario does not
    declare), ``tamper(run)`` before the final checks (to change a delivered byte)."""
    t0 = time.process_time()
    r = _Run(sc, verbose)
    try:
        if setup is not None:
            setup(r)
        r.schedule()
        r.net.run(sc.deadline, stop=lambda: r.done or "exception" in r.failed)
        if tamper is not None:
            tamper(r)
        r._final()
    except Exception as e:  # noqa: BLE001 - any exception out of the stack is the finding
        tb = traceback.extract_tb(e.__traceback__)
        where = "; ".join(f"{fr.filename.rsplit('/', 2)[-1]}:{fr.lineno}" for fr in tb[-3:])
        r._fail("exception", f"{type(e).__name__}: {e} at {where}")
        if verbose:
            r.log.append(traceback.format_exc())
    state = None
    if verbose:
        state = {
            "client": r.conn.debug_state(),
            "server": r.srv.debug_state() if r.srv is not None else None,
            "timeline": r.log,
            "paths_lost": [p.lost for p in r.paths],
        }
    names = [i for i in INVARIANTS if i in r.failed]
    return Result(
        seed=sc.seed,
        families=sc.families,
        failed=names,
        details=[f"{k}: {r.failed[k]}" for k in names],
        replay=replay_command(sc.seed, families),
        sim_time=round(r.net.now, 3),
        cpu=round(time.process_time() - t0, 3),
        longest_stall=round(r.longest_stall, 3),
        delivered_up=len(r._received("up")),
        delivered_down=len(r._received("down")),
        peak_rcv_mem=r.peak_rcv,
        peak_snd_mem=r.peak_snd,
        mib=_mib_summary(r),
        diagnosis=r.why,
        fallback=r.fallback,
        state=state,
    )


def run_seed(seed: int, families: tuple[str, ...] = FAMILIES, verbose: bool = False) -> Result:
    """The scenario of ``seed`` (drawn from ``families``), played and checked."""
    return run(Scenario.from_seed(seed, families), verbose=verbose, families=families)


__all__ = [
    "FAMILIES",
    "INVARIANTS",
    "STALL_BOUND",
    "Fault",
    "PathSpec",
    "Result",
    "Scenario",
    "client_addr",
    "diagnose",
    "replay_command",
    "run",
    "run_seed",
]
