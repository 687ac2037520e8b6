"""Where one fitted loss curve overtakes another, and the verdict a reader can quote.

- compute: two frontiers L*_i(C) = E_i + c_i C^e_i (``fit.Frontier``);
- tokens: two training curves L_i(D) = E_i + B_i / D^beta_i.

Both are curves with a floor, which can cross twice, so ``crossing`` looks for every sign change
of their difference on a log grid from ``SEARCH_DECADES`` before the data to as many beyond it,
refines each with ``scipy.optimize.brentq`` and returns the one nearest the data (0 distance
inside it).  A crossing inside the range both curves were measured on is a finding; one outside
it is an extrapolation and is reported as "no crossover within the data".  Replicates (bootstrap,
paired by index) give its interval and the share of replicates that cross inside the data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize

from xdlm.scaling.intervals import Interval, percentile_interval

SEARCH_DECADES = 3.0
"""Curves are searched for a crossing this many decades either side of the shared data range."""


def sign_changes(f1: Callable, f2: Callable, lo: float, hi: float, points: int = 256) -> list[float]:
    """Every x in [lo, hi] (log grid of ``points``) where f1 - f2 changes sign, refined by brentq."""
    xs = np.geomspace(lo, hi, points)
    with np.errstate(over="ignore", invalid="ignore"):
        diff = np.asarray(f1(xs), dtype=float) - np.asarray(f2(xs), dtype=float)
    signs = np.sign(diff)
    change = np.nonzero(signs[:-1] * signs[1:] < 0)[0]
    return [float(optimize.brentq(lambda x: float(f1(x) - f2(x)), xs[i], xs[i + 1])) for i in change]


def crossing(f1: Callable, f2: Callable, data_range: tuple[float, float],
             decades: float = SEARCH_DECADES) -> float:
    """The crossing of f1 and f2 nearest ``data_range`` (log distance, 0 inside), searched from
    ``decades`` before it to ``decades`` beyond it; nan when they do not cross there."""
    lo, hi = data_range
    found = sign_changes(f1, f2, lo / 10**decades, hi * 10**decades)
    if not found:
        return math.nan
    return min(found, key=lambda x: max(math.log(lo / x), math.log(x / hi), 0.0))


def replicate_crossings(pairs: Sequence[tuple[Callable, Callable]], data_range: tuple[float, float],
                        later_winner_is_first: bool | None) -> list[float]:
    """Crossings of paired replicate curves.  A replicate that does not cross within the searched
    range still says where its crossing went: if the curve that wins beyond the point estimate's
    crossing (the first, when ``later_winner_is_first``) is already lower at the start of the data,
    its crossing lies before the range (0), otherwise beyond it (inf).  Dropping those replicates
    instead would narrow the interval exactly when the crossing is poorly determined."""
    lo = data_range[0]
    out = []
    for f1, f2 in pairs:
        x = crossing(f1, f2, data_range)
        if math.isnan(x) and later_winner_is_first is not None:
            first_lower = float(f1(lo)) < float(f2(lo))
            x = 0.0 if first_lower == later_winner_is_first else math.inf
        out.append(x)
    return out


@dataclass(frozen=True)
class Crossover:
    """One pair of k on one axis (``compute``: FLOPs, ``tokens``)."""

    axis: str
    k_a: float
    k_b: float
    at: Interval | None
    """Where they cross (None: parallel / no sign change in the searched range)."""
    data_range: tuple[float, float]
    inside: bool
    """The point estimate lies inside ``data_range``."""
    winner_after: float | None
    """The k whose loss is lower beyond the crossing (or everywhere when there is none)."""
    share_inside: float
    """Share of the replicates that cross inside the data range."""

    def verdict(self) -> str:
        unit = "FLOPs" if self.axis == "compute" else "tokens"
        lo, hi = self.data_range
        pair = f"k={self.k_a:g} vs k={self.k_b:g} ({self.axis})"
        if self.inside and self.at is not None:
            other = self.k_b if self.winner_after == self.k_a else self.k_a
            return (f"{pair}: k={self.winner_after:g} overtakes k={other:g} at {self.at.text('{:.3g}')} {unit} "
                    f"({self.share_inside:.0%} of replicates cross inside the data)")
        where = f"data {lo:.3g}..{hi:.3g} {unit}"
        lower = "" if self.winner_after is None else f"; k={self.winner_after:g} is lower throughout"
        if self.at is None or not math.isfinite(self.at.value):
            return f"{pair}: no crossover within the data ({where}){lower}"
        return (f"{pair}: no crossover within the data ({where}){lower}; the fitted curves would cross "
                f"at {self.at.text('{:.3g}')} {unit}, outside the data (an extrapolation)")

    def as_dict(self) -> dict:
        return {"axis": self.axis, "k_a": self.k_a, "k_b": self.k_b,
                "at": None if self.at is None else self.at.as_dict(), "data_range": list(self.data_range),
                "inside": self.inside, "winner_after": self.winner_after, "share_inside": self.share_inside,
                "verdict": self.verdict()}


def compare(axis: str, k_a: float, k_b: float, at: float, replicates, data_range: tuple[float, float],
            lower_after: Callable[[float], float | None]) -> Crossover:
    """Assemble the verdict: ``at`` the point estimate (nan if none), ``replicates`` the crossings
    of paired replicates (``replicate_crossings``), ``lower_after(x)`` the k with the lower loss at x."""
    lo, hi = data_range
    reps = np.asarray(list(replicates), dtype=float)
    share = float(np.mean((reps >= lo) & (reps <= hi))) if reps.size else 0.0
    if not math.isfinite(at):
        return Crossover(axis, k_a, k_b, None, data_range, False, lower_after(hi), share)
    inside = lo <= at <= hi
    interval = percentile_interval(at, reps, infinite=True)
    # just past the crossing the order is the one that holds beyond it (up to the next crossing)
    return Crossover(axis, k_a, k_b, interval, data_range, inside,
                     lower_after(at * 1.01) if inside else lower_after(hi), share)
