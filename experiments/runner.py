"""Run an experiment file: every run on a fresh testbed, every result traceable to what ran.

Layout of one campaign (never overwritten: the run id is a timestamp plus a random suffix and
the directory is created with exist_ok=False; only --resume writes into an existing one, the
same campaign's)::

    results/<experiment>/<run-id>/
      metadata.json        file as run, overrides, resolved runs, seed, git, kernel, versions,
                           host, start/end, complete true/false (false until the last run is in)
      experiment.toml      the experiment file exactly as read
      journal.jsonl        append-only: each run queued, started where, finished, failed
                           and why (experiments/journal.py; what --resume reads)
      logs/runner.log      everything; logs/<stack>/<rep>/ the traffic tools' output and
                           machine.json (kernel, CPU, load before/after, MPTCP and TCP sysctls),
                           logs/testbed/<stack>/<rep>/ the testbed's own logs
      pcap/<stack>/<rep>/  the testbed's captures (<host>-ethN.pcap)
      traffic/<stack>/<rep>/<flow>-{client,server}.json   the traffic tool's reports
      events.json          per run: the testbed's event log (planned and actual times, seconds
                           from the run's t0_wall; format and helpers in analysis/events.py)
      metrics.json         per run and summarised over repetitions (mean, spread)

The runner holds a testbed.network.Network made by the factory it is given (the Mininet Testbed
unless told otherwise) and reaches hosts only through its Host interface (run, start/stop,
put/get) and their Processes, so the same code can drive real machines over SSH.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from analysis.events import run_entry, write_events
from analysis.middlebox import outcome
from analysis.report import write_report
from experiments import apps, knobs, provenance
from experiments.campaign_report import write_campaign_report
from experiments.config import Experiment, FlowSpec, RunSpec, resolve_runs
from experiments.journal import Journal, Resumed, campaign_line, open_for_resume
from experiments.metrics import (
    APP_SCALARS,
    RunMetrics,
    _rate_between,
    app_run_metrics,
    kernel_app_subflows,
    run_metrics,
    summarize,
)
from experiments.stacks import STACKS, Command, Stack
from testbed.events import LinkEvent
from testbed.host import Host, Process
from testbed.net import Testbed
from testbed.network import Network, NetworkFactory
from testbed.signals import Interrupted, SignalGuard
from testbed.topology import load_topology

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "results"
TOOL = Path(__file__).resolve().parent / "traffic.py"
# How long a server may take to end after its client has: 30 s when the client exited by itself
# (the server still drains and reports), but only 3 s once a client was stopped: its FIN or RST
# reaches the server within a round trip and a retransmission or two when the path works (its
# report then follows at once), and never when the path is cut, where waiting longer only
# delays the run (it was 10 s, most of a stuck run's time).
SERVER_AFTER_CLIENT_S = 30.0
SERVER_AFTER_STOPPED_CLIENT_S = 3.0
# An app server (nginx, iperf3 -s -1) need not end by itself: once its client has exited it
# gets its flow's traffic.server_grace_s (default 3 s), then is stopped with SIGTERM, which is
# no error.
log = logging.getLogger("experiments.runner")


@dataclass
class FlowResult:
    flow: str
    stack: str
    client: dict[str, Any]
    server: dict[str, Any]


@dataclass
class CampaignResult:
    run_dir: Path
    complete: bool
    runs: list[RunMetrics] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)
    report: Path | None = None


# ---------------------------------------------------------------------------------------------
# Progress


class Progress:
    """One line per run on stderr: run k of n, what it is, elapsed and ETA from runs so far."""

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool = True):
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.t0 = time.monotonic()
        self.done = 0

    @staticmethod
    def _fmt(sec: float) -> str:
        sec = int(round(sec))
        return f"{sec // 60}:{sec % 60:02d}"

    def _bar(self) -> str:
        width = 20
        filled = int(width * self.done / max(self.total, 1))
        return "[" + "#" * filled + "." * (width - filled) + "]"

    def start(self, spec: RunSpec, reps: int, expected_s: float) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.t0
        if self.done:
            eta = elapsed / self.done * (self.total - self.done)
        else:
            eta = expected_s * self.total
        point = " ".join(
            f"{k}={v}" for k, v in spec.point_values.items() if not k.startswith("stack.")
        )
        print(
            f"{self._bar()} run {spec.index + 1}/{self.total}  {spec.variant or spec.stack}  "
            f"rep {spec.rep}/{reps}  {point}  elapsed {self._fmt(elapsed)}  "
            f"ETA {self._fmt(eta)}",
            file=self.stream,
            flush=True,
        )

    def note(self, line: str) -> None:
        if self.enabled:
            print(f"{'':22}.. {line}", file=self.stream, flush=True)

    def finish(self, line: str) -> None:
        self.done += 1
        if self.enabled:
            print(f"{'':22}-> {line}", file=self.stream, flush=True)


# ---------------------------------------------------------------------------------------------
# Files


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_run_dir(results_root: Path, experiment: str) -> tuple[str, Path]:
    """A fresh directory for this campaign; an existing one is never reused or overwritten."""
    base = Path(results_root) / experiment
    base.mkdir(parents=True, exist_ok=True)
    for _ in range(20):
        run_id = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"
        path = base / run_id
        try:
            path.mkdir(exist_ok=False)
        except FileExistsError:
            continue
        return run_id, path
    raise FileExistsError(f"could not create a new run directory under {base}")


# ---------------------------------------------------------------------------------------------
# One run


def _path_rates(tb: Network, flow: FlowSpec) -> dict[str, float]:
    """Nominal capacity of each path between the flow's hosts (for aggregation metrics), in
    the direction the flow's data goes (they differ on a trace-driven link)."""
    out = {}
    for p in tb.paths:
        if {p.src, p.dst} != {flow.client, flow.server}:
            continue
        # download: server -> client; upload: client -> server
        data_from = flow.server if flow.direction == "download" else flow.client
        rate = p.want_mbit
        if data_from == p.dst:
            rate = getattr(p, "want_mbit_back", None) or p.want_mbit
        if rate:
            out[p.name] = float(rate)
    return out


