"""Seeded fuzzing of LIVE connections: the MPTCP options of segments in flight between the two
sim hosts are mutated (bit flips, other subtypes, bad lengths, random bodies, plausible but
wrong DSS/ADD_ADDR/MP_JOIN/MP_CAPABLE/FASTCLOSE values, duplicates, stripped options). No
exception may escape either stack, and the receiver's bytes are always a prefix of what was
sent (all of it whenever the transfer completes). One exception, by necessity: a run in which a
well-formed mapping the sender never sent rode on a data segment is checked for robustness only,
since without DSS checksums no receiver (Linux neither) can tell a forged DSN from a real one."""

from __future__ import annotations

import ipaddress
import random
import time

from mptcp_impl.mptcp.options import (
    AddAddr,
    Dss,
    FastClose,
    MpCapable,
    MpFail,
    MpJoinAck,
    MpJoinSyn,
    MpJoinSynAck,
    MpPrio,
    MptcpOptionError,
    RemoveAddr,
    TcpRst,
    decode,
    to_tcp_option,
)
from mptcp_impl.tcp.options import UnknownOption, encoded_length
from testkit.mptcp_sim import C1, S, client_cfg, two_path_net

TARGET = 100_000
BUDGET_S = 40.0
M64 = (1 << 64) - 1
M32 = 0xFFFFFFFF


class Mutator:
    def __init__(self, rng: random.Random, rate: float) -> None:
        self.rng = rng
        self.rate = rate
        self.count = 0
        self.forged = False  # a plausible mapping was forged on a data segment

    # ------------------------------------------------------------ one option body
    def _near(self, v: int, bits: int) -> int:
        r = self.rng
        d = r.choice((1, 2, 100, 1460, 1 << 16, 1 << 31, 1 << 32, r.getrandbits(bits)))
        return (v + d if r.random() < 0.5 else v - d) & ((1 << bits) - 1)

    def _plausible(self, body: bytes) -> bytes | None:
        """A well-formed option with a wrong value, from the original when it decodes."""
        r = self.rng
        try:
            o = decode(body)
        except MptcpOptionError:
            o = None
        k = r.getrandbits
        if isinstance(o, Dss) and r.random() < 0.7:
            ack, dsn = o.data_ack, o.dsn
            f = r.randrange(7)
            kw = dict(
                data_ack=ack,
                data_ack64=o.data_ack64,
                dsn=dsn,
                dsn64=o.dsn64,
                subflow_seq=o.subflow_seq,
                data_len=o.data_len,
                data_fin=o.data_fin,
            )
            if f == 0 and ack is not None:
                kw["data_ack"] = self._near(ack, 64 if o.data_ack64 else 32)
            elif f == 1 and dsn is not None:
                kw["dsn"] = self._near(dsn, 64 if o.dsn64 else 32)
            elif f == 2 and dsn is not None:
                kw["subflow_seq"] = self._near(o.subflow_seq, 32)
            elif f == 3 and dsn is not None:
                kw["data_len"] = r.choice((0, 1, o.data_len + 1, max(0, o.data_len - 1), k(16)))
            elif f == 4:
                kw["data_fin"] = not o.data_fin
                if dsn is None:
                    kw.update(dsn=k(64), dsn64=True, subflow_seq=0, data_len=1)
            elif f == 5:
                if ack is not None:
                    kw["data_ack"], kw["data_ack64"] = ack & M32, False
                if dsn is not None:
                    kw["dsn"], kw["dsn64"] = dsn & M32, False
            else:
                if dsn is not None:
                    return bytes(to_tcp_option(Dss(data_ack=ack, data_ack64=o.data_ack64)).data)
            try:
                return bytes(to_tcp_option(Dss(**kw)).data)
            except ValueError:
                return None
        v4 = ipaddress.IPv4Address(r.choice((C1, S, "10.0.2.1", "127.0.0.1")))
        choices = [
            lambda: MpCapable(sender_key=k(64), receiver_key=k(64)),
            lambda: MpCapable(sender_key=k(64), receiver_key=k(64), data_len=k(16)),
            lambda: MpCapable(sender_key=k(64)),
            lambda: MpCapable(),
            lambda: MpJoinSyn(k(32), k(32), k(8)),
            lambda: MpJoinSynAck(k(64), k(32), k(8)),
            lambda: MpJoinAck(r.randbytes(20)),
            lambda: AddAddr(k(8), v4, r.choice((None, 5001, k(16))), hmac=k(64)),
            lambda: AddAddr(k(8), v4, echo=True),
            lambda: RemoveAddr(tuple(r.randbytes(r.randint(1, 4)))),
            lambda: MpPrio(bool(k(1))),
            lambda: MpFail(k(64)),
            lambda: FastClose(k(64)),
            lambda: TcpRst(k(8)),
            lambda: Dss(data_ack=k(64), data_ack64=True),
            lambda: Dss(dsn=k(64), dsn64=True, subflow_seq=k(32), data_len=k(16)),
            lambda: Dss(dsn=k(32), subflow_seq=k(32), data_len=0),
        ]
        return bytes(to_tcp_option(r.choice(choices)()).data)

    def mutate_body(self, body: bytes) -> bytes | None:
        """A mutated body; None = drop the option."""
        r = self.rng
        c = r.randrange(9)
        b = bytearray(body)
        if c == 0 and b:
            for _ in range(r.randint(1, 3)):
                i = r.randrange(len(b))
                b[i] ^= 1 << r.randrange(8)
            return bytes(b)
        if c == 1 and b:
            b[0] = (r.randrange(16) << 4) | (b[0] & 0x0F)
            return bytes(b)
        if c == 2 and b:
            b[0] = (b[0] & 0xF0) | r.randrange(16)  # version / flags nibble
            return bytes(b)
        if c == 3:
            return bytes(b[: r.randrange(len(b) + 1)])
        if c == 4:
            return bytes(b) + r.randbytes(r.randint(1, 6))
        if c == 5:
            return r.randbytes(r.randrange(39))
        if c == 6:
            return None
        return self._plausible(body)

    # ------------------------------------------------------------ a segment on the wire
    def __call__(self, seg) -> None:
        r = self.rng
        if r.random() >= self.rate:
            return
        opts = list(seg.options)
        new = list(opts)
        done = 0
        for _ in range(r.randint(1, 5)):  # one to five blocks mutated or added
            idx = [i for i, o in enumerate(new) if isinstance(o, UnknownOption) and o.kind == 30]
            trial = list(new)
            if idx and r.random() < 0.75:
                i = r.choice(idx)
                body = self.mutate_body(trial[i].data)
                if body is None:
                    trial.pop(i)
                else:
                    trial[i] = UnknownOption(30, body[:38])
            else:  # one more option: a duplicate or a plausible stranger
                if idx and r.random() < 0.3:
                    extra = trial[r.choice(idx)].data
                else:
                    extra = self._plausible(b"") or b""
                trial.append(UnknownOption(30, extra[:38]))
            if encoded_length(trial) <= 40:
                new = trial
                done += 1
        if not done:
            return
        if seg.payload and _mappings(new) - _mappings(opts):
            # A well-formed mapping that the sender did not send: without DSS checksums no
            # receiver can tell it from a genuine one (Linux neither), so where the bytes of
            # this segment land is up to the forger. Such a run only checks robustness.
            self.forged = True
        seg.options = new
        self.count += done


