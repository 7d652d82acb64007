"""The link model: rate and queue with htb on interfaces; delay, jitter, loss, reordering,
duplication, corruption, Gilbert-Elliott loss and blackholes on routers.

No netem on this kernel. Rate limiting is plain tc (htb, and a leaf that holds queue_pkts*1514
bytes, see shape_interface) and may sit anywhere, endpoints included. Delay and jitter are added
by holding NFQUEUE verdicts in a userspace process (testbed/linkem.py) and must live on a
router's FORWARD path: delaying on the sending host collapses TCP (TCP small queues keep the
socket waiting for its own held packets).

In the router's namespace:

    nft table inet mptcplab, chain forward (priority -300):
        iifname @down drop; oifname @down drop          (blackholes: a set of interface names)
        iifname X jump pN_in; oifname X jump pN_out     (pN_*: numgen random mod 10000 lt L drop,
                                                         then numgen ... meta mark set DUP_IN/OUT)
    iptables/ip6tables mangle FORWARD -> MPTCPLAB_IN:   -i X [mark DUP_IN] -j NFQUEUE 1000+2N,
                                                        -i X -j NFQUEUE --queue-num 2N
    iptables/ip6tables filter FORWARD -> MPTCPLAB_OUT:  -o X [mark DUP_OUT] -j NFQUEUE 1000+2N+1,
                                                        -o X -j NFQUEUE --queue-num 2N+1
    iptables/ip6tables mangle/filter OUTPUT -> MPTCPLAB_CIN/COUT: the emulator's copies (marked
                                                        COPY) to the same delay queues

Why iptables for the queues: this kernel has no nft `queue` expression (CONFIG_NFT_QUEUE is off)
but has the xtables NFQUEUE target through nft_compat, which iptables-nft uses. Why two hooks: a
queue verdict of NF_ACCEPT resumes at the next hook, not at the next rule, so a packet crossing
two emulated links of this router is held once for the link it came in on (mangle, -150) and
once for the link it leaves by (filter, 0), each with its own one-way model. Runtime changes
rewrite only chain contents (atomically), so the hooks and the packets queued from them are
never torn down in the middle of a run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from testbed.host import Host, Process
from testbed.topology import LinkModel

TABLE = "mptcplab"
FAMILY = "inet"
MTU_BYTES = 1514
DEFAULT_QUEUE_PKTS = 1000  # txqueuelen: the depth the kernel would give an htb leaf
SEGMENTER_RATE_BIT = 4_000_000_000  # the leaf tbf's rate: above what shaped veths carry
GUARD_PRIORITY = -300  # blackholes and loss: before any queueing (mangle is -150, filter 0)
IPTABLES = ("iptables", "ip6tables")
# (table, chain, interface flag, queue offset): what arrives on a port is queued in mangle
# FORWARD (priority -150), what leaves by it in filter FORWARD (priority 0). Two hooks, because a
# queue verdict resumes at the next hook, not at the next rule: a packet crossing two emulated
# links of this router is held once for each.
QUEUE_CHAINS = (("mangle", "MPTCPLAB_IN", "-i", 0), ("filter", "MPTCPLAB_OUT", "-o", 1))
# Duplication (see _dup_rules): the same two hooks of OUTPUT, for the copies the emulator
# sends from the router, so that a copy meets the delay queues its original meets.
COPY_CHAINS = (("mangle", "MPTCPLAB_CIN"), ("filter", "MPTCPLAB_COUT"))
COPY_BASE = 1000  # copy queue of delay queue q: COPY_BASE + q (middleboxes use 100..)
# Mark bits (the router's own; marks do not cross namespaces):
DUP_IN = 0x01000000  # nft: duplicate this packet in its arriving direction
DUP_OUT = 0x02000000  # nft: duplicate it in its leaving direction
COPY = 0x04000000  # a copy the emulator sent
COPY_IN = 0x08000000  # ... of an arriving direction, port index in PORT_BITS
PORT_SHIFT = 16
PORT_BITS = 0xFF << PORT_SHIFT
REPO = Path(__file__).resolve().parents[1]


def _run(host: Host, cmd: list[str], stdin: str | None = None) -> str:
    """Run a command on the host and raise (HostCommandError, with its stderr) if it fails."""
    return host.run(cmd, input=stdin).stdout


def _collect(errors: list[Exception], fn, *args) -> None:
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 (collected, the caller raises the first)
        errors.append(exc)


def shape_interface(host: Host, intf: str, model: LinkModel) -> None:
    """Rate-limit one interface's egress with htb and bound its queue to queue_pkts*1514 bytes
    (in bytes, so that GSO super-packets count for what they carry). A second call changes rate
    and queue in place; rate_mbit=None removes the shaping."""
    qdiscs = _run(host, ["tc", "qdisc", "show", "dev", intf])
    shaped = "qdisc htb 1: root" in qdiscs
    if model.rate_mbit is None:
        if shaped:
            _run(host, ["tc", "qdisc", "del", "dev", intf, "root"])
        return
    rate_bit = int(model.rate_mbit * 1e6)
    # Burst: 2 ms worth of tokens at the rate (less and htb undershoots at high rates, timer
    # granularity), at least two full packets. A GSO packet bigger than that is fine: htb lets
    # the class go into debt and waits it off, so the long-run rate holds either way.
    burst = max(2 * MTU_BYTES, rate_bit // 8 // 500)
    cls = [
        "rate",
        f"{rate_bit}bit",
        "ceil",
        f"{rate_bit}bit",
        "burst",
        str(burst),
        "cburst",
        str(burst),
        "quantum",
        str(min(200000, max(MTU_BYTES, burst))),
    ]
    # The queue: a byte limit, so a GSO super-packet counts for what it carries. But a plain
    # bfifo drops a 64 KB super-packet whole when it is bigger than the free space (a 10-packet
    # queue would drop every one and TCP would crawl). So the leaf is a tbf that never limits the
    # rate (SEGMENTER_RATE_BIT) but whose bucket makes it cut any GSO packet bigger than 1/8 of
    # the queue into MTU segments on enqueue (tbf_segment); its internal bfifo then holds
    # queue_pkts*1514 bytes and drops tail segments like a real drop-tail queue. Deep queues
    # keep GSO packets whole (cheaper for everything downstream, the delay emulator included).
    # No queue_pkts means the kernel's default depth, txqueuelen = 1000 packets.
    limit = (model.queue_pkts or DEFAULT_QUEUE_PKTS) * MTU_BYTES
    seg_rate = max(SEGMENTER_RATE_BIT, 4 * rate_bit)
    # tc keeps the bucket in whole microseconds: at least 3 of them, or it rounds to nothing.
    whole_upto = max(min(max(2 * MTU_BYTES, limit // 8), 65536), seg_rate // 8 * 3 // 10**6)
    leaf = ["tbf", "rate", f"{seg_rate}bit", "burst", str(whole_upto), "limit", str(limit)]
    if not shaped:
        _run(
            host,
            ["tc", "qdisc", "replace", "dev", intf, "root", "handle", "1:", "htb", "default", "1"],
        )
        _run(
            host, ["tc", "class", "add", "dev", intf, "parent", "1:", "classid", "1:1", "htb", *cls]
        )
    else:
        _run(
            host,
            ["tc", "class", "change", "dev", intf, "parent", "1:", "classid", "1:1", "htb", *cls],
        )
    _run(host, ["tc", "qdisc", "replace", "dev", intf, "parent", "1:1", "handle", "10:", *leaf])


# What the router's emulator (and its nft rules) carry out; rate and queue are tc's.
EMULATED_FIELDS = (
    "delay_ms",
    "jitter_ms",
    "delay_distribution",
    "jitter_reorders",
    "reorder_pct",
    "reorder_gap",
    "duplicate_pct",
    "loss_model",
    "loss_pct",
    "corrupt_pct",
    "corrupt_fix_checksum",
)


TRACE_MTU = 1500  # a trace queue's queue_pkts count packets of this many IP bytes


def queue_settings(m: LinkModel, up: bool | None = None) -> dict:
    """A link direction's settings as testbed/linkem.py takes them (config and update). `up`:
    the direction (ends[0] -> ends[1]); its trace, if any, drives a drop-tail queue of
    queue_pkts * 1500 bytes (the default depth when none is given) in front of the delay."""
    trace = None if up is None else (m.trace_up if up else m.trace_down)
    extra = {}
    if trace is not None:
        extra = {
            "trace": trace.path,
            "trace_limit": (m.queue_pkts or DEFAULT_QUEUE_PKTS) * TRACE_MTU,
        }
    return {
        **extra,
        "delay_ms": m.delay_ms,
        "jitter_ms": m.jitter_ms,
        "jitter_dist": m.delay_distribution,
        "jitter_reorders": m.jitter_reorders,
        "reorder_pct": m.reorder_pct,
        "reorder_gap": m.reorder_gap,
        "loss_model": m.loss_model.as_dict() if m.loss_model else None,
        "corrupt_pct": m.corrupt_pct,
        "corrupt_fix_checksum": m.corrupt_fix_checksum,
    }


@dataclass
class EmulatedPort:
    """A router interface whose link this router emulates."""

    link: str  # link name (unique in the topology)
    intf: str  # the router's interface on that link
    model: LinkModel
    router_first: bool = False  # the router is the link's ends[0] (a trace's direction)

    def up(self, arriving: bool) -> bool:
        """Whether a direction of this port carries the link's ends[0] -> ends[1] traffic
        (trace_up): what arrives on the router's interface comes from the other end."""
        return arriving != self.router_first


