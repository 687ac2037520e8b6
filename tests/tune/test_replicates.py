"""Replicates: the spec field and its checks, the seeds of each replicate, the Tune space, and
the statistics the report pools them with (checked against scipy). No Ray cluster."""

from __future__ import annotations

import math

import pytest
from scipy import stats as scipy_stats

from xdlm.config import ConfigError, JobConfig, to_dict
from xdlm.tune.aggregate import TrialResult, decide_best, summarise
from xdlm.tune.pareto import frontier_resolution
from xdlm.tune.replicates import REPLICATE_KEY, identity, seeds_for
from xdlm.tune.space import param_space, shares_draws, trial_job
from xdlm.tune.spec import load_spec, population_size
from xdlm.tune.stats import Estimate, estimate, overlap, t_quantile
from xdlm.tune.sweep import load_sweep

K_GRID = {"diffusion.k": {"kind": "grid", "values": [0.0, 1.0]}}


# ----- the spec ----------------------------------------------------------------------------------

def test_replicates_default_to_one_and_multiply_the_trials(write_sweep):
    assert load_spec(write_sweep()).search.replicates == 1
    spec = load_spec(write_sweep(search={"replicates": 3}))
    assert spec.search.replicates == 3 and population_size(spec) == 6
    assert param_space(spec)[REPLICATE_KEY] == {"grid_search": [0, 1, 2]}
    assert REPLICATE_KEY not in param_space(load_spec(write_sweep()))


@pytest.mark.parametrize(("spec", "message"), [
    ({"search": {"replicates": 0}}, r"search.replicates: must be >= 1"),
    ({"search": {"replicates": 2}, "space": {**K_GRID, "train.seed": {"kind": "grid", "values": [0, 1]}}},
     r"search.replicates: .* space.train.seed sets a seed too"),
    ({"search": {"replicates": 2}, "space": {**K_GRID, "data.seed": {"kind": "randint", "low": 0, "high": 9}}},
     r"search.replicates: .* space.data.seed sets a seed too"),
    ({"search": {"replicates": 2},
      "space": {**K_GRID, "train": {"kind": "grid", "values": [{"seed": 1, "steps": 4}]}}},
     r"search.replicates: .* space.train.seed \(in space.train\) sets a seed too"),
    ({"search": {"replicates": 2}, "space": {"optim.lr": {"kind": "grid", "values": [1e-3, 2e-3]}},
      "scheduler": {"kind": "pbt"}},
     r"search.replicates: PBT makes trials clone"),
    ({"search": {"replicates": 2, "algorithm": "optuna"},
      "space": {"diffusion.k": {"kind": "uniform", "low": 0.0, "high": 1.0}}},
     r"search.replicates: optuna proposes"),
    ({"search": {"replicates": 2, "num_samples": 2}}, r"search.num_samples: a space of grids only repeats"),
])
def test_bad_replicates_are_refused_naming_the_fields(write_sweep, spec, message):
    with pytest.raises(ConfigError, match=message):
        load_spec(write_sweep(**spec))


def test_the_repository_quick_k_runs_three_replicates():
    from pathlib import Path

    sweep = load_sweep(Path(__file__).resolve().parents[2] / "sweeps" / "quick_k.yaml")
    assert sweep.spec.search.replicates >= 3
    assert population_size(sweep.spec) == 4 * sweep.spec.search.replicates


# ----- the seeds and who is whose ----------------------------------------------------------------

def test_replicate_r_adds_r_to_both_seeds_of_the_base_job(tmp_path):
    base = JobConfig()
    base.train.seed, base.data.seed = 3, 11
    base_dict = to_dict(base.validate())
    jobs = [trial_job(base_dict, {"diffusion.k": 0.5, REPLICATE_KEY: r}, f"t{r}", str(tmp_path), None)
            for r in range(3)]
    assert [(j.train.seed, j.data.seed) for j in jobs] == [(3, 11), (4, 12), (5, 13)]
    assert all(j.diffusion.k == 0.5 for j in jobs)
    # without replicates a trial is the base job's seeds, as before
    plain = trial_job(base_dict, {"diffusion.k": 0.5}, "t", str(tmp_path), None)
    assert (plain.train.seed, plain.data.seed) == (3, 11)
    assert seeds_for(3, 11, 2) == {"train.seed": 5, "data.seed": 13}
    with pytest.raises(ValueError):
        seeds_for(0, 0, -1)


def test_replicates_share_a_configuration_id_and_configurations_do_not():
    a0, a2 = identity({"diffusion.k": 0.1, REPLICATE_KEY: 0}), identity({REPLICATE_KEY: 2, "diffusion.k": 0.1})
    b0 = identity({"diffusion.k": 0.5, REPLICATE_KEY: 0})
    assert a0.config_id == a2.config_id != b0.config_id
    assert (a0.replicate, a2.replicate) == ("0", "2")
    assert identity({"diffusion.k": 0.1}) == a0  # a sweep without replicates: replicate 0 of the same id
    # a seed key in the space is a replicate key too: not part of the configuration
    s1 = identity({"diffusion.k": 0.1, "train.seed": 1})
    assert s1.config_id == a0.config_id and s1.replicate == "train.seed=1"