def _node_pid(tb: Network, node: str) -> int | None:
    try:
        return getattr(tb.host(node), "pid", None)
    except KeyError:  # a node no host plays (the network of real machines)
        return None


def _python(tb: Network, host: str) -> str:
    """The python a host runs our programs with (a network may say; else this one's)."""
    return tb.python(host) if hasattr(tb, "python") else sys.executable


def _server_addr(tb: Network, host: str) -> str:
    return tb.addr(host, tb.topo.links_of(host)[0].name)


def pm_timeline(by_host: dict[str, list[dict[str, Any]]], t0_wall: float) -> list[dict[str, Any]]:
    """Both hosts' path-manager events (kernel: testbed/pmmonitor.py; ours: the traffic
    tool's --pm-events) on one timeline: seconds from the run's start, host, event."""
    out = []
    for h, evs in by_host.items():
        for e in evs:
            if not isinstance(e.get("time"), (int, float)):
                continue
            out.append(
                {
                    "t": round(e["time"] - t0_wall, 4),
                    "host": h,
                    **{k: v for k, v in e.items() if k != "time"},
                }
            )
    return sorted(out, key=lambda e: e["t"])


def _fetch_jsonl(host: Host, path: Path) -> list[dict[str, Any]]:
    """A JSON-lines file on ``host`` (none there: nothing), each line an object."""
    with tempfile.TemporaryDirectory() as d:
        local = Path(d) / "f.jsonl"
        try:
            host.get(path, local)
        except OSError:
            return []
        return [json.loads(x) for x in local.read_text().splitlines() if x.strip()]


def _start_pm_monitors(
    tb: Network,
    hosts: list[str],
    remote: Path,
    procs: list[Process],
    daemons: dict[str, list[str]] | None = None,
) -> dict[str, Path]:
    """Kernel MPTCP's path-manager events on each host (testbed/pmmonitor.py: ``ip mptcp
    monitor``, stamped), from before the traffic; on this machine's namespaces only (a real
    machine's project copy may not have it). A host in `daemons` runs the userspace PM daemon
    (testbed/uspm.py, with those arguments) instead: it writes the same events and its own
    commands. Returns where each host writes them."""
    if hasattr(tb, "project_dir"):
        return {}
    out = {}
    for h in dict.fromkeys(hosts):
        path = remote / h / "pm-kernel.jsonl"
        host = tb.host(h)
        host.run(["mkdir", "-p", str(path.parent)], check=False)
        prog = ["testbed.uspm", *daemons[h]] if h in (daemons or {}) else ["testbed.pmmonitor"]
        p = host.start(
            [_python(tb, h), "-m", *prog, str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={"PYTHONPATH": str(REPO)},
        )
        procs.append(p)
        p.wait_for_line("^monitoring", stream="stdout", timeout=15)
        out[h] = path
    return out


def _peer_command(
    tb: Network,
    spec: RunSpec,
    flow: FlowSpec,
    stack: Stack,
    role: str,
    remote: Path,
    seed: int = 0,
) -> tuple[Host, Command]:
    """Copy the traffic tool to the flow's ``role`` ("client" or "server") host and build the
    stack's command for that end (its report file next to the tool), logged."""
    name = flow.client if role == "client" else flow.server
    host = tb.host(name)
    if flow.kind == "app":
        return host, _app_command(tb, spec, flow, stack, role, remote, seed)
    tool = remote / name / "traffic.py"
    host.put(TOOL, tool)
    out = remote / name / f"{flow.name}-{role}.json"
    addr = _server_addr(tb, flow.server)
    if role == "client":
        cmd = stack.client(_python(tb, name), tool, f"{addr}:{flow.port}", flow, seed, out)
    else:
        cmd = stack.server(_python(tb, name), tool, addr, flow.port, out)
    log.info("%s: start %s on %s: %s", spec.label, role, name, " ".join(cmd.argv))
    return host, cmd


def _app_command(
    tb: Network,
    spec: RunSpec,
    flow: FlowSpec,
    stack: Stack,
    role: str,
    remote: Path,
    seed: int,
) -> Command:
    """A real program's command for one end (experiments/apps.py): placeholders filled in for
    this host, then wrapped by the stack (mptcpize, our proxy). Its stdout and stderr go to the
    run's logs; it writes no report of ours (out_file None)."""
    name = flow.client if role == "client" else flow.server
    host = tb.host(name)
    workdir = remote / name / f"{flow.name}-{role}"
    host.run(["mkdir", "-p", str(workdir)])
    listen_addr, listen_port = stack.app_listen(flow.port)
    values = apps.AppValues(
        server_addr=_server_addr(tb, flow.server),
        client_addr=_server_addr(tb, flow.client),
        port=listen_port if role == "server" else flow.port,
        listen_addr=listen_addr,
        workdir=str(workdir),
        python=_python(tb, name),
        repo=tb.project_dir(name) if hasattr(tb, "project_dir") else str(REPO),
        seed=seed,
        duration_s=flow.duration_s,
    )
    argv = apps.expand(flow.client_argv if role == "client" else flow.server_argv, values)
    wrapped = stack.app_command(role, argv, python=values.python, port=flow.port)
    log.info("%s: start app %s on %s: %s", spec.label, role, name, " ".join(wrapped))
    return Command(wrapped, None, workdir=workdir)


def _background_results(
    results: list[FlowResult], specs: list[FlowSpec], warmup_s: float = 0.0
) -> list[dict[str, Any]]:
    """Per background flow: its receiver's goodput over the whole transfer and after the
    warm-up (`metrics.warmup_s`, as the main flow's steady goodput: a bottleneck share over the
    window where both flows are past slow start), and whether both directions arrived intact
    (a real program's: what its parser read, and its own word: exit 0, a complete result)."""
    out = []
    for fr, spec in zip(results, specs, strict=True):
        if spec.kind == "app":
            parsed = fr.client.get("parsed") or {}
            out.append(
                {
                    "flow": fr.flow,
                    "stack": fr.stack,
                    "goodput_mbit": parsed.get("goodput_mbit"),
                    "intact": fr.client.get("exit_code") == 0
                    and not parsed.get("error")
                    and bool(parsed.get("complete", True)),
                    "app": {k: v for k, v in parsed.items() if k in APP_SCALARS},
                }
            )
            continue
        rx = fr.client if spec.direction == "download" else fr.server
        samples = rx.get("samples") or []
        end = samples[-1][0] if samples else 0.0
        out.append(
            {
                "flow": fr.flow,
                "stack": fr.stack,
                "goodput_mbit": rx.get("goodput_mbit"),
                "goodput_steady_mbit": (
                    round(_rate_between(samples, warmup_s, end), 3) if end > warmup_s else None
                ),
                "intact": fr.client.get("received_sha256") == fr.server.get("sent_sha256")
                and fr.server.get("received_sha256") == fr.client.get("sent_sha256"),
            }
        )
    return out


@dataclass
class _Peer:
    """One end of a flow as started: where it runs, its process and its command."""

    flow: FlowSpec
    stack: Stack
    host: Host
    proc: Process
    cmd: Command
    role: str  # "client" or "server"


def _mptcp_counters(tb: Network, hosts: list[str]) -> dict[str, dict[str, int]]:
    """Each host's kernel MPTCP counters (nstat -asz: absolute values, no history file)."""
    out: dict[str, dict[str, int]] = {}
    for h in hosts:
        res = tb.host(h).run(["nstat", "-asz"], check=False)
        vals = {}
        for line in res.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0].startswith("MPTcpExt") and parts[1].isdigit():
                vals[parts[0].removeprefix("MPTcpExt")] = int(parts[1])
        out[h] = vals
    return out


