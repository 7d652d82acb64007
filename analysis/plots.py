"""Figures for reports (seaborn on the Agg backend: no display on the test machines).

Each function takes tidy DataFrames from analysis.metrics and writes one PNG, returning its path.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")
SMOOTH_BINS = 5  # 500 ms of 100 ms bins: the connection's smoothed goodput
EVENT_COLORS = {"down": "tab:red", "up": "tab:green", "set": "tab:purple"}


def _events(ax, events: list[dict]) -> None:
    """Vertical lines at link events (t relative to the same origin as the x axis)."""
    for e in events:
        ax.axvline(e["t"], color=EVENT_COLORS.get(e.get("action", ""), "gray"), ls="--", lw=1.2)
        ax.annotate(
            f"{e.get('link', '')} {e.get('action', '')}",
            (e["t"], 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=8,
        )


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def goodput_plot(
    sub: pd.DataFrame,
    conn: pd.DataFrame,
    labels: dict[int, str],
    events: list[dict],
    path: Path,
    title: str = "",
) -> Path:
    """Goodput per subflow (first-seen DSN bytes) and of the connection (data ACK), 100 ms bins.
    The connection's raw bins spike when DATA_ACKs bunch (up to twice the link rate), so they
    are drawn faint, under a 500 ms moving average: the rate a reader wants to see."""
    fig, ax = plt.subplots(figsize=(9, 4))
    if not sub.empty:
        d = sub.assign(
            subflow=sub["subflow"].map(lambda s: labels.get(int(s), f"sf{s}")),
            mbps=sub["goodput_bps"] / 1e6,
        )
        sns.lineplot(d, x="t", y="mbps", hue="subflow", ax=ax, drawstyle="steps-post")
    if not conn.empty:
        ax.step(
            conn["t"],
            conn["goodput_bps"] / 1e6,
            where="post",
            color="black",
            lw=0.8,
            alpha=0.3,
            label="connection (data ACK, 100 ms)",
        )
        smooth = conn["goodput_bps"].rolling(SMOOTH_BINS, min_periods=1).mean() / 1e6
        # each average drawn at the middle of its window
        b = float(conn["t"].diff().median()) if len(conn) > 1 else 0.1
        mid = conn["t"] + b * (0.5 - (SMOOTH_BINS - 1) / 2)
        ax.plot(mid, smooth, color="black", lw=2, label="connection, 500 ms average")
    _events(ax, events)
    ax.set(xlabel="time [s]", ylabel="goodput [Mbit/s]", title=title or "Goodput")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper right")
    else:  # a run that moved no data (a middlebox that blocked it): say so on the figure
        ax.text(0.5, 0.5, "no data acknowledged", transform=ax.transAxes, ha="center")
    return _save(fig, path)


def dsn_plot(
    rx: pd.DataFrame,
    labels: dict[int, str],
    t0: float,
    events: list[dict],
    path: Path,
    title: str = "",
    tx: pd.DataFrame | None = None,
) -> Path:
    """Data sequence number vs time per subflow at the receiver (the mptcptrace picture);
    with ``tx`` (the sender's capture) what left the sender too, as hollow markers, so the
    time between the two columns of a subflow is its one-way delay and a point sent but
    never received is a loss."""
    fig, ax = plt.subplots(figsize=(9, 4))
    if not rx.empty:
        base = int(rx["dsn"].min())
        if tx is not None and not tx.empty:
            base = min(base, int(tx["dsn"].min()))

        def frame(d: pd.DataFrame) -> pd.DataFrame:
            return pd.DataFrame(
                {
                    "t": d["time"].to_numpy() - t0,
                    "MB": (d["dsn"].astype("uint64").to_numpy() - np.uint64(base)).astype(
                        np.float64
                    )
                    / 1e6,
                    "subflow": d["subflow"].map(lambda s: labels.get(int(s), f"sf{s}")),
                }
            )

        if tx is not None and not tx.empty:
            sns.scatterplot(
                frame(tx),
                x="t",
                y="MB",
                hue="subflow",
                s=10,
                marker="$\\circ$",
                ax=ax,
                legend=False,
                alpha=0.6,
            )
        sns.scatterplot(frame(rx), x="t", y="MB", hue="subflow", s=6, linewidth=0, ax=ax)
    _events(ax, events)
    ax.set(xlabel="time [s]", ylabel="data sequence [MB from first]", title=title or "DSN vs time")
    return _save(fig, path)


def owd_plot(owd: pd.DataFrame, labels: dict[int, str], path: Path, title: str = "") -> Path:
    """CDF of the one-way delay (ms) per subflow and direction, from both ends' captures."""
    fig, ax = plt.subplots(figsize=(7, 4))
    d = owd.assign(
        delay_ms=owd["delay_s"] * 1e3,
        curve=[
            f"{labels.get(int(s), f'sf{s}')} {dr}"
            for s, dr in zip(owd["subflow"], owd["direction"], strict=True)
        ],
    )
    sns.ecdfplot(d, x="delay_ms", hue="curve", ax=ax)
    ax.set(xlabel="one-way delay [ms]", ylabel="CDF", title=title or "One-way delay")
    return _save(fig, path)


def in_flight_plot(
    flight: pd.DataFrame, labels: dict[int, str], events: list[dict], path: Path, title: str = ""
) -> Path:
    """Bytes in flight per subflow over time at the sender (largest of each bin)."""
    fig, ax = plt.subplots(figsize=(9, 4))
    d = flight.assign(
        kB=flight["bytes"] / 1e3,
        subflow=flight["subflow"].map(lambda s: labels.get(int(s), f"sf{s}")),
    )
    sns.lineplot(d, x="t", y="kB", hue="subflow", drawstyle="steps-post", ax=ax)
    _events(ax, events)
    ax.set(xlabel="time [s]", ylabel="in flight [kB]", title=title or "Bytes in flight")
    return _save(fig, path)


def cwnd_plot(cwnd: pd.DataFrame, events: list[dict], path: Path, title: str = "") -> Path:
    """Congestion window per subflow over time, as the sending stack reported it."""
    fig, ax = plt.subplots(figsize=(9, 4))
    d = cwnd.assign(kB=cwnd["bytes"] / 1e3, subflow=cwnd["host"] + " " + cwnd["subflow"])
    sns.lineplot(d, x="t", y="kB", hue="subflow", drawstyle="steps-post", ax=ax)
    _events(ax, events)
    ax.set(xlabel="time [s]", ylabel="cwnd [kB]", title=title or "Congestion window")
    return _save(fig, path)


def reordering_cdf(delays: pd.DataFrame, path: Path, title: str = "") -> Path:
    """CDF of reordering delay (ms) at the receiver, one curve per group (e.g. stack)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    if not delays.empty:
        d = delays.dropna(subset=["delay_s"]).assign(delay_ms=lambda x: x["delay_s"] * 1e3)
        sns.ecdfplot(d, x="delay_ms", hue="group" if "group" in d else None, ax=ax)
    ax.set(
        xlabel="reordering delay (scheduling: data-level queue) [ms]",
        ylabel="CDF",
        title=title or "Reordering delay",
    )
    return _save(fig, path)


def failover_plot(tab: pd.DataFrame, path: Path, title: str = "") -> Path:
    """Failover gap per stack (bars: mean, whiskers: 95% CI over repetitions)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    if not tab.empty:
        d = tab.melt(
            id_vars=["stack"],
            value_vars=[c for c in ("gap_s", "first_new_data_s", "recovery_s") if c in tab],
            var_name="metric",
            value_name="seconds",
        ).dropna()
        if not d.empty:
            sns.barplot(d, x="stack", y="seconds", hue="metric", errorbar=("ci", 95), ax=ax)
    ax.set(title=title or "Failover: gap and recovery per stack", ylabel="seconds")
    return _save(fig, path)


def benefit_heatmap(grid: pd.DataFrame, x: str, y: str, path: Path, title: str = "") -> Path:
    """Aggregation benefit over a swept 2-D parameter grid (mean over repetitions)."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    if not grid.empty:
        # Runs without a benefit leave None in the column; as objects seaborn cannot colour it.
        grid = grid.assign(benefit=pd.to_numeric(grid["benefit"], errors="coerce"))
        piv = grid.pivot_table(index=y, columns=x, values="benefit", aggfunc="mean")
        sns.heatmap(piv, annot=True, fmt=".2f", vmin=-1, vmax=1, cmap="RdBu", ax=ax)
    ax.set(title=title or "Aggregation benefit")
    return _save(fig, path)