def _mappings(opts) -> set:
    out = set()
    for o in opts:
        if isinstance(o, UnknownOption) and o.kind == 30:
            try:
                d = decode(o.data)
            except MptcpOptionError:
                continue
            if isinstance(d, Dss) and d.dsn is not None and d.data_len:
                out.add((d.dsn, d.dsn64, d.subflow_seq, d.data_len))
            elif isinstance(d, MpCapable) and d.data_len:
                out.add(("mpc", d.sender_key, d.receiver_key, d.data_len))
    return out


def _run_one(seed: int, mut: Mutator, size: int) -> tuple[bool, int]:
    net, client, server, p1, p2 = two_path_net(seed=seed)
    p1.mutate = p2.mutate = mut
    conn = net.connect(client, C1, (S, 5001), client_cfg())
    pattern = bytes(range(256)) * (size // 256 + 2)
    data = pattern[seed % 256 : seed % 256 + size]
    back = pattern[(seed * 7) % 256 : (seed * 7) % 256 + size // 4][::-1]
    net.run(2.0, stop=lambda: conn._connected or conn.state == "CLOSED")
    try:
        conn.send(data)
        conn.close(net.now)
    except ConnectionError:
        return False, mut.count  # the handshake was refused or reset: nothing to transfer
    net.flush(client, conn)
    srv = None

    def done() -> bool:
        return (
            bool(server.accepted)
            and len(server.rx[id(server.accepted[0])]) >= len(data)
            and len(client.rx[id(conn)]) >= len(back)
        )

    sent_back = False
    t_end = net.now + 15.0
    while net.now < t_end:
        net.run(min(t_end, net.now + 0.5), stop=done)
        if server.accepted and not sent_back:
            srv = server.accepted[0]
            if srv.state not in ("CLOSED",):
                try:
                    srv.send(back)
                    srv.close(net.now)
                except ConnectionError:
                    pass
                net.flush(server, srv)
            sent_back = True
        if done():
            break
        if not net._q and (conn.get_timer() is None or conn.subflows == []):
            break  # nothing in flight, nothing the sim can wake up for
    for h, c, want in ((server, srv, data), (client, conn, back)):
        if c is None or mut.forged:
            continue
        got = bytes(h.rx[id(c)])
        assert want.startswith(got), f"seed {seed}: corrupted bytes ({len(got)} received)"
    complete = srv is not None and bytes(server.rx[id(srv)]) == data
    return complete and not mut.forged, mut.count


def run_seed(seed: int) -> tuple[bool, int]:
    """One connection, reproducible from its seed alone."""
    rng = random.Random(seed)
    mut = Mutator(rng, rate=rng.choice((0.03, 0.2, 0.5, 1.0)))
    return _run_one(seed, mut, size=rng.choice((50_000, 200_000, 500_000)))


def test_fuzz_live_option_mutations():
    t0 = time.perf_counter()
    seed = 0
    completed = 0
    total = 0
    while total < TARGET:
        ok, n = run_seed(seed)
        completed += ok
        total += n
        seed += 1
        assert time.perf_counter() - t0 < BUDGET_S * 2, f"too slow: {total} in {seed} runs"
    elapsed = time.perf_counter() - t0
    print(
        f"{total} mutated option blocks, {seed} connections, {completed} completed, {elapsed:.1f} s"
    )
    assert completed >= seed // 10, "almost nothing completed: the fuzz tests nothing"
