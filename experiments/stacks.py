"""The stacks an experiment compares, behind one small interface (the seam for new stacks).

A stack knows three things: how to check it can run here, how to configure the hosts before a
run (MPTCP endpoints, limits, scheduler), and which command line runs its server and its client.
Every shipped stack runs our traffic tool (experiments/traffic.py), so all of them move the same
bytes and are measured by identical code: `tcp` and `kernel-mptcp` with a kernel socket
(protocol 6 or 262), `userspace` with our own stack (mptcp_impl) on the tool's event loop.
`kernel-mptcp` and `userspace` take the same options, in `ip mptcp`'s vocabulary.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments import knobs, plugin_options
from experiments.errors import ExperimentError
from testbed import uspm
from testbed.network import Network
from testbed.sysctl import read_sysctls, set_route_congctl, set_sysctls
from testbed.topology import Topology

REPO = Path(__file__).resolve().parent.parent
ENDPOINT_FLAGS = ("subflow", "signal", "backup", "fullmesh")
SCHEDULERS_FILE = Path("/proc/sys/net/mptcp/available_schedulers")
PM_TYPE_FILE = Path("/proc/sys/net/mptcp/pm_type")


class StackUnavailable(RuntimeError):
    """The stack cannot run on this machine or in this checkout (says why)."""


@dataclass
class Command:
    """How to start one end of a flow on a host, and how to read its result afterwards."""

    argv: list[str]
    out_file: Path | None  # the JSON report the program writes on the host (None: stdout)
    ready_pattern: str | None = None  # servers: printed once listening
    ready_stream: str = "stdout"  # where the ready line appears (the other stream goes to a log)
    # our stack: its path-manager events (JSON lines), on the host
    pm_events_file: Path | None = None
    workdir: Path | None = None  # an app's own folder on the host ({workdir}; its *.log kept)


class Stack:
    """Base class: plain behaviour shared by the stacks driven through our traffic tool."""

    name = ""
    proto = "tcp"  # the traffic tool's --proto
    description = ""

    # ---- validation (experiment file time) -------------------------------------------------

    def validate_options(self, source: str, where: str, opts: dict[str, Any]) -> dict[str, Any]:
        if opts:
            raise ExperimentError(
                source, f"{where}.{next(iter(opts))}", f"the {self.name} stack takes no options"
            )
        return {}

    def check_topology(self, source: str, where: str, opts: dict[str, Any], topo: Topology) -> None:
        """Options that name hosts or links are checked against the topology here."""

    def check_available(self) -> None:
        """Raise StackUnavailable when this stack cannot run here."""

    def pm_daemons(self) -> dict[str, list[str]]:
        """host -> the arguments of a path-manager daemon (testbed/uspm.py) the last setup()
        wants in that host's namespace for the run; the runner starts it in place of the
        host's pmmonitor (it writes the same events, and its own commands)."""
        return {}

    def teardown(self, tb: Network) -> None:
        """Undo what setup() changed beyond the run's processes (the runner calls it last,
        also when the run failed)."""

    def check_flow(self, source: str, where: str, flow: Any) -> None:
        """Refuse, at file-validation time, traffic this stack's programs cannot produce."""

    # ---- run time ----------------------------------------------------------------------------

    def setup(self, tb: Network, opts: dict[str, Any], hosts: list[str]) -> dict[str, Any]:
        """Configure the hosts before a run; returns what was done (goes into the logs)."""
        return {}

    def server(self, python: str, tool: Path, addr: str, port: int, out: Path) -> Command:
        """addr is the server's own address; our tool listens on all of them (MPTCP joins may
        arrive on any address the server announces)."""
        return Command(
            [
                python,
                str(tool),
                "server",
                "--listen",
                f"0.0.0.0:{port}",
                "--proto",
                self.proto,
                "--once",
                "--out",
                str(out),
            ],
            out,
            ready_pattern=r"^listening ",
        )

    def client(
        self, python: str, tool: Path, connect: str, flow: Any, seed: int, out: Path
    ) -> Command:
        argv = [
            python,
            str(tool),
            "client",
            "--connect",
            connect,
            "--proto",
            self.proto,
            "--kind",
            flow.kind,
            "--direction",
            flow.direction,
            "--seed",
            str(seed),
            "--out",
            str(out),
        ]
        if flow.bytes:
            argv += ["--bytes", str(flow.bytes)]
        if flow.duration_s:
            argv += ["--duration", str(flow.duration_s)]
        if flow.rate_mbit:
            argv += ["--rate-mbit", str(flow.rate_mbit)]
        if flow.kind == "reqresp":
            argv += [
                "--req-bytes",
                str(flow.req_bytes),
                "--resp-bytes",
                str(flow.resp_bytes),
                "--count",
                str(flow.count),
            ]
        return Command(argv, out)

    # ---- real applications (kind = "app", experiments/apps.py) ------------------------------

    def check_app(self) -> None:
        """Raise StackUnavailable when this stack cannot carry an unmodified program here."""

    def setup_app(self, tb: Network, opts: dict[str, Any], hosts: list[str]) -> dict[str, Any]:
        """What a run of real programs needs on the hosts beyond setup() (after it)."""
        return {}

    def app_listen(self, port: int) -> tuple[str, int]:
        """Where an app server binds ({listen_addr}, {port}) for clients to reach it on `port`."""
        return "0.0.0.0", port

    def app_command(self, role: str, argv: list[str], *, python: str, port: int) -> list[str]:
        """The program's argv wrapped so this stack carries its connections (plain TCP: as is).
        `port` is the flow's port (the one the client connects to)."""
        return list(argv)

    def read_result(self, text: str) -> dict[str, Any]:
        """The program's JSON report (the last JSON line of its output)."""
        for line in reversed(text.strip().splitlines()):
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line)
        raise ValueError("no JSON report in the program's output")


