"""Topology files: nodes, links with their model, and named paths, read from TOML.

A topology is data a user writes, so every mistake must come back as an error that names the
file and the field; everything else in the testbed can then trust a `Topology`.

File format (see topologies/*.toml)::

    description = "one line shown by ./inv list"
    [nodes]
    client = "host"          # or "router"
    [links.wifi]
    ends = ["client", "r1"]
    rate_mbit = 20           # optional: htb rate on both ends
    delay_ms = 10            # optional: one-way delay each direction (emulated on a router end)
    jitter_ms = 0
    loss_pct = 0
    queue_pkts = 100         # optional: queue limit at the rate limiter (or the trace queue)
    trace_down = "traces/Verizon-LTE-short.down"  # optional, instead of rate_mbit: the
    trace_up = "traces/Verizon-LTE-short.up"      # capacity of ends[1] -> ends[0] (down) and
                             # ends[0] -> ends[1] (up) from a Mahimahi trace (testbed/trace.py);
                             # a path relative to the topology file's folder, or absolute
    middlebox = "nat"        # optional: a middlebox on the router end (see MIDDLEBOXES)
    [paths.wifi]
    from = "client"
    link = "wifi"            # the first link: selects the source interface and address
    to = "server"

Addresses are derived: the k-th link (in file order) is 10.0.k.0/24, `ends[0]` gets .1 and
`ends[1]` gets .2, unless the link sets `subnet = "A.B.C.0/24"`. A node of kind "bridge" is a
Linux bridge: the links that meet at bridges form one shared segment with the subnet of its first
link, and the hosts and routers on it are numbered .1, .2, ... in the order their links appear.

IPv6 beside IPv4: `ip = ["4", "6"]` at the top level puts IPv6 on every link, `ipv6 = true` (or
false) on a link decides for that link. The k-th link's IPv6 subnet is fd00:0:k::/64, numbered
::1, ::2, ... like the IPv4 one (a shared segment carries IPv6 if any of its links does).
IPv4 is always there: the paths and the link emulation are planned on it.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from testbed.errors import FieldError
from testbed.trace import Trace, TraceError, read_trace

TOPOLOGY_DIR = Path(__file__).resolve().parent.parent / "topologies"
NODE_KINDS = ("host", "router", "bridge")
NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,9}$")  # short: Mininet names interfaces <node>-ethN
LINK_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
MODEL_FIELDS = {
    "rate_mbit",
    "delay_ms",
    "jitter_ms",
    "loss_pct",
    "queue_pkts",
    "middlebox",
    "delay_distribution",
    "jitter_reorders",
    "reorder_pct",
    "reorder_gap",
    "duplicate_pct",
    "loss_model",
    "trace_down",
    "trace_up",
    "corrupt_pct",
    "corrupt_fix_checksum",
}
# The fields a `set` link event may change at run time (rate and queue with tc, the rest in the
# router's emulator); the middlebox and the traces are fixed for a run.
FIXED_FIELDS = {"middlebox", "trace_down", "trace_up"}
SET_FIELDS = tuple(sorted(MODEL_FIELDS - FIXED_FIELDS))
# Trace directions: "down" carries what goes from ends[1] to ends[0] (toward the link's first
# end: the mobile user, the client in our files), "up" what goes from ends[0] to ends[1].
TRACE_FIELDS = ("trace_down", "trace_up")
DELAY_DISTRIBUTIONS = ("uniform", "normal", "pareto", "paretonormal")
GE_FIELDS = ("p", "r", "h", "k")
# What a link's middlebox does to the TCP segments crossing its router end (testbed/middlebox.py):
MIDDLEBOXES = {
    "none": "nothing",
    "strip-mptcp": "MPTCP options (kind 30) replaced by NOPs on every segment, both directions",
    "strip-mptcp-syn": "MPTCP options replaced by NOPs on SYN and SYN/ACK segments only",
    "strip-mptcp-after-syn": "MPTCP options replaced by NOPs on every segment but SYNs: the "
    "handshake passes, the third ACK and everything after it lose them",
    "seq-rewrite": "each flow's TCP sequence numbers shifted by a random offset per direction "
    "(ACK and SACK translated back)",
    "payload-rewrite": "one byte of one data segment per flow and direction changed "
    "(TCP checksum fixed up, so TCP accepts it)",
    "nat": "source NAT (masquerade) of what comes from the link's far side; no connection "
    "from outside gets in",
    "coalesce": "MSS clamped to half on SYNs, then pairs of consecutive segments merged into one "
    "(LRO-like; the first segment's options kept)",
    "split": "every data segment of more than 64 bytes cut into two (TSO-like; options copied)",
}
LINK_FIELDS = MODEL_FIELDS | {"ends", "subnet", "ipv6"}
PATH_FIELDS = {"from", "link", "to"}
TOP_FIELDS = {"description", "nodes", "links", "paths", "ip"}
IP_VERSIONS = ("4", "6")


class TopologyError(FieldError):
    """A topology file (or an override) is wrong; the message names the file and the field."""


@dataclass(frozen=True)
class LossModel:
    """netem's Gilbert-Elliott model (gemodel), in percent: p = chance to go good -> bad per
    packet, r = bad -> good, h = chance a packet gets through in the bad state, k = in the good
    state (tc's command line takes 1-h and 1-k instead). Defaults as tc's: r = 100 - p (then it
    is plain random loss), h = 0 (the bad state loses everything), k = 100."""

    p: float
    r: float
    h: float = 0.0
    k: float = 100.0

    @property
    def mean_loss_pct(self) -> float:
        """The stationary loss rate: P(bad) (1 - h) + P(good) (1 - k)."""
        if self.p + self.r == 0:
            return 100.0 - self.k
        bad = self.p / (self.p + self.r)
        return bad * (100.0 - self.h) + (1 - bad) * (100.0 - self.k)

    @property
    def mean_burst(self) -> float | None:
        """Mean length of a run of consecutive losses, known in closed form for the simple
        Gilbert model (h = 0, k = 100: every bad-state packet lost, none in good): the bad
        state's mean length, 100 / r. None otherwise."""
        if self.h == 0 and self.k == 100 and self.r > 0:
            return 100.0 / self.r
        return None

    def as_dict(self) -> dict[str, float]:
        return {"p": self.p, "r": self.r, "h": self.h, "k": self.k}


@dataclass
class LinkModel:
    """One link's behaviour, the same in each direction."""

    rate_mbit: float | None = None  # htb rate; None = unshaped
    delay_ms: float = 0.0  # one-way delay added in each direction
    jitter_ms: float = 0.0  # around delay_ms; never reorders unless jitter_reorders
    loss_pct: float = 0.0  # random loss in each direction (nft numgen in the kernel)
    queue_pkts: int | None = None  # queue_pkts*1514 bytes at the rate limiter (None: 1000 pkts)
    # the jitter's shape: "uniform" in [-jitter, +jitter] (netem without a table), or "normal",
    # "pareto", "paretonormal" with sigma = jitter (netem's tables)
    delay_distribution: str = "uniform"
    middlebox: str = "none"  # one of MIDDLEBOXES, on the link's router end
    jitter_reorders: bool = False  # each packet keeps its own jittered delay (netem's jitter)
    reorder_pct: float = 0.0  # netem reorder: a share of packets sent at once, ahead of the rest
    reorder_gap: int = 1  # netem gap: gap - 1 packets delayed after each reordered one
    duplicate_pct: float = 0.0  # a share of packets sent twice
    loss_model: LossModel | None = None  # Gilbert-Elliott loss, beside loss_pct
    # Mahimahi traces instead of rate_mbit: down = ends[1] -> ends[0], up = ends[0] -> ends[1]
    trace_down: Trace | None = None
    trace_up: Trace | None = None

    # A share of the TCP segments that carry payload get one random bit of their payload
    # flipped on the router. Segments without payload (SYNs, pure ACKs) are never touched: a
    # flipped header bit is another fault (a segment of another port or sequence number), and
    # without payload there is nothing whose damage only a checksum could tell.
    corrupt_pct: float = 0.0
    # False: the TCP checksum is left as it was, so it is wrong and the receiving TCP drops
    # the segment (netem's corrupt); True: recomputed, so TCP accepts the damaged data and
    # only an end-to-end check, MPTCP's DSS checksum, can notice.
    corrupt_fix_checksum: bool = False

    def conditions(self) -> dict[str, str]:
        """The fields that differ from a default link, each as "value unit" in words (for
        reports: what the run's links did, after overrides and grid point). Generic over the
        dataclass's fields, so a new field shows up without a change here; its unit comes from
        its name's suffix (UNITS)."""
        default = LinkModel()
        return {
            f.name: describe_value(f.name, getattr(self, f.name))
            for f in fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        }

    @property
    def delayed(self) -> bool:
        """Whether the link's packets go through the router's emulator process (a delay queue)."""
        return (
            self.delay_ms > 0
            or self.jitter_ms > 0
            or self.reorder_pct > 0
            or self.duplicate_pct > 0
            or self.loss_model is not None
            or self.trace_down is not None
            or self.trace_up is not None
            or self.corrupt_pct > 0
        )

    @property
    def traced(self) -> bool:
        return self.trace_down is not None or self.trace_up is not None

    def mbit(self, up: bool) -> float | None:
        """The link's capacity in one direction (up: ends[0] -> ends[1]): rate_mbit, or the
        mean of that direction's trace; None when unshaped."""
        trace = self.trace_up if up else self.trace_down
        return trace.mean_mbit if trace is not None else self.rate_mbit


# A field's unit from its name's suffix (the file format's convention), for reports.
UNITS = {"_mbit": "Mbit/s", "_ms": "ms", "_pct": "%", "_pkts": "packets"}


def describe_value(name: str, value: Any) -> str:
    """One LinkModel field's value with its unit: "2 %", "10 ms", "Gilbert-Elliott p=1 % ..."."""
    if isinstance(value, LossModel):
        extra = f", mean loss {value.mean_loss_pct:.3g} %"
        if value.mean_burst is not None:
            extra += f", mean burst {value.mean_burst:.3g} packets"
        return (
            f"Gilbert-Elliott p={value.p:g} % r={value.r:g} % h={value.h:g} % k={value.k:g} %"
            + extra
        )
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Path):
        return value.name
    if isinstance(value, float):
        value = f"{value:g}"
    unit = next((u for suffix, u in UNITS.items() if name.endswith(suffix)), "")
    return f"{value} {unit}".strip()


