"""The Pareto frontier between understanding and few-step generation, and its plots.

Both axes are "lower is better": x is a likelihood measure (NELBO, nats/token), y a generation
measure (generative PPL under an evaluator LM, or the entropy-gap proxy when there is none).
A trial is on the frontier when no other trial is at least as good on both and better on one.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path


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


def plot_png(points, labels, front, xlabel: str, ylabel: str, title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    ax.scatter(xs, ys, color="#8a8a8a", label="trials", zorder=2)
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


def plot_html(points, labels, front, xlabel: str, ylabel: str, title: str, path: Path) -> Path:
    """Interactive plotly page (self-contained, works offline); an inline SVG without plotly."""
    try:
        import plotly.graph_objects as go
    except ImportError:
        path.write_text(_svg_page(points, labels, front, xlabel, ylabel, title))
        return path
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="markers+text",
                             text=labels, textposition="top right", name="trials",
                             hovertemplate="%{text}<br>x=%{x:.4f}<br>y=%{y:.4f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[points[i][0] for i in front], y=[points[i][1] for i in front],
                             mode="lines+markers", name="Pareto frontier", line={"color": "#c0392b"}))
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel, template="plotly_white")
    fig.write_html(str(path), include_plotlyjs=True, full_html=True)
    return path


def _svg_page(points, labels, front, xlabel, ylabel, title) -> str:
    width, height, pad = 640, 440, 60
    xs, ys = [p[0] for p in points], [p[1] for p in points]
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
    line = " ".join(f"{sx(points[i][0]):.1f},{sy(points[i][1]):.1f}" for i in front)
    return (
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<h3>{html.escape(title)}</h3><svg width='{width}' height='{height}' xmlns='http://www.w3.org/2000/svg'>"
        f"<rect width='100%' height='100%' fill='white' stroke='#ccc'/>"
        f"<polyline points='{line}' fill='none' stroke='#c0392b' stroke-width='2'/>{dots}"
        f"<text x='{width / 2}' y='{height - 15}' text-anchor='middle'>{html.escape(xlabel)}</text>"
        f"<text x='15' y='{height / 2}' transform='rotate(-90 15 {height / 2})' text-anchor='middle'>"
        f"{html.escape(ylabel)}</text></svg><pre>{html.escape(json.dumps(points))}</pre>"
    )
