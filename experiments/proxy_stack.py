"""The `userspace-proxy` stack: our userspace MPTCP under the unmodified traffic tool.

Each end of a flow runs our traffic tool exactly as for the `tcp` stack (kernel TCP sockets),
under ``python -m mptcp_impl proxy ... -- TOOL ...`` in its host's namespace:

- the client: ``--transparent --ports PORT``: the tool's connection to the server is redirected
  to the proxy, which carries it over our MPTCP (a subflow from each other address);
- the server: ``--listen 0.0.0.0:PORT --to 127.0.0.1:APP_PORT``: our stack accepts MPTCP (and
  TCP) on the flow's port and hands the connection to the tool listening on loopback.

So every traffic kind and direction works, with the tool's 100 ms samples, as for the kernel
stacks; ``--annotate`` adds the proxy's per-subflow bytes every 100 ms, the number of subflows
and fallback to the tool's report (what the kernel's MPTCP socket options give for the others). The proxy runs the tool as its child and exits with its status once its connections are
done; the runner starts, records and stops it like any peer. Its JSON lines (one per connection:
bytes each way, every subflow, the MIB; its counters at exit) go to the peer's stderr log in the
run's ``logs/``.

Options ([stack.userspace-proxy]): the userspace stack's plug-ins (``scheduler``, ``cc``,
``pm``, ``opportunistic``: experiments/plugin_options.py), ``limits = {subflows = N,
add_addr_accepted = N}`` (both ends), ``tcp_rmem``/``tcp_wmem`` (bytes: our stack's receive
and send buffers at both proxies, ``--rcvbuf``/``--sndbuf``), ``tcp_only = true`` (plain TCP: the proxy's overhead
alone), ``notsent_lowat`` (bytes; the hosts' ``net.ipv4.tcp_notsent_lowat``, 128 KiB: what an
application may queue unsent in its loopback socket to the proxy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments import knobs, plugin_options
from experiments.errors import ExperimentError
from experiments.stacks import Command, Stack

NOTSENT_LOWAT = 128 * 1024


def app_port(port: int) -> int:
    """Where the server's tool listens on loopback, behind our stack on ``port``."""
    return port + 10000 if port < 55536 else port - 10000


class UserspaceProxyStack(Stack):
    name = "userspace-proxy"
    proto = "tcp"  # the tool's own sockets are kernel TCP; our stack carries them
    description = (
        "our userspace MPTCP under the unmodified traffic tool (python -m mptcp_impl proxy)"
    )

    def validate_options(self, source: str, where: str, opts: dict[str, Any]) -> dict[str, Any]:
        # the research plug-ins as the userspace stack takes them (scheduler, cc, pm,
        # opportunistic), then the proxy's own keys
        plug = {k: v for k, v in opts.items() if k in plugin_options.KEYS}
        out: dict[str, Any] = plugin_options.validate(source, where, plug)
        for k, v in opts.items():
            if k in plugin_options.KEYS:
                continue
            if k == "limits":
                if not isinstance(v, dict) or any(
                    key not in ("subflows", "add_addr_accepted")
                    or isinstance(n, bool)
                    or not isinstance(n, int)
                    or not 0 <= n <= 8
                    for key, n in v.items()
                ):
                    raise ExperimentError(
                        source,
                        f"{where}.limits",
                        "expected {subflows = 0..8, add_addr_accepted = 0..8}",
                    )
                out["limits"] = dict(v)
            elif k == "notsent_lowat":
                if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                    raise ExperimentError(source, f"{where}.{k}", "expected bytes > 0")
                out[k] = v
            elif k in ("tcp_rmem", "tcp_wmem"):
                out[k] = knobs.userspace_buffer(source, f"{where}.{k}", v)
            elif k == "tcp_only":
                if not isinstance(v, bool):
                    raise ExperimentError(source, f"{where}.tcp_only", "expected true or false")
                out["tcp_only"] = v
            else:
                allowed = sorted(
                    [*plugin_options.KEYS, "limits", "tcp_only", "notsent_lowat"]
                    + ["tcp_rmem", "tcp_wmem"]
                )
                raise ExperimentError(
                    source, f"{where}.{k}", f"unknown key (allowed: {', '.join(allowed)})"
                )
        return out

    def check_available(self) -> None:
        from experiments.stacks import STACKS

        STACKS["userspace"].check_available()

    # The runner hands no options to server()/client(); setup() keeps them for both.
    _opts: dict[str, Any] = {}

    def setup(self, tb: Any, opts: dict[str, Any], hosts: list[str]) -> dict[str, Any]:
        self._opts = dict(opts)
        # The tool's socket is a loopback connection to the proxy: with nothing else to bound
        # it, its send buffer autotunes to megabytes (loopback never loses), which the tool
        # counts as sent and a timed flow then drains for seconds after its end. As with the
        # kernel stacks, only what the network path holds should be in flight.
        lowat = self._opts.get("notsent_lowat", NOTSENT_LOWAT)
        for h in hosts:
            tb.host(h).run(["sysctl", "-q", "-w", f"net.ipv4.tcp_notsent_lowat={lowat}"])
        return {"proxy_options": self._flags(), "tcp_notsent_lowat": lowat}

    def _flags(self) -> list[str]:
        o = self._opts
        flags = ["--json"]
        if o.get("limits"):
            flags += ["--limits", ",".join(f"{k}={v}" for k, v in o["limits"].items())]
        flags += plugin_options.flags(o)
        from experiments.stacks import buffer_flags

        flags += buffer_flags(o)
        if o.get("tcp_only"):
            flags.append("--tcp-only")
        return flags

    def app_listen(self, port: int) -> tuple[str, int]:
        """Behind our stack the program listens on loopback; our stack takes the flow's port."""
        return "127.0.0.1", app_port(port)

    def app_command(self, role: str, argv: list[str], *, python: str, port: int) -> list[str]:
        """The program under the proxy, as the traffic tool runs under it (without --annotate:
        the program writes no report of our tool's schema)."""
        proxy = [python, "-m", "mptcp_impl", "proxy", *self._flags()]
        if role == "server":
            proxy += ["--listen", f"0.0.0.0:{port}", "--to", f"127.0.0.1:{app_port(port)}"]
        else:
            proxy += ["--transparent", "--ports", str(port)]
        return [*proxy, "--", *argv]

    def server(self, python: str, tool: Path, addr: str, port: int, out: Path) -> Command:
        inner = super().server(python, tool, addr, port, out)
        a = app_port(port)
        argv = [f"127.0.0.1:{a}" if x == f"0.0.0.0:{port}" else x for x in inner.argv]
        proxy = [python, "-m", "mptcp_impl", "proxy", *self._flags()]
        proxy += ["--listen", f"0.0.0.0:{port}", "--to", f"127.0.0.1:{a}"]
        proxy += ["--annotate", str(out), "--"]
        return Command([*proxy, *argv], inner.out_file, inner.ready_pattern, inner.ready_stream)

    def client(
        self, python: str, tool: Path, connect: str, flow: Any, seed: int, out: Path
    ) -> Command:
        inner = super().client(python, tool, connect, flow, seed, out)
        port = connect.rpartition(":")[2]
        proxy = [python, "-m", "mptcp_impl", "proxy", *self._flags()]
        proxy += ["--transparent", "--ports", port, "--annotate", str(out), "--"]
        return Command(
            [*proxy, *inner.argv], inner.out_file, inner.ready_pattern, inner.ready_stream
        )