def _counters_delta(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]
) -> dict[str, dict[str, int]]:
    return {
        h: {
            k: v - before.get(h, {}).get(k, 0)
            for k, v in vals.items()
            if v != before.get(h, {}).get(k, 0)
        }
        for h, vals in after.items()
    }


def _native_mib(report: dict[str, Any]) -> dict[str, int]:
    """Our stack's MIB from the traffic tool's report (stack_info), prefix dropped like nstat's."""
    mib = ((report.get("stack_info") or {}).get("mptcp") or {}).get("mib") or {}
    return {k.removeprefix("MPTcpExt"): v for k, v in mib.items() if isinstance(v, int)}


def _wait_listening(host: Host, proc: Process, port: int, timeout: float, logs: Path) -> None:
    """Until a TCP socket listens on `port` in the host's namespace (an unmodified server says
    nothing we could wait for; the kernel's socket table does). Behind our proxy the program
    starts after the proxy's own listener is up, so its port is the last thing to appear."""
    deadline = time.monotonic() + timeout
    while True:
        res = host.run(["ss", "-Hltn", f"sport = :{port}"], check=False)
        if res.stdout.strip():
            return
        if proc.returncode is not None or time.monotonic() > deadline:
            why = (
                f"exited with {proc.returncode}"
                if proc.returncode is not None
                else f"not listening after {timeout:g} s"
            )
            raise RuntimeError(
                f"app server on {host.name}: {why} on port {port} (see {logs}/*-server.stderr)"
            )
        time.sleep(0.05)  # polling the socket table: the condition itself, not a guess


