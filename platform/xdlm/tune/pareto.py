"""The Pareto frontier between understanding and few-step generation, and its plots.

Both axes are "lower is better": x is a likelihood measure (NELBO, nats/token), y a generation
measure (generative PPL under an evaluator LM, or the entropy-gap proxy when there is none).
A point (a configuration: the means of its replicates) is on the frontier when no other point is
at least as good on both and better on one.

With replicates each point has a 95 % interval on both axes, and ``frontier_resolution`` says
whether its place is resolved at this budget: a frontier point is resolved when no other point's
intervals reach as low as its own on both axes (nothing could dominate it); a point off the
frontier is resolved when some point dominates it with both intervals clear of its own. The plots
draw the intervals as error bars and hollow markers for unresolved points.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from xdlm.tune.stats import Estimate


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points (minimising both coordinates), sorted by x."""
    front = []
    for i, (xi, yi) in enumerate(points):
        dominated = any(
            xj <= xi and yj <= yi and (xj < xi or yj < yi)
            for j, (xj, yj) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], points[i][1]))


@dataclass(frozen=True)
class Placement:
    """Where one point stands, and whether that is resolved by its intervals."""

    on_frontier: bool
    resolved: bool | None
    """None: some point has no interval (one replicate), so it cannot be told."""
    against: tuple[int, ...] = ()
    """Frontier point: the points that could dominate it; off the frontier: the points that
    dominate its mean but not clear of its intervals."""


def _could_dominate(j: tuple[Estimate, Estimate], i: tuple[Estimate, Estimate]) -> bool:
    """Somewhere inside both intervals, j is at least as good as i on both axes."""
    return j[0].low <= i[0].high and j[1].low <= i[1].high  # type: ignore[operator]


def _surely_dominates(j: tuple[Estimate, Estimate], i: tuple[Estimate, Estimate]) -> bool:
    """j's whole interval is better than i's on both axes."""
    return j[0].high < i[0].low and j[1].high < i[1].low  # type: ignore[operator]


def frontier_resolution(boxes: Sequence[tuple[Estimate, Estimate]]) -> list[Placement]:
    """Each point's place on the frontier of the means, and whether its intervals settle it."""
    means = [(x.mean, y.mean) for x, y in boxes]
    front = set(pareto_front(means))
    known = all(x.has_interval and y.has_interval for x, y in boxes)
    placements = []
    for i, box in enumerate(boxes):
        others = [j for j in range(len(boxes)) if j != i]
        if i in front:
            against = tuple(j for j in others if known and _could_dominate(boxes[j], box))
            placements.append(Placement(True, (not against) if known else None, against))
            continue
        dominators = [j for j in others if means[j][0] <= means[i][0] and means[j][1] <= means[i][1]]
        if not known:
            placements.append(Placement(False, None, tuple(dominators)))
            continue
        sure = any(_surely_dominates(boxes[j], box) for j in dominators)
        placements.append(Placement(False, sure, () if sure else tuple(dominators)))
    return placements


def _bars(errors, axis: int) -> list[float] | None:
    if errors is None or all(e[axis] is None for e in errors):
        return None
    return [0.0 if e[axis] is None else e[axis] for e in errors]


