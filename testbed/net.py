"""Build a topology as Mininet nodes, run it, and take it down again exactly.

No controller, no Open vSwitch: every node is a plain Mininet node (a shell in its own network
namespace), routers are nodes with forwarding on, links are veth pairs created straight inside
the two namespaces (so nothing ever appears in the root namespace). Everything the testbed
starts is recorded in testbed.registry, so `./inv clean` can remove it after a crash.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from mininet.log import setLogLevel
from mininet.net import Mininet

from testbed import registry
from testbed.capture import Capture
from testbed.emulation import EMULATED_FIELDS, EmulatedPort, RouterEmulator, shape_interface
from testbed.events import EventRun, LinkEvent
from testbed.host import Host, HostCommandError, MininetHost
from testbed.middlebox import MiddleboxPort, RouterMiddlebox
from testbed.network import NetworkBase
from testbed.routing import ResolvedPath, host_default, host_tables, resolve_path, router_routes
from testbed.signals import Interrupted, SignalGuard
from testbed.topology import LinkModel, LinkSpec, Topology, check_model, parse_conditions

log = logging.getLogger(__name__)


class Testbed(NetworkBase):
    """A running topology. Use as a context manager; every exit path tears it down."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        topo: Topology,
        *,
        workdir: Path | None = None,
        seed: int | None = None,
        offload: bool = False,
        tcp_cc: str | None = "cubic",
        middlebox_options: dict | None = None,
    ):
        """offload=False (the default) turns segmentation offload off on the hosts, so that
        every packet on a link is one segment of at most the MTU: random loss, queue limits and
        captures then count real segments. With it on, a host hands 64 KB super-packets to its
        veth, the emulator drops or delays them whole (one drop = up to 44 segments lost at
        once), and a loss rate no longer means what it says. Turn it on only for raw speed.

        tcp_cc pins the hosts' kernel congestion control (a namespace inherits the machine's
        default, which is bbr on some machines and cubic on most): results must not depend on
        which machine ran them. It is set per route (`congctl`), because a namespace may not set
        a default that the machine has not allowed. None keeps the inherited one.

        middlebox_options go to every middlebox process (testbed/mangle.py): after_bytes
        (payload-rewrite), mss_clamp and hold_ms (coalesce)."""
        self.topo = topo
        self.seed = seed
        self.offload = offload
        self.tcp_cc = tcp_cc
        # without a work folder of the caller's, a temporary one of ours, removed at stop
        self._own_workdir = not workdir
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="mptcplab-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._dir_token = registry.record_dir(self.workdir) if self._own_workdir else None
        self.models: dict[str, LinkModel] = {n: lk.model for n, lk in topo.links.items()}
        self.net: Mininet | None = None
        self.hosts: dict[str, MininetHost] = {}
        self.emulators: dict[str, RouterEmulator] = {}
        self.middleboxes: dict[str, RouterMiddlebox] = {}  # router -> its links' middleboxes
        self.middlebox_options = dict(middlebox_options or {})
        self.link_router: dict[str, str] = {}  # link -> router that emulates it
        self.paths: list[ResolvedPath] = [resolve_path(topo, p) for p in topo.paths]
        self._ns_tokens: list[str] = []
        self._captures: list[Capture] = []
        self._events: list[EventRun] = []
        self._signals = SignalGuard()  # SIGTERM unwinds `with Testbed(...)` through stop()

    # ---- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Testbed:
        self._signals.__enter__()
        try:
            self.start()
        except BaseException:
            self.stop()
            self._signals.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            self._signals.__exit__()

    def start(self) -> None:
        setLogLevel("warning")
        Mininet.inited = (
            True  # skip Mininet's fixLimits(): it would raise sysctls of the root namespace
        )
        self.net = Mininet(
            topo=None, controller=None, build=False, autoSetMacs=False, waitConnected=False
        )
        for name in self.topo.nodes:
            node = self.net.addHost(name, ip=None)
            self.hosts[name] = MininetHost(node)
            token = registry.record_netns(f"{self.topo.name}/{name}", node.pid)
            if token:
                self._ns_tokens.append(token)
        for link in self.topo.links.values():
            self.net.addLink(
                link.a,
                link.b,
                intfName1=self.intf(link.a, link.name),
                intfName2=self.intf(link.b, link.name),
            )
        self.net.build()
        for name in self.topo.nodes:
            self._configure_node(name)
        for link in self.topo.links.values():
            if link.model.rate_mbit:  # a queue limit comes with a rate (checked in topology)
                for end in (link.a, link.b):
                    shape_interface(self.hosts[end], self.intf(end, link.name), link.model)
        self._start_emulators()
        self._start_middleboxes()

    def stop(self) -> None:
        """Tear down in reverse order; each step runs even if an earlier one failed."""
        for ev in self._events:
            ev.cancel()
        for cap in self._captures:
            _quietly(cap.stop)
        # their processes only: the queue rules and tables go with the namespaces below
        for mbox in self.middleboxes.values():
            _quietly(partial(mbox.stop, namespace_going=True))
        for emu in self.emulators.values():
            _quietly(partial(emu.stop, namespace_going=True))
        for host in self.hosts.values():
            _quietly(host.stop_all)
        if self.net is not None:
            _quietly(self.net.stop)
            self.net = None
        for token in self._ns_tokens:
            registry.forget_netns(token)
        self._ns_tokens.clear()
        self._captures.clear()
        self.emulators.clear()
        self.middleboxes.clear()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            if self._dir_token is not None:
                registry.forget_dir(self._dir_token)
                self._dir_token = None

    # ---- building ----------------------------------------------------------------------------

    def intf(self, node: str, link: str) -> str:
        """Interface name of `node` on `link`: <node>-eth<index of the link among its links>."""
        names = [lk.name for lk in self.topo.links_of(node)]
        return f"{node}-eth{names.index(link)}"

    def _configure_node(self, name: str) -> None:
        host = self.hosts[name]
        is_router = self.topo.nodes[name] == "router"
        links = self.topo.links_of(name)
        sysctls = [
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
            f"net.ipv4.ip_forward={1 if is_router else 0}",
        ]
        for lk in links:
            i = self.intf(name, lk.name)
            sysctls += [f"net.ipv4.conf.{i}.rp_filter=0", f"net.ipv6.conf.{i}.disable_ipv6=1"]
        if self.topo.ipv6 and self.topo.nodes[name] != "bridge":
            # IPv6 on the links that carry it: no router advertisements or autoconfiguration
            # (the routes are ours), forwarding on routers, no duplicate address detection (a
            # router's link-local address in DAD holds forwarded packets for a second)
            sysctls += [
                f"net.ipv6.conf.all.forwarding={1 if is_router else 0}",
                "net.ipv6.conf.all.accept_dad=0",  # the link-local addresses too
            ]
            for lk in links:
                if lk.subnet6 is not None:
                    i = self.intf(name, lk.name)
                    sysctls += [  # (before IPv6 comes up: its link-local address is made then)
                        f"net.ipv6.conf.{i}.accept_ra=0",
                        f"net.ipv6.conf.{i}.autoconf=0",
                        f"net.ipv6.conf.{i}.accept_dad=0",
                        f"net.ipv6.conf.{i}.keep_addr_on_down=1",  # link events keep it
                        f"net.ipv6.conf.{i}.disable_ipv6=0",
                    ]
        host.run(["sysctl", "-q", "-w", *sysctls])
        batch = ["link set lo up"]
        if self.topo.nodes[name] == "bridge":
            # A shared segment: one Linux bridge, every interface a port, no address.
            batch.append("link add br0 type bridge stp_state 0 forward_delay 0")
            batch += [f"link set {self.intf(name, lk.name)} master br0" for lk in links]
            batch += [f"link set {self.intf(name, lk.name)} up" for lk in links]
            batch.append("link set br0 up")
        else:
            for lk in links:
                i = self.intf(name, lk.name)
                batch.append(f"addr add {lk.addr_of(name)}/{lk.subnet.prefixlen} dev {i}")
                if lk.subnet6 is not None:  # nodad: usable at once
                    batch.append(
                        f"addr add {lk.addr6_of(name)}/{lk.subnet6.prefixlen} dev {i} nodad"
                    )
                batch.append(f"link set {i} up")
                if self.topo.nodes[name] == "host" and self.tcp_cc:
                    batch.append(self._connected_route(name, lk.name))
                    if lk.subnet6 is not None:
                        batch.append(self._connected_route(name, lk.name, family=6))
        families = (4, 6) if self.topo.ipv6 else (4,)
        if is_router:
            for family in families:
                for r in router_routes(self.topo, name, family):
                    batch.append(f"route add {r.dst} via {r.via} dev {self.intf(name, r.link)}")
        rules6: list[str] = []
        if self.topo.nodes[name] == "host":
            # (`ip route` takes the family from the addresses; `ip rule` needs `ip -6`, which a
            # batch line cannot say: the IPv6 rules are a batch of their own)
            for family in families:
                default = host_default(self.topo, name, family)
                if default:
                    batch.append(
                        f"route add default via {default.via} "
                        f"dev {self.intf(name, default.link)}{self._congctl}"
                    )
                for t in host_tables(self.topo, name, family):
                    (batch if family == 4 else rules6).append(
                        f"rule add from {t.src} lookup {t.table}"
                    )
            batch += self._source_routes(name)
        host.run(["ip", "-batch", "-"], input="\n".join(batch) + "\n")
        if rules6:
            host.run(["ip", "-6", "-batch", "-"], input="\n".join(rules6) + "\n")
        if self.topo.nodes[name] == "host" and not self.offload:
            for lk in links:
                host.run(
                    [
                        "ethtool",
                        "-K",
                        self.intf(name, lk.name),
                        "tso",
                        "off",
                        "gso",
                        "off",
                        "gro",
                        "off",
                    ]
                )

    @property
    def _congctl(self) -> str:
        return f" congctl {self.tcp_cc}" if self.tcp_cc else ""

    def _connected_route(self, host: str, link: str, family: int = 4) -> str:
        """The kernel's own on-link route, re-added with the pinned congestion control."""
        lk = self.topo.links[link]
        if family == 6:  # the kernel's IPv6 prefix route: metric 256, no preferred source
            return (
                f"route replace {lk.subnet6} dev {self.intf(host, link)} proto kernel "
                f"metric 256{self._congctl}"
            )
        return (
            f"route replace {lk.subnet} dev {self.intf(host, link)} proto kernel scope link "
            f"src {lk.addr_of(host)}{self._congctl}"
        )

    def _source_routes(self, host: str, only_link: str | None = None) -> list[str]:
        out = []
        tables = host_tables(self.topo, host)
        if self.topo.ipv6:
            tables += host_tables(self.topo, host, 6)
        for t in tables:
            if only_link and t.link != only_link:
                continue
            for r in t.routes:
                via = f" via {r.via}" if r.via else ""
                src = f" src {t.src}" if r.via is None else ""
                out.append(
                    f"route replace {r.dst}{via} dev {self.intf(host, r.link)}{src} "
                    f"table {t.table}{self._congctl}"
                )
        return out

    def _emulating_router(self, link: LinkSpec) -> str | None:
        for end in (link.a, link.b):
            if self.topo.nodes[end] == "router":
                return end
        return None

    def _start_emulators(self) -> None:
        ports: dict[str, list[EmulatedPort]] = {}
        for link in self.topo.links.values():
            router = self._emulating_router(link)
            if router is None:
                continue
            self.link_router[link.name] = router
            ports.setdefault(router, []).append(
                EmulatedPort(
                    link=link.name,
                    intf=self.intf(router, link.name),
                    model=link.model,
                    router_first=router == link.a,
                )
            )
        for k, (router, plist) in enumerate(sorted(ports.items())):
            emu = RouterEmulator(
                self.hosts[router],
                plist,
                log_path=self.workdir / f"linkem-{router}.log",
                seed=None if self.seed is None else self.seed + k,
            )
            self.emulators[router] = emu
            emu.start()  # its process is recorded by pid like every process a Host starts

    def _start_middleboxes(self) -> None:
        ports: dict[str, list[MiddleboxPort]] = {}
        for link in self.topo.links.values():
            router = self._emulating_router(link)
            if router is None or link.model.middlebox == "none":
                continue
            ports.setdefault(router, []).append(
                MiddleboxPort(
                    link=link.name,
                    intf=self.intf(router, link.name),
                    kind=link.model.middlebox,
                    subnet=link.subnet,
                )
            )
        for k, (router, plist) in enumerate(sorted(ports.items())):
            mbox = RouterMiddlebox(
                self.hosts[router],
                plist,
                log_path=self.workdir / f"middlebox-{router}.log",
                seed=None if self.seed is None else self.seed + k,
                options=self.middlebox_options,
            )
            self.middleboxes[router] = mbox
            mbox.start()

    def emulator_stats(self) -> dict[str, dict[str, dict]]:
        """What the link emulators did so far, per link and direction named by its ends
        ("client->r1"): packets, reordered, duplicated, lost (RouterEmulator.stats). Links
        whose packets never went through an emulator are left out."""
        out: dict[str, dict[str, dict]] = {}
        for router, emu in self.emulators.items():
            for link, st in emu.stats().items():
                spec = self.topo.links[link]
                other = spec.other(router)
                dirs = {f"{other}->{router}": st["in"], f"{router}->{other}": st["out"]}
                if any(d.get("packets") or d.get("random_lost") for d in dirs.values()):
                    out[link] = dirs
        return out

    def middlebox_stats(self) -> dict[str, dict]:
        """What every middlebox did so far, per link (RouterMiddlebox.stats)."""
        out: dict[str, dict] = {}
        for mbox in self.middleboxes.values():
            out.update(mbox.stats())
        return out

    # ---- use ---------------------------------------------------------------------------------

    def host(self, name: str) -> Host:
        if name not in self.hosts:
            raise KeyError(f"no node {name!r} in topology {self.topo.name}")
        return self.hosts[name]

    def addr(self, host: str, link: str) -> str:
        return self.topo.links[link].addr_of(host)

    def addr6(self, host: str, link: str) -> str:
        """A host's IPv6 address on a link that carries IPv6 (KeyError otherwise)."""
        return self.topo.links[link].addr6_of(host)

    def path(self, name: str) -> ResolvedPath:
        for p in self.paths:
            if p.name == name:
                return p
        raise KeyError(f"no path {name!r} in topology {self.topo.name}")

    def capture(self, outdir: Path, hosts: list[str] | None = None, snaplen: int = 128) -> Capture:
        """tcpdump on chosen interfaces; returns once every tcpdump listens.

        `hosts` entries are host names (all of that host's interfaces) or interface names
        ("client-eth1"); the default is every interface of every host, i.e. both endpoints.
        """
        intf_owner = {
            self.intf(h, lk.name): h for h in self.topo.hosts for lk in self.topo.links_of(h)
        }
        targets = []
        for entry in hosts or self.topo.hosts:
            if entry in intf_owner:
                targets.append((self.hosts[intf_owner[entry]], entry))
            elif self.topo.nodes.get(entry) == "host":
                targets += [
                    (self.hosts[entry], self.intf(entry, lk.name))
                    for lk in self.topo.links_of(entry)
                ]
            else:
                raise KeyError(f"capture: {entry!r} is neither a host nor a host interface")
        cap = Capture(targets, Path(outdir), snaplen=snaplen)
        self._captures.append(cap)
        cap.start()
        return cap

    def default_endpoints(self, host: str, flags: str = "subflow") -> list[tuple[str, str, str]]:
        """A multi-homed host's extra addresses (all but the first, which the connection uses
        itself) as endpoints with `flags`, each bound to its device."""
        links = self.topo.links_of(host)
        return [(lk.addr_of(host), self.intf(host, lk.name), flags) for lk in links[1:]]

    def kernel_mptcp_default(self, flags: str = "subflow") -> None:
        """Every host: generous limits and default_endpoints()."""
        for h in self.topo.hosts:
            self.kernel_mptcp(h, endpoints=self.default_endpoints(h, flags))

    # ---- link events -------------------------------------------------------------------------

    def _host_end(self, link: LinkSpec) -> str:
        for end in (link.a, link.b):
            if self.topo.nodes[end] == "host":
                return end
        return link.a

    def link_down(self, link: str, mode: str = "blackhole") -> None:
        self._link_state(link, up=False, mode=mode)

    def link_up(self, link: str, mode: str = "blackhole") -> None:
        self._link_state(link, up=True, mode=mode)

    def _link_state(self, link: str, *, up: bool, mode: str) -> None:
        spec = self.topo.links[link]
        if mode == "blackhole":
            router = self.link_router.get(link)
            if router is None:
                raise ValueError(f"link {link} has no router end to blackhole it on")
            self.emulators[router].blackhole(link, not up)
        elif mode == "interface":
            end = self._host_end(spec)
            intf = self.intf(end, link)
            batch = [f"link set {intf} {'up' if up else 'down'}"]
            if up and self.topo.nodes[end] == "host":
                # Taking an interface down flushes its routes; put the source table back.
                batch += self._source_routes(end, only_link=link)
                for family in (4, 6) if spec.subnet6 is not None else (4,):
                    default = host_default(self.topo, end, family)
                    if default and default.link == link:
                        batch.append(
                            f"route replace default via {default.via} dev {intf}{self._congctl}"
                        )
                if self.tcp_cc:
                    batch.append(self._connected_route(end, link))
                    if spec.subnet6 is not None:
                        batch.append(self._connected_route(end, link, family=6))
            self.hosts[end].run(["ip", "-batch", "-"], input="\n".join(batch) + "\n")
        else:
            raise ValueError(f"unknown link event mode {mode!r} (blackhole or interface)")

    def set_link(self, link: str, **changes: Any) -> None:
        """Change a link's model while it runs (rate/queue with tc, the rest in the emulator)."""
        spec = self.topo.links[link]
        if "middlebox" in changes:
            raise ValueError("a link's middlebox is set in the topology, not changed at run time")
        for name in ("trace_down", "trace_up"):
            if name in changes:
                raise ValueError(f"a link's {name} is set in the topology, not changed at run time")
        # The conditions as a file states them (loss_model as a table): typed and checked
        # like the file, and the result must make sense as a whole (reordering needs a delay).
        changes = {**changes, **parse_conditions(self.topo.source, f"links.{link}", changes)}
        model = replace(self.models[link], **changes)
        check_model(self.topo.source, f"links.{link}", model)
        emulated = changes.keys() & set(EMULATED_FIELDS)
        router = self.link_router.get(link)
        if emulated and router is None:
            raise ValueError(f"link {link} has no router end to emulate on")
        self.models[link] = model
        if {"rate_mbit", "queue_pkts"} & changes.keys():
            for end in (spec.a, spec.b):
                shape_interface(self.hosts[end], self.intf(end, link), model)
        if router is not None:
            self.emulators[router].set_model(link, model)  # the same object: one copy

    def apply(self, event: LinkEvent) -> None:
        if event.action == "down":
            self.link_down(event.link, mode=event.mode)
        elif event.action == "up":
            self.link_up(event.link, mode=event.mode)
        elif event.action == "set":
            self.set_link(event.link, **event.params)
        else:
            raise ValueError(f"unknown link event action {event.action!r}")

    def schedule(self, events: list[LinkEvent], t0: float | None = None) -> EventRun:
        """Run `events` at their times (seconds after t0, a time.monotonic() value)."""
        for ev in events:
            if ev.link not in self.topo.links:
                raise ValueError(f"event at {ev.at}s names unknown link {ev.link!r}")
        run = EventRun(self.apply, events, t0 if t0 is not None else time.monotonic())
        self._events.append(run)
        run.start()
        return run


def _quietly(fn) -> None:
    try:
        fn()
    except (Exception, Interrupted) as e:  # teardown goes on whatever one step says
        log.warning("teardown step %s failed: %s", getattr(fn, "__qualname__", fn), e)


__all__ = ["Testbed", "Interrupted", "HostCommandError"]
