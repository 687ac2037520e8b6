"""Every fit of one value of k, with bootstrap intervals (``intervals``) and the sensitivity checks.

Pipeline on the points of one k (``estimate``): IsoFLOP parabola per budget -> (C_b, N*_b, D*_b,
L*_b) -> power laws N*(C), D*(C), L*(C) -> their value at the target compute -> the held-out
budget predicted from the others; beside it the surface L(N, D).  ``fit_k`` runs the pipeline on
the measured losses, then on ``bootstrap`` replicates of them, and turns each number into an
``Interval``.  One training curve L(D) per k is fitted and bootstrapped on its own residuals.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from xdlm.errors import UserError
from xdlm.scaling import fit as fits
from xdlm.scaling.intervals import (
    Interval,
    noise_scale,
    percentile_interval,
    perturb_log_losses,
    replicate_noise,
)
from xdlm.scaling.laws import optimal_allocation_exponents
from xdlm.scaling.points import Exclusion, Point

LAWS = ("n_opt", "d_opt", "l_opt")
"""N*(C), D*(C), L*(C)."""


@dataclass
class Budget:
    """One IsoFLOP budget of one k: its points and the line ln D = u + v ln N through them."""

    budget: float
    indices: list[int]
    compute: float
    """Geometric mean of the measured FLOPs of its runs (the tag is only the target)."""
    d_line: tuple[float, float]


@dataclass
class KFit:
    k: float
    points: list[Point]
    budgets: list[Budget]
    numbers: dict[str, Interval] = field(default_factory=dict)
    minima: list[dict] = field(default_factory=list)
    """Per usable budget: compute, N*, D*, L* (point estimate), sizes, runs."""
    loo: list[dict] = field(default_factory=list)
    holdout: dict | None = None
    curve: dict | None = None
    replicates: dict[str, np.ndarray] = field(default_factory=dict)
    curve_replicates: list[fits.DataCurve] = field(default_factory=list)
    failed_replicates: int = 0
    anchored: bool = True
    """L*(C) = E + c C^e with the surface's E; False when that E is not below every IsoFLOP
    minimum (then L*(C) = c C^e, noted)."""
    noise: tuple[float, int] = (0.0, 0)
    """(sigma, degrees of freedom) of the bootstrap noise of ln L."""
    notes: list[str] = field(default_factory=list)

    @property
    def compute_range(self) -> tuple[float, float]:
        cs = [b.compute for b in self.budgets]
        return (min(cs), max(cs)) if cs else (math.nan, math.nan)


def group_budgets(k: float, points: list[Point], excluded: list[Exclusion]) -> list[Budget]:
    """Usable IsoFLOP budgets of these points; budgets that cannot give a minimum are excluded
    (with the reason) or, when the grid itself is wrong (one size), refused."""
    groups: dict[float, list[int]] = defaultdict(list)
    for i, p in enumerate(points):
        if p.budget is not None:
            groups[p.budget].append(i)
    usable = []
    for budget, idx in sorted(groups.items()):
        sizes = sorted({points[i].size for i in idx})
        label = f"budget {budget:.3g} (k={k:g})"
        if len(sizes) == 1:
            raise UserError(f"{label} has runs of a single size ({sizes[0]}): an IsoFLOP minimum needs at least "
                            "3 sizes per budget")
        if len({points[i].n for i in idx}) < 3:
            excluded.append(Exclusion("", label, f"only {len(sizes)} usable sizes ({', '.join(sizes)}): a parabola "
                                                 "needs 3"))
            continue
        log_n = np.log([points[i].n for i in idx])
        log_d = np.log([points[i].d for i in idx])
        line = stats.linregress(log_n, log_d)
        losses = [points[i].loss for i in idx]
        ns = [points[i].n for i in idx]
        best = int(np.argmin(losses))
        parabola = fits.fit_parabola(log_n, np.log(losses))
        at_edge = ns[best] in (min(ns), max(ns))
        outside = not (log_n.min() < parabola.x_opt < log_n.max())
        if at_edge or not parabola.convex or outside:
            why = ("not convex" if not parabola.convex else
                   f"lowest loss at the {'smallest' if ns[best] == min(ns) else 'largest'} size" if at_edge else
                   "fitted minimum outside the sizes run")
            excluded.append(Exclusion("", label, f"optimum at the edge of the grid ({why}): widen the sizes"))
            continue
        compute = float(np.exp(np.mean(np.log([points[i].c for i in idx]))))
        usable.append(Budget(budget, idx, compute, (float(line.intercept), float(line.slope))))
    return usable


def minima(points_loss: np.ndarray, log_n: np.ndarray, budgets: list[Budget]) -> np.ndarray | None:
    """[budgets, 3] of (ln N*, ln D*, ln L*), or None when a parabola is not convex."""
    rows = []
    for b in budgets:
        parabola = fits.fit_parabola(log_n[b.indices], np.log(points_loss[b.indices]))
        if not parabola.convex:
            return None
        rows.append((parabola.x_opt, b.d_line[0] + b.d_line[1] * parabola.x_opt, parabola.log_floor))
    return np.asarray(rows)


def _law(law: str, compute: np.ndarray, log_y: np.ndarray, floor: float) -> fits.PowerLaw | fits.Frontier:
    """N*(C), D*(C): c C^e; L*(C): E + c C^e with E = ``floor`` (``fits.fit_frontier``)."""
    if law == "l_opt":
        return fits.fit_frontier(compute, np.exp(log_y), floor)
    return fits.fit_power_law(compute, np.exp(log_y))


def estimate(losses: np.ndarray, kf: KFit, log_n: np.ndarray, target_flops: float | None,
             holdout: int | None, surface_start: fits.Surface | None) -> tuple[dict[str, float], fits.Surface]:
    """Every fitted number of one k from one set of losses (measured, or a bootstrap replicate).

    The surface comes first: its floor E anchors L*(C) = E + c C^e (``kf.anchored``), so each
    replicate's L*(C) carries that replicate's E."""
    out: dict[str, float] = {}
    pts = kf.points
    surface = fits.fit_surface([p.n for p in pts], [p.d for p in pts], losses, start=surface_start)
    out.update({f"surface/{key}": value for key, value in surface.numbers().items()})
    out["surface/n_opt_exponent"], out["surface/d_opt_exponent"] = optimal_allocation_exponents(surface.alpha,
                                                                                               surface.beta)
    if len(kf.budgets) >= 2:
        mins = minima(losses, log_n, kf.budgets)
        if mins is None:
            raise ValueError("non-convex parabola")
        compute = np.array([b.compute for b in kf.budgets])
        floor = surface.floor if kf.anchored else 0.0
        out["l_opt/floor"] = floor
        # a replicate whose floor lands just under a minimum gives an extreme L*(C); overflow to inf
        # is its honest value there (non-finite replicates drop out of the intervals)
        with np.errstate(over="ignore", invalid="ignore"):
            laws_ = {law: _law(law, compute, mins[:, j], floor) for j, law in enumerate(LAWS)}
        for j, law in enumerate(LAWS):
            fitted = laws_[law]
            out[f"{law}/exponent"], out[f"{law}/coefficient"] = fitted.exponent, fitted.coefficient
            if target_flops:
                with np.errstate(over="ignore", invalid="ignore"):
                    out[f"target/{law}"] = float(fitted(target_flops))
            if holdout is not None:
                keep = np.arange(len(compute)) != holdout
                with np.errstate(over="ignore", invalid="ignore"):
                    reduced = _law(law, compute[keep], mins[keep, j], floor)
                    out[f"holdout/{law}/predicted"] = float(reduced(compute[holdout]))
                out[f"holdout/{law}/measured"] = float(np.exp(mins[holdout, j]))
    return out, surface


def curve_run(points: list[Point], prefer: set[str] | None = None) -> Point | None:
    """The run whose training curve L(D) is fitted: a run with >= 3 decay branches (its "anytime"
    curve is what branching was for), else the longest (most tokens) with >= 4 evaluations; among
    sizes in ``prefer`` when given (so that values of k compare the same model)."""
    branched = {p.parent_run_id for p in points if p.is_branch}
    candidates = [p for p in points if not p.is_branch
                  and (p.curve_loss.size >= 4 or sum(q.parent_run_id == p.run_id for q in points) >= 3)]
    if prefer:
        candidates = [p for p in candidates if p.size in prefer] or candidates
    with_branches = [p for p in candidates if p.run_id in branched
                     and sum(q.parent_run_id == p.run_id for q in points) >= 3]
    return max(with_branches or candidates, key=lambda p: (p.d, p.n), default=None)


def branch_curve(run: Point, all_points: list[Point]) -> tuple[np.ndarray, np.ndarray, str]:
    """(D, L, kind) of ``run``: its decay branches' end points when it has >= 3 ("anytime" curve),
    else its own evaluations (one learning-rate schedule)."""
    branches = sorted((p.d, p.loss) for p in all_points if p.parent_run_id == run.run_id)
    if len(branches) >= 3:
        ds, ls = zip(*branches, strict=True)
        return np.array(ds), np.array(ls), "decay branches"
    return run.curve_d, run.curve_loss, "evaluations of one run"


def fit_curve(run: Point, all_points: list[Point], n_boot: int, rng: np.random.Generator) -> tuple[dict, list]:
    d, loss, kind = branch_curve(run, all_points)
    curve = fits.fit_data_curve(d, loss)
    # branches are separate runs (independent noise); one run's evaluations are not (docs/scaling.md)
    sigma, dof = noise_scale(np.log(loss) - np.log(curve(d)), 3) or 0.0, d.size - 3
    reps, numbers = [], defaultdict(list)
    for _ in range(n_boot):
        try:
            rep = fits.fit_data_curve(d, perturb_log_losses(loss, replicate_noise(sigma, dof, rng), rng), start=curve)
        except ValueError:
            continue
        reps.append(rep)
        for key, value in rep.numbers().items():
            numbers[key].append(value)
    result = {"run": run.name, "run_id": run.run_id, "size": run.size, "kind": kind, "points": int(d.size),
              "sigma": sigma, "d": [float(x) for x in d], "loss": [float(x) for x in loss],
              "tokens": [float(d.min()), float(d.max())], "curve": curve,
              **{key: percentile_interval(value, numbers[key]) for key, value in curve.numbers().items()}}
    return result, reps


def leave_one_budget_out(kf: KFit, log_n: np.ndarray, floor: float) -> list[dict]:
    """The exponents refitted without each budget in turn (point estimates; L*(C) keeps ``floor``)."""
    if len(kf.budgets) < 3:
        return []
    losses = np.array([p.loss for p in kf.points])
    mins = minima(losses, log_n, kf.budgets)
    compute = np.array([b.compute for b in kf.budgets])
    rows = []
    for leave in range(len(kf.budgets)):
        keep = np.arange(len(compute)) != leave
        row = {"left_out": kf.budgets[leave].budget}
        for j, law in enumerate(LAWS):
            row[law] = _law(law, compute[keep], mins[keep, j], floor).exponent  # type: ignore[index]
        rows.append(row)
    return rows


def bootstrap_noise(kf: KFit, losses: np.ndarray, log_n: np.ndarray, surface: fits.Surface) -> tuple[float, int]:
    """(sigma, dof): the larger residual scale of the surface fit and of the pooled parabola fits,
    with the residual degrees of freedom it rests on (``intervals``)."""
    log_l = np.log(losses)
    residuals = [(log_l - surface.log_loss([p.n for p in kf.points], [p.d for p in kf.points]), 5)]
    parabola_residuals = []
    for b in kf.budgets:
        par = fits.fit_parabola(log_n[b.indices], log_l[b.indices])
        parabola_residuals += list(log_l[b.indices] - (par.log_floor + par.curvature * (log_n[b.indices] - par.x_opt) ** 2))
    residuals.append((np.asarray(parabola_residuals), 3 * len(kf.budgets)))
    scales = [(noise_scale(r, p), r.size - p) for r, p in residuals]
    return max(((s, dof) for s, dof in scales if s is not None), default=(0.0, 0))


def fit_k(k: float, points: list[Point], all_points: list[Point], excluded: list[Exclusion], n_boot: int,
          target_flops: float | None, holdout_budget: float | None, rng: np.random.Generator,
          prefer_sizes: set[str] | None = None) -> KFit:
    grid = [p for p in points if not p.is_branch]
    kf = KFit(k, points, group_budgets(k, grid, excluded) if any(p.budget for p in grid) else [])
    # budgets index into kf.points: keep the grid points first, branch end points after them
    kf.points = grid + [p for p in points if p.is_branch]
    if any(p.budget for p in grid) and len(kf.budgets) < 2:
        names = ", ".join(f"{b.budget:.3g}" for b in kf.budgets) or "none"
        raise UserError(f"k={k:g}: {len(kf.budgets)} IsoFLOP budget(s) with a usable minimum ({names}); the power "
                        "laws N*(C), D*(C), L*(C) need at least 2 (see the excluded budgets above)")
    if len(kf.points) < 6:
        raise UserError(f"k={k:g}: {len(kf.points)} usable runs; the surface L(N, D) = E + A/N^alpha + B/D^beta "
                        "needs at least 6 (runs of several sizes and token counts)")
    log_n = np.log([p.n for p in kf.points])
    holdout = None
    if len(kf.budgets) >= 3:
        computes = [b.budget for b in kf.budgets]
        if holdout_budget is None:
            holdout = int(np.argmax(computes))
        else:
            near = [i for i, c in enumerate(computes) if math.isclose(c, holdout_budget, rel_tol=0.01)]
            if not near:
                raise UserError(f"--holdout-budget {holdout_budget:g}: no usable budget of k={k:g} is that "
                                f"(budgets: {', '.join(f'{c:.3g}' for c in computes)})")
            holdout = near[0]
    elif holdout_budget is not None:
        kf.notes.append(f"--holdout-budget ignored: k={k:g} has {len(kf.budgets)} usable budgets, a held-out "
                        "prediction needs 3 (2 to fit, 1 to predict)")
    losses = np.array([p.loss for p in kf.points])
    try:
        point, surface = estimate(losses, kf, log_n, target_flops, holdout, None)
    except ValueError as err:  # the surface's floor is not below every IsoFLOP minimum
        kf.anchored = False
        kf.notes.append(f"L*(C) fitted as c C^e without a floor: {err}")
        point, surface = estimate(losses, kf, log_n, target_flops, holdout, None)
    kf.noise = sigma, dof = bootstrap_noise(kf, losses, log_n, surface)
    kf.notes.append(f"bootstrap noise of ln L: sigma = {sigma:.3g} ({dof} residual degrees of freedom)")
    reps: dict[str, list[float]] = defaultdict(list)
    for _ in range(n_boot):
        try:
            values, _ = estimate(perturb_log_losses(losses, replicate_noise(sigma, dof, rng), rng), kf, log_n,
                                 target_flops, holdout, surface)
        except ValueError:
            kf.failed_replicates += 1
            continue
        for key in point:
            reps[key].append(values.get(key, math.nan))
    if holdout is not None:
        for law in LAWS:
            # what the held-out budget should measure: the prediction's spread plus that budget's own
            # measurement noise, pred_r * measured / measured_r (docs/scaling.md)
            pred, meas = (np.asarray(reps[f"holdout/{law}/{x}"]) for x in ("predicted", "measured"))
            reps[f"holdout/{law}/predicted"] = list(pred * point[f"holdout/{law}/measured"] / meas)
    kf.replicates = {key: np.asarray(value) for key, value in reps.items()}
    kf.numbers = {key: percentile_interval(value, reps[key]) for key, value in point.items()}
    if kf.budgets:
        mins = minima(losses, log_n, kf.budgets)
        kf.minima = [{"budget": b.budget, "compute": b.compute, "n_opt": float(np.exp(m[0])),
                      "d_opt": float(np.exp(m[1])), "l_opt": float(np.exp(m[2])),
                      "sizes": sorted({kf.points[i].size for i in b.indices}),
                      "runs": [kf.points[i].run_id for i in b.indices]}
                     for b, m in zip(kf.budgets, mins, strict=True)]  # type: ignore[arg-type]
        kf.loo = leave_one_budget_out(kf, log_n, point["l_opt/floor"])
    if holdout is not None:
        kf.holdout = {"budget": kf.budgets[holdout].budget, "compute": kf.budgets[holdout].compute,
                      **{law: {"predicted": kf.numbers[f"holdout/{law}/predicted"],
                               "measured": kf.numbers[f"holdout/{law}/measured"]} for law in LAWS}}
    chosen = curve_run(points, prefer_sizes)
    if chosen is None:
        kf.notes.append(f"k={k:g}: no run has 4 evaluations after warm-up: no training curve L(D)")
    else:
        kf.curve, kf.curve_replicates = fit_curve(chosen, all_points, n_boot, rng)
    return kf
