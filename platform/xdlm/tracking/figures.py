"""Figures of a run's curves against its accounting metrics, read back from MLflow and logged to
the run with ``log_figure``: a PNG (matplotlib) and an interactive HTML page (plotly, its
JavaScript inline so the page opens offline; MLflow's own default would load it from a CDN).

A curve ``y`` against ``x`` pairs the values of the two metrics logged at the same step, which
is why the training loop logs the accounting metrics with every record.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from mlflow import MlflowClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Panel:
    """One row of the figure: ``metrics`` (names, plotted together) on a y axis titled ``title``;
    ``baseline``: a horizontal reference line (value, label) or None."""

    title: str
    metrics: tuple[str, ...]
    log_y: bool = False
    baseline: tuple[float, str] | None = None


def history(client: MlflowClient, run_id: str, key: str) -> dict[int, float]:
    """{step: value} of one metric (the last value where a step was logged twice)."""
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def paired(ys: dict[int, float], xs: dict[int, float]) -> tuple[list[float], list[float]]:
    """The points (x, y) of the steps both metrics have, in step order; non-finite ones dropped."""
    steps = [s for s in sorted(ys) if s in xs and math.isfinite(ys[s]) and math.isfinite(xs[s])]
    return [xs[s] for s in steps], [ys[s] for s in steps]


def curve_data(client: MlflowClient, run_id: str, panels: Sequence[Panel], x_axes: Sequence[str]):
    """{(panel title, metric, x axis): (xs, ys)} for every pair with at least one point."""
    cache: dict[str, dict[int, float]] = {}

    def get(key: str) -> dict[int, float]:
        if key not in cache:
            cache[key] = history(client, run_id, key)
        return cache[key]

    data = {}
    for panel in panels:
        for metric in panel.metrics:
            for x in x_axes:
                xs, ys = paired(get(metric), get(x))
                if xs:
                    data[(panel.title, metric, x)] = (xs, ys)
    return data


def log_curve_figures(client: MlflowClient, run_id: str, panels: Sequence[Panel], x_axes: Sequence[str],
                      artifact_stem: str = "figures/curves", title: str = "") -> list[str]:
    """Log ``<stem>.png`` and ``<stem>.html``: one row per panel, one column per x axis (log
    scale). Returns the artifact paths logged ([] when the run has no such curves)."""
    data = curve_data(client, run_id, panels, x_axes)
    if not data:
        return []
    logged = []
    png = f"{artifact_stem}.png"
    client.log_figure(run_id, matplotlib_figure(data, panels, x_axes, title), png)
    logged.append(png)
    html = f"{artifact_stem}.html"
    client.log_figure(run_id, plotly_figure(data, panels, x_axes, title), html,
                      save_kwargs={"include_plotlyjs": True, "full_html": True})
    logged.append(html)
    return logged


def matplotlib_figure(data, panels: Sequence[Panel], x_axes: Sequence[str], title: str):
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    fig = Figure(figsize=(5.5 * len(x_axes), 3.6 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), len(x_axes), squeeze=False)
    for row, panel in enumerate(panels):
        for col, x in enumerate(x_axes):
            ax = axes[row][col]
            for metric in panel.metrics:
                if (panel.title, metric, x) in data:
                    xs, ys = data[(panel.title, metric, x)]
                    ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=metric)
            if panel.baseline is not None:
                ax.axhline(panel.baseline[0], color="grey", linestyle="--", label=panel.baseline[1])
            ax.set_xscale("log")
            if panel.log_y:
                ax.set_yscale("log")
            ax.set_xlabel(x)
            ax.set_ylabel(panel.title)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def plotly_figure(data, panels: Sequence[Panel], x_axes: Sequence[str], title: str):
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=len(panels), cols=len(x_axes),
                        subplot_titles=[f"{p.title} vs {x}" for p in panels for x in x_axes])
    for row, panel in enumerate(panels, start=1):
        for col, x in enumerate(x_axes, start=1):
            for metric in panel.metrics:
                if (panel.title, metric, x) in data:
                    xs, ys = data[(panel.title, metric, x)]
                    fig.add_scatter(x=xs, y=ys, mode="lines+markers", name=f"{metric} vs {x}", row=row, col=col)
            if panel.baseline is not None:
                fig.add_hline(y=panel.baseline[0], line_dash="dash", line_color="grey",
                              annotation_text=panel.baseline[1], row=row, col=col)
            fig.update_xaxes(type="log", title_text=x, row=row, col=col)
            fig.update_yaxes(type="log" if panel.log_y else "linear", title_text=panel.title, row=row, col=col)
    fig.update_layout(title=title, height=360 * len(panels), width=560 * len(x_axes))
    return fig