@dataclass(frozen=True)
class Segment:
    """One IP subnet: a single link, or every link that meets at bridges."""

    subnet: ipaddress.IPv4Network
    links: tuple[str, ...]
    addrs: dict[str, str]  # member (host or router) -> its address, in link order
    subnet6: ipaddress.IPv6Network | None = None  # None: no IPv6 on this segment
    addrs6: dict[str, str] = field(default_factory=dict)  # member -> its IPv6 address

    def member_at(self, addr: str) -> str:
        return next(n for n, a in [*self.addrs.items(), *self.addrs6.items()] if a == addr)

    def addrs_of(self, family: int) -> dict[str, str]:
        """The members' addresses of one family (4 or 6; none when the segment lacks it)."""
        return self.addrs if family == 4 else self.addrs6


@dataclass(frozen=True)
class LinkSpec:
    name: str
    a: str
    b: str
    model: LinkModel
    segment: Segment

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return self.segment.subnet

    @property
    def subnet6(self) -> ipaddress.IPv6Network | None:
        return self.segment.subnet6

    def addr_of(self, node: str) -> str:
        if node not in (self.a, self.b) or node not in self.segment.addrs:
            raise KeyError(f"{node} has no address on link {self.name}")
        return self.segment.addrs[node]

    def addr6_of(self, node: str) -> str:
        if node not in (self.a, self.b) or node not in self.segment.addrs6:
            raise KeyError(f"{node} has no IPv6 address on link {self.name}")
        return self.segment.addrs6[node]

    def other(self, node: str) -> str:
        return self.b if node == self.a else self.a


