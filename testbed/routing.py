"""Static routing derived from a topology: pure functions, so the plan can be checked without a
network and applied by net.py.

Routers forward by destination along shortest paths (hop count, ties broken by link order in
the file, so the plan is deterministic). Bridges are transparent: the hosts and routers on a
shared segment are each other's neighbours. Hosts route by *source*: one table per interface
with `ip rule from ADDR`, so a packet leaves by the interface that owns its source address,
which is what MPTCP subflows bound to an address need. The main table sends everything else out
of the host's first link.

IPv6 (on the links that carry it) is planned the same way, by the same functions with
``family=6``: the same shortest paths over the segments with IPv6, the same table numbers (a
table holds routes of both families; `ip -6 rule from ADDR` selects it).
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass

from testbed.topology import LinkSpec, Segment, Topology

HOST_TABLE_BASE = 100


@dataclass(frozen=True)
class Route:
    dst: str  # "10.0.3.0/24" or "default"
    via: str | None  # next-hop address, None for on-link
    link: str  # the link (so the interface) it leaves by


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
    want_mbit: float | None  # the slowest link's capacity from src to dst (a trace's mean)
    want_mbit_back: float | None = None  # ... from dst to src (differs on a trace-driven link)


@dataclass(frozen=True)
class Hop:
    node: str  # the neighbour
    addr: str  # its address on the shared segment
    link: str  # our link towards it


def neighbours(topo: Topology, node: str, family: int = 4) -> list[Hop]:
    """Nodes one IP hop away, through a direct link or across a bridged segment."""
    out = []
    for link in topo.links_of(node):
        for member, addr in link.segment.addrs_of(family).items():
            if member != node:
                out.append(Hop(node=member, addr=addr, link=link.name))
    return out


def _first_hops(topo: Topology, start: str, family: int = 4) -> dict[str, tuple[int, Hop]]:
    """For every node reachable from `start`: its distance and the first hop towards it.

    Only routers forward, so the search does not continue through hosts.
    """
    first: dict[str, tuple[int, Hop]] = {}
    seen = {start}
    queue: deque[tuple[str, int]] = deque([(start, 0)])
    while queue:
        node, dist = queue.popleft()
        for hop in neighbours(topo, node, family):
            if hop.node in seen:
                continue
            seen.add(hop.node)
            first[hop.node] = (dist + 1, first[node][1] if node in first else hop)
            if topo.nodes[hop.node] == "router":
                queue.append((hop.node, dist + 1))
    return first


def _subnet(seg: Segment, family: int) -> str:
    return str(seg.subnet if family == 4 else seg.subnet6)


def router_routes(topo: Topology, router: str, family: int = 4) -> list[Route]:
    """Routes to every subnet (of that family) that is not directly attached to `router`."""
    first = _first_hops(topo, router, family)
    attached = {id(lk.segment) for lk in topo.links_of(router)}
    routes = []
    for seg in topo.segments:
        if id(seg) in attached or not seg.addrs_of(family):
            continue
        reachable = [first[m] for m in seg.addrs_of(family) if m in first]
        if not reachable:
            continue
        _, hop = min(reachable, key=lambda dh: dh[0])
        routes.append(Route(dst=_subnet(seg, family), via=hop.addr, link=hop.link))
    return routes


def _gateway(topo: Topology, host: str, link: LinkSpec, family: int = 4) -> str | None:
    """The first router on the link's segment, if any."""
    for member, addr in link.segment.addrs_of(family).items():
        if member != host and topo.nodes[member] == "router":
            return addr
    return None


def host_tables(topo: Topology, host: str, family: int = 4) -> list[SourceTable]:
    """One routing table per interface of `host`, selected by source address (with
    ``family=6``: the interfaces with IPv6, each with the table number of its IPv4 one)."""
    tables = []
    for i, link in enumerate(topo.links_of(host)):
        addrs = link.segment.addrs_of(family)
        if host not in addrs:
            continue
        routes = [Route(dst=_subnet(link.segment, family), via=None, link=link.name)]
        gw = _gateway(topo, host, link, family)
        if gw:
            routes.append(Route(dst="default", via=gw, link=link.name))
        tables.append(
            SourceTable(
                table=HOST_TABLE_BASE + i,
                src=addrs[host],
                link=link.name,
                routes=tuple(routes),
            )
        )
    return tables


