"""Static routing derived from a topology: pure functions, so the plan can be checked without a
network and applied by net.py.

Routers forward by destination along shortest paths (hop count, ties broken by link order in
the file, so the plan is deterministic). Hosts route by *source*: one table per interface with
`ip rule from ADDR`, so a packet leaves by the interface that owns its source address, which is
what MPTCP subflows bound to an address need. The main table sends everything else out of the
host's first link.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass

from testbed.topology import LinkSpec, Topology

HOST_TABLE_BASE = 100


@dataclass(frozen=True)
class Route:
    dst: str          # "10.0.3.0/24" or "default"
    via: str | None   # next-hop address, None for on-link
    link: str         # the link (so the interface) it leaves by


@dataclass(frozen=True)
class SourceTable:
    table: int
    src: str
    link: str
    routes: tuple[Route, ...]


@dataclass(frozen=True)
class ResolvedPath:
    name: str
    src: str
    dst: str
    src_addr: str
    dst_addr: str
    links: tuple[str, ...]
    want_rtt_ms: float
    want_mbit: float | None


def _next_hops(topo: Topology, start: str) -> dict[str, tuple[int, LinkSpec]]:
    """For every node reachable from `start`: its hop distance and the first link towards it.

    Only routers forward, so the search does not go through hosts. Links are visited in file
    order, which makes ties deterministic.
    """
    first: dict[str, tuple[int, LinkSpec]] = {}
    seen = {start}
    queue: deque[tuple[str, int]] = deque([(start, 0)])
    while queue:
        node, dist = queue.popleft()
        for link in topo.links_of(node):
            nxt = link.other(node)
            if nxt in seen:
                continue
            seen.add(nxt)
            first[nxt] = (dist + 1, first[node][1] if node in first else link)
            if topo.nodes[nxt] == "router":
                queue.append((nxt, dist + 1))
    return first


def router_routes(topo: Topology, router: str) -> list[Route]:
    """Routes to every subnet that is not directly attached to `router`."""
    first = _next_hops(topo, router)
    attached = {lk.name for lk in topo.links_of(router)}
    routes = []
    for link in topo.links.values():
        if link.name in attached:
            continue
        reachable = [first[e] for e in (link.a, link.b) if e in first]
        if not reachable:
            continue
        _, out = min(reachable, key=lambda dl: dl[0])
        routes.append(Route(dst=str(link.subnet), via=out.addr_of(out.other(router)),
                            link=out.name))
    return routes


def _gateway(topo: Topology, host: str, link: LinkSpec) -> str | None:
    peer = link.other(host)
    return link.addr_of(peer) if topo.nodes[peer] == "router" else None


def host_tables(topo: Topology, host: str) -> list[SourceTable]:
    """One routing table per interface of `host`, selected by source address."""
    tables = []
    for i, link in enumerate(topo.links_of(host)):
        routes = [Route(dst=str(link.subnet), via=None, link=link.name)]
        gw = _gateway(topo, host, link)
        if gw:
            routes.append(Route(dst="default", via=gw, link=link.name))
        tables.append(SourceTable(table=HOST_TABLE_BASE + i, src=link.addr_of(host),
                                  link=link.name, routes=tuple(routes)))
    return tables


def host_default(topo: Topology, host: str) -> Route | None:
    """The main table's default route: out of the first link that leads to a router."""
    for link in topo.links_of(host):
        gw = _gateway(topo, host, link)
        if gw:
            return Route(dst="default", via=gw, link=link.name)
    return None


def _route_lookup(topo: Topology, router: str, dst_addr: str) -> LinkSpec | None:
    addr = ipaddress.IPv4Address(dst_addr)
    for link in topo.links_of(router):
        if addr in link.subnet:
            return link
    for r in router_routes(topo, router):
        if addr in ipaddress.IPv4Network(r.dst):
            return topo.links[r.link]
    return None


def resolve_path(topo: Topology, name: str) -> ResolvedPath:
    """Follow the forwarding plan hop by hop from the path's first link to its destination.

    The destination address is the destination host's address on its first link; the expected
    RTT is twice the one-way delays met on the way, the expected rate the slowest link's.
    """
    spec = topo.paths[name]
    first = topo.links[spec.link]
    src_addr = first.addr_of(spec.src)
    dst_link = topo.links_of(spec.dst)[0]
    dst_addr = dst_link.addr_of(spec.dst)
    links = [first]
    node = first.other(spec.src)
    hops = 0
    while node != spec.dst:
        if topo.nodes[node] != "router" or hops > len(topo.links):
            raise ValueError(f"path {name}: no route from {spec.src} to {spec.dst} via {node}")
        link = _route_lookup(topo, node, dst_addr)
        if link is None:
            raise ValueError(f"path {name}: {node} has no route to {dst_addr}")
        links.append(link)
        node = link.other(node)
        hops += 1
    rates = [lk.model.rate_mbit for lk in links if lk.model.rate_mbit]
    return ResolvedPath(
        name=name, src=spec.src, dst=spec.dst, src_addr=src_addr, dst_addr=dst_addr,
        links=tuple(lk.name for lk in links),
        want_rtt_ms=2 * sum(lk.model.delay_ms for lk in links),
        want_mbit=min(rates) if rates else None,
    )
