"""Experiment files: one readable TOML file describes one experiment; this module checks it.

A researcher copies a file under experiments/, changes a number and runs it, so every mistake
must come back as an `ExperimentError` that names the file and the field, unknown keys included
(a typo silently ignored is a wrong experiment that looks right). After validation everything is
plain dataclasses, and `resolve_runs` turns the file into the exact list of runs: same file,
same seed, same overrides -> the same list, which metadata.json records.

File format (see experiments/*.toml)::

    name = "failover"                     # results go to results/<name>/<run-id>/
    description = "one line for ./inv list"
    seed = 1                              # payload seeds and run order derive from it
    repetitions = 3
    stacks = ["tcp", "kernel-mptcp"]      # names from experiments.stacks.STACKS
    shuffle = false                       # randomise run order (seeded) against drift

    [topology]
    name = "two_path"                     # a topologies/*.toml name or a path
    [topology.set]                        # overrides, dotted keys as in the topology file
    "links.lte.delay_ms" = 40

    [traffic]                             # the flow under test, run with each stack
    client = "client"
    server = "server"
    kind = "bulk"                         # bulk | reqresp | stream
    direction = "download"                # download: server -> client
    duration_s = 10                       # or bytes = N
    port = 5201

    [[background]]                        # optional competing flows with a fixed stack
    name = "tcp-competitor"
    stack = "tcp"
    client = "tcpc"
    server = "tcps"
    duration_s = 10
    port = 5202

    [[events]]                            # link events, seconds from traffic start
    at = 5.0
    link = "wifi"
    action = "down"                       # down | up | set
    mode = "blackhole"                    # blackhole | interface (down/up)
    # set: rate_mbit = 5, delay_ms = 80, loss_pct = 1, jitter_ms = 0

    [grid]                                # parameter sweep: the product of these lists
    "links.lte.delay_ms" = [10, 50, 100]  # topology keys, or "traffic.<field>",
    "stack.userspace.scheduler" = ["default", "blest"]  # or "stack.<stack>.<option>"
    condition = ["clean", "reordering"]   # or names of [conditions.*] bundles

    [conditions.reordering]               # a named bundle of topology overrides (a grid value)
    "links.wifi.reorder_pct" = 2          # dotted keys as in [topology.set]
    topology = "two_path"                 # optional: the bundle's own topology file

A grid key "stack.<stack>.<option>" makes each value a variant of that stack (named
"<stack>-<value>", e.g. userspace-blest; a FILE.py:Class value is named by its class): its
runs use [stack.<stack>] with that option replaced, and the other stacks run once per point of
the remaining grid (not once per variant). Each value is checked as the option would be.

The grid key "condition" takes names of [conditions.<name>] tables: each is one grid value that
sets several topology parameters at once ("each condition alone and all together" is not a
product of lists), and may name its own topology (`topology = "cellular_wifi"`), so one campaign
can compare stacks across topologies. A bundle's keys win over [topology.set]; a --set
topology override (a pin) wins over both. Runs and reports show the point as condition=<name>.

    [[skip]]                              # grid points not to run (GitHub Actions' matrix
    "stack.userspace.scheduler" = "blest" # `exclude`): a run is skipped when its point has
    "links.lte.delay_ms" = [10]           # one of the listed values for every key of a table

A [[skip]] table names grid keys and values (a value or a list of them); a run is left out when
its point matches every key of one table. A stack option's key ("stack.<stack>.<option>")
applies to that stack's runs only: the other stacks still run at the point. This keeps a
campaign to the regimes its claims are judged in instead of the whole product. A --set that
pins a grid key or narrows its values narrows the [[skip]] tables with it.

    [sample]                              # instead of (or beside) a grid: n points drawn
    method = "lhs"                        # over ranges, "lhs" (Latin hypercube) or "random"
    n = 8
    seed = 7                              # optional: the experiment's seed
    ranges = { "links.lte.delay_ms" = [5, 100], "links.lte.rate_mbit" = [2.0, 20.0] }

Each [sample] point is crossed with every grid point (a key is gridded or sampled, not both);
a Latin hypercube cuts each range into n equal strata and puts one point in each, so n runs
cover every part of every range, which a grid of a few values per key does only with many
more runs. A range of two integers gives integers. The points are recorded in metadata.json.

    [stack.kernel-mptcp]                  # per-stack options (see experiments.stacks)
    endpoints = [{ host = "client", link = "lte", flags = ["subflow", "backup"] }]
    tcp_rmem = 262144                     # socket buffers and congestion control
    cc = "cubic"                          # (experiments/knobs.py)

    [sysctl]                              # per-namespace sysctls of every host (knobs.py)
    "net.mptcp.stale_loss_cnt" = 2        # grid key "sysctl.net.mptcp.stale_loss_cnt"

    [metrics]
    warmup_s = 1.0                        # steady-state goodput ignores the first seconds

    [claims]                              # which published claims the campaign report checks
    check = "congested_path"              # or a list of them: share (default: runs with background flows),
                                          # best_path (RFC 6356 goal 1), congested_path (goal 3),
                                          # single_path_users (Khalili et al. 2013, OLIA vs LIA)
    path = "mp1"                          # congested_path: the flow under test's path through
                                          # the more congested bottleneck (a topology path)
    tolerance = 0.05                      # best_path: "at least as well" within this fraction
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from experiments import apps
from experiments.errors import ExperimentError
from experiments.knobs import SYSCTL, check_checksum_path, sysctl_value, validate_sysctls
from experiments.stacks import STACKS
from testbed.topology import (
    SET_FIELDS,
    TopologyError,
    describe_files,
    load_topology,
    parse_conditions,
    parse_override,
    read_toml,
    toml_path,
)

EXPERIMENT_DIR = Path(__file__).resolve().parent

TOP_KEYS = {
    "name",
    "description",
    "seed",
    "repetitions",
    "stacks",
    "shuffle",
    "topology",
    "traffic",
    "background",
    "events",
    "grid",
    "stack",
    "metrics",
    "conditions",
    "sample",
    "claims",
    "skip",
    SYSCTL,
}
SAMPLE_KEYS = {"method", "n", "seed", "ranges"}
SAMPLE_METHODS = ("random", "lhs")
CONDITION_KEY = "condition"  # the grid key whose values name [conditions.*] bundles
FLOW_KEYS = {
    "client",
    "server",
    "kind",
    "direction",
    "bytes",
    "duration_s",
    "rate_mbit",
    "req_bytes",
    "resp_bytes",
    "count",
    "port",
    "timeout_s",
}
BACKGROUND_KEYS = FLOW_KEYS | {"name", "stack"}
SET_PARAMS = ("rate_mbit", "delay_ms", "loss_pct", "jitter_ms")  # numbers
SET_CONDITIONS = tuple(f for f in SET_FIELDS if f not in SET_PARAMS and f != "queue_pkts")
EVENT_KEYS = {"at", "link", "action", "mode", *SET_PARAMS, *SET_CONDITIONS}
METRIC_KEYS = {"warmup_s", "gap_window_s"}
CLAIM_KEYS = {"check", "path", "tolerance"}
# what [claims] check may name: the claims experiments/campaign_report.py knows how to judge
CLAIM_CHECKS = ("share", "best_path", "congested_path", "single_path_users")


@dataclass(frozen=True)
class FlowSpec:
    """One traffic flow between two hosts, as the traffic tool understands it."""

    client: str = "client"
    server: str = "server"
    kind: str = "bulk"
    direction: str = "download"
    bytes: int = 0
    duration_s: float = 0.0
    rate_mbit: float = 0.0
    req_bytes: int = 100
    resp_bytes: int = 10000
    count: int = 10
    port: int = 5201
    timeout_s: float = 30.0  # after its duration the client gets this long, then is stopped
    # kind = "app" (experiments/apps.py): the programs each end runs, and how the client's
    # output becomes metrics; in the file they are the flow's `server` and `client` lists
    # (the hosts then are `server_host` and `client_host`)
    server_argv: tuple[str, ...] = ()
    client_argv: tuple[str, ...] = ()
    parse: str = "none"
    ready_timeout_s: float = 15.0  # the app server must listen on its port within this
    # once the client has exited, the app server gets this long to end by itself (iperf3 -s -1
    # writes its report), then is stopped with SIGTERM (no error); 0 for a server that never
    # ends by itself (nginx), which waiting only delays
    server_grace_s: float = 3.0
    # background flows only (they start with the main flow)
    name: str = "main"
    stack: str = ""


@dataclass(frozen=True)
class EventSpec:
    at: float
    link: str
    action: str
    mode: str = "blackhole"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Experiment:
    """A validated experiment file (plus any overrides given on the command line)."""

    name: str
    description: str
    source: str
    text: str  # the file as read, kept verbatim for metadata.json
    seed: int
    repetitions: int
    stacks: list[str]
    shuffle: bool
    topology: str
    topology_set: dict[str, Any]
    traffic: FlowSpec
    background: list[FlowSpec]
    events: list[EventSpec]
    grid: dict[str, list[Any]]
    stack_options: dict[str, dict[str, Any]]
    warmup_s: float = 1.0
    stack_raw: dict[str, dict[str, Any]] = field(default_factory=dict)  # [stack.*] as written
    gap_window_s: float = 10.0
    overrides: list[str] = field(default_factory=list)
    # [conditions.<name>]: bundles of topology overrides a grid "condition" value names, each
    # maybe with its own "topology"
    conditions: dict[str, dict[str, Any]] = field(default_factory=dict)
    # [sysctl]: per-namespace sysctls set in every host, as the text written (knobs.py)
    sysctls: dict[str, str] = field(default_factory=dict)
    # [sample]: points drawn over continuous ranges (each a {key: value}), crossed with the grid
    samples: list[dict[str, Any]] = field(default_factory=list)
    sample_spec: dict[str, Any] = field(default_factory=dict)  # [sample] as resolved
    # [claims]: which published claims the campaign report checks (None: decided by the data,
    # as before: a bottleneck share with background flows, ...); check_against_topology adds
    # the client address of a congested_path's path ("addr"), by which the report tells its
    # subflow from the others, and metrics.warmup_s (where the report's steady window starts)
    claims: dict[str, Any] | None = None
    # [[skip]]: each {grid key: values}; a run whose point matches every key of one is not run
    skip: list[dict[str, list[Any]]] = field(default_factory=list)

    def point_sysctls(self, values: dict[str, Any]) -> dict[str, str]:
        """[sysctl] with the grid point's "sysctl.<name>" values over it."""
        grid = {
            k.removeprefix(f"{SYSCTL}."): sysctl_value(
                self.source, f"grid.{k}", k.removeprefix(f"{SYSCTL}."), v
            )
            for k, v in values.items()
            if k.startswith(f"{SYSCTL}.")
        }
        return {**self.sysctls, **grid}

    def point_topology(self, values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The topology file and overrides of one grid point: [topology.set], then the grid's
        topology keys and the point's condition bundle, then --set pins (which always win)."""
        bundle = dict(self.conditions.get(values.get(CONDITION_KEY), {}))
        name = bundle.pop("topology", self.topology)
        pinned = {
            parse_override(o, self.source, ExperimentError)[0].removeprefix("topology.set.")
            for o in self.overrides
        }
        topo_keys = {
            k: v
            for k, v in values.items()
            if not k.startswith(("traffic.", "stack.", f"{SYSCTL}.")) and k != CONDITION_KEY
        }
        merged = {**self.topology_set, **topo_keys, **bundle}
        merged.update({k: v for k, v in self.topology_set.items() if k in pinned})
        return name, merged


@dataclass(frozen=True)
class RunSpec:
    """One run: a grid point, a stack and a repetition, with everything resolved."""

    index: int
    point: int
    point_values: dict[str, Any]
    stack: str
    rep: int
    seed: int
    topology_set: dict[str, Any]
    traffic: FlowSpec
    variant: str = ""  # the stack, or "<stack>-<value>..." for a stack.<stack>.<option> grid
    stack_options: dict[str, Any] | None = None  # this run's [stack.<stack>] (None: the file's)
    topology: str = ""  # this run's topology file ("": the experiment's; a condition may name one)
    sysctls: dict[str, str] = field(default_factory=dict)  # set in every host's namespace

    @property
    def label(self) -> str:
        """Directory below pcap/, traffic/...: <stack>/rep<k>, or <stack>/p<j>-rep<k> in a grid."""
        return (
            f"{self.stack}/rep{self.rep}"
            if self.point_values == {}
            else f"{self.stack}/p{self.point}-rep{self.rep}"
        )

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["label"] = self.label
        return d


# ---------------------------------------------------------------------------------------------
# Loading


def experiment_path(name_or_path: str | Path) -> Path:
    return toml_path(EXPERIMENT_DIR, name_or_path)


def list_experiments() -> list[tuple[str, str]]:
    """(file name, description) of every experiment file shipped under experiments/."""
    return describe_files(EXPERIMENT_DIR)


def load_experiment(
    name_or_path: str | Path,
    overrides: list[str] | None = None,
    *,
    stack: str | None = None,
    reps: int | None = None,
    check_topology: bool = True,
) -> Experiment:
    """Read, override and validate an experiment file.

    `overrides` are "key=value" strings as typed after --set. A key that starts with a section
    of the experiment file (traffic.duration_s, repetitions, grid.links.lte.delay_ms, ...) edits
    the experiment; any other key is a topology override (links.lte.delay_ms=50) and pins that
    parameter, taking it out of the grid. `stack` and `reps` are the --stack/--reps shortcuts.
    """
    path = experiment_path(name_or_path)
    source = str(path)
    text, raw = read_toml(path, ExperimentError, "experiment", EXPERIMENT_DIR)
    overrides = list(overrides or [])
    for item in overrides:
        _apply_override(raw, item, source)
    if stack is not None:
        raw["stacks"] = [s.strip() for s in stack.split(",") if s.strip()]
    if reps is not None:
        raw["repetitions"] = reps
    exp = parse_experiment(raw, source=source, text=text)
    exp.overrides = (
        overrides
        + ([f"stacks={raw['stacks']}"] if stack is not None else [])
        + ([f"repetitions={reps}"] if reps is not None else [])
    )
    if check_topology:
        check_against_topology(exp)
    return exp


def _apply_override(raw: dict[str, Any], item: str, source: str) -> None:
    key, value = parse_override(item, source, ExperimentError)
    head, _, rest = key.partition(".")
    if head == "grid" and rest:
        raw.setdefault("grid", {})[rest] = value
        if isinstance(value, list):
            _narrow_skip(raw, rest, value, source)
    elif head == SYSCTL and rest:  # the sysctl's own dots are not tables; pinned, as below
        raw.setdefault(SYSCTL, {})[rest] = value
        grid = raw.get("grid")
        if isinstance(grid, dict) and grid.pop(key, None) is not None:
            _narrow_skip(raw, key, None, source)
    elif head == "topology" and rest.startswith("set.") and len(rest) > 4:
        raw.setdefault("topology", {}).setdefault("set", {})[rest[4:]] = value
    elif head in TOP_KEYS:
        node: Any = raw
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node, dict):
                raise ExperimentError(source, key, "override does not name a field of a table")
            node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ExperimentError(source, key, "override does not name a field of a table")
        node[parts[-1]] = value
    else:
        # A topology parameter: pin it, and stop sweeping it.
        raw.setdefault("topology", {}).setdefault("set", {})[key] = value
        grid = raw.get("grid")
        if isinstance(grid, dict) and grid.pop(key, None) is not None:
            _narrow_skip(raw, key, None, source)