class RunExecutor:
    """Carries out one RunSpec on its own network (by default a fresh Mininet Testbed) and
    returns its metrics."""

    def __init__(
        self,
        exp: Experiment,
        run_dir: Path,
        run_id: str,
        on_traffic: Callable[[RunSpec], None] | None = None,
        network: NetworkFactory = Testbed,
    ):
        self.exp = exp
        self.network = network
        self.run_dir = run_dir
        self.run_id = run_id
        self.events_log: list[dict[str, Any]] = []
        self.on_traffic = on_traffic  # called once the clients run (progress, tests)
        self.machine: dict[str, Any] = {}  # the last run's (provenance.machine_info + load)

    def execute(self, spec: RunSpec) -> RunMetrics:
        exp = self.exp
        label = spec.label
        logs = self.run_dir / "logs" / label
        logs.mkdir(parents=True, exist_ok=True)
        self.machine = {**provenance.machine_info(), "load_before": list(os.getloadavg())}
        topo = load_topology(spec.topology or exp.topology, spec.topology_set)
        flows: list[tuple[FlowSpec, Stack]] = [(spec.traffic, STACKS[spec.stack])]
        flows += [(b, STACKS[b.stack]) for b in exp.background]
        remote = Path(tempfile.gettempdir()) / f"mptcp-lab-{self.run_id}" / label.replace("/", "-")
        procs: list[Process] = []
        workdir = self.run_dir / "logs" / "testbed" / label
        kernel_pm: dict[str, list[dict[str, Any]]] = {}
        with self.network(topo, workdir=workdir, seed=spec.seed) as tb:
            if hasattr(tb, "clock_offsets"):  # real machines: their clocks against ours, now
                self.machine["clock_offsets"] = tb.clock_offsets()
            # Each node's pid where it has one (a namespace on this machine): crash forensics.
            nodes = {n: _node_pid(tb, n) for n in tb.topo.nodes}
            _write_json(logs / "nodes.json", nodes)
            try:
                knobs.apply(tb, tb.topo.hosts, spec.sysctls)  # before the stacks: theirs win
                self._setup_stacks(tb, flows, logs, spec)
                cap = tb.capture(self.run_dir / "pcap" / label)
                before = _mptcp_counters(tb, tb.topo.hosts)
                sysctls = knobs.snapshot(tb, tb.topo.hosts)
                monitors = []
                pm_files = {}
                if spec.stack == "kernel-mptcp":
                    pm_files = _start_pm_monitors(
                        tb,
                        [spec.traffic.client, spec.traffic.server],
                        remote,
                        monitors,
                        STACKS[spec.stack].pm_daemons(),
                    )
                    procs += monitors
                results = self._traffic(tb, spec, flows, remote, logs, procs)
                for p in monitors:
                    p.stop(signal.SIGTERM, timeout=5)
                kernel_pm = {h: _fetch_jsonl(tb.host(h), f) for h, f in pm_files.items()}
                counters = _counters_delta(before, _mptcp_counters(tb, tb.topo.hosts))
                sysctls_end = knobs.snapshot(tb, tb.topo.hosts)
                _write_json(logs / "sysctls.json", {"start": sysctls, "end": sysctls_end})
                mbox_stats = tb.middlebox_stats() if hasattr(tb, "middlebox_stats") else {}
                emu_stats = tb.emulator_stats() if hasattr(tb, "emulator_stats") else {}
                cap.stop()
            finally:
                for p in procs:
                    if p.returncode is None:
                        p.stop(signal.SIGTERM, timeout=3)
                for st in dict.fromkeys(s for _, s in flows):
                    st.teardown(tb)  # after the processes (a PM daemon) are gone
                for h in tb.topo.hosts:
                    tb.host(h).run(["rm", "-rf", str(remote)], check=False)
                    # (and the run's folder once its last label is gone)
                    tb.host(h).run(
                        ["rmdir", "--ignore-fail-on-non-empty", str(remote.parent)], check=False
                    )
            path_rates = _path_rates(tb, spec.traffic)
            path_links = {p.name: list(p.links) for p in tb.paths if p.name in path_rates}
            link_addrs = {
                lk.name: lk.addr_of(spec.traffic.client)
                for lk in tb.topo.links_of(spec.traffic.client)
            }
        self.machine["load_after"] = list(os.getloadavg())
        _write_json(logs / "machine.json", self.machine)
        main = results["flows"][0]
        for fr in results["flows"]:
            tdir = self.run_dir / "traffic" / label
            _write_json(tdir / f"{fr.flow}-client.json", fr.client)
            _write_json(tdir / f"{fr.flow}-server.json", fr.server)
        receiver = main.client if spec.traffic.direction == "download" else main.server
        start_wall = receiver.get("start_wall") or results["t0_wall"]
        pm_by_host = kernel_pm or {
            spec.traffic.client: main.client.get("pm_events") or [],
            spec.traffic.server: main.server.get("pm_events") or [],
        }
        pm_events = pm_timeline(pm_by_host, results["t0_wall"])
        ev_log = results["events"]
        ev_times = [results["t0_wall"] + e["actual"] - start_wall for e in ev_log]
        self.events_log.append(
            run_entry(
                label,
                results["t0_wall"],
                ev_log,
                run=spec.index,
                receiver_start_wall=start_wall,
                event_t_receiver=[round(t, 4) for t in ev_times],
                stack=spec.variant or spec.stack,  # the analysis compares variants
                rep=label.split("/", 1)[1],
                point_values={
                    k: v for k, v in spec.point_values.items() if not k.startswith("stack.")
                },
                capacities_mbit=[] if exp.background else list(path_rates.values()),
                pm_events=pm_events,
                paths=[
                    {"name": n, "links": path_links[n], "rate_mbit": r}
                    for n, r in path_rates.items()
                ],
            )
        )
        metrics_of = app_run_metrics if spec.traffic.kind == "app" else run_metrics
        m = metrics_of(
            label=label,
            stack=spec.stack,
            variant=spec.variant or spec.stack,
            point=spec.point,
            point_values=spec.point_values,
            rep=spec.rep,
            client=main.client,
            server=main.server,
            direction=spec.traffic.direction,
            events=ev_log,
            event_times=ev_times,
            path_rates=path_rates,
            warmup_s=exp.warmup_s,
            window_s=exp.gap_window_s,
            link_addrs=link_addrs,
            has_background=bool(exp.background),
            path_links=path_links,
            event_walls=[results["t0_wall"] + e["actual"] for e in ev_log],
        )
        if (
            spec.stack == "userspace" and spec.traffic.kind != "app"
        ):  # our stack counts in its own MIB, not in the kernel's
            counters = {
                h: {k: v for k, v in mib.items() if v}
                for h, mib in (
                    (spec.traffic.client, _native_mib(main.client)),
                    (spec.traffic.server, _native_mib(main.server)),
                )
            }
        m.mptcp_counters = counters
        if spec.traffic.kind == "app" and spec.stack == "kernel-mptcp":
            m.mptcp_fallback, m.max_subflows = kernel_app_subflows(
                counters.get(spec.traffic.client, {})
            )
        m.middlebox = mbox_stats
        m.topology = topo.name
        m.link_conditions = link_conditions(topo)
        m.emulator = emu_stats
        m.sysctls_set = dict(spec.sysctls)
        m.sysctls = knobs.snapshot_diff(sysctls, knobs.root_sysctls())
        lost = knobs.not_in_force(spec.sysctls, sysctls_end)
        m.errors += lost
        m.ok = m.ok and not lost
        native = main.client.get("stack_info") or {}
        m.outcome = outcome(
            counters=counters,
            fallback=(native.get("mptcp") or {}).get("fallback", m.mptcp_fallback),
            subflows=m.max_subflows or len((native.get("mptcp") or {}).get("subflows") or []),
            finished=not results["stopped"],
            intact=m.intact,
        )
        bg = _background_results(results["flows"][1:], exp.background, exp.warmup_s)
        m.errors += results["stopped"]
        m.ok = m.ok and not results["stopped"]
        if bg:
            m.errors += [f"background {b['flow']}: data not intact" for b in bg if not b["intact"]]
            m.background = bg
        return m

    def _setup_stacks(
        self, tb: Network, flows: list[tuple[FlowSpec, Stack]], logs: Path, spec: RunSpec
    ) -> None:
        """Each stack configures the hosts once; what it did and the endpoints go to the logs.
        The run's own options (a variant from a stack.<stack>.<option> grid) win."""
        setups = {}
        for _, stack in flows:
            if stack.name not in setups:
                opts = self.exp.stack_options.get(stack.name, {})
                if stack.name == spec.stack and spec.stack_options is not None:
                    opts = spec.stack_options
                setups[stack.name] = stack.setup(tb, opts, tb.topo.hosts)
                if any(f.kind == "app" for f, s in flows if s.name == stack.name):
                    setups[stack.name]["app"] = stack.setup_app(tb, opts, tb.topo.hosts)
        _write_json(logs / "stack-setup.json", setups)
        for h in tb.topo.hosts:
            res = tb.host(h).run(["ip", "mptcp", "endpoint", "show"], check=False)
            (logs / f"{h}-mptcp-endpoints.txt").write_text(res.stdout + res.stderr)

    def _traffic(
        self,
        tb: Network,
        spec: RunSpec,
        flows: list[tuple[FlowSpec, Stack]],
        remote: Path,
        logs: Path,
        procs: list[Process],
    ) -> dict[str, Any]:
        servers = [self._start_server(tb, spec, f, s, remote, logs, procs) for f, s in flows]
        clients: list[_Peer] = []
        t0 = time.monotonic()
        t0_wall = time.time()
        for flow, stack in flows:
            seed = spec.seed if flow is spec.traffic else spec.seed + 1 + len(clients)
            clients.append(self._start_client(tb, spec, flow, stack, seed, remote, logs, procs))
        evrun = None
        if self.exp.events:
            evrun = tb.schedule(
                [
                    LinkEvent(
                        at=e.at, link=e.link, action=e.action, mode=e.mode, params=dict(e.params)
                    )
                    for e in self.exp.events
                ],
                t0=t0,
            )
        _write_json(logs / "processes.json", {"pids": [p.pid for p in procs]})
        if self.on_traffic:
            self.on_traffic(spec)
        stopped = self._await_flows(spec, clients, servers, t0)
        events: list[dict[str, Any]] = []
        if evrun is not None:
            last = max(e.at for e in self.exp.events)
            events = evrun.wait(timeout=max(0.0, t0 + last + 5 - time.monotonic()))
            evrun.cancel()
        results = [
            FlowResult(
                srv.flow.name,
                srv.stack.name,
                self._report(cli, logs),
                self._report(srv, logs),
            )
            for srv, cli in zip(servers, clients, strict=True)
        ]
        return {"flows": results, "events": list(events), "t0_wall": t0_wall, "stopped": stopped}

    def _start_server(
        self,
        tb: Network,
        spec: RunSpec,
        flow: FlowSpec,
        stack: Stack,
        remote: Path,
        logs: Path,
        procs: list[Process],
    ) -> _Peer:
        """Copy the tool, start the server, return once it says it listens."""
        host, cmd = _peer_command(tb, spec, flow, stack, "server", remote, spec.seed)
        if flow.kind == "app":
            p = host.start(
                cmd.argv,
                stdout=logs / f"{flow.name}-server.stdout",
                stderr=logs / f"{flow.name}-server.stderr",
            )
            procs.append(p)
            _wait_listening(host, p, stack.app_listen(flow.port)[1], flow.ready_timeout_s, logs)
            return _Peer(flow, stack, host, p, cmd, "server")
        pipe_out = cmd.ready_stream == "stdout"
        p = host.start(
            cmd.argv,
            stdout=subprocess.PIPE if pipe_out else logs / f"{flow.name}-server.stdout",
            stderr=logs / f"{flow.name}-server.stderr" if pipe_out else subprocess.PIPE,
        )
        procs.append(p)
        if cmd.ready_pattern:
            p.wait_for_line(cmd.ready_pattern, stream=cmd.ready_stream, timeout=15)
        return _Peer(flow, stack, host, p, cmd, "server")

    def _start_client(
        self,
        tb: Network,
        spec: RunSpec,
        flow: FlowSpec,
        stack: Stack,
        seed: int,
        remote: Path,
        logs: Path,
        procs: list[Process],
    ) -> _Peer:
        host, cmd = _peer_command(tb, spec, flow, stack, "client", remote, seed)
        p = host.start(
            cmd.argv,
            stdout=logs / f"{flow.name}-client.stdout",
            stderr=logs / f"{flow.name}-client.stderr",
        )
        procs.append(p)
        return _Peer(flow, stack, host, p, cmd, "client")

    @staticmethod
    def _await_flows(
        spec: RunSpec, clients: list[_Peer], servers: list[_Peer], t0: float
    ) -> list[str]:
        """Wait for every client, then every server; stop what overruns. Returns what was
        stopped, in words."""
        stopped: list[str] = []
        for c in clients:
            limit = c.flow.duration_s + c.flow.timeout_s
            try:
                rc = c.proc.wait(timeout=max(1.0, t0 + limit - time.monotonic()))
                log.info("%s: %s client exited %s", spec.label, c.flow.name, rc)
            except subprocess.TimeoutExpired:
                # A flow that never completes (e.g. TCP on a path that stays cut) is a result,
                # not a crash: stop it, keep its partial report, and say so in the metrics.
                stopped.append(
                    f"{c.flow.name} client on {c.host.name} still running after "
                    f"{limit:.0f} s (duration + traffic.timeout_s): stopped"
                )
                log.warning("%s: %s", spec.label, stopped[-1])
                c.proc.stop(signal.SIGTERM, timeout=10)
        for s in servers:
            if s.flow.kind == "app":
                try:
                    s.proc.wait(timeout=s.flow.server_grace_s)
                except subprocess.TimeoutExpired:
                    log.info("%s: %s app server stopped (SIGTERM)", spec.label, s.flow.name)
                    s.proc.stop(signal.SIGTERM, timeout=10)
                continue
            try:
                s.proc.wait(
                    timeout=SERVER_AFTER_STOPPED_CLIENT_S if stopped else SERVER_AFTER_CLIENT_S
                )
            except subprocess.TimeoutExpired:
                stopped.append(f"{s.flow.name} server on {s.host.name} did not finish: stopped")
                log.warning("%s: %s", spec.label, stopped[-1])
                s.proc.stop(signal.SIGTERM, timeout=10)
        return stopped

    @staticmethod
    def _report(peer: _Peer, logs: Path) -> dict[str, Any]:
        """Fetch a program's JSON report from the host (its --out file, else its stdout)."""
        if peer.flow.kind == "app":
            return _app_report(peer, logs)
        if peer.cmd.out_file is not None:
            with tempfile.TemporaryDirectory() as d:
                local = Path(d) / "r.json"
                try:
                    peer.host.get(peer.cmd.out_file, local)
                except OSError as e:
                    return {"error": f"no report from {peer.host.name}: {e}"}
                report = json.loads(local.read_text())
                if peer.cmd.pm_events_file is not None:
                    report["pm_events"] = _fetch_jsonl(peer.host, peer.cmd.pm_events_file)
                return report
        stdout_file = logs / f"{peer.flow.name}-{peer.role}.stdout"
        text = stdout_file.read_text() if stdout_file.exists() else ""
        try:
            return STACKS["tcp"].read_result(text)
        except ValueError as e:
            return {"error": str(e)}


