"""A sweep ready to run: its spec and the base job every trial starts from, checked together.

``load_sweep`` is the one place a sweep is validated, all of it without Ray: the spec's own
fields (``spec.load_spec``), then everything that involves the base job: each space key and
value tried on it, the metric, the scheduler's clock. What needs the cluster (whether a trial
fits) is checked by ``xdlm.tune.resources`` right after Ray is up, still before any trial.
``xdlm sweep --resume`` reads back a sweep that was checked when it started.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass

from xdlm.config import ConfigError, JobConfig, load_job, to_dict
from xdlm.tune.clock import pbt_interval, scheduler_grace, scheduler_horizon, tokens_per_step
from xdlm.tune.metrics import check_metric
from xdlm.tune.space import apply_params, candidate_values, check_key, check_param
from xdlm.tune.spec import SweepSpec, load_spec

MAX_COMBINATIONS_CHECKED = 256


@dataclass(frozen=True)
class Sweep:
    spec: SweepSpec
    job: JobConfig
    """The base job: ``base.job`` + ``base.overrides`` + the sweep's resources and budgets, validated."""


def load_sweep(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Sweep:
    """Load the sweep file (defaults <- YAML <- dotted overrides) and run every check that needs no
    Ray; ``ConfigError`` naming the field otherwise."""
    spec = load_spec(path, overrides)
    job = base_job(spec)
    check_space(spec, job)
    check_metric(spec.metric, job, early_stopping=spec.scheduler.kind != "fifo")
    check_schedule(spec, job)
    return Sweep(spec, job)


def base_job(spec: SweepSpec) -> JobConfig:
    """The base job with the sweep's resources and per-trial budgets applied (validated)."""
    r = spec.resources
    sweep_overrides = [f"cluster.{key}={value}" for key, value in
                       (("num_workers", r.num_workers), ("cpus_per_worker", r.cpus_per_worker),
                        ("use_gpu", r.use_gpu)) if value is not None]
    if spec.budget.trial_time_s is not None:
        sweep_overrides.append(f"train.max_time_s={spec.budget.trial_time_s}")
    try:
        job = load_job(spec.base.job, [*spec.base.overrides, *sweep_overrides])
        if spec.budget.trial_tokens is not None:
            job.train.steps = max(1, min(job.train.steps, spec.budget.trial_tokens // tokens_per_step(job)))
        return job.validate()
    except ConfigError as err:
        raise ConfigError(f"base job (base.job + base.overrides + the sweep's resources/budget): {err}") from None


def check_space(spec: SweepSpec, job: JobConfig) -> None:
    """Every key and kind, then every grid/choice value and both ends of every range tried on the
    base job, and the cartesian product of those too while it is small."""
    for key, param in spec.space.items():
        check_key(key)
        check_param(key, param, spec.search.algorithm)
    base = to_dict(job)
    for key, param in spec.space.items():
        for value in candidate_values(param):
            apply_params(base, {key: value})
    listed = [(key, candidate_values(p)) for key, p in spec.space.items()]
    if len(listed) > 1 and math.prod(len(values) for _, values in listed) <= MAX_COMBINATIONS_CHECKED:
        for combination in itertools.product(*(values for _, values in listed)):
            apply_params(base, dict(zip([k for k, _ in listed], combination, strict=True)))


def check_schedule(spec: SweepSpec, job: JobConfig) -> None:
    """ASHA's first rung and PBT's interval fall inside the trials' length; PBT has a checkpoint
    at every evaluation."""
    s = spec.scheduler
    horizon = scheduler_horizon(spec, job)
    if s.kind == "asha":
        grace = scheduler_grace(spec, job)
        if grace >= horizon:
            raise ConfigError(f"scheduler.grace_period: {grace} must be below the trials' length {horizon} "
                              f"({s.time_attr}), or ASHA never compares trials")
    if s.kind == "pbt":
        # PBT clones what a trial reported at an evaluation, so each evaluation must carry a checkpoint
        if job.train.eval_every % job.train.checkpoint_every:
            raise ConfigError(
                f"train.checkpoint_every: PBT clones the checkpoint reported with an evaluation, so "
                f"train.eval_every ({job.train.eval_every}) must be a multiple of train.checkpoint_every "
                f"({job.train.checkpoint_every}); e.g. base.overrides: [train.checkpoint_every={job.train.eval_every}]"
            )
        interval = pbt_interval(spec, job)
        if interval >= horizon:
            raise ConfigError(f"scheduler.perturbation_interval: {interval} must be below the trials' length "
                              f"{horizon} ({s.time_attr}), or PBT never acts")
