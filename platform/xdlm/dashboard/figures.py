"""The dashboard's figures as plotly figure dicts (``{"data": [...], "layout": {...}}``): drawn
in the page by the plotly.js the dashboard serves, and logged to a run as artifacts under
``dashboard/``: interactive HTML with plotly.js inline (opens offline, and in the MLflow UI's
artifact view) and a PNG drawn from the same dict by matplotlib (no browser or kaleido needed).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xdlm.dashboard.data import Series

ARTIFACT_DIR = "dashboard"

#: What a sampler step did to a position (``xdlm.diffusion.sampling.EVENTS``), colour-blind safe
#: (Okabe-Ito): the four states the trajectory viewer tells apart.
EVENT_COLOURS = {"kept": "#d9d9d9", "unmasked": "#0072b2", "changed": "#e69f00", "renoised": "#cc79a7"}
EVENT_LABELS = {"kept": "kept", "unmasked": "unmasked", "changed": "changed by uniform-noise correction",
                "renoised": "re-noised (back to [MASK])"}
AXIS_TITLES = {"step": "step", "tokens": "tokens seen", "flops": "training FLOPs"}


def curves_figure(series: Sequence[Series], metric: str, x_axis: str, log_x: bool = False,
                  log_y: bool = False, smoothed: bool = False) -> dict[str, Any]:
    """One line per run (the smoothed one solid over the raw one faint, when smoothing)."""
    data = []
    for i, s in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        if smoothed:
            data.append({"type": "scatter", "mode": "lines", "x": s.x, "y": s.y, "name": f"{s.label} (raw)",
                         "line": {"color": colour, "width": 1}, "opacity": 0.3, "showlegend": False,
                         "legendgroup": s.run_id})
        data.append({"type": "scatter", "mode": "lines+markers", "x": s.x, "y": s.smoothed if smoothed else s.y,
                     "name": s.label, "line": {"color": colour, "width": 2}, "marker": {"size": 4},
                     "legendgroup": s.run_id})
    return resolved({"data": data, "layout": {
        "title": {"text": metric}, "template": "plotly_white", "height": 460,
        "xaxis": {"title": {"text": AXIS_TITLES.get(x_axis, x_axis)}, "type": "log" if log_x else "linear"},
        "yaxis": {"title": {"text": metric}, "type": "log" if log_y else "linear"},
        "legend": {"orientation": "h", "y": -0.2}, "margin": {"t": 50, "r": 20}}})


PALETTE = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#f0e442"]


def pareto_figure(points: Sequence[dict[str, Any]], x_label: str, y_label: str, title: str) -> dict[str, Any]:
    """Configurations (means with 95 % error bars; hollow where their place is not resolved)
    and the frontier through the non-dominated ones."""
    def bars(key: str) -> dict[str, Any] | None:
        values = [p[key] for p in points]
        if all(v is None for v in values):
            return None
        return {"type": "data", "array": [0.0 if v is None else v for v in values], "visible": True}

    front = sorted((p for p in points if p["on_frontier"]), key=lambda p: (p["x"], p["y"]))
    marker = {"size": 10, "color": "#5f6b7a", "line": {"color": "#5f6b7a", "width": 2},
              "symbol": ["circle-open" if p["resolved"] is False else "circle" for p in points]}
    data = [{"type": "scatter", "mode": "markers+text", "x": [p["x"] for p in points], "y": [p["y"] for p in points],
             "text": [f"{p['label']} (n={p['n']})" for p in points], "textposition": "top right",
             "name": "configurations (mean, 95 % interval)", "marker": marker},
            {"type": "scatter", "mode": "lines+markers", "x": [p["x"] for p in front], "y": [p["y"] for p in front],
             "name": "Pareto frontier", "line": {"color": "#c0392b", "width": 2}, "marker": {"size": 6}}]
    for key, axis in (("x_err", "error_x"), ("y_err", "error_y")):
        if (b := bars(key)) is not None:
            data[0][axis] = b
    return resolved({"data": data, "layout": {
        "title": {"text": title}, "template": "plotly_white", "height": 480,
        "xaxis": {"title": {"text": x_label}}, "yaxis": {"title": {"text": y_label}},
        "legend": {"orientation": "h", "y": -0.2}}})


def trajectory_figure(payload: dict[str, Any], sample: int = 0) -> dict[str, Any]:
    """Positions (x) by sampler step (y): each cell coloured by what that step did to it, the
    token it holds after the step on hover; beside it, how many positions had each event."""
    events = payload["events"]
    chosen = payload["samples"][sample]
    steps = len(chosen["events"])
    vocab = payload["vocab"]
    n = len(events)
    scale = []
    for code, name in enumerate(events):  # a discrete colour scale: one band per event code
        colour = EVENT_COLOURS.get(name, "#888888")
        scale += [[code / n, colour], [(code + 1) / n, colour]]
    hover = [[f"step {j + 1}, position {i}: {vocab.get(str(t), t)!s} ({events[e]})"
              for i, (t, e) in enumerate(zip(chosen["tokens"][j + 1], chosen["events"][j], strict=True))]
             for j in range(steps)]
    data = [{"type": "heatmap", "z": chosen["events"], "x": list(range(len(chosen["events"][0]) if steps else 0)),
             "y": list(range(1, steps + 1)), "zmin": -0.5, "zmax": n - 0.5, "colorscale": scale,
             "text": hover, "hoverinfo": "text", "xaxis": "x", "yaxis": "y",
             "colorbar": {"tickvals": list(range(n)), "ticktext": events, "len": 0.6, "y": 0.7}}]
    counts = payload.get("counts") or []
    for code, name in enumerate(events):
        if name == "kept":
            continue
        data.append({"type": "bar", "x": list(range(1, len(counts) + 1)), "y": [c[code] for c in counts],
                     "name": EVENT_LABELS.get(name, name), "marker": {"color": EVENT_COLOURS.get(name)},
                     "xaxis": "x2", "yaxis": "y2"})
    title = (f"denoising trajectory of {payload.get('run', 'a run')}: k = {payload.get('k')}, "
             f"{payload.get('steps')} steps (sample {sample})")
    return resolved({"data": data, "layout": {
        "title": {"text": title}, "template": "plotly_white", "height": 640, "barmode": "stack",
        "grid": {"rows": 2, "columns": 1},
        "xaxis": {"title": {"text": "position"}, "domain": [0, 0.9], "anchor": "y"},
        "yaxis": {"title": {"text": "sampler step"}, "autorange": "reversed", "domain": [0.42, 1.0], "anchor": "x"},
        "xaxis2": {"title": {"text": "sampler step"}, "domain": [0, 0.9], "anchor": "y2"},
        "yaxis2": {"title": {"text": "positions (all recorded samples)"}, "domain": [0, 0.3], "anchor": "x2"},
        "legend": {"orientation": "h", "y": -0.12}}})


def resolved(figure: dict[str, Any]) -> dict[str, Any]:
    """The figure checked by plotly and in the form plotly.js reads (a named template such as
    ``plotly_white`` expanded), as plain JSON data."""
    import json

    import plotly.graph_objects as go

    return json.loads(go.Figure(figure).to_json())


# -- files and MLflow artifacts ------------------------------------------------------------------

def write_html(figure: dict[str, Any], path: Path) -> Path:
    """A self-contained interactive page: plotly.js inline, so it opens offline."""
    import plotly.io as pio

    pio.write_html(figure, str(path), include_plotlyjs=True, full_html=True)
    return path


def write_png(figure: dict[str, Any], path: Path) -> Path:
    """The figure drawn by matplotlib from the same dict (scatter lines/markers with error bars,
    heatmaps with a discrete scale, stacked bars), one panel per y axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    layout = figure.get("layout", {})
    axes_names = sorted({t.get("yaxis", "y") for t in figure["data"]}) or ["y"]
    fig, axes = plt.subplots(len(axes_names), 1, figsize=(9, 4 + 2.5 * (len(axes_names) - 1)), dpi=110,
                             squeeze=False)
    panels = {name: axes[i][0] for i, name in enumerate(axes_names)}
    bottoms: dict[str, list[float]] = {}
    for trace in figure["data"]:
        ax = panels[trace.get("yaxis", "y")]
        kind = trace.get("type", "scatter")
        if kind == "heatmap":
            colours = [c for _, c in trace.get("colorscale", [])][::2] or None
            ax.imshow(trace["z"], aspect="auto", interpolation="nearest", vmin=trace.get("zmin"),
                      vmax=trace.get("zmax"), cmap=ListedColormap(colours) if colours else None,
                      extent=(-0.5, len(trace["z"][0]) - 0.5, len(trace["z"]) + 0.5, 0.5))
        elif kind == "bar":
            key = trace.get("yaxis", "y")
            base = bottoms.setdefault(key, [0.0] * len(trace["y"]))
            ax.bar(trace["x"], trace["y"], bottom=base, label=trace.get("name"),
                   color=(trace.get("marker") or {}).get("color"))
            bottoms[key] = [b + v for b, v in zip(base, trace["y"], strict=True)]
        else:
            _scatter_png(ax, trace)
    for name, ax in panels.items():
        suffix = name[1:]
        x_layout = layout.get(f"xaxis{suffix}", {})
        y_layout = layout.get(f"yaxis{suffix}", {})
        ax.set_xlabel((x_layout.get("title") or {}).get("text", ""))
        ax.set_ylabel((y_layout.get("title") or {}).get("text", ""))
        if x_layout.get("type") == "log":
            ax.set_xscale("log")
        if y_layout.get("type") == "log":
            ax.set_yscale("log")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].set_title((layout.get("title") or {}).get("text", ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _scatter_png(ax, trace: dict[str, Any]) -> None:
    mode = trace.get("mode", "lines")
    colour = (trace.get("line") or {}).get("color") or (trace.get("marker") or {}).get("color")
    x, y = trace["x"], trace["y"]
    errors = {axis: (trace.get(axis) or {}).get("array") for axis in ("error_x", "error_y")}
    if any(v is not None for v in errors.values()):
        ax.errorbar(x, y, xerr=errors["error_x"], yerr=errors["error_y"], fmt="none", ecolor="#999999", capsize=3)
    style = ("-" if "lines" in mode else "") + ("o" if "markers" in mode else "")
    ax.plot(x, y, style or "-", color=colour, alpha=trace.get("opacity", 1.0),
            label=trace.get("name") if trace.get("showlegend", True) else None, markersize=4)
    if "text" in mode:
        for xi, yi, label in zip(x, y, trace.get("text") or [], strict=False):
            ax.annotate(label, (xi, yi), textcoords="offset points", xytext=(5, 5), fontsize=8)


def log_figure(client, run_id: str, name: str, figure: dict[str, Any]) -> list[str]:
    """Log ``figure`` to the run as ``dashboard/<name>.html`` and ``dashboard/<name>.png``;
    returns the artifact paths."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = [write_html(figure, Path(tmp) / f"{name}.html"), write_png(figure, Path(tmp) / f"{name}.png")]
        for path in paths:
            client.log_artifact(run_id, str(path), ARTIFACT_DIR)
    return [f"{ARTIFACT_DIR}/{p.name}" for p in paths]
