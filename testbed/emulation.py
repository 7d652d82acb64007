"""The link model: rate and queue with htb on interfaces; delay, jitter, loss and blackholes on
routers.

No netem on this kernel. Rate limiting is plain tc (htb, and a leaf that holds queue_pkts*1514
bytes, see shape_interface) and may sit anywhere, endpoints included. Delay and jitter are added
by holding NFQUEUE verdicts in a userspace process (testbed/linkem.py) and must live on a
router's FORWARD path: delaying on the sending host collapses TCP (TCP small queues keep the
socket waiting for its own held packets).

In the router's namespace:

    nft table inet mptcplab, chain forward (priority -300):
        iifname @down drop; oifname @down drop          (blackholes: a set of interface names)
        iifname X jump pN_in; oifname X jump pN_out     (pN_*: numgen random mod 10000 lt L drop)
    iptables/ip6tables mangle FORWARD -> MPTCPLAB_IN:   -i X -j NFQUEUE --queue-num 2N
    iptables/ip6tables filter FORWARD -> MPTCPLAB_OUT:  -o X -j NFQUEUE --queue-num 2N+1

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
import select
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

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
REPO = Path(__file__).resolve().parents[1]


def _run(node, cmd: list[str], stdin: str | None = None) -> str:
    """Run a command in the node's namespace and raise with its stderr when it fails."""
    proc = node.popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out, err = proc.communicate(stdin)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{node.name}: {' '.join(cmd)} failed ({proc.returncode}): {err.strip()}\n{stdin or ''}"
        )
    return out


def _collect(errors: list[Exception], fn, *args) -> None:
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 (collected, the caller raises the first)
        errors.append(exc)


def shape_interface(node, intf: str, model: LinkModel) -> None:
    """Rate-limit one interface's egress with htb and bound its queue to queue_pkts*1514 bytes
    (in bytes, so that GSO super-packets count for what they carry). A second call changes rate
    and queue in place; rate_mbit=None removes the shaping."""
    qdiscs = _run(node, ["tc", "qdisc", "show", "dev", intf])
    shaped = "qdisc htb 1: root" in qdiscs
    if model.rate_mbit is None:
        if shaped:
            _run(node, ["tc", "qdisc", "del", "dev", intf, "root"])
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
            node,
            ["tc", "qdisc", "replace", "dev", intf, "root", "handle", "1:", "htb", "default", "1"],
        )
        _run(
            node, ["tc", "class", "add", "dev", intf, "parent", "1:", "classid", "1:1", "htb", *cls]
        )
    else:
        _run(
            node,
            ["tc", "class", "change", "dev", intf, "parent", "1:", "classid", "1:1", "htb", *cls],
        )
    _run(node, ["tc", "qdisc", "replace", "dev", intf, "parent", "1:1", "handle", "10:", *leaf])


@dataclass
class EmulatedPort:
    """A router interface whose link this router emulates."""

    link: str  # link name (unique in the topology)
    intf: str  # the router's interface on that link
    model: LinkModel