def plot_png(points, labels, front, xlabel: str, ylabel: str, title: str, path: Path,
             errors: Sequence[tuple[float | None, float | None]] | None = None,
             unresolved: Sequence[int] = ()) -> Path:
    """``errors``: the 95 % half-widths (x, y) of each point, drawn as error bars;
    ``unresolved``: points whose place is not resolved, drawn hollow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    if errors is not None:
        ax.errorbar(xs, ys, xerr=_bars(errors, 0), yerr=_bars(errors, 1), fmt="none", ecolor="#8a8a8a",
                    elinewidth=1, capsize=3, zorder=1, label="95 % interval (replicates)")
    solid = [i for i in range(len(points)) if i not in set(unresolved)]
    ax.scatter([xs[i] for i in solid], [ys[i] for i in solid], color="#8a8a8a",
               label="configurations" if errors is not None else "trials", zorder=2)
    if unresolved:
        ax.scatter([xs[i] for i in unresolved], [ys[i] for i in unresolved], facecolors="white",
                   edgecolors="#8a8a8a", label="place not resolved", zorder=4)
    ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "-o", color="#c0392b",
            label="Pareto frontier", zorder=3)
    for (x, y), label in zip(points, labels, strict=True):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.margins(0.15)  # room for the labels of the extreme points
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_html(points, labels, front, xlabel: str, ylabel: str, title: str, path: Path,
              errors: Sequence[tuple[float | None, float | None]] | None = None) -> Path:
    """Interactive plotly page (self-contained, works offline); an inline SVG without plotly.
    ``errors``: the 95 % half-widths (x, y) of each point, drawn as error bars."""
    try:
        import plotly.graph_objects as go
    except ImportError:
        path.write_text(_svg_page(points, labels, front, xlabel, ylabel, title, errors))
        return path
    fig = go.Figure()
    bars = {axis: ({"type": "data", "array": values, "visible": True} if values is not None else None)
            for axis, values in (("x", _bars(errors, 0)), ("y", _bars(errors, 1)))}
    fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="markers+text",
                             text=labels, textposition="top right",
                             name="configurations (95 % intervals)" if errors is not None else "trials",
                             error_x=bars["x"], error_y=bars["y"],
                             hovertemplate="%{text}<br>x=%{x:.4f}<br>y=%{y:.4f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[points[i][0] for i in front], y=[points[i][1] for i in front],
                             mode="lines+markers", name="Pareto frontier", line={"color": "#c0392b"}))
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel, template="plotly_white")
    fig.write_html(str(path), include_plotlyjs=True, full_html=True)
    return path


def _svg_page(points, labels, front, xlabel, ylabel, title, errors=None) -> str:
    width, height, pad = 640, 440, 60
    ex = _bars(errors, 0) or [0.0] * len(points)
    ey = _bars(errors, 1) or [0.0] * len(points)
    xs = [p[0] - e for p, e in zip(points, ex, strict=True)] + [p[0] + e for p, e in zip(points, ex, strict=True)]
    ys = [p[1] - e for p, e in zip(points, ey, strict=True)] + [p[1] + e for p, e in zip(points, ey, strict=True)]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

    def sx(x):
        return pad + (x - x0) / (x1 - x0) * (width - 2 * pad)

    def sy(y):
        return height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad)

    dots = "".join(
        f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="5" fill="#888"><title>{html.escape(label)} '
        f'({x:.4f}, {y:.4f})</title></circle><text x="{sx(x) + 7:.1f}" y="{sy(y) - 7:.1f}" '
        f'font-size="11">{html.escape(label)}</text>'
        for (x, y), label in zip(points, labels, strict=True)
    )
    bars = "".join(
        f'<line x1="{sx(x - a):.1f}" y1="{sy(y):.1f}" x2="{sx(x + a):.1f}" y2="{sy(y):.1f}" stroke="#888"/>'
        f'<line x1="{sx(x):.1f}" y1="{sy(y - b):.1f}" x2="{sx(x):.1f}" y2="{sy(y + b):.1f}" stroke="#888"/>'
        for (x, y), a, b in zip(points, ex, ey, strict=True) if a or b
    )
    line = " ".join(f"{sx(points[i][0]):.1f},{sy(points[i][1]):.1f}" for i in front)
    return (
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<h3>{html.escape(title)}</h3><svg width='{width}' height='{height}' xmlns='http://www.w3.org/2000/svg'>"
        f"<rect width='100%' height='100%' fill='white' stroke='#ccc'/>"
        f"<polyline points='{line}' fill='none' stroke='#c0392b' stroke-width='2'/>{bars}{dots}"
        f"<text x='{width / 2}' y='{height - 15}' text-anchor='middle'>{html.escape(xlabel)}</text>"
        f"<text x='15' y='{height / 2}' transform='rotate(-90 15 {height / 2})' text-anchor='middle'>"
        f"{html.escape(ylabel)}</text></svg><pre>{html.escape(json.dumps(points))}</pre>"
    )