def _unknown(source: str, where: str, table: dict[str, Any], allowed: set[str]) -> None:
    for k in table:
        if k not in allowed:
            prefix = f"{where}." if where else ""
            raise ExperimentError(
                source, f"{prefix}{k}", f"unknown key (allowed: {', '.join(sorted(allowed))})"
            )


def _typed(
    source: str, where: str, value: Any, kind: type | tuple[type, ...], *, lo: float | None = None
) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # TOML booleans are ints to Python; a number field must not accept true/false.
    ok = (
        isinstance(value, bool)
        if bool in kinds
        else (isinstance(value, kinds) and not isinstance(value, bool))
    )
    if not ok:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ExperimentError(source, where, f"expected {names}, got {value!r}")
    if lo is not None and value < lo:
        raise ExperimentError(source, where, f"must be >= {lo}, got {value!r}")
    return value


def _table(source: str, where: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ExperimentError(source, where, f"expected a table, got {value!r}")
    return value


def _app_flow(source: str, where: str, raw: dict[str, Any], background: bool) -> FlowSpec:
    """A flow of real programs (experiments/apps.py): `server`/`client` are argv lists, the
    hosts `server_host`/`client_host`."""
    allowed = apps.APP_KEYS | ({"name", "stack"} if background else set())
    for k in raw:
        if k not in allowed:
            raise ExperimentError(
                source,
                f"{where}.{k}",
                f"unknown key for an app flow (allowed: {', '.join(sorted(allowed))})",
            )
    for k in ("server", "client"):
        if k not in raw:
            raise ExperimentError(
                source, f"{where}.{k}", f"missing (required): the {k} program's argv list"
            )
    rest = {
        k: v
        for k, v in raw.items()
        if k
        not in (
            "server",
            "client",
            "server_host",
            "client_host",
            "parse",
            "ready_timeout_s",
            "server_grace_s",
        )
    }
    for k in ("server_host", "client_host"):
        if k in raw:
            rest[k.removesuffix("_host")] = _typed(source, f"{where}.{k}", raw[k], str)
    base = _flow(source, where, {**rest, "kind": "bulk", "duration_s": 1.0}, background)
    timeout = _typed(
        source, f"{where}.ready_timeout_s", raw.get("ready_timeout_s", 15.0), (int, float), lo=0
    )
    grace = _typed(
        source, f"{where}.server_grace_s", raw.get("server_grace_s", 3.0), (int, float), lo=0
    )
    return FlowSpec(
        **{
            **asdict(base),
            "kind": "app",
            "duration_s": float(
                _typed(
                    source, f"{where}.duration_s", raw.get("duration_s", 0.0), (int, float), lo=0
                )
            ),
            "server_argv": apps.check_argv(source, f"{where}.server", raw["server"]),
            "client_argv": apps.check_argv(source, f"{where}.client", raw["client"]),
            "parse": apps.check_parse(source, f"{where}.parse", raw.get("parse", "none")),
            "ready_timeout_s": float(timeout),
            "server_grace_s": float(grace),
        }
    )


def _flow(source: str, where: str, raw: dict[str, Any], background: bool) -> FlowSpec:
    if raw.get("kind") == "app":
        return _app_flow(source, where, raw, background)
    _unknown(source, where, raw, BACKGROUND_KEYS if background else FLOW_KEYS)
    num = (int, float)
    kw: dict[str, Any] = {}
    for k, v in raw.items():
        w = f"{where}.{k}"
        if k in ("client", "server", "name", "stack"):
            kw[k] = _typed(source, w, v, str)
        elif k == "kind":
            if v not in ("bulk", "reqresp", "stream"):
                raise ExperimentError(source, w, f"must be bulk, reqresp, stream or app, not {v!r}")
            kw[k] = v
        elif k == "direction":
            if v not in ("download", "upload"):
                raise ExperimentError(source, w, f"must be download or upload, not {v!r}")
            kw[k] = v
        elif k in ("bytes", "req_bytes", "resp_bytes", "count"):
            kw[k] = _typed(source, w, v, int, lo=0)
        elif k == "port":
            kw[k] = _typed(source, w, v, int, lo=1)
            if v > 65535:
                raise ExperimentError(source, w, f"must be <= 65535, got {v}")
        else:
            kw[k] = float(_typed(source, w, v, num, lo=0))
    flow = FlowSpec(**kw)
    if flow.kind in ("bulk", "stream") and flow.bytes <= 0 and flow.duration_s <= 0:
        raise ExperimentError(
            source, f"{where}.duration_s", f"a {flow.kind} flow needs duration_s > 0 or bytes > 0"
        )
    if flow.kind == "stream" and flow.rate_mbit <= 0:
        raise ExperimentError(source, f"{where}.rate_mbit", "a stream flow needs rate_mbit > 0")
    if flow.kind == "reqresp" and min(flow.req_bytes, flow.resp_bytes, flow.count) <= 0:
        raise ExperimentError(
            source, f"{where}.count", "a reqresp flow needs req_bytes, resp_bytes and count > 0"
        )
    return flow


def parse_experiment(raw: dict[str, Any], *, source: str, text: str = "") -> Experiment:
    """Validate a parsed experiment document; every error names the field."""
    _unknown(source, "", raw, TOP_KEYS)
    for req in ("name", "topology", "traffic", "stacks"):
        if req not in raw:
            raise ExperimentError(source, req, "missing (required)")
    name = _typed(source, "name", raw["name"], str)
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ExperimentError(source, "name", f"use letters, digits, - and _ only: {name!r}")
    description = _typed(source, "description", raw.get("description", ""), str)
    seed = _typed(source, "seed", raw.get("seed", 1), int, lo=0)
    reps = _typed(source, "repetitions", raw.get("repetitions", 1), int, lo=1)
    shuffle = _typed(source, "shuffle", raw.get("shuffle", False), bool)
    stacks = _stacks(source, raw["stacks"])

    topo = _table(source, "topology", raw["topology"])
    _unknown(source, "topology", topo, {"name", "set"})
    if "name" not in topo:
        raise ExperimentError(source, "topology.name", "missing (required)")
    topo_name = _typed(source, "topology.name", topo["name"], str)
    topo_set = dict(_table(source, "topology.set", topo.get("set", {})))

    traffic = _flow(source, "traffic", _table(source, "traffic", raw["traffic"]), False)
    background = _background(source, raw.get("background", []))
    events = _events(source, raw.get("events", []))
    for s in stacks:
        STACKS[s].check_flow(source, "traffic", traffic)
    for i, b in enumerate(background):
        STACKS[b.stack].check_flow(source, f"background[{i}]", b)

    stack_raw = _table(source, "stack", raw.get("stack", {}))
    stack_opts = {}
    for s, opts in stack_raw.items():
        if s not in STACKS:
            raise ExperimentError(
                source, f"stack.{s}", f"unknown stack (known: {', '.join(STACKS)})"
            )
        stack_opts[s] = STACKS[s].validate_options(
            source, f"stack.{s}", _table(source, f"stack.{s}", opts)
        )
    conditions = _conditions(source, _table(source, "conditions", raw.get("conditions", {})))
    sysctls = validate_sysctls(source, SYSCTL, _table(source, SYSCTL, raw.get(SYSCTL, {})))
    grid = _grid(
        source, _table(source, "grid", raw.get("grid", {})), traffic, stack_raw, conditions
    )
    sample_spec, samples = _sample(
        source, _table(source, "sample", raw.get("sample", {})), seed, grid, traffic, stack_raw
    )
    skip = _skip(source, raw.get("skip", []), grid)

    metrics = _table(source, "metrics", raw.get("metrics", {}))
    _unknown(source, "metrics", metrics, METRIC_KEYS)
    warmup = float(
        _typed(source, "metrics.warmup_s", metrics.get("warmup_s", 1.0), (int, float), lo=0)
    )
    window = float(
        _typed(
            source, "metrics.gap_window_s", metrics.get("gap_window_s", 10.0), (int, float), lo=0
        )
    )
    claims = _claims(source, raw.get("claims"), stacks)
    if claims is not None:
        claims["warmup_s"] = warmup  # the report's steady window starts there too

    return Experiment(
        name=name,
        description=description,
        source=source,
        text=text,
        seed=seed,
        repetitions=reps,
        stacks=list(stacks),
        shuffle=shuffle,
        topology=topo_name,
        topology_set=topo_set,
        traffic=traffic,
        background=background,
        events=sorted(events, key=lambda ev: ev.at),
        grid=grid,
        conditions=conditions,
        sysctls=sysctls,
        samples=samples,
        sample_spec=sample_spec,
        skip=skip,
        stack_options=stack_opts,
        stack_raw={k: dict(v) for k, v in stack_raw.items()},
        warmup_s=warmup,
        gap_window_s=window,
        claims=claims,
    )


def _claims(source: str, raw: Any, stacks: list[str]) -> dict[str, Any] | None:
    """[claims], checked: a known check, the keys it needs and no others. Why a table and not
    guessed from the data: a campaign on two disjoint bottlenecks has background flows too, and
    the shared-bottleneck claim ("no more than one TCP") would be judged where it means nothing."""
    if raw is None:
        return None
    table = _table(source, "claims", raw)
    _unknown(source, "claims", table, CLAIM_KEYS)
    if "check" not in table:
        raise ExperimentError(source, "claims.check", "missing (required)")
    raw_check = table["check"]
    many = isinstance(raw_check, list)
    checks = raw_check if many else [raw_check]
    if many and not checks:
        raise ExperimentError(source, "claims.check", "an empty list: name at least one check")
    for i, c in enumerate(checks):
        where = f"claims.check[{i}]" if many else "claims.check"
        _typed(source, where, c, str)
        if c not in CLAIM_CHECKS:
            raise ExperimentError(
                source, where, f"unknown check {c!r} (known: {', '.join(CLAIM_CHECKS)})"
            )
    if many and "share" in checks:
        raise ExperimentError(source, "claims.check", "share is judged alone, not in a list")
    check = " and ".join(checks)  # in the messages below
    out: dict[str, Any] = {"check": list(checks) if many else raw_check}
    if "congested_path" in checks:
        if "path" not in table:
            raise ExperimentError(
                source, "claims.path", "missing: congested_path needs the congested path's name"
            )
        out["path"] = _typed(source, "claims.path", table["path"], str)
    elif "path" in table:
        raise ExperimentError(source, "claims.path", f"only for congested_path, not {check}")
    if "best_path" in checks:
        if "tcp" not in stacks:
            raise ExperimentError(
                source,
                "claims.check",
                "best_path needs the tcp stack in stacks (the single TCP on the best path)",
            )
        tol = float(_typed(source, "claims.tolerance", table.get("tolerance", 0.05), (int, float)))
        if not 0 <= tol < 1:
            raise ExperimentError(source, "claims.tolerance", f"must be in [0, 1), got {tol}")
        out["tolerance"] = tol
    elif "tolerance" in table:
        raise ExperimentError(source, "claims.tolerance", f"only for best_path, not {check}")
    return out


def _stacks(source: str, stacks: Any) -> list[str]:
    if not isinstance(stacks, list) or not stacks:
        raise ExperimentError(source, "stacks", f"expected a non-empty list, got {stacks!r}")
    for i, s in enumerate(stacks):
        if s not in STACKS:
            raise ExperimentError(
                source, f"stacks[{i}]", f"unknown stack {s!r} (known: {', '.join(STACKS)})"
            )
    if len(set(stacks)) != len(stacks):
        raise ExperimentError(source, "stacks", f"a stack is listed twice: {stacks}")
    return stacks


def _background(source: str, bg_raw: Any) -> list[FlowSpec]:
    if not isinstance(bg_raw, list):
        raise ExperimentError(source, "background", "expected an array of tables [[background]]")
    background = []
    for i, b in enumerate(bg_raw):
        flow = _flow(source, f"background[{i}]", _table(source, f"background[{i}]", b), True)
        if not flow.stack:
            flow = FlowSpec(**{**asdict(flow), "stack": "tcp"})
        if flow.stack not in STACKS:
            raise ExperimentError(source, f"background[{i}].stack", f"unknown stack {flow.stack!r}")
        if flow.name == "main":
            flow = FlowSpec(**{**asdict(flow), "name": f"background{i}"})
        background.append(flow)
    return background


def _events(source: str, ev_raw: Any) -> list[EventSpec]:
    if not isinstance(ev_raw, list):
        raise ExperimentError(source, "events", "expected an array of tables [[events]]")
    return [
        _event(source, f"events[{i}]", _table(source, f"events[{i}]", e))
        for i, e in enumerate(ev_raw)
    ]


def _event(source: str, where: str, e: dict[str, Any]) -> EventSpec:
    _unknown(source, where, e, EVENT_KEYS)
    for req in ("at", "link", "action"):
        if req not in e:
            raise ExperimentError(source, f"{where}.{req}", "missing (required)")
    at = float(_typed(source, f"{where}.at", e["at"], (int, float), lo=0))
    link = _typed(source, f"{where}.link", e["link"], str)
    action = e["action"]
    if action not in ("down", "up", "set"):
        raise ExperimentError(source, f"{where}.action", f"must be down, up or set, not {action!r}")
    mode = e.get("mode", "blackhole")
    if mode not in ("blackhole", "interface"):
        raise ExperimentError(
            source, f"{where}.mode", f"must be blackhole or interface, not {mode!r}"
        )
    params: dict[str, Any] = {
        k: float(_typed(source, f"{where}.{k}", e[k], (int, float), lo=0))
        for k in SET_PARAMS
        if k in e
    }
    try:  # the link conditions, checked as a topology file's (the values stay as written)
        parse_conditions(source, where, e)
    except TopologyError as exc:
        raise ExperimentError(source, exc.field, exc.problem) from None
    params.update({k: e[k] for k in SET_CONDITIONS if k in e})
    if action == "set" and not params:
        known = ", ".join((*SET_PARAMS, *SET_CONDITIONS))
        raise ExperimentError(source, where, f"a set event needs one of {known}")
    if action != "set" and params:
        raise ExperimentError(
            source, f"{where}.{next(iter(params))}", "only set events take link parameters"
        )
    return EventSpec(at=at, link=link, action=action, mode=mode, params=params)


def _conditions(source: str, table: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """[conditions.<name>] tables: dotted topology keys (checked per grid point against the
    topology, like [topology.set]) and an optional "topology" file name."""
    out = {}
    for name, bundle in table.items():
        where = f"conditions.{name}"
        bundle = _table(source, where, bundle)
        if "topology" in bundle:
            _typed(source, f"{where}.topology", bundle["topology"], str)
        for k in bundle:
            if k != "topology" and (k.split(".")[0] not in ("links", "paths") or "." not in k):
                raise ExperimentError(
                    source,
                    f"{where}.{k}",
                    "a condition sets topology keys (links.<link>.<field>) or topology",
                )
        out[name] = dict(bundle)
    return out


def _skip(source: str, tables: Any, grid: dict[str, list[Any]]) -> list[dict[str, list[Any]]]:
    """[[skip]] tables, checked against the grid: every key a grid key, every value one of its
    values (a typo would otherwise skip nothing, silently)."""
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ExperimentError(source, "skip", "expected [[skip]] tables of grid keys and values")
    out = []
    for i, table in enumerate(tables):
        if not table:
            raise ExperimentError(source, f"skip[{i}]", "an empty table would skip every run")
        entry = {}
        for k, v in table.items():
            where = f"skip[{i}].{k}"
            if k not in grid:
                raise ExperimentError(
                    source, where, f"not a grid key (grid: {', '.join(grid) or 'none'})"
                )
            values = v if isinstance(v, list) else [v]
            for val in values:
                if val not in grid[k]:
                    raise ExperimentError(
                        source, where, f"{val!r} is not one of the grid's values {grid[k]!r}"
                    )
            entry[k] = list(values)
        out.append(entry)
    return out


def skipped(skip: list[dict[str, list[Any]]], point_values: dict[str, Any]) -> bool:
    """Whether a run's point (its grid values, without other stacks' options) matches a
    [[skip]] table: every key of the table present with one of the table's values."""
    return any(
        all(k in point_values and point_values[k] in vals for k, vals in entry.items())
        for entry in skip
    )


def _narrow_skip(raw: dict[str, Any], key: str, allowed: list[Any] | None, source: str) -> None:
    """A --set pinned grid key `key` (allowed None: it left the grid, at the value now in the
    file) or narrowed its values (`allowed`): [[skip]] tables follow. A table whose values for
    the key are all gone can match nothing any more and is dropped; a pinned key whose pinned
    value the table lists is true of every run, so it leaves the table."""
    tables = raw.get("skip")
    if not isinstance(tables, list):
        return
    kept = []
    for i, t in enumerate(tables):
        if not isinstance(t, dict) or key not in t:
            kept.append(t)
            continue
        values = t[key] if isinstance(t[key], list) else [t[key]]
        if allowed is None:
            pinned = _pinned_value(raw, key)
            if pinned in values:
                rest = {k: v for k, v in t.items() if k != key}
                if not rest:
                    raise ExperimentError(
                        source, f"skip[{i}]", f"with {key} pinned to {pinned!r} it skips every run"
                    )
                kept.append(rest)
            continue
        left = [v for v in values if v in allowed]
        if left:
            kept.append({**t, key: left})
    raw["skip"] = kept


def _pinned_value(raw: dict[str, Any], key: str) -> Any:
    if key.startswith(f"{SYSCTL}."):
        return (raw.get(SYSCTL) or {}).get(key.removeprefix(f"{SYSCTL}."))
    return ((raw.get("topology") or {}).get("set") or {}).get(key)


def _grid(
    source: str,
    table: dict[str, Any],
    traffic: FlowSpec,
    stack_raw: dict[str, Any] | None = None,
    conditions: dict[str, dict[str, Any]] | None = None,
) -> dict[str, list[Any]]:
    grid = {}
    for k, v in table.items():
        if not isinstance(v, list) or not v:
            raise ExperimentError(source, f"grid.{k}", f"expected a non-empty list, got {v!r}")
        if k == CONDITION_KEY:
            for j, name in enumerate(v):
                if name not in (conditions or {}):
                    raise ExperimentError(
                        source,
                        f"grid.{k}[{j}]",
                        f"no [conditions.{name}] table (defined: "
                        f"{', '.join(conditions or {}) or 'none'})",
                    )
        if k.startswith("stack."):
            _stack_grid_key(source, k, v, stack_raw or {})
        if k.startswith(f"{SYSCTL}."):
            for j, val in enumerate(v):
                sysctl_value(source, f"grid.{k}[{j}]", k.removeprefix(f"{SYSCTL}."), val)
        if k.startswith("traffic."):
            fld = k.split(".", 1)[1]
            if fld not in FLOW_KEYS or fld in ("client", "server"):
                raise ExperimentError(
                    source, f"grid.{k}", f"not a sweepable traffic field: {fld!r}"
                )
            for j, val in enumerate(v):
                _flow(source, f"grid.{k}[{j}]", {**_flow_raw(traffic), fld: val}, False)
        grid[k] = list(v)
    return grid


def _sample(
    source: str,
    table: dict[str, Any],
    exp_seed: int,
    grid: dict[str, list[Any]],
    traffic: FlowSpec,
    stack_raw: dict[str, Any],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """[sample]: ``n`` points over continuous ``ranges`` ({key: [low, high]}), drawn at random
    or as a Latin hypercube (each range cut in ``n`` equal strata, one point per stratum, the
    strata of the keys paired by a seeded shuffle: every part of every range is covered with
    few runs), with ``seed`` (default: the experiment's). A range of two integers gives
    integers. Each point is crossed with the grid; a key is either gridded or sampled."""
    if not table:
        return {}, []
    _unknown(source, "sample", table, SAMPLE_KEYS)
    method = _typed(source, "sample.method", table.get("method", "lhs"), str)
    if method not in SAMPLE_METHODS:
        raise ExperimentError(
            source, "sample.method", f"one of {', '.join(SAMPLE_METHODS)}, got {method!r}"
        )
    if "n" not in table:
        raise ExperimentError(source, "sample.n", "missing (required): how many points")
    n = _typed(source, "sample.n", table["n"], int, lo=1)
    seed = _typed(source, "sample.seed", table.get("seed", exp_seed), int, lo=0)
    ranges = _table(source, "sample.ranges", table.get("ranges", {}))
    if not ranges:
        raise ExperimentError(source, "sample.ranges", "missing: {key = [low, high], ...}")
    bounds: dict[str, tuple[float, float, bool]] = {}
    for k, v in ranges.items():
        where = f"sample.ranges.{k}"
        if k in grid:
            raise ExperimentError(source, where, "also in [grid]: grid or sample it, not both")
        if (
            not isinstance(v, list)
            or len(v) != 2
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
        ):
            raise ExperimentError(source, where, f"expected [low, high] numbers, got {v!r}")
        lo, hi = v
        if not lo < hi:
            raise ExperimentError(source, where, f"low must be below high, got {v!r}")
        bounds[k] = (float(lo), float(hi), isinstance(lo, int) and isinstance(hi, int))
    rng = random.Random(derive_seed(seed, "sample", method, n))
    columns: dict[str, list[float]] = {}
    for k in bounds:  # (file order, so a seed gives the same points every time)
        if method == "lhs":
            u = [(i + rng.random()) / n for i in range(n)]
            rng.shuffle(u)
        else:
            u = [rng.random() for _ in range(n)]
        columns[k] = u
    points = []
    for i in range(n):
        pt: dict[str, Any] = {}
        for k, (lo, hi, ints) in bounds.items():
            x = lo + columns[k][i] * (hi - lo)
            pt[k] = min(int(hi), int(lo + columns[k][i] * (hi - lo + 1))) if ints else round(x, 3)
        points.append(pt)
    # each sampled value must be one the key would take in a grid
    _grid(source, {k: [p[k] for p in points] for k in bounds}, traffic, stack_raw, {})
    spec = {
        "method": method,
        "n": n,
        "seed": seed,
        "ranges": {k: list(v) for k, v in ranges.items()},
    }
    return spec, points


def split_stack_key(key: str) -> tuple[str, str] | None:
    """("userspace", "scheduler") for the grid key "stack.userspace.scheduler", else None."""
    if not key.startswith("stack."):
        return None
    stack, _, option = key[len("stack.") :].partition(".")
    return stack, option


def _stack_grid_key(source: str, key: str, values: list[Any], stack_raw: dict[str, Any]) -> None:
    """A grid over one option of one stack: every value must be valid for that option."""
    stack, option = split_stack_key(key) or ("", "")
    if stack not in STACKS or not option or "." in option:
        raise ExperimentError(
            source,
            f"grid.{key}",
            f"a stack grid key is stack.<stack>.<option> with a stack from {', '.join(STACKS)}",
        )
    # a stack not run (--stack picked others) still has its values checked; its runs are
    # simply not made, and the other stacks run once per point of the rest of the grid
    base = dict(stack_raw.get(stack) or {})
    for j, val in enumerate(values):
        # an unknown option or a bad value is reported as the grid entry it came from
        try:
            STACKS[stack].validate_options(source, f"stack.{stack}", {**base, option: val})
        except ExperimentError as e:
            raise ExperimentError(
                source, f"grid.{key}[{j}]", f"{e.problem} (as {e.field} = {val!r})"
            ) from None


def variant_name(stack: str, values: dict[str, Any]) -> str:
    """ "userspace-blest" for a run of userspace at stack.userspace.scheduler = "blest"."""
    own = [v for k, v in values.items() if (split_stack_key(k) or ("",))[0] == stack]
    if not own:
        return stack
    return "-".join([stack, *(_short(v) for v in own)])


def _short(value: Any) -> str:
    if isinstance(value, str):
        return value.rpartition(":")[2] if ":" in value else value
    if isinstance(value, list):
        return "+".join(_short(x) for x in value)
    if isinstance(value, dict):
        return "+".join(f"{k}={_short(x)}" for k, x in value.items())
    return str(value)


def _flow_raw(flow: FlowSpec) -> dict[str, Any]:
    """The flow as a file would write it (to check a grid value in it)."""
    d = asdict(flow)
    for k in ("name", "stack"):
        d.pop(k)
    app = {
        k: d.pop(k)
        for k in ("server_argv", "client_argv", "parse", "ready_timeout_s", "server_grace_s")
    }
    if flow.kind != "app":
        return d
    return {
        "kind": "app",
        "client_host": d["client"],
        "server_host": d["server"],
        "server": list(app["server_argv"]),
        "client": list(app["client_argv"]),
        "parse": app["parse"],
        "ready_timeout_s": app["ready_timeout_s"],
        "server_grace_s": app["server_grace_s"],
        **{k: d[k] for k in ("direction", "port", "duration_s", "timeout_s")},
    }


def check_against_topology(exp: Experiment) -> None:
    """Every grid point must give a valid topology, and hosts/links named must exist in it."""
    points = grid_points(exp)
    topos = {}
    for values in points:
        topo_keys = {
            k: v for k, v in values.items() if not k.startswith(("traffic.", "stack.", "sysctl."))
        }
        name, overrides = exp.point_topology(values)
        cond = values.get(CONDITION_KEY)
        bundle = exp.conditions.get(cond, {})
        try:
            topo = load_topology(name, overrides)
        except TopologyError as e:
            fld = e.field
            where = (
                f"conditions.{cond}.{fld}"
                if fld in bundle
                else f"conditions.{cond}.topology"
                if "topology" in bundle and fld in ("(file)", "(syntax)")
                else f"sample.ranges.{fld}"
                if fld in topo_keys and fld in exp.sample_spec.get("ranges", {})
                else f"grid.{fld}"
                if fld in topo_keys
                else f"topology.set.{fld}"
                if fld in exp.topology_set
                else "topology.name"
            )
            raise ExperimentError(exp.source, where, str(e)) from None
        topos[name] = topo
        sysctls = exp.point_sysctls(values)
        where = next(
            (f"grid.{k}" for k in values if k == f"{SYSCTL}.net.mptcp.checksum_enabled"),
            f"{SYSCTL}.net.mptcp.checksum_enabled",
        )
        check_checksum_path(exp.source, where, sysctls, topo)
    for topo in topos.values():
        _check_names(exp, topo)


def _check_names(exp: Experiment, topo: Any) -> None:
    """The hosts, links and stack endpoints the experiment names exist in `topo`."""
    for where, flow in [("traffic", exp.traffic)] + [
        (f"background[{i}]", b) for i, b in enumerate(exp.background)
    ]:
        for role in ("client", "server"):
            h = getattr(flow, role)
            if h not in topo.hosts:
                raise ExperimentError(
                    exp.source,
                    f"{where}.{role}",
                    f"no host {h!r} in {topo.name} (hosts: {', '.join(topo.hosts)})",
                )
    for i, ev in enumerate(exp.events):
        if ev.link not in topo.links:
            raise ExperimentError(
                exp.source,
                f"events[{i}].link",
                f"no link {ev.link!r} in {topo.name} (links: {', '.join(topo.links)})",
            )
    if exp.claims and "path" in exp.claims:
        path = topo.paths.get(exp.claims["path"])
        if path is None:
            raise ExperimentError(
                exp.source,
                "claims.path",
                f"no path {exp.claims['path']!r} in {topo.name} (paths: {', '.join(topo.paths)})",
            )
        if path.src != exp.traffic.client:
            raise ExperimentError(
                exp.source,
                "claims.path",
                f"path {path.name!r} starts at {path.src}, not at the flow under test's client "
                f"{exp.traffic.client}",
            )
        exp.claims["addr"] = topo.links[path.link].addr_of(path.src)
    for s, opts in exp.stack_options.items():
        STACKS[s].check_topology(exp.source, f"stack.{s}", opts, topo)
    for r in resolve_runs(exp):
        if r.stack_options is not None and r.rep == 1:
            where = f"grid.{next(k for k in r.point_values if k.startswith('stack.'))}"
            STACKS[r.stack].check_topology(exp.source, where, r.stack_options, topo)


# ---------------------------------------------------------------------------------------------
# Resolving the runs


def grid_points(exp: Experiment) -> list[dict[str, Any]]:
    """The parameter grid as a list of {key: value}, in file order (product of the lists),
    each crossed with every [sample] point when the file samples."""
    keys = list(exp.grid)
    grid = [
        dict(zip(keys, combo, strict=True))
        for combo in itertools.product(*(exp.grid[k] for k in keys))
    ]
    if not exp.samples:
        return grid
    return [{**g, **s} for g in grid for s in exp.samples]


def derive_seed(seed: int, *parts: Any) -> int:
    """A stable per-run seed (sha256, not Python's salted hash()): same inputs, same seed."""
    digest = hashlib.sha256(":".join(str(p) for p in (seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _raw_stack_options(exp: Experiment, stack: str) -> dict[str, Any]:
    """[stack.<stack>] as written in the file (validation fills in defaults we must not pass
    back through it twice)."""
    return dict(exp.stack_raw.get(stack) or {})


def resolve_runs(exp: Experiment) -> list[RunSpec]:
    """The exact list of runs, in execution order.

    Stacks alternate inside each repetition so slow drift of the machine hits every stack alike;
    the payload seed depends on the point and repetition but not on the stack, so stacks are
    compared on identical bytes. `shuffle = true` permutes the order with the experiment seed.
    """
    runs: list[RunSpec] = []
    first = {k: v[0] for k, v in exp.grid.items() if k.startswith("stack.")}
    for p, values in enumerate(grid_points(exp)):
        topo_name, topo_set = exp.point_topology(values)
        traffic_over = {
            k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("traffic.")
        }
        traffic = FlowSpec(**{**asdict(exp.traffic), **traffic_over})
        for rep in range(1, exp.repetitions + 1):
            seed = derive_seed(exp.seed, p, rep)
            for stack in exp.stacks:
                # a grid over another stack's option: this stack runs at its first value only
                other = {k for k in first if (split_stack_key(k) or ("",))[0] != stack}
                if any(values[k] != first[k] for k in other):
                    continue
                if skipped(exp.skip, {k: v for k, v in values.items() if k not in other}):
                    continue
                own = {
                    split_stack_key(k)[1]: v  # type: ignore[index]
                    for k, v in values.items()
                    if k.startswith("stack.") and k not in other
                }
                opts = None
                if own:
                    raw = {**_raw_stack_options(exp, stack), **own}
                    opts = STACKS[stack].validate_options(exp.source, f"stack.{stack}", raw)
                runs.append(
                    RunSpec(
                        index=0,
                        point=p,
                        point_values={k: v for k, v in values.items() if k not in other},
                        stack=stack,
                        rep=rep,
                        seed=seed,
                        topology_set=copy.deepcopy(topo_set),
                        traffic=traffic,
                        variant=variant_name(stack, values),
                        stack_options=opts,
                        topology=topo_name if topo_name != exp.topology else "",
                        sysctls=exp.point_sysctls(values),
                    )
                )
    if exp.shuffle:
        random.Random(derive_seed(exp.seed, "order")).shuffle(runs)
    return [RunSpec(**{**r.__dict__, "index": i}) for i, r in enumerate(runs)]