class RouterEmulator:
    """Delay, jitter, loss and blackholes for the links attached to one router, applied on its
    FORWARD path in both directions of each link: packets arriving on `intf` (iifname) and
    packets leaving by `intf` (oifname) each get the link's one-way delay/jitter/loss once.

    Port i uses NFQUEUE 2i for what arrives on its interface and 2i+1 for what leaves by it
    (queue numbers are per network namespace, so every router can use the same ones)."""

    def __init__(
        self,
        node,
        ports: list[EmulatedPort],
        *,
        log_path: Path | None = None,
        seed: int | None = None,
        ready_timeout: float = 10.0,
    ):
        names = [p.link for p in ports]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate link names in {names}")
        self.node = node
        self.ports = {p.link: replace(p) for p in ports}
        self.index = {p.link: i for i, p in enumerate(ports)}
        self.log_path = log_path
        self.seed = seed
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None
        self._log = None
        self._table = False
        self._queues = False
        self._tables_before: set[str] = set()
        self._down: set[str] = set()
        self._out_buf = b""

    # -- nft (loss, blackholes) and iptables (queues) -------------------------------------

    def _loss_rules(self, link: str) -> str:
        """The per-port nft chains: random loss in the kernel, for each direction."""
        port, i = self.ports[link], self.index[link]
        lines = []
        for chain in (f"p{i}_in", f"p{i}_out"):
            lines.append(f"flush chain {FAMILY} {TABLE} {chain}")
            threshold = round(port.model.loss_pct * 100)
            if threshold > 0:
                lines.append(
                    f"add rule {FAMILY} {TABLE} {chain} "
                    f"numgen random mod 10000 lt {threshold} counter drop"
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
        _run(self.node, ["nft", "-f", "-"], stdin=script)

    def _queue_rules(self, chain_decls: bool = False) -> None:
        """(Re)write both queue chains atomically, for IPv4 and IPv6: declaring a chain in
        iptables-restore --noflush empties it, so runtime changes never leave a gap."""
        for tool in IPTABLES:
            script = []
            for table, chain, flag, offset in QUEUE_CHAINS:
                script += [f"*{table}", f":{chain} - [0:0]"]
                if chain_decls:
                    script.append(f"-A FORWARD -j {chain}")
                for link, i in self.index.items():
                    if self.ports[link].model.delayed:
                        script.append(
                            f"-A {chain} {flag} {self.ports[link].intf} "
                            f"-j NFQUEUE --queue-num {2 * i + offset}"
                        )
                script.append("COMMIT")
            _run(self.node, [f"{tool}-restore", "-w", "--noflush"], stdin="\n".join(script) + "\n")

    def _remove_queue_rules(self) -> None:
        """Remove our chains (each on its own, so a half-made setup still comes apart), then the
        iptables-nft tables that only exist because of us and are empty again."""
        errors = []
        for tool in IPTABLES:
            for table, chain, _, _ in QUEUE_CHAINS:
                script = f"*{table}\n-D FORWARD -j {chain}\n-F {chain}\n-X {chain}\nCOMMIT\n"
                try:
                    _run(self.node, [f"{tool}-restore", "-w", "--noflush"], stdin=script)
                except RuntimeError as exc:
                    errors.append(exc)
        for family_table in sorted(self._tables() - self._tables_before - {f"{FAMILY} {TABLE}"}):
            family, table = family_table.split()
            tool = {"ip": "iptables", "ip6": "ip6tables"}.get(family)
            if tool is None:
                continue
            rules = _run(self.node, [tool, "-w", "-t", table, "-S"]).split("\n")
            if all(not r or r.startswith("-P ") and r.endswith(" ACCEPT") for r in rules):
                self._nft(f"delete table {family_table}\n")
        if errors and len(errors) == len(IPTABLES) * len(QUEUE_CHAINS):
            raise errors[0]  # none of them was there: something else is wrong

    def _tables(self) -> set[str]:
        out = _run(self.node, ["nft", "list", "tables"])
        return {line.removeprefix("table ").strip() for line in out.splitlines() if line.strip()}

    # -- the emulator process ----------------------------------------------------------------

    def _config(self) -> dict:
        queues = {}
        for link, i in self.index.items():
            m = self.ports[link].model
            for q in (2 * i, 2 * i + 1):
                queues[str(q)] = {
                    "delay_ms": m.delay_ms,
                    "jitter_ms": m.jitter_ms,
                    "jitter_dist": m.jitter_dist,
                }
        return {"seed": self.seed, "queues": queues}

    def _readline(self, timeout: float) -> dict:
        """One JSON line from the process, within timeout (it answers every command)."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._out_buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"{self.node.name}: linkem did not answer in {timeout} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"{self.node.name}: linkem exited ({self._log_hint()})")
            self._out_buf += chunk
        line, self._out_buf = self._out_buf.split(b"\n", 1)
        return json.loads(line)

    def _log_hint(self) -> str:
        return f"see {self.log_path}" if self.log_path else "no log_path given"

    def _command(self, cmd: dict) -> dict:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()
        reply = self._readline(self.ready_timeout)
        if not reply.get("ok"):
            raise RuntimeError(f"{self.node.name}: linkem refused {cmd}: {reply}")
        return reply

    def _start_process(self) -> None:
        self._stop_process()  # a crashed one: reap it and close its pipes and log first
        self._out_buf = b""
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = self.node.popen(
            [sys.executable, "-m", "testbed.linkem", json.dumps(self._config())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log if self._log else subprocess.DEVNULL,
            cwd=str(REPO),
            env=env,
        )
        reply = self._readline(self.ready_timeout)
        if not reply.get("ready"):
            raise RuntimeError(f"{self.node.name}: linkem said {reply} instead of ready")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- the API -------------------------------------------------------------------------------

    def start(self) -> None:
        """Create the nft table and the queue rules and, if some port has delay or jitter, the
        emulator process; returns once the process has bound its queues (it printed "ready").
        The process comes first so that no packet meets a queue rule without a listener."""
        try:
            if any(p.model.delayed for p in self.ports.values()):
                self._start_process()
            self._tables_before = self._tables()
            self._table = True
            self._nft(self._table_script())
            self._queues = True
            self._queue_rules(chain_decls=True)
        except BaseException:
            try:
                self.stop()
            except Exception:  # noqa: BLE001 (the first error is the one to report)
                pass
            raise

    def update(self, link: str, **changes) -> None:
        """Change delay_ms / jitter_ms / jitter_dist / loss_pct of one link at runtime. The
        process learns new delays before packets get queued, and queueing stops before the
        process is told delay 0, so no packet is ever queued without a listener. A link that
        gets its first delay starts the process if none runs."""
        allowed = {"delay_ms", "jitter_ms", "jitter_dist", "loss_pct"}
        if set(changes) - allowed:
            raise ValueError(f"update() takes {sorted(allowed)}, not {sorted(changes)}")
        port = self.ports[link]
        was_delayed = port.model.delayed
        port.model = replace(port.model, **changes)
        i = self.index[link]
        if port.model.delayed and not self.running:
            self._start_process()
        if self.running and changes.keys() & {"delay_ms", "jitter_ms", "jitter_dist"}:
            fields = {k: v for k, v in changes.items() if k != "loss_pct"}
            for q in (2 * i, 2 * i + 1):
                self._command({"op": "update", "queue": q, **fields})
        if port.model.delayed != was_delayed:
            self._queue_rules()
        if "loss_pct" in changes:
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
        it): packets the emulator held and how many it still holds."""
        if not self.running:
            return {}
        raw = self._command({"op": "stats"})["stats"]
        return {
            link: {"in": raw[str(2 * i)], "out": raw[str(2 * i + 1)]}
            for link, i in self.index.items()
        }

    def stop(self) -> None:
        """Remove the queue rules, stop the process (it releases what it holds, so nothing
        in flight is lost), delete the table. Idempotent; every step runs even if an earlier
        one failed (the first error is raised at the end). If the node is already gone (its
        namespace went with it), only the process is left to stop."""
        alive = self._node_alive()
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
            if self.proc.poll() is None:
                self.proc.terminate()  # by pid; it flushes held packets and exits
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    pipe.close()
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _node_alive(self) -> bool:
        """False once Mininet has stopped the node (its shell is gone or going)."""
        if not hasattr(self.node, "shell"):
            return True  # not a Mininet node: assume it is there
        shell = self.node.shell  # Mininet sets it to None in Node.cleanup()
        return shell is not None and shell.poll() is None

    @property
    def pids(self) -> list[int]:
        """Processes it started (for crash cleanup records)."""
        return [self.proc.pid] if self.running else []