def host_default(topo: Topology, host: str, family: int = 4) -> Route | None:
    """The main table's default route: out of the first link that leads to a router."""
    for link in topo.links_of(host):
        gw = _gateway(topo, host, link, family)
        if gw:
            return Route(dst="default", via=gw, link=link.name)
    return None


def _segment_links(topo: Topology, seg: Segment, a: str, b: str) -> list[LinkSpec]:
    """The links a frame crosses from `a` to `b` inside one segment (through its bridges)."""
    prev: dict[str, LinkSpec | None] = {a: None}
    queue = deque([a])
    while queue:
        node = queue.popleft()
        if node == b:
            break
        for name in seg.links:
            link = topo.links[name]
            if node in (link.a, link.b):
                nxt = link.other(node)
                if nxt not in prev and (nxt == b or topo.nodes[nxt] == "bridge"):
                    prev[nxt] = link
                    queue.append(nxt)
    chain, node = [], b
    while prev.get(node) is not None:
        link = prev[node]
        chain.append(link)
        node = link.other(node)
    return chain[::-1]


def _next_hop(topo: Topology, router: str, dst_addr: str) -> tuple[str, LinkSpec]:
    """Where `router` sends a packet for dst_addr: the next node and the link it leaves by."""
    addr = ipaddress.IPv4Address(dst_addr)
    for link in topo.links_of(router):
        if addr in link.subnet:
            return link.segment.member_at(dst_addr), link
    for r in router_routes(topo, router):
        if addr in ipaddress.IPv4Network(r.dst):
            link = topo.links[r.link]
            return link.segment.member_at(r.via), link
    raise ValueError(f"{router} has no route to {dst_addr}")


def resolve_path(topo: Topology, name: str) -> ResolvedPath:
    """Follow the forwarding plan hop by hop from the path's first link to its destination.

    The destination address is the destination host's address on its first link; the expected
    RTT is twice the one-way delays met on the way, the expected rate the slowest link's.
    """
    spec = topo.paths[name]
    first = topo.links[spec.link]
    src_addr = first.addr_of(spec.src)
    dst_addr = topo.links_of(spec.dst)[0].addr_of(spec.dst)
    if ipaddress.IPv4Address(dst_addr) in first.subnet:
        nxt = spec.dst
    else:
        gw = _gateway(topo, spec.src, first)
        if gw is None:
            raise ValueError(f"path {name}: no router on link {first.name}")
        nxt = first.segment.member_at(gw)
    links = _segment_links(topo, first.segment, spec.src, nxt)
    ups = _ups(links, spec.src)
    node = nxt
    while node != spec.dst:
        if topo.nodes[node] != "router" or len(links) > len(topo.links):
            raise ValueError(f"path {name}: no route from {spec.src} to {spec.dst} via {node}")
        nxt, link = _next_hop(topo, node, dst_addr)
        chain = _segment_links(topo, link.segment, node, nxt)
        links += chain
        ups += _ups(chain, node)
        node = nxt
    # each link's capacity in the path's direction (a trace's mean where a trace drives it)
    rates = [r for lk, up in zip(links, ups, strict=True) if (r := lk.model.mbit(up))]
    back = [r for lk, up in zip(links, ups, strict=True) if (r := lk.model.mbit(not up))]
    return ResolvedPath(
        name=name,
        src=spec.src,
        dst=spec.dst,
        src_addr=src_addr,
        dst_addr=dst_addr,
        links=tuple(lk.name for lk in links),
        want_rtt_ms=2 * sum(lk.model.delay_ms for lk in links),
        want_mbit=min(rates) if rates else None,
        want_mbit_back=min(back) if back else None,
    )


def _ups(chain: list[LinkSpec], start: str) -> list[bool]:
    """For links crossed in order from `start`: whether each is crossed from its ends[0] to its
    ends[1] ("up", the direction a link's trace_up drives)."""
    out, node = [], start
    for link in chain:
        out.append(link.a == node)
        node = link.other(node)
    return out