class RouterQueues:
    """What RouterEmulator and testbed.middlebox.RouterMiddlebox share: on one router, a
    `python -m testbed.<WORKER>` process serving NFQUEUEs (testbed/linkem.py serve(): ready
    line, then one JSON reply per command) and the iptables-nft tables that the queue rules
    create, to be deleted again once empty. A subclass has _setup() (what start() does),
    stop() and _config() (the process's configuration, its first argument)."""

    WORKER = ""  # the testbed module the process runs: linkem, mangle

    def __init__(
        self,
        host: Host,
        *,
        log_path: Path | None = None,
        seed: int | None = None,
        ready_timeout: float = 10.0,
    ):
        self.host = host
        self.log_path = log_path
        self.seed = seed
        self.ready_timeout = ready_timeout
        self.proc: Process | None = None
        self._tables_before: set[str] = set()

    def start(self) -> None:
        """_setup(); if that fails half-way, stop() takes apart what it made."""
        try:
            self._setup()
        except BaseException:
            try:
                self.stop()
            except Exception:  # noqa: BLE001 (the first error is the one to report)
                pass
            raise

    def _log_file(self) -> Path | None:
        """Where the process's stderr goes."""
        return self.log_path

    def _log_hint(self) -> str:
        return f"see {self._log_file()}" if self.log_path else "no log_path given"

    def _start_process(self) -> None:
        log = self._log_file()
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
        self.proc = self.host.start(
            [sys.executable, "-m", f"testbed.{self.WORKER}", json.dumps(self._config())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env={"PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")},
        )
        reply = self._reply()
        if not reply.get("ready"):
            raise RuntimeError(f"{self.host.name}: {self.WORKER} said {reply} instead of ready")

    def _reply(self) -> dict:
        """The process's next JSON line, within ready_timeout (it answers every command)."""
        assert self.proc is not None
        try:
            line = self.proc.wait_for_line(r"^\{", stream="stdout", timeout=self.ready_timeout)
        except TimeoutError as e:
            raise RuntimeError(
                f"{self.host.name}: {self.WORKER}: {e} ({self._log_hint()})"
            ) from None
        return json.loads(line)

    def _command(self, cmd: dict) -> dict:
        assert self.proc is not None
        self.proc.write_stdin((json.dumps(cmd) + "\n").encode())
        reply = self._reply()
        if not reply.get("ok"):
            raise RuntimeError(f"{self.host.name}: {self.WORKER} refused {cmd}: {reply}")
        return reply

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def pids(self) -> list[int]:
        """Processes it started (for crash cleanup records)."""
        return [self.proc.pid] if self.running else []

    def _tables(self) -> set[str]:
        out = _run(self.host, ["nft", "list", "tables"])
        return {line.removeprefix("table ").strip() for line in out.splitlines() if line.strip()}

    def _remove_new_tables(self, only: str | None = None) -> None:
        """iptables-nft tables (of those named `only`, if given) that exist only because of us
        and are empty again."""
        for family_table in sorted(self._tables() - self._tables_before):
            family, table = family_table.split()
            tool = dict(zip(("ip", "ip6"), IPTABLES, strict=True)).get(family)
            if tool is None or only is not None and table != only:
                continue
            rules = _run(self.host, [tool, "-w", "-t", table, "-S"]).split("\n")
            if all(not r or r.startswith("-P ") and r.endswith(" ACCEPT") for r in rules):
                _run(self.host, ["nft", "-f", "-"], stdin=f"delete table {family_table}\n")


