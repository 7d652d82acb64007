"""The runner's metrics on traffic-tool reports with known answers (no network): the
aggregation benefit and failover figures use the same definitions as analysis/."""

from __future__ import annotations

import pytest

from experiments.metrics import run_metrics


def _receiver(pieces: list[tuple[float, float]]) -> dict:
    """In-order byte samples every 100 ms from (until_t, rate_mbit) pieces."""
    samples, t, level = [[0.0, 0]], 0.0, 0.0
    for until, rate in pieces:
        while t < until - 1e-9:
            t = round(t + 0.1, 3)
            level += rate * 1e6 / 8 * 0.1
            samples.append([t, int(level)])
    n = samples[-1][1]
    return {"role": "client", "samples": samples, "bytes_received": n, "received_sha256": "h"}


def _metrics(receiver: dict, rates: dict, events=(), times=(), warmup_s=1.0):
    server = {"role": "server", "bytes_sent": receiver["bytes_received"], "sent_sha256": "h"}
    return run_metrics(
        label="kernel-mptcp/rep0",
        stack="kernel-mptcp",
        point=0,
        point_values={},
        rep=0,
        client=receiver,
        server=server,
        direction="download",
        events=list(events),
        event_times=list(times),
        path_rates=rates,
        warmup_s=warmup_s,
        window_s=10.0,
    )


def test_aggregation_benefit_edge_cases():
    two = {"wifi": 20.0, "lte": 10.0}
    assert _metrics(_receiver([(10, 25)]), two).aggregation_benefit == pytest.approx(0.5)
    # zero goodput is the worst benefit, not a missing one
    assert _metrics(_receiver([(10, 0)]), two).aggregation_benefit == -1.0
    # one path: nothing to aggregate
    assert _metrics(_receiver([(10, 19)]), {"wifi": 20.0}).aggregation_benefit is None
    # not clamped
    assert _metrics(_receiver([(10, 33)]), two).aggregation_benefit == pytest.approx(1.3)
    # no steady window after the warm-up: undefined, not -1
    m = _metrics(_receiver([(0.8, 25)]), two)
    assert m.aggregation_benefit is None and m.goodput_vs_sum_of_rates is None


def test_failover_recovery_and_efficiency():
    # 30 Mbit/s, wifi (20) cut at 5 s: nothing until 6 s, then lte's 10 Mbit/s
    rx = _receiver([(5, 30), (6, 0), (20, 10)])
    down = {"at": 5.0, "link": "wifi", "action": "down", "actual": 5.0}
    m = _metrics(rx, {"wifi": 20.0, "lte": 10.0}, [down], [5.0])
    [f] = m.failover
    assert f.surviving_capacity_mbit == 10.0
    assert f.recovery_s == pytest.approx(1.1, abs=0.011)  # progress seen moving at the 6.1 sample
    assert f.efficiency == pytest.approx(2 / 3, abs=0.01)  # 2 s of 3 at the surviving rate
    assert f.gap_s == 0.0  # (the tool's own pause list is empty in this hand-made report)


def test_background_flows_steady_goodput_after_the_warm_up():
    """A competing flow's goodput after the warm-up, from its receiver's samples: 1 MB per
    second from 2 s on (after a slow first second) is 8 Mbit/s; the whole transfer less."""
    from experiments.config import FlowSpec
    from experiments.runner import FlowResult, _background_results

    samples = [[t / 10, 0.0 if t <= 10 else (t - 10) * 1e5] for t in range(0, 121)]
    rx = {"samples": samples, "goodput_mbit": 6.7, "received_sha256": "a", "sent_sha256": "b"}
    tx = {"received_sha256": "b", "sent_sha256": "a"}
    fr = FlowResult("competitor", "tcp", client=rx, server=tx)
    spec = FlowSpec(name="competitor", stack="tcp", direction="download")
    (bg,) = _background_results([fr], [spec], warmup_s=2.0)
    assert bg["goodput_mbit"] == 6.7 and bg["intact"]
    assert bg["goodput_steady_mbit"] == pytest.approx(8.0)
    (bg,) = _background_results([fr], [spec], warmup_s=13.0)  # no window after the warm-up
    assert bg["goodput_steady_mbit"] is None


def test_bottleneck_share_after_the_warm_up_in_the_summary_too():
    """The summary's main_share and the report's share are one function: steady goodputs
    when every competitor's was recorded, whole transfers otherwise."""
    from experiments.metrics import bottleneck_share

    steady = [{"goodput_mbit": 12.0, "goodput_steady_mbit": 10.0}]
    assert bottleneck_share(10.0, 8.0, steady) == 0.5
    assert bottleneck_share(10.0, 8.0, [{"goodput_mbit": 12.0}]) == 0.4
    assert bottleneck_share(None, 0.0, [{"goodput_mbit": 0.0}]) is None
