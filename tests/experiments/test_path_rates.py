"""The nominal path rates the aggregation metrics divide by: on a trace-driven link the two
directions differ, and a flow's rate is the one its data goes (pure: the plan, no network)."""

from types import SimpleNamespace

from experiments.config import FlowSpec
from experiments.runner import _path_rates
from testbed.routing import resolve_path
from testbed.topology import load_topology


def test_a_download_counts_the_downlink_trace_and_an_upload_the_uplink():
    topo = load_topology("cellular_wifi")
    net = SimpleNamespace(paths=[resolve_path(topo, p) for p in topo.paths])
    down = _path_rates(net, FlowSpec(direction="download"))
    up = _path_rates(net, FlowSpec(direction="upload"))
    lte = topo.links["lte"].model
    assert down == {"wifi": 20.0, "lte": lte.trace_down.mean_mbit}
    assert up == {"wifi": 20.0, "lte": lte.trace_up.mean_mbit}
    assert abs(down["lte"] - 5.03) < 0.01 and abs(up["lte"] - 5.95) < 0.01