@dataclass(frozen=True)
class PathSpec:
    name: str
    src: str
    link: str
    dst: str


@dataclass(frozen=True)
class Topology:
    name: str
    description: str
    source: str
    nodes: dict[str, str]
    links: dict[str, LinkSpec]
    paths: dict[str, PathSpec]
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def hosts(self) -> list[str]:
        return [n for n, kind in self.nodes.items() if kind == "host"]

    @property
    def routers(self) -> list[str]:
        return [n for n, kind in self.nodes.items() if kind == "router"]

    @property
    def ipv6(self) -> bool:
        """Whether any link carries IPv6."""
        return any(s.subnet6 is not None for s in self.segments)

    @property
    def segments(self) -> list[Segment]:
        out: list[Segment] = []
        for lk in self.links.values():
            if all(lk.segment is not s for s in out):
                out.append(lk.segment)
        return out

    def links_of(self, node: str) -> list[LinkSpec]:
        """The node's links in file order: this order gives its interface numbers (ethN)."""
        return [lk for lk in self.links.values() if node in (lk.a, lk.b)]


def toml_path(directory: Path, name_or_path: str | Path) -> Path:
    """A file given by path, or by name among directory/*.toml (shared with experiments/)."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        return p
    return directory / f"{name_or_path}.toml"


def describe_files(directory: Path) -> list[tuple[str, str]]:
    """(name, description) of every *.toml in a folder, for ./inv list."""
    out = []
    for f in sorted(directory.glob("*.toml")):
        try:
            desc = str(tomllib.loads(f.read_text()).get("description", ""))
        except tomllib.TOMLDecodeError as e:
            desc = f"(unreadable: {e})"
        out.append((f.stem, desc))
    return out


def read_toml(
    path: Path, error: type[FieldError], kind: str, directory: Path
) -> tuple[str, dict[str, Any]]:
    """A user's TOML file as text and as data (shared with experiments/); a missing file names
    the shipped ones in `directory`, a syntax error says where."""
    if not path.exists():
        known = ", ".join(n for n, _ in describe_files(directory))
        raise error(path, "(file)", f"no such {kind} file (known: {known})")
    text = path.read_text()
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise error(path, "(syntax)", str(e)) from None


def topology_path(name_or_path: str | Path) -> Path:
    return toml_path(TOPOLOGY_DIR, name_or_path)


def list_topologies() -> list[tuple[str, str]]:
    """(name, description) of every topology file shipped under topologies/."""
    return describe_files(TOPOLOGY_DIR)


def load_topology(
    name_or_path: str | Path, overrides: dict[str, Any] | list[str] | None = None
) -> Topology:
    """Read, override and validate a topology.

    `overrides` maps dotted keys to values ({"links.lte.delay_ms": 50}) or is a list of
    "key=value" strings as typed on a command line; the values go through the same validation
    as the file, so a bad override is reported like a bad file.
    """
    path = topology_path(name_or_path)
    source = str(path)
    _, raw = read_toml(path, TopologyError, "topology", TOPOLOGY_DIR)
    for key, value in parse_overrides(overrides, source).items():
        apply_override(raw, key, value, source)
    return parse_topology(raw, name=path.stem, source=source)


def parse_overrides(overrides: dict[str, Any] | list[str] | None, source: str) -> dict[str, Any]:
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    return dict(parse_override(item, source) for item in overrides)


def parse_override(
    item: str, source: str, error: type[FieldError] = TopologyError
) -> tuple[str, Any]:
    """One "key=value" as typed after --set: the dotted key and its value (as TOML reads it)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise error(source, item, "an override is written key=value")
    return key, parse_scalar(text.strip())