def _app_report(peer: _Peer, logs: Path) -> dict[str, Any]:
    """A real program's record: its argv, exit code, where its output is, what the flow's
    parser found in it (the client), and our proxy's JSON lines when it ran under it."""
    base = f"{peer.flow.name}-{peer.role}"
    out = (
        (logs / f"{base}.stdout").read_text(errors="replace")
        if (logs / f"{base}.stdout").exists()
        else ""
    )
    err = (
        (logs / f"{base}.stderr").read_text(errors="replace")
        if (logs / f"{base}.stderr").exists()
        else ""
    )
    rep: dict[str, Any] = {
        "role": peer.role,
        "argv": peer.cmd.argv,
        "exit_code": peer.proc.returncode,
        "stdout": f"logs/{base}.stdout",
        "stderr": f"logs/{base}.stderr",
        "stderr_tail": err.splitlines()[-5:],
    }
    if peer.role == "client":
        rep["parsed"] = apps.parse_output(peer.flow.parse, out)
    proxy = apps.proxy_records(err)
    if proxy:
        rep["proxy"] = proxy
    if peer.cmd.workdir is not None:  # the program's own logs (nginx's), before the cleanup
        found = peer.host.run(
            ["find", str(peer.cmd.workdir), "-maxdepth", "1", "-name", "*.log", "-type", "f"],
            check=False,
        )
        for f in sorted(found.stdout.split()):
            dst = logs / f"{base}-{Path(f).name}"
            try:
                peer.host.get(Path(f), dst)
            except OSError as e:
                log.warning("app log %s: %s", f, e)
            else:
                rep.setdefault("logs", []).append(f"logs/{dst.name}")
    return rep


