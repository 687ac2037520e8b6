"""The fitter against planted truths: power-law exponents and their interval coverage, crossovers
found where they are planted and not where they are not, and bad grids refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize

from tests.scaling.test_points import BUDGETS, LAWS, optimal_n, planted
from xdlm.errors import UserError
from xdlm.scaling import crossover
from xdlm.scaling.analysis import compare_ks
from xdlm.scaling.points import Point
from xdlm.scaling.study_fit import fit_k


def grid_points(k: float, noise: float, rng, budgets=BUDGETS, factors=(0.25, 0.5, 1.0, 2.0, 4.0),
                laws=LAWS) -> list[Point]:
    law, points = laws[k], []
    for c in budgets:
        for j, f in enumerate(factors):
            n = optimal_n(law, c) * f
            d = c / (6 * n)
            ds = d * np.linspace(0.2, 1.0, 6)
            curve = planted(law, n, ds) * np.exp(noise * rng.standard_normal(ds.size))
            points.append(Point(f"{k}-{c}-{j}", f"{k}-{c:.0e}-s{j}", k, n, d, c, float(curve[-1]), 100, c, f"s{j}",
                                curve_d=ds, curve_loss=curve))
    return points


def fit(k, noise, seed, n_boot, **kw):
    rng = np.random.default_rng(seed)
    points = grid_points(k, noise, rng, **kw)
    return fit_k(k, points, points, [], n_boot, 1e19, None, rng)


def test_planted_power_law_recovered_and_covered():
    """N*(C) ~ C^(beta/(alpha+beta)) exactly under the planted surface with C = 6ND; the surface's
    own exponents are alpha and beta. 90 % intervals must hold the truth in >= 80 % of repeats."""
    law = LAWS[0.0]
    truth = {"n_opt/exponent": law["beta"] / (law["alpha"] + law["beta"]),
             "d_opt/exponent": law["alpha"] / (law["alpha"] + law["beta"])}
    repeats, hits = 6, {key: 0 for key in truth}
    for seed in range(repeats):
        kf = fit(0.0, 0.005, seed, 40)
        for key, true in truth.items():
            assert kf.numbers[key].value == pytest.approx(true, rel=0.05), key
            hits[key] += kf.numbers[key].contains(true)
    assert all(h >= 0.8 * repeats for h in hits.values()), hits


def test_surface_recovers_a_noiseless_planted_law():
    law = LAWS[0.0]
    kf = fit(0.0, 0.0, 0, 0)
    for key in ("E", "alpha", "beta"):
        assert kf.numbers[f"surface/{key}"].value == pytest.approx(law[key], rel=0.05), key


def true_crossing(law_a, law_b) -> float:
    def lstar(law, c):
        n = optimal_n(law, c)
        return planted(law, n, c / (6 * n))
    return optimize.brentq(lambda lc: lstar(law_a, 10**lc) - lstar(law_b, 10**lc), 14, 18)


NO_FLOOR = {k: dict(law, E=0.0) for k, law in LAWS.items()}
"""Without a floor the compute-optimal loss is exactly a power law, L*(C) ~ C^(-alpha beta/(alpha+beta)),
which is what the compute crossover compares (a floor bends it: docs/scaling.md)."""


def crossover_repeats(seeds):
    planted_x = 10 ** true_crossing(NO_FLOOR[0.0], NO_FLOOR[0.5])
    assert 1e15 < planted_x < 1e17
    for seed in seeds:
        fits = [fit(k, 0.003, 10 * seed + i, 40, laws=NO_FLOOR, factors=(0.5, 0.7, 1.0, 1.4, 2.0))
                for i, k in enumerate((0.0, 0.5, 1.0))]
        verdicts = {(c.axis, c.k_a, c.k_b): c for c in compare_ks(fits)}
        yield planted_x, verdicts[("compute", 0.0, 0.5)], verdicts[("compute", 0.0, 1.0)]


def test_planted_crossover_found_and_none_where_none():
    for _, found, none in crossover_repeats([0]):
        assert found.inside and found.winner_after == 0.5, found.as_dict()
        assert "k=0.5 overtakes k=0" in found.verdict()
        assert not none.inside and none.winner_after == 0.0
        assert "no crossover within the data" in none.verdict() and "k=0 is lower throughout" in none.verdict()


@pytest.mark.xfail(strict=True, reason="open: the 90 % crossing interval holds the planted crossing in 1 of 3 "
                   "seeds; the per-k bootstrap intervals of the L*(C) exponent under-cover (see the helper's report)")
def test_planted_crossover_inside_its_interval():
    held = sum(found.at.contains(x) for x, found, _ in crossover_repeats(range(3)))
    assert held >= 2


def test_crossing_formulas_against_closed_forms():
    # 2 C^-0.1 = 5 C^-0.2  <=>  C^0.1 = 2.5
    assert crossover.power_law_crossing(2, -0.1, 5, -0.2) == pytest.approx(2.5**10)
    assert math.isnan(crossover.power_law_crossing(2, -0.1, 5, -0.1))
    # 1 + 4/x vs 2 + 1/x cross at x = 3
    assert crossover.curve_crossing(lambda x: 1 + 4 / x, lambda x: 2 + 1 / x, 1.0, 100.0) == pytest.approx(3.0)
    assert math.isnan(crossover.curve_crossing(lambda x: 1 + 0 * x, lambda x: 2 + 0 * x, 1.0, 100.0))


def test_bad_grids_are_refused_naming_what_is_missing():
    rng = np.random.default_rng(0)
    with pytest.raises(UserError, match=r"budget 1e\+16 \(k=0\) has runs of a single size \(s0\)"):
        points = grid_points(0.0, 0.0, rng) + grid_points(0.0, 0.0, rng, budgets=(1e16 * 1.0,), factors=(1.0,))[:0]
        single = [p for p in points if p.budget != 1e16] + [grid_points(0.0, 0.0, rng, budgets=(1e16,), factors=(1.0,))[0]]
        for p in single:
            if p.budget == 1e16:
                p.size = "s0"
        fit_k(0.0, single, single, [], 0, None, None, rng)
    with pytest.raises(UserError, match="1 IsoFLOP budget.* need at least 2"):
        points = grid_points(0.0, 0.0, rng, budgets=(1e15,))
        fit_k(0.0, points, points, [], 0, None, None, rng)
    with pytest.raises(UserError, match="5 usable runs; the surface .* needs at least 6"):
        points = [p for p in grid_points(0.0, 0.0, rng, budgets=(1e15,))]
        for p in points:
            p.budget = None
        fit_k(0.0, points, points, [], 0, None, None, rng)
    excluded = []
    edge = grid_points(0.0, 0.0, rng, factors=(1.0, 2.0, 4.0, 8.0))  # every optimum at the smallest size
    with pytest.raises(UserError, match="0 IsoFLOP budget"):
        fit_k(0.0, edge, edge, excluded, 0, None, None, rng)
    assert all("optimum at the edge of the grid" in e.reason for e in excluded) and len(excluded) == 3