def parse_scalar(text: str) -> Any:
    """A command-line value as TOML would read it (numbers, booleans, strings, lists)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(raw: dict[str, Any], key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(parts[: i + 1])
            raise TopologyError(source, key, f"override names {where!r}, which the topology lacks")
        node = node[part]
    if not isinstance(node, dict):
        raise TopologyError(source, key, "override does not name a field of a table")
    node[parts[-1]] = value


def _number(
    source: str, where: str, value: Any, *, lo: float, hi: float, integer: bool = False
) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TopologyError(source, where, f"expected a number, got {value!r}")
    if integer and not isinstance(value, int):
        raise TopologyError(source, where, f"expected a whole number, got {value!r}")
    if not lo <= value <= hi:
        raise TopologyError(source, where, f"{value} is outside [{lo}, {hi}]")
    return value


def parse_model(source: str, prefix: str, table: dict[str, Any]) -> LinkModel:
    def get(name: str, lo: float, hi: float, integer: bool = False) -> Any:
        if name not in table:
            return None
        return _number(source, f"{prefix}.{name}", table[name], lo=lo, hi=hi, integer=integer)

    rate = get("rate_mbit", 0.01, 100_000)
    delay = get("delay_ms", 0, 10_000) or 0.0
    jitter = get("jitter_ms", 0, 10_000) or 0.0
    loss = get("loss_pct", 0, 100) or 0.0
    queue = get("queue_pkts", 1, 1_000_000, integer=True)
    traces = {
        name: _trace(source, f"{prefix}.{name}", table[name]) if name in table else None
        for name in TRACE_FIELDS
    }
    if queue is not None and rate is None and not any(traces.values()):
        raise TopologyError(
            source,
            f"{prefix}.queue_pkts",
            "a queue limit needs rate_mbit or a trace: the queue is the one in front of the "
            "rate limiter",
        )
    if rate is not None and any(traces.values()):
        name = next(n for n in TRACE_FIELDS if traces[n])
        raise TopologyError(
            source,
            f"{prefix}.{name}",
            "a trace replaces rate_mbit (the trace is the link's capacity): give one or the other",
        )
    middlebox = table.get("middlebox", "none")
    if not isinstance(middlebox, str) or middlebox not in MIDDLEBOXES:
        raise TopologyError(
            source,
            f"{prefix}.middlebox",
            f"unknown middlebox {middlebox!r} (known: {', '.join(MIDDLEBOXES)})",
        )
    model = LinkModel(
        middlebox=middlebox,
        rate_mbit=rate,
        delay_ms=float(delay),
        jitter_ms=float(jitter),
        loss_pct=float(loss),
        queue_pkts=queue,
        **{name: trace for name, trace in traces.items() if trace is not None},
        **parse_conditions(source, prefix, table),
    )
    check_model(source, prefix, model)
    return model


def parse_conditions(source: str, prefix: str, table: dict[str, Any]) -> dict[str, Any]:
    """The link conditions beyond rate, delay and random loss that `table` states, typed and
    range-checked (shared by topology files, --set and `set` link events)."""
    out: dict[str, Any] = {}
    if "delay_distribution" in table:
        dist = table["delay_distribution"]
        if dist not in DELAY_DISTRIBUTIONS:
            raise TopologyError(
                source,
                f"{prefix}.delay_distribution",
                f"unknown distribution {dist!r} (known: {', '.join(DELAY_DISTRIBUTIONS)})",
            )
        out["delay_distribution"] = dist
    for name in ("jitter_reorders", "corrupt_fix_checksum"):
        if name in table:
            value = table[name]
            if not isinstance(value, bool):
                raise TopologyError(
                    source, f"{prefix}.{name}", f"expected true or false, got {value!r}"
                )
            out[name] = value
    for name in ("reorder_pct", "duplicate_pct", "corrupt_pct"):
        if name in table:
            out[name] = float(_number(source, f"{prefix}.{name}", table[name], lo=0, hi=100))
    if "reorder_gap" in table:
        out["reorder_gap"] = int(
            _number(
                source, f"{prefix}.reorder_gap", table["reorder_gap"], lo=1, hi=1e6, integer=True
            )
        )
    if "loss_model" in table:
        out["loss_model"] = _loss_model(source, f"{prefix}.loss_model", table["loss_model"])
    return out


def _trace(source: str, where: str, value: Any) -> Trace:
    """A trace file named in a topology: relative to the topology file's folder (or absolute),
    read and checked now, before any namespace is made; an error names the topology's field
    and the trace file's line."""
    if isinstance(value, Trace):  # from Python, already read
        return value
    if not isinstance(value, str) or not value.strip():
        raise TopologyError(source, where, f"expected the path of a trace file, got {value!r}")
    path = Path(value)
    if not path.is_absolute():
        path = Path(source).parent / path
    try:
        return read_trace(path)
    except TraceError as e:
        raise TopologyError(source, where, str(e)) from None