class KernelKnobs(Stack):
    """The kernel stacks' socket buffers and congestion control (experiments/knobs.py):
    ``tcp_rmem``/``tcp_wmem`` set as the hosts' net.ipv4.tcp_rmem/tcp_wmem (per namespace,
    read back), ``cc`` pinned on the hosts' routes where they pin one (the Mininet testbed's
    do: testbed.sysctl.set_route_congctl) and put on the traffic tool's sockets
    (``--congestion``)."""

    KNOBS = ("tcp_rmem", "tcp_wmem", "cc")
    _cc: str | None = None  # setup() keeps it for server() and client()

    def validate_knobs(self, source: str, where: str, opts: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in ("tcp_rmem", "tcp_wmem"):
            if k in opts:
                out[k] = knobs.kernel_buffer(source, f"{where}.{k}", opts[k])
        if "cc" in opts:
            out["cc"] = knobs.congestion_control(source, f"{where}.cc", opts["cc"])
        return out

    def setup_knobs(self, tb: Network, opts: dict[str, Any], hosts: list[str]) -> dict[str, Any]:
        """Buffers in every host's namespace (a run's other flows on those hosts share them)."""
        want = {f"net.ipv4.{k}": opts[k] for k in ("tcp_rmem", "tcp_wmem") if opts.get(k)}
        done: dict[str, Any] = {}
        for h in hosts if want else []:
            got = set_sysctls(tb.host(h), want)
            if got != want:
                raise RuntimeError(f"{self.name} on {h}: set {want}, the kernel has {got}")
            done.setdefault("sysctls", {})[h] = got
        self._cc = opts.get("cc")
        if self._cc:  # the sockets' and the routes' (a pinned route wins over a socket's)
            done["cc"] = self._cc
            done["routes_changed"] = {h: set_route_congctl(tb.host(h), self._cc) for h in hosts}
        return done

    def server(self, python: str, tool: Path, addr: str, port: int, out: Path) -> Command:
        cmd = super().server(python, tool, addr, port, out)
        cmd.argv += ["--congestion", self._cc] if self._cc else []
        return cmd

    def client(
        self, python: str, tool: Path, connect: str, flow: Any, seed: int, out: Path
    ) -> Command:
        cmd = super().client(python, tool, connect, flow, seed, out)
        cmd.argv += ["--congestion", self._cc] if self._cc else []
        return cmd


class TcpStack(KernelKnobs):
    """Plain kernel TCP; options: tcp_rmem, tcp_wmem, cc (KernelKnobs)."""

    name = "tcp"
    proto = "tcp"
    description = "plain kernel TCP on the primary path (single path)"

    def validate_options(self, source: str, where: str, opts: dict[str, Any]) -> dict[str, Any]:
        for k in opts:
            if k not in self.KNOBS:
                raise ExperimentError(
                    source, f"{where}.{k}", f"unknown key (allowed: {', '.join(self.KNOBS)})"
                )
        return self.validate_knobs(source, where, opts)

    def setup(self, tb: Network, opts: dict[str, Any], hosts: list[str]) -> dict[str, Any]:
        return self.setup_knobs(tb, opts, hosts)


class MptcpOptions(Stack):
    """The options an MPTCP stack takes ([stack.<name>] in the experiment file):

    endpoints = "default" | [{host, link, flags = ["subflow", "backup", ...]}, ...]
      "default" (the default): every multi-homed host gets each extra address as a
      `subflow` endpoint. With a list, hosts not named get an empty endpoint list (so they
      only accept joins).
    limits = {subflows = 8, add_addr_accepted = 8}
    scheduler = "default"   (checked against the schedulers the stack offers)
    """

    def available_schedulers(self) -> list[str]:
        return []

    def endpoints_of(
        self, tb: Network, opts: dict[str, Any], host: str
    ) -> list[tuple[str, str, str]]:
        """(address, device, flags) of `host`'s endpoints, flags space-separated."""
        eps = opts.get("endpoints", "default")
        if eps in (None, "default"):
            return tb.default_endpoints(host)
        return [
            (tb.addr(host, ep["link"]), tb.intf(host, ep["link"]), " ".join(ep["flags"]))
            for ep in eps
            if ep["host"] == host
        ]

    def validate_options(self, source: str, where: str, opts: dict[str, Any]) -> dict[str, Any]:
        allowed = {"endpoints", "limits", "scheduler"}
        for k in opts:
            if k not in allowed:
                raise ExperimentError(
                    source, f"{where}.{k}", f"unknown key (allowed: {', '.join(sorted(allowed))})"
                )
        out: dict[str, Any] = {
            "endpoints": "default",
            "limits": {"subflows": 8, "add_addr_accepted": 8},
            "scheduler": None,
        }
        eps = opts.get("endpoints", "default")
        if eps != "default":
            if not isinstance(eps, list):
                raise ExperimentError(
                    source,
                    f"{where}.endpoints",
                    'expected "default" or a list of {host, link, flags}',
                )
            clean = []
            for i, ep in enumerate(eps):
                w = f"{where}.endpoints[{i}]"
                if not isinstance(ep, dict):
                    raise ExperimentError(source, w, "expected a table {host, link, flags}")
                for k in ep:
                    if k not in ("host", "link", "flags"):
                        raise ExperimentError(source, f"{w}.{k}", "unknown key (host, link, flags)")
                for k in ("host", "link"):
                    if not isinstance(ep.get(k), str):
                        raise ExperimentError(source, f"{w}.{k}", "missing or not a string")
                flags = ep.get("flags", ["subflow"])
                if isinstance(flags, str):
                    flags = flags.split()
                if not isinstance(flags, list) or not flags:
                    raise ExperimentError(source, f"{w}.flags", "expected a list of flags")
                for f in flags:
                    if f not in ENDPOINT_FLAGS:
                        raise ExperimentError(
                            source,
                            f"{w}.flags",
                            f"unknown flag {f!r} (known: {', '.join(ENDPOINT_FLAGS)})",
                        )
                clean.append({"host": ep["host"], "link": ep["link"], "flags": list(flags)})
            out["endpoints"] = clean
        limits = opts.get("limits", out["limits"])
        if not isinstance(limits, dict):
            raise ExperimentError(source, f"{where}.limits", "expected a table")
        for k, v in limits.items():
            if k not in ("subflows", "add_addr_accepted"):
                raise ExperimentError(
                    source, f"{where}.limits.{k}", "unknown limit (subflows, add_addr_accepted)"
                )
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 8:
                raise ExperimentError(source, f"{where}.limits.{k}", f"expected 0..8, got {v!r}")
        out["limits"] = dict(limits)
        sched = opts.get("scheduler")
        if sched is not None:
            if not isinstance(sched, str):
                raise ExperimentError(source, f"{where}.scheduler", "expected a string")
            available = self.available_schedulers()
            if available and sched not in available:
                raise ExperimentError(
                    source,
                    f"{where}.scheduler",
                    f"{sched!r} is not offered by the {self.name} stack "
                    f"(available: {', '.join(available)})",
                )
            out["scheduler"] = sched
        return out

    def check_topology(self, source: str, where: str, opts: dict[str, Any], topo: Topology) -> None:
        if opts.get("endpoints") in (None, "default"):
            return
        for i, ep in enumerate(opts["endpoints"]):
            w = f"{where}.endpoints[{i}]"
            if ep["host"] not in topo.hosts:
                raise ExperimentError(
                    source, f"{w}.host", f"no host {ep['host']!r} in the topology"
                )
            if ep["link"] not in topo.links or ep["host"] not in (
                topo.links[ep["link"]].a,
                topo.links[ep["link"]].b,
            ):
                raise ExperimentError(
                    source, f"{w}.link", f"{ep['host']!r} has no link {ep['link']!r}"
                )


PM_CHOICES = ("kernel", *(f"userspace-{m}" for m in uspm.MODES))


class KernelMptcpStack(MptcpOptions, KernelKnobs):
    """Linux MPTCP: per-host `ip mptcp limits` and `endpoint`s (on their devices), optional
    scheduler (checked against /proc/sys/net/mptcp/available_schedulers), and the kernel's
    tcp_rmem, tcp_wmem and cc (KernelKnobs).

    ``pm = "userspace-full" | "userspace-backup" | "userspace-single-path"`` (default
    ``"kernel"``): the hosts with endpoints get the kernel's userspace path manager
    (net.mptcp.pm_type = 1, put back after the run) and our daemon (testbed/uspm.py) in their
    namespace, which opens subflows from their endpoints' addresses in that handover mode
    (the endpoints' flags do not apply: the mode decides; no endpoints are given to the
    kernel). The other hosts keep the in-kernel PM, which accepts the joins."""

    name = "kernel-mptcp"
    proto = "mptcp"
    description = "Linux kernel MPTCP (ip mptcp endpoints/limits, socket protocol 262)"

    def __init__(self) -> None:
        self._daemons: dict[str, list[str]] = {}
        self._pm_restore: dict[str, dict[str, str]] = {}  # host -> pm_type as it was

    def pm_daemons(self) -> dict[str, list[str]]:
        return dict(self._daemons)

    def available_schedulers(self) -> list[str]:
        return available_schedulers()

    def check_available(self) -> None:
        try:
            enabled = Path("/proc/sys/net/mptcp/enabled").read_text().strip()
        except FileNotFoundError:
            raise StackUnavailable(
                "kernel-mptcp: this kernel has no MPTCP (/proc/sys/net/mptcp missing)"
            ) from None
        if enabled != "1":
            raise StackUnavailable("kernel-mptcp: net.mptcp.enabled is 0")

    def validate_options(self, source: str, where: str, opts: dict[str, Any]) -> dict[str, Any]:
        rest = {k: v for k, v in opts.items() if k not in (*self.KNOBS, "pm")}
        try:
            out = super().validate_options(source, where, rest)
        except ExperimentError as e:
            if e.problem.startswith("unknown key"):
                allowed = sorted(["endpoints", "limits", "scheduler", "pm", *self.KNOBS])
                raise ExperimentError(
                    source, e.field, f"unknown key (allowed: {', '.join(allowed)})"
                ) from None
            raise
        pm = opts.get("pm", "kernel")
        if pm not in PM_CHOICES:
            raise ExperimentError(
                source, f"{where}.pm", f"expected one of {', '.join(PM_CHOICES)}, got {pm!r}"
            )
        if pm != "kernel" and not PM_TYPE_FILE.exists():
            raise ExperimentError(
                source, f"{where}.pm", f"{pm!r}: this kernel has no {PM_TYPE_FILE} (userspace PM)"
            )
        if pm != "kernel" and out["endpoints"] == "default":
            raise ExperimentError(
                source,
                f"{where}.pm",
                f"{pm!r} needs an endpoints list: its hosts get the daemon, their endpoints' "
                "addresses its subflows",
            )
        return {**out, "pm": pm, **self.validate_knobs(source, where, opts)}

    def check_app(self) -> None:
        if shutil.which("mptcpize") is None:
            raise StackUnavailable(
                "kernel-mptcp: an app flow runs its programs under `mptcpize run`, which is not "
                "installed (Debian package mptcpize; ./inv installs it)"
            )

    def app_command(self, role: str, argv: list[str], *, python: str, port: int) -> list[str]:
        """`mptcpize run` (LD_PRELOAD: the program's TCP sockets become MPTCP ones), or the
        program's own MPTCP flag where it has one (iperf3 >= 3.16: --mptcp, client side)."""
        if role == "client" and Path(argv[0]).name == "iperf3" and iperf3_has_mptcp(argv[0]):
            return [*argv, "--mptcp"]
        return ["mptcpize", "run", *argv]

    def setup(self, tb: Network, opts: dict[str, Any], hosts: list[str]) -> dict[str, Any]:
        limits = opts.get("limits") or {"subflows": 8, "add_addr_accepted": 8}
        done: dict[str, Any] = {"limits": limits, "endpoints": {}}
        done.update(self.setup_knobs(tb, opts, hosts))
        pm = opts.get("pm") or "kernel"
        self._daemons = {}
        for h in tb.topo.hosts:
            mine = self.endpoints_of(tb, opts, h)
            if pm != "kernel" and mine:
                self._daemons[h] = self._userspace_pm(tb, h, pm, mine)
                done.setdefault("userspace_pm", {})[h] = self._daemons[h]
                mine = []  # the daemon opens the subflows
            tb.kernel_mptcp(h, limits=limits, endpoints=mine)
            done["endpoints"][h] = [list(e) for e in mine]
        sched = opts.get("scheduler")
        if sched:
            for h in tb.topo.hosts:
                tb.host(h).run(["sysctl", "-q", "-w", f"net.mptcp.scheduler={sched}"])
            done["scheduler"] = sched
        return done

    def _userspace_pm(
        self, tb: Network, host: str, pm: str, endpoints: list[tuple[str, str, str]]
    ) -> list[str]:
        """pm_type 1 in `host`'s namespace (the old value kept for teardown) and the daemon's
        arguments: its first address (where connections start), then the endpoints'."""
        if hasattr(tb, "project_dir"):
            raise RuntimeError(
                f"{self.name}: pm = {pm!r} runs its daemon in this machine's namespaces only"
            )
        key = "net.mptcp.pm_type"
        h = tb.host(host)
        before = read_sysctls(h).get(key)
        if before is None:
            raise StackUnavailable(f"{self.name}: this kernel has no {key} (userspace PM)")
        self._pm_restore.setdefault(host, {key: before})
        got = set_sysctls(h, {key: "1"})
        if got != {key: "1"}:
            raise RuntimeError(f"{self.name} on {host}: set {key}=1, the kernel has {got}")
        first = tb.topo.links_of(host)[0].name
        args = ["--mode", pm.removeprefix("userspace-")]
        args += ["--addr", f"{tb.addr(host, first)}@{tb.intf(host, first)}"]
        for addr, dev, _ in endpoints:
            args += ["--addr", f"{addr}@{dev}"]
        return args

    def teardown(self, tb: Network) -> None:
        """pm_type back to what it was in each host setup() changed (a namespace that is gone
        needs nothing)."""
        restore, self._pm_restore, self._daemons = self._pm_restore, {}, {}
        for host, values in restore.items():
            h = tb.host(host)
            if h.alive:
                set_sysctls(h, values)


class UserspaceStack(MptcpOptions):
    """Our own MPTCP implementation (mptcp_impl), through the same traffic tool.

    The tool runs `--proto userspace`: it moves its bytes over mptcp_impl.api's streams on its
    own event loop, and takes the host's endpoints, limits and scheduler on its command line
    (our stack has no per-host state: setup() only resolves them per host). The tool imports
    mptcp_impl from this checkout (--import-path), which a Mininet host shares; a real host
    (testbed.sshnet) from the project's copy there (`project_dir`). Both ends run our stack: the server listens on its
    own address (and on its `signal` endpoints), not on 0.0.0.0.
    """

    name = "userspace"
    proto = "userspace"
    description = "our userspace MPTCP stack (mptcp_impl), same options as kernel-mptcp"

    def __init__(self) -> None:
        self._args: dict[str, list[str]] = {}  # host -> its --endpoint/--limits/plug-ins
        self._host_of: dict[str, str] = {}  # address -> host
        self._default_args = ["--import-path", str(REPO)]  # a host setup() did not see

    def validate_options(self, source: str, where: str, opts: dict[str, Any]) -> dict[str, Any]:
        """kernel-mptcp's endpoints and limits, and our research plug-ins (scheduler, cc, pm,
        opportunistic: experiments/plugin_options.py)."""
        plug = {k: v for k, v in opts.items() if k in plugin_options.KEYS}
        bufs = {k: v for k, v in opts.items() if k in BUFFER_KEYS}
        own = (*plugin_options.KEYS, *BUFFER_KEYS, "checksum")
        rest = {k: v for k, v in opts.items() if k not in own}
        for k in rest:
            if k not in ("endpoints", "limits"):
                allowed = sorted(["endpoints", "limits", *own])
                raise ExperimentError(
                    source, f"{where}.{k}", f"unknown key (allowed: {', '.join(allowed)})"
                )
        out = super().validate_options(source, where, rest)
        del out["scheduler"]
        out.update(plugin_options.validate(source, where, plug))
        out.update({k: knobs.userspace_buffer(source, f"{where}.{k}", v) for k, v in bufs.items()})
        if "checksum" in opts:  # DSS checksums on our stack's ends (net.mptcp.checksum_enabled)
            if not isinstance(opts["checksum"], bool):
                raise ExperimentError(source, f"{where}.checksum", "expected true or false")
            out["checksum"] = opts["checksum"]
        return out

    def check_available(self) -> None:
        if importlib.util.find_spec("mptcp_impl.api") is None:
            raise StackUnavailable(
                "userspace: mptcp_impl (our stack's package) is not importable here"
            )

    def setup(self, tb: Network, opts: dict[str, Any], hosts: list[str]) -> dict[str, Any]:
        limits = opts.get("limits") or {"subflows": 8, "add_addr_accepted": 8}
        plugins = plugin_options.flags(opts) + buffer_flags(opts)
        plugins += ["--checksum"] if opts.get("checksum") else []
        done: dict[str, Any] = {"limits": limits, "plugins": plugins, "endpoints": {}}
        self._args, self._host_of = {}, {}
        self._default_args = [*plugins, "--import-path", str(REPO)]
        for h in tb.topo.hosts if tb is not None else []:
            mine = self.endpoints_of(tb, opts, h)
            done["endpoints"][h] = [list(e) for e in mine]
            args = [
                a
                for addr, _, flags in mine
                for a in ("--endpoint", f"{addr},{flags.replace(' ', ',')}")
            ]
            # the project's copy on that host (real machines: testbed.sshnet), else ours
            root = tb.project_dir(h) if hasattr(tb, "project_dir") else str(REPO)
            self._args[h] = [
                *(args or ["--endpoint", "none"]),
                "--limits",
                ",".join(f"{k}={v}" for k, v in limits.items()),
                *plugins,
                "--import-path",
                root,
            ]
            for lk in tb.topo.links_of(h):
                self._host_of[lk.addr_of(h)] = h
        return done

    # Real applications: our stack reaches an unmodified program only through its transparent
    # proxy, so an app flow runs as the userspace-proxy stack would run it, with this stack's
    # limits, plug-ins and buffers (its endpoints do not apply: the proxy's client opens a
    # subflow from each of its host's other addresses).

    def _proxy(self, opts: dict[str, Any] | None = None) -> Any:
        from experiments.proxy_stack import UserspaceProxyStack

        proxy = UserspaceProxyStack()
        if opts is not None:
            keep = {*plugin_options.KEYS, *BUFFER_KEYS, "limits"}
            proxy._opts = {k: v for k, v in opts.items() if k in keep and v is not None}
        return proxy

    def setup_app(self, tb: Network, opts: dict[str, Any], hosts: list[str]) -> dict[str, Any]:
        self._app_proxy = self._proxy(opts)
        done = self._app_proxy.setup(tb, self._app_proxy._opts, hosts)
        if opts.get("checksum"):
            done["ignored"] = "checksum: the proxy has no DSS checksum option"
        return done

    def app_listen(self, port: int) -> tuple[str, int]:
        return self._proxy().app_listen(port)

    def app_command(self, role: str, argv: list[str], *, python: str, port: int) -> list[str]:
        proxy = getattr(self, "_app_proxy", None) or self._proxy({})
        return proxy.app_command(role, argv, python=python, port=port)

    def server(self, python: str, tool: Path, addr: str, port: int, out: Path) -> Command:
        cmd = super().server(python, tool, addr, port, out)
        cmd.argv[cmd.argv.index("--listen") + 1] = f"{addr}:{port}"
        cmd.argv += self._args.get(self._host_of.get(addr, ""), self._default_args)
        return _with_pm_events(cmd, out)

    def client(
        self, python: str, tool: Path, connect: str, flow: Any, seed: int, out: Path
    ) -> Command:
        cmd = super().client(python, tool, connect, flow, seed, out)
        cmd.argv += self._args.get(getattr(flow, "client", ""), self._default_args)
        return _with_pm_events(cmd, out)


def _with_pm_events(cmd: Command, out: Path | None) -> Command:
    """Our stack writes its path-manager events next to its report (the runner fetches them
    and puts them on the run's timeline beside the kernel's, testbed/pmmonitor.py); no
    report file, no events."""
    if out is None:
        return cmd
    cmd.pm_events_file = out.with_suffix(".pm.jsonl")
    cmd.argv += ["--pm-events", str(cmd.pm_events_file)]
    return cmd


BUFFER_KEYS = ("tcp_rmem", "tcp_wmem")  # our stack's rcv_buf / snd_buf under the kernel's names


def buffer_flags(opts: dict[str, Any]) -> list[str]:
    """--rcvbuf/--sndbuf for our stack's tcp_rmem/tcp_wmem (the traffic tool's and
    mptcp_impl's CLI alike)."""
    flags = {"tcp_rmem": "--rcvbuf", "tcp_wmem": "--sndbuf"}
    return [a for k, f in flags.items() if opts.get(k) for a in (f, str(opts[k]))]


STACKS: dict[str, Stack] = {s.name: s for s in (TcpStack(), KernelMptcpStack(), UserspaceStack())}

from experiments.proxy_stack import UserspaceProxyStack  # noqa: E402 (it builds on Stack)

STACKS[UserspaceProxyStack.name] = UserspaceProxyStack()


@functools.cache
def iperf3_has_mptcp(program: str = "iperf3") -> bool:
    """Whether this iperf3 takes --mptcp (3.16 and later; Debian 12's 3.12 does not)."""
    try:
        res = subprocess.run([program, "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--mptcp" in res.stdout + res.stderr


def available_schedulers() -> list[str]:
    try:
        return SCHEDULERS_FILE.read_text().split()
    except FileNotFoundError:
        return []


def get_stack(name: str) -> Stack:
    if name not in STACKS:
        raise KeyError(f"unknown stack {name!r} (known: {', '.join(STACKS)})")
    return STACKS[name]
