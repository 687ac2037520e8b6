"""Means and Student-t confidence intervals of a few replicate values, without scipy.

A sweep has a handful of replicates per configuration (2 to 10), so the interval on their mean is
Student-t with n - 1 degrees of freedom. scipy is only a development dependency here, so the t
quantile is computed from the closed form of the t distribution's CDF for an integer number of
degrees of freedom (Abramowitz & Stegun 26.7.3-4), inverted by bisection; the tests check it
against ``scipy.stats.t.ppf``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95
"""Two-sided confidence of every interval the report shows."""


def t_central_probability(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with ``df`` (integer >= 1) degrees of freedom, t >= 0."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    theta = math.atan(t / math.sqrt(df))
    sin, cos2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 1:  # 2/pi [theta + sin cos (1 + 2/3 cos^2 + 2.4/(3.5) cos^4 + ...)], df - 1 terms in all
        term, total = 1.0, 0.0
        for j in range(1, (df - 1) // 2 + 1):
            total += term
            term *= cos2 * (2 * j) / (2 * j + 1)
        return 2 / math.pi * (theta + sin * math.cos(theta) * total)
    term, total = 1.0, 0.0  # sin [1 + 1/2 cos^2 + 1.3/(2.4) cos^4 + ...], df / 2 terms
    for j in range(1, df // 2 + 1):
        total += term
        term *= cos2 * (2 * j - 1) / (2 * j)
    return sin * total


def t_quantile(confidence: float, df: int) -> float:
    """The t with P(|T| <= t) = confidence (the two-sided critical value), to 1e-12."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    low, high = 0.0, 1.0
    while t_central_probability(high, df) < confidence:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        if t_central_probability(mid, df) < confidence:
            low = mid
        else:
            high = mid
        if high - low < 1e-12:
            break
    return (low + high) / 2


@dataclass(frozen=True)
class Estimate:
    """The mean of ``n`` replicate values and, with n >= 2, its two-sided t interval."""

    mean: float
    n: int
    half_width: float | None = None
    """None with one value: one replicate gives no interval."""
    std: float | None = None
    """Sample standard deviation (n - 1 in the denominator); None with one value."""

    @property
    def low(self) -> float | None:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> float | None:
        return None if self.half_width is None else self.mean + self.half_width

    @property
    def has_interval(self) -> bool:
        return self.half_width is not None


def estimate(values: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """Mean and Student-t interval on the mean of ``values`` (at least one)."""
    if not values:
        raise ValueError("no values to estimate from")
    n = len(values)
    mean = math.fsum(values) / n
    if n == 1:
        return Estimate(mean, 1)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return Estimate(mean, n, t_quantile(confidence, n - 1) * std / math.sqrt(n), std)


def overlap(a: Estimate, b: Estimate) -> bool | None:
    """Whether the intervals of ``a`` and ``b`` overlap (touching counts); None if either has none."""
    if not (a.has_interval and b.has_interval):
        return None
    return a.low <= b.high and b.low <= a.high  # type: ignore[operator]