def _loss_model(source: str, where: str, value: Any) -> LossModel | None:
    """`loss_model = { p = 1, r = 30 }` (netem gemodel, percent); `false` removes it (for a set
    event or --set)."""
    if value is False:
        return None
    if isinstance(value, LossModel):  # from Python (Testbed.set_link), already checked
        return value
    if not isinstance(value, dict):
        raise TopologyError(source, where, f"expected a table {{ p, r, h, k }}, got {value!r}")
    bad = set(value) - set(GE_FIELDS)
    if bad:
        raise TopologyError(
            source, f"{where}.{sorted(bad)[0]}", f"unknown field (known: {', '.join(GE_FIELDS)})"
        )
    if "p" not in value:
        raise TopologyError(source, f"{where}.p", "required: the good -> bad chance, in percent")
    nums = {
        key: float(_number(source, f"{where}.{key}", value[key], lo=0, hi=100))
        for key in GE_FIELDS
        if key in value
    }
    nums.setdefault("r", 100.0 - nums["p"])
    return LossModel(**nums)


def check_model(source: str, prefix: str, model: LinkModel) -> None:
    """What single fields cannot say: combinations that would silently do nothing."""
    if model.reorder_pct > 0 and model.delay_ms <= 0:
        raise TopologyError(
            source,
            f"{prefix}.reorder_pct",
            "reordering needs delay_ms > 0: a reordered packet is sent at once, ahead of the "
            "delayed ones (netem's meaning); without a delay there is nothing to overtake",
        )
    if model.jitter_reorders and model.jitter_ms <= 0:
        raise TopologyError(
            source, f"{prefix}.jitter_reorders", "jitter_reorders needs jitter_ms > 0"
        )
    if model.traced and model.rate_mbit is not None:
        raise TopologyError(
            source,
            f"{prefix}.rate_mbit",
            "the link's capacity comes from its trace: rate_mbit cannot be set beside a trace",
        )
    if model.delay_distribution != "uniform" and model.jitter_ms <= 0:
        raise TopologyError(
            source,
            f"{prefix}.delay_distribution",
            "a delay distribution shapes the jitter: it needs jitter_ms > 0",
        )