def link_conditions(topo: Any) -> dict[str, dict[str, str]]:
    """Each link's conditions as the run had them (after overrides and the grid point): the
    fields that differ from a default link, with units (LinkModel.conditions)."""
    return {name: cond for name, lk in topo.links.items() if (cond := lk.model.conditions())}


# ---------------------------------------------------------------------------------------------
# A campaign


def _metadata(exp: Experiment, run_id: str, runs: list[RunSpec]) -> dict[str, Any]:
    return {
        "experiment": exp.name,
        "description": exp.description,
        "run_id": run_id,
        "source": exp.source,
        "file_sha256": hashlib.sha256(exp.text.encode()).hexdigest(),
        "file_text": exp.text,
        "overrides": exp.overrides,
        "seed": exp.seed,
        "repetitions": exp.repetitions,
        "stacks": exp.stacks,
        "topology": exp.topology,
        "topology_set": exp.topology_set,
        "grid": exp.grid,
        "sample": {**exp.sample_spec, "points": exp.samples} if exp.samples else None,
        "conditions": exp.conditions,
        "traffic": asdict(exp.traffic),
        "background": [asdict(b) for b in exp.background],
        "events": [asdict(e) for e in exp.events],
        "stack_options": exp.stack_options,
        "claims": exp.claims,
        "resolved_runs": [r.as_dict() for r in runs],
        "git": provenance.git_info(),
        "kernel": provenance.kernel_info(),
        "packages": provenance.package_versions(),
        "host": provenance.host_info(),
        "command": sys.argv,
        "start": _now(),
        "end": None,
        "complete": False,
        "interrupted": False,
        "error": None,
        "runs_total": len(runs),
        "runs_done": 0,
    }


def _expected_run_s(exp: Experiment) -> float:
    t = exp.traffic
    return (t.duration_s or 10.0) + 4.0


def open_campaign(
    exp: Experiment, runs: list[RunSpec], resume: str | Path | None, results_root: Path | None
) -> tuple[Path, Journal, Resumed, dict[str, Any]]:
    """A campaign's folder, journal, what an interrupted one had finished and its metadata:
    a new folder under `results_root`, or `resume`'s (the same experiment) to finish."""
    if resume is not None:
        run_dir = Path(resume)
        journal, old = open_for_resume(run_dir, exp, runs)
        return run_dir, journal, old, resume_metadata(old.meta)
    run_id, run_dir = new_run_dir(results_root or RESULTS_DIR, exp.name)
    (run_dir / "logs").mkdir()
    (run_dir / "experiment.toml").write_text(exp.text)
    return run_dir, Journal(run_dir), Resumed({}), _metadata(exp, run_id, runs)