class RouterEmulator(RouterQueues):
    """Delay, jitter, loss and blackholes for the links attached to one router, applied on its
    FORWARD path in both directions of each link: packets arriving on `intf` (iifname) and
    packets leaving by `intf` (oifname) each get the link's one-way delay/jitter/loss once.

    Port i uses NFQUEUE 2i for what arrives on its interface and 2i+1 for what leaves by it
    (queue numbers are per network namespace, so every router can use the same ones)."""

    WORKER = "linkem"

    def __init__(self, host: Host, ports: list[EmulatedPort], **kw):
        """kw: log_path, seed, ready_timeout (RouterQueues)."""
        names = [p.link for p in ports]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate link names in {names}")
        super().__init__(host, **kw)
        self.ports = {p.link: replace(p) for p in ports}
        self.index = {p.link: i for i, p in enumerate(ports)}
        self._starts = 0  # processes started so far (each restart gets its own log)
        self._table = False
        self._queues = False
        self._down: set[str] = set()

    # -- nft (loss, blackholes) and iptables (queues) -------------------------------------

    def _loss_rules(self, link: str) -> str:
        """The per-port nft chains: random loss in the kernel, for each direction."""
        port, i = self.ports[link], self.index[link]
        lines = []
        for chain, bit in ((f"p{i}_in", DUP_IN), (f"p{i}_out", DUP_OUT)):
            lines.append(f"flush chain {FAMILY} {TABLE} {chain}")
            threshold = round(port.model.loss_pct * 100)
            if threshold > 0:
                lines.append(
                    f"add rule {FAMILY} {TABLE} {chain} "
                    f"numgen random mod 10000 lt {threshold} counter drop"
                )
            dup = round(port.model.duplicate_pct * 10000)
            if dup > 0:  # after loss, as netem; the copy is made by the emulator (_dup_rules)
                lines.append(
                    f"add rule {FAMILY} {TABLE} {chain} numgen random mod 1000000 lt {dup} "
                    f"counter meta mark set meta mark | {bit:#x}"
                )
        return "\n".join(lines) + "\n"

    def _table_script(self) -> str:
        lines = [f"table {FAMILY} {TABLE} {{", "  set down { type ifname; }"]
        for i in self.index.values():
            lines += [f"  chain p{i}_in {{ }}", f"  chain p{i}_out {{ }}"]
        lines += [
            f"  chain forward {{ type filter hook forward priority {GUARD_PRIORITY}; "
            "policy accept;",
            "    iifname @down counter drop",
            "    oifname @down counter drop",
        ]
        for link, i in self.index.items():
            intf = self.ports[link].intf
            lines += [f'    iifname "{intf}" jump p{i}_in', f'    oifname "{intf}" jump p{i}_out']
        lines += ["  }", "}"]
        return "\n".join(lines) + "\n" + "".join(self._loss_rules(link) for link in self.ports)

    def _nft(self, script: str) -> None:
        _run(self.host, ["nft", "-f", "-"], stdin=script)

    def _queue_rules(self, chain_decls: bool = False) -> None:
        """(Re)write the queue chains atomically, for IPv4 and IPv6: declaring a chain in
        iptables-restore --noflush empties it, so runtime changes never leave a gap."""
        for tool in IPTABLES:
            script = []
            for table, chain, flag, offset in QUEUE_CHAINS:
                script += [f"*{table}", f":{chain} - [0:0]"]
                if chain_decls:
                    script.append(f"-A FORWARD -j {chain}")
                for link, i in self.index.items():
                    if self.ports[link].model.delayed:
                        intf, q = self.ports[link].intf, 2 * i + offset
                        bit = DUP_OUT if offset else DUP_IN
                        script.append(
                            f"-A {chain} {flag} {intf} -m mark --mark {bit:#x}/{bit:#x} "
                            f"-j NFQUEUE --queue-num {COPY_BASE + q}"
                        )
                        script.append(f"-A {chain} {flag} {intf} -j NFQUEUE --queue-num {q}")
                script.append("COMMIT")
            script += self._copy_rules(chain_decls)
            _run(self.host, [f"{tool}-restore", "-w", "--noflush"], stdin="\n".join(script) + "\n")

    def _copy_rules(self, chain_decls: bool) -> list[str]:
        """Duplication, without netem. nft (_loss_rules) marks a share of a direction's
        packets DUP_IN/DUP_OUT; the queue rules above send a marked packet to a copy-packet
        queue instead of its delay queue; the emulator sends a copy of it from the router (a
        raw socket, marked COPY, with COPY_IN and the port for the arriving direction) and holds
        the original there for its direction's delay, in order with that direction's other
        packets (testbed/linkem.py CopyQueue). The copy leaves through OUTPUT, where these rules
        put it through the same delay queues: the arriving port's in mangle OUTPUT (like
        mangle FORWARD), the leaving port's in filter OUTPUT (like filter FORWARD)."""
        (mangle, cin), (filt, cout) = COPY_CHAINS
        script = [f"*{mangle}", f":{cin} - [0:0]"]
        if chain_decls:
            script.append(f"-A OUTPUT -j {cin}")
        mask = COPY | COPY_IN | PORT_BITS
        for link, i in self.index.items():
            if self.ports[link].model.delayed:
                mark = COPY | COPY_IN | i << PORT_SHIFT
                script.append(
                    f"-A {cin} -m mark --mark {mark:#x}/{mask:#x} -j NFQUEUE --queue-num {2 * i}"
                )
        script += ["COMMIT", f"*{filt}", f":{cout} - [0:0]"]
        if chain_decls:
            script.append(f"-A OUTPUT -j {cout}")
        for link, i in self.index.items():
            if self.ports[link].model.delayed:
                script.append(
                    f"-A {cout} -o {self.ports[link].intf} -m mark --mark {COPY:#x}/{COPY:#x} "
                    f"-j NFQUEUE --queue-num {2 * i + 1}"
                )
        script.append("COMMIT")
        return script

    def _remove_queue_rules(self) -> None:
        """Remove our chains (each on its own, so a half-made setup still comes apart), then the
        iptables-nft tables that only exist because of us and are empty again."""
        errors = []
        chains = [(t, c, "FORWARD") for t, c, _, _ in QUEUE_CHAINS]
        chains += [(t, c, "OUTPUT") for t, c in COPY_CHAINS]
        for tool in IPTABLES:
            for table, chain, hook in chains:
                script = f"*{table}\n-D {hook} -j {chain}\n-F {chain}\n-X {chain}\nCOMMIT\n"
                try:
                    _run(self.host, [f"{tool}-restore", "-w", "--noflush"], stdin=script)
                except RuntimeError as exc:
                    errors.append(exc)
        self._remove_new_tables()
        if errors and len(errors) == len(IPTABLES) * len(chains):
            raise errors[0]  # none of them was there: something else is wrong

    # -- the emulator process ----------------------------------------------------------------

    def _config(self) -> dict:
        queues, copies = {}, {}
        for link, i in self.index.items():
            m = self.ports[link].model
            for q in (2 * i, 2 * i + 1):
                arriving = q == 2 * i
                queues[str(q)] = queue_settings(m, self.ports[link].up(arriving))
                copies[str(COPY_BASE + q)] = {
                    "of": q,
                    "mark": COPY | (COPY_IN | i << PORT_SHIFT if arriving else 0),
                }
        return {"seed": self.seed, "queues": queues, "copies": copies}

    def _log_file(self) -> Path | None:
        """linkem-<router>.log for the first process, .1.log, .2.log for restarts after it."""
        if self.log_path is None or self._starts <= 1:
            return self.log_path
        return self.log_path.with_suffix(f".{self._starts - 1}{self.log_path.suffix}")

    def _start_process(self) -> None:
        self._stop_process()  # a crashed one: reap it first
        self._starts += 1
        super()._start_process()

    # -- the API -------------------------------------------------------------------------------

    def _setup(self) -> None:
        """Create the nft table and the queue rules and, if some port has delay or jitter, the
        emulator process; returns once the process has bound its queues (it printed "ready").
        The process comes first so that no packet meets a queue rule without a listener."""
        if any(p.model.delayed for p in self.ports.values()):
            self._start_process()
        self._tables_before = self._tables()
        self._table = True
        self._nft(self._table_script())
        self._queues = True
        self._queue_rules(chain_decls=True)

    def update(self, link: str, **changes) -> None:
        """Change the emulated conditions of one link at runtime (not rate and queue)."""
        allowed = set(EMULATED_FIELDS)
        if set(changes) - allowed:
            raise ValueError(f"update() takes {sorted(allowed)}, not {sorted(changes)}")
        self.set_model(link, replace(self.ports[link].model, **changes))

    def set_model(self, link: str, model: LinkModel) -> None:
        """Take the link's new model (the testbed's own object: one copy of it, not two) and
        apply what changed in delay, jitter and loss; rate and queue are shape_interface's. The
        process learns new delays before packets get queued, and queueing stops before the
        process is told delay 0, so no packet is ever queued without a listener. A link that
        gets its first delay starts the process if none runs."""
        port = self.ports[link]
        old, port.model = port.model, model
        i = self.index[link]
        if model.delayed and not self.running:
            self._start_process()
        for q in (2 * i, 2 * i + 1):
            up = port.up(q == 2 * i)
            settings = queue_settings(model, up)
            if self.running and settings != queue_settings(old, up):
                settings.pop("trace", None)  # fixed for the process's life (topology checks)
                self._command({"op": "update", "queue": q, **settings})
        if model.delayed != old.delayed:
            self._queue_rules()
        if (model.loss_pct, model.duplicate_pct) != (old.loss_pct, old.duplicate_pct):
            self._nft(self._loss_rules(link))

    def blackhole(self, link: str, on: bool) -> None:
        """Silently drop everything forwarded on that link, both directions; the interfaces stay
        up, so neither end notices anything but silence (unlike a link going down)."""
        intf = self.ports[link].intf
        if on == (intf in self._down):
            return
        verb = "add" if on else "delete"
        self._nft(f'{verb} element {FAMILY} {TABLE} down {{ "{intf}" }}\n')
        if on:
            self._down.add(intf)
        else:
            self._down.discard(intf)

    def stats(self) -> dict[str, dict]:
        """Per link and direction ("in": arriving on the router's interface, "out": leaving by
        it; each says which of the link's directions it is, "up" or "down"): packets the
        emulator held and how many it still holds, what it reordered, duplicated and lost
        (Gilbert-Elliott), a trace queue's departures and drops, and `random_lost`: what the
        nft rule of loss_pct dropped (its counter; random loss never reaches the emulator)."""
        if not self.running:
            return {}
        raw = self._command({"op": "stats"})["stats"]
        dropped = self._nft_drops() if self._table else {}
        out = {}
        for link, i in self.index.items():
            port = self.ports[link]
            d_in, d_out = raw[str(2 * i)], raw[str(2 * i + 1)]
            d_in["direction"] = "up" if port.up(True) else "down"
            d_out["direction"] = "up" if port.up(False) else "down"
            d_in["random_lost"] = dropped.get(f"p{i}_in", 0)
            d_out["random_lost"] = dropped.get(f"p{i}_out", 0)
            out[link] = {"in": d_in, "out": d_out}
        return out

    def trace_epoch(self) -> float | None:
        """The wall-clock time (time.time(), as captures stamp packets) of its traces' time 0:
        every trace of this router starts when its process has bound its queues."""
        if not self.running:
            return None
        return self._command({"op": "stats"}).get("trace_epoch")

    def _nft_drops(self) -> dict[str, int]:
        """Packets dropped by each port chain's counter rule (the loss_pct rule), per chain."""
        res = self.host.run(["nft", "-j", "list", "table", FAMILY, TABLE], check=False)
        try:
            items = json.loads(res.stdout).get("nftables", [])
        except ValueError:
            return {}
        out: dict[str, int] = {}
        for item in items:
            rule = item.get("rule")
            if not rule:
                continue
            exprs = rule.get("expr", [])
            if any("drop" in e for e in exprs):
                for e in exprs:
                    if "counter" in e:
                        chain = rule.get("chain", "")
                        out[chain] = out.get(chain, 0) + int(e["counter"].get("packets", 0))
        return out

    def stop(self, *, namespace_going: bool = False) -> None:
        """Remove the queue rules, stop the process (it releases what it holds, so nothing
        in flight is lost), delete the table. Idempotent; every step runs even if an earlier
        one failed (the first error is raised at the end). If the node is already gone (its
        namespace went with it), only the process is left to stop; so too with
        namespace_going, when the caller deletes the namespace next (a testbed's teardown):
        its rules and tables go with it (about 18 iptables and nft commands, 0.2 s a router)."""
        # once the node is gone, or is about to be, only the process is left to stop
        alive = self.host.alive and not namespace_going
        errors: list[Exception] = []
        if self._queues:
            self._queues = False
            if alive:
                _collect(errors, self._remove_queue_rules)
        _collect(errors, self._stop_process)
        if self._table:
            self._table = False
            self._down.clear()
            if alive:
                _collect(errors, self._nft, f"delete table {FAMILY} {TABLE}\n")
        if errors:
            raise errors[0]

    def _stop_process(self) -> None:
        if self.proc is not None:
            # By pid; it releases the packets it holds and exits (SIGKILL if it does not).
            self.proc.stop(signal.SIGTERM, timeout=5)
            self.proc = None