def _build_links(
    source: str,
    nodes: dict[str, str],
    parsed: list[tuple[str, list[str], LinkModel, ipaddress.IPv4Network | None, bool]],
) -> dict[str, LinkSpec]:
    """Group links into segments (links meeting at a bridge share one) and number addresses."""
    group = list(range(len(parsed)))  # union-find over link indices

    def find(i: int) -> int:
        while group[i] != i:
            group[i] = group[group[i]]
            i = group[i]
        return i

    first_at_bridge: dict[str, int] = {}
    for i, (_, ends, _, _, _) in enumerate(parsed):
        for e in ends:
            if nodes[e] == "bridge":
                j = first_at_bridge.setdefault(e, i)
                group[find(i)] = find(j)
    members: dict[int, list[int]] = {}
    for i in range(len(parsed)):
        members.setdefault(find(i), []).append(i)

    links: dict[str, LinkSpec] = {}
    taken: list[ipaddress.IPv4Network] = []
    for idxs in sorted(members.values()):
        first = idxs[0]
        lname0 = parsed[first][0]
        explicit = [parsed[i][3] for i in idxs if parsed[i][3] is not None]
        subnet = explicit[0] if explicit else ipaddress.IPv4Network(f"10.0.{first + 1}.0/24")
        where = f"links.{lname0}.subnet"
        addrs: dict[str, str] = {}
        for i in idxs:
            for e in parsed[i][1]:
                if nodes[e] != "bridge" and e not in addrs:
                    addrs[e] = ""
        if subnet.num_addresses < len(addrs) + 2:
            raise TopologyError(source, where, f"{subnet} has no room for {len(addrs)} nodes")
        if any(subnet.overlaps(t) for t in taken):
            raise TopologyError(source, where, f"{subnet} overlaps another link")
        taken.append(subnet)
        for k, node in enumerate(addrs, start=1):
            addrs[node] = str(subnet.network_address + k)
        subnet6 = None
        addrs6: dict[str, str] = {}
        if any(parsed[i][4] for i in idxs):
            subnet6 = ipaddress.IPv6Network(f"fd00:0:{first + 1:x}::/64")
            addrs6 = {node: str(subnet6.network_address + k) for k, node in enumerate(addrs, 1)}
        seg = Segment(
            subnet=subnet,
            links=tuple(parsed[i][0] for i in idxs),
            addrs=addrs,
            subnet6=subnet6,
            addrs6=addrs6,
        )
        for i in idxs:
            lname, ends, model, _, _ = parsed[i]
            links[lname] = LinkSpec(name=lname, a=ends[0], b=ends[1], model=model, segment=seg)
    return {p[0]: links[p[0]] for p in parsed}  # file order


