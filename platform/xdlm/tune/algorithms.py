"""What Tune is handed to choose and stop trials: the searcher and the scheduler of a spec."""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.basic_variant import BasicVariantGenerator

from xdlm.config import ConfigError, JobConfig
from xdlm.tune.clock import pbt_interval, scheduler_grace, scheduler_horizon
from xdlm.tune.space import shares_draws, tune_domain
from xdlm.tune.spec import SweepSpec


def build_search_alg(spec: SweepSpec, max_concurrent: int):
    """The searcher, already limited to ``max_concurrent`` live trials.

    Tune ignores ``TuneConfig.max_concurrent_trials`` (with only a log warning) when handed a
    ``BasicVariantGenerator`` instance, so the limit is set here, on the generator itself.
    With replicates, ranged keys are drawn once per sample and shared over the grid (the replicate
    index is a grid key), so the replicates of a configuration are the same configuration.
    """
    if spec.search.algorithm == "optuna":
        try:  # optuna is an optional dependency
            from ray.tune.search.optuna import OptunaSearch
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ConfigError(f"search.algorithm: optuna needs the 'optuna' package ({err})") from None
        return ConcurrencyLimiter(OptunaSearch(seed=spec.search.seed), max_concurrent=max_concurrent)
    return BasicVariantGenerator(random_state=spec.search.seed, max_concurrent=max_concurrent,
                                 constant_grid_search=shares_draws(spec))


def pbt_mutations(spec: SweepSpec) -> dict[str, Any]:
    """PBT's ``hyperparam_mutations``: listed values as a list (it steps to a neighbour), ranges
    as the Tune domain (it scales by 0.8/1.2 or resamples)."""
    return {key: list(spec.space[key].values) if spec.space[key].kind in ("grid", "choice")
            else tune_domain(spec.space[key]) for key in spec.scheduler.mutations}


def build_scheduler(spec: SweepSpec, job: JobConfig):
    if spec.scheduler.kind == "pbt":
        return PopulationBasedTraining(
            time_attr=spec.scheduler.time_attr, perturbation_interval=pbt_interval(spec, job),
            hyperparam_mutations=pbt_mutations(spec), quantile_fraction=spec.scheduler.quantile_fraction,
            resample_probability=spec.scheduler.resample_probability,
            synch=spec.scheduler.synch,
            # checkpoint-only reports (no evaluation) and the clock-less last report are expected
            require_attrs=False,
        )
    if spec.scheduler.kind == "asha":
        return ASHAScheduler(
            time_attr=spec.scheduler.time_attr, max_t=scheduler_horizon(spec, job),
            grace_period=scheduler_grace(spec, job), reduction_factor=spec.scheduler.reduction_factor,
            # at max_t the trial is at its end anyway: stopping it there would kill its final evaluation
            stop_last_trials=False,
        )
    return FIFOScheduler()
