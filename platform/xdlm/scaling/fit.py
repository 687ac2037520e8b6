"""The fits: IsoFLOP parabola minima, log-log power laws, the L(N, D) surface, one run's L(D).

Every optimisation is scipy's (``least_squares`` with a robust loss, ``linregress``); the
formulas are in ``laws``.  Shapes: 1-D arrays of equal length, one entry per point (run or
logged evaluation).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from xdlm.scaling import laws

PARABOLA_SCALE = 0.01
"""soft_l1 scale of the IsoFLOP parabola fit, in ln L: deviations beyond ~1 % of the loss count
less and less, so one bad run of a budget with >= 4 sizes cannot drag the minimum (with exactly
3 sizes the parabola interpolates and no loss function can tell a bad point)."""

HUBER_DELTA = 1e-3
"""Huber threshold on ln L residuals of the surface and curve fits (Hoffmann et al. 2022)."""

SURFACE_GRID = {"e": (-1.0, 0.0, 1.0), "a": (0.0, 5.0, 10.0, 20.0), "alpha": (0.2, 0.5, 1.0),
                "b": (0.0, 5.0, 10.0, 20.0), "beta": (0.2, 0.5, 1.0)}
"""Starting points of the surface fit (theta = e, a, alpha, b, beta); the best few by initial
Huber cost are optimised to the end, the best end point wins."""

SURFACE_BOUNDS = ([-10.0, -30.0, 0.0, -30.0, 0.0], [10.0, 80.0, 3.0, 80.0, 3.0])
CURVE_BOUNDS = ([-10.0, -30.0, 0.0], [10.0, 80.0, 3.0])
OPTIMISED_STARTS = 12


@dataclass(frozen=True)
class Parabola:
    """ln L = log_floor + curvature (ln N - x_opt)^2 (``laws.isoflop_parabola``)."""

    log_floor: float
    curvature: float
    x_opt: float

    @property
    def convex(self) -> bool:
        return self.curvature > 1e-9


def fit_parabola(x, log_loss) -> Parabola:
    """Robust (soft_l1) least squares of ``laws.isoflop_parabola`` to (ln N, ln L) of one budget."""
    x, y = np.asarray(x, dtype=float), np.asarray(log_loss, dtype=float)
    if x.size < 3 or np.unique(x).size < 3:
        raise ValueError("a parabola needs at least 3 distinct sizes")
    start = [float(y.min()), 0.1, float(x[np.argmin(y)])]
    q, s, _ = np.polyfit(x, y, 2)  # the plain least-squares parabola: the robust fit's start when convex
    if q > 1e-9:
        start = [float(y.min()), float(q), float(-s / (2 * q))]
    result = optimize.least_squares(
        lambda p: laws.isoflop_parabola(x, *p) - y, start, loss="soft_l1", f_scale=PARABOLA_SCALE,
        bounds=([-np.inf, 0.0, -np.inf], [np.inf, np.inf, np.inf]))
    return Parabola(*map(float, result.x))


@dataclass(frozen=True)
class PowerLaw:
    """y = coefficient * C^exponent."""

    coefficient: float
    exponent: float

    def __call__(self, c):
        return laws.power_law(c, self.coefficient, self.exponent)


def fit_power_law(c, y) -> PowerLaw:
    """Ordinary least squares of ln y on ln C (``scipy.stats.linregress``)."""
    c, y = np.asarray(c, dtype=float), np.asarray(y, dtype=float)
    if c.size < 2 or np.unique(c).size < 2:
        raise ValueError("a power law needs at least 2 distinct budgets")
    if c.size == 2:  # linregress warns on two points; the line through them is the answer
        slope = (np.log(y[1]) - np.log(y[0])) / (np.log(c[1]) - np.log(c[0]))
        return PowerLaw(float(np.exp(np.log(y[0]) - slope * np.log(c[0]))), float(slope))
    result = stats.linregress(np.log(c), np.log(y))
    return PowerLaw(float(np.exp(result.intercept)), float(result.slope))


@dataclass(frozen=True)
class Frontier:
    """L*(C) = floor + coefficient * C^exponent (``laws.saturating_power_law``)."""

    floor: float
    coefficient: float
    exponent: float

    def __call__(self, c):
        return laws.saturating_power_law(c, self.floor, self.coefficient, self.exponent)


def fit_frontier(c, loss, floor: float) -> Frontier:
    """L*(C) = E + c C^e through the IsoFLOP minima with the floor E given (the surface's):
    ordinary least squares of ln(L* - E) on ln C.  With E fixed the law has 2 parameters, like
    N*(C) and D*(C), so 2 budgets determine it; a free E would need a third budget per parameter
    and is then ill-conditioned (3 budgets interpolate it)."""
    loss = np.asarray(loss, dtype=float)
    if not floor < loss.min():
        raise ValueError(f"the floor {floor:.4g} is not below every IsoFLOP minimum (lowest {loss.min():.4g})")
    law = fit_power_law(c, loss - floor)
    return Frontier(float(floor), law.coefficient, law.exponent)


@dataclass(frozen=True)
class Surface:
    """L(N, D) = E + A/N^alpha + B/D^beta (``laws.surface``)."""

    theta: tuple[float, float, float, float, float]
    """(e, a, alpha, b, beta) = (ln E, ln A, alpha, ln B, beta)."""

    @property
    def floor(self) -> float:
        return float(np.exp(self.theta[0]))

    @property
    def alpha(self) -> float:
        return self.theta[2]

    @property
    def beta(self) -> float:
        return self.theta[4]

    def numbers(self) -> dict[str, float]:
        e, a, alpha, b, beta = self.theta
        return {"E": float(np.exp(e)), "A": float(np.exp(a)), "alpha": alpha, "B": float(np.exp(b)), "beta": beta}

    def log_loss(self, n, d):
        return laws.log_surface(self.theta, np.log(n), np.log(d))


def _huber_fit(residual_fn, jacobian, starts, bounds) -> np.ndarray:
    """Optimise the Huber cost of ``residual_fn`` (analytic ``jacobian``) from the best
    ``OPTIMISED_STARTS`` of ``starts``."""
    lo, hi = np.asarray(bounds[0]), np.asarray(bounds[1])
    starts = [np.clip(np.asarray(s, dtype=float), lo, hi) for s in starts]

    def huber(r):
        a = np.abs(r)
        return float(np.sum(np.where(a <= HUBER_DELTA, 0.5 * a**2, HUBER_DELTA * (a - 0.5 * HUBER_DELTA))))

    ranked = sorted(starts, key=lambda s: huber(residual_fn(s)))[:OPTIMISED_STARTS]
    best = None
    for start in ranked:
        result = optimize.least_squares(residual_fn, start, jac=jacobian, loss="huber", f_scale=HUBER_DELTA,
                                        bounds=bounds)
        if best is None or result.cost < best.cost:
            best = result
    return best.x


def fit_surface(n, d, loss, start: Surface | None = None) -> Surface:
    """Huber fit of ``laws.log_surface`` to ln L from the ``SURFACE_GRID`` starts (or from ``start``
    alone: a bootstrap replicate starts from the point estimate)."""
    log_n, log_d, log_l = (np.log(np.asarray(v, dtype=float)) for v in (n, d, loss))
    if log_l.size < 6:
        raise ValueError("the surface has 5 parameters and needs at least 6 points")
    starts = [start.theta] if start else list(itertools.product(*SURFACE_GRID.values()))
    theta = _huber_fit(lambda t: laws.log_surface(t, log_n, log_d) - log_l,
                       lambda t: laws.log_surface_jacobian(t, log_n, log_d), starts, SURFACE_BOUNDS)
    return Surface(tuple(map(float, theta)))  # type: ignore[arg-type]


@dataclass(frozen=True)
class DataCurve:
    """L(D) = E + B/D^beta (``laws.data_curve``) of one model's training."""

    theta: tuple[float, float, float]
    """(ln E, ln B, beta)."""

    def numbers(self) -> dict[str, float]:
        e, b, beta = self.theta
        return {"E": float(np.exp(e)), "B": float(np.exp(b)), "beta": beta}

    def __call__(self, d):
        return np.exp(laws.log_data_curve(self.theta, np.log(np.asarray(d, dtype=float))))


def fit_data_curve(d, loss, start: DataCurve | None = None) -> DataCurve:
    """Huber fit of ``laws.log_data_curve`` to ln L of one training curve."""
    log_d, log_l = np.log(np.asarray(d, dtype=float)), np.log(np.asarray(loss, dtype=float))
    if log_l.size < 4:
        raise ValueError("the training curve L(D) needs at least 4 evaluations after warm-up")
    grid = [(e, b, beta) for e in (-1.0, 0.0, 1.0) for b in (0.0, 2.0, 5.0, 10.0, 20.0) for beta in (0.1, 0.3, 0.6, 1.0)]
    theta = _huber_fit(lambda t: laws.log_data_curve(t, log_d) - log_l, lambda t: laws.log_data_curve_jacobian(t, log_d),
                       [start.theta] if start else grid, CURVE_BOUNDS)
    return DataCurve(tuple(map(float, theta)))  # type: ignore[arg-type]