def parse_topology(raw: dict[str, Any], *, name: str, source: str) -> Topology:
    unknown = set(raw) - TOP_FIELDS
    if unknown:
        raise TopologyError(
            source, sorted(unknown)[0], f"unknown field (known: {sorted(TOP_FIELDS)})"
        )
    desc = raw.get("description")
    if not isinstance(desc, str) or not desc.strip():
        raise TopologyError(source, "description", "a one-line description is required")
    nodes = _nodes(source, raw.get("nodes"))
    links_raw = raw.get("links")
    if not isinstance(links_raw, dict) or not links_raw:
        raise TopologyError(source, "links", "at least one [links.NAME] table is required")
    ipv6 = _ip_versions(source, raw.get("ip", ["4"]))
    parsed = [_link(source, nodes, lname, table, ipv6) for lname, table in links_raw.items()]
    links = _build_links(source, nodes, parsed)
    paths = {
        pname: _path(source, nodes, links, pname, table)
        for pname, table in (raw.get("paths") or {}).items()
    }
    topo = Topology(
        name=name,
        description=desc.strip(),
        source=source,
        nodes=nodes,
        links=links,
        paths=paths,
        raw=raw,
    )
    for n in nodes:
        if not topo.links_of(n):
            raise TopologyError(source, f"nodes.{n}", "is on no link")
    return topo


def _ip_versions(source: str, value: Any) -> bool:
    """The top-level `ip` list ("4", "6"): whether links carry IPv6 unless they say."""
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str | int) and str(v) in IP_VERSIONS for v in value)
    ):
        raise TopologyError(source, "ip", f'a list of IP versions, "4" and/or "6", got {value!r}')
    versions = {str(v) for v in value}
    if "4" not in versions:
        raise TopologyError(
            source, "ip", 'IPv4 is always on (paths and emulation are planned on it): ["4", "6"]'
        )
    return "6" in versions