def run_experiment(
    exp: Experiment,
    *,
    results_root: Path | None = None,
    progress: bool = True,
    analyze: bool = True,
    stream: TextIO | None = None,
    network: NetworkFactory = Testbed,
    only_runs: list[int] | None = None,
    resume: Path | None = None,
) -> CampaignResult:
    """Run every resolved run of `exp`; write results; return where they are.

    Every run gets a fresh network from `network` (Mininet namespaces on this machine unless
    another implementation of testbed.network.Network is given).
    Interrupted (Ctrl-C, SIGTERM) or failed campaigns keep what they wrote, are marked
    complete: false with the reason in metadata.json, and the exception propagates after the
    testbed has been torn down. `resume`: a campaign folder of this same experiment; its
    finished runs (journal.jsonl) are kept and the others run again into it.
    """
    runs = resolve_runs(exp)
    if only_runs is not None:  # a share of the campaign (a worker's): indices of resolve_runs
        runs = [r for r in runs if r.index in set(only_runs)]
    for name in sorted({r.stack for r in runs} | {b.stack for b in exp.background}):
        STACKS[name].check_available()  # StackUnavailable before anything is created
    if exp.traffic.kind == "app":
        for name in sorted({r.stack for r in runs}):
            STACKS[name].check_app()
    for b in exp.background:
        if b.kind == "app":
            STACKS[b.stack].check_app()
    run_dir, journal, old, meta = open_campaign(exp, runs, resume, results_root)
    run_id = meta["run_id"]
    if hasattr(network, "describe"):  # e.g. the machines of an inventory
        meta["network"] = network.describe()
    _write_json(run_dir / "metadata.json", meta)
    journal.write("campaign", **campaign_line(resume is not None), runs=len(runs))
    todo = [r for r in runs if r.index not in old.finished]

    handler = logging.FileHandler(run_dir / "logs" / "runner.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    bar = Progress(len(todo), stream=stream, enabled=progress)
    executor = RunExecutor(
        exp,
        run_dir,
        run_id,
        on_traffic=lambda s: bar.note(f"traffic running ({s.label})"),
        network=network,
    )
    finished: dict[int, RunMetrics] = dict(old.finished)
    events: dict[int, list[dict[str, Any]]] = dict(old.events)
    result = CampaignResult(run_dir=run_dir, complete=False)
    result.runs = [finished[i] for i in sorted(finished)]

    def save() -> None:
        """metadata, events and metrics of the finished runs, in run order."""
        result.runs = [finished[i] for i in sorted(finished)]
        meta["runs_done"] = len(result.runs)
        _write_json(run_dir / "metadata.json", meta)
        write_events(run_dir / "events.json", [e for i in sorted(events) for e in events[i]])
        _write_json(
            run_dir / "metrics.json",
            {"runs": [r.as_dict() for r in result.runs], "summary": summarize(result.runs)},
        )

    if progress:
        kept = f" ({len(finished)} finished before, kept)" if resume is not None else ""
        print(f"{exp.name}: {len(todo)} runs{kept} -> {run_dir}", file=bar.stream, flush=True)
    for spec in todo:
        journal.write("queued", run=spec.index, label=spec.label)
    where = provenance.host_info().get("hostname", "local")
    try:
        # SIGTERM/SIGHUP unwind the whole campaign (not only a run's testbed) through the
        # finally blocks below.
        with SignalGuard():
            for spec in todo:
                bar.start(spec, exp.repetitions, _expected_run_s(exp))
                log.info(
                    "run %d/%d: %s %s", spec.index + 1, len(runs), spec.label, spec.point_values
                )
                journal.write("started", run=spec.index, label=spec.label, where=where)
                try:
                    executor.events_log = []
                    m = executor.execute(spec)
                except BaseException as e:
                    journal.write(
                        "failed",
                        run=spec.index,
                        label=spec.label,
                        where=where,
                        error=f"{type(e).__name__}: {e}",
                    )
                    raise
                finished[spec.index] = m
                events[spec.index] = executor.events_log
                meta.setdefault("machines", {})[spec.label] = machine_summary(executor.machine)
                save()
                journal.write("finished", run=spec.index, label=spec.label, where=where)
                bar.finish(_one_line(m))
            result.summary = summarize(result.runs)
            result.complete = True
            if analyze:
                bar.note(f"analysing {len(runs)} runs' captures (analysis/)")
                entries = [e for i in sorted(events) for e in events[i]]
                result.report = _analyze(run_dir, meta, entries)
    except BaseException as e:
        meta["interrupted"] = isinstance(e, KeyboardInterrupt | Interrupted)
        meta["error"] = f"{type(e).__name__}: {e}"
        journal.write("interrupted" if meta["interrupted"] else "stopped", error=meta["error"])
        log.exception("campaign stopped")
        raise
    finally:
        meta["complete"] = result.complete
        meta["end"] = _now()
        save()
        journal.close()
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
    return result


def machine_summary(machine: dict[str, Any]) -> dict[str, Any]:
    """metadata.json's `machines` entry of a run (the sysctls stay in logs/<label>/machine.json)."""
    keep = ("hostname", "kernel", "cpu_model", "cpus", "load_before", "load_after")
    out = {k: machine.get(k) for k in keep}
    if machine.get("clock_offsets"):  # real machines (--inventory) and workers (--workers)
        out["clock_offsets"] = machine["clock_offsets"]
    return out


def resume_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """A resumed campaign's metadata: the first start kept, each resume recorded, the last
    outcome cleared until this one ends."""
    meta = dict(meta)
    meta.setdefault("resumed", []).append(
        {"time": _now(), "command": sys.argv, "after_error": meta.get("error")}
    )
    meta.update(complete=False, interrupted=False, error=None, end=None)
    return meta


def _one_line(m: RunMetrics) -> str:
    if m.app:  # a real program: its own figures, not our tool's
        figures = ", ".join(f"{k} {v}" for k, v in m.app.get("metrics", {}).items())
        parts = [
            figures or "no figures",
            "complete" if m.intact else "NOT COMPLETE",
            f"client exit {m.app['client'].get('exit_code')}",
        ]
        return ", ".join(parts + (["errors: " + "; ".join(m.errors)] if m.errors else []))
    parts = [
        f"goodput {m.goodput_mbit:.1f} Mbit/s (steady {m.goodput_steady_mbit:.1f})",
        "intact" if m.intact else "DATA NOT INTACT",
        f"subflows {m.max_subflows}",
    ]
    for f in m.failover:
        parts.append(f"gap {f.gap_s:.2f} s after {f.link} down")
        if f.cut_path_bytes_after is not None:
            parts.append(
                f"then {f.link} subflows {f.cut_path_bytes_after / 1e6:.1f} MB, "
                f"others {f.other_paths_bytes_after / 1e6:.1f} MB"
            )
    if m.errors:
        parts.append("errors: " + "; ".join(m.errors))
    return ", ".join(parts)


def _analysis_views(run_dir: Path, meta: dict[str, Any], runs: list[dict[str, Any]]) -> Path:
    """One directory per run under RUN/analysis/, in the layout analysis/ reads as one run.

    The analysis package treats a directory with metadata.json, events.json (the one format of
    analysis.events, as RUN/events.json) and pcap/<stack>/<rep>/ as one run, and a directory of such runs as a
    campaign. A campaign of ours holds many runs (grid points, repetitions) whose events happen
    at different times, so each run gets its own view: its captures (hard links, no copies),
    its own events, and its parameters (the grid point, the path capacities).
    """
    base = run_dir / "analysis"
    try:  # each run's outcome and counters, as the runner measured them (metrics.json)
        measured = {
            m["label"]: m for m in json.loads((run_dir / "metrics.json").read_text())["runs"]
        }
    except (OSError, ValueError, KeyError):
        measured = {}
    for r in runs:
        view = base / r["label"].replace("/", "-")
        dst = view / "pcap" / r["stack"] / r["rep"]
        dst.mkdir(parents=True, exist_ok=True)
        for pcap in sorted((run_dir / "pcap" / r["label"]).glob("*.pcap")):
            target = dst / pcap.name
            if not target.exists():
                try:
                    os.link(pcap, target)
                except OSError:
                    shutil.copyfile(pcap, target)
        # the traffic tool's reports (the sending stack's own cwnd samples, among the rest)
        tdst = view / "traffic" / r["stack"] / r["rep"]
        for rpt in sorted((run_dir / "traffic" / r["label"]).glob("*.json")):
            tdst.mkdir(parents=True, exist_ok=True)
            if not (tdst / rpt.name).exists():
                try:
                    os.link(rpt, tdst / rpt.name)
                except OSError:
                    shutil.copyfile(rpt, tdst / rpt.name)
        params: dict[str, Any] = dict(r["point_values"])
        if r["capacities_mbit"]:
            params["capacities_mbit"] = r["capacities_mbit"]
        if r.get("paths"):  # what survives a cut link (analysis.definitions)
            params["paths"] = r["paths"]
        # the machine the run ran on (a worker's, a shard's), not the coordinator's; kernels
        # mixed on purpose (--allow-mixed) make the kernel a factor the analysis groups by
        machine = (meta.get("machines") or {}).get(r["label"]) or {}
        if meta.get("mixed_kernels"):
            params["kernel"] = machine.get("kernel") or "unknown"
        view_meta = {
            "experiment": meta["experiment"],
            "run_id": meta["run_id"],
            "label": r["label"],
            "stack": r["stack"],
            "rep": r["rep"],
            "seed": meta["seed"],
            "parameters": params,
            "git_commit": meta["git"]["commit"],
            "git_dirty": meta["git"]["dirty"],
            "kernel": machine.get("kernel") or meta["kernel"]["release"],
            "host": machine.get("hostname") or meta["host"]["hostname"],
            "packages": meta["packages"],
            "start": r["t0_wall"],  # the traffic's start: event "at" times count from here
            "campaign": str(run_dir),
        }
        if machine.get("clock_offsets"):  # each machine's clock against the coordinator's
            view_meta["clock_offsets"] = machine["clock_offsets"]
        m = measured.get(r["label"]) or {}
        if m.get("outcome"):
            view_meta["outcome"] = {
                k: m.get(k) for k in ("outcome", "intact", "mptcp_counters", "middlebox")
            }
        # the links as the run had them, and what the emulators counted on each
        for k in ("topology", "link_conditions", "emulator", "sysctls_set"):
            if m.get(k):
                view_meta[k] = m[k]
        try:  # the kernel's MPTCP and TCP sysctls of each host as the traffic started
            snap = json.loads((run_dir / "logs" / r["label"] / "sysctls.json").read_text())
            view_meta["sysctls"] = snap["start"]
        except (OSError, ValueError, KeyError):
            pass
        _write_json(view / "metadata.json", view_meta)
        write_events(view / "events.json", [run_entry(r["label"], r["t0_wall"], r["events"])])
    return base


def _analyze(run_dir: Path, meta: dict[str, Any], runs: list[dict[str, Any]]) -> Path | None:
    """The analysis package's report over the runs (pcap-level metrics, figures), then the
    campaign's RUN/report.html (experiments/campaign_report.py: the comparisons and the
    published claims they check, with the analysis report below).

    Guarded: our own metrics.json is complete without it, and a failing report must not turn a
    finished campaign into a failed one.
    """
    try:
        write_report(_analysis_views(run_dir, meta, runs))
    except Exception:  # noqa: BLE001 - the run's data stays valid whatever the report does
        log.exception("analysis of %s failed", run_dir)
    try:
        return write_campaign_report(run_dir)
    except Exception:  # noqa: BLE001
        log.exception("campaign report of %s failed", run_dir)
        return None
