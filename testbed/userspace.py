"""Our userspace MPTCP stack deployed into hosts, so that unmodified applications use it.

In each chosen host the service ``python -m mptcp_impl proxy`` runs in the host's namespace
(``Host.start``: recorded for teardown like every process): on a client, ``transparent``
carries the host's outgoing TCP (to chosen ports, or all) over our MPTCP; on a server,
``forwards`` accept MPTCP and plain TCP with our stack and hand each connection to the local
application over kernel TCP. Any tool (iperf3, curl, our traffic tool) then runs unchanged.

    services = parse_services({"client": {"transparent": True, "ports": [5201]},
                               "server": {"forward": [{"listen": 5201, "to": 15201}]}},
                              source="experiments/x.toml", where="userspace")
    with Deployment(net, services, logdir, python=sys.executable, env={"PYTHONPATH": ...}) as d:
        ...                      # run the applications
    d.results                    # {host: {"rc", "summary", "connections": [...]}}

Each deployed host gets ``net.ipv4.tcp_notsent_lowat`` (``notsent_lowat``, 128 KiB; None:
untouched), so applications do not queue megabytes in their loopback sockets to the proxy.

In ``logdir``: ``proxy-<host>.jsonl`` (the service's own JSON lines: ready, one per finished
connection with bytes each way, subflows and MIB, and the summary of its counters at exit),
``proxy-<host>.log`` (its stderr) and ``proxy.json`` (every host's results). The testbed
imports nothing of mptcp_impl: it only knows the command line.
"""

from __future__ import annotations

import json
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.errors import FieldError
from testbed.host import Process
from testbed.network import Network

OPTION_KEYS = ("endpoints", "limits", "scheduler", "tcp_only", "sender")
# An application's socket to the client's proxy is a loopback connection: nothing bounds its
# send buffer (loopback never loses, it autotunes to megabytes), so the application would count
# as sent what merely waits in it. Each deployed host's net.ipv4.tcp_notsent_lowat bounds it.
NOTSENT_LOWAT = 128 * 1024


@dataclass(frozen=True)
class ProxyService:
    """What the userspace stack does in one host."""

    host: str
    transparent: bool = False
    ports: tuple[int, ...] = ()  # with transparent: these destination ports only (() = all)
    forwards: tuple[tuple[str, str], ...] = ()  # ("ADDR:PORT" ours, "HOST:PORT" the app's)
    options: tuple[str, ...] = ()  # the CLI's --endpoint/--limits/--scheduler/... as given

    def argv(self, python: str, out: Path) -> list[str]:
        a = [python, "-m", "mptcp_impl", "proxy", "--json", "--out", str(out)]
        if self.transparent:
            a.append("--transparent")
            if self.ports:
                a += ["--ports", ",".join(map(str, self.ports))]
        for listen, to in self.forwards:
            a += ["--listen", listen, "--to", to]
        return a + list(self.options)


def _hostport(v: Any, default_host: str, source: str, where: str) -> str:
    if isinstance(v, int) and not isinstance(v, bool) and 0 < v < 65536:
        return f"{default_host}:{v}"
    if isinstance(v, str):
        host, _, port = v.rpartition(":")
        if host and port.isdigit() and 0 < int(port) < 65536:
            return v
    raise FieldError(source, where, f'expected a port or "HOST:PORT", got {v!r}')