def _nodes(source: str, nodes_raw: Any) -> dict[str, str]:
    if not isinstance(nodes_raw, dict) or not nodes_raw:
        raise TopologyError(source, "nodes", 'a table of node = "host"|"router" is required')
    nodes: dict[str, str] = {}
    for n, kind in nodes_raw.items():
        if not NAME_RE.match(n):
            raise TopologyError(source, f"nodes.{n}", "names are 1-10 of [a-z0-9], starting a-z")
        if kind not in NODE_KINDS:
            raise TopologyError(
                source, f"nodes.{n}", f"kind must be one of {NODE_KINDS}, got {kind!r}"
            )
        nodes[n] = kind
    return nodes


def _link(
    source: str, nodes: dict[str, str], lname: str, table: Any, ipv6: bool = False
) -> tuple[str, list[str], LinkModel, ipaddress.IPv4Network | None, bool]:
    """One [links.NAME] table: (name, ends, model, explicit subnet or None, IPv6 on it)."""
    where = f"links.{lname}"
    if not LINK_NAME_RE.match(lname):
        raise TopologyError(source, where, "link names are [a-z0-9_-], starting a-z")
    if not isinstance(table, dict):
        raise TopologyError(source, where, "must be a table")
    bad = set(table) - LINK_FIELDS
    if bad:
        raise TopologyError(
            source, f"{where}.{sorted(bad)[0]}", f"unknown field (known: {sorted(LINK_FIELDS)})"
        )
    ends = table.get("ends")
    if not isinstance(ends, list) or len(ends) != 2 or not all(isinstance(e, str) for e in ends):
        raise TopologyError(source, f"{where}.ends", "must be a list of two node names")
    for e in ends:
        if e not in nodes:
            raise TopologyError(source, f"{where}.ends", f"unknown node {e!r}")
    if ends[0] == ends[1]:
        raise TopologyError(source, f"{where}.ends", "a link joins two different nodes")
    model = parse_model(source, where, table)
    if model.middlebox != "none" and not any(nodes[e] == "router" for e in ends):
        raise TopologyError(
            source,
            f"{where}.middlebox",
            "a middlebox runs on a router: at least one end must be a router",
        )
    if (model.delayed or model.loss_pct) and not any(nodes[e] == "router" for e in ends):
        raise TopologyError(
            source,
            where,
            "delay, jitter, loss, reordering, duplication, corruption and traces are emulated on "
            "a router: "
            "at least one end must be a router (never on an endpoint)",
        )
    subnet = None
    if "subnet" in table:
        try:
            subnet = ipaddress.IPv4Network(table["subnet"])
        except (ValueError, TypeError) as e:
            raise TopologyError(source, f"{where}.subnet", str(e)) from None
    v6 = table.get("ipv6", ipv6)
    if not isinstance(v6, bool):
        raise TopologyError(source, f"{where}.ipv6", f"expected true or false, got {v6!r}")
    if v6 and model.middlebox != "none":
        raise TopologyError(
            source,
            f"{where}.middlebox",
            "middleboxes act on IPv4 only (IPv6 would pass untouched): set ipv6 = false here",
        )
    return lname, ends, model, subnet, v6


def _path(
    source: str, nodes: dict[str, str], links: dict[str, LinkSpec], pname: str, table: Any
) -> PathSpec:
    where = f"paths.{pname}"
    if not isinstance(table, dict):
        raise TopologyError(source, where, "must be a table")
    bad = set(table) - PATH_FIELDS
    if bad:
        raise TopologyError(
            source, f"{where}.{sorted(bad)[0]}", f"unknown field (known: {sorted(PATH_FIELDS)})"
        )
    for f in sorted(PATH_FIELDS):
        if not isinstance(table.get(f), str):
            raise TopologyError(source, f"{where}.{f}", "required, a name")
    src, lname, dst = table["from"], table["link"], table["to"]
    for f, n in (("from", src), ("to", dst)):
        if nodes.get(n) != "host":
            raise TopologyError(source, f"{where}.{f}", f"{n!r} is not a host of this topology")
    if lname not in links or src not in (links[lname].a, links[lname].b):
        raise TopologyError(source, f"{where}.link", f"{lname!r} is not a link of {src!r}")
    return PathSpec(name=pname, src=src, link=lname, dst=dst)
