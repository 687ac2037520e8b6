"""The concurrency rule and the Pareto frontier (pure functions, no Ray)."""

from __future__ import annotations

import pytest

from xdlm.tune.pareto import pareto_front
from xdlm.tune.resources import TrialResources, check_pbt_population, max_concurrent_trials


def test_concurrency_counts_the_trainable_and_its_workers():
    one_worker = TrialResources(0.2, 1, 0.8, 0.0)
    assert max_concurrent_trials(one_worker, {"CPU": 2}, None) == 2
    assert max_concurrent_trials(one_worker, {"CPU": 2}, 1) == 1
    two_workers = TrialResources(0.2, 2, 0.5, 0.0)  # 1.2 CPUs: only one fits on 2 cores
    assert max_concurrent_trials(two_workers, {"CPU": 2}, 8) == 1
    gpu = TrialResources(0.25, 4, 4, 1.0)
    assert max_concurrent_trials(gpu, {"CPU": 64, "GPU": 8}, None) == 2


def test_no_trial_fits_names_the_resources():
    need = TrialResources(0.2, 4, 1.0, 0.0)
    with pytest.raises(ValueError, match=r"one trial needs 4.2 CPUs \(0.2 for the trial's trainable \+ 4 Ray "
                                         r"Train workers x 1\), but the cluster has 2 CPUs and 0 GPUs"):
        max_concurrent_trials(need, {"CPU": 2}, None)
    with pytest.raises(ValueError, match=r"\+ 2 GPUs, but the cluster has 16 CPUs and 0 GPUs"):
        max_concurrent_trials(TrialResources(0.2, 2, 1.0, 1.0), {"CPU": 16}, None)


def test_pbt_needs_room_for_its_whole_population():
    need = TrialResources(0.2, 1, 0.8, 0.0)
    check_pbt_population(2, max_concurrent_trials(need, {"CPU": 2}, None), need)
    with pytest.raises(ValueError, match=r"pbt runs its whole population at once, but 4 trials need 4 x 1 CPUs "
                                         r".* the cluster fits 2; lower search.num_samples"):
        check_pbt_population(4, max_concurrent_trials(need, {"CPU": 2}, None), need)


def test_pareto_front_keeps_the_non_dominated_points():
    points = [(1.0, 5.0), (2.0, 2.0), (3.0, 1.0), (2.5, 2.5), (1.0, 6.0), (3.0, 1.0)]
    assert pareto_front(points) == [0, 1, 2, 5]
    assert pareto_front([(1.0, 1.0)]) == [0]


def test_searchers_carry_the_concurrency_limit_and_sample_the_space(write_sweep):
    """Tune ignores TuneConfig.max_concurrent_trials for a generator instance: the limit must be
    on the searcher itself."""
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from xdlm.tune.algorithms import build_search_alg
    from xdlm.tune.space import param_space
    from xdlm.tune.sweep import load_sweep

    grid = load_sweep(write_sweep()).spec
    generator = build_search_alg(grid, 2)
    assert isinstance(generator, BasicVariantGenerator) and generator.max_concurrent == 2

    bayes = load_sweep(write_sweep(search={"algorithm": "optuna", "num_samples": 4}, space={
        "diffusion.k": {"kind": "choice", "values": [0.0, 0.1, 1.0]},
        "optim.lr": {"kind": "loguniform", "low": 1e-4, "high": 1e-2},
        "diffusion.schedule_params.eps": {"kind": "quniform", "low": 1e-3, "high": 1e-2, "q": 1e-3},
    })).spec
    searcher = build_search_alg(bayes, 1)
    assert isinstance(searcher, ConcurrencyLimiter) and searcher.max_concurrent == 1
    assert searcher.set_search_properties("val/nelbo", "min", param_space(bayes))
    config = searcher.suggest("t0")
    assert config["diffusion.k"] in (0.0, 0.1, 1.0) and 1e-4 <= config["optim.lr"] <= 1e-2
    assert searcher.suggest("t1") is None  # the limiter holds the second trial back


def test_asha_defaults_to_the_first_evaluation_and_the_trial_length(write_sweep):
    from xdlm.tune.algorithms import build_scheduler
    from xdlm.tune.sweep import load_sweep

    sweep = load_sweep(write_sweep(scheduler={"kind": "asha"}))
    scheduler = build_scheduler(sweep.spec, sweep.job)
    assert scheduler._max_t == 6 and scheduler._time_attr == "step"
    assert min(milestone for milestone, _ in scheduler._brackets[0]._rungs) == 2  # grace = eval_every