def parse_services(table: Any, *, source: str, where: str = "userspace") -> list[ProxyService]:
    """Services from a TOML table ``{host: {transparent, ports, forward, endpoints, limits,
    scheduler, tcp_only, sender}}``. ``forward`` is a list of ``{listen, to}``: a bare port
    listens on every address (joins may come to any) and goes to 127.0.0.1.
    ``endpoints = ["10.0.2.1,subflow", ...]``, ``limits = {subflows = 2}``: as the CLI's."""
    if not isinstance(table, dict):
        raise FieldError(source, where, "expected a table {host = {...}}")
    out = []
    allowed = {"transparent", "ports", "forward", *OPTION_KEYS}
    for host, spec in table.items():
        w = f"{where}.{host}"
        if not isinstance(spec, dict):
            raise FieldError(source, w, "expected a table")
        for k in spec:
            if k not in allowed:
                raise FieldError(
                    source, f"{w}.{k}", f"unknown key (allowed: {', '.join(sorted(allowed))})"
                )
        transparent = spec.get("transparent", False)
        if not isinstance(transparent, bool):
            raise FieldError(source, f"{w}.transparent", "expected true or false")
        ports = spec.get("ports", [])
        if not isinstance(ports, list) or not all(
            isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in ports
        ):
            raise FieldError(source, f"{w}.ports", "expected a list of ports")
        if ports and not transparent:
            raise FieldError(source, f"{w}.ports", "applies with transparent = true")
        forwards = []
        fw = spec.get("forward", [])
        if not isinstance(fw, list):
            raise FieldError(source, f"{w}.forward", "expected a list of {listen, to}")
        for i, f in enumerate(fw):
            fwi = f"{w}.forward[{i}]"
            if not isinstance(f, dict) or set(f) != {"listen", "to"}:
                raise FieldError(source, fwi, "expected {listen = PORT|ADDR:PORT, to = ...}")
            forwards.append(
                (
                    _hostport(f["listen"], "0.0.0.0", source, f"{fwi}.listen"),
                    _hostport(f["to"], "127.0.0.1", source, f"{fwi}.to"),
                )
            )
        if not transparent and not forwards:
            raise FieldError(source, w, "nothing to run: transparent = true and/or forward")
        opts: list[str] = []
        eps = spec.get("endpoints", [])
        if not isinstance(eps, list) or not all(isinstance(e, str) for e in eps):
            raise FieldError(source, f"{w}.endpoints", 'expected ["ADDR[,flag...]", ...]')
        for e in eps:
            opts += ["--endpoint", e]
        limits = spec.get("limits")
        if limits is not None:
            if not isinstance(limits, dict):
                raise FieldError(source, f"{w}.limits", "expected {subflows = N, ...}")
            opts += ["--limits", ",".join(f"{k}={v}" for k, v in limits.items())]
        for key, flag in (("scheduler", "--scheduler"), ("sender", "--sender")):
            if key in spec:
                if not isinstance(spec[key], str):
                    raise FieldError(source, f"{w}.{key}", "expected a string")
                opts += [flag, spec[key]]
        if spec.get("tcp_only"):
            opts.append("--tcp-only")
        out.append(
            ProxyService(str(host), transparent, tuple(ports), tuple(forwards), options=tuple(opts))
        )
    return out


class DeploymentError(RuntimeError):
    pass


class Deployment:
    """The userspace stack's service in each chosen host, for the duration of a ``with``."""

    def __init__(
        self,
        net: Network,
        services: list[ProxyService],
        logdir: Path,
        *,
        python: str,
        env: dict[str, str] | None = None,
        ready_timeout: float = 30.0,
        notsent_lowat: int | None = NOTSENT_LOWAT,
    ) -> None:
        self.net = net
        self.services = services
        self.logdir = Path(logdir)
        self.python = python
        self.env = env
        self.ready_timeout = ready_timeout
        self.notsent_lowat = notsent_lowat
        self.procs: dict[str, Process] = {}
        self.ready: dict[str, str] = {}
        self.results: dict[str, dict[str, Any]] = {}

    def out_path(self, host: str) -> Path:
        return self.logdir / f"proxy-{host}.jsonl"

    def start(self) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)
        try:
            for svc in self.services:
                h = self.net.host(svc.host)
                if self.notsent_lowat:
                    lowat = f"net.ipv4.tcp_notsent_lowat={self.notsent_lowat}"
                    h.run(["sysctl", "-q", "-w", lowat])
                out = self.out_path(svc.host)
                p = h.start(
                    svc.argv(self.python, out),
                    stdout=subprocess.PIPE,  # the ready line, and nothing after it
                    stderr=self.logdir / f"proxy-{svc.host}.log",
                    env=self.env,
                )
                self.procs[svc.host] = p
                try:
                    self.ready[svc.host] = p.wait_for_line(
                        "^ready ", stream="stdout", timeout=self.ready_timeout
                    )
                except TimeoutError as e:
                    log = self.logdir / f"proxy-{svc.host}.log"
                    tail = log.read_text()[-2000:] if log.exists() else ""
                    raise DeploymentError(f"{e}; its log ends: {tail}") from None
        except BaseException:
            self.stop()
            raise

    def stop(self) -> dict[str, dict[str, Any]]:
        """SIGTERM each service (it resets what is open, removes its nft tables and writes its
        summary), then read what each wrote."""
        for host, p in self.procs.items():
            rc = p.returncode
            if rc is None:
                rc = p.stop(signal.SIGTERM, timeout=10)
            self.results[host] = {"rc": rc, "ready": self.ready.get(host), **self.read(host)}
        self.procs.clear()
        if self.results:
            (self.logdir / "proxy.json").write_text(json.dumps(self.results, indent=1))
        return self.results

    def read(self, host: str) -> dict[str, Any]:
        """What the service of ``host`` wrote so far: its connections and summary."""
        conns, summary = [], None
        try:
            lines = self.out_path(host).read_text().splitlines()
        except FileNotFoundError:
            lines = []
        for ln in lines:
            try:
                rec = json.loads(ln)
            except ValueError:
                continue
            if rec.get("event") == "conn":
                conns.append(rec)
            elif rec.get("event") == "summary":
                summary = rec
        return {"summary": summary, "connections": conns}

    def __enter__(self) -> Deployment:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
