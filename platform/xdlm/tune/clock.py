"""The schedulers' clock: a trial's length and its intervals in ``scheduler.time_attr`` units.

ASHA's rungs and PBT's intervals count optimizer steps or tokens (``scheduler.time_attr``); the
job counts steps. These convert, and fill in the defaults the spec leaves open (null): the
trial's whole length, one evaluation.
"""

from __future__ import annotations

from xdlm.config import JobConfig
from xdlm.tune.spec import SweepSpec


def tokens_per_step(job: JobConfig) -> int:
    return job.train.global_batch * job.data.seq_len


def in_time_attr(spec: SweepSpec, steps: int, job: JobConfig) -> int:
    """``steps`` optimizer steps of ``job`` in the scheduler's time_attr units."""
    return steps * (tokens_per_step(job) if spec.scheduler.time_attr == "tokens" else 1)


def scheduler_horizon(spec: SweepSpec, job: JobConfig) -> int:
    """ASHA's max_t: the spec's, else the base job's length."""
    if spec.scheduler.max_t is not None:
        return spec.scheduler.max_t
    return in_time_attr(spec, job.train.steps, job)


def evaluation_interval(spec: SweepSpec, job: JobConfig) -> int:
    """train.eval_every: how often the metric is reported."""
    return in_time_attr(spec, job.train.eval_every, job)


def scheduler_grace(spec: SweepSpec, job: JobConfig) -> int:
    """ASHA's first rung: the spec's, else the first evaluation (nothing is reported before it)."""
    if spec.scheduler.grace_period is not None:
        return spec.scheduler.grace_period
    return evaluation_interval(spec, job)


def pbt_interval(spec: SweepSpec, job: JobConfig) -> int:
    """PBT's perturbation interval: the spec's, else one evaluation."""
    if spec.scheduler.perturbation_interval is not None:
        return spec.scheduler.perturbation_interval
    return evaluation_interval(spec, job)
