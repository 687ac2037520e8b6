"""Bootstrap intervals for fitted numbers.

Scheme (docs/scaling.md): a *parametric bootstrap in log loss* with the noise scale itself
uncertain.  An IsoFLOP grid has 3 to 5 sizes per budget, so resampling runs would leave budgets
with fewer than 3 distinct sizes and no parabola; instead each replicate keeps every point's
(N, D) and multiplies its loss by exp(sigma_r z), z standard normal, then reruns the whole
pipeline: surface, parabolas, power laws, L*(C), crossovers, extrapolation.

sigma-hat is the larger of the residual scales of the surface fit and of the parabola fits, each
sqrt(sum r^2 / nu) with nu = n - p residual degrees of freedom.  nu is small (4 to 10 on a
3 x 3-5 grid), so sigma-hat is itself uncertain by 20-35 %: each replicate draws its own
sigma_r = sigma-hat sqrt(nu / chi2_nu) (``replicate_noise``; the scale's distribution given the
residuals under a flat prior on ln sigma).  Replicating with sigma-hat alone gives normal-width
intervals where Student-t widths are due, and they under-cover (measured: docs/scaling.md).

Intervals are percentile intervals of the replicates at ``CONFIDENCE`` (two-sided); replicates
where a fit is undefined (a parabola that is not convex, a surface floor above a minimum) are
dropped and counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.90
"""Two-sided level of every interval ``xdlm scaling fit`` reports."""


@dataclass(frozen=True)
class Interval:
    """A fitted number and its bootstrap percentile interval (``lo``/``hi`` None without replicates)."""

    value: float
    lo: float | None = None
    hi: float | None = None
    replicates: int = 0
    """Finite replicates the interval rests on."""

    def contains(self, x: float) -> bool:
        return self.lo is not None and self.hi is not None and self.lo <= x <= self.hi

    def as_dict(self) -> dict[str, float | int | None]:
        return {"value": self.value, "lo": self.lo, "hi": self.hi, "replicates": self.replicates}

    def text(self, fmt: str = "{:.4g}") -> str:
        shown = fmt.format(self.value) if math.isfinite(self.value) else str(self.value)
        if self.lo is None or self.hi is None:
            return shown
        return f"{shown} [{fmt.format(self.lo)}, {fmt.format(self.hi)}]"


def percentile_interval(value: float, replicates, confidence: float = CONFIDENCE,
                        minimum: int = 10, infinite: bool = False) -> Interval:
    """``value`` with the central ``confidence`` percentile interval of the finite replicates
    (none when fewer than ``minimum`` are finite).  ``infinite``: +-inf replicates count too (a
    crossing beyond any searched compute) and the ends are order statistics (no interpolation)."""
    reps = np.asarray(replicates, dtype=float)
    reps = reps[~np.isnan(reps)] if infinite else reps[np.isfinite(reps)]
    if reps.size < minimum:
        return Interval(float(value), replicates=int(reps.size))
    tail = 0.5 * (1.0 - confidence)
    lo, hi = np.quantile(reps, [tail, 1.0 - tail], method="inverted_cdf" if infinite else "linear")
    return Interval(float(value), float(lo), float(hi), int(reps.size))


def noise_scale(residuals, n_params: int) -> float | None:
    """sqrt(sum r^2 / (n - p)): the noise of ln L a fit with ``n_params`` parameters leaves (None if n <= p)."""
    r = np.asarray(residuals, dtype=float)
    return math.sqrt(float(np.sum(r**2)) / (r.size - n_params)) if r.size > n_params else None


def replicate_noise(sigma: float, dof: int, rng: np.random.Generator) -> float:
    """One replicate's noise scale sigma sqrt(dof / chi2_dof): ``sigma`` estimated on ``dof``
    residual degrees of freedom is that uncertain (``sigma`` itself when dof < 1)."""
    return sigma * math.sqrt(dof / rng.chisquare(dof)) if dof >= 1 else sigma


def perturb_log_losses(losses, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """One replicate: L_i exp(sigma z_i), z_i standard normal."""
    losses = np.asarray(losses, dtype=float)
    return losses * np.exp(sigma * rng.standard_normal(losses.shape))
