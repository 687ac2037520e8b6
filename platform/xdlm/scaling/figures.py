"""Figures of a scaling fit: PNG (matplotlib) and interactive, offline HTML (plotly, inlined).

- ``isoflop``: loss against N per budget with each budget's fitted parabola (left); the IsoFLOP
  minima L*(C) with the fitted E + c C^e and its bootstrap band, per k (right);
- ``curves``: each k's training curve L(D) with its fit E + B/D^beta and the floor E.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xdlm.scaling import fit as fits
from xdlm.scaling.intervals import CONFIDENCE
from xdlm.scaling.study_fit import KFit

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _series(kfits: list[KFit], target: float | None):
    """What both back ends draw: per k, the points by budget, parabolas, minima and the L*(C) law."""
    out = []
    for i, kf in enumerate(kfits):
        colour = COLOURS[i % len(COLOURS)]
        budgets = []
        for b in kf.budgets:
            ns = np.array([kf.points[j].n for j in b.indices])
            ls = np.array([kf.points[j].loss for j in b.indices])
            par = fits.fit_parabola(np.log(ns), np.log(ls))
            grid = np.geomspace(ns.min(), ns.max(), 50)
            budgets.append((b.budget, ns, ls, grid, np.exp(par.log_floor + par.curvature * (np.log(grid) - par.x_opt) ** 2)))
        law = None
        if kf.minima:
            cs = np.array([m["compute"] for m in kf.minima])
            hi = max(cs.max(), target or 0)
            grid = np.geomspace(cs.min(), hi, 60)
            keys = ("l_opt/floor", "l_opt/coefficient", "l_opt/exponent")
            floor, coef, exp = (kf.numbers[key].value for key in keys)
            reps = np.stack([kf.replicates[key] for key in keys], 1) if kf.replicates else np.zeros((0, 3))
            reps = reps[np.all(np.isfinite(reps), 1)]
            band = None
            if len(reps) >= 10:
                curves = reps[:, :1] + reps[:, 1:2] * grid[None, :] ** reps[:, 2:]
                tail = 50 * (1 - CONFIDENCE)
                band = np.percentile(curves, [tail, 100 - tail], axis=0)
            law = (cs, np.array([m["l_opt"] for m in kf.minima]), grid, floor + coef * grid**exp, band)
        out.append((kf.k, colour, budgets, law))
    return out


def write_figures(kfits: list[KFit], metric: str, target: float | None, out: Path) -> dict[str, str]:
    series = _series(kfits, target)
    files = {}
    files.update(_png(series, kfits, metric, out))
    files.update(_html(series, kfits, metric, out))
    return files


def _png(series, kfits: list[KFit], metric: str, out: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5), dpi=110)
    for k, colour, budgets, law in series:
        for j, (budget, ns, ls, grid, fitted) in enumerate(budgets):
            left.scatter(ns, ls, color=colour, s=18, label=f"k={k:g}" if j == 0 else None)
            left.plot(grid, fitted, color=colour, alpha=0.6)
            left.annotate(f"{budget:.2g}", (grid[-1], fitted[-1]), fontsize=7, color=colour)
        if law is not None:
            cs, ls, grid, fitted, band = law
            right.scatter(cs, ls, color=colour, label=f"k={k:g}: IsoFLOP minima")
            right.plot(grid, fitted, color=colour)
            if band is not None:
                right.fill_between(grid, band[0], band[1], color=colour, alpha=0.15,
                                   label=f"{CONFIDENCE:.0%} bootstrap band")
    left.set(xscale="log", xlabel="non-embedding parameters N", ylabel=metric, title="IsoFLOP profiles (label: budget)")
    right.set(xscale="log", yscale="log", xlabel="training FLOPs C", ylabel=f"min {metric}", title="L*(C) = E + c C^e")
    for ax in (left, right):
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "isoflop.png")
    plt.close(fig)
    files = {"isoflop.png": str(out / "isoflop.png")}

    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    for i, kf in enumerate(kfits):
        if not kf.curve:
            continue
        colour = COLOURS[i % len(COLOURS)]
        d = np.asarray(kf.curve["tokens"])
        grid = np.geomspace(d[0], d[1], 80)
        ax.scatter(kf.curve["d"], kf.curve["loss"], color=colour, s=10,
                   label=f"k={kf.k:g}: {kf.curve['run']} ({kf.curve['kind']})")
        ax.plot(grid, kf.curve["curve"](grid), color=colour)
        ax.axhline(kf.curve["E"].value, color=colour, linestyle=":", alpha=0.7)
    ax.set(xscale="log", xlabel="training tokens D", ylabel=metric, title="training curves L(D) = E + B/D^beta (dotted: E)")
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curves.png")
    plt.close(fig)
    files["curves.png"] = str(out / "curves.png")
    return files


def _html(series, kfits: list[KFit], metric: str, out: Path) -> dict[str, str]:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("IsoFLOP profiles", "L*(C) = E + c C^e"))
    for k, colour, budgets, law in series:
        for budget, ns, ls, grid, fitted in budgets:
            fig.add_trace(go.Scatter(x=ns, y=ls, mode="markers", marker={"color": colour},
                                     name=f"k={k:g} C={budget:.2g}"), 1, 1)
            fig.add_trace(go.Scatter(x=grid, y=fitted, mode="lines", line={"color": colour}, showlegend=False), 1, 1)
        if law is not None:
            cs, ls, grid, fitted, band = law
            fig.add_trace(go.Scatter(x=cs, y=ls, mode="markers", marker={"color": colour, "size": 10},
                                     name=f"k={k:g} minima"), 1, 2)
            fig.add_trace(go.Scatter(x=grid, y=fitted, mode="lines", line={"color": colour}, name=f"k={k:g} law"), 1, 2)
            if band is not None:
                fig.add_trace(go.Scatter(x=np.concatenate([grid, grid[::-1]]), y=np.concatenate([band[1], band[0][::-1]]),
                                         fill="toself", line={"width": 0}, fillcolor=colour, opacity=0.15,
                                         name=f"k={k:g} {CONFIDENCE:.0%} band"), 1, 2)
    fig.update_xaxes(type="log", title_text="non-embedding parameters N", row=1, col=1)
    fig.update_xaxes(type="log", title_text="training FLOPs C", row=1, col=2)
    fig.update_yaxes(title_text=metric, row=1, col=1)
    fig.update_yaxes(type="log", title_text=f"min {metric}", row=1, col=2)
    fig.update_layout(template="plotly_white", title="IsoFLOP fits")
    fig.write_html(str(out / "isoflop.html"), include_plotlyjs=True, full_html=True)  # inline: works offline
    files = {"isoflop.html": str(out / "isoflop.html")}

    fig = go.Figure()
    for i, kf in enumerate(kfits):
        if not kf.curve:
            continue
        colour = COLOURS[i % len(COLOURS)]
        grid = np.geomspace(*kf.curve["tokens"], 80)
        fig.add_trace(go.Scatter(x=kf.curve["d"], y=kf.curve["loss"], mode="markers", marker={"color": colour},
                                 name=f"k={kf.k:g} {kf.curve['run']} ({kf.curve['kind']})"))
        fig.add_trace(go.Scatter(x=grid, y=kf.curve["curve"](grid), mode="lines", line={"color": colour},
                                 name=f"k={kf.k:g} E + B/D^beta (E = {kf.curve['E'].value:.4g})"))
    fig.update_layout(template="plotly_white", title="training curves L(D)", xaxis={"type": "log", "title": "tokens D"},
                      yaxis={"title": metric})
    fig.write_html(str(out / "curves.html"), include_plotlyjs=True, full_html=True)
    files["curves.html"] = str(out / "curves.html")
    return files