def test_replicates_of_a_configuration_get_the_same_sampled_values(write_sweep):
    """Ranged keys are drawn once per sample and held over the grid (replicate index included)."""
    import numpy as np
    from ray.tune.search.variant_generator import generate_variants

    spec = load_spec(write_sweep(search={"replicates": 3, "algorithm": "random", "num_samples": 2},
                                 space={**K_GRID, "optim.lr": {"kind": "loguniform", "low": 1e-4, "high": 1e-2}}))
    assert shares_draws(spec)
    configs = [config for _ in range(spec.search.num_samples)
               for _, config in generate_variants(param_space(spec), constant_grid_search=True,
                                                  random_state=np.random.RandomState(0))]
    by_config: dict[str, set] = {}
    for config in configs:
        by_config.setdefault(identity(config).config_id, set()).add(config[REPLICATE_KEY])
    assert all(replicates == {0, 1, 2} for replicates in by_config.values())


# ----- statistics --------------------------------------------------------------------------------

@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 9, 10, 29, 30, 101])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_t_quantile_matches_scipy(df, confidence):
    assert t_quantile(confidence, df) == pytest.approx(scipy_stats.t.ppf((1 + confidence) / 2, df), abs=1e-9)


def test_estimate_is_the_student_t_interval_on_the_mean():
    values = [469.0, 556.0, 512.5]
    e = estimate(values)
    low, high = scipy_stats.t.interval(0.95, len(values) - 1, loc=sum(values) / 3, scale=scipy_stats.sem(values))
    assert e.mean == pytest.approx(sum(values) / 3) and e.n == 3
    assert (e.low, e.high) == (pytest.approx(low), pytest.approx(high))
    # by hand: s = 43.5, t_{0.975, 2} = 4.3027, half-width = 4.3027 * 43.5 / sqrt(3) = 108.06
    assert e.half_width == pytest.approx(4.302653 * 43.5 / math.sqrt(3), rel=1e-6)
    one = estimate([4.2])
    assert one.mean == 4.2 and not one.has_interval and one.low is None and overlap(one, e) is None


# ----- aggregation and "resolved" ----------------------------------------------------------------

def trials_of(k: float, nelbos: list[float], completed: bool = True) -> list[TrialResult]:
    return [TrialResult(f"k{k}-{r}", {"diffusion.k": k, REPLICATE_KEY: r}, completed, {"val/nelbo": v})
            for r, v in enumerate(nelbos)]


def test_a_best_whose_interval_overlaps_another_is_not_resolved():
    configs, notes = summarise([*trials_of(0.0, [6.00, 6.30, 5.90]), *trials_of(0.5, [6.10, 6.40, 6.05]),
                                *trials_of(1.0, [7.00, 7.05, 6.95])])
    assert not notes and [c.n for c in configs] == [3, 3, 3]
    verdict = decide_best(configs, "val/nelbo", "min")
    best = next(c for c in configs if c.config_id == verdict.config_id)
    assert best.values == {"diffusion.k": 0.0}
    assert best.get("val/nelbo").mean == pytest.approx(6.0666667)
    assert verdict.resolved is False and verdict.runner_up == configs[1].config_id
    assert verdict.overlapping == (configs[1].config_id,)  # k = 1 is clearly worse
    assert "not resolved at this budget" in verdict.reason and "k=0.5" in verdict.reason


def test_a_best_clear_of_every_other_interval_is_resolved_and_max_mode_flips_it():
    configs, _ = summarise([*trials_of(0.0, [5.00, 5.02, 4.98]), *trials_of(1.0, [6.00, 6.03, 5.97])])
    verdict = decide_best(configs, "val/nelbo", "min")
    assert verdict.resolved is True and verdict.config_id == configs[0].config_id
    assert decide_best(configs, "val/nelbo", "max").config_id == configs[1].config_id


def test_one_replicate_gives_no_interval_and_an_unknown_verdict():
    configs, _ = summarise([*trials_of(0.0, [5.0]), *trials_of(1.0, [6.0])])
    verdict = decide_best(configs, "val/nelbo", "min")
    assert verdict.config_id == configs[0].config_id and verdict.resolved is None
    assert "one replicate" in verdict.reason


def test_unfinished_trials_and_repeated_seeds_are_not_counted():
    trials = [*trials_of(0.0, [5.0, 5.2]), *trials_of(0.0, [1.0], completed=False),
              TrialResult("again", {"diffusion.k": 0.0}, True, {"val/nelbo": 5.0})]  # replicate 0 again
    (config,), notes = summarise(trials)
    assert config.n == 2 and config.get("val/nelbo").mean == pytest.approx(5.1)
    assert len(config.trial_ids) == 4 and any("again repeats trial k0.0-0" in n for n in notes)


def test_frontier_points_are_flagged_when_their_intervals_overlap():
    box = lambda mean, half: Estimate(mean, 3, half)  # noqa: E731
    placements = frontier_resolution([
        (box(1.0, 0.05), box(5.0, 0.1)),   # 0: frontier, clear of everything
        (box(2.0, 0.05), box(3.0, 0.1)),   # 1: frontier, but 2 could dominate it
        (box(2.05, 0.1), box(3.05, 0.1)),  # 2: dominated by 1 on the means, not resolved
        (box(3.0, 0.05), box(4.0, 0.1)),   # 3: dominated by 1, clear on both axes: resolved
    ])
    assert [p.on_frontier for p in placements] == [True, True, False, False]
    assert [p.resolved for p in placements] == [True, False, False, True]
    assert placements[1].against == (2,) and placements[2].against == (1,)
    unknown = frontier_resolution([(Estimate(1.0, 1), Estimate(2.0, 1)), (Estimate(2.0, 1), Estimate(1.0, 1))])
    assert [p.resolved for p in unknown] == [None, None]
